//! A small generic netlink client over a raw `AF_NETLINK` socket, and the
//! numbering of the `l45` family (mirrors `kmod/l45.h`; documented in
//! `docs/kernel-tap.md`).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

pub const FAMILY_NAME: &str = "l45";

pub mod cmd {
    pub const REGISTER: u8 = 1;
    pub const REVOKE: u8 = 2;
    pub const ACTIVATE: u8 = 3;
    pub const DEPRECATE: u8 = 4;
    pub const PRIORITY: u8 = 5;
    pub const REPORT: u8 = 6;
    pub const CHALLENGE: u8 = 7;
    pub const SOCKETS: u8 = 8;
}

pub mod attr {
    pub const ID: u16 = 1;
    pub const KIND: u16 = 2;
    pub const PRIORITY: u16 = 3;
    pub const FLAGS: u16 = 4;
    pub const MATCH: u16 = 5;
    pub const PARAMS: u16 = 6;
    pub const KEY: u16 = 7;
    pub const VALUE: u16 = 8;
    pub const STATS: u16 = 9;
    pub const NONCE: u16 = 10;
    pub const CIPHERTEXT: u16 = 11;
    pub const SOCKET: u16 = 12;
    /// Flag: REGISTER updates an existing id in place.
    pub const REPLACE: u16 = 14;
    /// String: with `KIND` 0, a kind loaded as a kind module, by name.
    pub const KIND_NAME: u16 = 15;
    /// Flag: REGISTER only checks the request (the kind's parser runs on
    /// the parameters); nothing is registered or changed.
    pub const CHECK: u16 = 16;
}

pub mod flag {
    pub const ACTIVATED: u8 = 1;
    pub const DEPRECATED: u8 = 2;
    pub const IMMEDIATE: u8 = 4;
}

pub mod matching {
    pub const PROTO: u16 = 1;
    pub const SRC_ADDR: u16 = 2;
    pub const SRC_PREFIX: u16 = 3;
    pub const DST_ADDR: u16 = 4;
    pub const DST_PREFIX: u16 = 5;
    pub const SRC_PORT: u16 = 6;
    pub const DST_PORT: u16 = 7;
    pub const THREAD: u16 = 8;
    pub const PROCESS: u16 = 9;
}

pub mod param {
    pub const NAME: u16 = 1;
    pub const VALUE: u16 = 2;
}

pub mod stats {
    pub const SOCKETS: u16 = 1;
    pub const BYTES_SENT: u16 = 2;
    pub const BYTES_RECEIVED: u16 = 3;
    pub const MESSAGES_SENT: u16 = 4;
    pub const MESSAGES_RECEIVED: u16 = 5;
    pub const DROPS: u16 = 6;
    pub const ERRORS: u16 = 7;
    pub const ACTIVE_TS: u16 = 8;
    /// Connections older than the kernel module that it selects but that
    /// are not tapped (their role is unknown).
    pub const BYPASSED: u16 = 10;
}

pub mod sock {
    pub const COOKIE: u16 = 1;
    pub const PROTO: u16 = 2;
    pub const ROLE: u16 = 3;
    pub const LOCAL_ADDR: u16 = 4;
    pub const LOCAL_PORT: u16 = 5;
    pub const REMOTE_ADDR: u16 = 6;
    pub const REMOTE_PORT: u16 = 7;
    pub const PID: u16 = 8;
    pub const THREAD: u16 = 9;
    pub const PROCESS: u16 = 10;
    pub const MODULES: u16 = 11;
}

