//! `libl45tap.so`: the user-space Layer 4.5 tap, loaded with `LD_PRELOAD`.
//!
//! It interposes the libc socket calls (`send*`, `recv*`, `read`/`write` on
//! sockets, `sendfile`/`splice` to sockets, `connect`, `accept*`, `close`,
//! raw `syscall(SYS_sendmmsg…)`, readiness calls and `FIONREAD`) and runs
//! matching sockets' module chains.
//! The agent configures it through the shared-memory control area
//! (`l45-tap-shm`); there is no IPC on the data path. Descriptors that are not
//! IPv4/IPv6 TCP/UDP sockets cost one atomic load per call.
//!
//! Limits (see `docs/user-space-tap.md`): static binaries, io_uring,
//! `splice` from a socket, raw `syscall` numbers other than the socket ones,
//! setuid programs (the loader ignores `LD_PRELOAD`), datagram `MSG_PEEK`
//! (sees wire bytes).
#![allow(unsafe_code)] // an FFI interposition layer; every block has a SAFETY note
#![allow(clippy::missing_safety_doc)] // the C signatures are the contract

/// An exported wrapper whose pass-through check is plain loads with no call
/// of its own: when it holds, the call jumps straight into glibc (no stack
/// frame, about ten instructions); otherwise `$slow` (out of line) makes
/// the full check and does the tap's work.
macro_rules! pass_first {
    ($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty; if $passes:expr; else $slow:ident) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            if $passes {
                // SAFETY: passthrough, the caller's arguments unchanged.
                return unsafe { crate::real::$name($($arg),*) };
            }
            // SAFETY: the same arguments, for the full check.
            unsafe { $slow($($arg),*) }
        }
    };
}

mod images;
mod io;
mod process;
mod readiness;
mod real;
mod sendfile;
mod signals;
mod sock;
mod splice;
mod stats;
mod sys;
mod unacked;

use l45_modules::Role;
use libc::{
    c_int, c_long, c_uint, c_ulong, c_void, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t,
};

use crate::io::Received;
use crate::sock::{sockaddr_to_std, Dir};

/// Runs `f` over the bytes of an iovec array, copying only when there is more
/// than one element.
unsafe fn gather<R>(iov: *const libc::iovec, n: usize, f: impl FnOnce(&[u8]) -> R) -> R {
    if iov.is_null() || n == 0 {
        return f(&[]);
    }
    // SAFETY: the caller's msghdr promises `n` valid iovecs.
    let iovs = unsafe { std::slice::from_raw_parts(iov, n) };
    if n == 1 {
        let v = &iovs[0];
        if v.iov_base.is_null() {
            return f(&[]);
        }
        // SAFETY: one iovec of iov_len readable bytes.
        return f(unsafe { std::slice::from_raw_parts(v.iov_base.cast::<u8>(), v.iov_len) });
    }
    let mut buf = Vec::new();
    for v in iovs {
        if !v.iov_base.is_null() {
            // SAFETY: as above, per element.
            buf.extend_from_slice(unsafe {
                std::slice::from_raw_parts(v.iov_base.cast::<u8>(), v.iov_len)
            });
        }
    }
    f(&buf)
}

/// Copies `data` into an iovec array; returns bytes copied.
unsafe fn scatter(iov: *const libc::iovec, n: usize, data: &[u8]) -> usize {
    if iov.is_null() {
        return 0;
    }
    // SAFETY: the caller's msghdr promises `n` valid, writable iovecs.
    let iovs = unsafe { std::slice::from_raw_parts(iov, n) };
    let mut at = 0;
    for v in iovs {
        if at == data.len() {
            break;
        }
        if v.iov_base.is_null() {
            continue;
        }
        let k = v.iov_len.min(data.len() - at);
        // SAFETY: writable iovec of at least k bytes.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr().add(at), v.iov_base.cast::<u8>(), k) };
        at += k;
    }
    at
}

/// A msghdr with a name and iovecs and nothing else.
fn message(
    name: *mut sockaddr,
    name_len: socklen_t,
    iov: *mut libc::iovec,
    iov_len: usize,
) -> msghdr {
    // SAFETY: all-zero is a valid msghdr (null pointers, no lengths); the
    // fields glibc declares are then set.
    let mut m: msghdr = unsafe { std::mem::zeroed() };
    m.msg_name = name.cast();
    m.msg_namelen = name_len;
    m.msg_iov = iov;
    m.msg_iovlen = iov_len;
    m
}

fn iov_total(iov: *const libc::iovec, n: usize) -> usize {
    if iov.is_null() {
        return 0;
    }
    // SAFETY: as in `scatter`.
    unsafe { std::slice::from_raw_parts(iov, n) }
        .iter()
        .map(|v| v.iov_len)
        .sum()
}

