//! The network-wide orchestrator (NCO). Being built (issue 4).

pub mod netconf;
