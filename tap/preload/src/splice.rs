//! Spliced datagrams: a UDP socket whose chain is one insertion (a DNS
//! front or middle tag, a clearance code: `Chain::splice`) is customized
//! here, without its socket lock, the thread-local buffers or a module
//! call. A datagram is built, or received, in a buffer on the stack (the
//! common, short case: one buffer for the kernel) or spliced around the
//! application's buffers with an iovec list (long ones). The outcome is the
//! module's (`l45_modules::Splice` says how, and a test in the modules crate
//! holds each kind to it); statistics are credited as the chain would.
//!
//! Recipes are interned process-wide and never freed, so a data call may
//! read one without a lock while another thread re-syncs the socket: its
//! number rides in the socket's pass word (`sock::spliced`), which data calls
//! load anyway.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Mutex;

use l45_modules::{Splice, Tag, MAX_TAG};
use libc::{c_int, c_long, c_void, iovec, msghdr, ssize_t};

use crate::real;
use crate::stats::{credit, credit_drop, credit_error};
use crate::sys::{nonblocking, set_errno};

/// One socket chain's splice, with the deciding module's statistics slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipe {
    at: usize,
    bytes: Tag,
    min_send: usize,
    /// Customizes sends (a client's), else receives (a server's).
    sends: bool,
    slot: usize,
    id: u32,
}

impl Recipe {
    pub fn new(sp: &Splice<'_>, sends: bool, slot: usize, id: u32) -> Option<Recipe> {
        Some(Recipe {
            at: sp.at,
            bytes: Tag::new(sp.bytes)?,
            min_send: sp.min_send,
            sends,
            slot,
            id,
        })
    }

    #[inline]
    pub fn sends(&self) -> bool {
        self.sends
    }

    fn splice(&self) -> Splice<'_> {
        Splice {
            at: self.at,
            bytes: self.bytes.as_bytes(),
            min_send: self.min_send,
        }
    }
}

/// Distinct recipes one process can hold (a recipe per module instance
/// and role; an edited tag is a new one). Beyond, sockets take the
/// general path. Twelve bits of the pass word number them.
const MAX_RECIPES: usize = 4095;

/// Interned recipes, each a leaked box (never freed: a data call may read
/// one while the table grows). Null pointers are zero bytes, so the table
/// is untouched memory until used (a table of initialized cells cost every
/// tapped process ≈ 26 page faults).
static RECIPES: [AtomicPtr<Recipe>; MAX_RECIPES] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_RECIPES];
/// How many of `RECIPES` are set; taken only to add one.
static INTERNED: Mutex<usize> = Mutex::new(0);

/// The number (1-based) of `recipe` in the process's table, added if new;
/// 0 if there is none (no recipe, or the table is full).
pub fn intern(recipe: Option<Recipe>) -> usize {
    let Some(recipe) = recipe else { return 0 };
    let mut count = INTERNED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(k) = (1..=*count).find(|&k| get(k) == Some(&recipe)) {
        return k;
    }
    if *count == MAX_RECIPES {
        return 0;
    }
    RECIPES[*count].store(Box::into_raw(Box::new(recipe)), Ordering::Release);
    *count += 1;
    *count
}

/// Recipe number `n` (from a pass word).
#[inline]
pub fn get(n: usize) -> Option<&'static Recipe> {
    let p = RECIPES.get(n.checked_sub(1)?)?.load(Ordering::Acquire);
    // SAFETY: a non-null entry is a leaked box, never freed or changed.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// A customized datagram up to this long is built in a buffer on the
/// stack, and a received one of up to this long (with the application's
/// buffer no longer) lands in one, so the kernel gets a single buffer: a
/// list of them it first copies in and checks, which cost dig ≈ 70 ns per
/// query here (same-run benchmark). Longer ones are spliced with lists.
const STACK_SEND: usize = 512;
const STACK_RECV: usize = 2048;

/// Most iovecs a spliced send takes from the application as a list (two
/// more are the inserted bytes and the split one's tail); longer lists
/// take the general path.
const MAX_SEND_IOV: usize = 14;