/// The buffers of an iovec array, in order (empty and null ones left out).
unsafe fn iov_parts<'a>(iov: *const libc::iovec, n: usize) -> Vec<&'a [u8]> {
    if iov.is_null() || n == 0 {
        return Vec::new();
    }
    // SAFETY: the caller's msghdr promises `n` valid iovecs.
    let iovs = unsafe { std::slice::from_raw_parts(iov, n) };
    iovs.iter()
        .filter(|v| !v.iov_base.is_null() && v.iov_len > 0)
        // SAFETY: each iovec has iov_len readable bytes, alive for the call.
        .map(|v| unsafe { std::slice::from_raw_parts(v.iov_base.cast::<u8>(), v.iov_len) })
        .collect()
}

// ===== socket lifecycle =====

#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    // SAFETY: passthrough.
    let fd = unsafe { real::socket(domain, ty, protocol) };
    if fd >= 0 {
        unacked::forget(fd);
        sock::created(fd, domain, ty, protocol);
    }
    fd
}

#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: passthrough.
    let r = unsafe { real::connect(fd, addr, len) };
    if r == 0 || (r < 0 && sys::errno() == libc::EINPROGRESS) {
        let e = sys::errno();
        io::established(fd, Role::Client, sockaddr_to_std(addr, len));
        // The errno connect left for the caller (first sight may have made
        // calls of its own).
        sys::set_errno(e);
    }
    r
}

unsafe fn accepted(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) {
    if fd < 0 {
        return;
    }
    unacked::forget(fd);
    sock::forget(fd);
    let peer = if addr.is_null() || len.is_null() {
        None
    } else {
        // SAFETY: the kernel filled `*len` bytes of `addr`.
        sockaddr_to_std(addr, unsafe { *len })
    };
    io::established(fd, Role::Server, peer);
}

#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: passthrough, then our bookkeeping on the new descriptor.
    unsafe {
        let r = real::accept(fd, addr, len);
        accepted(r, addr, len);
        r
    }
}

#[no_mangle]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    // SAFETY: as in `accept`.
    unsafe {
        let r = real::accept4(fd, addr, len, flags);
        accepted(r, addr, len);
        r
    }
}

pass_first! { close(fd: c_int) -> c_int; if sock::closes_plainly(fd) || sock::closes_kept(fd); else close_slow }

#[inline(never)]
unsafe fn close_slow(fd: c_int) -> c_int {
    io::closing_owning(fd);
    // SAFETY: passthrough.
    unsafe { real::close(fd) }
}

#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    if old != new {
        io::closing(new);
    }
    // SAFETY: passthrough.
    unsafe { real::dup2(old, new) }
}

#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    io::closing(new);
    // SAFETY: passthrough.
    unsafe { real::dup3(old, new, flags) }
}

// ===== sending =====

/// A send on a descriptor `sock::tapped_or_unseen` said the tap must see (the
/// callers check first, so passing through costs them nothing more).
fn send_plain(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    dest: *const sockaddr,
    alen: socklen_t,
) -> Option<ssize_t> {
    if buf.is_null() && len > 0 {
        return None;
    }
    if let Some(r) = sock::spliced(fd, Dir::Send) {
        let mut iov = libc::iovec {
            iov_base: buf.cast_mut(),
            iov_len: len,
        };
        let m = message(dest.cast_mut(), alen, &mut iov, 1);
        // SAFETY: the application's buffer and address.
        if let Some(sent) = unsafe { splice::send(fd, &m, flags, false, r) } {
            return Some(sent);
        }
    }
    let data: &[u8] = if len == 0 {
        &[]
    } else {
        // SAFETY: the application passes `len` readable bytes at `buf`.
        unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) }
    };
    let mut wire = |b: &[u8]| {
        // SAFETY: sending our own buffer with the caller's flags/address.
        unsafe { real::sendto(fd, b.as_ptr().cast(), b.len(), flags, dest, alen) }
    };
    io::send(fd, data, flags, sockaddr_to_std(dest, alen), &mut wire)
}

pass_first! { send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t; if sock::passes(fd, Dir::Send); else send_slow }

#[inline(never)]
unsafe fn send_slow(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    if !sock::tapped_or_unseen(fd) {
        // SAFETY: passthrough.
        return unsafe { real::send(fd, buf, len, flags) };
    }
    match send_plain(fd, buf, len, flags, std::ptr::null(), 0) {
        Some(r) => r,
        // SAFETY: passthrough.
        None => unsafe { real::send(fd, buf, len, flags) },
    }
}

pass_first! { sendto(fd: c_int, buf: *const c_void, len: size_t, flags: c_int, addr: *const sockaddr, alen: socklen_t) -> ssize_t; if sock::passes(fd, Dir::Send); else sendto_slow }

