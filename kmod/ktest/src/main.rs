//! `l45-ktest`: the program the kernel-tap VM tests (kmod/vm-test.sh) run
//! inside the VM. Subcommands speak the `l45` generic netlink family,
//! generate checksum-verified TCP transfers and DNS query loops, drive the
//! agent over NETCONF (through the OpenSSH client), and time benchmarks.
//! Every check exits non-zero with a message when it fails.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use l45_modules::security;
use l45_tap_control::{Attach, MatchRules, ModuleConfig, Protocol};
use l45_tap_kernel::nl::{self, attr, cmd, Attrs};
use l45_tap_kernel::Client;

mod fuzz;
mod held;
mod kinds;
mod tagged;
mod timeline;
use held::{hold, hold_stream};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("l45-ktest: {e:#}");
        std::process::exit(1);
    }
}

fn num<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T> {
    args.get(i)
        .ok_or_else(|| anyhow!("missing {what}"))?
        .parse()
        .map_err(|_| anyhow!("bad {what}: {:?}", args[i]))
}

fn opt<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|s| s.as_str())
}

/// `--host ADDR` of the traffic subcommands: the loopback address to use
/// (`127.0.0.1`, `::1`, or `::ffff:127.0.0.1` for an IPv6 socket carrying
/// IPv4); default `127.0.0.1`.
fn host(args: &[String]) -> &str {
    opt(args, "--host").unwrap_or("127.0.0.1")
}

/// The wildcard address of `host`'s family (a v4-mapped host needs an IPv6
/// socket).
fn any_of(host: &str) -> &'static str {
    if host.contains(':') {
        "::"
    } else {
        "0.0.0.0"
    }
}

fn run(args: &[String]) -> Result<()> {
    let sub = args.first().map(|s| s.as_str()).unwrap_or("");
    match sub {
        "reg" => register(args),
        "revoke" => Ok(Client::open()?.revoke(num(args, 1, "id")?)?),
        "activate" => Ok(Client::open()?.activate(num(args, 1, "id")?, num::<u8>(args, 2, "0|1")? != 0)?),
        "deprecate" => Ok(Client::open()?.deprecate(num(args, 1, "id")?, num::<u8>(args, 2, "0|1")? != 0)?),
        "prio" => Ok(Client::open()?.priority(num(args, 1, "id")?, num(args, 2, "priority")?)?),
        "stats" => {
            let s = Client::open()?.report_one(num(args, 1, "id")?)?;
            println!(
                "id={} priority={} flags={} sockets={} bytes_sent={} bytes_received={} messages_sent={} messages_received={} drops={} errors={} active={} bypassed={}",
                s.id, s.priority, s.flags, s.sockets, s.bytes_sent, s.bytes_received, s.messages_sent, s.messages_received,
                s.drops, s.errors, s.active_ts_ns != 0, s.bypassed
            );
            Ok(())
        }
        "report" => {
            let r = Client::open()?.report()?;
            println!("modules={}", r.len());
            Ok(())
        }
        "sockets" => {
            for s in Client::open()?.sockets()? {
                println!(
                    "{:?} {:?} -> {:?} pid={} {}/{} modules={:?}",
                    s.protocol, s.source, s.destination, s.pid, s.process_name, s.thread_name, s.modules
                );
            }
            Ok(())
        }
        "challenge" => challenge(args),
        "malformed" => malformed(),
        "load-kind" => kinds::load(args),
        "unload-kind" => kinds::unload(args),
        "kind-refusals" => kinds::refusals(args),
        "fuzz-netlink" => fuzz::fuzz_netlink(args),
        "tcp-serve" => tcp_serve(host(args), num(args, 1, "port")?, num(args, 2, "bytes")?, num(args, 3, "connections")?),
        "tcp-get" => tcp_get(host(args), num(args, 1, "port")?, num(args, 2, "bytes")?),
        "dns-loop" => dns_loop(host(args), num(args, 1, "port")?, num(args, 2, "count")?, opt(args, "--until")),
        "dns-timeline" => timeline::run(args),
        "hold" => hold(host(args), num(args, 1, "port")?),
        "broken-tag" => tagged::broken_tag(num(args, 1, "port")?, num(args, 2, "interval")?, num(args, 3, "break")?, num(args, 4, "count")?),
        "hold-stream" => hold_stream(
            num(args, 1, "port")?,
            num(args, 2, "bytes")?,
            args.iter().any(|a| a == "--close-listener"),
            opt(args, "--queued").map(str::parse).transpose().map_err(|_| anyhow!("bad --queued"))?,
        ),
        "netconf" => netconf(args),
        "netconf-challenge" => netconf_challenge(args),
        "netconf-notify" => netconf_notify(args),
        _ => bail!(
            "usage: l45-ktest reg|revoke|activate|deprecate|prio|stats|report|sockets|challenge|malformed|fuzz-netlink|\
             tcp-serve|tcp-get|dns-loop|dns-timeline|hold|hold-stream|broken-tag|netconf ..."
        ),
    }
}

