//! Application bytes a stream's send chain has taken but the application
//! has not been told were sent (`io::send_stream`).
//!
//! When the kernel refuses part of a customized chunk (a full send buffer
//! on a non-blocking socket), the rest of the chunk's customized form is
//! kept in the record's `pending` bytes, and the chunk's own bytes here:
//! the application is told only what went out whole, so it sends the rest
//! of its bytes again, and this copy is how the next send recognises them
//! (sent already, not customized a second time).
//!
//! Rare (a refused send on a customized stream), so a short list behind
//! one lock, taken only while `COUNT` says it holds something or to add to
//! it; nothing blocking or calling out happens under the lock, and nobody
//! waits for it long (`list`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use libc::c_int;

struct Entry {
    fd: c_int,
    /// The socket's peer when the bytes were taken: a stale entry of a
    /// closed socket (should a close escape `forget`) cannot be taken for
    /// a new socket on the number with another peer.
    peer: Option<SocketAddr>,
    bytes: Vec<u8>,
}

static COUNT: AtomicUsize = AtomicUsize::new(0);
static LIST: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// The list, if its lock can be had. Its holders never block, so it is
/// free within a few tries, except for a thread that interrupted itself
/// while holding it (a signal handler's `close`) or a child forked while
/// another thread held it: they give up rather than wait forever.
fn list() -> Option<std::sync::MutexGuard<'static, Vec<Entry>>> {
    for _ in 0..1000 {
        match LIST.try_lock() {
            Ok(l) => return Some(l),
            // Nothing panics under the lock; if something did, the list is
            // still consistent.
            Err(std::sync::TryLockError::Poisoned(e)) => return Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => std::thread::yield_now(),
        }
    }
    None
}

/// Takes the bytes kept for the socket on `fd` whose peer is `peer`.
pub fn take(fd: c_int, peer: Option<SocketAddr>) -> Option<Vec<u8>> {
    if COUNT.load(Ordering::Acquire) == 0 {
        return None;
    }
    let mut l = list()?;
    let i = l.iter().position(|e| e.fd == fd)?;
    let e = l.swap_remove(i);
    COUNT.store(l.len(), Ordering::Release);
    (e.peer == peer).then_some(e.bytes)
}

/// Whether bytes may be kept for `fd` (yes when the list cannot be read:
/// the caller then takes the path that looks).
pub fn has(fd: c_int) -> bool {
    COUNT.load(Ordering::Acquire) != 0 && list().is_none_or(|l| l.iter().any(|e| e.fd == fd))
}

/// Keeps `bytes` for the socket on `fd` (replacing what was kept).
pub fn put(fd: c_int, peer: Option<SocketAddr>, bytes: Vec<u8>) {
    if bytes.is_empty() {
        forget(fd);
        return;
    }
    let Some(mut l) = list() else { return };
    l.retain(|e| e.fd != fd);
    l.push(Entry { fd, peer, bytes });
    COUNT.store(l.len(), Ordering::Release);
}

/// The descriptor is closed or now names another socket.
pub fn forget(fd: c_int) {
    if COUNT.load(Ordering::Acquire) == 0 {
        return;
    }
    // A stale entry left here cannot be taken for another peer (`take`).
    let Some(mut l) = list() else { return };
    l.retain(|e| e.fd != fd);
    COUNT.store(l.len(), Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_per_descriptor_and_peer() {
        let peer: Option<SocketAddr> = "127.0.0.1:80".parse().ok();
        let other: Option<SocketAddr> = "127.0.0.1:81".parse().ok();
        put(90_001, peer, b"abc".to_vec());
        put(90_002, peer, b"xyz".to_vec());
        assert!(has(90_001));
        assert_eq!(take(90_001, peer).as_deref(), Some(&b"abc"[..]));
        assert_eq!(take(90_001, peer), None);
        // Another peer on the number: the entry is dropped, not handed over.
        assert_eq!(take(90_002, other), None);
        assert!(!has(90_002));
        put(90_003, peer, b"q".to_vec());
        forget(90_003);
        assert_eq!(take(90_003, peer), None);
        put(90_004, peer, Vec::new());
        assert!(!has(90_004));
    }
}