#[inline(never)]
unsafe fn sendto_slow(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const sockaddr,
    alen: socklen_t,
) -> ssize_t {
    if !sock::tapped_or_unseen(fd) {
        // SAFETY: passthrough.
        return unsafe { real::sendto(fd, buf, len, flags, addr, alen) };
    }
    match send_plain(fd, buf, len, flags, addr, alen) {
        Some(r) => r,
        // SAFETY: passthrough.
        None => unsafe { real::sendto(fd, buf, len, flags, addr, alen) },
    }
}

pass_first! { write(fd: c_int, buf: *const c_void, len: size_t) -> ssize_t; if sock::passes(fd, Dir::Send); else write_slow }

#[inline(never)]
unsafe fn write_slow(fd: c_int, buf: *const c_void, len: size_t) -> ssize_t {
    if sock::tapped_or_unseen(fd) {
        if let Some(r) = send_plain(fd, buf, len, 0, std::ptr::null(), 0) {
            return r;
        }
    }
    // SAFETY: passthrough.
    unsafe { real::write(fd, buf, len) }
}

pass_first! { writev(fd: c_int, iov: *const libc::iovec, n: c_int) -> ssize_t; if sock::passes(fd, Dir::Send); else writev_slow }

#[inline(never)]
unsafe fn writev_slow(fd: c_int, iov: *const libc::iovec, n: c_int) -> ssize_t {
    if n > 0 && sock::tapped_or_unseen(fd) {
        if let Some(r) = sock::spliced(fd, Dir::Send) {
            let m = message(std::ptr::null_mut(), 0, iov.cast_mut(), n as usize);
            // SAFETY: the caller passes `n` valid iovecs.
            if let Some(sent) = unsafe { splice::send(fd, &m, 0, false, r) } {
                return sent;
            }
        }
        let mut wire = |b: &[u8]| {
            // SAFETY: sending our own buffer, as the application's write would.
            unsafe { real::send(fd, b.as_ptr().cast(), b.len(), 0) }
        };
        let r = if sock::is_stream(fd) {
            // A stream reads the application's buffers where they are.
            // SAFETY: the caller passes `n` valid iovecs.
            let parts = unsafe { iov_parts(iov, n as usize) };
            io::send_stream(fd, &parts, &mut wire)
        } else {
            // SAFETY: the caller passes `n` valid iovecs.
            unsafe {
                gather(iov, n as usize, |data| {
                    io::send(fd, data, 0, None, &mut wire)
                })
            }
        };
        if let Some(r) = r {
            return r;
        }
    }
    // SAFETY: passthrough.
    unsafe { real::writev(fd, iov, n) }
}

/// A `sendmsg` the callers found `sock::tapped_or_unseen`. `raw`: the
/// application made the raw system call (`syscall(SYS_sendmmsg…)`,
/// as dig does), so the customized bytes go out the same way, without
/// glibc's cancellation-point bookkeeping.
/// `spliced`: the socket's splice recipe, as the caller looked it up.
unsafe fn sendmsg_tapped(
    fd: c_int,
    msg: *const msghdr,
    flags: c_int,
    raw: bool,
    spliced: Option<&splice::Recipe>,
) -> Option<ssize_t> {
    if msg.is_null() {
        return None;
    }
    // SAFETY: the application's msghdr.
    let m = unsafe { &*msg };
    if let Some(r) = spliced {
        // SAFETY: the application's msghdr and iovecs.
        if let Some(sent) = unsafe { splice::send(fd, m, flags, raw, r) } {
            return Some(sent);
        }
    }
    let dest = sockaddr_to_std(m.msg_name.cast(), m.msg_namelen);
    let mut wire = |b: &[u8]| {
        let mut iov = libc::iovec {
            iov_base: b.as_ptr() as *mut c_void,
            iov_len: b.len(),
        };
        let mut copy = *m;
        copy.msg_iov = &mut iov;
        copy.msg_iovlen = 1;
        // SAFETY: the application's msghdr with our one iovec over a live
        // buffer; its name and control buffers are the caller's.
        unsafe {
            if raw {
                let ptr = std::ptr::from_ref(&copy) as c_long;
                let r = real::syscall(libc::SYS_sendmsg, fd.into(), ptr, flags.into(), 0, 0, 0);
                r as ssize_t
            } else {
                real::sendmsg(fd, &copy, flags)
            }
        }
    };
    if sock::is_stream(fd) {
        // SAFETY: iovecs described by the msghdr.
        let parts = unsafe { iov_parts(m.msg_iov, m.msg_iovlen) };
        return io::send_stream(fd, &parts, &mut wire);
    }
    // SAFETY: iovecs described by the msghdr.
    unsafe {
        gather(m.msg_iov, m.msg_iovlen, |data| {
            io::send(fd, data, flags, dest, &mut wire)
        })
    }
}