/// reg ID KIND [--prio N] [--proto tcp|udp] [--sport P] [--dport P]
///     [--src ADDR[/LEN]] [--dst ADDR[/LEN]] [--thread NAME]
///     [--process NAME] [--immediate] [--inactive] [--deprecated]
///     [--key HEX] [--replace] [name=value ...]
fn register(args: &[String]) -> Result<()> {
    let id: u32 = num(args, 1, "id")?;
    let kind = args.get(2).ok_or_else(|| anyhow!("missing kind"))?.clone();
    let mut parameters = BTreeMap::new();
    for a in &args[3..] {
        if let Some((k, v)) = a.split_once('=') {
            if !k.starts_with("--") {
                parameters.insert(k.to_string(), v.to_string());
            }
        }
    }
    let port = |name| -> Result<Option<u16>> {
        opt(args, name)
            .map(|p| p.parse().map_err(|_| anyhow!("bad port {p}")))
            .transpose()
    };
    let key = match opt(args, "--key") {
        Some(h) => Some(hex(h)?),
        None => None,
    };
    let m = ModuleConfig {
        id,
        name: format!("m{id}"),
        kind,
        priority: opt(args, "--prio")
            .map(|p| p.parse())
            .transpose()?
            .unwrap_or(100),
        activated: !args.iter().any(|a| a == "--inactive"),
        deprecated: args.iter().any(|a| a == "--deprecated"),
        attach: if args.iter().any(|a| a == "--immediate") {
            Attach::Immediate
        } else {
            Attach::NewSockets
        },
        matching: MatchRules {
            protocol: match opt(args, "--proto") {
                Some("tcp") => Some(Protocol::Tcp),
                Some("udp") => Some(Protocol::Udp),
                _ => None,
            },
            source_port: port("--sport")?,
            destination_port: port("--dport")?,
            source_address: opt(args, "--src").map(str::to_string),
            destination_address: opt(args, "--dst").map(str::to_string),
            thread_name: opt(args, "--thread").map(str::to_string),
            process_name: opt(args, "--process").map(str::to_string),
        },
        parameters,
        key,
    };
    Client::open()?.register(&m, args.iter().any(|a| a == "--replace"))?;
    Ok(())
}

fn hex(h: &str) -> Result<Vec<u8>> {
    if !h.len().is_multiple_of(2) {
        bail!("odd hex length");
    }
    h.as_bytes()
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| anyhow!("bad hex"))
        })
        .collect()
}

/// challenge ID KEYHEX: the NCO's side of the exchange, checked end to end.
fn challenge(args: &[String]) -> Result<()> {
    let id: u32 = num(args, 1, "id")?;
    let key = hex(args.get(2).ok_or_else(|| anyhow!("missing key"))?)?;
    let mut nonce = [0u8; security::NONCE_LEN];
    let mut chal = [0u8; security::CHALLENGE_LEN];
    let mut f = std::fs::File::open("/dev/urandom")?;
    f.read_exact(&mut nonce)?;
    f.read_exact(&mut chal)?;
    let ct = security::make_challenge(&key, id, &nonce, &chal).map_err(|e| anyhow!("{e}"))?;
    let answer = Client::open()?.challenge(id, &nonce, &ct)?;
    security::verify_response(&key, id, &chal, &answer.nonce, &answer.ciphertext)
        .map_err(|e| anyhow!("kernel answer does not verify: {e}"))?;
    if answer.nonce == nonce {
        bail!("kernel reused the NCO's nonce");
    }
    println!("challenge ok");
    Ok(())
}

