//! Per-module statistics a customized message is credited to (the shared
//! memory's statistics slots, read by the agent).

use std::sync::atomic::Ordering;

use crate::process;

pub(crate) fn credit(slot: usize, id: u32, sent: bool, bytes: usize) {
    if let Some(st) = process::stats(slot, id) {
        if sent {
            st.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
            st.messages_sent.fetch_add(1, Ordering::Relaxed);
        } else {
            st.bytes_received.fetch_add(bytes as u64, Ordering::Relaxed);
            st.messages_received.fetch_add(1, Ordering::Relaxed);
        }
        st.active_ts_ns.store(process::now_ns(), Ordering::Relaxed);
    }
}

/// A customized message the kernel refused (the application sees the
/// error too).
pub(crate) fn credit_error(slot: usize, id: u32) {
    if let Some(st) = process::stats(slot, id) {
        st.errors.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) fn credit_drop(slot: usize, id: u32) {
    if let Some(st) = process::stats(slot, id) {
        st.dropped.fetch_add(1, Ordering::Relaxed);
        st.active_ts_ns.store(process::now_ns(), Ordering::Relaxed);
    }
}
