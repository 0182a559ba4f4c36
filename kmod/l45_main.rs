// SPDX-License-Identifier: GPL-2.0

//! Layer 4.5 kernel tap.
//!
//! The Rust part of the module: the module table the agent fills over
//! generic netlink, matching at first sight, the per-socket chains and the
//! built-in module kinds, compiled from the same sources as the user-space
//! tap (`modules/src`, `core` only). The C shim (`shim.c`) registers the
//! netlink family, swaps the `tcp_prot`/`udp_prot` handlers and moves bytes;
//! it calls the `l45_rs_*` functions below with its locks held as `l45.h`
//! documents (`cfg`: the configuration spinlock, `sock`: the socket entry's
//! spinlock). Nothing here sleeps or allocates under those locks.

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_int, c_void};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use kernel::prelude::*;

#[allow(
    dead_code,
    unused_attributes,
    unused_imports,
    unreachable_pub,
    missing_docs,
    clippy::all,
    rust_2018_idioms
)]
#[path = "../modules/src/lib.rs"]
mod l45mod;

use l45mod::{
    Ctx, Instance, Kind, ParamError, Params, Recognition, RecvVerdict, Role, SendVerdict, SocketState, Transport,
};

module! {
    type: L45Tap,
    name: "l45",
    author: "Layer 4.5",
    description: "Layer 4.5 kernel tap: customization modules between sockets and TCP/UDP",
    license: "GPL",
}

const MAX_MODULES: usize = 64;
const MAX_CHAIN: usize = 8;
const MAX_PARAMS: usize = 16;
const F_ACTIVATED: u8 = 1;
const F_DEPRECATED: u8 = 2;
const F_IMMEDIATE: u8 = 4;
const R_SPORT: u8 = 1;
const R_DPORT: u8 = 2;
const PROTO_TCP: u8 = 6;
const V_ORIGINAL: c_int = 0;
const V_CUSTOMIZED: c_int = 1;
const V_DROP: c_int = 2;
const SET_ACTIVATED: c_int = 1;
const SET_DEPRECATED: c_int = 2;
const SET_PRIORITY: c_int = 3;

extern "C" {
    fn l45_shim_init() -> c_int;
    fn l45_shim_exit();
    fn l45_now_ns() -> u64;
}

// ===== structures shared with the C shim (l45.h) =====

/// Mirror of `struct l45_sockaddr` (l45.h).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SockAddr {
    family: u8,
    pad: u8,
    port: u16,
    addr: [u8; 16],
}

/// Mirror of `struct l45_view` (l45.h).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct View {
    proto: u8,
    role: u8,
    pad: [u8; 2],
    local: SockAddr,
    remote: SockAddr,
    thread: [u8; 16],
    process: [u8; 16],
}

/// Mirror of `struct l45_prefix` (l45.h).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Prefix {
    family: u8,
    prefix: u8,
    addr: [u8; 16],
}

/// Mirror of `struct l45_rule` (l45.h).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Rule {
    proto: u8,
    flags: u8,
    sport: u16,
    dport: u16,
    src: Prefix,
    dst: Prefix,
    thread: [u8; 16],
    process: [u8; 16],
}

/// Mirror of `struct l45_param` (l45.h).
#[repr(C)]
pub struct Param {
    name: *const u8,
    name_len: u32,
    value: *const u8,
    value_len: u32,
}

/// Mirror of `struct l45_reg` (l45.h).
#[repr(C)]
pub struct Reg {
    id: u32,
    kind: u16,
    priority: u16,
    flags: u8,
    has_key: u8,
    replace: u8,
    nparams: u8,
    rule: Rule,
    params: [Param; MAX_PARAMS],
    key: [u8; 32],
    kind_name: *const u8,
    kind_name_len: u32,
    err_len: u32,
    err: [u8; REG_ERR_LEN],
    check: u8,
}

/// `L45_REG_ERR_LEN` (l45.h): room for a kind parser's error message.
const REG_ERR_LEN: usize = 96;

/// Mirror of `struct l45_stats` (l45.h).
#[repr(C)]
pub struct Stats {
    id: u32,
    kind: u16,
    priority: u16,
    flags: u8,
    has_key: u8,
    pad: [u8; 2],
    sockets: u32,
    bytes_sent: u64,
    bytes_received: u64,
    messages_sent: u64,
    messages_received: u64,
    drops: u64,
    errors: u64,
    active_ts: u64,
    bypassed: u64,
}