/// Malformed requests: each must be refused with an error, and the family
/// must still answer afterwards.
fn malformed() -> Result<()> {
    let c = Client::open()?;
    let g = c.genl();
    let fam = g.family();
    let genl = |command: u8, attrs: &Attrs| {
        let mut p = vec![command, 1, 0, 0];
        p.extend_from_slice(attrs.as_bytes());
        p
    };
    let ack = 1 | 4; // NLM_F_REQUEST | NLM_F_ACK
    let cases: Vec<(&str, u8, Attrs, Option<u32>)> = vec![
        (
            "register without id",
            cmd::REGISTER,
            Attrs::new().u16(attr::KIND, 1),
            None,
        ),
        (
            "register without kind",
            cmd::REGISTER,
            Attrs::new().u32(attr::ID, 7),
            None,
        ),
        (
            "register id as u8",
            cmd::REGISTER,
            Attrs::new().u8(attr::ID, 7).u16(attr::KIND, 1),
            None,
        ),
        (
            "register unknown kind",
            cmd::REGISTER,
            Attrs::new().u32(attr::ID, 7).u16(attr::KIND, 99),
            None,
        ),
        (
            "register id 0",
            cmd::REGISTER,
            Attrs::new().u32(attr::ID, 0).u16(attr::KIND, 1),
            None,
        ),
        (
            "register flags out of range",
            cmd::REGISTER,
            Attrs::new()
                .u32(attr::ID, 7)
                .u16(attr::KIND, 1)
                .u8(attr::FLAGS, 0xf0),
            None,
        ),
        (
            "register bad parameter value",
            cmd::REGISTER,
            Attrs::new().u32(attr::ID, 7).u16(attr::KIND, 6).nested(
                attr::PARAMS,
                Attrs::new().nested(
                    1,
                    Attrs::new()
                        .string(nl::param::NAME, "interval")
                        .string(nl::param::VALUE, "3"),
                ),
            ),
            None,
        ),
        (
            "register unknown parameter",
            cmd::REGISTER,
            Attrs::new().u32(attr::ID, 7).u16(attr::KIND, 7).nested(
                attr::PARAMS,
                Attrs::new().nested(
                    1,
                    Attrs::new()
                        .string(nl::param::NAME, "tag")
                        .string(nl::param::VALUE, "x"),
                ),
            ),
            None,
        ),
        (
            "register parameter without value",
            cmd::REGISTER,
            Attrs::new().u32(attr::ID, 7).u16(attr::KIND, 1).nested(
                attr::PARAMS,
                Attrs::new().nested(1, Attrs::new().string(nl::param::NAME, "tag")),
            ),
            None,
        ),
        (
            "register parameter not a string",
            cmd::REGISTER,
            Attrs::new().u32(attr::ID, 7).u16(attr::KIND, 1).nested(
                attr::PARAMS,
                Attrs::new().nested(
                    1,
                    Attrs::new()
                        .bytes(nl::param::NAME, b"tag")
                        .bytes(nl::param::VALUE, b"abc"),
                ),
            ),
            None,
        ),
        (
            "register match garbage",
            cmd::REGISTER,
            Attrs::new()
                .u32(attr::ID, 7)
                .u16(attr::KIND, 1)
                .bytes(attr::MATCH | 0x8000, &[1, 2, 3, 4, 5, 6, 7, 8]),
            None,
        ),
        (
            "register match address 5 bytes",
            cmd::REGISTER,
            Attrs::new().u32(attr::ID, 7).u16(attr::KIND, 1).nested(
                attr::MATCH,
                Attrs::new().bytes(nl::matching::SRC_ADDR, &[1, 2, 3, 4, 5]),
            ),
            None,
        ),
        (
            "register match protocol 1",
            cmd::REGISTER,
            Attrs::new()
                .u32(attr::ID, 7)
                .u16(attr::KIND, 1)
                .nested(attr::MATCH, Attrs::new().u8(nl::matching::PROTO, 1)),
            None,
        ),
        (
            "register name too long",
            cmd::REGISTER,
            Attrs::new().u32(attr::ID, 7).u16(attr::KIND, 1).nested(
                attr::MATCH,
                Attrs::new().string(nl::matching::PROCESS, "a-process-name-too-long"),
            ),
            None,
        ),
        (
            "register key 31 bytes",
            cmd::REGISTER,
            Attrs::new()
                .u32(attr::ID, 7)
                .u16(attr::KIND, 1)
                .bytes(attr::KEY, &[0; 31]),
            None,
        ),
        (
            "register unknown attribute",
            cmd::REGISTER,
            Attrs::new().u32(attr::ID, 7).u16(attr::KIND, 1).u32(99, 1),
            None,
        ),
        (
            "revoke unknown id",
            cmd::REVOKE,
            Attrs::new().u32(attr::ID, 424242),
            None,
        ),
        ("revoke without id", cmd::REVOKE, Attrs::new(), None),
        (
            "activate without value",
            cmd::ACTIVATE,
            Attrs::new().u32(attr::ID, 424242),
            None,
        ),
        (
            "activate value 2",
            cmd::ACTIVATE,
            Attrs::new().u32(attr::ID, 424242).u8(attr::VALUE, 2),
            None,
        ),
        (
            "deprecate unknown id",
            cmd::DEPRECATE,
            Attrs::new().u32(attr::ID, 424242).u8(attr::VALUE, 1),
            None,
        ),
        (
            "priority as u32",
            cmd::PRIORITY,
            Attrs::new().u32(attr::ID, 424242).u32(attr::PRIORITY, 5),
            None,
        ),
        (
            "priority unknown id",
            cmd::PRIORITY,
            Attrs::new().u32(attr::ID, 424242).u16(attr::PRIORITY, 5),
            None,
        ),
        (
            "report unknown id",
            cmd::REPORT,
            Attrs::new().u32(attr::ID, 424242),
            None,
        ),
        (
            "challenge unknown id",
            cmd::CHALLENGE,
            Attrs::new()
                .u32(attr::ID, 424242)
                .bytes(attr::NONCE, &[0; 12])
                .bytes(attr::CIPHERTEXT, &[0; 32]),
            None,
        ),
        (
            "challenge short nonce",
            cmd::CHALLENGE,
            Attrs::new()
                .u32(attr::ID, 424242)
                .bytes(attr::NONCE, &[0; 11])
                .bytes(attr::CIPHERTEXT, &[0; 32]),
            None,
        ),
        (
            "challenge without ciphertext",
            cmd::CHALLENGE,
            Attrs::new()
                .u32(attr::ID, 424242)
                .bytes(attr::NONCE, &[0; 12]),
            None,
        ),
        ("unknown command", 200, Attrs::new().u32(attr::ID, 1), None),
        (
            "attribute longer than message",
            cmd::REVOKE,
            Attrs::new().bytes(attr::ID, &[1, 0, 0, 0]),
            Some(28),
        ),
    ];
    let mut bad = 0;
    for (name, command, attrs, forged) in &cases {
        let mut payload = genl(*command, attrs);
        let forged_len = forged.map(|_| {
            // Claim an attribute longer than the message holds.
            if payload.len() >= 6 {
                payload[4] = 200;
            }
            (16 + payload.len()) as u32
        });
        match g.request_raw(fam, ack, &payload, forged_len) {
            Err(nl::NlError::Kernel { errno, message }) => {
                println!("ok   {name}: errno {errno} ({message})")
            }
            Ok(_) => {
                println!("FAIL {name}: accepted");
                bad += 1;
            }
            Err(e) => {
                println!("FAIL {name}: {e}");
                bad += 1;
            }
        }
    }
    // A truncated header: the kernel drops it (no answer is due), so it is
    // sent without waiting; the next request must still work.
    {
        let _ = g.request_raw(fam, 1, &[cmd::REPORT], None).err();
    }
    // Duplicate id without REPLACE, and a full table.
    let m = |id: u32| ModuleConfig {
        id,
        name: format!("m{id}"),
        kind: "rate-limit".into(),
        priority: 1,
        activated: false,
        deprecated: false,
        attach: Attach::NewSockets,
        matching: MatchRules::default(),
        parameters: BTreeMap::new(),
        key: None,
    };
    let before = c.report()?.len() as u32;
    c.register(&m(9000), false)?;
    match c.genl().request(
        cmd::REGISTER,
        0,
        l45_tap_kernel::register_attrs(&m(9000))?.as_bytes(),
    ) {
        Err(nl::NlError::Kernel {
            errno: libc::EEXIST,
            message,
        }) => println!("ok   duplicate id: EEXIST ({message})"),
        other => {
            println!("FAIL duplicate id: {other:?}");
            bad += 1;
        }
    }
    c.register(&m(9000), true)
        .context("replace an existing id")?;
    let mut added = vec![9000];
    for id in 9001..9000 + 64 - before {
        c.register(&m(id), false)?;
        added.push(id);
    }
    match c.genl().request(
        cmd::REGISTER,
        0,
        l45_tap_kernel::register_attrs(&m(9999))?.as_bytes(),
    ) {
        Err(nl::NlError::Kernel {
            errno: libc::ENOSPC,
            message,
        }) => println!("ok   table full: ENOSPC ({message})"),
        other => {
            println!("FAIL table full: {other:?}");
            bad += 1;
        }
    }
    for id in added {
        c.revoke(id)?;
    }
    let r = c
        .report()
        .context("family answers after the malformed messages")?;
    println!("family still answers ({} modules)", r.len());
    if bad > 0 {
        bail!("{bad} malformed messages were not refused");
    }
    println!("malformed: {} refused", cases.len());
    Ok(())
}

