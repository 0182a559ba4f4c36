//! Sockets held open across `insmod`/`rmmod`: the tap meets connections
//! that were made before it was loaded.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Instant;

use anyhow::{anyhow, bail, Result};

use super::{any_of, pattern, receive_pattern, send_pattern};

/// Prints "holding" and waits for a line on stdin (the test's go-ahead).
fn wait_for_go() -> Result<()> {
    println!("holding");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(())
}

/// hold PORT: a listener, a connected pair and a UDP socket, held open until
/// stdin closes (for insmod/rmmod with sockets open).
pub fn hold(host: &str, port: u16) -> Result<()> {
    let l = TcpListener::bind((any_of(host), port))?;
    let c = TcpStream::connect((host, port))?;
    let (a, _) = l.accept()?;
    let u = UdpSocket::bind((host, 0))?;
    wait_for_go()?;
    // Sockets still work after whatever happened meanwhile.
    (&c).write_all(b"ping")?;
    let mut b = [0u8; 4];
    (&a).read_exact(&mut b)?;
    if &b != b"ping" {
        bail!("held connection corrupted");
    }
    u.send_to(b"x", u.local_addr()?)?;
    drop((l, c, a, u));
    println!("held sockets ok");
    Ok(())
}

/// hold-stream PORT BYTES [--close-listener] [--queued N]: a connection on
/// 127.0.0.1 made now, idle until a line arrives on stdin; then the
/// accepted end sends BYTES of the test pattern and the connecting end
/// checks them (as `tcp-serve`/`tcp-get`). `--close-listener` closes the
/// listener before the wait, so the accepted end's port has no listener
/// any more. `--queued N`: the accepted end sends N bytes of the pattern
/// before the wait, which the connecting end leaves unread (queued in its
/// receive queue while the module is loaded); after the go-ahead it sends
/// BYTES more (the pattern continued) and the connecting end reads the
/// stream to its end and prints `received=R queued=ok|bad` (whether the
/// first N bytes came as sent); the test decides what R must be.
pub fn hold_stream(port: u16, bytes: u64, close_listener: bool, queued: Option<u64>) -> Result<()> {
    let l = TcpListener::bind(("127.0.0.1", port))?;
    let mut c = TcpStream::connect(("127.0.0.1", port))?;
    let (mut a, _) = l.accept()?;
    if close_listener {
        drop(l);
    }
    if let Some(early) = queued {
        write_pattern(&mut a, 0, early)?;
        wait_for_go()?;
        let server = std::thread::spawn(move || -> std::io::Result<()> {
            write_pattern(&mut a, early, early + bytes)?;
            a.shutdown(std::net::Shutdown::Write)
        });
        let mut got = Vec::new();
        c.read_to_end(&mut got)?;
        server
            .join()
            .map_err(|_| anyhow!("server thread panicked"))??;
        let intact = got.len() as u64 >= early && (0..early).all(|i| got[i as usize] == pattern(i));
        println!(
            "received={} queued={}",
            got.len(),
            if intact { "ok" } else { "bad" }
        );
        return Ok(());
    }
    wait_for_go()?;
    let server = std::thread::spawn(move || send_pattern(a, bytes));
    let got = receive_pattern(c, bytes, Instant::now());
    server
        .join()
        .map_err(|_| anyhow!("server thread panicked"))??;
    got
}

/// Writes bytes `from..to` of the test pattern.
fn write_pattern(s: &mut TcpStream, from: u64, to: u64) -> std::io::Result<()> {
    let chunk: Vec<u8> = (from..to).map(pattern).collect();
    s.write_all(&chunk)
}
