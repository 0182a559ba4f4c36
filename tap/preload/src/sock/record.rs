//! A tapped socket's record: what the tap knows of one IPv4/IPv6 TCP or
//! UDP socket (role, addresses, module chain, held and pending bytes), and
//! the key its chain may be taken over by.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use l45_modules::{Ctx, Role, Transport};
use l45_tap_engine::{protocol_of, Chain, Needs, SocketView};
use l45_tap_shm::{SocketRecord, NAME_LEN};

use super::epoll::EpollRegistrations;
use crate::process;
use crate::real::HOT;

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

impl Sock {
    pub(super) fn new(stream: bool) -> Sock {
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
    pub(super) fn reset(&mut self, stream: bool) {
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
        self.epoll.clear();
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
    pub(super) fn held_test_marker(&mut self) {
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