#[derive(Debug, thiserror::Error)]
pub enum NlError {
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    #[error("generic netlink family {0:?} is not registered (is the l45 kernel module loaded?)")]
    NoFamily(String),
    #[error("kernel refused: {message} (errno {errno})")]
    Kernel { errno: i32, message: String },
    #[error("malformed netlink answer: {0}")]
    Malformed(&'static str),
}

impl NlError {
    /// The errno of a kernel refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NlError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

const NLMSG_HDRLEN: usize = 16;
const GENL_HDRLEN: usize = 4;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_MULTI: u16 = 2;
const NLM_F_ACK: u16 = 4;
pub const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLM_F_CAPPED: u16 = 0x100;
const NETLINK_EXT_ACK: libc::c_int = 11;
const NETLINK_CAP_ACK: libc::c_int = 10;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Builds a sequence of netlink attributes.
#[derive(Debug, Default, Clone)]
pub struct Attrs {
    buf: Vec<u8>,
}

impl Attrs {
    pub fn new() -> Self {
        Attrs::default()
    }
    pub fn bytes(mut self, ty: u16, data: &[u8]) -> Self {
        self.put(ty, data);
        self
    }
    pub fn put(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
    }
    pub fn u8(self, ty: u16, v: u8) -> Self {
        self.bytes(ty, &[v])
    }
    pub fn u16(self, ty: u16, v: u16) -> Self {
        self.bytes(ty, &v.to_ne_bytes())
    }
    pub fn u32(self, ty: u16, v: u32) -> Self {
        self.bytes(ty, &v.to_ne_bytes())
    }
    /// A NUL-terminated string.
    pub fn string(self, ty: u16, s: &str) -> Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.bytes(ty, &v)
    }
    pub fn nested(self, ty: u16, inner: Attrs) -> Self {
        self.bytes(ty | 0x8000, &inner.buf)
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Iterates the attributes of a payload: (type without flags, data).
pub fn parse_attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let ty = u16::from_ne_bytes([data[2], data[3]]) & 0x3fff;
        if len < 4 || len > data.len() {
            return None;
        }
        let payload = &data[4..len];
        data = &data[align4(len).min(data.len())..];
        Some((ty, payload))
    })
}

pub fn get_attr(data: &[u8], ty: u16) -> Option<&[u8]> {
    parse_attrs(data).find(|(t, _)| *t == ty).map(|(_, d)| d)
}

pub fn attr_u8(data: &[u8], ty: u16) -> Option<u8> {
    get_attr(data, ty).and_then(|d| d.first().copied())
}
pub fn attr_u16(data: &[u8], ty: u16) -> Option<u16> {
    get_attr(data, ty)
        .and_then(|d| d.try_into().ok())
        .map(u16::from_ne_bytes)
}
pub fn attr_u32(data: &[u8], ty: u16) -> Option<u32> {
    get_attr(data, ty)
        .and_then(|d| d.try_into().ok())
        .map(u32::from_ne_bytes)
}
pub fn attr_u64(data: &[u8], ty: u16) -> Option<u64> {
    get_attr(data, ty)
        .and_then(|d| d.try_into().ok())
        .map(u64::from_ne_bytes)
}
pub fn attr_str(data: &[u8], ty: u16) -> Option<String> {
    get_attr(data, ty).map(|d| {
        let end = d.iter().position(|&b| b == 0).unwrap_or(d.len());
        String::from_utf8_lossy(&d[..end]).into_owned()
    })
}

/// One generic netlink message of an answer.
#[derive(Debug, Clone)]
pub struct Msg {
    pub cmd: u8,
    pub attrs: Vec<u8>,
}

/// A generic netlink socket bound to one family.
pub struct Genl {
    fd: OwnedFd,
    family: u16,
    seq: AtomicU32,
    /// One request at a time: answers are matched by sequence number.
    lock: Mutex<()>,
}

impl Genl {
    /// Opens a socket and resolves `name`.
    pub fn open(name: &str) -> Result<Genl, NlError> {
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_GENERIC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let one: libc::c_int = 1;
        for opt in [NETLINK_EXT_ACK, NETLINK_CAP_ACK] {
            // SAFETY: valid fd, pointer to a c_int of the given size.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_NETLINK,
                    opt,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
        let mut g = Genl {
            fd,
            family: GENL_ID_CTRL,
            seq: AtomicU32::new(1),
            lock: Mutex::new(()),
        };
        let answer = g
            .request(
                CTRL_CMD_GETFAMILY,
                0,
                Attrs::new().string(CTRL_ATTR_FAMILY_NAME, name).as_bytes(),
            )
            .map_err(|e| match e.errno() {
                Some(libc::ENOENT) => NlError::NoFamily(name.to_string()),
                _ => e,
            })?;
        let id = answer
            .iter()
            .find_map(|m| attr_u16(&m.attrs, CTRL_ATTR_FAMILY_ID))
            .ok_or(NlError::Malformed(
                "no family id in the controller's answer",
            ))?;
        g.family = id;
        Ok(g)
    }

    pub fn family(&self) -> u16 {
        self.family
    }

    /// Bounds how long a request waits for its answer (`EAGAIN` after
    /// `timeout`): for callers that must tell a silent kernel from a slow one.
    pub fn set_receive_timeout(&self, timeout: std::time::Duration) -> Result<(), NlError> {
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
        };
        // SAFETY: valid fd, pointer to a timeval of the given size.
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(())
    }

