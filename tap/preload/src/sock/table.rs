//! The descriptor table: one cache line per descriptor number, saying
//! what the number is (`UNKNOWN`, `OTHER`, `DGRAM`, `STREAM`), its pass
//! word, the flags of its record's life cycle (`life`) and the locked
//! record itself. The checks here are plain loads (the wrappers'
//! pass-through paths); whatever changes an entry lives in `life`,
//! `sticky` and `sync`.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use libc::c_int;

use super::bits::{BITS, GEN_SHIFT, PASS_RECV, PASS_SEND, RECIPE_SHIFT};
use super::cell::{Cell, Guard};
use super::record::Sock;
use crate::process;
use crate::splice;

pub const MAX_FD: usize = 65536;

/// Not classified yet (or closed since): the next call that needs to know
/// asks the kernel (`life::classify`).
pub(super) const UNKNOWN: u8 = 0;
/// Not an IPv4/IPv6 TCP or UDP socket: never tapped.
pub(super) const OTHER: u8 = 1;
/// A UDP socket (datagrams are delivered whole: it never holds bytes).
pub(super) const DGRAM: u8 = 2;
/// A TCP socket.
pub(super) const STREAM: u8 = 3;

pub(super) fn is_inet(state: u8) -> bool {
    state >= DGRAM
}

pub(super) fn inet_state(stream: bool) -> u8 {
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
pub(super) struct FdEntry {
    /// `pass_word(generation, bits)`: the control-area generation at which
    /// the socket was last synced, the directions that need no tap work
    /// then (`PASS_SEND`, `PASS_RECV`: no attached module acts on them,
    /// nothing pending or held) and the socket's splice recipe, if its
    /// chain is one (`RECIPE_SHIFT`); 0 if unknown. While the generation
    /// stays, data calls in the passing directions go straight to libc and
    /// spliced ones to `splice`: two loads, no lock.
    pub(super) pass: AtomicU64,
    /// The socket's record (a leaked box, allocated on first use).
    cell: AtomicPtr<RecCell>,
    /// UNKNOWN, OTHER, DGRAM or STREAM.
    pub(super) state: AtomicU8,
    /// The record in `cell` is a closed socket's: the next lock replaces it
    /// with a new one. Creating a socket is then two stores, no lock.
    pub(super) fresh: AtomicBool,
    /// The record may hold something closing must give back (modules
    /// attached, a socket-table slot, held or pending bytes). Set under the
    /// lock when a chain first attaches; without it, close takes no lock.
    pub(super) owns: AtomicBool,
    /// A connected UDP client socket whose first sight attached nothing was
    /// settled without its record (`sight_by_filter`, `sight_by_table`): the record,
    /// when first locked, starts as already sighted at the generation in
    /// `pass`, with the client role.
    pub(super) sighted: AtomicBool,
    /// The record holds a parked chain (`Sock::parked`): a connect goes
    /// straight to the record, which decides without the peer filter.
    pub(super) parked: AtomicBool,
    /// The live socket's record may be kept whole when it closes (`stick`):
    /// set under the lock with `key`, when the socket took its chain from
    /// the peer-port filter's first sight or from a parked chain.
    pub(super) stick_ok: AtomicBool,
    /// The record is a closed socket's, kept whole (`stick`): the next
    /// socket on the number that connects with the same key (`resume`)
    /// takes it over without its lock; anything else renews it as usual.
    pub(super) sticky: AtomicBool,
    /// What taking the record over depends on (see `StickyKey`).
    pub(super) key: [AtomicU64; 4],
}

pub(super) static FDS: [FdEntry; MAX_FD] = [const {
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
pub(super) static HIGH_FD: AtomicUsize = AtomicUsize::new(0);

#[inline]
pub(super) fn cell(fd: usize) -> &'static RecCell {
    let p = FDS[fd].cell.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: cells are leaked boxes, never freed (one per descriptor
        // number), so the reference is valid for the process lifetime.
        return unsafe { &*p };
    }
    new_cell(fd)
}

#[cold]
fn new_cell(fd: usize) -> &'static RecCell {
    let fresh = Box::into_raw(Box::new(Cell::new(None)));
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

/// A descriptor's record behind its lock (`cell::Cell`); `None` until the
/// first lock of the first socket on the number makes one (`life::renew`).
pub(super) type RecCell = Cell<Option<Sock>>;

/// A locked record; a closed socket's record reads as absent, and so does
/// every record to a thread that already holds its lock (`cell::Cell`).
pub struct RecGuard(pub(super) Guard<Option<Sock>>);

impl RecGuard {
    /// This thread held the lock already (a nested call: nothing is
    /// reachable through this guard).
    #[inline]
    pub fn nested(&self) -> bool {
        self.0.nested()
    }

    /// The record slot itself (a closed socket's record included).
    #[inline]
    pub(super) fn slot(&mut self) -> Option<&mut Option<Sock>> {
        self.0.get_mut()
    }

    #[inline]
    pub fn as_mut(&mut self) -> Option<&mut Sock> {
        self.slot()?.as_mut().filter(|s| !s.closed)
    }

    #[inline]
    pub fn as_ref(&self) -> Option<&Sock> {
        self.0.get()?.as_ref().filter(|s| !s.closed)
    }
}

#[inline]
pub(super) fn index(fd: c_int) -> Option<usize> {
    usize::try_from(fd).ok().filter(|&i| i < MAX_FD)
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

/// Whether `fd` is known (without asking the kernel) not to be a tapped
/// TCP socket, whose epoll registrations the tap must see.
#[inline]
pub fn known_not_stream(fd: c_int) -> bool {
    let Some(i) = index(fd) else { return true };
    matches!(FDS[i].state.load(Ordering::Acquire), OTHER | DGRAM)
}

pub(super) fn note_high_fd(i: usize) {
    if HIGH_FD.load(Ordering::Relaxed) < i {
        HIGH_FD.fetch_max(i, Ordering::Relaxed);
    }
}

/// The bits (below the generation) of descriptor `fd`'s current pass word.
pub fn pass_bits(fd: c_int) -> u64 {
    index(fd).map_or(0, |i| FDS[i].pass.load(Ordering::Acquire) & BITS)
}