/// Mirror of `struct l45_plan` (l45.h): what a socket's chain needs from
/// the shim's data path, recomputed whenever the chain is refreshed.
#[repr(C)]
pub struct Plan {
    send: u8,
    recv: u8,
    splice_len: u8,
    pad: u8,
    splice_at: u16,
    splice_min: u16,
    delay_ms: u32,
    splice_slot: u32,
    splice_id: u32,
    interval: u32,
    splice_bytes: [u8; l45mod::MAX_TAG],
    delay_slot: u32,
    delay_id: u32,
}

const PLAN_NONE: u8 = 0;
const PLAN_DELAY: u8 = 1;
const PLAN_BYTES: u8 = 2;
const PLAN_SPLICE: u8 = 3;
const PLAN_STREAM_TAG: u8 = 4;

// ===== matching (same semantics as tap/engine's Rule::matches) =====

fn name_of(b: &[u8; 16]) -> &[u8] {
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..n]
}

fn prefix_equal(a: &[u8], b: &[u8], bits: usize) -> bool {
    let bits = bits.min(a.len() * 8);
    let full = bits / 8;
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[full] & mask == b[full] & mask
}

fn addr_matches(m: &Prefix, a: &SockAddr, unspecified_matches: bool) -> bool {
    if m.family == 0 {
        return true;
    }
    let (bytes, family): (&[u8], u8) = match a.family {
        4 => (&a.addr[..4], 4),
        // An IPv4-mapped IPv6 address matches IPv4 rules.
        6 if a.addr[..10] == [0u8; 10] && a.addr[10..12] == [0xff, 0xff] => (&a.addr[12..16], 4),
        6 => (&a.addr[..], 6),
        _ => return false,
    };
    if bytes.iter().all(|&b| b == 0) {
        // A socket bound to the wildcard address serves every local address.
        return unspecified_matches;
    }
    if family != m.family {
        return false;
    }
    prefix_equal(bytes, &m.addr[..bytes.len()], m.prefix as usize)
}

impl Rule {
    fn matches(&self, v: &View) -> bool {
        if self.proto != 0 && self.proto != v.proto {
            return false;
        }
        let thread = name_of(&self.thread);
        if !thread.is_empty() && thread != name_of(&v.thread) {
            return false;
        }
        let process = name_of(&self.process);
        if !process.is_empty() && process != name_of(&v.process) {
            return false;
        }
        if self.flags & R_SPORT != 0 && (v.local.family == 0 || v.local.port != self.sport) {
            return false;
        }
        if self.flags & R_DPORT != 0 && (v.remote.family == 0 || v.remote.port != self.dport) {
            return false;
        }
        addr_matches(&self.src, &v.local, true) && addr_matches(&self.dst, &v.remote, false)
    }
}

impl View {
    fn ctx(&self, role: Role, transport: Transport) -> Ctx<'_> {
        Ctx {
            role,
            transport,
            thread_name: name_of(&self.thread),
            process_name: name_of(&self.process),
        }
    }
}

// ===== the module table (guarded by the shim's l45_cfg_lock) =====

#[derive(Clone, Copy)]
struct Spec {
    id: u32,
    revision: u32,
    priority: u16,
    flags: u8,
    rule: Rule,
    instance: Instance,
    key: Option<[u8; 32]>,
}

struct Table {
    specs: [Option<Spec>; MAX_MODULES],
    revision: u32,
}

struct Global<T>(UnsafeCell<T>);

// SAFETY: every access goes through `table()`, whose callers hold the shim's
// configuration spinlock, so there is never more than one user at a time.
unsafe impl<T> Sync for Global<T> {}

static TABLE: Global<Table> = Global(UnsafeCell::new(Table {
    specs: [const { None }; MAX_MODULES],
    revision: 0,
}));

/// Bumped on every configuration change; a chain older than this refreshes.
/// Exported unmangled: the shim's fast path reads it without a call
/// (`l45_rs_gen` in l45.h, a plain u32 there: same size and alignment).
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static l45_rs_gen: AtomicU32 = AtomicU32::new(1);

