//! Locking helpers every layer of the agent uses (kept below them all, so
//! nothing imports `agent.rs` for them).

use std::sync::{Mutex, MutexGuard};

/// A mutex's guard; a panic in another holder does not poison the agent.
pub(crate) fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
