//! The shared-memory control area of the user-space tap.
//!
//! Two parts, with different writers:
//! - the control part, a file (default `/dev/shm/l45-tap`, mode 0644, owned
//!   by the agent's user): a header with a generation counter and the
//!   module table. The agent is its only writer (a seqlock: the generation
//!   is odd while it writes); tapped processes map it read-only and read it
//!   on their hot path with one atomic load, re-reading the table only when
//!   the generation moved. No IPC per send. It holds no key material.
//! - the shared part, a System V shared-memory segment (mode 0666, created
//!   by the agent, its id in the control header): per-module statistics,
//!   atomics added to by the tapped processes. Tapped processes of every
//!   user write it, so everything in it is self-reported and the agent
//!   reads it as untrusted input. A segment cannot be truncated or resized
//!   by anyone once created, so no reader can be made to fault on it (a
//!   writable file could be `ftruncate`d under every mapping: SIGBUS).
//! - the socket tables, one System V segment per user (`sockets`): a
//!   tapped process claims a slot by compare-and-swap on the owner pid for
//!   every socket that has modules attached, in its own user's table,
//!   which only that user can write; the agent reads them all.
//!
//! A tapped process maps a control file only if its owner is root, the
//! process's own user or the owner of the file's directory, and it is not
//! writable by group or others; the segment must belong to the same user
//! (`ShmReader::open`).
//!
//! Only this crate and the tap backends know the layout (an invariant in
//! `docs/ARCHITECTURE.md`).
#![allow(unsafe_code)] // mmap and shared-memory access; every block has a SAFETY note

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const MAGIC: u64 = u64::from_le_bytes(*b"L45TAP\0\x01");
/// 5: the table of module images beside the module table (`ImageRef`).
pub const VERSION: u32 = 5;
pub const MAX_MODULES: usize = 64;
/// Sockets one user's table lists.
pub const MAX_SOCKETS: usize = sockets::TABLE_SOCKETS;
pub const MAX_CHAIN: usize = 8;
pub const NAME_LEN: usize = 16;
pub const PARAMS_LEN: usize = 224;
pub const DEFAULT_PATH: &str = "/dev/shm/l45-tap";
/// Environment variable naming the control file for tapped processes.
pub const PATH_ENV: &str = "L45_TAP_SHM";
/// Mode of the control file: the agent's user writes, everyone reads.
pub const CONTROL_MODE: u32 = 0o644;
/// Mode of the shared segment: tapped processes of every user write it.
pub const SHARED_MODE: u32 = 0o666;
/// Mode of the lock file that keeps a second agent off the control file:
/// only the agent's user can open it, so nobody else can hold its lock.
pub const LOCK_MODE: u32 = 0o600;
/// How long a reader waits for the agent to finish writing the table
/// before it gives up for this call (the agent may have died mid-write).
const SNAPSHOT_PATIENCE: Duration = Duration::from_millis(50);

const PAGE: usize = 4096;

pub mod image;
mod sockets;
pub use image::{ImageRef, IMAGE_NAME_LEN};
pub use sockets::{parse_segments, Segment, TABLE_LEN, TABLE_MODE};

// ===== layout =====

/// Module flags.
pub mod flags {
    pub const USED: u32 = 1;
    pub const ACTIVATED: u32 = 2;
    pub const DEPRECATED: u32 = 4;
    pub const IMMEDIATE: u32 = 8;
    pub const HAS_SRC_PORT: u32 = 32;
    pub const HAS_DST_PORT: u32 = 64;
}

/// IP protocol numbers used in `protocol`; 0 matches any.
pub const PROTO_ANY: u8 = 0;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// An address or prefix to match; `family` 0 matches any.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddrMatch {
    /// 0 (any), 4 or 6.
    pub family: u8,
    /// Prefix length in bits.
    pub prefix: u8,
    pub _pad: [u8; 2],
    /// IPv4 in the first 4 bytes.
    pub addr: [u8; 16],
}

/// One module as the tap sees it. Plain bytes: processes copy it out.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleSlot {
    pub flags: u32,
    pub id: u32,
    /// `l45_modules::Kind::code`.
    pub kind: u16,
    pub priority: u16,
    pub protocol: u8,
    pub _pad: [u8; 3],
    pub source: AddrMatch,
    pub destination: AddrMatch,
    pub source_port: u16,
    pub destination_port: u16,
    /// NUL-padded; empty matches any.
    pub thread_name: [u8; NAME_LEN],
    pub process_name: [u8; NAME_LEN],
    /// Kind parameters as `name=value` lines (YANG leaf names). No
    /// security key: the table is readable by every local user, and only
    /// the agent answers challenges.
    pub params: [u8; PARAMS_LEN],
    /// Bumped by the agent on every change of this slot, so processes can
    /// tell an updated module from an unchanged one.
    pub revision: u32,
    pub _reserved: u32,
}

