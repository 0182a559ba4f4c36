//! The libc functions we wrap, found with `dlsym(RTLD_NEXT, …)`, and the
//! few process-wide words every tapped call reads.
//!
//! All of them live in one table (`HOT`), the hot ones first, so a call
//! that passes straight through touches one or two cache lines of ours
//! besides its descriptor's entry. Each pointer is resolved on first use:
//! a `dlsym` costs about 2 µs, and a program uses a dozen of the 30.

use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use libc::{
    c_int, c_long, c_uint, c_ulong, c_void, mmsghdr, msghdr, nfds_t, pollfd, size_t, sockaddr,
    socklen_t, ssize_t,
};

/// Process-wide words read on the hot path, in one place.
#[repr(C, align(64))]
pub struct Hot {
    /// The control area's generation word, once it is mapped (null before).
    pub generation: AtomicPtr<AtomicU64>,
    /// Sockets holding received bytes the application has not read yet;
    /// while 0, readiness calls go straight to libc.
    pub held_sockets: AtomicUsize,
    /// glibc's definitions, by `Real` index.
    real: [AtomicUsize; REAL_COUNT],
}

pub static HOT: Hot = Hot {
    generation: AtomicPtr::new(std::ptr::null_mut()),
    held_sockets: AtomicUsize::new(0),
    real: [const { AtomicUsize::new(0) }; REAL_COUNT],
};

#[inline]
fn lookup(index: usize) -> usize {
    let p = HOT.real[index].load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    resolve(index)
}

#[cold]
fn resolve(index: usize) -> usize {
    // SAFETY: every name is a NUL-terminated literal; RTLD_NEXT finds the
    // next definition after this library (glibc's).
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, NAMES[index].as_ptr().cast()) } as usize;
    if p == 0 {
        // glibc always has these; without them nothing can work.
        std::process::abort();
    }
    HOT.real[index].store(p, Ordering::Relaxed);
    p
}

macro_rules! real {
    ($($name:ident ($($arg:ident : $ty:ty),*) -> $ret:ty;)*) => {
        #[allow(non_camel_case_types)]
        #[repr(usize)]
        enum Real { $($name,)* Syscall }
        const REAL_COUNT: usize = Real::Syscall as usize + 1;
        const NAMES: [&[u8]; REAL_COUNT] =
            [$(concat!(stringify!($name), "\0").as_bytes(),)* b"syscall\0"];
        $(
            #[allow(clippy::too_many_arguments)]
            #[inline]
            pub unsafe fn $name($($arg: $ty),*) -> $ret {
                let p = HOT.real[Real::$name as usize].load(Ordering::Relaxed);
                if p == 0 {
                    // SAFETY: as below, after resolving.
                    return unsafe { first::$name($($arg),*) };
                }
                // SAFETY: `p` is glibc's definition of this very function,
                // whose C signature the declaration above repeats.
                let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { std::mem::transmute(p) };
                // SAFETY: arguments passed through unchanged from our caller.
                unsafe { f($($arg),*) }
            }
        )*

        /// First calls: resolve, then call. Out of line, so a wrapper's
        /// pass-through path is a load, a test and a jump, with no frame.
        mod first {
            use super::*;
            $(
                #[allow(clippy::too_many_arguments)]
                #[cold]
                #[inline(never)]
                pub unsafe fn $name($($arg: $ty),*) -> $ret {
                    let p = resolve(Real::$name as usize);
                    // SAFETY: as in the wrapper above.
                    let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { std::mem::transmute(p) };
                    // SAFETY: arguments passed through unchanged.
                    unsafe { f($($arg),*) }
                }
            )*
        }
    };
}

// Hot first: the calls a DNS client or server makes per query.
real! {
    read(fd: c_int, buf: *mut c_void, len: size_t) -> ssize_t;
    write(fd: c_int, buf: *const c_void, len: size_t) -> ssize_t;
    recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t;
    sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t;
    poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int;
    epoll_wait(epfd: c_int, ev: *mut libc::epoll_event, max: c_int, timeout: c_int) -> c_int;
    epoll_ctl(epfd: c_int, op: c_int, fd: c_int, ev: *mut libc::epoll_event) -> c_int;
    connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
    close(fd: c_int) -> c_int;
    ioctl(fd: c_int, request: c_ulong, arg: *mut c_void) -> c_int;
    recvfrom(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> ssize_t;
    sendto(fd: c_int, buf: *const c_void, len: size_t, flags: c_int, addr: *const sockaddr, alen: socklen_t) -> ssize_t;
    send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t;
    recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t;
    sendmmsg(fd: c_int, vec: *mut mmsghdr, vlen: c_uint, flags: c_int) -> c_int;
    recvmmsg(fd: c_int, vec: *mut mmsghdr, vlen: c_uint, flags: c_int, timeout: *mut libc::timespec) -> c_int;
    accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int;
    dup2(old: c_int, new: c_int) -> c_int;
    dup3(old: c_int, new: c_int, flags: c_int) -> c_int;
    readv(fd: c_int, iov: *const libc::iovec, n: c_int) -> ssize_t;
    writev(fd: c_int, iov: *const libc::iovec, n: c_int) -> ssize_t;
    ppoll(fds: *mut pollfd, n: nfds_t, timeout: *const libc::timespec, mask: *const libc::sigset_t) -> c_int;
    select(n: c_int, r: *mut libc::fd_set, w: *mut libc::fd_set, e: *mut libc::fd_set, t: *mut libc::timeval) -> c_int;
    epoll_pwait(epfd: c_int, ev: *mut libc::epoll_event, max: c_int, timeout: c_int, mask: *const libc::sigset_t) -> c_int;
    sendfile(out_fd: c_int, in_fd: c_int, offset: *mut libc::off_t, count: size_t) -> ssize_t;
    sendfile64(out_fd: c_int, in_fd: c_int, offset: *mut libc::off64_t, count: size_t) -> ssize_t;
    splice(fd_in: c_int, off_in: *mut libc::loff_t, fd_out: c_int, off_out: *mut libc::loff_t, len: size_t, flags: c_uint) -> ssize_t;
}

/// glibc's `syscall`, which is variadic.
#[inline]
pub unsafe fn syscall(
    n: c_long,
    a1: c_long,
    a2: c_long,
    a3: c_long,
    a4: c_long,
    a5: c_long,
    a6: c_long,
) -> c_long {
    let p = lookup(Real::Syscall as usize);
    // SAFETY: glibc's variadic `syscall`; every argument is a long, as the
    // kernel ABI takes them.
    let f: unsafe extern "C" fn(c_long, ...) -> c_long = unsafe { std::mem::transmute(p) };
    // SAFETY: arguments passed through unchanged.
    unsafe { f(n, a1, a2, a3, a4, a5, a6) }
}
