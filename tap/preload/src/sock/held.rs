//! What the readiness calls ask of the table: the bytes a stream socket
//! holds (received, customized, not yet handed over), and the epoll sets
//! to report them through.

use std::sync::atomic::Ordering;

use libc::c_int;

use super::life::Rec;
use super::table::{index, FDS, HIGH_FD, MAX_FD, STREAM};
use crate::real::HOT;

/// Records (or with `event` None, drops) the registration of socket `fd`
/// (a stream socket, `is_stream`) in epoll set `epfd`.
pub fn epoll_register(fd: c_int, epfd: c_int, event: Option<(u32, u64)>) {
    let Some(i) = index(fd) else { return };
    if FDS[i].state.load(Ordering::Acquire) != STREAM {
        return;
    }
    let mut g = Rec(i).lock();
    if let Some(s) = g.as_mut() {
        s.epoll.set(epfd, event);
    }
}

/// The epoll data of sockets registered for input in `epfd` that hold
/// received bytes (only called while some socket holds bytes).
pub fn epoll_ready(epfd: c_int) -> Vec<u64> {
    let mut ready = Vec::new();
    let high = HIGH_FD.load(Ordering::Relaxed).min(MAX_FD - 1);
    for (i, entry) in FDS.iter().enumerate().take(high + 1) {
        if entry.state.load(Ordering::Acquire) != STREAM {
            continue;
        }
        if let Some(s) = Rec(i).lock().as_ref() {
            if !s.held.is_empty() {
                ready.extend(
                    s.epoll
                        .iter()
                        .filter(|&&(e, events, _)| e == epfd && events & libc::EPOLLIN as u32 != 0)
                        .map(|&(_, _, data)| data),
                );
            }
        }
    }
    ready
}

/// Descriptors with held bytes (for readiness calls).
pub fn held_len(fd: c_int) -> usize {
    if HOT.held_sockets.load(Ordering::Relaxed) == 0 {
        return 0;
    }
    let Some(i) = index(fd) else { return 0 };
    if FDS[i].state.load(Ordering::Acquire) != STREAM {
        return 0;
    }
    Rec(i).lock().as_ref().map(|s| s.held.len()).unwrap_or(0)
}
