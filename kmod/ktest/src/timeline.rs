//! `dns-timeline`: a live DNS flow that reports every query's outcome with
//! its wall-clock time, for the lifecycle experiments in the VM
//! (kmod/vm/experiments-lifecycle.sh): a module attached to, or revoked
//! from, the server's socket mid-run shows as the queries around that time
//! being dropped or answered.

use std::io::Write;
use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};

use crate::{num, opt};

/// The `dns-timeline` subcommand's arguments (see [`dns_timeline`]).
pub fn run(args: &[String]) -> Result<()> {
    dns_timeline(
        num(args, 1, "port")?,
        num(args, 2, "interval ms")?,
        num(args, 3, "timeout ms")?,
        opt(args, "--until").ok_or_else(|| anyhow!("missing --until FILE"))?,
    )
}

/// Microseconds since the Unix epoch (the clock the VM script's
/// `adjtimex` reads, so its event marks line up with these lines).
fn unix_us() -> Result<u128> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("clock before 1970")?
        .as_micros())
}

/// dns-timeline PORT INTERVAL_MS TIMEOUT_MS --until FILE: one UDP socket to
/// 127.0.0.1:PORT, one query for example.test every INTERVAL_MS until FILE
/// exists, each waiting at most TIMEOUT_MS for its answer (1.2.3.4). Prints
/// "first" after the first query, then one line per query:
/// `query N t_us=SENT answered=0|1 rtt_us=R` (R the time to the answer, or
/// to giving up). Dropped queries are the point, not a failure: the exit
/// status is non-zero only if the socket itself fails.
fn dns_timeline(port: u16, interval_ms: u64, timeout_ms: u64, until: &str) -> Result<()> {
    let s = UdpSocket::bind(("127.0.0.1", 0))?;
    s.connect(("127.0.0.1", port))?;
    let interval = Duration::from_millis(interval_ms);
    let timeout = Duration::from_millis(timeout_ms.max(1));
    let mut buf = [0u8; 1500];
    let mut out = std::io::stdout();
    let mut n = 0u32;
    while n == 0 || !std::path::Path::new(until).exists() {
        n += 1;
        let id = (n % 65536) as u16;
        let sent_us = unix_us()?;
        let start = Instant::now();
        s.send(&crate::dns_query(id, "example.test"))?;
        let answered = loop {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                break false;
            }
            s.set_read_timeout(Some(left))?;
            match s.recv(&mut buf) {
                Ok(len) => {
                    let r = &buf[..len];
                    if r.len() >= 12 && r[..2] == id.to_be_bytes() {
                        break r[3] & 0x0f == 0 && r.windows(4).any(|w| w == [1, 2, 3, 4]);
                    }
                    // a late answer to an earlier query: keep waiting
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break false
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // (ECONNREFUSED from an earlier ICMP error: this query is lost)
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break false,
                Err(e) => return Err(e.into()),
            }
        };
        let rtt = start.elapsed();
        if n == 1 {
            writeln!(out, "first")?;
        }
        writeln!(
            out,
            "query {n} t_us={sent_us} answered={} rtt_us={}",
            u8::from(answered),
            rtt.as_micros()
        )?;
        out.flush()?;
        std::thread::sleep(interval.saturating_sub(rtt));
    }
    Ok(())
}
