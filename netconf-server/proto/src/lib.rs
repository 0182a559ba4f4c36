//! The NETCONF protocol core. It does no I/O: framing, hello, the RPC
//! envelope and error building are pure functions over bytes, shared by the
//! device agent and the NCO's client.

pub mod framing;
pub mod message;
pub mod params;
pub mod time;
pub mod xml;

pub use framing::{Decoder, Frame, Framing, FramingError, Limits};
pub use message::{ErrorPath, ErrorTag, ErrorType, Hello, Incoming, Rpc, RpcError, BASE_NS};
