//! `l45-ktest fuzz-netlink SECONDS [--corpus DIR] [--seed N] [--print-new]`: a
//! coverage-guided fuzzer of the kernel module's netlink family, run
//! inside the VM against the real module: the kernel's attribute parsing
//! (`nla_parse` with the family's policies), the C handlers in `shim.c`
//! and the Rust code they call. Coverage comes from KCOV (the test kernel
//! has `CONFIG_KCOV`), kept to the module's code and the kernel's netlink
//! attribute and generic netlink functions, as edges between covered
//! program counters. An input that reaches a new edge joins the corpus
//! (written to `--corpus DIR`, and with `--print-new` printed as
//! `KFUZZ <hex>` lines, which `kmod/vm-test.sh` can keep in the repository:
//! the VM's files do not outlive it).
//!
//! Failures: a request the kernel does not answer within 5 s, the family
//! no longer answering a valid report, or a module table that a report
//! and revokes cannot empty. A kernel splat (lockdep, BUG, WARN) is found
//! by the VM tests' `dmesg_clean`, which runs after this.
#![allow(unsafe_code)] // the KCOV interface: ioctls and a shared buffer; every block has a SAFETY note

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use l45_modules::Kind;
use l45_tap_control::{Attach, MatchRules, ModuleConfig, Protocol};
use l45_tap_kernel::nl::{self, attr, cmd, matching, param, Attrs};
use l45_tap_kernel::Client;

const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
/// 64-bit words of the KCOV buffer (the first holds the count).
const COVER_WORDS: usize = 1 << 16;
const CORPUS_MAX: usize = 4096;

/// One request: generic netlink command, header flags, attributes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Input {
    command: u8,
    dump: bool,
    attrs: Vec<u8>,
}

impl Input {
    fn to_bytes(&self) -> Vec<u8> {
        let mut v = vec![self.command, u8::from(self.dump)];
        v.extend_from_slice(&self.attrs);
        v
    }

    fn from_bytes(b: &[u8]) -> Option<Input> {
        Some(Input {
            command: *b.first()?,
            dump: *b.get(1)? != 0,
            attrs: b.get(2..)?.to_vec(),
        })
    }
}

/// xorshift64*: reproducible from the seed printed at the start.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// This thread's KCOV buffer, enabled for the thread.
struct Kcov {
    fd: i32,
    cover: *mut u64,
}

impl Kcov {
    fn open() -> Result<Kcov> {
        const KCOV_INIT_TRACE: libc::c_ulong = 0x8008_6301;
        const KCOV_ENABLE: libc::c_ulong = 0x6364;
        const KCOV_TRACE_PC: libc::c_ulong = 0;
        let path = c"/sys/kernel/debug/kcov";
        // SAFETY: plain open of a NUL-terminated path.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            bail!(
                "open /sys/kernel/debug/kcov: {} (a kernel with CONFIG_KCOV and debugfs mounted)",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: the KCOV ioctls on its descriptor, then a shared mapping
        // of exactly the size given to KCOV_INIT_TRACE.
        unsafe {
            if libc::ioctl(fd, KCOV_INIT_TRACE, COVER_WORDS as libc::c_ulong) != 0 {
                bail!("KCOV_INIT_TRACE: {}", std::io::Error::last_os_error());
            }
            let p = libc::mmap(
                std::ptr::null_mut(),
                COVER_WORDS * 8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            if p == libc::MAP_FAILED {
                bail!("mmap kcov: {}", std::io::Error::last_os_error());
            }
            if libc::ioctl(fd, KCOV_ENABLE, KCOV_TRACE_PC) != 0 {
                bail!("KCOV_ENABLE: {}", std::io::Error::last_os_error());
            }
            Ok(Kcov {
                fd,
                cover: p.cast(),
            })
        }
    }

    fn reset(&self) {
        // SAFETY: word 0 of the mapped buffer; KCOV appends after it.
        unsafe { std::ptr::write_volatile(self.cover, 0) };
    }

    /// Program counters covered since `reset`.
    fn covered(&self) -> Vec<u64> {
        // SAFETY: KCOV writes at most COVER_WORDS - 1 entries after word 0.
        unsafe {
            let n = (std::ptr::read_volatile(self.cover) as usize).min(COVER_WORDS - 1);
            (1..=n)
                .map(|i| std::ptr::read_volatile(self.cover.add(i)))
                .collect()
        }
    }
}

impl Drop for Kcov {
    fn drop(&mut self) {
        // SAFETY: unmapping what `open` mapped and closing its descriptor.
        unsafe {
            libc::munmap(self.cover.cast(), COVER_WORDS * 8);
            libc::close(self.fd);
        }
    }
}

/// Which covered program counters count: the module's code and the
/// kernel's netlink attribute and generic netlink functions (the rest of
/// a request's path — allocation, locking, scheduling — is noise).
struct Interesting {
    /// Function start addresses, sorted, and whether each one counts.
    functions: Vec<(u64, bool)>,
}

impl Interesting {
    fn load() -> Result<Interesting> {
        let text = std::fs::read_to_string("/proc/kallsyms").context("read /proc/kallsyms")?;
        let mut functions: Vec<(u64, bool)> = text
            .lines()
            .filter_map(|line| {
                let mut f = line.split_whitespace();
                let addr = u64::from_str_radix(f.next()?, 16).ok()?;
                let ty = f.next()?;
                let name = f.next()?;
                let module = f.next();
                if !matches!(ty, "t" | "T") || addr == 0 {
                    return None;
                }
                let counts = module == Some("[l45]")
                    || name.contains("nla_")
                    || name.starts_with("genl_")
                    || name.starts_with("l45_");
                Some((addr, counts))
            })
            .collect();
        functions.sort_unstable();
        if !functions.iter().any(|(_, c)| *c) {
            bail!("no l45 or netlink symbols in /proc/kallsyms (kptr_restrict?)");
        }
        Ok(Interesting { functions })
    }

