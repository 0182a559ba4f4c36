//! The record life cycle: how a descriptor number's entry and record move
//! between the stages of `Stage` — classified (`lookup`, `created`),
//! renewed for each new socket at its first lock (`Rec::lock`), closed
//! (`closes_plainly`, `closed_owning`) and given back (`release`,
//! `detach_all`). Matching is `sync`'s; keeping a record or chain for the
//! next socket on the number is `sticky`'s.
//!
//! The stages are not stored as such: the data path reads the entry's
//! flags (`table::FdEntry`) and the record's, each one load where it needs
//! it. `Stage` names what they add up to (the tests check it).

use std::sync::atomic::Ordering;

use l45_modules::Role;
use libc::{c_int, socklen_t};

use super::bits::GEN_SHIFT;
use super::record::Sock;
use super::sticky::{park, stick};
use super::table::{
    cell, index, inet_state, is_inet, note_high_fd, RecGuard, DGRAM, FDS, OTHER, STREAM, UNKNOWN,
};
#[cfg(test)]
use super::table::{passes, Dir};
use crate::process;
use crate::real::HOT;

/// Where a descriptor number's record is in its life, for a number that
/// holds (or held) a tapped socket:
///
/// `Unseen` → (`created`, or `lookup` classifying it) → `Unmatched` →
/// (first sight: `sync`, or `sync::sight_by_filter`/`sight_by_table`
/// without the record) → `Matched` → (close) → `KeptWhole` (`stick`: a
/// stateless chain's record, as it is) or `Closed` (`release`: modules
/// detached, or the chain parked) or `Unseen` (`closes_plainly`: nothing
/// attached, nothing to give back).
///
/// From `KeptWhole`, the next UDP socket on the number connecting with the
/// same key goes straight back to `Matched` (`resume`); anything else
/// gives the record back (`release`: `Closed`) or starts it afresh. From
/// `Closed` (and `Unseen`) a new socket is `Unmatched`, its record reset at
/// its first lock (`renew`), and a parked chain may be taken over at its
/// connect (`unpark`: `Matched`).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// No tapped socket known on the number (`UNKNOWN`): never seen, or
    /// closed with nothing to give back. The next call that needs to know
    /// asks the kernel.
    Unseen,
    /// Not an IPv4/IPv6 TCP or UDP socket (`OTHER`).
    Untapped,
    /// A tapped socket before its first sight. Its record may still be the
    /// previous socket's (`FdEntry::fresh`): the first lock resets it.
    Unmatched,
    /// First sight done (`Sock::matched`, or `FdEntry::sighted` before the
    /// record's first lock): its chain follows the control area (`sync`).
    Matched,
    /// Closed, the record kept whole for the next socket on the number
    /// (`FdEntry::sticky`).
    KeptWhole,
    /// Closed, the record marked so (`Sock::closed`): it reads as absent
    /// until the next socket on the number renews it.
    Closed,
}

/// The stage of descriptor `fd`'s record, from its entry's flags and (for
/// a live socket's record, or to tell a closed one) the record itself.
#[cfg(test)]
pub(super) fn stage(fd: c_int) -> Stage {
    let Some(i) = index(fd) else {
        return Stage::Untapped;
    };
    let entry = &FDS[i];
    let locked = || -> Option<(bool, bool)> {
        let mut g = RecGuard(cell(i).lock());
        g.slot()?.as_ref().map(|s| (s.matched, s.closed))
    };
    match entry.state.load(Ordering::Acquire) {
        OTHER => Stage::Untapped,
        UNKNOWN if entry.sticky.load(Ordering::Acquire) => Stage::KeptWhole,
        UNKNOWN if locked().is_some_and(|(_, closed)| closed) => Stage::Closed,
        UNKNOWN => Stage::Unseen,
        _ if entry.fresh.load(Ordering::Acquire) => {
            if entry.sighted.load(Ordering::Acquire) {
                Stage::Matched
            } else {
                Stage::Unmatched
            }
        }
        _ => match locked() {
            Some((true, false)) => Stage::Matched,
            _ => Stage::Unmatched,
        },
    }
}

/// A tapped socket's record, by descriptor number.
#[derive(Debug, Clone, Copy)]
pub struct Rec(pub(super) usize);

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
        let mut g = RecGuard(cell(self.0).lock());
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
    let mut g = RecGuard(cell(i).lock());
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

/// A new descriptor number (accept, dup): forget what we knew, as a close
/// would, without the last flush.
pub fn forget(fd: c_int) {
    drop(closed(fd));
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

#[cfg(test)]
mod tests {
    use super::super::addr::sockaddr_to_std;
    use super::*;

    /// Descriptor numbers far above anything the test process opens, so
    /// the kernel knows none of them (classification asks it).
    const FD: c_int = 60_000;

    #[test]
    fn a_new_socket_on_a_reused_number_starts_with_a_fresh_record() {
        created(FD, libc::AF_INET, libc::SOCK_STREAM, 0);
        assert_eq!(stage(FD), Stage::Unmatched);
        let rec = lookup(FD).expect("a TCP socket is tapped");
        {
            let mut g = rec.lock();
            let s = g.as_mut().expect("record");
            assert!(s.stream);
            s.matched = true;
            s.remote = sockaddr_to_std(std::ptr::null(), 0);
            s.held_test_marker();
        }
        assert_eq!(stage(FD), Stage::Matched);
        // Closed without modules: no lock, the old record stays in place...
        assert!(closed(FD).is_empty());
        assert_eq!(stage(FD), Stage::Unseen);
        // ...but the next socket on this number never sees it.
        created(FD + 1, libc::AF_INET, libc::SOCK_DGRAM, 0);
        created(FD, libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_UDP);
        assert_eq!(stage(FD), Stage::Unmatched);
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
        assert_eq!(stage(N), Stage::Closed);
        // A thread still in a call on the closed socket finds no record...
        assert!(Rec(i).lock().as_mut().is_none());
        assert!(Rec(i).lock().as_ref().is_none());
        // ...and the next socket on the number starts afresh.
        created(N, libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert_eq!(stage(N), Stage::Unmatched);
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
        assert_eq!(stage(FD + 2), Stage::Untapped);
        assert!(lookup(FD + 2).is_none());
        assert!(!needs_tap(FD + 2, Dir::Send));
        created(FD + 3, libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
        assert!(lookup(FD + 3).is_none());
        // After close, the number is asked about again (and the kernel says
        // it is no socket).
        let _ = closed(FD + 2);
        assert_eq!(stage(FD + 2), Stage::Unseen);
        assert!(lookup(FD + 2).is_none());
        assert_eq!(stage(FD + 2), Stage::Untapped);
    }
}