impl Default for ModuleSlot {
    fn default() -> Self {
        ModuleSlot {
            flags: 0,
            id: 0,
            kind: 0,
            priority: 0,
            protocol: PROTO_ANY,
            _pad: [0; 3],
            source: AddrMatch::default(),
            destination: AddrMatch::default(),
            source_port: 0,
            destination_port: 0,
            thread_name: [0; NAME_LEN],
            process_name: [0; NAME_LEN],
            params: [0; PARAMS_LEN],
            revision: 0,
            _reserved: 0,
        }
    }
}

impl ModuleSlot {
    pub fn used(&self) -> bool {
        self.flags & flags::USED != 0
    }

    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// The `name=value` parameter pairs.
    pub fn param_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        let end = self
            .params
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(PARAMS_LEN);
        std::str::from_utf8(&self.params[..end])
            .unwrap_or("")
            .lines()
            .filter_map(|l| l.split_once('='))
    }

    /// Stores parameter pairs; `false` if they do not fit.
    pub fn set_params<'a>(&mut self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> bool {
        let mut text = String::new();
        for (k, v) in pairs {
            if k.contains(['=', '\n']) || v.contains('\n') {
                return false;
            }
            text.push_str(k);
            text.push('=');
            text.push_str(v);
            text.push('\n');
        }
        if text.len() > PARAMS_LEN {
            return false;
        }
        self.params = [0; PARAMS_LEN];
        self.params[..text.len()].copy_from_slice(text.as_bytes());
        true
    }
}

/// Copies a name into a NUL-padded field; `false` if too long.
pub fn set_name(field: &mut [u8; NAME_LEN], name: &str) -> bool {
    if name.len() >= NAME_LEN {
        return false;
    }
    *field = [0; NAME_LEN];
    field[..name.len()].copy_from_slice(name.as_bytes());
    true
}

/// The bytes of a NUL-padded name.
pub fn name_bytes(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

#[repr(C)]
struct Header {
    magic: u64,
    version: u32,
    max_modules: u32,
    max_sockets: u32,
    agent_pid: AtomicU32,
    generation: AtomicU64,
    /// System V id of the shared part; written under the seqlock.
    shared_id: AtomicI32,
    _reserved: u32,
}

#[repr(C)]
struct Control {
    header: Header,
    modules: [ModuleSlot; MAX_MODULES],
    /// The module image of each slot whose kind is not built in (kind
    /// code 0); zeroed for the others.
    images: [ImageRef; MAX_MODULES],
}

/// Live counters of one module, updated by every tapped process.
#[repr(C)]
#[derive(Debug, Default)]
pub struct StatsSlot {
    /// Module id these counters belong to (0: slot unused).
    pub id: AtomicU32,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub messages_received: AtomicU64,
    pub errors: AtomicU64,
    pub dropped: AtomicU64,
    /// Last time the module customized a send or receive (ns since the epoch).
    pub active_ts_ns: AtomicU64,
}

/// A socket address in the socket table; `family` 0 means unknown.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SockAddr {
    pub family: u8,
    pub _pad: u8,
    pub port: u16,
    pub addr: [u8; 16],
}

impl SockAddr {
    pub fn from_std(a: &std::net::SocketAddr) -> SockAddr {
        let mut s = SockAddr {
            port: a.port(),
            ..SockAddr::default()
        };
        match a {
            std::net::SocketAddr::V4(v4) => {
                s.family = 4;
                s.addr[..4].copy_from_slice(&v4.ip().octets());
            }
            std::net::SocketAddr::V6(v6) => {
                s.family = 6;
                s.addr = v6.ip().octets();
            }
        }
        s
    }

    pub fn to_std(&self) -> Option<std::net::SocketAddr> {
        match self.family {
            4 => {
                let o: [u8; 4] = self.addr[..4].try_into().ok()?;
                Some((std::net::Ipv4Addr::from(o), self.port).into())
            }
            6 => Some((std::net::Ipv6Addr::from(self.addr), self.port).into()),
            _ => None,
        }
    }
}

/// What a process publishes about one tapped socket. Facts the tap did not
/// need for matching are left empty (family 0, empty name) rather than
/// bought with a system call or a copy on the data path: the agent reads
/// them (and the process's name) from /proc when someone asks (`fd` and
/// `tid` say where).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SocketRecord {
    pub fd: i32,
    pub protocol: u8,
    /// 1 client, 2 server.
    pub role: u8,
    pub _pad: [u8; 2],
    /// The thread that first used the socket.
    pub tid: u32,
    pub local: SockAddr,
    pub remote: SockAddr,
    pub thread_name: [u8; NAME_LEN],
    pub process_name: [u8; NAME_LEN],
    /// Attached module ids in chain order, 0-terminated.
    pub modules: [u32; MAX_CHAIN],
}

