//! Config sync: a socket's chain brought up to date with the control
//! area — matched at first sight, refreshed whenever the generation moves —
//! and its pass word recomputed. Also first sight without the record, for
//! UDP clients the peer-port filter or the module table settles at
//! connect.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use l45_modules::{Role, Transport};
use l45_tap_engine::{protocol_of, ChainChange, Needs, SocketView};
use l45_tap_shm::PROTO_UDP;
use libc::c_int;

use super::addr::name_of;
use super::bits::{pass_word, BITS, PASS_RECV, PASS_SEND, RECIPE_SHIFT};
use super::life::detach_all;
use super::publish::publish;
use super::record::Sock;
use super::table::{index, FdEntry, DGRAM, FDS};
use crate::process;
use crate::splice;

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
    // Each round either settles the socket or resolves one deferred module
    // (a kind from an image this process loads now): at most one round per
    // module of the table, and one more.
    for _ in 0..=l45_tap_shm::MAX_MODULES {
        // None: the agent stopped mid-write; keep the chain for this call.
        match process::with_config(shm, generation, |active| {
            sync_with(fd, s, active, generation)
        }) {
            None | Some(Synced::Later) => return false,
            Some(Synced::Done) => return true,
            Some(Synced::Load(id)) => {
                if !process::resolve(generation, id) {
                    return false;
                }
            }
        }
    }
    false
}

/// What `sync_with` did.
enum Synced {
    /// Matched or refreshed.
    Done,
    /// The chain would include the deferred module `id`: its kind must be
    /// loaded first (`process::resolve`); the socket is as it was.
    Load(u32),
    /// As `Load`, inside a signal handler, where nothing is loaded: the
    /// socket stays as it was (unmatched, or its chain at its generation)
    /// and this call passes through; its next call tries again.
    Later,
}

fn load_or_later(id: u32) -> Synced {
    if process::may_load() {
        Synced::Load(id)
    } else {
        Synced::Later
    }
}

fn sync_with(fd: c_int, s: &mut Sock, active: &process::Active, generation: u64) -> Synced {
    let config = &active.config;
    let protocol = protocol_of(s.stream);
    let Some(needs) = active.needs(protocol) else {
        if s.chain.is_empty() {
            // No module could attach (none names this protocol and process):
            // first sight, or this refresh, costs no system calls. The
            // socket's facts are looked up if such a module shows up later.
            s.matched = true;
            s.chain.generation = generation;
            return Synced::Done;
        }
        // Modules already attached still follow revoke, priority and
        // parameter changes.
        let (view, chain) = s.view_and_chain();
        if let Some(d) = config.deferred_at_refresh(chain, &view) {
            return load_or_later(d.id);
        }
        let change = chain.refresh(config, &view);
        settle(fd, s, change);
        return Synced::Done;
    };
    if s.matched && s.remote.is_none() {
        // Not connected at first sight; it may be now.
        s.known.remote = false;
    }
    learn(fd, s, needs);
    if !s.matched {
        let (view, chain) = s.view_and_chain();
        if let Some(d) = config.deferred_at_first_sight(active.deferred(protocol), &view) {
            return load_or_later(d.id);
        }
        chain.attach_first_sight(config, active.candidates(protocol), &view);
        s.matched = true;
        if !s.chain.is_empty() {
            publish(fd, s);
        }
        return Synced::Done;
    }
    let (view, chain) = s.view_and_chain();
    if let Some(d) = config.deferred_at_refresh(chain, &view) {
        return load_or_later(d.id);
    }
    let change = chain.refresh(config, &view);
    settle(fd, s, change);
    Synced::Done
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
        let deferred = active.deferred(PROTO_UDP);
        if !candidates.is_empty() || !deferred.is_empty() {
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
            // A deferred module that attaches: the locked path loads it.
            if active.config.any_attaches_with(candidates, deferred, &view) {
                return false;
            }
        }
        settle_sighted(&FDS[i], generation);
        true
    })
    .unwrap_or(false)
}
