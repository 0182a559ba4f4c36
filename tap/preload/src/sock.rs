//! The per-descriptor table: which descriptors are IPv4/IPv6 TCP/UDP sockets,
//! and for each such socket its role, addresses, module chain and buffers.

use std::cell::UnsafeCell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use l45_modules::{Ctx, Role, SocketState, Transport};
use l45_tap_engine::{protocol_of, Chain, ChainChange, Needs, SocketView};
use l45_tap_shm::{SockAddr, SocketRecord, NAME_LEN, PROTO_UDP};
use libc::{c_int, sockaddr, socklen_t};

use crate::process;
use crate::real::HOT;
use crate::splice;

pub const MAX_FD: usize = 65536;

const UNKNOWN: u8 = 0;
const OTHER: u8 = 1;
/// A UDP socket (datagrams are delivered whole: it never holds bytes).
const DGRAM: u8 = 2;
/// A TCP socket.
const STREAM: u8 = 3;

fn is_inet(state: u8) -> bool {
    state >= DGRAM
}

fn inet_state(stream: bool) -> u8 {
    if stream {
        STREAM
    } else {
        DGRAM
    }
}

/// What the tap knows of one descriptor number. The fields a data call, a
/// close and a connect read sit in one cache line (an array per field
/// would cost several).
#[repr(C, align(64))]
struct FdEntry {
    /// `pass_word(generation, bits)`: the control-area generation at which
    /// the socket was last synced, the directions that need no tap work
    /// then (`PASS_SEND`, `PASS_RECV`: no attached module acts on them,
    /// nothing pending or held) and the socket's splice recipe, if its
    /// chain is one (`RECIPE_SHIFT`); 0 if unknown. While the generation
    /// stays, data calls in the passing directions go straight to libc and
    /// spliced ones to `splice`: two loads, no lock.
    pass: AtomicU64,
    /// The socket's record (a leaked box, allocated on first use).
    cell: AtomicPtr<Cell>,
    /// UNKNOWN, OTHER, DGRAM or STREAM.
    state: AtomicU8,
    /// The record in `cell` is a closed socket's: the next lock replaces it
    /// with a new one. Creating a socket is then two stores, no lock.
    fresh: AtomicBool,
    /// The record may hold something closing must give back (modules
    /// attached, a socket-table slot, held or pending bytes). Set under the
    /// lock when a chain first attaches; without it, close takes no lock.
    owns: AtomicBool,
    /// A connected UDP client socket whose first sight attached nothing was
    /// settled without its record (`sight_by_filter`, `sight_by_table`): the record,
    /// when first locked, starts as already sighted at the generation in
    /// `pass`, with the client role.
    sighted: AtomicBool,
    /// The record holds a parked chain (`Sock::parked`): a connect goes
    /// straight to the record, which decides without the peer filter.
    parked: AtomicBool,
    /// The live socket's record may be kept whole when it closes (`stick`):
    /// set under the lock with `key`, when the socket took its chain from
    /// the peer-port filter's first sight or from a parked chain.
    stick_ok: AtomicBool,
    /// The record is a closed socket's, kept whole (`stick`): the next
    /// socket on the number that connects with the same key (`resume`)
    /// takes it over without its lock; anything else renews it as usual.
    sticky: AtomicBool,
    /// What taking the record over depends on (see `StickyKey`).
    key: [AtomicU64; 4],
}

/// The key of a sticky record, packed into `FdEntry::key`: the generation;
/// peer port, pass bits and socket-table slot; pid and the thread the
/// table record names; the peer address the table record shows.
struct StickyKey {
    generation: u64,
    port_bits_slot: u64,
    pid_tid: u64,
    peer: u64,
}

impl StickyKey {
    fn new(key: &ChainKey, slot: usize, tid: u32, peer: SocketAddr) -> StickyKey {
        StickyKey {
            generation: key.generation,
            port_bits_slot: u64::from(key.peer_port) << 48 | key.pass_bits << 32 | slot as u64,
            pid_tid: u64::from(key.pid) << 32 | u64::from(tid),
            peer: peer_word(peer),
        }
    }

    fn load(words: &[AtomicU64; 4]) -> StickyKey {
        let [generation, port_bits_slot, pid_tid, peer] =
            std::array::from_fn(|k| words[k].load(Ordering::Relaxed));
        StickyKey {
            generation,
            port_bits_slot,
            pid_tid,
            peer,
        }
    }

    fn port(&self) -> u16 {
        (self.port_bits_slot >> 48) as u16
    }

    fn pass_bits(&self) -> u64 {
        (self.port_bits_slot >> 32) & BITS
    }

    fn slot(&self) -> usize {
        (self.port_bits_slot & 0xffff_ffff) as usize
    }

    fn pid(&self) -> u32 {
        (self.pid_tid >> 32) as u32
    }

    fn tid(&self) -> u32 {
        self.pid_tid as u32
    }

    fn store(&self, words: &[AtomicU64; 4]) {
        for (w, v) in words.iter().zip([
            self.generation,
            self.port_bits_slot,
            self.pid_tid,
            self.peer,
        ]) {
            w.store(v, Ordering::Relaxed);
        }
    }
}

/// A peer address as one word: exact for IPv4, folded for IPv6 (a
/// different address that folds alike would leave the socket table
/// showing the previous peer; the chain is the same either way, since it
/// was chosen by the peer's port alone).
fn peer_word(peer: SocketAddr) -> u64 {
    match peer {
        SocketAddr::V4(a) => u64::from(a.ip().to_bits()) << 16 | u64::from(a.port()),
        SocketAddr::V6(a) => {
            let bits = a.ip().to_bits();
            let folded = (bits as u64) ^ ((bits >> 64) as u64).rotate_left(29);
            (folded ^ u64::from(a.port())) | 1 << 63
        }
    }
}

static FDS: [FdEntry; MAX_FD] = [const {
    FdEntry {
        pass: AtomicU64::new(0),
        cell: AtomicPtr::new(std::ptr::null_mut()),
        state: AtomicU8::new(UNKNOWN),
        fresh: AtomicBool::new(false),
        owns: AtomicBool::new(false),
        sighted: AtomicBool::new(false),
        parked: AtomicBool::new(false),
        stick_ok: AtomicBool::new(false),
        sticky: AtomicBool::new(false),
        key: [const { AtomicU64::new(0) }; 4],
    }
}; MAX_FD];
/// Highest descriptor number ever tapped (bounds the scan for held bytes).
static HIGH_FD: AtomicUsize = AtomicUsize::new(0);

