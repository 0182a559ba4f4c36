//! Gives freed heap back to the kernel. glibc keeps freed memory in its
//! arenas; after a large datastore is deleted that would keep the agent's
//! RSS at its peak for good.

/// Returns free heap pages to the system (`malloc_trim(0)`).
pub fn release() {
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks;
    // it takes no pointers from us and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