    fn counts(&self, pc: u64) -> bool {
        match self.functions.partition_point(|(a, _)| *a <= pc) {
            0 => false,
            i => self.functions[i - 1].1,
        }
    }
}

fn module(id: u32, kind: Kind, parameters: &[(&str, &str)]) -> ModuleConfig {
    ModuleConfig {
        id,
        name: format!("m{id}"),
        kind: kind.name().into(),
        priority: 10,
        activated: true,
        deprecated: false,
        attach: Attach::NewSockets,
        matching: MatchRules {
            protocol: Some(Protocol::Udp),
            destination_port: Some(5300),
            ..MatchRules::default()
        },
        parameters: parameters
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        key: Some(vec![7u8; 32]),
    }
}

/// Valid requests of every command, to start from.
fn seeds() -> Result<Vec<Input>> {
    let mut out = Vec::new();
    for (i, kind) in Kind::ALL.into_iter().enumerate() {
        let params: &[(&str, &str)] = match kind {
            Kind::DnsClearanceFilter => &[("code", "0123456789abcdefghijklmnopqrstuv")],
            Kind::StreamTag => &[("tag", "TAGX"), ("interval", "1000")],
            _ => &[],
        };
        let a = l45_tap_kernel::register_attrs(&module(100 + i as u32, kind, params))
            .map_err(|e| anyhow!("seed {}: {e}", kind.name()))?;
        out.push(Input {
            command: cmd::REGISTER,
            dump: false,
            attrs: a.as_bytes().to_vec(),
        });
    }
    let full = Attrs::new()
        .u32(attr::ID, 7)
        .u16(attr::KIND, 1)
        .u16(attr::PRIORITY, 3)
        .u8(attr::FLAGS, 1)
        .nested(
            attr::MATCH,
            Attrs::new()
                .u8(matching::PROTO, 17)
                .bytes(matching::SRC_ADDR, &[10, 0, 0, 0])
                .u8(matching::SRC_PREFIX, 8)
                .bytes(
                    matching::DST_ADDR,
                    &[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                )
                .u8(matching::DST_PREFIX, 64)
                .u16(matching::SRC_PORT, 53)
                .u16(matching::DST_PORT, 53)
                .string(matching::THREAD, "worker")
                .string(matching::PROCESS, "dnsmasq"),
        )
        .nested(
            attr::PARAMS,
            Attrs::new().nested(
                1,
                Attrs::new()
                    .string(param::NAME, "tag")
                    .string(param::VALUE, "ABCD"),
            ),
        )
        .bytes(attr::KEY, &[9; 32])
        .bytes(attr::REPLACE, &[]);
    out.push(Input {
        command: cmd::REGISTER,
        dump: false,
        attrs: full.as_bytes().to_vec(),
    });
    let id = |v| Attrs::new().u32(attr::ID, v);
    for (command, attrs) in [
        (cmd::REVOKE, id(100)),
        (cmd::ACTIVATE, id(100).u8(attr::VALUE, 0)),
        (cmd::DEPRECATE, id(100).u8(attr::VALUE, 1)),
        (cmd::PRIORITY, id(100).u16(attr::PRIORITY, 5)),
        (cmd::REPORT, id(100)),
        (
            cmd::CHALLENGE,
            id(100)
                .bytes(attr::NONCE, &[1; 12])
                .bytes(attr::CIPHERTEXT, &[2; 32]),
        ),
    ] {
        out.push(Input {
            command,
            dump: false,
            attrs: attrs.as_bytes().to_vec(),
        });
    }
    for command in [cmd::REPORT, cmd::SOCKETS] {
        out.push(Input {
            command,
            dump: true,
            attrs: Vec::new(),
        });
    }
    Ok(out)
}

/// The attributes of a payload as (raw type with flags, data), and
/// whatever trails them.
fn split_attrs(mut data: &[u8]) -> (Vec<(u16, Vec<u8>)>, Vec<u8>) {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([data[0], data[1]]));
        let ty = u16::from_ne_bytes([data[2], data[3]]);
        if len < 4 || len > data.len() {
            break;
        }
        out.push((ty, data[4..len].to_vec()));
        data = &data[len.next_multiple_of(4).min(data.len())..];
    }
    (out, data.to_vec())
}