/// One IPv4/IPv6 TCP or UDP socket.
#[derive(Debug)]
pub struct Sock {
    pub stream: bool,
    pub role: Option<Role>,
    /// First sight happened (matching is done once).
    pub matched: bool,
    /// Facts already looked up (or learnt from connect/sendto/accept).
    pub known: Needs,
    pub chain: Chain,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    pub thread_name: [u8; NAME_LEN],
    pub thread_name_len: usize,
    /// The thread that first used the socket (for the socket table).
    pub tid: u32,
    /// Slot in the shared socket table while modules are attached.
    pub table_slot: Option<usize>,
    /// Received application bytes not yet handed over.
    pub held: Vec<u8>,
    /// Customized bytes not yet accepted by the kernel (non-blocking sends).
    pub pending: Vec<u8>,
    /// The socket's epoll registrations, so held bytes can be reported as
    /// readiness; gone with the socket.
    pub epoll: EpollRegistrations,
    /// The descriptor's pass word was computed with nothing held or
    /// pending, for the chain as it is (see `sync`).
    pub pass_exact: bool,
    /// A connected UDP client socket whose first sight the peer-port filter
    /// decided: its chain is what first sight gives any socket of this
    /// process connecting to that port at that generation.
    pub reusable: Option<ChainKey>,
    /// The chain (and socket-table slot) of the closed socket that had this
    /// descriptor number before, kept with `reusable`'s key: the next
    /// socket on the number that connects to the same port at the same
    /// generation takes it over instead of matching and attaching anew
    /// (dig opens a socket per query on the same number). Its table record
    /// is hidden meanwhile, so no module counts it.
    pub parked: Option<ChainKey>,
    /// What `publish` last wrote to the socket table and the peer it
    /// wrote (its tid is in `record`).
    pub record: SocketRecord,
    pub record_remote: Option<SocketAddr>,
    /// The socket was closed; the record stays (its storage, maybe a parked
    /// chain) for the next socket on the number, but a thread still in a
    /// call on the closed socket must not see it (`RecGuard`).
    pub closed: bool,
}

/// What a connected UDP client socket's first sight depended on (see
/// `Sock::reusable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainKey {
    pub generation: u64,
    pub peer_port: u16,
    /// The process that attached it (a forked child does not own the
    /// parent's table slot).
    pub pid: u32,
    /// The pass word's bits (`PASS_SEND`, `PASS_RECV`, the splice recipe)
    /// the chain gave.
    pub pass_bits: u64,
}

/// (epoll fd, events, data) of each registration. Nearly every socket is in
/// at most one epoll set, so the first lives inline: registering a new
/// socket allocates nothing.
#[derive(Debug, Default)]
pub struct EpollRegistrations {
    first: Option<(c_int, u32, u64)>,
    more: Vec<(c_int, u32, u64)>,
}

