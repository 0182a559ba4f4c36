//! NETCONF client over SSH (RFC 6241, RFC 6242) for the NCO.
//!
//! * [`Session`]: one session to one device — host-key pinning or
//!   trust-on-first-use, public-key authentication, hello with base:1.0 and
//!   base:1.1 (chunked framing when both sides have 1.1), pipelined RPCs
//!   demultiplexed by message-id, notifications, typed errors.
//! * [`Pool`] (alias [`DeviceConnections`]): one session per device name,
//!   lazy connect, reconnect with exponential backoff and jitter.
//!
//! Framing, hello and XML parsing come from `l45-netconf-proto`; this module
//! only adds the transport and the reply/notification interpretation.

pub mod error;
pub mod ops;
pub mod options;
pub mod pool;
pub mod relay;
pub mod reply;
pub mod session;
pub mod ssh;

pub use error::{NetconfError, Phase, RpcErrorInfo};
pub use ops::{Datastore, DefaultOperation, EditOptions, ErrorOption, TestOption, L45_NS};
pub use pool::{BackoffConfig, DeviceConnections, DeviceState, Pool, Route};
pub use reply::{Notification, Reply};
pub use session::{
    fingerprints_match, ConnectOptions, HostKeyPolicy, Session, DEFAULT_MAX_REPLY_SIZE,
};