fn join_attrs(attrs: &[(u16, Vec<u8>)], tail: &[u8]) -> Vec<u8> {
    let mut a = Attrs::new();
    for (ty, data) in attrs {
        a.put(*ty, data);
    }
    let mut v = a.as_bytes().to_vec();
    v.extend_from_slice(tail);
    v
}

/// Mutates the attribute bytes, as bytes or as attributes (nested ones
/// too), or splices in another input's attributes.
fn mutate_attrs(rng: &mut Rng, attrs: &[u8], other: &[u8], depth: u32) -> Vec<u8> {
    let (mut list, tail) = split_attrs(attrs);
    match rng.below(10) {
        0 if !attrs.is_empty() => {
            let mut v = attrs.to_vec();
            for _ in 0..=rng.below(4) {
                let i = rng.below(v.len());
                v[i] = match rng.below(4) {
                    0 => v[i] ^ (1 << rng.below(8)),
                    1 => 0,
                    2 => 0xff,
                    _ => rng.next() as u8,
                };
            }
            return v;
        }
        1 if !list.is_empty() => {
            list.remove(rng.below(list.len()));
        }
        2 if !list.is_empty() => {
            let i = rng.below(list.len());
            let dup = list[i].clone();
            list.insert(rng.below(list.len() + 1), dup);
        }
        3 if !list.is_empty() => {
            let i = rng.below(list.len());
            list[i].0 = (rng.below(18) as u16) | (list[i].0 & 0x8000);
        }
        4 if !list.is_empty() => {
            let i = rng.below(list.len());
            let n = list[i].1.len();
            if rng.chance(2) {
                list[i].1.truncate(rng.below(n + 1));
            } else {
                let n = 1 + rng.below(40);
                let extra = rng.bytes(n);
                list[i].1.extend(extra);
            }
        }
        5 => {
            let ty = rng.below(18) as u16 | if rng.chance(4) { 0x8000 } else { 0 };
            let data = match rng.below(4) {
                0 => Vec::new(),
                1 => (rng.next() as u32).to_ne_bytes().to_vec(),
                2 => {
                    let ty = 1 + rng.below(10) as u16;
                    let n = rng.below(20);
                    let inner = Attrs::new().bytes(ty, &rng.bytes(n));
                    inner.as_bytes().to_vec()
                }
                _ => {
                    let n = rng.below(300);
                    rng.bytes(n)
                }
            };
            list.insert(rng.below(list.len() + 1), (ty, data));
        }
        6 if depth < 3 && list.iter().any(|(_, d)| d.len() >= 4) => {
            let nested: Vec<usize> = (0..list.len()).filter(|&i| list[i].1.len() >= 4).collect();
            let i = nested[rng.below(nested.len())];
            list[i].1 = mutate_attrs(rng, &list[i].1.clone(), other, depth + 1);
        }
        7 if list.len() > 1 => {
            let a = rng.below(list.len());
            let b = rng.below(list.len());
            list.swap(a, b);
        }
        8 => {
            let (theirs, _) = split_attrs(other);
            if let Some(x) = theirs.get(rng.below(theirs.len().max(1))) {
                list.insert(rng.below(list.len() + 1), x.clone());
            }
        }
        _ => {
            // Small integers where ids, kinds and values go.
            let i = rng.below(list.len().max(1));
            if let Some((_, d)) = list.get_mut(i) {
                let v: u32 = [0, 1, 2, 7, 8, 16, 17, 64, 65, 255, 256, u32::MAX][rng.below(12)];
                let b = v.to_ne_bytes();
                let n = d.len().min(4);
                d[..n].copy_from_slice(&b[..n]);
            }
        }
    }
    join_attrs(&list, &tail)
}

fn mutate(rng: &mut Rng, input: &Input, other: &Input) -> Input {
    let mut out = input.clone();
    for _ in 0..=rng.below(3) {
        out.attrs = mutate_attrs(rng, &out.attrs, &other.attrs, 0);
    }
    if rng.chance(20) {
        out.command = rng.below(12) as u8;
    }
    if rng.chance(20) {
        out.dump = !out.dump;
    }
    if out.attrs.len() > 8192 {
        out.attrs.truncate(8192);
    }
    out
}

