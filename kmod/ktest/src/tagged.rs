//! A stream tagged by the program itself, one tag broken: the client's
//! tap must strip the tags before the broken one and stop stripping at its
//! first wrong byte, exactly as the stream-tag module does.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use anyhow::{anyhow, bail, Result};

use super::pattern;

/// The stream-tag module's default tag (`modules/src/lib.rs`).
const TAG: &[u8] = b"XTAGTAGTAGTAGTAGTAGTAGTAGTAGTAGX";
/// The client's reads (odd: tags split across reads).
const READ: usize = 7919;

/// broken-tag PORT INTERVAL BREAK COUNT: a server on 127.0.0.1:PORT writes
/// COUNT × (tag, INTERVAL pattern bytes) with the 4th byte of tag number
/// BREAK changed; the client reads it all and compares it with what the
/// module would deliver: the payload up to the broken tag, then everything
/// from the tag's wrong byte on as it came. A tag beyond the first read
/// (BREAK × (INTERVAL + 32) > 7919) breaks after the opening tag has been
/// recognised, where the kernel tap strips in place.
pub fn broken_tag(port: u16, interval: usize, broken: usize, count: usize) -> Result<()> {
    // (tag 0 broken: the stream is never recognised, a different case)
    if broken == 0 || broken >= count {
        bail!("BREAK must be in 1..COUNT");
    }
    let mut wire = Vec::new();
    let mut want = Vec::new();
    for i in 0..count {
        let start = wire.len();
        wire.extend_from_slice(TAG);
        if i == broken {
            wire[start + 3] ^= 0x20;
        }
        if i >= broken {
            // from the wrong byte on, the application's as it came
            want.extend_from_slice(&wire[start + if i == broken { 3 } else { 0 }..]);
        }
        let data: Vec<u8> = (0..interval)
            .map(|j| pattern((i * interval + j) as u64))
            .collect();
        wire.extend_from_slice(&data);
        want.extend_from_slice(&data);
    }
    let l = TcpListener::bind(("127.0.0.1", port))?;
    let mut c = TcpStream::connect(("127.0.0.1", port))?;
    let (mut a, _) = l.accept()?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        // odd pieces: tags split across sends and reads
        for piece in wire.chunks(4093) {
            a.write_all(piece)?;
        }
        a.shutdown(std::net::Shutdown::Write)
    });
    let mut got = Vec::new();
    let mut buf = vec![0u8; READ];
    loop {
        let n = c.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    server
        .join()
        .map_err(|_| anyhow!("server thread panicked"))??;
    if got != want {
        let at = got.iter().zip(&want).position(|(a, b)| a != b);
        bail!(
            "delivered {} bytes, want {}; first difference at {at:?}",
            got.len(),
            want.len()
        );
    }
    println!("ok bytes={} tags stripped before tag {broken}", got.len());
    Ok(())
}
