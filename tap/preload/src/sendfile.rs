//! `sendfile`/`sendfile64` from a file and `splice` from a pipe to a
//! tapped stream socket whose chain acts on what it sends (the wrappers in
//! `lib.rs` let every other case through to the kernel's fast path).
//!
//! The kernel would move those bytes without the tap seeing them, so they
//! are read here and sent through the chain as a `send` of them would be
//! (`io::send`), keeping the caller's semantics: the count returned is
//! what the send took (less than asked, or EAGAIN, on a full non-blocking
//! socket); the source gives up only those bytes — the caller's offset is
//! advanced by them, or the file position is left just after them, or just
//! they are taken out of the pipe — so the caller's retry starts with the
//! bytes it was told were not sent, as `io::send_stream` expects.

use libc::{c_int, c_uint, off64_t, off_t, ssize_t};

use crate::io;
use crate::real;
use crate::sys::{errno, set_errno};

/// Bytes read from the file per send through the chain.
const FILE_CHUNK: usize = 256 * 1024;

/// `sendfile`'s or `sendfile64`'s offset argument.
#[derive(Clone, Copy)]
pub enum Offset {
    None,
    Off(*mut off_t),
    Off64(*mut off64_t),
}

impl Offset {
    /// The caller's offset, if it gave one.
    fn get(self) -> Option<off64_t> {
        match self {
            Offset::None => None,
            // SAFETY: the caller's offset, non-null by construction.
            Offset::Off(p) => Some(off64_t::from(unsafe { *p })),
            // SAFETY: as above.
            Offset::Off64(p) => Some(unsafe { *p }),
        }
    }

    /// Advances the caller's offset to `v` (it was given, `get`); an off_t
    /// that cannot hold it (32-bit targets) stays at the largest it can.
    fn set(self, v: off64_t) {
        match self {
            Offset::None => {}
            // SAFETY: as in `get`.
            Offset::Off(p) => unsafe { *p = off_t::try_from(v).unwrap_or(off_t::MAX) },
            // SAFETY: as in `get`.
            Offset::Off64(p) => unsafe { *p = v },
        }
    }
}

/// Where the bytes come from; read without being used up, then used up
/// as far as they were sent.
enum Source {
    /// A file read at `pos`; `offset` is the caller's offset to advance
    /// (none: the file position is).
    File {
        fd: c_int,
        pos: off64_t,
        offset: Offset,
    },
    /// A pipe, looked into with `tee` (through a pipe of our own) and read
    /// from as far as the bytes were sent.
    Pipe { fd: c_int, nonblock: bool },
}

impl Source {
    /// Up to `buf.len()` of the next bytes, left in the source.
    fn peek(&mut self, buf: &mut [u8]) -> ssize_t {
        match *self {
            Source::File { fd, pos, .. } => {
                // SAFETY: `buf` is writable for its length.
                unsafe { libc::pread64(fd, buf.as_mut_ptr().cast(), buf.len(), pos) }
            }
            Source::Pipe { fd, nonblock } => peek_pipe(fd, nonblock, buf),
        }
    }

    /// `n` bytes (at most what `peek` just gave) were sent: use them up.
    fn consume(&mut self, n: usize, buf: &mut [u8]) {
        match self {
            Source::File { fd, pos, offset } => {
                *pos += n as off64_t;
                if let Offset::None = offset {
                    // SAFETY: plain lseek on the caller's descriptor.
                    unsafe { libc::lseek64(*fd, *pos, libc::SEEK_SET) };
                } else {
                    offset.set(*pos);
                }
            }
            Source::Pipe { fd, .. } => {
                // The same bytes `peek` saw are at the front of the pipe.
                let mut left = n;
                while left > 0 {
                    let k = left.min(buf.len());
                    // SAFETY: reading into our buffer.
                    let r = unsafe { real::read(*fd, buf.as_mut_ptr().cast(), k) };
                    if r <= 0 {
                        if r < 0 && errno() == libc::EINTR {
                            continue;
                        }
                        break;
                    }
                    left -= r as usize;
                }
            }
        }
    }
}