/// # Safety
/// The caller holds `l45_cfg_lock` for as long as it uses the reference.
unsafe fn table() -> &'static mut Table {
    // SAFETY: exclusive access is guaranteed by the caller's lock.
    unsafe { &mut *TABLE.0.get() }
}

struct Counters {
    id: AtomicU32,
    sockets: AtomicU32,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    messages_sent: AtomicU64,
    messages_received: AtomicU64,
    drops: AtomicU64,
    errors: AtomicU64,
    active_ts: AtomicU64,
    bypassed: AtomicU64,
}

impl Counters {
    const fn new() -> Self {
        Counters {
            id: AtomicU32::new(0),
            sockets: AtomicU32::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            messages_sent: AtomicU64::new(0),
            messages_received: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            active_ts: AtomicU64::new(0),
            bypassed: AtomicU64::new(0),
        }
    }

    fn reset(&self, id: u32) {
        self.id.store(0, Ordering::Release);
        for c in [
            &self.bytes_sent,
            &self.bytes_received,
            &self.messages_sent,
            &self.messages_received,
            &self.drops,
            &self.errors,
            &self.active_ts,
            &self.bypassed,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.sockets.store(0, Ordering::Relaxed);
        self.id.store(id, Ordering::Release);
    }
}

/// Per-slot statistics. A count is only applied when the slot still holds
/// the same module id, so a socket leaving a revoked module's chain late
/// never touches the module that reused the slot.
static STATS: [Counters; MAX_MODULES] = [const { Counters::new() }; MAX_MODULES];

fn counters(slot: usize, id: u32) -> Option<&'static Counters> {
    STATS.get(slot).filter(|c| c.id.load(Ordering::Acquire) == id)
}

fn now_ns() -> u64 {
    // SAFETY: l45_now_ns only reads the clock.
    unsafe { l45_now_ns() }
}

// ===== per-socket chains =====

#[derive(Clone, Copy)]
struct Attached {
    slot: usize,
    id: u32,
    revision: u32,
    priority: u16,
    activated: bool,
    instance: Instance,
    state: SocketState,
}

impl Attached {
    fn new(slot: usize, m: &Spec) -> Attached {
        if let Some(c) = counters(slot, m.id) {
            c.sockets.fetch_add(1, Ordering::Relaxed);
        }
        kinds::attached(&m.instance.kind);
        Attached {
            slot,
            id: m.id,
            revision: m.revision,
            priority: m.priority,
            activated: m.flags & F_ACTIVATED != 0,
            instance: m.instance,
            state: SocketState::default(),
        }
    }

    fn detach(&self) {
        kinds::detached(&self.instance.kind);
        if let Some(c) = counters(self.slot, self.id) {
            let _ = c
                .sockets
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }
}

struct Sock {
    generation: u32,
    seen: bool,
    role: Role,
    transport: Transport,
    chain: [Option<Attached>; MAX_CHAIN],
}

impl Sock {
    fn entries(&self) -> impl Iterator<Item = &Attached> {
        self.chain.iter().flatten()
    }

    fn push(&mut self, a: Attached) -> bool {
        match self.chain.iter_mut().find(|e| e.is_none()) {
            Some(free) => {
                *free = Some(a);
                true
            }
            None => {
                a.detach();
                false
            }
        }
    }

    /// Sorted by priority then id, entries first.
    fn sort(&mut self) {
        let key = |e: &Option<Attached>| match e {
            Some(a) => (0u8, a.priority, a.id),
            None => (1, 0, 0),
        };
        // Insertion sort: at most eight entries, no allocation.
        for i in 1..self.chain.len() {
            let mut j = i;
            while j > 0 && key(&self.chain[j - 1]) > key(&self.chain[j]) {
                self.chain.swap(j - 1, j);
                j -= 1;
            }
        }
    }