pass_first! { sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t; if sock::passes(fd, Dir::Send); else sendmsg_slow }

#[inline(never)]
unsafe fn sendmsg_slow(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    if !sock::tapped_or_unseen(fd) {
        // SAFETY: passthrough (a DNS server's replies, say).
        return unsafe { real::sendmsg(fd, msg, flags) };
    }
    // SAFETY: pointers from the application, checked inside.
    match unsafe { sendmsg_tapped(fd, msg, flags, false, sock::spliced(fd, Dir::Send)) } {
        Some(r) => r,
        // SAFETY: passthrough.
        None => unsafe { real::sendmsg(fd, msg, flags) },
    }
}

pass_first! { sendmmsg(fd: c_int, vec: *mut mmsghdr, vlen: c_uint, flags: c_int) -> c_int; if sock::passes(fd, Dir::Send); else sendmmsg_slow }

#[inline(never)]
unsafe fn sendmmsg_slow(fd: c_int, vec: *mut mmsghdr, vlen: c_uint, flags: c_int) -> c_int {
    if vec.is_null() || vlen == 0 || !sock::tapped_or_unseen(fd) {
        // SAFETY: passthrough.
        return unsafe { real::sendmmsg(fd, vec, vlen, flags) };
    }
    // SAFETY: the caller's `vlen` messages.
    unsafe { sendmmsg_tapped(fd, vec, vlen, flags, false, sock::spliced(fd, Dir::Send)) }
}

unsafe fn sendmmsg_tapped(
    fd: c_int,
    vec: *mut mmsghdr,
    vlen: c_uint,
    flags: c_int,
    raw: bool,
    spliced: Option<&splice::Recipe>,
) -> c_int {
    if vec.is_null() {
        // SAFETY: passthrough: the kernel reports the bad address.
        return unsafe {
            if raw {
                let v = vec as c_long;
                real::syscall(
                    libc::SYS_sendmmsg,
                    fd.into(),
                    v,
                    vlen.into(),
                    flags.into(),
                    0,
                    0,
                ) as c_int
            } else {
                real::sendmmsg(fd, vec, vlen, flags)
            }
        };
    }
    let mut sent = 0;
    for i in 0..vlen as usize {
        // SAFETY: `vlen` entries at `vec`.
        let entry = unsafe { &mut *vec.add(i) };
        // SAFETY: one message, as `sendmsg` would get it.
        let r = match unsafe { sendmsg_tapped(fd, &entry.msg_hdr, flags, raw, spliced) } {
            Some(r) => r,
            // SAFETY: passthrough for this message.
            None => unsafe { real::sendmsg(fd, &entry.msg_hdr, flags) },
        };
        if r < 0 {
            return if sent > 0 { sent } else { -1 };
        }
        entry.msg_len = r as c_uint;
        sent += 1;
    }
    sent
}

// ===== file to socket =====
//
// The kernel moves these bytes without the tap seeing them: on a stream
// socket whose chain acts on sends they are read and sent through it
// instead (`sendfile.rs`); everything else keeps the kernel's fast path.

/// Whether a file-to-socket call on `fd` must go through the chain: a
/// tapped stream socket whose chain acts on sends (the callers checked
/// `sock::passes` first).
fn file_send_tapped(fd: c_int) -> bool {
    sock::tapped_or_unseen(fd) && sock::is_stream(fd)
}

pass_first! { sendfile(out_fd: c_int, in_fd: c_int, offset: *mut libc::off_t, count: size_t) -> ssize_t; if sock::passes(out_fd, Dir::Send); else sendfile_slow }

#[inline(never)]
unsafe fn sendfile_slow(
    out_fd: c_int,
    in_fd: c_int,
    offset: *mut libc::off_t,
    count: size_t,
) -> ssize_t {
    if file_send_tapped(out_fd) {
        let off = if offset.is_null() {
            sendfile::Offset::None
        } else {
            sendfile::Offset::Off(offset)
        };
        if let Some(r) = sendfile::sendfile(out_fd, in_fd, off, count) {
            return r;
        }
    }
    // SAFETY: passthrough.
    unsafe { real::sendfile(out_fd, in_fd, offset, count) }
}

pass_first! { sendfile64(out_fd: c_int, in_fd: c_int, offset: *mut libc::off64_t, count: size_t) -> ssize_t; if sock::passes(out_fd, Dir::Send); else sendfile64_slow }