/// Sends the message `m` with the recipe's bytes inserted, or as it is if
/// it is too short for them. `raw`: the application made the system call
/// itself, and so do we. `None`: a long datagram in a long iovec list (the
/// caller takes the general path).
///
/// # Safety
/// `m` is the application's msghdr, its iovecs valid for reading.
#[inline]
pub unsafe fn send(fd: c_int, m: &msghdr, flags: c_int, raw: bool, r: &Recipe) -> Option<ssize_t> {
    // SAFETY: as the caller promises.
    let app = unsafe { iovecs(m) };
    // Null bases are left out, as the general path's gather leaves them.
    let total: usize = app
        .iter()
        .filter(|v| !v.iov_base.is_null())
        .map(|v| v.iov_len)
        .sum();
    let bytes = r.bytes.as_bytes();
    let t = bytes.len();
    if total < r.min_send || total + t > STACK_SEND {
        // SAFETY: as the caller promises.
        return unsafe { send_other(fd, m, app, total, flags, raw, r) };
    }
    let mut storage = MaybeUninit::<[u8; STACK_SEND]>::uninit();
    let p = storage.as_mut_ptr().cast::<u8>();
    // SAFETY: `total + t` bytes fit the buffer. The application's bytes go
    // to `p[t..]`, its first `at` move to the front, the inserted ones
    // follow: `p[..total + t]` is all written.
    unsafe {
        let mut off = t;
        for v in app.iter().filter(|v| !v.iov_base.is_null()) {
            std::ptr::copy_nonoverlapping(v.iov_base.cast::<u8>(), p.add(off), v.iov_len);
            off += v.iov_len;
        }
        if r.at > 0 {
            std::ptr::copy(p.add(t), p, r.at);
        }
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.add(r.at), t);
    }
    let mut one = iovec {
        iov_base: p.cast(),
        iov_len: total + t,
    };
    let mut copy = *m;
    copy.msg_iov = &mut one;
    copy.msg_iovlen = 1;
    // SAFETY: the stack buffer, the application's name and control data.
    Some(unsafe { send_counted(fd, &copy, total, flags, raw, r) })
}

/// The application's iovecs of `m`.
///
/// # Safety
/// `m`'s iovecs are valid.
unsafe fn iovecs(m: &msghdr) -> &[iovec] {
    if m.msg_iovlen == 0 || m.msg_iov.is_null() {
        return &[];
    }
    // SAFETY: the caller's msghdr promises `msg_iovlen` valid iovecs.
    unsafe { std::slice::from_raw_parts(m.msg_iov, m.msg_iovlen) }
}

/// Sends customized `m` (`total` bytes of the application's) and counts it.
///
/// # Safety
/// `m` describes valid buffers.
#[inline]
unsafe fn send_counted(
    fd: c_int,
    m: &msghdr,
    total: usize,
    flags: c_int,
    raw: bool,
    r: &Recipe,
) -> ssize_t {
    credit(r.slot, r.id, true, total);
    // SAFETY: as the caller promises.
    let sent = unsafe { send_msg(fd, m, flags, raw) };
    if sent < 0 {
        credit_error(r.slot, r.id);
        return sent;
    }
    total as ssize_t
}

/// `send` of a datagram too short for the module (it goes out as it
/// came) or too long for the stack buffer (an iovec list with the
/// inserted bytes in it).
///
/// # Safety
/// As for `send`; `app` is `m`'s iovecs, `total` their length.
#[cold]
#[inline(never)]
unsafe fn send_other(
    fd: c_int,
    m: &msghdr,
    app: &[iovec],
    total: usize,
    flags: c_int,
    raw: bool,
    r: &Recipe,
) -> Option<ssize_t> {
    if total < r.min_send {
        // SAFETY: the application's own message.
        return Some(unsafe { send_msg(fd, m, flags, raw) });
    }
    if app.len() > MAX_SEND_IOV {
        return None;
    }
    let mut list = [iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_SEND_IOV + 2];
    let mut copy = *m;
    copy.msg_iovlen = gather_list(app, r.at, r.bytes.as_bytes(), &mut list);
    copy.msg_iov = list.as_mut_ptr();
    // SAFETY: our iovecs over the application's buffers and the recipe.
    Some(unsafe { send_counted(fd, &copy, total, flags, raw, r) })
}

