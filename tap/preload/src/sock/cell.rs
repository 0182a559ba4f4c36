//! The lock around a descriptor's record: a small lock that knows its
//! holder, and the unsafe access to what it guards. What is locked
//! (`Option<Sock>`: `table::RecCell`) and how a closed socket's record
//! reads (`table::RecGuard`) are decided above it.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A value behind a small lock that knows its holder.
/// Nobody blocks while holding it (the data path's rule: every call that
/// may block happens with no lock held), so a waiter spins, then yields;
/// releasing is a plain store, not a read-modify-write. A thread asking
/// for a lock it holds already (a signal handler's call on the same
/// socket) is told so instead of deadlocking: its call goes straight
/// through, untapped.
pub struct Cell<T> {
    /// `pthread_self()` of the holder; 0: free.
    holder: AtomicUsize,
    value: UnsafeCell<T>,
}

// SAFETY: `value` is reached only through a `Guard` that took `holder`
// (a compare-and-swap from 0 to its own thread), so one thread at a time;
// the value may be used from any thread that takes the lock, hence `Send`.
unsafe impl<T: Send> Sync for Cell<T> {}

impl<T> Cell<T> {
    pub fn new(value: T) -> Cell<T> {
        Cell {
            holder: AtomicUsize::new(0),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock, waiting for another holder; a guard that reaches
    /// nothing if this thread holds it already (`Guard::nested`).
    #[inline]
    pub fn lock(&'static self) -> Guard<T> {
        let me = this_thread();
        let mut tries = 0u32;
        loop {
            match self
                .holder
                .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return Guard { cell: Some(self) },
                Err(holder) if holder == me => return Guard { cell: None },
                Err(_) => wait(&mut tries),
            }
        }
    }
}

#[inline]
fn this_thread() -> usize {
    // SAFETY: pthread_self has no preconditions (a load from the thread
    // pointer); it is never 0.
    unsafe { libc::pthread_self() as usize }
}

/// Another thread holds the lock for a few hundred instructions at most,
/// unless it was preempted: spin, then yield, then sleep a little.
#[cold]
fn wait(tries: &mut u32) {
    *tries += 1;
    if *tries < 64 {
        std::hint::spin_loop();
    } else if *tries < 128 {
        // SAFETY: no preconditions.
        unsafe { libc::sched_yield() };
    } else {
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}

/// A taken lock; to a thread that already held it, a guard that reaches
/// nothing (and releases nothing).
pub struct Guard<T: 'static> {
    /// None: this thread held the lock already; nothing is reachable.
    cell: Option<&'static Cell<T>>,
}

impl<T> Guard<T> {
    /// This thread held the lock already (a nested call: nothing is
    /// reachable through this guard).
    #[inline]
    pub fn nested(&self) -> bool {
        self.cell.is_none()
    }

    /// The locked value (`None` if `nested`).
    #[inline]
    pub fn get_mut(&mut self) -> Option<&mut T> {
        // SAFETY: this guard holds the cell's lock (see `Cell`), and the
        // borrow lives no longer than the guard.
        self.cell.map(|c| unsafe { &mut *c.value.get() })
    }

    /// `get_mut`, shared.
    #[inline]
    pub fn get(&self) -> Option<&T> {
        // SAFETY: as in `get_mut`, shared.
        self.cell.map(|c| unsafe { &*c.value.get() })
    }
}

impl<T> Drop for Guard<T> {
    #[inline]
    fn drop(&mut self) {
        if let Some(c) = self.cell {
            c.holder.store(0, Ordering::Release);
        }
    }
}