#[inline(never)]
unsafe fn sendfile64_slow(
    out_fd: c_int,
    in_fd: c_int,
    offset: *mut libc::off64_t,
    count: size_t,
) -> ssize_t {
    if file_send_tapped(out_fd) {
        let off = if offset.is_null() {
            sendfile::Offset::None
        } else {
            sendfile::Offset::Off64(offset)
        };
        if let Some(r) = sendfile::sendfile(out_fd, in_fd, off, count) {
            return r;
        }
    }
    // SAFETY: passthrough.
    unsafe { real::sendfile64(out_fd, in_fd, offset, count) }
}

pass_first! { splice(fd_in: c_int, off_in: *mut libc::loff_t, fd_out: c_int, off_out: *mut libc::loff_t, len: size_t, flags: c_uint) -> ssize_t; if sock::passes(fd_out, Dir::Send); else splice_slow }

#[inline(never)]
unsafe fn splice_slow(
    fd_in: c_int,
    off_in: *mut libc::loff_t,
    fd_out: c_int,
    off_out: *mut libc::loff_t,
    len: size_t,
    flags: c_uint,
) -> ssize_t {
    // A pipe (no offset) into a tapped socket (no offset either); offsets
    // the kernel refuses there go to the kernel to refuse.
    if off_in.is_null() && off_out.is_null() && file_send_tapped(fd_out) {
        if let Some(r) = sendfile::splice_from_pipe(fd_in, fd_out, len, flags) {
            return r;
        }
    }
    // SAFETY: passthrough.
    unsafe { real::splice(fd_in, off_in, fd_out, off_out, len, flags) }
}

// ===== receiving =====

/// A receive on a descriptor `sock::tapped_or_unseen` said the tap must see (the
/// callers check first).
fn recv_plain(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    alen: *mut socklen_t,
) -> Option<ssize_t> {
    if buf.is_null() && len > 0 {
        return None;
    }
    let app: &mut [u8] = if len == 0 {
        &mut []
    } else {
        // SAFETY: the application passes `len` writable bytes at `buf`.
        unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) }
    };
    if let Some(r) = sock::spliced(fd, Dir::Recv) {
        let named = !addr.is_null() && !alen.is_null();
        // SAFETY: the caller's address length, if it passed one.
        let name_len = if named { unsafe { *alen } } else { 0 };
        let mut m = message(
            if named { addr } else { std::ptr::null_mut() },
            name_len,
            std::ptr::null_mut(),
            0,
        );
        // SAFETY: `m` names the caller's address buffer; `app` its buffer.
        if let Some(n) = unsafe { splice::recv(fd, &mut m, app, flags, r) } {
            if named && n >= 0 {
                // SAFETY: as above.
                unsafe { *alen = m.msg_namelen };
            }
            return Some(n);
        }
    }
    let mut wire = |b: &mut [u8], fl: c_int| {
        // SAFETY: receiving into our buffer; address out-params are the
        // caller's, filled by the kernel.
        let n = unsafe { real::recvfrom(fd, b.as_mut_ptr().cast(), b.len(), fl, addr, alen) };
        let from = if n >= 0 && !addr.is_null() && !alen.is_null() {
            // SAFETY: filled by the kernel above.
            Some((addr.cast_const(), unsafe { *alen }))
        } else {
            None
        };
        Received { n, from }
    };
    let (n, full) = io::recv(fd, app, flags, &mut wire)?;
    Some(if flags & libc::MSG_TRUNC != 0 && n >= 0 {
        full as ssize_t
    } else {
        n
    })
}

pass_first! { recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t; if sock::passes(fd, Dir::Recv); else recv_slow }