/// Fills `list` with the application's iovecs and `bytes` inserted at
/// offset `at` (which their total reaches); returns how many it used.
fn gather_list(app: &[iovec], at: usize, bytes: &[u8], list: &mut [iovec]) -> usize {
    let mut k = 0;
    let mut offset = 0;
    let mut inserted = false;
    for v in app.iter().filter(|v| !v.iov_base.is_null()) {
        if !inserted && offset + v.iov_len >= at {
            // The insertion point is in (or at the end of) this iovec.
            let head = at - offset;
            list[k] = iovec {
                iov_base: v.iov_base,
                iov_len: head,
            };
            list[k + 1] = iovec {
                iov_base: bytes.as_ptr() as *mut c_void,
                iov_len: bytes.len(),
            };
            list[k + 2] = iovec {
                iov_base: v.iov_base.cast::<u8>().wrapping_add(head).cast(),
                iov_len: v.iov_len - head,
            };
            k += 3;
            inserted = true;
        } else {
            list[k] = *v;
            k += 1;
        }
        offset += v.iov_len;
    }
    k
}

/// # Safety
/// `m` describes valid buffers.
#[inline]
unsafe fn send_msg(fd: c_int, m: &msghdr, flags: c_int, raw: bool) -> ssize_t {
    // SAFETY: as the caller promises.
    unsafe {
        if raw {
            let ptr = std::ptr::from_ref(m) as c_long;
            real::syscall(libc::SYS_sendmsg, fd.into(), ptr, flags.into(), 0, 0, 0) as ssize_t
        } else {
            real::sendmsg(fd, m, flags)
        }
    }
}

/// Receives one datagram into the application's single buffer `app` with
/// the recipe's bytes taken out, as the module would: recognised, it is
/// delivered without them; not recognised, it is dropped (and the next one
/// received, or EAGAIN if the call must not block). `m` is the
/// application's msghdr: its name and control buffers are filled, its flags
/// set, as by `recvmsg`. `None`: not a case for the splice (a peek, the
/// error queue, a buffer shorter than the insertion point).
///
/// The datagram is received into a buffer on the stack as long as `app`
/// (or the shortest datagram the module recognises, if longer) and the
/// inserted bytes, or, for a larger `app`, scattered over `app[..at]`, a
/// buffer for the inserted bytes and `app[at..]`: either way every byte the
/// application can be given arrives, and the kernel reports the datagram's
/// whole length (MSG_TRUNC is always asked for), so truncation, the return
/// value and the statistics are those of the general path.
///
/// # Safety
/// `m` is the application's msghdr (name and control buffers valid for
/// writing); `app` its one buffer.
#[inline]
pub unsafe fn recv(
    fd: c_int,
    m: &mut msghdr,
    app: &mut [u8],
    flags: c_int,
    r: &Recipe,
) -> Option<ssize_t> {
    if flags & (libc::MSG_PEEK | libc::MSG_ERRQUEUE) != 0 || app.len() < r.at {
        return None;
    }
    let sp = r.splice();
    let (at, t) = (sp.at, sp.bytes.len());
    let cap = app.len().max(sp.min_send) + t;
    if cap > STACK_RECV {
        // SAFETY: as the caller promises.
        return Some(unsafe { recv_scattered(fd, m, app, flags, r) });
    }
    let mut storage = MaybeUninit::<[u8; STACK_RECV]>::uninit();
    let stack = storage.as_mut_ptr().cast::<u8>();
    let mut one = [iovec {
        iov_base: stack.cast(),
        iov_len: cap,
    }];
    // SAFETY: as the caller promises; the stack buffer is `cap` long.
    Some(unsafe {
        receive(fd, m, flags, r, &mut one, cap, |got| {
            // SAFETY: the kernel wrote `got` bytes to the stack buffer.
            let wire = std::slice::from_raw_parts(stack, got);
            if !sp.recognises(wire) {
                return None;
            }
            let k = (got - t).min(app.len());
            app[..at].copy_from_slice(&wire[..at]);
            app[at..k].copy_from_slice(&wire[at + t..k + t]);
            Some(k)
        })
    })
}