/// Deterministic payload byte `i` of a transfer.
fn pattern(i: u64) -> u8 {
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i >> 7);
    (x >> 24) as u8
}

fn fnv(h: u64, b: &[u8]) -> u64 {
    b.iter()
        .fold(h, |h, &x| (h ^ x as u64).wrapping_mul(0x100_0000_01b3))
}

fn tcp_serve(host: &str, port: u16, bytes: u64, connections: u32) -> Result<()> {
    let l = TcpListener::bind((any_of(host), port))?;
    println!("listening");
    let mut threads = Vec::new();
    for _ in 0..connections {
        let (s, _) = l.accept()?;
        threads.push(std::thread::spawn(move || send_pattern(s, bytes)));
    }
    for t in threads {
        t.join().map_err(|_| anyhow!("server thread panicked"))??;
    }
    Ok(())
}

/// Writes `bytes` of the test pattern in 16 KiB writes, then ends the stream.
fn send_pattern(mut s: TcpStream, bytes: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16384];
    let mut sent = 0u64;
    while sent < bytes {
        let n = ((bytes - sent) as usize).min(buf.len());
        for (j, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern(sent + j as u64);
        }
        s.write_all(&buf[..n])?;
        sent += n as u64;
    }
    s.shutdown(std::net::Shutdown::Write)
}