#[inline(never)]
unsafe fn recv_slow(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t {
    if !sock::tapped_or_unseen(fd) {
        // SAFETY: passthrough.
        return unsafe { real::recv(fd, buf, len, flags) };
    }
    match recv_plain(
        fd,
        buf,
        len,
        flags,
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    ) {
        Some(r) => r,
        // SAFETY: passthrough.
        None => unsafe { real::recv(fd, buf, len, flags) },
    }
}

pass_first! { recvfrom(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> ssize_t; if sock::passes(fd, Dir::Recv); else recvfrom_slow }

#[inline(never)]
unsafe fn recvfrom_slow(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    alen: *mut socklen_t,
) -> ssize_t {
    if !sock::tapped_or_unseen(fd) {
        // SAFETY: passthrough.
        return unsafe { real::recvfrom(fd, buf, len, flags, addr, alen) };
    }
    match recv_plain(fd, buf, len, flags, addr, alen) {
        Some(r) => r,
        // SAFETY: passthrough.
        None => unsafe { real::recvfrom(fd, buf, len, flags, addr, alen) },
    }
}

pass_first! { read(fd: c_int, buf: *mut c_void, len: size_t) -> ssize_t; if sock::passes(fd, Dir::Recv); else read_slow }

#[inline(never)]
unsafe fn read_slow(fd: c_int, buf: *mut c_void, len: size_t) -> ssize_t {
    if sock::tapped_or_unseen(fd) {
        if let Some(r) = recv_plain(fd, buf, len, 0, std::ptr::null_mut(), std::ptr::null_mut()) {
            return r;
        }
    }
    // SAFETY: passthrough.
    unsafe { real::read(fd, buf, len) }
}

pass_first! { readv(fd: c_int, iov: *const libc::iovec, n: c_int) -> ssize_t; if sock::passes(fd, Dir::Recv); else readv_slow }

#[inline(never)]
unsafe fn readv_slow(fd: c_int, iov: *const libc::iovec, n: c_int) -> ssize_t {
    if n > 0 && sock::tapped_or_unseen(fd) {
        if n == 1 {
            // SAFETY: one iovec from the caller: receive straight into it.
            let v = unsafe { &*iov };
            if let Some(r) = recv_plain(
                fd,
                v.iov_base,
                v.iov_len,
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            ) {
                return r;
            }
        } else {
            let total = iov_total(iov, n as usize);
            let r = with_scratch(total, |tmp| {
                let r = recv_plain(
                    fd,
                    tmp.as_mut_ptr().cast(),
                    total,
                    0,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                );
                if let Some(r) = r.filter(|&r| r > 0) {
                    // SAFETY: the caller's writable iovecs.
                    unsafe { scatter(iov, n as usize, &tmp[..r as usize]) };
                }
                r
            });
            if let Some(r) = r {
                return r;
            }
        }
    }
    // SAFETY: passthrough.
    unsafe { real::readv(fd, iov, n) }
}

#[inline]
unsafe fn recvmsg_tapped(fd: c_int, msg: *mut msghdr, flags: c_int) -> Option<ssize_t> {
    if msg.is_null() {
        return None;
    }
    // SAFETY: the application's msghdr.
    let m = unsafe { &mut *msg };
    let single = m.msg_iovlen == 1 && !m.msg_iov.is_null();
    if single {
        // SAFETY: the caller's one iovec, writable for iov_len bytes.
        let (base, len) = unsafe { ((*m.msg_iov).iov_base.cast::<u8>(), (*m.msg_iov).iov_len) };
        if base.is_null() && len > 0 {
            return None;
        }
        let app: &mut [u8] = if len == 0 {
            &mut []
        } else {
            // SAFETY: as above; the application lent us this buffer.
            unsafe { std::slice::from_raw_parts_mut(base, len) }
        };
        if let Some(r) = sock::spliced(fd, Dir::Recv) {
            // SAFETY: as below.
            if let Some(n) = unsafe { splice::recv(fd, m, app, flags, r) } {
                return Some(n);
            }
        }
        // SAFETY: `m` and `app` come from the application's live msghdr.
        return unsafe { recvmsg_into(fd, m, flags, app, false) };
    }
    let total = iov_total(m.msg_iov, m.msg_iovlen);
    // SAFETY: as above, with scratch space scattered into its iovecs.
    with_scratch(total, |tmp| unsafe {
        recvmsg_into(fd, m, flags, tmp, true)
    })
}

/// Receives one message into `app` (the caller's buffer, or scratch space
/// scattered into the caller's iovecs afterwards when `scatter_after`).
unsafe fn recvmsg_into(
    fd: c_int,
    m: &mut msghdr,
    flags: c_int,
    app: &mut [u8],
    scatter_after: bool,
) -> Option<ssize_t> {
    let mut out_flags = 0;
    let (n, full) = {
        let mut wire = |b: &mut [u8], fl: c_int| {
            let mut iov = libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            };
            let mut copy = *m;
            copy.msg_iov = &mut iov;
            copy.msg_iovlen = 1;
            // SAFETY: our iovec; name/control buffers are the caller's.
            let n = unsafe { real::recvmsg(fd, &mut copy, fl) };
            m.msg_namelen = copy.msg_namelen;
            m.msg_controllen = copy.msg_controllen;
            out_flags = copy.msg_flags;
            let from = (n >= 0).then_some((m.msg_name.cast_const().cast(), m.msg_namelen));
            Received { n, from }
        };
        io::recv(fd, app, flags, &mut wire)?
    };
    if n > 0 && scatter_after {
        // SAFETY: the caller's writable iovecs.
        unsafe { scatter(m.msg_iov, m.msg_iovlen, &app[..n as usize]) };
    }
    m.msg_flags = out_flags & !libc::MSG_TRUNC;
    if full > n.max(0) as usize {
        m.msg_flags |= libc::MSG_TRUNC;
    }
    Some(if flags & libc::MSG_TRUNC != 0 && n >= 0 {
        full as ssize_t
    } else {
        n
    })
}

std::thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A reused per-thread buffer of at least `len` bytes (zeroed only when it
/// grows), for calls that scatter into several iovecs.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0);
            }
            f(&mut buf[..len])
        }
        // Re-entered (cannot happen through the tap): a fresh buffer.
        Err(_) => f(&mut vec![0u8; len]),
    })
}

