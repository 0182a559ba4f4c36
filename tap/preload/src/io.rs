//! The data path: sending and receiving through a socket's module chain.
//!
//! Locking rule: a socket's lock (`sock::cell::Cell`) is held only while the chain runs over
//! bytes already in memory. Every call that may block (the real send/recv, a
//! rate-limit delay) happens with no lock held.

use std::cell::RefCell;

use l45_modules::Role;
use l45_tap_engine::{RecvOutcome, SendOutcome};
use libc::{c_int, ssize_t};

use l45_modules::SocketState;
use l45_tap_shm::MAX_CHAIN;

use crate::process;
use crate::sock;
use crate::stats::{credit, credit_drop, credit_error};
use crate::sys::{errno, nonblocking, set_errno};
use crate::unacked;

thread_local! {
    /// The thread's buffers; borrowed for as long as the thread is inside
    /// the tap, so one thread-local access both finds them and tells a
    /// nested call (a signal handler's, or our own libc calls) to go
    /// straight through.
    static THREAD: RefCell<Bufs> = const { RefCell::new(Bufs { wire: Vec::new(), out: Vec::new() }) };
}

pub struct Bufs {
    wire: Vec<u8>,
    out: Vec<u8>,
}

/// Runs `f` with the thread's buffers, marking the thread as inside the
/// tap; `None` if it already is (or is exiting).
#[inline]
fn inside<R>(f: impl FnOnce(&mut Bufs) -> Option<R>) -> Option<R> {
    THREAD
        .try_with(|t| {
            let mut b = t.try_borrow_mut().ok()?;
            f(&mut b)
        })
        .ok()
        .flatten()
}

/// Largest datagram (UDP over IPv6 jumbograms aside).
const MAX_DATAGRAM: usize = 65536;

/// Writes all of `bytes` with `send_wire`; returns how many were written
/// and the errno that stopped it early.
fn send_all(bytes: &[u8], send_wire: &mut dyn FnMut(&[u8]) -> ssize_t) -> (usize, Option<c_int>) {
    let mut done = 0;
    while done < bytes.len() {
        let r = send_wire(&bytes[done..]);
        if r < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return (done, Some(e));
        }
        done += r as usize;
    }
    (done, None)
}

/// Datagrams whose customized form fits this many bytes are customized in
/// a buffer on the stack (a DNS query and its tag, say): the common case
/// takes no thread-local and touches no buffer of ours.
const STACK_DATAGRAM: usize = 1024;

/// Most datagrams sent customized fit this (DNS queries with their tags).
const SMALL_DATAGRAM: usize = 128;

/// Sends `data` (the application's bytes) on `fd`. `None`: the socket is
/// not tapped or nothing customizes it; the caller makes the original call.
/// `dest` is the explicit destination of a `sendto`/`sendmsg`, if any.
pub fn send(
    fd: c_int,
    data: &[u8],
    _flags: c_int,
    dest: Option<std::net::SocketAddr>,
    send_wire: &mut impl FnMut(&[u8]) -> ssize_t,
) -> Option<ssize_t> {
    let cell = sock::lookup(fd)?;
    let mut g = cell.lock();
    let s = g.as_mut()?;
    let plain_datagram = sock::in_step(s) && !s.stream && !s.chain.has_delay;
    if plain_datagram && s.chain.is_empty() {
        return None;
    }
    let cap = s.chain.datagram_send_capacity(data.len());
    if !plain_datagram || cap > STACK_DATAGRAM {
        // Matching, a new generation, streams, rate limits, large
        // datagrams: inside the thread-local guard (the parsed table's
        // lock, allocations), so a signal handler's call meanwhile passes
        // straight through.
        drop(g);
        return inside(|b| send_in(cell, fd, data, dest, send_wire, b));
    }
    // A small datagram on a socket in step: the chain writes into a buffer
    // on the stack, the socket lock is released, and the bytes go to the
    // kernel from there. Only async-signal-safe work happens here.
    // A query and its tag, say, fit the small buffer, which a few inline
    // stores zero (no call into memset: one more piece of code to fetch
    // per message in a busy program); larger ones zero only what they use.
    let mut small = [0u8; SMALL_DATAGRAM];
    let mut large = std::mem::MaybeUninit::<[u8; STACK_DATAGRAM]>::uninit();
    let out: &mut [u8] = if cap <= SMALL_DATAGRAM {
        &mut small[..cap]
    } else {
        // SAFETY: `cap` ≤ the buffer's size; those bytes are zeroed before
        // the slice is made over them, and only they are in it.
        unsafe {
            let p = large.as_mut_ptr().cast::<u8>();
            p.write_bytes(0, cap);
            std::slice::from_raw_parts_mut(p, cap)
        }
    };
    let decided = customize_send_slice(s, data, out)?;
    drop(g);
    Some(send_datagram(decided, out, data.len(), send_wire))
}

