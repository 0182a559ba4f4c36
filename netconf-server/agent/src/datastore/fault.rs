//! Crash points for the persistence tests. `L45_FAULT_AT=<step>[:<n>]`
//! makes the agent `abort()` the n-th time (default: the first) it reaches
//! the named step of writing its state (see [`point`]'s callers in
//! `journal.rs`), so a test can crash it between any two steps and check
//! what a restart finds.
//!
//! Inert in normal operation: the variable is read once; when it is unset
//! (or names no step) every `point` is one comparison of a cached `None`.
//! Whoever can set the agent's environment can already stop or replace it,
//! so the hook gives nobody a new power.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
static REACHED: AtomicU64 = AtomicU64::new(0);

fn target() -> &'static Option<(String, u64)> {
    TARGET.get_or_init(|| {
        let spec = std::env::var("L45_FAULT_AT").ok()?;
        let (step, n) = match spec.split_once(':') {
            Some((s, n)) => (s.to_string(), n.parse().ok()?),
            None => (spec, 1),
        };
        Some((step, n))
    })
}

/// Whether this arrival at `step` is the configured crash point (counts the
/// arrivals at the configured step).
pub fn hit(step: &'static str) -> bool {
    match target() {
        Some((target, n)) if target == step => REACHED.fetch_add(1, Ordering::SeqCst) + 1 == *n,
        _ => false,
    }
}

/// Ends the process at once, as a crash would: no destructor, no flush.
pub fn crash(step: &'static str) -> ! {
    eprintln!("L45_FAULT_AT: aborting at {step}");
    std::process::abort()
}

/// Aborts the process if this arrival at `step` is the configured crash
/// point.
pub fn point(step: &'static str) {
    if hit(step) {
        crash(step);
    }
}