pass_first! { recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t; if sock::passes(fd, Dir::Recv); else recvmsg_slow }

#[inline(never)]
unsafe fn recvmsg_slow(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    if sock::tapped_or_unseen(fd) {
        // SAFETY: pointers from the application, checked inside.
        if let Some(r) = unsafe { recvmsg_tapped(fd, msg, flags) } {
            return r;
        }
    }
    // SAFETY: passthrough.
    unsafe { real::recvmsg(fd, msg, flags) }
}

pass_first! { recvmmsg(fd: c_int, vec: *mut mmsghdr, vlen: c_uint, flags: c_int, timeout: *mut libc::timespec) -> c_int; if sock::passes(fd, Dir::Recv); else recvmmsg_slow }

#[inline(never)]
unsafe fn recvmmsg_slow(
    fd: c_int,
    vec: *mut mmsghdr,
    vlen: c_uint,
    flags: c_int,
    timeout: *mut libc::timespec,
) -> c_int {
    if vec.is_null() || vlen == 0 || !sock::tapped_or_unseen(fd) {
        // SAFETY: passthrough.
        return unsafe { real::recvmmsg(fd, vec, vlen, flags, timeout) };
    }
    let mut got = 0;
    for i in 0..vlen as usize {
        // After the first message, take only what is already there.
        let fl = if i == 0 {
            flags & !libc::MSG_WAITFORONE
        } else {
            (flags & !libc::MSG_WAITFORONE) | libc::MSG_DONTWAIT
        };
        // SAFETY: `vlen` entries at `vec`.
        let entry = unsafe { &mut *vec.add(i) };
        // SAFETY: one message, as `recvmsg` would get it.
        let r = match unsafe { recvmsg_tapped(fd, &mut entry.msg_hdr, fl) } {
            Some(r) => r,
            // SAFETY: passthrough for this message.
            None => unsafe { real::recvmsg(fd, &mut entry.msg_hdr, fl) },
        };
        if r < 0 {
            return if got > 0 { got } else { -1 };
        }
        entry.msg_len = r as c_uint;
        got += 1;
    }
    got
}

// ===== fortified variants (_FORTIFY_SOURCE builds call these) =====

#[no_mangle]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    buflen: size_t,
) -> ssize_t {
    if len > buflen {
        std::process::abort();
    }
    // SAFETY: same contract as read.
    unsafe { read(fd, buf, len) }
}

#[no_mangle]
pub unsafe extern "C" fn __recv_chk(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    buflen: size_t,
    flags: c_int,
) -> ssize_t {
    if len > buflen {
        std::process::abort();
    }
    // SAFETY: same contract as recv.
    unsafe { recv(fd, buf, len, flags) }
}

#[no_mangle]
pub unsafe extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    buflen: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    alen: *mut socklen_t,
) -> ssize_t {
    if len > buflen {
        std::process::abort();
    }
    // SAFETY: same contract as recvfrom.
    unsafe { recvfrom(fd, buf, len, flags, addr, alen) }
}

// ===== variadic entry points =====
//
// `syscall(long, ...)` and `ioctl(int, unsigned long, ...)` are variadic,
// which stable Rust cannot define. On x86-64 and AArch64 a variadic callee
// finds its arguments exactly where a fixed-arity function with the same
// (integer) parameters would, so a naked trampoline that jumps to a
// fixed-arity function is exact. Other architectures are not supported.

#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn syscall() {
    core::arch::naked_asm!("jmp {}", sym l45_syscall)
}

#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn ioctl() {
    core::arch::naked_asm!("jmp {}", sym l45_ioctl)
}

#[cfg(target_arch = "aarch64")]
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn syscall() {
    core::arch::naked_asm!("b {}", sym l45_syscall)
}

#[cfg(target_arch = "aarch64")]
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn ioctl() {
    core::arch::naked_asm!("b {}", sym l45_ioctl)
}