const fn align(n: usize) -> usize {
    n.div_ceil(PAGE) * PAGE
}

/// Size of the control file.
pub const CONTROL_LEN: usize = align(std::mem::size_of::<Control>());
const STATS_LEN: usize = std::mem::size_of::<StatsSlot>() * MAX_MODULES;
/// Size of the shared segment (statistics).
pub const SHARED_LEN: usize = align(STATS_LEN);

// ===== mappings =====

#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    #[error("cannot open {path}: {source}")]
    Open { path: String, source: io::Error },
    #[error("cannot map {path}: {source}")]
    Map { path: String, source: io::Error },
    #[error("{path} is locked by another agent")]
    Busy { path: String },
    #[error("{path} is not a Layer 4.5 control area of version {VERSION}")]
    Foreign { path: String },
    #[error("{path} is not trusted: {reason}")]
    Untrusted { path: String, reason: String },
    #[error("shared segment of {path}: {reason}")]
    Shared { path: String, reason: String },
}

struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    /// Attached with `shmat` (detached with `shmdt`), else `mmap`ed.
    sysv: bool,
}

// SAFETY: the mapping is plain shared memory; all shared mutation goes through
// atomics or the seqlock protocol documented above.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(file: &File, len: usize, writable: bool, path: &Path) -> Result<Mapping, ShmError> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: mapping a regular file we hold open from offset 0, with a
        // length its size (checked by the caller with fstat) covers.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(ShmError::Map {
                path: path.display().to_string(),
                source: io::Error::last_os_error(),
            });
        }
        NonNull::new(ptr.cast())
            .map(|ptr| Mapping {
                ptr,
                len,
                sysv: false,
            })
            .ok_or_else(|| ShmError::Map {
                path: path.display().to_string(),
                source: io::Error::other("mmap returned NULL"),
            })
    }

    /// Attaches segment `id` (read-only or read-write) if it is `len`
    /// bytes, with what the kernel says of it: an id read from a file or
    /// a list, or a segment recycled under the same id, is not taken on
    /// trust, and while attached the id names this segment.
    fn attach_segment(
        id: i32,
        len: usize,
        readonly: bool,
    ) -> Result<(Mapping, libc::shmid_ds), String> {
        let flags = if readonly { libc::SHM_RDONLY } else { 0 };
        // SAFETY: shmat maps the segment wherever the kernel chooses; the
        // result is checked below before any access.
        let ptr = unsafe { libc::shmat(id, std::ptr::null(), flags) };
        if ptr as isize == -1 {
            return Err(format!("shmat: {}", io::Error::last_os_error()));
        }
        let Some(ptr) = NonNull::new(ptr.cast::<u8>()) else {
            return Err("shmat returned NULL".into());
        };
        // From here on, dropping the mapping detaches it.
        let map = Mapping {
            ptr,
            len,
            sysv: true,
        };
        // SAFETY: shmid_ds is plain data; IPC_STAT fills it.
        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: IPC_STAT writes one shmid_ds.
        if unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) } != 0 {
            return Err(format!("shmctl: {}", io::Error::last_os_error()));
        }
        if ds.shm_segsz != len {
            return Err(format!("{} bytes, not {len}", ds.shm_segsz));
        }
        Ok((map, ds))
    }

    /// Attaches the shared segment `id` read-write if `owner` created and
    /// owns it (and, with `mode`, it has exactly that mode).
    fn attach(id: i32, owner: u32, mode: Option<u32>) -> Result<Mapping, String> {
        let (map, ds) = Mapping::attach_segment(id, SHARED_LEN, false)?;
        if ds.shm_perm.uid != owner || ds.shm_perm.cuid != owner {
            return Err(format!(
                "owned by uid {} (created by {}), not {owner}",
                ds.shm_perm.uid, ds.shm_perm.cuid
            ));
        }
        if let Some(m) = mode {
            if u32::from(ds.shm_perm.mode) & 0o777 != m {
                return Err(format!("mode {:o}, not {m:o}", ds.shm_perm.mode & 0o777));
            }
        }
        Ok(map)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new`/`attach` mapped; no
        // references outlive the owner of the mapping.
        unsafe {
            if self.sysv {
                libc::shmdt(self.ptr.as_ptr().cast());
            } else {
                libc::munmap(self.ptr.as_ptr().cast(), self.len);
            }
        }
    }
}

/// Access to the statistics and socket parts, shared by writer and reader.
struct SharedPart {
    map: Mapping,
}

impl SharedPart {
    #[inline]
    fn stats(&self, slot: usize) -> Option<&StatsSlot> {
        if slot >= MAX_MODULES {
            return None;
        }
        // SAFETY: the stats array starts at the beginning of this mapping,
        // is in bounds (checked), and StatsSlot is all atomics.
        Some(unsafe { &*(self.map.ptr.as_ptr().cast::<StatsSlot>().add(slot)) })
    }
}

/// Opens `path` for reading and writing if it is a regular file the
/// agent's user owns that nobody else may write (`exact`: with exactly
/// `mode`), else replaces it by a new empty file created with `mode`. A
/// file someone else made (squatting on the name in a world-writable
/// directory), a symlink, or a file others could have written is never
/// reused. Returns the file and whether it was reused.
fn open_own(path: &Path, mode: u32, exact: bool) -> Result<(File, bool), ShmError> {
    let shown = || path.display().to_string();
    let open_err = |source| ShmError::Open {
        path: shown(),
        source,
    };
    let euid = euid();
    // Bounded: another process racing on the name makes us give up, not spin.
    for _ in 0..4 {
        let existing = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path);
        match existing {
            Ok(f) => {
                let m = f.metadata().map_err(open_err)?;
                let bits = m.mode() & 0o7777;
                let trusted = m.file_type().is_file()
                    && m.uid() == euid
                    && if exact {
                        bits == mode
                    } else {
                        bits & 0o7022 == 0
                    };
                if trusted {
                    return Ok((f, true));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // A symlink (ELOOP), or a file of another user we cannot open.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ELOOP | libc::EACCES | libc::EPERM | libc::ENXIO)
                ) => {}
            Err(e) => return Err(open_err(e)),
        }
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ShmError::Untrusted {
                    path: shown(),
                    reason: format!(
                        "it is not the agent user's own file (or others may write it) and cannot be removed: {e}"
                    ),
                })
            }
        }
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(f) => return Ok((f, false)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(open_err(e)),
        }
    }
    Err(ShmError::Untrusted {
        path: shown(),
        reason: "another process keeps recreating it".into(),
    })
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// The lock file next to the control file: `PATH.lock`.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut p = OsString::from(path.as_os_str());
    p.push(".lock");
    PathBuf::from(p)
}

// ===== agent side =====

/// The agent's handle: sole writer of the control part.
pub struct ShmWriter {
    _lock: File,
    _file: File,
    control: Mapping,
    shared: SharedPart,
    shared_id: i32,
    tables: sockets::AllTables,
    path: String,
}

impl ShmWriter {
    /// Opens or creates the control area and takes the writer lock. An
    /// existing control file of the agent's own user is reused (processes
    /// that mapped it keep seeing updates across agent restarts), as is its
    /// shared segment while any process still has it attached; the module
    /// table is cleared. Any other file at the path is replaced, or the
    /// agent refuses to start if it cannot remove it.
    pub fn create(path: &Path) -> Result<ShmWriter, ShmError> {
        let shown = || path.display().to_string();
        let (lock, _) = open_own(&lock_path(path), LOCK_MODE, false)?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(ShmError::Busy { path: shown() });
        }
        let (file, reused) = open_own(path, CONTROL_MODE, false)?;
        let len = file
            .metadata()
            .map_err(|source| ShmError::Open {
                path: shown(),
                source,
            })?
            .len();
        let reused = reused && len == CONTROL_LEN as u64;
        if len != CONTROL_LEN as u64 {
            // Only the agent's user can resize its own 0644 file.
            file.set_len(CONTROL_LEN as u64)
                .map_err(|source| ShmError::Open {
                    path: shown(),
                    source,
                })?;
        }
        let control = Mapping::new(&file, CONTROL_LEN, true, path)?;
        // SAFETY: the header is at the start of the control mapping, which
        // we hold the lock for.
        let previous = reused
            .then(|| unsafe {
                let h = &*control.ptr.as_ptr().cast::<Header>();
                (h.magic == MAGIC && h.version == VERSION)
                    .then(|| h.shared_id.load(Ordering::Relaxed))
            })
            .flatten();
        let (shared, shared_id) = shared_segment(previous, path)?;
        let w = ShmWriter {
            _lock: lock,
            _file: file,
            control,
            shared: SharedPart { map: shared },
            shared_id,
            tables: sockets::AllTables::default(),
            path: shown(),
        };
        w.init();
        Ok(w)
    }

    fn control_ptr(&self) -> *mut Control {
        self.control.ptr.as_ptr().cast()
    }

    fn header(&self) -> &Header {
        // SAFETY: the header is at the start of the control mapping.
        unsafe { &(*self.control_ptr()).header }
    }

    fn init(&self) {
        let ctl = self.control_ptr();
        self.begin_write();
        // SAFETY: we hold the writer lock, so nobody else writes; readers
        // detect the update through the odd generation.
        unsafe {
            std::ptr::write_volatile(&mut (*ctl).header.magic, MAGIC);
            std::ptr::write_volatile(&mut (*ctl).header.version, VERSION);
            std::ptr::write_volatile(&mut (*ctl).header.max_modules, MAX_MODULES as u32);
            std::ptr::write_volatile(&mut (*ctl).header.max_sockets, MAX_SOCKETS as u32);
            for i in 0..MAX_MODULES {
                std::ptr::write_volatile(&mut (*ctl).modules[i], ModuleSlot::default());
                std::ptr::write_volatile(&mut (*ctl).images[i], ImageRef::default());
            }
        }
        self.header()
            .shared_id
            .store(self.shared_id, Ordering::Relaxed);
        self.header()
            .agent_pid
            .store(std::process::id(), Ordering::Relaxed);
        self.end_write();
        for i in 0..MAX_MODULES {
            if let Some(s) = self.shared.stats(i) {
                reset_stats(s, 0);
            }
        }
    }

    fn begin_write(&self) {
        let g = self.header().generation.load(Ordering::Relaxed);
        let next = if g.is_multiple_of(2) { g + 1 } else { g + 2 };
        self.header().generation.store(next, Ordering::Relaxed);
        fence(Ordering::Release);
    }

    fn end_write(&self) {
        let g = self.header().generation.load(Ordering::Relaxed);
        self.header().generation.store(g + 1, Ordering::Release);
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The System V id of the shared segment.
    pub fn shared_id(&self) -> i32 {
        self.shared_id
    }

    pub fn generation(&self) -> u64 {
        self.header().generation.load(Ordering::Acquire)
    }

    /// The current table.
    pub fn modules(&self) -> Vec<ModuleSlot> {
        // SAFETY: we are the only writer, so reading our own table is
        // race-free.
        (0..MAX_MODULES)
            .map(|i| unsafe { std::ptr::read_volatile(&(*self.control_ptr()).modules[i]) })
            .collect()
    }

    /// Publishes a whole new table at once (one generation step). Slots
    /// whose module id changed get fresh statistics.
    pub fn publish(&self, table: &[ModuleSlot; MAX_MODULES]) {
        self.publish_with_images(table, &[ImageRef::default(); MAX_MODULES]);
    }

    /// `publish`, with the module image of each slot of a kind that is not
    /// built in (`images[i]` for `table[i]`).
    pub fn publish_with_images(
        &self,
        table: &[ModuleSlot; MAX_MODULES],
        images: &[ImageRef; MAX_MODULES],
    ) {
        let old = self.modules();
        self.begin_write();
        for (i, (slot, image)) in table.iter().zip(images).enumerate() {
            // SAFETY: sole writer (flock), bounds from the array type.
            unsafe {
                std::ptr::write_volatile(&mut (*self.control_ptr()).modules[i], *slot);
                std::ptr::write_volatile(&mut (*self.control_ptr()).images[i], *image);
            }
        }
        self.end_write();
        for (i, slot) in table.iter().enumerate() {
            let id = if slot.used() { slot.id } else { 0 };
            let old_id = if old[i].used() { old[i].id } else { 0 };
            if id != old_id {
                if let Some(s) = self.shared.stats(i) {
                    reset_stats(s, id);
                }
            }
        }
    }

    pub fn stats(&self, slot: usize) -> Option<&StatsSlot> {
        self.shared.stats(slot)
    }

    /// Gives statistics slot `slot` to module `id` again (counters from
    /// zero) if its id is not `id`: anyone may have overwritten it, and
    /// tapped processes add only to a slot that names their module.
    /// Returns whether it had been overwritten.
    pub fn stamp_stats(&self, slot: usize, id: u32) -> bool {
        match self.shared.stats(slot) {
            Some(s) if s.id.load(Ordering::Acquire) != id => {
                reset_stats(s, id);
                true
            }
            _ => false,
        }
    }

    /// Sockets published by tapped processes of every user, as they
    /// report them (self-reported: see `l45-tap-userspace` for what the
    /// agent trusts), of processes that are still alive.
    pub fn sockets(&self) -> Vec<(u32, SocketRecord)> {
        self.tables.records(self.shared_id as u32)
    }

    /// How many listed sockets (`sockets`) have each module attached, by
    /// module id. The tap keeps no counters of its own: a socket counts
    /// while its record is listed, and stops counting when its process
    /// exits, however it exits.
    pub fn socket_counts(&self) -> std::collections::HashMap<u32, u32> {
        let mut counts = std::collections::HashMap::new();
        for (_, r) in self.sockets() {
            for id in r.modules.iter().copied().take_while(|&id| id != 0) {
                *counts.entry(id).or_insert(0) += 1;
            }
        }
        counts
    }
}

fn reset_stats(s: &StatsSlot, id: u32) {
    s.id.store(0, Ordering::Release);
    for c in [
        &s.bytes_sent,
        &s.bytes_received,
        &s.messages_sent,
        &s.messages_received,
        &s.errors,
        &s.dropped,
        &s.active_ts_ns,
    ] {
        c.store(0, Ordering::Relaxed);
    }
    s.id.store(id, Ordering::Release);
}

/// The shared segment: `previous` (the id in a reused control file) if it
/// still exists and is ours, else a new one. A new segment is marked for
/// removal at once, so the kernel frees it when the last process (agent or
/// tapped) detaches; Linux still lets processes attach it by id until then.
fn shared_segment(previous: Option<i32>, path: &Path) -> Result<(Mapping, i32), ShmError> {
    let me = euid();
    if let Some(id) = previous.filter(|&id| id >= 0) {
        if let Ok(map) = Mapping::attach(id, me, Some(SHARED_MODE)) {
            return Ok((map, id));
        }
    }
    let err = |reason: String| ShmError::Shared {
        path: path.display().to_string(),
        reason,
    };
    // SAFETY: plain system call; the mode is not subject to the umask.
    let id = unsafe {
        libc::shmget(
            libc::IPC_PRIVATE,
            SHARED_LEN,
            libc::IPC_CREAT | libc::IPC_EXCL | SHARED_MODE as libc::c_int,
        )
    };
    if id < 0 {
        return Err(err(format!("shmget: {}", io::Error::last_os_error())));
    }
    let attached = Mapping::attach(id, me, Some(SHARED_MODE));
    // SAFETY: removing the segment we just created; it lives on while
    // attached.
    unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    Ok((attached.map_err(err)?, id))
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

// ===== process side =====

/// A tapped process's view: control part read-only, the rest read-write.
pub struct ShmReader {
    _file: File,
    control: Mapping,
    shared: SharedPart,
    /// The agent's shared segment id, which this user's socket table names.
    instance: u32,
    /// This user's socket table, joined at the first socket to list.
    table: OnceLock<sockets::SocketTable>,
    /// When joining last failed (monotonic ns): retried a second later,
    /// not on every new socket.
    join_failed_at: AtomicU64,
}

/// A copy of an image reference another process may be rewriting (the
/// caller checks the generation around it), word by word as `read_slot`.
///
/// # Safety
/// `image` points to a mapped, 4-byte aligned `ImageRef`.
unsafe fn read_image(image: *const ImageRef) -> ImageRef {
    const WORDS: usize = std::mem::size_of::<ImageRef>() / 4;
    const _: () = assert!(std::mem::size_of::<ImageRef>().is_multiple_of(4));
    let mut out = ImageRef::default();
    // Byte arrays are 1-aligned: the control part lays ImageRefs out after
    // the 4-aligned module slots, at a multiple of 4 (size asserted).
    const _: () = assert!(
        std::mem::size_of::<Header>().is_multiple_of(4)
            && std::mem::size_of::<ModuleSlot>().is_multiple_of(4)
    );
    let src = image.cast::<AtomicU32>();
    let dst = std::ptr::from_mut(&mut out).cast::<u8>();
    for i in 0..WORDS {
        // SAFETY: in bounds of both (the source is 4-aligned, see above);
        // any bytes are a valid ImageRef.
        unsafe {
            let w = (*src.add(i)).load(Ordering::Relaxed).to_ne_bytes();
            std::ptr::copy_nonoverlapping(w.as_ptr(), dst.add(4 * i), 4);
        }
    }
    out
}

/// A copy of a module slot another process may be rewriting (the caller
/// checks the generation around it), word by word: a volatile read of the
/// whole slot compiles into 9 KB of unrolled loads, which every tapped
/// process would fetch cold once.
///
/// # Safety
/// `slot` points to a mapped, 4-byte aligned `ModuleSlot`.
unsafe fn read_slot(slot: *const ModuleSlot) -> ModuleSlot {
    const WORDS: usize = std::mem::size_of::<ModuleSlot>() / 4;
    const _: () = assert!(std::mem::size_of::<ModuleSlot>().is_multiple_of(4));
    const _: () = assert!(std::mem::align_of::<ModuleSlot>() >= 4);
    let mut out = std::mem::MaybeUninit::<ModuleSlot>::uninit();
    let src = slot.cast::<AtomicU32>();
    let dst = out.as_mut_ptr().cast::<u32>();
    for i in 0..WORDS {
        // SAFETY: in bounds of both; atomic loads of plain words (any value
        // is a valid ModuleSlot byte pattern: integers and byte arrays).
        unsafe { dst.add(i).write((*src.add(i)).load(Ordering::Relaxed)) };
    }
    // SAFETY: every word written above.
    unsafe { out.assume_init() }
}

/// The control file a tapped process uses: `L45_TAP_SHM` (`env`) unless
/// the process is set-uid/set-gid or otherwise privileged by exec
/// (`secure`, the auxiliary vector's `AT_SECURE`): its invoker, not its
/// owner, chose the environment.
pub fn control_path(env: Option<OsString>, secure: bool) -> PathBuf {
    match env {
        Some(p) if !secure && !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

/// `control_path` for this process.
pub fn control_path_of_this_process() -> PathBuf {
    // SAFETY: getauxval has no preconditions; 0 if the entry is absent.
    let secure = unsafe { libc::getauxval(libc::AT_SECURE) } != 0;
    control_path(std::env::var_os(PATH_ENV), secure)
}

/// Whether a tapped process of user `euid` may obey a control file owned
/// by `owner` with permission bits `mode`, in a directory owned by
/// `dir_owner`: the owner is root, the process's own user or the
/// directory's owner (who could replace the file anyway), and nobody else
/// may write it.
pub fn trusted_control(
    owner: u32,
    mode: u32,
    euid: u32,
    dir_owner: Option<u32>,
) -> Result<(), String> {
    if owner != 0 && owner != euid && Some(owner) != dir_owner {
        return Err(format!(
            "owned by uid {owner}, which is neither root, this process's user ({euid}) nor the directory's owner"
        ));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "mode {:o}: group or others may write it",
            mode & 0o7777
        ));
    }
    Ok(())
}

/// Runs `read` (a copy of data the agent publishes under the seqlock of
/// `generation`) until it ran while the generation stayed even and
/// unchanged. Gives up with `None` after `SNAPSHOT_PATIENCE`: the
/// generation is the agent's alone, but a reader must not hang on an agent
/// that died mid-write.
fn read_stable<T>(generation: &AtomicU64, mut read: impl FnMut() -> T) -> Option<(u64, T)> {
    let mut started: Option<Instant> = None;
    loop {
        let g1 = generation.load(Ordering::Acquire);
        if g1.is_multiple_of(2) {
            let value = read();
            fence(Ordering::Acquire);
            if generation.load(Ordering::Relaxed) == g1 {
                return Some((g1, value));
            }
        }
        let since = *started.get_or_insert_with(Instant::now);
        if since.elapsed() > SNAPSHOT_PATIENCE {
            return None;
        }
        std::thread::yield_now();
    }
}

impl ShmReader {
    /// Maps the control file at `path` read-only and its shared segment
    /// read-write, if they can be trusted (`trusted_control`; the segment
    /// belongs to the control file's owner and has the expected size).
    /// Sizes are checked before anything is touched: the control file's
    /// owner is the only one who can resize it, the segment cannot be.
    pub fn open(path: &Path) -> Result<ShmReader, ShmError> {
        let shown = || path.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
            .map_err(|source| ShmError::Open {
                path: shown(),
                source,
            })?;
        let meta = file.metadata().map_err(|source| ShmError::Open {
            path: shown(),
            source,
        })?;
        if !meta.file_type().is_file() || meta.len() != CONTROL_LEN as u64 {
            return Err(ShmError::Foreign { path: shown() });
        }
        let dir_owner = path
            .parent()
            .map(|d| {
                if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                }
            })
            .and_then(|d| std::fs::metadata(d).ok())
            .map(|m| m.uid());
        trusted_control(meta.uid(), meta.mode(), euid(), dir_owner).map_err(|reason| {
            ShmError::Untrusted {
                path: shown(),
                reason,
            }
        })?;
        let control = Mapping::new(&file, CONTROL_LEN, false, path)?;
        // SAFETY: header fields in bounds of the control mapping.
        let (magic, version) = unsafe {
            let h = &*control.ptr.as_ptr().cast::<Header>();
            (
                std::ptr::read_volatile(&h.magic),
                std::ptr::read_volatile(&h.version),
            )
        };
        if magic != MAGIC || version != VERSION {
            return Err(ShmError::Foreign { path: shown() });
        }
        // SAFETY: as above; the id is written under the seqlock.
        let header = unsafe { &*control.ptr.as_ptr().cast::<Header>() };
        let (_, id) = read_stable(&header.generation, || {
            header.shared_id.load(Ordering::Relaxed)
        })
        .ok_or_else(|| ShmError::Shared {
            path: shown(),
            reason: "the agent did not finish writing the header".into(),
        })?;
        let shared = Mapping::attach(id, meta.uid(), None).map_err(|reason| ShmError::Shared {
            path: shown(),
            reason,
        })?;
        Ok(ShmReader {
            _file: file,
            control,
            shared: SharedPart { map: shared },
            instance: id as u32,
            table: OnceLock::new(),
            join_failed_at: AtomicU64::new(0),
        })
    }

    #[inline]
    fn control_ptr(&self) -> *const Control {
        self.control.ptr.as_ptr().cast()
    }

    /// The generation word itself, for a caller that keeps a pointer to it
    /// (valid as long as this reader).
    pub fn generation_word(&self) -> &AtomicU64 {
        // SAFETY: the header is in bounds of the control mapping.
        unsafe { &(*self.control_ptr()).header.generation }
    }

    /// The hot-path check: one atomic load.
    #[inline]
    pub fn generation(&self) -> u64 {
        // SAFETY: the header is in bounds; the generation is atomic.
        unsafe {
            (*self.control_ptr())
                .header
                .generation
                .load(Ordering::Acquire)
        }
    }

    /// A consistent copy of the module table and its generation.
    pub fn snapshot(&self) -> Option<(u64, Vec<ModuleSlot>)> {
        let (g, used) = self.snapshot_used()?;
        let mut table = vec![ModuleSlot::default(); MAX_MODULES];
        for (i, slot) in used {
            table[i] = slot;
        }
        Some((g, table))
    }

    /// A consistent copy of the used slots only, with their indices: what
    /// a tapped process parses (a full copy would be 23 KB written into
    /// fresh pages, in every process, for a table that is mostly empty).
    /// `None` if the agent kept the generation odd longer than a reader
    /// waits (it may have died mid-write): the caller keeps what it has.
    pub fn snapshot_used(&self) -> Option<(u64, Vec<(usize, ModuleSlot)>)> {
        let (g, used, _) = self.snapshot_with_images()?;
        Some((g, used))
    }

    /// `snapshot_used`, with the module images of the used slots whose
    /// kind is not built in (kind code 0), by slot index.
    #[allow(clippy::type_complexity)]
    pub fn snapshot_with_images(
        &self,
    ) -> Option<(u64, Vec<(usize, ModuleSlot)>, Vec<(usize, ImageRef)>)> {
        // SAFETY: the header is in bounds of the control mapping.
        let generation = unsafe { &(*self.control_ptr()).header.generation };
        let (g, (used, images)) = read_stable(generation, || {
            let mut used = Vec::new();
            let mut images = Vec::new();
            for i in 0..MAX_MODULES {
                // SAFETY: plain bytes in bounds of the mapping; a concurrent
                // write is detected by the generation check and the copy
                // retried.
                unsafe {
                    let slot = &(*self.control_ptr()).modules[i];
                    if std::ptr::read_volatile(&slot.flags) & flags::USED != 0 {
                        let slot = read_slot(slot);
                        if slot.kind == 0 {
                            images.push((i, read_image(&(*self.control_ptr()).images[i])));
                        }
                        used.push((i, slot));
                    }
                }
            }
            (used, images)
        })?;
        Some((g, used, images))
    }

    #[inline]
    pub fn stats(&self, slot: usize) -> Option<&StatsSlot> {
        self.shared.stats(slot)
    }

    /// This user's socket table, joined (or created) on first use.
    fn table(&self) -> Option<&sockets::SocketTable> {
        if let Some(t) = self.table.get() {
            return Some(t);
        }
        let now = monotonic_ns();
        let failed = self.join_failed_at.load(Ordering::Relaxed);
        if failed != 0 && now.saturating_sub(failed) < 1_000_000_000 {
            return None;
        }
        match sockets::SocketTable::join(self.instance) {
            // A thread that joined first wins; ours is detached on drop.
            Ok(t) => Some(self.table.get_or_init(|| t)),
            Err(_) => {
                self.join_failed_at.store(now.max(1), Ordering::Relaxed);
                None
            }
        }
    }

    /// Claims a free slot in this user's socket table for process `pid`
    /// (`None`: the table is full or could not be joined; the socket is
    /// then not listed).
    pub fn claim_socket(&self, pid: u32) -> Option<usize> {
        self.table()?.claim(pid)
    }

    /// Rewrites the record of a slot `pid` owns, with the slot's seq odd
    /// meanwhile so readers retry, and lists it.
    pub fn write_socket(&self, index: usize, pid: u32, record: &SocketRecord) {
        if let Some(t) = self.table.get() {
            t.write(index, pid, record);
        }
    }

    /// Stops listing (and counting) a slot this process owns: a closed
    /// socket's, kept with its record for the next one on its descriptor
    /// number.
    pub fn withdraw_socket(&self, index: usize, pid: u32) {
        if let Some(t) = self.table.get() {
            t.set_hidden(index, pid, true);
        }
    }

    /// Undoes `withdraw_socket`: the record as it was is listed again.
    pub fn restore_socket(&self, index: usize, pid: u32) {
        if let Some(t) = self.table.get() {
            t.set_hidden(index, pid, false);
        }
    }

    /// Frees a slot this process owns.
    pub fn release_socket(&self, index: usize, pid: u32) {
        if let Some(t) = self.table.get() {
            t.release(index, pid);
        }
    }
}

fn monotonic_ns() -> u64 {
    // SAFETY: timespec is plain data that clock_gettime fills.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests;
