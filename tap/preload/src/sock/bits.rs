//! Bit encodings of the descriptor table's words: the pass word (what a
//! data call may skip, and the splice recipe, at which generation) and the
//! key a record kept whole is taken over by (`sticky`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use super::record::ChainKey;

/// Sends need no tap work at the pass word's generation.
pub(super) const PASS_SEND: u64 = 1;
/// Receives need no tap work at the pass word's generation.
pub(super) const PASS_RECV: u64 = 2;
/// Bits 4..16 of a pass word: the number of the socket's splice recipe
/// (`splice::get`), 0 if it has none.
pub(super) const RECIPE_SHIFT: u32 = 4;
/// The generation (+ 1, so that 0 means unknown) sits above the bits.
pub(super) const GEN_SHIFT: u32 = 16;
/// The bits below the generation.
pub(super) const BITS: u64 = (1 << GEN_SHIFT) - 1;

/// A pass word: `bits` valid at control-area generation `generation`.
#[inline]
pub(super) fn pass_word(generation: u64, bits: u64) -> u64 {
    (generation + 1) << GEN_SHIFT | bits
}

/// The key of a sticky record, packed into `FdEntry::key`: the generation;
/// peer port, pass bits and socket-table slot; pid and the thread the
/// table record names; the peer address the table record shows.
pub(super) struct StickyKey {
    pub(super) generation: u64,
    port_bits_slot: u64,
    pid_tid: u64,
    pub(super) peer: u64,
}

impl StickyKey {
    pub(super) fn new(key: &ChainKey, slot: usize, tid: u32, peer: SocketAddr) -> StickyKey {
        StickyKey {
            generation: key.generation,
            port_bits_slot: u64::from(key.peer_port) << 48 | key.pass_bits << 32 | slot as u64,
            pid_tid: u64::from(key.pid) << 32 | u64::from(tid),
            peer: peer_word(peer),
        }
    }

    pub(super) fn load(words: &[AtomicU64; 4]) -> StickyKey {
        let [generation, port_bits_slot, pid_tid, peer] =
            std::array::from_fn(|k| words[k].load(Ordering::Relaxed));
        StickyKey {
            generation,
            port_bits_slot,
            pid_tid,
            peer,
        }
    }

    pub(super) fn port(&self) -> u16 {
        (self.port_bits_slot >> 48) as u16
    }

    pub(super) fn pass_bits(&self) -> u64 {
        (self.port_bits_slot >> 32) & BITS
    }

    pub(super) fn slot(&self) -> usize {
        (self.port_bits_slot & 0xffff_ffff) as usize
    }

    pub(super) fn pid(&self) -> u32 {
        (self.pid_tid >> 32) as u32
    }

    pub(super) fn tid(&self) -> u32 {
        self.pid_tid as u32
    }

    pub(super) fn store(&self, words: &[AtomicU64; 4]) {
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
pub(super) fn peer_word(peer: SocketAddr) -> u64 {
    match peer {
        SocketAddr::V4(a) => u64::from(a.ip().to_bits()) << 16 | u64::from(a.port()),
        SocketAddr::V6(a) => {
            let bits = a.ip().to_bits();
            let folded = (bits as u64) ^ ((bits >> 64) as u64).rotate_left(29);
            (folded ^ u64::from(a.port())) | 1 << 63
        }
    }
}
