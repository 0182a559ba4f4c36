//! The network-wide orchestrator (NCO): the NETCONF client, the CIB-driven
//! request waves, monitoring, security checks, rotation and middleboxes.

pub mod callhome;
pub mod device_xml;
pub mod images;
pub mod metrics;
pub mod middlebox;
pub mod nco;
pub mod netconf;
pub mod push;

pub use nco::{Nco, NcoConfig, NcoError};