    /// Sends `cmd` with `attrs` (plus NLM_F_ACK, and `flags`) and collects
    /// the answer: the messages before the final ACK or, for a dump, every
    /// part up to NLMSG_DONE.
    pub fn request(&self, cmd: u8, flags: u16, attrs: &[u8]) -> Result<Vec<Msg>, NlError> {
        let mut payload = vec![cmd, 1, 0, 0];
        payload.extend_from_slice(attrs);
        self.request_raw(
            self.family,
            flags | NLM_F_REQUEST | NLM_F_ACK,
            &payload,
            None,
        )
    }

    /// As [`Genl::request`] with a payload of the caller's making (genl
    /// header included), and optionally a forged `nlmsg_len`: for tests of
    /// malformed messages.
    pub fn request_raw(
        &self,
        ty: u16,
        flags: u16,
        payload: &[u8],
        forged_len: Option<u32>,
    ) -> Result<Vec<Msg>, NlError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let len = NLMSG_HDRLEN + payload.len();
        let mut msg = Vec::with_capacity(align4(len));
        msg.extend_from_slice(&forged_len.unwrap_or(len as u32).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(payload);
        msg.resize(align4(msg.len()), 0);
        // SAFETY: sockaddr_nl is plain data; zeroed is a valid value.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: valid fd, buffer and address of the given sizes.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error().into());
        }
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: valid fd and buffer.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            let mut data = &buf[..n as usize];
            while data.len() >= NLMSG_HDRLEN {
                let mlen = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
                let mty = u16::from_ne_bytes([data[4], data[5]]);
                let mflags = u16::from_ne_bytes([data[6], data[7]]);
                let mseq = u32::from_ne_bytes([data[8], data[9], data[10], data[11]]);
                if mlen < NLMSG_HDRLEN || mlen > data.len() {
                    return Err(NlError::Malformed("truncated netlink message"));
                }
                let body = &data[NLMSG_HDRLEN..mlen];
                data = &data[align4(mlen).min(data.len())..];
                if mseq != seq {
                    continue; // a late answer to an earlier request
                }
                match mty {
                    NLMSG_ERROR => {
                        if body.len() < 4 {
                            return Err(NlError::Malformed("short error message"));
                        }
                        let err = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
                        if err == 0 {
                            if !dump {
                                return Ok(out);
                            }
                            continue;
                        }
                        let mut message = String::new();
                        if mflags & NLM_F_ACK_TLVS != 0 {
                            // The original header (or the whole request
                            // unless capped) follows the errno.
                            let skip = if mflags & NLM_F_CAPPED != 0 {
                                4 + NLMSG_HDRLEN
                            } else {
                                let olen =
                                    body.get(4..8)
                                        .and_then(|b| b.try_into().ok())
                                        .map(u32::from_ne_bytes)
                                        .unwrap_or(0) as usize;
                                4 + align4(olen)
                            };
                            if let Some(tlvs) = body.get(skip..) {
                                if let Some(m) = attr_str(tlvs, NLMSGERR_ATTR_MSG) {
                                    message = m;
                                }
                            }
                        }
                        if message.is_empty() {
                            message = io::Error::from_raw_os_error(-err).to_string();
                        }
                        return Err(NlError::Kernel {
                            errno: -err,
                            message,
                        });
                    }
                    NLMSG_DONE => return Ok(out),
                    _ => {
                        if body.len() < GENL_HDRLEN {
                            return Err(NlError::Malformed("short generic netlink message"));
                        }
                        out.push(Msg {
                            cmd: body[0],
                            attrs: body[GENL_HDRLEN..].to_vec(),
                        });
                        if !dump && mflags & NLM_F_MULTI == 0 {
                            // A doit reply; its ACK follows.
                        }
                    }
                }
            }
        }
    }
}

impl Attrs {
    pub(crate) fn into_vec(self) -> Vec<u8> {
        self.buf
    }
    pub(crate) fn from_vec(buf: Vec<u8>) -> Self {
        Attrs { buf }
    }
}