/// Revokes every module the kernel reports (inputs register modules).
fn clear(c: &Client) -> Result<()> {
    for s in c.report().context("report")? {
        c.revoke(s.id).with_context(|| format!("revoke {}", s.id))?;
    }
    if !c.report()?.is_empty() {
        bail!("modules left after revoking every reported one");
    }
    Ok(())
}

pub fn fuzz_netlink(args: &[String]) -> Result<()> {
    let seconds: u64 = args
        .get(1)
        .ok_or_else(|| anyhow!("usage: fuzz-netlink SECONDS [--corpus DIR] [--seed N]"))?
        .parse()
        .map_err(|_| anyhow!("bad SECONDS"))?;
    let corpus_dir = crate::opt(args, "--corpus").map(std::path::PathBuf::from);
    let seed = match crate::opt(args, "--seed") {
        Some(s) => s.parse().map_err(|_| anyhow!("bad seed"))?,
        None => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        }
    };
    println!("fuzz-netlink: seed {seed}, {seconds} s");
    let c = Client::open()?;
    let g = c.genl();
    g.set_receive_timeout(Duration::from_secs(5))?;
    let family = g.family();
    let interesting = Interesting::load()?;
    let kcov = Kcov::open()?;
    let mut rng = Rng(seed);

    let mut corpus: Vec<Input> = seeds()?;
    let mut kept = 0usize;
    if let Some(dir) = &corpus_dir {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if let Some(i) = std::fs::read(e.path())
                    .ok()
                    .as_deref()
                    .and_then(Input::from_bytes)
                {
                    corpus.push(i);
                    kept += 1;
                }
            }
        }
    }
    let mut known: HashSet<Input> = corpus.iter().cloned().collect();
    let mut edges: HashSet<u64> = HashSet::new();
    let mut new_entries: Vec<Input> = Vec::new();
    let (mut execs, mut accepted, mut refused) = (0u64, 0u64, 0u64);

    let mut run = |input: &Input, edges: &mut HashSet<u64>| -> Result<bool> {
        let mut payload = vec![input.command, 1, 0, 0];
        payload.extend_from_slice(&input.attrs);
        let flags = NLM_F_REQUEST | NLM_F_ACK | if input.dump { NLM_F_DUMP } else { 0 };
        kcov.reset();
        let answer = g.request_raw(family, flags, &payload, None);
        let pcs = kcov.covered();
        execs += 1;
        match answer {
            Ok(_) => accepted += 1,
            Err(nl::NlError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                bail!("no answer within 5 s to {input:?}")
            }
            Err(_) => refused += 1,
        }
        let mut new = false;
        let mut prev = 0u64;
        for pc in pcs.into_iter().filter(|&pc| interesting.counts(pc)) {
            new |= edges.insert(prev.rotate_left(1) ^ pc);
            prev = pc;
        }
        Ok(new)
    };

    for input in corpus.clone() {
        run(&input, &mut edges)?;
    }
    clear(&c)?;
    let after_corpus = edges.len();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        for _ in 0..200 {
            let base = &corpus[rng.below(corpus.len())];
            let other = &corpus[rng.below(corpus.len())];
            let input = mutate(&mut rng, base, other);
            if run(&input, &mut edges)? && corpus.len() < CORPUS_MAX && known.insert(input.clone())
            {
                corpus.push(input.clone());
                new_entries.push(input);
            }
        }
        clear(&c).context("the family after fuzzed requests")?;
    }
    // A valid request still does what it says.
    c.register(&module(4242, Kind::RateLimit, &[]), false)
        .context("register after fuzzing")?;
    if c.report_one(4242)?.id != 4242 {
        bail!("report after fuzzing does not show the module registered");
    }
    clear(&c)?;
    let secs = start.elapsed().as_secs_f64().max(0.001);
    if args.iter().any(|a| a == "--print-new") {
        for e in &new_entries {
            let hex: String = e.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
            println!("KFUZZ {hex}");
        }
    }
    if let Some(dir) = &corpus_dir {
        std::fs::create_dir_all(dir)?;
        for e in &new_entries {
            let bytes = e.to_bytes();
            let name = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
            });
            std::fs::write(dir.join(format!("{name:016x}")), bytes)?;
        }
    }
    println!(
        "fuzz-netlink: {execs} execs in {secs:.0} s ({:.0}/s), {accepted} accepted, {refused} refused; \
         {} edges ({after_corpus} from the {} starting inputs, {kept} of them kept), {} new corpus entries",
        execs as f64 / secs,
        edges.len(),
        corpus.len() - new_entries.len(),
        new_entries.len()
    );
    Ok(())
}
