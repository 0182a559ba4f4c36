//! A datastore subscription's parameters, below the registry
//! (`mod.rs`) and the push task (`push.rs`) that both use them.

use std::time::{Duration, SystemTime};

use crate::filter::Filter;

/// When updates are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    Periodic {
        period: Duration,
        anchor: Option<SystemTime>,
    },
    OnChange {
        dampening: Duration,
        sync_on_start: bool,
    },
}

/// A datastore subscription's parameters (`modify-subscription` replaces
/// them while it runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub filter: Filter,
    pub trigger: Trigger,
    pub stop: Option<SystemTime>,
    /// Bumped by `resync-subscription` (RFC 8641 3.10): the next update
    /// of an on-change subscription is a full `push-update`.
    pub resync: u32,
}