/// `recv` into an application buffer too long for the stack one.
///
/// # Safety
/// As for `recv`.
#[cold]
#[inline(never)]
unsafe fn recv_scattered(
    fd: c_int,
    m: &mut msghdr,
    app: &mut [u8],
    flags: c_int,
    r: &Recipe,
) -> ssize_t {
    let sp = r.splice();
    let (at, t) = (sp.at, sp.bytes.len());
    let cap = app.len() + t;
    let mut tag = [0u8; MAX_TAG];
    // The kernel writes the tag through this pointer; it is read back
    // through it too (no reference to `tag` lives across the call).
    let tag = tag.as_mut_ptr();
    let base = app.as_mut_ptr();
    let mut iov = [
        iovec {
            iov_base: base.cast(),
            iov_len: at,
        },
        iovec {
            iov_base: tag.cast(),
            iov_len: t,
        },
        iovec {
            iov_base: base.wrapping_add(at).cast(),
            iov_len: app.len() - at,
        },
    ];
    // SAFETY: as the caller promises; the iovecs cover `app` and `tag`.
    unsafe {
        receive(fd, m, flags, r, &mut iov, cap, |got| {
            // SAFETY: `got` ≥ `at + t` bytes arrived: the tag buffer is full.
            let recognised =
                got >= sp.min_send + t && sp.is_inserted(std::slice::from_raw_parts(tag, t));
            recognised.then_some(got - t)
        })
    }
}

/// The receive loop of `recv`: `iov` (`cap` bytes) receives a datagram;
/// `take(got)` says whether the splice recognised its first `got` bytes,
/// and if so has put what the application gets in its buffer and says how
/// much; a datagram it does not take is dropped. Returns what `recvmsg`
/// returns to the application.
///
/// # Safety
/// As for `recv`; `iov` describes writable buffers.
#[inline(always)]
unsafe fn receive(
    fd: c_int,
    m: &mut msghdr,
    flags: c_int,
    r: &Recipe,
    iov: &mut [iovec],
    cap: usize,
    mut take: impl FnMut(usize) -> Option<usize>,
) -> ssize_t {
    let t = r.bytes.len();
    let (name_len, control_len) = (m.msg_namelen, m.msg_controllen);
    loop {
        let mut copy = *m;
        copy.msg_iov = iov.as_mut_ptr();
        copy.msg_iovlen = iov.len();
        copy.msg_namelen = name_len;
        copy.msg_controllen = control_len;
        // SAFETY: our iovecs; the name/control buffers are the caller's.
        // With MSG_TRUNC the kernel returns the datagram's whole length.
        let n = unsafe { real::recvmsg(fd, &mut copy, flags | libc::MSG_TRUNC) };
        m.msg_namelen = copy.msg_namelen;
        m.msg_controllen = copy.msg_controllen;
        if n < 0 {
            return n;
        }
        let full = n as usize;
        let got = full.min(cap);
        let Some(delivered) = take(got) else {
            credit_drop(r.slot, r.id);
            if nonblocking(fd, flags) {
                set_errno(libc::EAGAIN);
                return -1;
            }
            continue;
        };
        credit(r.slot, r.id, false, full);
        m.msg_flags = copy.msg_flags & !libc::MSG_TRUNC;
        if full - t > delivered {
            m.msg_flags |= libc::MSG_TRUNC;
        }
        return if flags & libc::MSG_TRUNC != 0 {
            full - t
        } else {
            delivered
        } as ssize_t;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_are_interned_once_and_read_back() {
        let tag = *b"XTAGXdig";
        let sp = Splice {
            at: 0,
            bytes: &tag,
            min_send: 12,
        };
        let a = intern(Recipe::new(&sp, true, 3, 7));
        let b = intern(Recipe::new(&sp, false, 3, 7));
        assert!(a > 0 && b > 0 && a != b);
        assert_eq!(intern(Recipe::new(&sp, true, 3, 7)), a);
        assert!(get(a).is_some_and(|r| r.sends() && r.splice() == sp));
        assert!(get(b).is_some_and(|r| !r.sends()));
        assert_eq!(get(0), None);
        assert_eq!(get(MAX_RECIPES + 1), None);
        assert_eq!(intern(None), 0);
    }
}