    fn ctx<'a>(&self, v: &'a View) -> Ctx<'a> {
        v.ctx(self.role, self.transport)
    }

    /// Matching at first sight, then on every configuration change:
    /// revoked modules leave, changes apply, immediate modules join.
    fn refresh(&mut self, t: &Table, v: &View) {
        if !self.seen {
            self.seen = true;
            for (slot, m) in t.specs.iter().enumerate() {
                if let Some(m) = m {
                    if m.flags & F_DEPRECATED == 0 && m.rule.matches(v) {
                        let a = Attached::new(slot, m);
                        self.push(a);
                    }
                }
            }
        } else {
            for e in self.chain.iter_mut() {
                let Some(a) = e else { continue };
                match t.specs.get(a.slot).and_then(|s| s.as_ref()) {
                    Some(m) if m.id == a.id => {
                        a.priority = m.priority;
                        a.activated = m.flags & F_ACTIVATED != 0;
                        if m.revision != a.revision {
                            if m.instance.kind != a.instance.kind {
                                a.state = SocketState::default();
                                kinds::detached(&a.instance.kind);
                                kinds::attached(&m.instance.kind);
                            }
                            a.instance = m.instance;
                            a.revision = m.revision;
                        }
                    }
                    _ => {
                        a.detach();
                        *e = None;
                    }
                }
            }
            for (slot, m) in t.specs.iter().enumerate() {
                let Some(m) = m else { continue };
                if m.flags & F_IMMEDIATE != 0
                    && m.flags & F_DEPRECATED == 0
                    && !self.entries().any(|a| a.id == m.id)
                    && m.rule.matches(v)
                {
                    let a = Attached::new(slot, m);
                    self.push(a);
                }
            }
        }
        self.sort();
        self.generation = l45_rs_gen.load(Ordering::Acquire);
    }
}

// ===== the kernel module =====

struct L45Tap;

impl kernel::Module for L45Tap {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        // SAFETY: called once, before any other entry point of the shim.
        kernel::error::to_result(unsafe { l45_shim_init() })?;
        pr_info!("{} built-in module kinds\n", Kind::ALL.len());
        Ok(L45Tap)
    }
}

impl Drop for L45Tap {
    fn drop(&mut self) {
        // SAFETY: init succeeded (otherwise there is no L45Tap to drop);
        // this undoes it once.
        unsafe { l45_shim_exit() };
        pr_info!("unloaded\n");
    }
}

// ===== entry points for the shim: configuration (cfg lock held) =====

// Linux errno values (include/uapi/asm-generic/errno*.h).
const ENOENT: c_int = 2;
const EEXIST: c_int = 17;
const EINVAL: c_int = 22;
const ENOSPC: c_int = 28;
const ENOKEY: c_int = 126;

fn param_message(e: ParamError) -> &'static [u8] {
    match e {
        ParamError::UnknownKind => b"unknown module kind\0",
        ParamError::UnknownParameter => b"parameter not known to this kind\0",
        ParamError::BadValue("tag") => b"bad value for parameter tag\0",
        ParamError::BadValue("interval") => b"bad value for parameter interval\0",
        ParamError::BadValue("delay") => b"bad value for parameter delay\0",
        ParamError::BadValue("code") => b"bad value for parameter code\0",
        ParamError::BadValue("label") => b"bad value for parameter label\0",
        ParamError::BadValue("recursion-desired") => b"bad value for parameter recursion-desired\0",
        ParamError::BadValue("use-thread-name") => b"bad value for parameter use-thread-name\0",
        ParamError::BadValue(_) => b"bad parameter value\0",
        ParamError::Missing("code") => b"parameter code is required\0",
        ParamError::Missing(_) => b"a required parameter is missing\0",
        // (l45_rs_register copies the kind's own message into the request)
        ParamError::Rejected(_) => b"parameters refused by the kind\0",
    }
}

fn set_msg(msg: *mut *const c_char, text: &'static [u8]) {
    if !msg.is_null() {
        // SAFETY: the shim passes a valid pointer to a local; the text is a
        // NUL-terminated static that outlives the netlink reply.
        unsafe { *msg = text.as_ptr().cast() };
    }
}

fn bump() {
    // Never 0: the shim's entries use 0 as "plan being rewritten".
    if l45_rs_gen.fetch_add(1, Ordering::AcqRel) == u32::MAX {
        l45_rs_gen.fetch_add(1, Ordering::AcqRel);
    }
}

