//! Chains kept across sockets on one descriptor number: dig opens a UDP
//! socket per query, on the same number, to the same server. A closing
//! socket whose chain the next one would be given keeps it, either parked
//! (detached, in the record marked closed: `park`/`unpark`, under the lock)
//! or with the whole record kept as it is (`stick`/`resume`, without the
//! lock, for chains whose modules keep no per-socket state).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use l45_modules::SocketState;
use l45_tap_shm::SockAddr;
use libc::c_int;

use super::bits::{pass_word, peer_word, StickyKey};
use super::publish::publish;
use super::record::{ChainKey, Sock};
use super::table::{index, FdEntry, DGRAM, FDS};
use crate::process;

/// The socket is closing: if its chain can serve the next socket on the
/// descriptor number (`Sock::reusable`, and unchanged since first sight),
/// keep it and the table slot, detached; true if it did.
pub(super) fn park(s: &mut Sock) -> bool {
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

/// A connected UDP client socket is closing whose record may be kept whole
/// (`FdEntry::stick_ok`, at the generation it was armed at, in the process
/// that armed it): its table record is hidden, the record itself is not
/// touched, and no lock is taken. dig opens and closes a socket per query
/// on the same number and port: the next one takes the record over at its
/// connect (`resume`).
pub(super) fn stick(entry: &FdEntry) -> bool {
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