fn tcp_get(host: &str, port: u16, bytes: u64) -> Result<()> {
    let start = Instant::now();
    receive_pattern(TcpStream::connect((host, port))?, bytes, start)
}

/// Reads the stream to its end and checks it is `bytes` of the test pattern;
/// prints the time since `start`.
fn receive_pattern(mut s: TcpStream, bytes: u64, start: Instant) -> Result<()> {
    let mut buf = vec![0u8; 7919]; // odd size: tags split across reads
    let mut got = 0u64;
    let (mut h_got, mut h_want) = (0xcbf2_9ce4_8422_2325u64, 0xcbf2_9ce4_8422_2325u64);
    let mut mismatch = None;
    loop {
        let n = match s.read(&mut buf) {
            Ok(n) => n,
            // Unloading the module wakes a receive waiting in the tap with
            // EINTR (docs/kernel-tap.md): retry, as applications do.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            break;
        }
        for (j, &b) in buf[..n].iter().enumerate() {
            let want = pattern(got + j as u64);
            if b != want && mismatch.is_none() {
                mismatch = Some(got + j as u64);
            }
            h_want = fnv(h_want, &[want]);
        }
        h_got = fnv(h_got, &buf[..n]);
        if got == 0 {
            println!("started");
            std::io::stdout().flush()?;
        }
        got += n as u64;
    }
    let us = start.elapsed().as_micros();
    if got != bytes || h_got != h_want {
        bail!("transfer: {got} of {bytes} bytes, checksum {h_got:016x} want {h_want:016x}, first difference at {mismatch:?}");
    }
    println!("ok bytes={got} fnv={h_got:016x} us={us}");
    Ok(())
}

fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// dns-loop PORT COUNT [--until FILE]: one UDP socket (a live flow), COUNT
/// queries for example.test (or until FILE exists, at least COUNT), each
/// answered with 1.2.3.4 within 2 s. Prints answered/failed and timing.
fn dns_loop(host: &str, port: u16, count: u32, until: Option<&str>) -> Result<()> {
    let s = UdpSocket::bind((any_of(host), 0))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.connect((host, port))?;
    let (mut ok, mut failed) = (0u32, 0u32);
    let start = Instant::now();
    let mut buf = [0u8; 1500];
    let mut i = 0u32;
    loop {
        let done_count = i >= count;
        let stop = match until {
            Some(f) => done_count && std::path::Path::new(f).exists(),
            None => done_count,
        };
        if stop {
            break;
        }
        let id = (i % 65536) as u16;
        i += 1;
        s.send(&dns_query(id, "example.test"))?;
        let answered = loop {
            match s.recv(&mut buf) {
                Ok(n) => {
                    let r = &buf[..n];
                    if r.len() >= 12 && r[..2] == id.to_be_bytes() {
                        break r[3] & 0x0f == 0
                            && r[6..8] != [0, 0]
                            && r.windows(4).any(|w| w == [1, 2, 3, 4]);
                    }
                    // An answer to an earlier, timed-out query: keep waiting.
                }
                Err(_) => break false,
            }
        };
        if answered {
            ok += 1;
        } else {
            failed += 1;
            eprintln!("query {i} not answered");
        }
        if i == 1 {
            println!("first");
            std::io::stdout().flush()?;
        }
    }
    println!(
        "answered={ok} failed={failed} us={}",
        start.elapsed().as_micros()
    );
    if failed > 0 {
        bail!("{failed} of {i} queries failed");
    }
    Ok(())
}

/// A NETCONF 1.0 session through `ssh -s netconf` to the agent on
/// 127.0.0.1:`port` as `admin`, hello exchanged.
struct Session {
    child: std::process::Child,
    to: std::process::ChildStdin,
    from: BufReader<std::process::ChildStdout>,
}

impl Session {
    fn open(port: u16, key: &str) -> Result<Session> {
        let mut child = Command::new("ssh")
            .args([
                "-q",
                "-i",
                key,
                "-p",
                &port.to_string(),
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "admin@127.0.0.1",
                "-s",
                "netconf",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting ssh")?;
        let to = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let from = BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?);
        let mut s = Session { child, to, from };
        let hello = s.read_msg()?;
        if !hello.contains("<hello") {
            bail!("no server hello");
        }
        write!(
            s.to,
            "<hello xmlns=\"urn:ietf:params:xml:ns:netconf:base:1.0\"><capabilities>\
             <capability>urn:ietf:params:netconf:base:1.0</capability></capabilities></hello>]]>]]>"
        )?;
        Ok(s)
    }

    /// The next message (1.0 framing), trimmed.
    fn read_msg(&mut self) -> Result<String> {
        let mut out = Vec::new();
        loop {
            let n = self.from.read_until(b'>', &mut out)?;
            if n == 0 {
                bail!("session closed");
            }
            if out.ends_with(b"]]>]]>") {
                out.truncate(out.len() - 6);
                return Ok(String::from_utf8_lossy(&out).trim().to_string());
            }
        }
    }

    /// Sends one RPC; returns its reply (notifications before it skipped).
    fn rpc(&mut self, id: &str, rpc: &str) -> Result<String> {
        write!(
            self.to,
            "<rpc message-id=\"{id}\" xmlns=\"urn:ietf:params:xml:ns:netconf:base:1.0\">{rpc}</rpc>]]>]]>"
        )?;
        self.to.flush()?;
        loop {
            let m = self.read_msg()?;
            if m.contains("<rpc-reply") {
                return Ok(m);
            }
        }
    }

    fn close(mut self) {
        let _ = write!(
            self.to,
            "<rpc message-id=\"c\" xmlns=\"urn:ietf:params:xml:ns:netconf:base:1.0\"><close-session/></rpc>]]>]]>"
        );
        drop(self.to);
        let _ = self.child.wait();
    }
}

/// netconf PORT KEY RPC...: one session; prints each reply (one line
/// each); fails on the first rpc-error. An RPC `@FILE` is read from FILE
/// (bodies too big for an argument, such as an install-module with its
/// image).
fn netconf(args: &[String]) -> Result<()> {
    let port: u16 = num(args, 1, "port")?;
    let key = args.get(2).ok_or_else(|| anyhow!("missing key"))?;
    let mut s = Session::open(port, key)?;
    for (i, rpc) in args[3..].iter().enumerate() {
        let body;
        let rpc = match rpc.strip_prefix('@') {
            Some(path) => {
                body = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
                body.trim_end()
            }
            None => rpc.as_str(),
        };
        let reply = s.rpc(&(i + 1).to_string(), rpc)?;
        println!("{}", reply.replace('\n', " "));
        if reply.contains("<rpc-error") {
            bail!("rpc {} failed", i + 1);
        }
    }
    s.close();
    Ok(())
}

/// Text of the first element named `name` (any prefix) in `xml`.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = xml;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let tag_end = rest.find('>')?;
        let tag = &rest[..tag_end];
        let local = tag.split_whitespace().next()?.rsplit(':').next()?;
        if local == name && !tag.starts_with('/') {
            let body = &rest[tag_end + 1..];
            return body.find('<').map(|j| &body[..j]);
        }
    }
    None
}