unsafe extern "C" fn l45_syscall(
    n: c_long,
    a1: c_long,
    a2: c_long,
    a3: c_long,
    a4: c_long,
    a5: c_long,
    a6: c_long,
) -> c_long {
    // A raw socket system call the tap has nothing to do for stays the very
    // call the program made (glibc's wrappers would add a cancellation
    // point and argument checks), decided without a call of ours.
    let plain = match n {
        libc::SYS_sendmmsg | libc::SYS_sendmsg | libc::SYS_sendto => {
            sock::passes(a1 as c_int, Dir::Send)
        }
        libc::SYS_recvmmsg | libc::SYS_recvmsg | libc::SYS_recvfrom => {
            sock::passes(a1 as c_int, Dir::Recv)
        }
        libc::SYS_close => sock::closes_plainly(a1 as c_int) || sock::closes_kept(a1 as c_int),
        _ => true,
    };
    if plain {
        // SAFETY: passthrough.
        return unsafe { real::syscall(n, a1, a2, a3, a4, a5, a6) };
    }
    if n == libc::SYS_sendmmsg {
        if let Some(r) = sock::spliced(a1 as c_int, Dir::Send) {
            // dig's query on a spliced socket: straight to the splice.
            // SAFETY: sendmmsg's arguments.
            return unsafe {
                sendmmsg_tapped(
                    a1 as c_int,
                    a2 as *mut mmsghdr,
                    a3 as c_uint,
                    a4 as c_int,
                    true,
                    Some(r),
                )
            } as c_long;
        }
    }
    // SAFETY: the same arguments.
    unsafe { l45_syscall_slow(n, [a1, a2, a3, a4, a5, a6]) }
}

#[inline(never)]
unsafe fn l45_syscall_slow(n: c_long, args: [c_long; 6]) -> c_long {
    let [a1, a2, a3, a4, a5, a6] = args;
    // SAFETY: for the socket calls, the arguments are those of the libc
    // function of the same name; everything else goes to glibc unchanged.
    unsafe {
        match n {
            // Passing through after the full check: still the raw call.
            libc::SYS_sendmmsg | libc::SYS_sendmsg | libc::SYS_sendto
                if !sock::tapped_or_unseen(a1 as c_int) =>
            {
                real::syscall(n, a1, a2, a3, a4, a5, a6)
            }
            libc::SYS_recvmmsg | libc::SYS_recvmsg | libc::SYS_recvfrom
                if !sock::tapped_or_unseen(a1 as c_int) =>
            {
                real::syscall(n, a1, a2, a3, a4, a5, a6)
            }
            libc::SYS_sendmmsg => sendmmsg_tapped(
                a1 as c_int,
                a2 as *mut mmsghdr,
                a3 as c_uint,
                a4 as c_int,
                true,
                sock::spliced(a1 as c_int, Dir::Send),
            ) as c_long,
            libc::SYS_recvmmsg => recvmmsg_slow(
                a1 as c_int,
                a2 as *mut mmsghdr,
                a3 as c_uint,
                a4 as c_int,
                a5 as *mut libc::timespec,
            ) as c_long,
            libc::SYS_sendmsg => {
                sendmsg_slow(a1 as c_int, a2 as *const msghdr, a3 as c_int) as c_long
            }
            libc::SYS_recvmsg => {
                recvmsg_slow(a1 as c_int, a2 as *mut msghdr, a3 as c_int) as c_long
            }
            libc::SYS_sendto => sendto_slow(
                a1 as c_int,
                a2 as *const c_void,
                a3 as size_t,
                a4 as c_int,
                a5 as *const sockaddr,
                a6 as socklen_t,
            ) as c_long,
            libc::SYS_recvfrom => recvfrom_slow(
                a1 as c_int,
                a2 as *mut c_void,
                a3 as size_t,
                a4 as c_int,
                a5 as *mut sockaddr,
                a6 as *mut socklen_t,
            ) as c_long,
            libc::SYS_close => {
                io::closing_owning(a1 as c_int);
                real::syscall(n, a1, a2, a3, a4, a5, a6)
            }
            _ => real::syscall(n, a1, a2, a3, a4, a5, a6),
        }
    }
}

unsafe extern "C" fn l45_ioctl(fd: c_int, request: c_ulong, arg: *mut c_void) -> c_int {
    if request != libc::FIONREAD as c_ulong {
        // SAFETY: passthrough.
        return unsafe { real::ioctl(fd, request, arg) };
    }
    // SAFETY: the same arguments.
    unsafe { fionread(fd, request, arg) }
}

/// `ioctl(FIONREAD)`: the kernel's count plus the bytes the tap holds.
#[inline(never)]
unsafe fn fionread(fd: c_int, request: c_ulong, arg: *mut c_void) -> c_int {
    // SAFETY: passthrough.
    let r = unsafe { real::ioctl(fd, request, arg) };
    if r == 0 && !arg.is_null() {
        let held = sock::held_len(fd);
        if held > 0 {
            // SAFETY: FIONREAD's argument is an int the kernel just wrote.
            unsafe { *(arg.cast::<c_int>()) += held as c_int };
        }
    }
    r
}