/// Registers (or, with `replace`, updates) a module: 1 when the id is
/// new, 0 when an existing one was updated (or, with `check`, when the
/// request would be accepted: nothing changes), a negative errno otherwise.
///
/// # Safety
/// `r` points to a filled `struct l45_reg` whose parameter pointers are
/// valid for their lengths; `msg` is valid for a write; cfg lock held.
#[no_mangle]
pub unsafe extern "C" fn l45_rs_register(r: *mut Reg, msg: *mut *const c_char) -> c_int {
    // SAFETY: see the function's contract.
    let r = unsafe { &mut *r };
    let kind = if r.kind == 0 && !r.kind_name.is_null() {
        // SAFETY: the shim points kind_name at a netlink attribute payload
        // of at least kind_name_len bytes, alive for this call.
        let name = unsafe { core::slice::from_raw_parts(r.kind_name, r.kind_name_len as usize) };
        match kinds::by_name(name) {
            Some(k) => Kind::External(k),
            None => {
                set_msg(msg, b"kind not loaded (no kind module registered it)\0");
                return -EINVAL;
            }
        }
    } else {
        match Kind::from_code(r.kind) {
            Some(k) => k,
            None => {
                set_msg(msg, b"unknown module kind\0");
                return -EINVAL;
            }
        }
    };
    let n = (r.nparams as usize).min(MAX_PARAMS);
    let mut pairs: [(&str, &str); MAX_PARAMS] = [("", ""); MAX_PARAMS];
    for (i, p) in r.params[..n].iter().enumerate() {
        // SAFETY: the shim points these at netlink attribute payloads of at
        // least these lengths, alive for this call.
        let (name, value) = unsafe {
            (
                core::slice::from_raw_parts(p.name, p.name_len as usize),
                core::slice::from_raw_parts(p.value, p.value_len as usize),
            )
        };
        match (core::str::from_utf8(name), core::str::from_utf8(value)) {
            (Ok(name), Ok(value)) => pairs[i] = (name, value),
            _ => {
                set_msg(msg, b"parameter is not UTF-8\0");
                return -EINVAL;
            }
        }
    }
    let instance = match Instance::new(r.id, kind, pairs[..n].iter().copied()) {
        Ok(i) => i,
        Err(e) => {
            if let ParamError::Rejected(text) = e {
                let text = text.as_str().as_bytes();
                let n = text.len().min(REG_ERR_LEN);
                r.err[..n].copy_from_slice(&text[..n]);
                r.err_len = n as u32;
            }
            set_msg(msg, param_message(e));
            return -EINVAL;
        }
    };
    if r.check != 0 {
        // L45_A_CHECK: the agent's prepare asks whether the kind's own
        // parser takes these parameters; the instance is not kept (it is
        // plain data: nothing to release).
        let _ = instance;
        return 0;
    }
    // SAFETY: cfg lock held (contract).
    let t = unsafe { table() };
    let existing = find(t, r.id);
    if existing.is_some() && r.replace == 0 {
        set_msg(msg, b"module id already registered (set L45_A_REPLACE to update it)\0");
        return -EEXIST;
    }
    let Some(slot) = existing.or_else(|| t.specs.iter().position(|s| s.is_none())) else {
        set_msg(msg, b"module table full (64 modules)\0");
        return -ENOSPC;
    };
    // A configured module of an external kind keeps the kind's module
    // loaded until it is revoked or replaced by another kind.
    if !kinds::pin(&instance.kind) {
        set_msg(msg, b"kind is being unloaded\0");
        return -EINVAL;
    }
    t.revision = t.revision.wrapping_add(1);
    let spec = Spec {
        id: r.id,
        revision: t.revision,
        priority: r.priority,
        flags: r.flags,
        rule: r.rule,
        instance,
        key: (r.has_key != 0).then_some(r.key),
    };
    if existing.is_none() {
        STATS[slot].reset(r.id);
    }
    if let Some(old) = t.specs[slot].replace(spec) {
        kinds::unpin(&old.instance.kind);
    }
    bump();
    if existing.is_none() {
        1
    } else {
        0
    }
}

fn find(t: &Table, id: u32) -> Option<usize> {
    t.specs.iter().position(|s| s.as_ref().is_some_and(|s| s.id == id))
}