/// The general send, inside the guard with the thread's buffers: first
/// sight and chain refreshes, streams, rate limits, large datagrams.
fn send_in(
    cell: sock::Rec,
    fd: c_int,
    data: &[u8],
    dest: Option<std::net::SocketAddr>,
    send_wire: &mut impl FnMut(&[u8]) -> ssize_t,
    b: &mut Bufs,
) -> Option<ssize_t> {
    let mut g = cell.lock();
    let s = g.as_mut()?;
    if !s.matched && !s.stream && s.remote.is_none() {
        s.remote = dest;
    }
    sock::sync(fd, s, Role::Client);
    if s.stream {
        if s.chain.is_empty() && s.pending.is_empty() && !unacked::has(fd) {
            return None;
        }
        return send_stream_locked(
            cell,
            fd,
            AppBytes::new(std::slice::from_ref(&data)),
            g,
            send_wire,
            b,
        );
    }
    if s.chain.is_empty() {
        return None;
    }
    if s.chain.has_delay {
        return send_delayed_datagram(cell, data, g, send_wire, b);
    }
    let decided = customize_send(s, data, &mut b.out)?;
    drop(g);
    Some(send_datagram(decided, &b.out, data.len(), send_wire))
}

/// A stream send of the application's bytes `parts` (a `writev`'s or
/// `sendmsg`'s buffers, read where they are). `None`: the socket is not
/// tapped or nothing customizes it; the caller makes the original call.
pub fn send_stream(
    fd: c_int,
    parts: &[&[u8]],
    send_wire: &mut impl FnMut(&[u8]) -> ssize_t,
) -> Option<ssize_t> {
    let cell = sock::lookup(fd)?;
    inside(|b| {
        let mut g = cell.lock();
        let s = g.as_mut()?;
        if !s.stream {
            return None;
        }
        sock::sync(fd, s, Role::Client);
        if s.chain.is_empty() && s.pending.is_empty() && !unacked::has(fd) {
            return None;
        }
        send_stream_locked(cell, fd, AppBytes::new(parts), g, send_wire, b)
    })
}

/// Sends a customized datagram (or drops it) and accounts for it; the
/// application sees its own length sent.
#[inline]
fn send_datagram(
    (len, slot, id): (Option<usize>, usize, u32),
    out: &[u8],
    app_len: usize,
    send_wire: &mut impl FnMut(&[u8]) -> ssize_t,
) -> ssize_t {
    let Some(len) = len else {
        credit_drop(slot, id);
        return app_len as ssize_t;
    };
    credit(slot, id, true, app_len);
    let r = send_wire(&out[..len]);
    if r < 0 {
        credit_error(slot, id);
        return r;
    }
    app_len as ssize_t
}

