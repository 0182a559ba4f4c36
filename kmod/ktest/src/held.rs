//! Sockets held open across `insmod`/`rmmod`: the tap meets connections
//! that were made before it was loaded.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Instant;

use anyhow::{anyhow, bail, Result};

use super::{any_of, receive_pattern, send_pattern};

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

/// hold-stream PORT BYTES [--close-listener]: a connection on 127.0.0.1
/// made now, idle until a line arrives on stdin; then the accepted end
/// sends BYTES of the test pattern and the connecting end checks them
/// (as `tcp-serve`/`tcp-get`). `--close-listener` closes the listener
/// before the wait, so the accepted end's port has no listener any more.
pub fn hold_stream(port: u16, bytes: u64, close_listener: bool) -> Result<()> {
    let l = TcpListener::bind(("127.0.0.1", port))?;
    let c = TcpStream::connect(("127.0.0.1", port))?;
    let (a, _) = l.accept()?;
    if close_listener {
        drop(l);
    }
    wait_for_go()?;
    let server = std::thread::spawn(move || send_pattern(a, bytes));
    let got = receive_pattern(c, bytes, Instant::now());
    server
        .join()
        .map_err(|_| anyhow!("server thread panicked"))??;
    got
}