/// Copies up to `buf.len()` bytes from the front of pipe `fd` without
/// taking them out (`tee` into a pipe of our own, then read from it).
fn peek_pipe(fd: c_int, nonblock: bool, buf: &mut [u8]) -> ssize_t {
    let mut p = [0 as c_int; 2];
    // SAFETY: pipe2 writes two descriptors into `p`.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return -1;
    }
    let flags: c_uint = if nonblock { libc::SPLICE_F_NONBLOCK } else { 0 };
    // Our pipe holds its default 64 KiB at least.
    let want = buf.len().min(64 * 1024);
    // SAFETY: both descriptors are pipes; nothing else is touched.
    let mut r = unsafe { libc::tee(fd, p[1], want, flags) };
    let e = errno();
    if r > 0 {
        let mut got = 0usize;
        while got < r as usize {
            // SAFETY: reading into our buffer from our own pipe, which holds
            // the `r` bytes tee copied.
            let k = unsafe { real::read(p[0], buf[got..].as_mut_ptr().cast(), r as usize - got) };
            if k <= 0 {
                break;
            }
            got += k as usize;
        }
        r = got as ssize_t;
    }
    // SAFETY: our own descriptors.
    unsafe {
        real::close(p[0]);
        real::close(p[1]);
    }
    set_errno(e);
    r
}

/// `sendfile(out_fd, in_fd, offset, count)` on a stream socket the tap
/// customizes sends on. `None`: not such a socket or a source the tap
/// cannot read without using it up; the caller makes the original call.
pub fn sendfile(out_fd: c_int, in_fd: c_int, offset: Offset, count: usize) -> Option<ssize_t> {
    let pos = match offset.get() {
        Some(pos) => pos,
        // SAFETY: plain lseek on the caller's descriptor.
        None => unsafe { libc::lseek64(in_fd, 0, libc::SEEK_CUR) },
    };
    if pos >= 0 {
        let mut src = Source::File {
            fd: in_fd,
            pos,
            offset,
        };
        return Some(send_from(out_fd, &mut src, count, true));
    }
    // Not a file (a pipe, say): the kernel says what it makes of it.
    None
}

/// Whether `fd` is a pipe, and if so whether reading it must not wait
/// (`O_NONBLOCK`, or `SPLICE_F_NONBLOCK` in `flags`). (`sendfile` takes
/// no pipe: the kernel refuses one.)
fn pipe(fd: c_int, flags: c_uint) -> Option<bool> {
    // SAFETY: all-zero is a valid stat buffer, which fstat fills.
    let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat64(fd, &mut st) } < 0 || st.st_mode & libc::S_IFMT != libc::S_IFIFO {
        return None;
    }
    // SAFETY: F_GETFL takes no argument.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    Some(flags & libc::SPLICE_F_NONBLOCK != 0 || (fl >= 0 && fl & libc::O_NONBLOCK != 0))
}

/// `splice(fd_in, NULL, fd_out, NULL, len, flags)` from a pipe to a stream
/// socket the tap customizes sends on. `None`: `fd_in` is not a pipe.
pub fn splice_from_pipe(fd_in: c_int, fd_out: c_int, len: usize, flags: c_uint) -> Option<ssize_t> {
    let nonblock = pipe(fd_in, flags)?;
    let mut src = Source::Pipe {
        fd: fd_in,
        nonblock,
    };
    // splice returns once it moved something: one round.
    Some(send_from(fd_out, &mut src, len, false))
}

/// Sends up to `count` bytes of `src` on `fd` through the chain; `more`:
/// keep going while every round went out whole (a file; a pipe's next
/// bytes may be a wait away).
fn send_from(fd: c_int, src: &mut Source, count: usize, more: bool) -> ssize_t {
    crate::with_scratch(FILE_CHUNK.min(count.max(1)), |buf| {
        let mut total = 0usize;
        while total < count {
            let want = buf.len().min(count - total);
            let k = src.peek(&mut buf[..want]);
            if k < 0 {
                if total > 0 {
                    break;
                }
                return -1;
            }
            if k == 0 {
                break;
            }
            let data = &buf[..k as usize];
            let mut wire = |b: &[u8]| {
                // SAFETY: sending our own buffer, as the kernel's sendfile
                // would send the file's bytes (SIGPIPE included).
                unsafe { real::send(fd, b.as_ptr().cast(), b.len(), 0) }
            };
            let r = match io::send(fd, data, 0, None, &mut wire) {
                Some(r) => r,
                // Nothing customizes it after all: the bytes as they are.
                None => wire(data),
            };
            if r < 0 {
                if total > 0 {
                    break;
                }
                return -1;
            }
            let r = r as usize;
            src.consume(r, buf);
            total += r;
            if !more || r < k as usize {
                break;
            }
        }
        total as ssize_t
    })
}
