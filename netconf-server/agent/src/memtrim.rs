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

/// Fixes glibc's allocation thresholds at start-up. By default glibc
/// raises its mmap threshold (up to 32 MiB) and trim threshold (twice that)
/// each time a large block is freed, so later multi-megabyte buffers (a
/// 10 MB message, a reply) come from the arenas and freed space below
/// those thresholds is never returned. Fixed values keep large buffers in
/// their own mappings (returned on free) and let arenas shrink; at most two
/// arenas limit what per-thread arenas keep.
pub fn configure() {
    // SAFETY: mallopt only sets glibc's allocator parameters (under its
    // lock); it takes no pointers and is called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