/// Runs the socket's send chain over `data` into `out` (grown as needed).
/// `None`: nothing customizes it (send the application's bytes); else the
/// length to send (`None`: dropped) and the deciding module's statistics
/// slot and id.
#[inline]
fn customize_send(
    s: &mut sock::Sock,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Option<(Option<usize>, usize, u32)> {
    let (ctx, chain) = s.ctx_and_chain();
    let outcome = chain.send(&ctx, data, out);
    decided(chain, outcome)
}

/// `customize_send` into a buffer of at least the chain's capacity.
#[inline]
fn customize_send_slice(
    s: &mut sock::Sock,
    data: &[u8],
    out: &mut [u8],
) -> Option<(Option<usize>, usize, u32)> {
    let (ctx, chain) = s.ctx_and_chain();
    let outcome = chain.send_slice(&ctx, data, out);
    decided(chain, outcome)
}

#[inline]
fn decided(
    chain: &l45_tap_engine::Chain,
    outcome: SendOutcome,
) -> Option<(Option<usize>, usize, u32)> {
    let (len, by) = match outcome {
        SendOutcome::Original => return None,
        SendOutcome::Drop { by } => (None, by),
        SendOutcome::Customized { len, by } => (Some(len), by),
    };
    Some((len, chain.entries[by].slot, chain.entries[by].id))
}

/// A datagram through a rate limit: the wait happens without the lock.
#[inline(never)]
fn send_delayed_datagram(
    cell: sock::Rec,
    data: &[u8],
    mut g: sock::RecGuard,
    send_wire: &mut dyn FnMut(&[u8]) -> ssize_t,
    b: &mut Bufs,
) -> Option<ssize_t> {
    let s = g.as_mut()?;
    if let Some((ms, by)) = s.chain.send_delay() {
        let (slot, id) = (s.chain.entries[by].slot, s.chain.entries[by].id);
        drop(g);
        std::thread::sleep(std::time::Duration::from_millis(u64::from(ms)));
        credit(slot, id, true, data.len());
        g = cell.lock();
    }
    let s = g.as_mut()?;
    let (len, slot, id) = customize_send(s, data, &mut b.out)?;
    drop(g);
    let Some(len) = len else {
        credit_drop(slot, id);
        return Some(data.len() as ssize_t);
    };
    credit(slot, id, true, data.len());
    let r = send_wire(&b.out[..len]);
    if r < 0 {
        credit_error(slot, id);
        return Some(r);
    }
    Some(data.len() as ssize_t)
}

/// The application's bytes for one stream send, in order: one buffer or
/// the buffers of a `writev`/`sendmsg`, read where they are (a large
/// vectored send retried after a short count is not copied whole again).
#[derive(Clone, Copy)]
pub struct AppBytes<'a> {
    parts: &'a [&'a [u8]],
    len: usize,
}