impl EpollRegistrations {
    /// Records (or with `event` None, drops) the registration in `epfd`.
    pub fn set(&mut self, epfd: c_int, event: Option<(u32, u64)>) {
        if self.first.is_some_and(|(e, _, _)| e == epfd) {
            self.first = None;
        }
        if !self.more.is_empty() {
            self.more.retain(|&(e, _, _)| e != epfd);
        }
        if let Some((events, data)) = event {
            if self.first.is_none() {
                self.first = Some((epfd, events, data));
            } else {
                self.more.push((epfd, events, data));
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &(c_int, u32, u64)> {
        self.first.iter().chain(self.more.iter())
    }
}

impl Sock {
    fn new(stream: bool) -> Sock {
        Sock {
            stream,
            role: None,
            matched: false,
            known: Needs::default(),
            chain: Chain::default(),
            local: None,
            remote: None,
            thread_name: [0; NAME_LEN],
            thread_name_len: 0,
            tid: 0,
            table_slot: None,
            held: Vec::new(),
            pending: Vec::new(),
            epoll: EpollRegistrations::default(),
            pass_exact: false,
            reusable: None,
            parked: None,
            record: SocketRecord::default(),
            record_remote: None,
            closed: false,
        }
    }

    /// Starts the record over for a new socket on the same descriptor
    /// number, keeping its buffers' storage (so attaching a chain to the
    /// next socket allocates nothing). The caller has detached everything
    /// (`detach_all`).
    fn reset(&mut self, stream: bool) {
        debug_assert!(
            self.parked.is_some()
                || (self.chain.is_empty() && self.table_slot.is_none() && self.held.is_empty())
        );
        self.stream = stream;
        self.role = None;
        self.matched = false;
        self.known = Needs::default();
        if self.parked.is_none() {
            self.chain.clear();
            self.chain.generation = 0;
        }
        self.reusable = None;
        self.closed = false;
        self.local = None;
        self.remote = None;
        self.thread_name = [0; NAME_LEN];
        self.thread_name_len = 0;
        self.tid = 0;
        self.pending.clear();
        self.epoll.first = None;
        self.epoll.more.clear();
        self.pass_exact = false;
    }

    /// What the chain's modules see of the socket, and the chain, borrowed
    /// together (the data path's view: no addresses to copy).
    #[inline]
    pub fn ctx_and_chain(&mut self) -> (Ctx<'_>, &mut Chain) {
        (
            Ctx {
                role: self.role.unwrap_or(Role::Client),
                transport: if self.stream {
                    Transport::Stream
                } else {
                    Transport::Datagram
                },
                thread_name: &self.thread_name[..self.thread_name_len],
                process_name: process::process_name(),
            },
            &mut self.chain,
        )
    }

    /// The socket as matching sees it, and its chain, borrowed together.
    pub fn view_and_chain(&mut self) -> (SocketView<'_>, &mut Chain) {
        (
            SocketView {
                protocol: protocol_of(self.stream),
                role: self.role.unwrap_or(Role::Client),
                local: self.local,
                remote: self.remote,
                thread_name: &self.thread_name[..self.thread_name_len],
                process_name: process::process_name(),
            },
            &mut self.chain,
        )
    }

    /// Keeps `HELD_SOCKETS` in step when `held` changes from/to empty.
    pub fn set_held(&mut self, bytes: &[u8]) {
        let was = !self.held.is_empty();
        self.held.clear();
        self.held.extend_from_slice(bytes);
        let is = !self.held.is_empty();
        if was != is {
            if is {
                HOT.held_sockets.fetch_add(1, Ordering::Relaxed);
            } else {
                HOT.held_sockets.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    #[cfg(test)]
    fn held_test_marker(&mut self) {
        self.held.extend_from_slice(b"old");
    }

    /// Takes up to `n` held bytes.
    pub fn take_held(&mut self, out: &mut [u8], peek: bool) -> usize {
        let n = out.len().min(self.held.len());
        out[..n].copy_from_slice(&self.held[..n]);
        if !peek {
            self.held.drain(..n);
            if self.held.is_empty() {
                HOT.held_sockets.fetch_sub(1, Ordering::Relaxed);
            }
        }
        n
    }
}

/// A descriptor's record behind a small lock that knows its holder.
/// Nobody blocks while holding it (the data path's rule: every call that
/// may block happens with no lock held), so a waiter spins, then yields;
/// releasing is a plain store, not a read-modify-write. A thread asking
/// for a lock it holds already (a signal handler's call on the same
/// socket) is told so instead of deadlocking: its call goes straight
/// through, untapped.
pub struct Cell {
    /// `pthread_self()` of the holder; 0: free.
    holder: AtomicUsize,
    sock: UnsafeCell<Option<Sock>>,
}

// SAFETY: `sock` is reached only through a `RecGuard` that took `holder`
// (a compare-and-swap from 0 to its own thread), so one thread at a time.
unsafe impl Sync for Cell {}

impl Cell {
    fn new() -> Cell {
        Cell {
            holder: AtomicUsize::new(0),
            sock: UnsafeCell::new(None),
        }
    }
}

#[inline]
fn cell(fd: usize) -> &'static Cell {
    let p = FDS[fd].cell.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: cells are leaked boxes, never freed (one per descriptor
        // number), so the reference is valid for the process lifetime.
        return unsafe { &*p };
    }
    new_cell(fd)
}

#[cold]
fn new_cell(fd: usize) -> &'static Cell {
    let fresh = Box::into_raw(Box::new(Cell::new()));
    match FDS[fd].cell.compare_exchange(
        std::ptr::null_mut(),
        fresh,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        // SAFETY: we just published our own leaked box.
        Ok(_) => unsafe { &*fresh },
        Err(existing) => {
            // SAFETY: `fresh` was never shared; `existing` is a leaked box.
            unsafe {
                drop(Box::from_raw(fresh));
                &*existing
            }
        }
    }
}

#[inline]
fn this_thread() -> usize {
    // SAFETY: pthread_self has no preconditions (a load from the thread
    // pointer); it is never 0.
    unsafe { libc::pthread_self() as usize }
}

#[inline]
fn lock(c: &'static Cell) -> RecGuard {
    let me = this_thread();
    let mut tries = 0u32;
    loop {
        match c
            .holder
            .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => return RecGuard { cell: Some(c) },
            Err(holder) if holder == me => return RecGuard { cell: None },
            Err(_) => wait(&mut tries),
        }
    }
}

/// Another thread holds the lock for a few hundred instructions at most,
/// unless it was preempted: spin, then yield, then sleep a little.
#[cold]
fn wait(tries: &mut u32) {
    *tries += 1;
    if *tries < 64 {
        std::hint::spin_loop();
    } else if *tries < 128 {
        // SAFETY: no preconditions.
        unsafe { libc::sched_yield() };
    } else {
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}

/// A locked record; a closed socket's record reads as absent, and so does
/// every record to a thread that already holds its lock (`Cell`).
pub struct RecGuard {
    /// None: this thread held the lock already; nothing is reachable.
    cell: Option<&'static Cell>,
}

impl RecGuard {
    /// This thread held the lock already (a nested call: nothing is
    /// reachable through this guard).
    #[inline]
    pub fn nested(&self) -> bool {
        self.cell.is_none()
    }

    /// The record slot itself (a closed socket's record included).
    #[inline]
    fn slot(&mut self) -> Option<&mut Option<Sock>> {
        // SAFETY: this guard holds the cell's lock (see `Cell`), and the
        // borrow lives no longer than the guard.
        self.cell.map(|c| unsafe { &mut *c.sock.get() })
    }

    #[inline]
    pub fn as_mut(&mut self) -> Option<&mut Sock> {
        self.slot()?.as_mut().filter(|s| !s.closed)
    }

    #[inline]
    pub fn as_ref(&self) -> Option<&Sock> {
        // SAFETY: as in `slot`, shared.
        let slot = self.cell.map(|c| unsafe { &*c.sock.get() })?;
        slot.as_ref().filter(|s| !s.closed)
    }
}

impl Drop for RecGuard {
    #[inline]
    fn drop(&mut self) {
        if let Some(c) = self.cell {
            c.holder.store(0, Ordering::Release);
        }
    }
}

#[inline]
fn index(fd: c_int) -> Option<usize> {
    usize::try_from(fd).ok().filter(|&i| i < MAX_FD)
}

fn sockopt(fd: c_int, opt: c_int) -> Option<c_int> {
    let mut v: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `v`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut v as *mut c_int).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(v)
}

/// A tapped socket's record, by descriptor number.
#[derive(Debug, Clone, Copy)]
pub struct Rec(usize);

impl Rec {
    /// A TCP socket (else UDP).
    #[inline]
    pub fn is_stream(self) -> bool {
        FDS[self.0].state.load(Ordering::Acquire) == STREAM
    }

    /// Locks the record, first replacing a closed socket's record left in
    /// place (see `FdEntry::fresh`).
    #[inline]
    pub fn lock(self) -> RecGuard {
        let mut g = lock(cell(self.0));
        if FDS[self.0].fresh.load(Ordering::Acquire) {
            renew(self.0, &mut g);
        }
        g
    }
}

/// The first lock of a new socket's record: the closed socket's record
/// left in place is reset (or a record made), out of the data path's line.
#[inline(never)]
fn renew(i: usize, g: &mut RecGuard) {
    let entry = &FDS[i];
    let Some(slot) = g.slot() else {
        return; // held by this thread already: reads as absent
    };
    entry.fresh.store(false, Ordering::Relaxed);
    entry.sticky.store(false, Ordering::Relaxed);
    entry.stick_ok.store(false, Ordering::Relaxed);
    let stream = entry.state.load(Ordering::Acquire) == STREAM;
    let fresh = match slot.as_mut() {
        Some(old) => {
            if old.parked.is_none()
                && (!old.chain.is_empty() || old.table_slot.is_some() || !old.held.is_empty())
            {
                detach_all(old);
            }
            old.reset(stream);
            old
        }
        None => slot.insert(Sock::new(stream)),
    };
    let pass = entry.pass.load(Ordering::Acquire);
    if entry.sighted.swap(false, Ordering::AcqRel) && pass != 0 {
        // First sight happened without the record: later calls refresh
        // the (empty) chain, they do not match anew. Its peer is looked up
        // if a rule needs it (getpeername).
        if fresh.parked.is_some() {
            detach_all(fresh);
            entry.parked.store(false, Ordering::Relaxed);
        }
        fresh.matched = true;
        fresh.chain.generation = (pass >> GEN_SHIFT) - 1;
        fresh.role = Some(Role::Client);
    }
}

/// The socket behind `fd` if it is one we tap (IPv4/IPv6 TCP or UDP). The
/// common case — a descriptor already known not to be one — is one load.
#[inline]
pub fn lookup(fd: c_int) -> Option<Rec> {
    let i = index(fd)?;
    match FDS[i].state.load(Ordering::Acquire) {
        OTHER => None,
        DGRAM | STREAM => Some(Rec(i)),
        _ => classify(fd, i),
    }
}

const PASS_SEND: u64 = 1;
const PASS_RECV: u64 = 2;
/// Bits 4..16 of a pass word: the number of the socket's splice recipe
/// (`splice::get`), 0 if it has none.
const RECIPE_SHIFT: u32 = 4;
/// The generation (+ 1, so that 0 means unknown) sits above the bits.
const GEN_SHIFT: u32 = 16;
const BITS: u64 = (1 << GEN_SHIFT) - 1;

#[inline]
fn pass_word(generation: u64, bits: u64) -> u64 {
    (generation + 1) << GEN_SHIFT | bits
}

/// A data call's direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Send,
    Recv,
}

/// Whether a data call on `fd` surely needs no tap work, from plain loads
/// and no call (so a wrapper's pass-through path needs no stack frame): a
/// descriptor known not to be a tapped socket, or a socket whose pass word
/// covers this direction at the current generation. False: ask
/// `tapped_or_unseen`, which also classifies descriptors not seen yet.
#[inline]
pub fn passes(fd: c_int, dir: Dir) -> bool {
    let Some(i) = index(fd) else { return true };
    match FDS[i].state.load(Ordering::Acquire) {
        OTHER => true,
        DGRAM | STREAM => {
            let pass = FDS[i].pass.load(Ordering::Acquire);
            let bit = match dir {
                Dir::Send => PASS_SEND,
                Dir::Recv => PASS_RECV,
            };
            process::generation().is_some_and(|g| pass >> GEN_SHIFT == g + 1 && pass & bit != 0)
        }
        _ => false,
    }
}

/// The splice recipe a data call in direction `dir` on `fd` follows: the
/// socket's chain was one splice at the current generation, in this
/// direction. Plain loads, no lock.
#[inline]
pub fn spliced(fd: c_int, dir: Dir) -> Option<&'static splice::Recipe> {
    let i = index(fd)?;
    if FDS[i].state.load(Ordering::Acquire) != DGRAM {
        return None;
    }
    let pass = FDS[i].pass.load(Ordering::Acquire);
    let n = (pass & BITS) >> RECIPE_SHIFT;
    if n == 0 || process::generation()? + 1 != pass >> GEN_SHIFT {
        return None;
    }
    splice::get(n as usize).filter(|r| r.sends() == (dir == Dir::Send))
}

/// Whether closing `fd` leaves the tap nothing to do but forget it (not a
/// socket with modules attached, nothing pending): then it is forgotten
/// here, with plain stores, and the caller just closes.
#[inline]
pub fn closes_plainly(fd: c_int) -> bool {
    let Some(i) = index(fd) else { return true };
    let entry = &FDS[i];
    let state = entry.state.load(Ordering::Acquire);
    if is_inet(state) && entry.owns.load(Ordering::Acquire) {
        return false;
    }
    if is_inet(state) {
        entry.pass.store(0, Ordering::Release);
    }
    entry.state.store(UNKNOWN, Ordering::Release);
    true
}

/// Whether `fd` is known (without asking the kernel) not to be a tapped
/// TCP socket, whose epoll registrations the tap must see.
#[inline]
pub fn known_not_stream(fd: c_int) -> bool {
    let Some(i) = index(fd) else { return true };
    matches!(FDS[i].state.load(Ordering::Acquire), OTHER | DGRAM)
}

/// Whether a data call on `fd` must go through the tap: not for descriptors
/// known not to be tapped sockets, nor for sockets whose chain does nothing
/// in this direction at the current generation (the common case).
#[cfg(test)]
pub fn needs_tap(fd: c_int, dir: Dir) -> bool {
    !passes(fd, dir) && tapped_or_unseen(fd)
}

/// The rest of `needs_tap`, for a call whose `passes` check failed just
/// before (every wrapper's slow path): a tapped socket, or a descriptor
/// not classified yet that turns out to be one. Passing it again would only
/// repeat the loads.
#[inline]
pub fn tapped_or_unseen(fd: c_int) -> bool {
    let Some(i) = index(fd) else { return false };
    match FDS[i].state.load(Ordering::Acquire) {
        DGRAM | STREAM => true,
        OTHER => false,
        _ => classify(fd, i).is_some(),
    }
}

#[cold]
fn classify(fd: c_int, i: usize) -> Option<Rec> {
    let domain = sockopt(fd, libc::SO_DOMAIN);
    if !matches!(domain, Some(libc::AF_INET | libc::AF_INET6)) {
        // Not a socket (a pipe, a file, an eventfd…) or not IP: one call.
        FDS[i].state.store(OTHER, Ordering::Release);
        return None;
    }
    let ty = sockopt(fd, libc::SO_TYPE);
    let proto = sockopt(fd, libc::SO_PROTOCOL);
    let stream = match (domain, ty, proto) {
        (
            Some(libc::AF_INET | libc::AF_INET6),
            Some(libc::SOCK_STREAM),
            Some(libc::IPPROTO_TCP),
        ) => true,
        (Some(libc::AF_INET | libc::AF_INET6), Some(libc::SOCK_DGRAM), Some(libc::IPPROTO_UDP)) => {
            false
        }
        _ => {
            FDS[i].state.store(OTHER, Ordering::Release);
            return None;
        }
    };
    begin(i, stream);
    Some(Rec(i))
}

/// Descriptor `i` is now a new TCP or UDP socket: its record starts afresh
/// at the next lock.
fn begin(i: usize, stream: bool) {
    // Map the control area now if not yet done: daemons such as dnsmasq
    // create their sockets as root and then drop privileges, after which
    // the agent's file could no longer be opened.
    let _ = process::shm();
    let entry = &FDS[i];
    entry.pass.store(0, Ordering::Release);
    // A closed socket's record kept whole waits for a UDP socket's connect
    // (`resume`); for anything else it is given back now.
    let keep = !stream && entry.sticky.load(Ordering::Acquire);
    if !keep && entry.owns.load(Ordering::Acquire) {
        // A close we did not see (a raw close_range, say), or a kept
        // record this socket cannot use: give back what it held first.
        release(i);
    }
    cell(i);
    note_high_fd(i);
    entry.sighted.store(false, Ordering::Release);
    entry.fresh.store(true, Ordering::Release);
    entry.state.store(inet_state(stream), Ordering::Release);
}

/// Detaches everything the record of descriptor `i` holds; returns its
/// pending bytes. The record stays, marked closed, to be reset for the
/// next socket on this number (`begin` marks it fresh; its storage is
/// reused).
fn release(i: usize) -> Vec<u8> {
    let entry = &FDS[i];
    entry.stick_ok.store(false, Ordering::Relaxed);
    let kept = entry.sticky.swap(false, Ordering::AcqRel);
    let mut g = lock(cell(i));
    let Some(slot) = g.slot() else {
        // A close from within a call of this thread on the socket (a signal
        // handler's): `owns` stays set, so the next socket on the number
        // gives back what this one held (`begin`).
        return Vec::new();
    };
    let pending = match slot.as_mut() {
        Some(s) if kept => {
            // A record kept whole (`stick`) that no connect took over: the
            // number is going to something else (or closes again first).
            detach_all(s);
            s.closed = true;
            Vec::new()
        }
        Some(s) if !entry.fresh.load(Ordering::Acquire) => {
            if park(s) {
                entry.parked.store(true, Ordering::Relaxed);
            } else {
                detach_all(s);
            }
            s.closed = true;
            std::mem::take(&mut s.pending)
        }
        _ => Vec::new(),
    };
    entry.owns.store(false, Ordering::Release);
    pending
}

/// A socket the application just created: classified from socket()'s own
/// arguments, without asking the kernel, and without a lock.
pub fn created(fd: c_int, domain: c_int, ty: c_int, protocol: c_int) {
    let Some(i) = index(fd) else { return };
    let base = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    let inet = domain == libc::AF_INET || domain == libc::AF_INET6;
    let stream = match (base, protocol) {
        (libc::SOCK_STREAM, 0 | libc::IPPROTO_TCP) => Some(true),
        (libc::SOCK_DGRAM, 0 | libc::IPPROTO_UDP) => Some(false),
        _ => None,
    };
    match (inet, stream) {
        (true, Some(stream)) => begin(i, stream),
        _ => {
            forget(fd);
            FDS[i].state.store(OTHER, Ordering::Release);
        }
    }
}

fn note_high_fd(i: usize) {
    if HIGH_FD.load(Ordering::Relaxed) < i {
        HIGH_FD.fetch_max(i, Ordering::Relaxed);
    }
}

/// The application closes `fd`: modules are detached and the table slot
/// freed, and customized bytes not yet accepted by the kernel are returned
/// for a last flush. A socket that never had modules attached costs a few
/// plain memory accesses and no lock (its record is replaced on reuse).
pub fn closed(fd: c_int) -> Vec<u8> {
    if closes_plainly(fd) {
        return Vec::new();
    }
    closed_owning(fd)
}

/// Whether closing `fd` keeps its record whole for the next socket on the
/// number (`stick`): then that is done here, with no lock, and the caller
/// just closes. Else `closed_owning` does the rest.
#[inline]
pub fn closes_kept(fd: c_int) -> bool {
    let Some(i) = index(fd) else { return false };
    let entry = &FDS[i];
    if !entry.stick_ok.load(Ordering::Acquire) {
        return false;
    }
    entry.pass.store(0, Ordering::Release);
    if !stick(entry) {
        return false;
    }
    entry.state.store(UNKNOWN, Ordering::Release);
    true
}

/// `closed` for a descriptor `closes_plainly` just said no to (the close
/// wrappers' slow paths): a socket that may hold modules, a table slot or
/// bytes (`owns`).
pub fn closed_owning(fd: c_int) -> Vec<u8> {
    let Some(i) = index(fd) else {
        return Vec::new();
    };
    if closes_kept(fd) {
        return Vec::new();
    }
    let entry = &FDS[i];
    entry.pass.store(0, Ordering::Release);
    let pending = release(i);
    entry.state.store(UNKNOWN, Ordering::Release);
    pending
}

/// A connected UDP client socket is closing whose record may be kept whole
/// (`FdEntry::stick_ok`, at the generation it was armed at, in the process
/// that armed it): its table record is hidden, the record itself is not
/// touched, and no lock is taken. dig opens and closes a socket per query
/// on the same number and port: the next one takes the record over at its
/// connect (`resume`).
fn stick(entry: &FdEntry) -> bool {
    if !entry.stick_ok.load(Ordering::Acquire) || entry.state.load(Ordering::Acquire) != DGRAM {
        return false;
    }
    let key = StickyKey::load(&entry.key);
    if process::generation() != Some(key.generation) || key.pid() != process::pid() {
        return false;
    }
    let Some(shm) = process::shm() else {
        return false;
    };
    entry.stick_ok.store(false, Ordering::Relaxed);
    shm.withdraw_socket(key.slot(), key.pid());
    entry.sticky.store(true, Ordering::Release);
    true
}

/// A new UDP socket connects to `remote`: if its descriptor number holds a
/// record kept whole (`stick`) for exactly this — same generation, peer
/// port and address, process and thread — the record serves it as it is:
/// the socket is listed again and its pass word restored, without a lock.
/// The chain's modules keep no per-socket state (`arm_sticky` checked), so
/// there is nothing to start afresh. False: connect as usual (the record
/// is renewed at its first lock).
pub fn resume(fd: c_int, remote: SocketAddr) -> bool {
    let Some(i) = index(fd) else { return false };
    let entry = &FDS[i];
    if !entry.sticky.load(Ordering::Acquire)
        || entry.state.load(Ordering::Acquire) != DGRAM
        || !entry.fresh.load(Ordering::Acquire)
    {
        return false;
    }
    let key = StickyKey::load(&entry.key);
    if process::generation() != Some(key.generation)
        || key.port() != remote.port()
        || key.peer != peer_word(remote)
        || key.pid() != process::pid()
        || key.tid() != process::tid()
    {
        return false;
    }
    let Some(shm) = process::shm() else {
        return false;
    };
    entry.sticky.store(false, Ordering::Relaxed);
    entry.fresh.store(false, Ordering::Release);
    shm.restore_socket(key.slot(), key.pid());
    entry.stick_ok.store(true, Ordering::Release);
    entry.pass.store(
        pass_word(key.generation, key.pass_bits()),
        Ordering::Release,
    );
    true
}

/// Allows the socket's record to be kept whole at close (`stick`), under
/// the socket's lock, once it holds the chain `key` describes: only if its
/// modules keep no per-socket state and the socket table lists it with
/// this thread and peer (so the next socket can take it over unchanged).
pub fn arm_sticky(fd: c_int, s: &Sock, key: &ChainKey) {
    let Some(i) = index(fd) else { return };
    let (Some(slot), Some(peer)) = (s.table_slot, s.record_remote) else {
        return;
    };
    let stateless = s
        .chain
        .entries
        .iter()
        .all(|a| !a.instance.keeps_socket_state());
    if !stateless || s.stream || s.record.tid == 0 || !s.held.is_empty() || !s.pending.is_empty() {
        return;
    }
    let entry = &FDS[i];
    StickyKey::new(key, slot, s.record.tid, peer).store(&entry.key);
    entry.stick_ok.store(true, Ordering::Release);
}

/// A new descriptor number (accept, dup): forget what we knew, as a close
/// would, without the last flush.
pub fn forget(fd: c_int) {
    drop(closed(fd));
}

pub fn sockaddr_to_std(addr: *const sockaddr, len: socklen_t) -> Option<SocketAddr> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: the caller passes a sockaddr of `len` bytes; we read the family
    // first and then only the size that family needs, checked against len.
    unsafe {
        match c_int::from((*addr).sa_family) {
            libc::AF_INET if len as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
                let a = &*(addr.cast::<libc::sockaddr_in>());
                Some(SocketAddr::from((
                    std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 if len as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
                let a = &*(addr.cast::<libc::sockaddr_in6>());
                Some(SocketAddr::from((
                    std::net::Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                )))
            }
            _ => None,
        }
    }
}

fn name_of(fd: c_int, peer: bool) -> Option<SocketAddr> {
    // SAFETY: zeroed sockaddr_storage is a valid out-buffer of the given size.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as socklen_t;
    let p = (&mut ss as *mut libc::sockaddr_storage).cast::<sockaddr>();
    // SAFETY: the kernel writes at most `len` bytes.
    let r = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    if r != 0 {
        return None;
    }
    sockaddr_to_std(p, len)
}

/// Brings `s` up to date with the control area: matching at first sight,
/// then refreshing its chain whenever the generation moves. `role` is what
/// the current call says about this end if nothing said it before. The
/// descriptor's pass word is recomputed only when something it depends on
/// may have changed.
#[inline]
pub fn sync(fd: c_int, s: &mut Sock, role: Role) {
    if !in_step(s) {
        sync_moved(fd, s, role);
    }
}

/// The steady state, in which `sync` does nothing: matched, the pass word
/// computed for this chain, and the control area still at the chain's
/// generation.
#[inline]
pub fn in_step(s: &Sock) -> bool {
    s.matched
        && s.pass_exact
        && s.held.is_empty()
        && s.pending.is_empty()
        && process::generation() == Some(s.chain.generation)
}

#[cold]
fn sync_moved(fd: c_int, s: &mut Sock, role: Role) {
    if !s.matched && s.parked.is_some() {
        // First sight of a socket the parked chain was not for (another
        // kind of socket, port or generation: see `unpark`).
        detach_all(s);
        if let Some(i) = index(fd) {
            FDS[i].parked.store(false, Ordering::Relaxed);
        }
    }
    let moved = sync_chain(fd, s, role);
    let Some(i) = index(fd) else { return };
    let entry = &FDS[i];
    let current = pass_word(s.chain.generation, 0);
    if !moved
        && s.pass_exact
        && s.held.is_empty()
        && s.pending.is_empty()
        && entry.pass.load(Ordering::Relaxed) & !BITS == current
    {
        return;
    }
    if (!s.chain.is_empty() || s.table_slot.is_some()) && !entry.owns.load(Ordering::Relaxed) {
        entry.owns.store(true, Ordering::Release);
    }
    let mut pass = current;
    if s.matched {
        let transport = if s.stream {
            Transport::Stream
        } else {
            Transport::Datagram
        };
        let acts = s
            .chain
            .directions(s.role.unwrap_or(Role::Client), transport);
        if !acts.send && s.pending.is_empty() {
            pass |= PASS_SEND;
        }
        if !acts.recv && s.held.is_empty() {
            pass |= PASS_RECV;
        }
        if !s.stream {
            pass |= recipe_bits(s);
        }
    }
    // Computed with nothing held or pending: exact until the chain moves.
    s.pass_exact = s.matched && s.held.is_empty() && s.pending.is_empty();
    entry.pass.store(pass, Ordering::Release);
}

/// The splice recipe bits of a matched UDP socket's pass word: its chain
/// as one splice in the direction its role customizes, interned.
fn recipe_bits(s: &Sock) -> u64 {
    let role = s.role.unwrap_or(Role::Client);
    let Some((sp, by)) = s.chain.splice(role) else {
        return 0;
    };
    let a = &s.chain.entries[by];
    let n = splice::intern(splice::Recipe::new(&sp, role == Role::Client, a.slot, a.id));
    (n as u64) << RECIPE_SHIFT
}

/// True if the socket was matched or its chain refreshed.
fn sync_chain(fd: c_int, s: &mut Sock, role: Role) -> bool {
    if s.role.is_none() {
        s.role = Some(role);
    }
    let Some(shm) = process::shm() else {
        let first = !s.matched;
        s.matched = true;
        return first;
    };
    let generation = shm.generation();
    if s.matched && generation == s.chain.generation {
        return false;
    }
    if generation % 2 == 1 {
        return false; // agent mid-write: keep the current chain for this call
    }
    process::with_config(shm, generation, |active| {
        sync_with(fd, s, active, generation)
    });
    true
}

fn sync_with(fd: c_int, s: &mut Sock, active: &process::Active, generation: u64) {
    let config = &active.config;
    let protocol = protocol_of(s.stream);
    let Some(needs) = active.needs(protocol) else {
        if s.chain.is_empty() {
            // No module could attach (none names this protocol and process):
            // first sight, or this refresh, costs no system calls. The
            // socket's facts are looked up if such a module shows up later.
            s.matched = true;
            s.chain.generation = generation;
            return;
        }
        // Modules already attached still follow revoke, priority and
        // parameter changes.
        let (view, chain) = s.view_and_chain();
        let change = chain.refresh(config, &view);
        settle(fd, s, change);
        return;
    };
    if s.matched && s.remote.is_none() {
        // Not connected at first sight; it may be now.
        s.known.remote = false;
    }
    learn(fd, s, needs);
    if !s.matched {
        s.matched = true;
        let (view, chain) = s.view_and_chain();
        chain.attach_first_sight(config, active.candidates(protocol), &view);
        if !s.chain.is_empty() {
            publish(fd, s);
        }
        return;
    }
    let (view, chain) = s.view_and_chain();
    let change = chain.refresh(config, &view);
    settle(fd, s, change);
}

/// First sight of a UDP socket that connected to `remote`, from the
/// peer-port filter alone, which reads a few atomics and makes no call:
/// `Some(true)` settled without its record (nothing attaches; its data
/// calls pass through from the first one), `Some(false)` the locked path
/// decides (the record is in use, or a module attaches), `None` the
/// filter cannot tell (not built for this generation, or the rules look
/// at more than the peer's port): ask `sight_by_table`.
#[inline]
pub fn sight_by_filter(fd: c_int, remote: SocketAddr) -> Option<bool> {
    let Some(i) = index(fd) else {
        return Some(false);
    };
    let entry = &FDS[i];
    if entry.state.load(Ordering::Acquire) != DGRAM || !entry.fresh.load(Ordering::Acquire) {
        return Some(false);
    }
    let Some(generation) = process::generation().filter(|g| g % 2 == 0) else {
        return Some(false);
    };
    match process::udp_peer_attaches(generation, remote.port())? {
        true => Some(false),
        false => {
            settle_sighted(entry, generation);
            Some(true)
        }
    }
}

/// A connected UDP client socket settled at first sight with nothing
/// attached, without its record (see `FdEntry::sighted`).
fn settle_sighted(entry: &FdEntry, generation: u64) {
    entry.sighted.store(true, Ordering::Release);
    entry.pass.store(
        pass_word(generation, PASS_SEND | PASS_RECV),
        Ordering::Release,
    );
}

/// First sight decided from the parsed module table, when the filter
/// could not tell (`sight_by_filter` gave `None`, so the descriptor is a
/// fresh UDP socket and the control area is mapped at an even
/// generation). True if nothing attaches: the socket is settled without
/// its record. Runs inside the re-entry guard (it may lock and parse).
pub fn sight_by_table(fd: c_int, remote: SocketAddr) -> bool {
    let (Some(i), Some(shm)) = (index(fd), process::shm()) else {
        return false;
    };
    let generation = shm.generation();
    if generation % 2 == 1 {
        return false;
    }
    process::with_config(shm, generation, |active| {
        let candidates = active.candidates(PROTO_UDP);
        if !candidates.is_empty() {
            let needs = active.needs(PROTO_UDP).unwrap_or_default();
            if needs.local || needs.thread_name {
                return false;
            }
            let view = SocketView {
                protocol: PROTO_UDP,
                role: Role::Client,
                local: None,
                remote: Some(remote),
                thread_name: &[],
                process_name: process::process_name(),
            };
            if active.config.any_attaches(candidates, &view) {
                return false;
            }
        }
        settle_sighted(&FDS[i], generation);
        true
    })
}

/// Shows a chain change in the socket table (which is also what the
/// modules' socket counts are made from).
fn settle(fd: c_int, s: &mut Sock, change: ChainChange) {
    if !change.is_empty() {
        publish(fd, s);
    }
}

/// Looks up the facts in `needs` not known yet: only what some rule could
/// use, since each lookup is a system call on the socket's first sight.
fn learn(fd: c_int, s: &mut Sock, needs: Needs) {
    if needs.local && !s.known.local {
        s.known.local = true;
        if s.local.is_none() {
            s.local = name_of(fd, false);
        }
    }
    if needs.remote && !s.known.remote {
        s.known.remote = true;
        if s.remote.is_none() {
            s.remote = name_of(fd, true);
        }
    }
    if needs.thread_name && !s.known.thread_name {
        s.known.thread_name = true;
        let (name, len) = process::thread_name();
        s.thread_name = name;
        s.thread_name_len = len;
    }
}

/// Publishes (or withdraws) the socket in the shared socket table.
fn publish(fd: c_int, s: &mut Sock) {
    let Some(shm) = process::shm() else { return };
    let me = process::pid();
    if s.chain.is_empty() {
        if let Some(i) = s.table_slot.take() {
            shm.release_socket(i, me);
        }
        return;
    }
    if s.table_slot.is_none() {
        s.table_slot =
            shm.claim_socket(me, (me as usize).wrapping_mul(31).wrapping_add(fd as usize));
        if s.remote.is_none() && !s.known.remote {
            // Sighted without a record (or no rule needed the peer): the
            // table shows it, so look it up once, now that a module is on.
            s.known.remote = true;
            s.remote = name_of(fd, true);
        }
    }
    let Some(i) = s.table_slot else { return };
    if s.tid == 0 {
        s.tid = process::tid();
    }
    let record = SocketRecord {
        fd,
        protocol: protocol_of(s.stream),
        role: match s.role {
            Some(Role::Client) => 1,
            Some(Role::Server) => 2,
            None => 0,
        },
        _pad: [0; 2],
        tid: s.tid,
        local: s.local.as_ref().map(SockAddr::from_std).unwrap_or_default(),
        remote: s
            .remote
            .as_ref()
            .map(SockAddr::from_std)
            .unwrap_or_default(),
        // Known only if a rule needed it; else the agent reads it, as it
        // reads the process's name (/proc/PID/comm).
        thread_name: s.thread_name,
        process_name: [0; NAME_LEN],
        modules: s.chain.ids(),
    };
    shm.write_socket(i, me, &record);
    s.record = record;
    s.record_remote = s.remote;
}

/// The socket is closing: if its chain can serve the next socket on the
/// descriptor number (`Sock::reusable`, and unchanged since first sight),
/// keep it and the table slot, detached; true if it did.
fn park(s: &mut Sock) -> bool {
    let Some(key) = s.reusable else { return false };
    if s.chain.generation != key.generation || s.chain.is_empty() || !s.held.is_empty() {
        return false;
    }
    if let (Some(shm), Some(i)) = (process::shm(), s.table_slot) {
        shm.withdraw_socket(i, process::pid());
    }
    s.parked = Some(key);
    true
}

/// Whether descriptor `fd`'s record holds a parked chain (a hint, read
/// without the lock; the record decides).
#[inline]
pub fn has_parked(fd: c_int) -> bool {
    index(fd).is_some_and(|i| {
        FDS[i].parked.load(Ordering::Relaxed) || FDS[i].sticky.load(Ordering::Relaxed)
    })
}

/// A new connected UDP client socket of peer port `peer_port`: takes over
/// the parked chain if it was parked for exactly this (same generation,
/// same port), listing it in the socket table again (so its modules count
/// it). The modules' per-socket state starts afresh. False: match as usual.
pub fn unpark(fd: c_int, s: &mut Sock, peer_port: u16) -> bool {
    let Some(key) = s.parked else { return false };
    if key.peer_port != peer_port
        || process::generation() != Some(key.generation)
        || key.pid != process::pid()
    {
        return false;
    }
    let Some(i) = index(fd) else { return false };
    s.parked = None;
    s.reusable = Some(key);
    s.matched = true;
    s.known.remote = true;
    for a in &mut s.chain.entries {
        a.state = SocketState::default();
    }
    // The table record as first published, for this socket's peer and
    // thread (or a slot claimed now, if the table was full then).
    match (process::shm(), s.table_slot) {
        (Some(shm), Some(slot))
            if s.record_remote == s.remote && s.record.tid == process::tid() =>
        {
            // The same peer and thread as the record says (dig's next
            // query): it need only list its modules again.
            s.tid = s.record.tid;
            shm.restore_socket(slot, key.pid);
        }
        (Some(shm), Some(slot)) => {
            s.tid = process::tid();
            s.record.tid = s.tid;
            s.record.remote = s
                .remote
                .as_ref()
                .map(SockAddr::from_std)
                .unwrap_or_default();
            shm.write_socket(slot, key.pid, &s.record);
            s.record_remote = s.remote;
        }
        _ => publish(fd, s),
    }
    FDS[i].parked.store(false, Ordering::Relaxed);
    FDS[i].owns.store(true, Ordering::Release);
    FDS[i]
        .pass
        .store(pass_word(key.generation, key.pass_bits), Ordering::Release);
    s.pass_exact = true;
    arm_sticky(fd, s, &key);
    true
}

/// The bits (below the generation) of descriptor `fd`'s current pass word.
pub fn pass_bits(fd: c_int) -> u64 {
    index(fd).map_or(0, |i| FDS[i].pass.load(Ordering::Acquire) & BITS)
}

/// The socket is going away: detach every module.
pub fn detach_all(s: &mut Sock) {
    if s.parked.take().is_some() {
        // Detached already (`park`): the chain and the held slot go.
        s.chain.clear();
        if let (Some(shm), Some(i)) = (process::shm(), s.table_slot.take()) {
            shm.release_socket(i, process::pid());
        }
        return;
    }
    s.chain.clear();
    if let (Some(shm), Some(i)) = (process::shm(), s.table_slot.take()) {
        shm.release_socket(i, process::pid());
    }
    if !s.held.is_empty() {
        s.held.clear();
        HOT.held_sockets.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether `fd` is known as a tapped TCP socket: only a stream socket can
/// hold bytes (datagrams are delivered whole), so only its epoll
/// registrations are ever needed. A descriptor not classified yet (say, a
/// socket from before the library's load) is classified here.
#[inline]
pub fn is_stream(fd: c_int) -> bool {
    let Some(i) = index(fd) else { return false };
    match FDS[i].state.load(Ordering::Acquire) {
        STREAM => true,
        UNKNOWN => classify(fd, i).is_some() && FDS[i].state.load(Ordering::Acquire) == STREAM,
        _ => false,
    }
}

/// Records (or with `event` None, drops) the registration of socket `fd`
/// (a stream socket, `is_stream`) in epoll set `epfd`.
pub fn epoll_register(fd: c_int, epfd: c_int, event: Option<(u32, u64)>) {
    let Some(i) = index(fd) else { return };
    if FDS[i].state.load(Ordering::Acquire) != STREAM {
        return;
    }
    let mut g = Rec(i).lock();
    if let Some(s) = g.as_mut() {
        s.epoll.set(epfd, event);
    }
}

/// The epoll data of sockets registered for input in `epfd` that hold
/// received bytes (only called while some socket holds bytes).
pub fn epoll_ready(epfd: c_int) -> Vec<u64> {
    let mut ready = Vec::new();
    let high = HIGH_FD.load(Ordering::Relaxed).min(MAX_FD - 1);
    for (i, entry) in FDS.iter().enumerate().take(high + 1) {
        if entry.state.load(Ordering::Acquire) != STREAM {
            continue;
        }
        if let Some(s) = Rec(i).lock().as_ref() {
            if !s.held.is_empty() {
                ready.extend(
                    s.epoll
                        .iter()
                        .filter(|&&(e, events, _)| e == epfd && events & libc::EPOLLIN as u32 != 0)
                        .map(|&(_, _, data)| data),
                );
            }
        }
    }
    ready
}

/// Descriptors with held bytes (for readiness calls).
pub fn held_len(fd: c_int) -> usize {
    if HOT.held_sockets.load(Ordering::Relaxed) == 0 {
        return 0;
    }
    let Some(i) = index(fd) else { return 0 };
    if FDS[i].state.load(Ordering::Acquire) != STREAM {
        return 0;
    }
    Rec(i).lock().as_ref().map(|s| s.held.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoll_registrations_keep_one_entry_per_set() {
        let mut r = EpollRegistrations::default();
        r.set(10, Some((1, 100)));
        r.set(11, Some((1, 101)));
        r.set(10, Some((5, 102))); // modify: replaces, does not add
        let mut all: Vec<_> = r.iter().copied().collect();
        all.sort();
        assert_eq!(all, vec![(10, 5, 102), (11, 1, 101)]);
        r.set(11, None);
        r.set(10, None);
        assert_eq!(r.iter().count(), 0);
    }

    /// Descriptor numbers far above anything the test process opens, so
    /// the kernel knows none of them (classification asks it).
    const FD: c_int = 60_000;

    #[test]
    fn a_new_socket_on_a_reused_number_starts_with_a_fresh_record() {
        created(FD, libc::AF_INET, libc::SOCK_STREAM, 0);
        let rec = lookup(FD).expect("a TCP socket is tapped");
        {
            let mut g = rec.lock();
            let s = g.as_mut().expect("record");
            assert!(s.stream);
            s.matched = true;
            s.remote = sockaddr_to_std(std::ptr::null(), 0);
            s.held_test_marker();
        }
        // Closed without modules: no lock, the old record stays in place...
        assert!(closed(FD).is_empty());
        // ...but the next socket on this number never sees it.
        created(FD + 1, libc::AF_INET, libc::SOCK_DGRAM, 0);
        created(FD, libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_UDP);
        let g = lookup(FD).expect("a UDP socket is tapped").lock();
        let s = g.as_ref().expect("record");
        assert!(!s.stream && !s.matched && s.held.is_empty() && s.chain.is_empty());
        drop(g);
        let _ = closed(FD);
        let _ = closed(FD + 1);
    }

    #[test]
    fn a_closed_sockets_record_reads_as_absent_until_the_next_socket() {
        const N: c_int = FD + 10;
        created(N, libc::AF_INET, libc::SOCK_DGRAM, 0);
        let i = index(N).expect("in range");
        {
            let mut g = lookup(N).expect("tapped").lock();
            g.as_mut().expect("record").matched = true;
        }
        // As if a module had attached: close goes through `release`.
        FDS[i].owns.store(true, Ordering::Release);
        assert!(closed(N).is_empty());
        // A thread still in a call on the closed socket finds no record...
        assert!(Rec(i).lock().as_mut().is_none());
        assert!(Rec(i).lock().as_ref().is_none());
        // ...and the next socket on the number starts afresh.
        created(N, libc::AF_INET, libc::SOCK_DGRAM, 0);
        let g = lookup(N).expect("tapped").lock();
        let s = g.as_ref().expect("a fresh record");
        assert!(!s.matched && !s.closed);
        drop(g);
        let _ = closed(N);
    }

    #[test]
    fn a_record_reads_as_absent_to_the_thread_holding_it_and_others_wait_for_it() {
        const N: c_int = FD + 20;
        created(N, libc::AF_INET, libc::SOCK_DGRAM, 0);
        let rec = lookup(N).expect("tapped");
        let mut outer = rec.lock();
        assert!(outer.as_mut().is_some());
        // Asked again by the holding thread (a signal handler's call on
        // the socket): absent, and no deadlock...
        assert!(rec.lock().as_mut().is_none());
        assert!(rec.lock().as_ref().is_none());
        // ...and dropping that answer did not release the holder's lock.
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let g = rec.lock();
            let _ = tx.send(g.as_ref().map(|s| s.matched));
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(100))
            .is_err());
        outer.as_mut().expect("still held").matched = true;
        drop(outer);
        // The other thread got the record once the holder let go, and saw
        // what the holder wrote.
        assert_eq!(rx.recv().expect("the waiter ran"), Some(true));
        waiter.join().expect("no panic");
        let _ = closed(N);
    }

    #[test]
    fn other_sockets_and_closed_numbers_are_not_tapped() {
        created(FD + 2, libc::AF_UNIX, libc::SOCK_STREAM, 0);
        assert!(lookup(FD + 2).is_none());
        assert!(!needs_tap(FD + 2, Dir::Send));
        created(FD + 3, libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
        assert!(lookup(FD + 3).is_none());
        // After close, the number is asked about again (and the kernel says
        // it is no socket).
        let _ = closed(FD + 2);
        assert!(lookup(FD + 2).is_none());
    }
}
