//! The per-descriptor table: which descriptors are IPv4/IPv6 TCP/UDP sockets,
//! and for each such socket its role, addresses, module chain and buffers.
//!
//! The files, each using only those listed before it:
//! - `cell`: the holder-aware lock around a record (the unsafe part).
//! - `addr`: socket addresses, C to Rust and from the kernel.
//! - `epoll`: a socket's epoll registrations.
//! - `record`: a socket's record (`Sock`) and its chain's key (`ChainKey`).
//! - `bits`: the pass word and the kept record's key, as bits.
//! - `publish`: the socket as the shared socket table shows it.
//! - `table`: the descriptor table and its lock-free checks.
//! - `sticky`: chains and records kept for the next socket on a number.
//! - `life`: the record life cycle (`life::Stage`): classify, renew, close.
//! - `sync`: matching and refreshing a socket's chain (config sync).
//! - `held`: held bytes, as the readiness calls ask for them.

mod addr;
mod bits;
mod cell;
mod epoll;
mod held;
mod life;
mod publish;
mod record;
mod sticky;
mod sync;
mod table;

pub use addr::sockaddr_to_std;
pub use held::{epoll_ready, epoll_register, held_len};
pub use life::{
    closed, closed_owning, closes_kept, closes_plainly, created, forget, is_stream, lookup,
    tapped_or_unseen, Rec,
};
pub use record::{ChainKey, Sock};
pub use sticky::{arm_sticky, has_parked, resume, unpark};
pub use sync::{in_step, sight_by_filter, sight_by_table, sync};
pub use table::{known_not_stream, pass_bits, passes, spliced, Dir, RecGuard};