/// Removes module `id` from the table; chains drop it at their next call.
#[no_mangle]
pub extern "C" fn l45_rs_revoke(id: u32) -> c_int {
    // SAFETY: the shim calls this with the cfg lock held.
    let t = unsafe { table() };
    let Some(slot) = find(t, id) else {
        return -ENOENT;
    };
    if let Some(old) = t.specs[slot].take() {
        kinds::unpin(&old.instance.kind);
    }
    STATS[slot].reset(0);
    bump();
    0
}

/// Activation, deprecation or priority of module `id`.
#[no_mangle]
pub extern "C" fn l45_rs_set(id: u32, what: c_int, value: u32) -> c_int {
    // SAFETY: the shim calls this with the cfg lock held.
    let t = unsafe { table() };
    let Some(spec) = find(t, id).and_then(|slot| t.specs[slot].as_mut()) else {
        return -ENOENT;
    };
    let flag = |flags: u8, bit: u8| if value != 0 { flags | bit } else { flags & !bit };
    match what {
        SET_ACTIVATED => spec.flags = flag(spec.flags, F_ACTIVATED),
        SET_DEPRECATED => spec.flags = flag(spec.flags, F_DEPRECATED),
        SET_PRIORITY => match u16::try_from(value) {
            Ok(p) => spec.priority = p,
            Err(_) => return -EINVAL,
        },
        _ => return -EINVAL,
    }
    bump();
    0
}

/// Slot of module `id`, or -ENOENT.
#[no_mangle]
pub extern "C" fn l45_rs_find(id: u32) -> c_int {
    // SAFETY: the shim calls this with the cfg lock held.
    let t = unsafe { table() };
    match find(t, id) {
        Some(slot) => slot as c_int,
        None => -ENOENT,
    }
}

/// Statistics of the module in `slot`; -ENOENT when the slot is free.
///
/// # Safety
/// `out` is valid for a write; cfg lock held.
#[no_mangle]
pub unsafe extern "C" fn l45_rs_stats(slot: u32, out: *mut Stats) -> c_int {
    // SAFETY: cfg lock held (contract).
    let t = unsafe { table() };
    let Some(Some(m)) = t.specs.get(slot as usize) else {
        return -ENOENT;
    };
    let Some(c) = counters(slot as usize, m.id) else {
        return -ENOENT;
    };
    let st = Stats {
        id: m.id,
        kind: m.instance.kind.code(),
        priority: m.priority,
        flags: m.flags,
        has_key: m.key.is_some() as u8,
        pad: [0; 2],
        sockets: c.sockets.load(Ordering::Relaxed),
        bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
        bytes_received: c.bytes_received.load(Ordering::Relaxed),
        messages_sent: c.messages_sent.load(Ordering::Relaxed),
        messages_received: c.messages_received.load(Ordering::Relaxed),
        drops: c.drops.load(Ordering::Relaxed),
        errors: c.errors.load(Ordering::Relaxed),
        active_ts: c.active_ts.load(Ordering::Relaxed),
        bypassed: c.bypassed.load(Ordering::Relaxed),
    };
    // SAFETY: `out` is valid for a write (contract).
    unsafe { out.write(st) };
    0
}

/// Copies the security key of module `id` to `key` (32 bytes).
///
/// # Safety
/// `key` is valid for 32 bytes of writes; cfg lock held.
#[no_mangle]
pub unsafe extern "C" fn l45_rs_key(id: u32, key: *mut u8) -> c_int {
    // SAFETY: cfg lock held (contract).
    let t = unsafe { table() };
    let Some(m) = find(t, id).and_then(|slot| t.specs[slot].as_ref()) else {
        return -ENOENT;
    };
    let Some(k) = m.key else {
        return -ENOKEY;
    };
    // SAFETY: `key` is valid for 32 bytes (contract).
    unsafe { core::ptr::copy_nonoverlapping(k.as_ptr(), key, k.len()) };
    0
}

/// The current configuration generation.
#[no_mangle]
pub extern "C" fn l45_rs_generation() -> u32 {
    l45_rs_gen.load(Ordering::Acquire)
}

// ===== kinds that are not built in (kinds.rs) =====

pub mod kinds;

// ===== entry points for the shim: sockets (sock_ffi.rs) =====

pub mod sock_ffi;
