//! Readiness with held bytes: a socket whose received bytes the tap holds is
//! readable even if the kernel has nothing, so `poll`, `ppoll`, `select` and
//! `epoll_wait` report it. While no socket holds bytes (the usual case)
//! these go straight to libc.

use std::sync::atomic::Ordering;

use libc::{c_int, nfds_t, pollfd};

use crate::real;
use crate::real::HOT;
use crate::sock;

fn any_held() -> bool {
    HOT.held_sockets.load(Ordering::Relaxed) > 0
}

/// Marks held sockets readable in `fds`; returns how many were marked.
unsafe fn mark_poll(fds: *mut pollfd, n: nfds_t) -> usize {
    if fds.is_null() {
        return 0;
    }
    // SAFETY: the application's array of `n` pollfds.
    let fds = unsafe { std::slice::from_raw_parts_mut(fds, n as usize) };
    let mut marked = 0;
    for p in fds.iter_mut() {
        if p.events & libc::POLLIN != 0 && sock::held_len(p.fd) > 0 {
            marked += 1;
        }
    }
    marked
}

unsafe fn finish_poll(fds: *mut pollfd, n: nfds_t, r: c_int) -> c_int {
    if r < 0 {
        return r;
    }
    // SAFETY: as in `mark_poll`.
    let fds = unsafe { std::slice::from_raw_parts_mut(fds, n as usize) };
    let mut count = 0;
    for p in fds.iter_mut() {
        if p.events & libc::POLLIN != 0 && sock::held_len(p.fd) > 0 {
            p.revents |= libc::POLLIN;
        }
        if p.revents != 0 {
            count += 1;
        }
    }
    count
}

pass_first! { poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int; if !any_held(); else poll_slow }

#[inline(never)]
unsafe fn poll_slow(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int {
    // SAFETY: passthrough, or a zero-timeout poll plus held sockets.
    unsafe {
        if !any_held() || mark_poll(fds, n) == 0 {
            return real::poll(fds, n, timeout);
        }
        let r = real::poll(fds, n, 0);
        finish_poll(fds, n, r)
    }
}

#[no_mangle]
pub unsafe extern "C" fn __poll_chk(
    fds: *mut pollfd,
    n: nfds_t,
    timeout: c_int,
    _len: usize,
) -> c_int {
    // SAFETY: same contract as poll.
    unsafe { poll(fds, n, timeout) }
}

pass_first! { ppoll(fds: *mut pollfd, n: nfds_t, tmo: *const libc::timespec, mask: *const libc::sigset_t) -> c_int; if !any_held(); else ppoll_slow }

#[inline(never)]
unsafe fn ppoll_slow(
    fds: *mut pollfd,
    n: nfds_t,
    tmo: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    // SAFETY: as in `poll`.
    unsafe {
        if !any_held() || mark_poll(fds, n) == 0 {
            return real::ppoll(fds, n, tmo, mask);
        }
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let r = real::ppoll(fds, n, &zero, mask);
        finish_poll(fds, n, r)
    }
}

pass_first! { select(n: c_int, r: *mut libc::fd_set, w: *mut libc::fd_set, e: *mut libc::fd_set, t: *mut libc::timeval) -> c_int; if !any_held(); else select_slow }

#[inline(never)]
unsafe fn select_slow(
    n: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    t: *mut libc::timeval,
) -> c_int {
    // SAFETY: fd_set bits within `n`, as select itself requires.
    unsafe {
        if !any_held() || r.is_null() {
            return real::select(n, r, w, e, t);
        }
        let held: Vec<c_int> = (0..n.min(libc::FD_SETSIZE as c_int))
            .filter(|&fd| libc::FD_ISSET(fd, r) && sock::held_len(fd) > 0)
            .collect();
        if held.is_empty() {
            return real::select(n, r, w, e, t);
        }
        let mut zero = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        let res = real::select(n, r, w, e, &mut zero);
        if res < 0 {
            return res;
        }
        for &fd in &held {
            libc::FD_SET(fd, r);
        }
        let mut count = 0;
        for fd in 0..n.min(libc::FD_SETSIZE as c_int) {
            for set in [r, w, e] {
                if !set.is_null() && libc::FD_ISSET(fd, set) {
                    count += 1;
                }
            }
        }
        count
    }
}

pass_first! { epoll_ctl(epfd: c_int, op: c_int, fd: c_int, ev: *mut libc::epoll_event) -> c_int; if sock::known_not_stream(fd); else epoll_ctl_slow }

#[inline(never)]
unsafe fn epoll_ctl_slow(epfd: c_int, op: c_int, fd: c_int, ev: *mut libc::epoll_event) -> c_int {
    if !sock::is_stream(fd) {
        // SAFETY: passthrough (the common case: nothing to remember).
        return unsafe { real::epoll_ctl(epfd, op, fd, ev) };
    }
    // SAFETY: passthrough.
    let r = unsafe { real::epoll_ctl(epfd, op, fd, ev) };
    if r == 0 {
        let event = if op != libc::EPOLL_CTL_DEL && !ev.is_null() {
            // SAFETY: the event the caller registered.
            Some(unsafe { ((*ev).events, (*ev).u64) })
        } else {
            None
        };
        sock::epoll_register(fd, epfd, event);
    }
    r
}

unsafe fn epoll_common(
    epfd: c_int,
    ev: *mut libc::epoll_event,
    max: c_int,
    wait: impl Fn(c_int) -> c_int,
    timeout: c_int,
) -> c_int {
    if !any_held() || ev.is_null() || max <= 0 {
        return wait(timeout);
    }
    let ready = sock::epoll_ready(epfd);
    if ready.is_empty() {
        return wait(timeout);
    }
    let r = wait(0);
    if r < 0 {
        return r;
    }
    // SAFETY: the caller's array of `max` events; we fill at most `max`.
    let events = unsafe { std::slice::from_raw_parts_mut(ev, max as usize) };
    let mut count = r as usize;
    for data in ready {
        if let Some(e) = events[..count].iter_mut().find(|e| e.u64 == data) {
            e.events |= libc::EPOLLIN as u32;
        } else if count < events.len() {
            events[count] = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: data,
            };
            count += 1;
        }
    }
    count as c_int
}

pass_first! { epoll_wait(epfd: c_int, ev: *mut libc::epoll_event, max: c_int, timeout: c_int) -> c_int; if !any_held(); else epoll_wait_slow }

#[inline(never)]
unsafe fn epoll_wait_slow(
    epfd: c_int,
    ev: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
) -> c_int {
    if !any_held() {
        // SAFETY: passthrough.
        return unsafe { real::epoll_wait(epfd, ev, max, timeout) };
    }
    // SAFETY: passthrough with the caller's arguments.
    unsafe {
        epoll_common(
            epfd,
            ev,
            max,
            |t| real::epoll_wait(epfd, ev, max, t),
            timeout,
        )
    }
}

pass_first! { epoll_pwait(epfd: c_int, ev: *mut libc::epoll_event, max: c_int, timeout: c_int, mask: *const libc::sigset_t) -> c_int; if !any_held(); else epoll_pwait_slow }

#[inline(never)]
unsafe fn epoll_pwait_slow(
    epfd: c_int,
    ev: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const libc::sigset_t,
) -> c_int {
    // SAFETY: passthrough with the caller's arguments.
    unsafe {
        epoll_common(
            epfd,
            ev,
            max,
            |t| real::epoll_pwait(epfd, ev, max, t, mask),
            timeout,
        )
    }
}