/// netconf-challenge PORT SSHKEY ID KEYHEX: the NCO's side of a challenge
/// through the agent's `challenge` RPC (which asks the kernel), checked end
/// to end. Fails on an rpc-error (a wrong key must make one).
fn netconf_challenge(args: &[String]) -> Result<()> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let port: u16 = num(args, 1, "port")?;
    let ssh_key = args.get(2).ok_or_else(|| anyhow!("missing ssh key"))?;
    let id: u32 = num(args, 3, "id")?;
    let key = hex(args.get(4).ok_or_else(|| anyhow!("missing key"))?)?;
    let mut nonce = [0u8; security::NONCE_LEN];
    let mut chal = [0u8; security::CHALLENGE_LEN];
    let mut f = std::fs::File::open("/dev/urandom")?;
    f.read_exact(&mut nonce)?;
    f.read_exact(&mut chal)?;
    let ct = security::make_challenge(&key, id, &nonce, &chal).map_err(|e| anyhow!("{e}"))?;
    let mut s = Session::open(port, ssh_key)?;
    let reply = s.rpc(
        "1",
        &format!(
            "<challenge xmlns=\"urn:layer45:params:xml:ns:yang:layer45-customization\"><id>{id}</id>\
             <nonce>{}</nonce><ciphertext>{}</ciphertext></challenge>",
            b64.encode(nonce),
            b64.encode(ct)
        ),
    )?;
    s.close();
    println!("{}", reply.replace('\n', " "));
    if reply.contains("<rpc-error") {
        bail!("the challenge was refused");
    }
    let field = |name| -> Result<Vec<u8>> {
        let text = element(&reply, name).ok_or_else(|| anyhow!("no {name} in the reply"))?;
        b64.decode(text.trim()).map_err(|e| anyhow!("{name}: {e}"))
    };
    let (rnonce, rct) = (field("nonce")?, field("ciphertext")?);
    security::verify_response(&key, id, &chal, &rnonce, &rct)
        .map_err(|e| anyhow!("the answer does not verify: {e}"))?;
    println!("challenge through the agent ok");
    Ok(())
}

/// netconf-notify PORT SSHKEY NAME SECONDS: subscribes to the agent's
/// NETCONF stream, prints "subscribed", then waits for a notification
/// NAME (printed) for at most SECONDS.
fn netconf_notify(args: &[String]) -> Result<()> {
    let port: u16 = num(args, 1, "port")?;
    let ssh_key = args.get(2).ok_or_else(|| anyhow!("missing ssh key"))?;
    let name = args
        .get(3)
        .ok_or_else(|| anyhow!("missing notification name"))?
        .clone();
    let secs: u64 = num(args, 4, "seconds")?;
    let mut s = Session::open(port, ssh_key)?;
    let reply = s.rpc(
        "1",
        "<create-subscription xmlns=\"urn:ietf:params:xml:ns:netconf:notification:1.0\"/>",
    )?;
    if !reply.contains("<ok") {
        bail!("subscription refused: {reply}");
    }
    println!("subscribed");
    std::io::stdout().flush()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || loop {
        let m = s.read_msg();
        let stop = m.is_err();
        if tx.send(m).is_err() || stop {
            break;
        }
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = rx
            .recv_timeout(left)
            .map_err(|_| anyhow!("no {name} notification within {secs} s"))??;
        if m.contains(&format!("<{name}")) {
            println!("{}", m.replace('\n', " "));
            return Ok(());
        }
    }
}
