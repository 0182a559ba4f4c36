//! The Layer 4.5 device agent: a NETCONF-over-SSH server for the
//! `layer45-customization` model that drives a tap backend.

pub mod agent;
pub mod edit;
pub mod filter;
#[allow(unsafe_code)]
pub mod memtrim;
pub mod nacm;
pub mod persist;
pub mod session;
pub mod ssh;
pub mod store;
pub mod tapbridge;
pub mod yangerr;
