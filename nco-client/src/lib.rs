//! The network-wide orchestrator (NCO). Being built (issue 4).

pub mod device_xml;
pub mod middlebox;
pub mod nco;
pub mod netconf;

pub use nco::{Nco, NcoConfig, NcoError};