impl<'a> AppBytes<'a> {
    pub fn new(parts: &'a [&'a [u8]]) -> AppBytes<'a> {
        AppBytes {
            parts,
            len: parts.iter().map(|p| p.len()).sum(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes `at..at + n` (within `len`): borrowed when they lie in one
    /// buffer, else copied into `scratch`.
    fn range<'b>(&'b self, at: usize, n: usize, scratch: &'b mut Vec<u8>) -> &'b [u8] {
        let mut skip = at;
        let mut parts = self.parts.iter();
        for p in parts.by_ref() {
            if skip < p.len() {
                if p.len() - skip >= n {
                    return &p[skip..skip + n];
                }
                scratch.clear();
                scratch.extend_from_slice(&p[skip..]);
                break;
            }
            skip -= p.len();
        }
        for p in parts {
            if scratch.len() >= n {
                break;
            }
            let k = p.len().min(n - scratch.len());
            scratch.extend_from_slice(&p[..k]);
        }
        scratch.truncate(n);
        scratch
    }

    /// Whether the bytes start with `prefix` (as far as they go).
    fn starts_with(&self, prefix: &[u8]) -> bool {
        let mut at = 0;
        for p in self.parts {
            if at == prefix.len() {
                break;
            }
            let k = p.len().min(prefix.len() - at);
            if p[..k] != prefix[at..at + k] {
                return false;
            }
            at += k;
        }
        true
    }
}

/// Application bytes the chain takes per call on a stream. The most a
/// send the kernel refused part of leaves for the application to retry.
const STREAM_CHUNK: usize = 64 * 1024;

/// The chain's per-socket module states, to undo the chain's work on a
/// chunk the kernel took nothing of.
struct States {
    n: usize,
    ids: [u32; MAX_CHAIN],
    states: [SocketState; MAX_CHAIN],
}

impl States {
    fn of(chain: &l45_tap_engine::Chain) -> Option<States> {
        if chain.entries.len() > MAX_CHAIN {
            return None;
        }
        let mut s = States {
            n: chain.entries.len(),
            ids: [0; MAX_CHAIN],
            states: [SocketState::default(); MAX_CHAIN],
        };
        for (i, a) in chain.entries.iter().enumerate() {
            s.ids[i] = a.id;
            s.states[i] = a.state;
        }
        Some(s)
    }

    fn same(&self, chain: &l45_tap_engine::Chain) -> bool {
        self.n == chain.entries.len()
            && chain
                .entries
                .iter()
                .enumerate()
                .all(|(i, a)| a.id == self.ids[i] && a.state == self.states[i])
    }

    fn restore(&self, chain: &mut l45_tap_engine::Chain) {
        for (i, a) in chain.entries.iter_mut().enumerate().take(self.n) {
            a.state = self.states[i];
        }
    }
}

/// A send on a stream: tags across sends, the rate limit's wait (without
/// the lock), and partial sends.
///
/// The application is told exactly the bytes whose customized form the
/// kernel took whole. The chain runs over a chunk at a time; a chunk the
/// kernel takes nothing of is undone (module states put back), one it
/// takes part of keeps the rest of its customized form in `pending` and
/// its own bytes in `unacked`, and is not counted: the application sends
/// those bytes again (its retry after a short count or EAGAIN), and the
/// next send recognises them, sends what is pending first and counts them
/// then, without running the chain over them again.
#[inline(never)]
fn send_stream_locked(
    cell: sock::Rec,
    fd: c_int,
    app: AppBytes<'_>,
    mut g: sock::RecGuard,
    send_wire: &mut dyn FnMut(&[u8]) -> ssize_t,
    b: &mut Bufs,
) -> Option<ssize_t> {
    let Bufs { wire: scratch, out } = b;
    let s = g.as_mut()?;
    if let Some((ms, by)) = s.chain.send_delay() {
        let (slot, id) = (s.chain.entries[by].slot, s.chain.entries[by].id);
        drop(g);
        std::thread::sleep(std::time::Duration::from_millis(u64::from(ms)));
        credit(slot, id, true, app.len());
        g = cell.lock();
    }
    let s = g.as_mut()?;
    let peer = s.remote;
    let mut done = 0usize;
    // What an earlier send left: the rest of a chunk's customized form
    // goes first, and the application's bytes it stood for count now.
    let taken = unacked::take(fd, peer);
    if !s.pending.is_empty() {
        let pending = std::mem::take(&mut s.pending);
        drop(g);
        let (sent, err) = send_all(&pending, send_wire);
        g = cell.lock();
        let s = g.as_mut()?;
        if let Some(e) = err {
            let mut rest = pending[sent..].to_vec();
            rest.extend_from_slice(&s.pending);
            s.pending = rest;
            if let Some(t) = taken {
                unacked::put(fd, peer, t);
            }
            set_errno(e);
            return Some(-1);
        }
    }
    if let Some(t) = taken {
        if app.starts_with(&t) {
            // The application's retry of those bytes: they are out now.
            done = t.len().min(app.len());
            if done < t.len() {
                unacked::put(fd, peer, t[done..].to_vec());
                return Some(done as ssize_t);
            }
        }
        // Else the application sent something else instead of its refused
        // bytes; what the chain made of them is out regardless (a limit,
        // docs/user-space-tap.md).
    }
    while done < app.len() {
        let Some(s) = g.as_mut() else {
            // Closed meanwhile (by another thread).
            if done > 0 {
                break;
            }
            set_errno(libc::EBADF);
            return Some(-1);
        };
        let n = STREAM_CHUNK.min(app.len() - done);
        let input = app.range(done, n, scratch);
        let before = States::of(&s.chain);
        let (ctx, chain) = s.ctx_and_chain();
        let (bytes, by): (&[u8], Option<usize>) = match chain.send(&ctx, input, out) {
            SendOutcome::Original => (input, None),
            SendOutcome::Customized { len, by } => (&out[..len], Some(by)),
            SendOutcome::Drop { by } => {
                credit_drop(chain.entries[by].slot, chain.entries[by].id);
                done += n;
                continue;
            }
        };
        let decider = by.map(|by| (chain.entries[by].slot, chain.entries[by].id));
        let after = States::of(chain);
        drop(g);
        let (sent, err) = send_all(bytes, send_wire);
        g = cell.lock();
        let Some(e) = err else {
            if let Some((slot, id)) = decider {
                credit(slot, id, true, n);
            }
            done += n;
            continue;
        };
        let s = g.as_mut();
        let undone = match (s, sent, before, after) {
            // The kernel took nothing: neither did the chain, unless another
            // thread's send ran it meanwhile.
            (Some(s), 0, Some(before), Some(after)) if after.same(&s.chain) => {
                before.restore(&mut s.chain);
                true
            }
            _ => false,
        };
        if !undone {
            if let Some(s) = g.as_mut() {
                let mut rest = s.pending.split_off(0);
                s.pending = bytes[sent..].to_vec();
                s.pending.append(&mut rest);
                unacked::put(fd, peer, input.to_vec());
            }
            if let Some((slot, id)) = decider {
                credit(slot, id, true, n);
            }
        }
        if e != libc::EAGAIN && e != libc::EWOULDBLOCK {
            if let Some((slot, id)) = decider {
                credit_error(slot, id);
            }
        }
        if done > 0 {
            return Some(done as ssize_t);
        }
        set_errno(e);
        return Some(-1);
    }
    Some(done as ssize_t)
}

/// What a real receive returned.
pub struct Received {
    pub n: ssize_t,
    /// Source of a datagram, if the call reports it: the caller's address
    /// buffer as the kernel filled it, read only if first sight needs it.
    pub from: Option<(*const libc::sockaddr, libc::socklen_t)>,
}

impl Received {
    fn peer(&self) -> Option<std::net::SocketAddr> {
        let (addr, len) = self.from?;
        sock::sockaddr_to_std(addr, len)
    }
}

/// Receives into `app` through the chain. `recv_wire` does the real call
/// into the buffer it is given (filling the caller's address/control
/// buffers itself). `None`: untapped, the caller makes the original call.
/// On success returns (bytes delivered, bytes the datagram really had).
pub fn recv(
    fd: c_int,
    app: &mut [u8],
    flags: c_int,
    recv_wire: &mut impl FnMut(&mut [u8], c_int) -> Received,
) -> Option<(ssize_t, usize)> {
    let cell = sock::lookup(fd)?;
    if !cell.is_stream() {
        if flags & libc::MSG_PEEK != 0 || process::generation().is_none() {
            // Datagram peeks see the wire form (documented); without the
            // control area nothing customizes.
            return None;
        }
        return inside(|b| recv_datagram(cell, fd, app, flags, recv_wire, b));
    }
    inside(|b| recv_stream(cell, fd, app, flags, recv_wire, b))
}

/// A datagram through the chain: received into the thread's buffer and
/// customized under one lock (taken after the receive, which may block).
/// A socket whose chain turns out empty (its generation moved on, say)
/// gets the datagram as it came.
fn recv_datagram(
    cell: sock::Rec,
    fd: c_int,
    app: &mut [u8],
    flags: c_int,
    recv_wire: &mut impl FnMut(&mut [u8], c_int) -> Received,
    b: &mut Bufs,
) -> Option<(ssize_t, usize)> {
    if b.wire.len() < MAX_DATAGRAM {
        // Zeroed by the allocator (fresh pages are zero already): a
        // `resize` would write, and fault in, all 64 KiB.
        b.wire = vec![0; MAX_DATAGRAM];
    }
    loop {
        let r = recv_wire(&mut b.wire[..MAX_DATAGRAM], flags);
        if r.n < 0 {
            return Some((-1, 0));
        }
        let n = r.n as usize;
        let mut g = cell.lock();
        if g.nested() {
            // This thread is inside a call on this socket already (a
            // signal handler's receive): the datagram as it came.
            let k = app.len().min(n);
            app[..k].copy_from_slice(&b.wire[..k]);
            return Some((k as ssize_t, n));
        }
        let Some(s) = g.as_mut() else {
            set_errno(libc::EBADF);
            return Some((-1, 0));
        };
        if !s.matched && s.remote.is_none() {
            s.remote = r.peer();
        }
        sock::sync(fd, s, Role::Server);
        let growth = s.chain.recv_growth();
        let (ctx, chain) = s.ctx_and_chain();
        let wire = &b.wire[..n];
        // The chain writes straight into the application's buffer when the
        // result surely fits (the usual case), else into ours.
        let direct = app.len() >= n + growth;
        let outcome = if direct {
            chain.recv_slice(&ctx, wire, &mut app[..n + growth])
        } else {
            chain.recv(&ctx, wire, &mut b.out)
        };
        match outcome {
            RecvOutcome::Original => {
                let k = app.len().min(n);
                app[..k].copy_from_slice(&wire[..k]);
                return Some((k as ssize_t, n));
            }
            RecvOutcome::Customized { len, by } => {
                credit(chain.entries[by].slot, chain.entries[by].id, false, n);
                if direct {
                    return Some((len as ssize_t, len));
                }
                let k = app.len().min(len);
                app[..k].copy_from_slice(&b.out[..k]);
                return Some((k as ssize_t, len));
            }
            RecvOutcome::Drop { by } => {
                credit_drop(chain.entries[by].slot, chain.entries[by].id);
                drop(g);
                if nonblocking(fd, flags) {
                    set_errno(libc::EAGAIN);
                    return Some((-1, 0));
                }
            }
        }
    }
}

/// A stream read through the chain (held bytes first; tags may arrive
/// split over reads).
fn recv_stream(
    cell: sock::Rec,
    fd: c_int,
    app: &mut [u8],
    flags: c_int,
    recv_wire: &mut dyn FnMut(&mut [u8], c_int) -> Received,
    b: &mut Bufs,
) -> Option<(ssize_t, usize)> {
    let peek = flags & libc::MSG_PEEK != 0;
    let waitall = flags & libc::MSG_WAITALL != 0;
    let mut delivered = 0usize;
    loop {
        let mut g = cell.lock();
        let s = g.as_mut()?;
        if s.stream || s.matched {
            sock::sync(fd, s, Role::Server);
        }
        if !s.held.is_empty() {
            delivered += s.take_held(&mut app[delivered..], peek);
            if !waitall || delivered == app.len() || peek {
                return Some((delivered as ssize_t, delivered));
            }
        }
        if s.matched && s.chain.is_empty() {
            if delivered > 0 {
                // Finish a MSG_WAITALL read without the chain.
                drop(g);
                let r = recv_wire(&mut app[delivered..], flags);
                return Some(if r.n < 0 {
                    (delivered as ssize_t, delivered)
                } else {
                    let t = delivered + r.n as usize;
                    (t as ssize_t, t)
                });
            }
            return None;
        }
        if !s.stream && peek {
            return None; // datagram peeks see the wire form (documented)
        }
        if process::shm().is_none() {
            s.matched = true;
            return None;
        }
        let stream = s.stream;
        let growth = s.chain.recv_growth();
        drop(g);

        let result = (|| {
            let mut want = if stream {
                app.len() - delivered
            } else {
                MAX_DATAGRAM
            };
            // Large stream reads: read a little less than asked so the chain
            // can write straight into the application's buffer.
            let direct = stream && !peek && want > 4 * growth && growth > 0;
            if direct {
                want -= growth;
            }
            if b.wire.len() < want {
                b.wire.resize(want, 0);
            }
            let r = recv_wire(&mut b.wire[..want], flags & !libc::MSG_PEEK);
            if r.n < 0 {
                return Err(errno());
            }
            let n = r.n as usize;
            let mut g = cell.lock();
            let Some(s) = g.as_mut() else {
                return Err(libc::EBADF);
            };
            if !s.matched {
                if s.remote.is_none() {
                    s.remote = r.peer();
                }
                sock::sync(fd, s, Role::Server);
            }
            let (ctx, chain) = s.ctx_and_chain();
            if direct && n > 0 && chain.recv_growth() <= growth {
                let room = &mut app[delivered..];
                let k = match chain.recv_slice(&ctx, &b.wire[..n], room) {
                    RecvOutcome::Original => {
                        room[..n].copy_from_slice(&b.wire[..n]);
                        n
                    }
                    RecvOutcome::Customized { len, by } => {
                        credit(chain.entries[by].slot, chain.entries[by].id, false, n);
                        len
                    }
                    RecvOutcome::Drop { by } => {
                        credit_drop(chain.entries[by].slot, chain.entries[by].id);
                        0
                    }
                };
                return Ok(Step::Got(k, k));
            }
            let (bytes, by): (&[u8], Option<usize>) = if stream && n == 0 {
                let k = chain.recv_eof(&mut b.out);
                (&b.out[..k], None)
            } else {
                match chain.recv(&ctx, &b.wire[..n], &mut b.out) {
                    RecvOutcome::Original => (&b.wire[..n], None),
                    RecvOutcome::Customized { len, by } => (&b.out[..len], Some(by)),
                    RecvOutcome::Drop { by } => {
                        credit_drop(chain.entries[by].slot, chain.entries[by].id);
                        return Ok(Step::Dropped);
                    }
                }
            };
            if let Some(by) = by {
                credit(chain.entries[by].slot, chain.entries[by].id, false, n);
            }
            if stream && n == 0 && bytes.is_empty() {
                return Ok(Step::Eof);
            }
            let room = &mut app[delivered..];
            let k = room.len().min(bytes.len());
            room[..k].copy_from_slice(&bytes[..k]);
            if stream {
                if bytes.len() > k || peek {
                    let mut keep = if peek {
                        bytes[..k].to_vec()
                    } else {
                        Vec::new()
                    };
                    keep.extend_from_slice(&bytes[k..]);
                    let mut all = s.held.clone();
                    all.extend_from_slice(&keep);
                    s.set_held(&all);
                }
                Ok(Step::Got(k, k))
            } else {
                Ok(Step::Got(k, bytes.len()))
            }
        })();
        match result {
            Err(e) => {
                if delivered > 0 {
                    return Some((delivered as ssize_t, delivered));
                }
                set_errno(e);
                return Some((-1, 0));
            }
            Ok(Step::Eof) => return Some((delivered as ssize_t, delivered)),
            Ok(Step::Got(k, full)) => {
                delivered += k;
                if !stream {
                    return Some((delivered as ssize_t, full));
                }
                if k == 0 || (waitall && delivered < app.len() && !peek) {
                    // Only tag bytes arrived (or MSG_WAITALL wants more).
                    if k == 0 && nonblocking(fd, flags) && delivered == 0 {
                        set_errno(libc::EAGAIN);
                        return Some((-1, 0));
                    }
                    if delivered > 0 && !waitall {
                        return Some((delivered as ssize_t, delivered));
                    }
                    continue;
                }
                return Some((delivered as ssize_t, delivered));
            }
            Ok(Step::Dropped) => {
                if nonblocking(fd, flags) {
                    set_errno(libc::EAGAIN);
                    return Some((-1, 0));
                }
                continue;
            }
        }
    }
}

enum Step {
    Got(usize, usize),
    Eof,
    Dropped,
}

/// TCP connect or accept, or UDP connect: record the role and peer, and
/// match the socket now (first sight).
pub fn established(fd: c_int, role: Role, peer: Option<std::net::SocketAddr>) {
    let Some(cell) = sock::lookup(fd) else { return };
    // The peer-port filter decides most connects before the guard: it
    // makes no call at all. Asking the parsed table (a lock, maybe reading
    // the control area) happens inside it. A record holding a parked chain
    // decides itself (`sock::unpark`).
    if let (Role::Client, Some(remote)) = (role, peer) {
        if sock::resume(fd, remote) {
            return;
        }
        if sock::has_parked(fd) {
            // Taking a parked chain over reads no parsed table and
            // allocates nothing (async-signal-safe work): no guard needed.
            // If it does not fit, first sight runs below, inside the guard.
            let mut g = cell.lock();
            if let Some(s) = g.as_mut().filter(|s| !s.stream) {
                s.role = Some(role);
                s.remote = peer;
                if sock::unpark(fd, s, remote.port()) {
                    return;
                }
            }
        } else {
            let settled = match sock::sight_by_filter(fd, remote) {
                Some(settled) => settled,
                None => inside(|_| Some(sock::sight_by_table(fd, remote))) == Some(true),
            };
            if settled {
                return;
            }
        }
    }
    inside(|_| {
        let mut g = cell.lock();
        let s = g.as_mut()?;
        s.role = Some(role);
        if peer.is_some() {
            s.remote = peer;
        }
        let udp_client = match (role, peer) {
            (Role::Client, Some(remote)) if !s.stream => Some(remote.port()),
            _ => None,
        };
        if let Some(port) = udp_client {
            if sock::unpark(fd, s, port) {
                return Some(());
            }
        }
        let first_sight = !s.matched;
        // First sight: a TCP socket when it connects or is accepted; a UDP
        // socket when it connects to a peer (else at its first send or
        // receive). Matching here, where the peer is known anyway, lets the
        // data calls that follow take the pass-through path from the start.
        if s.stream || peer.is_some() {
            sock::sync(fd, s, role);
        }
        if let Some(port) = udp_client {
            // This connect was the socket's first sight, and the peer-port
            // filter decided it: the next socket on this number connecting
            // to the same port at this generation may take the chain over.
            let generation = s.chain.generation;
            if first_sight
                && s.matched
                && !s.chain.is_empty()
                && process::generation() == Some(generation)
                && process::udp_peer_attaches(generation, port) == Some(true)
            {
                let key = sock::ChainKey {
                    generation,
                    peer_port: port,
                    pid: process::pid(),
                    pass_bits: sock::pass_bits(fd),
                };
                sock::arm_sticky(fd, s, &key);
                s.reusable = Some(key);
            }
        }
        Some(())
    });
}

/// `close`: detach the socket (best-effort flush of pending bytes first,
/// while the descriptor is still open).
pub fn closing(fd: c_int) {
    unacked::forget(fd);
    flush_last(fd, sock::closed(fd));
}

/// `closing` for a descriptor `sock::closes_plainly` just said no to.
pub fn closing_owning(fd: c_int) {
    unacked::forget(fd);
    flush_last(fd, sock::closed_owning(fd));
}

/// Best-effort last flush of the bytes a closing socket still had pending.
#[inline]
fn flush_last(fd: c_int, pending: Vec<u8>) {
    if !pending.is_empty() {
        flush_pending(fd, pending);
    }
}

#[cold]
fn flush_pending(fd: c_int, pending: Vec<u8>) {
    inside(|_| {
        let mut send_wire = |b: &[u8]| {
            // SAFETY: sending from a live buffer on a descriptor the
            // application is closing (still open here).
            unsafe { crate::real::send(fd, b.as_ptr().cast(), b.len(), libc::MSG_NOSIGNAL) }
        };
        send_all(&pending, &mut send_wire);
        Some(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_bytes_ranges_across_buffers() {
        let parts: [&[u8]; 4] = [b"ab", b"", b"cdef", b"g"];
        let app = AppBytes::new(&parts);
        assert_eq!(app.len(), 7);
        let mut scratch = Vec::new();
        for at in 0..7 {
            for n in 0..=(7 - at) {
                assert_eq!(
                    app.range(at, n, &mut scratch),
                    &b"abcdefg"[at..at + n],
                    "{at}+{n}"
                );
            }
        }
        // Inside one buffer: borrowed, the scratch buffer untouched.
        scratch.clear();
        assert_eq!(app.range(3, 2, &mut scratch), b"de");
        assert!(scratch.is_empty());
    }

    #[test]
    fn app_bytes_prefixes() {
        let parts: [&[u8]; 3] = [b"ab", b"cd", b"e"];
        let app = AppBytes::new(&parts);
        assert!(app.starts_with(b""));
        assert!(app.starts_with(b"abc"));
        assert!(app.starts_with(b"abcde"));
        // Longer than the bytes: as far as they go (a shorter retry).
        assert!(app.starts_with(b"abcdefgh"));
        assert!(!app.starts_with(b"abd"));
        assert!(!app.starts_with(b"abcdx"));
    }
}
