//! The shared-memory control area of the user-space tap.
//!
//! One file (default `/dev/shm/l45-tap`) in three parts:
//! - the control part — a header with a generation counter and the module
//!   table. The agent is its only writer (a seqlock: the generation is odd
//!   while it writes); tapped processes map it read-only and read it on their
//!   hot path with one atomic load, re-reading the table only when the
//!   generation moved. No IPC per send.
//! - per-module statistics, one slot per module-table slot, updated by the
//!   tapped processes with atomic adds and read by the agent;
//! - the socket table: a tapped process claims a slot (compare-and-swap on
//!   the owner pid) for every socket that has modules attached; the agent
//!   lists them and reclaims slots of processes that died.
//!
//! Only this crate and the tap backends know the layout (an invariant in
//! `docs/ARCHITECTURE.md`).
#![allow(unsafe_code)] // mmap and shared-memory access; every block has a SAFETY note

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

pub const MAGIC: u64 = u64::from_le_bytes(*b"L45TAP\0\x01");
pub const VERSION: u32 = 2;
pub const MAX_MODULES: usize = 64;
pub const MAX_SOCKETS: usize = 4096;
pub const MAX_CHAIN: usize = 8;
pub const NAME_LEN: usize = 16;
pub const PARAMS_LEN: usize = 224;
pub const DEFAULT_PATH: &str = "/dev/shm/l45-tap";
/// Environment variable naming the control file for tapped processes.
pub const PATH_ENV: &str = "L45_TAP_SHM";

const PAGE: usize = 4096;

// ===== layout =====

/// Module flags.
pub mod flags {
    pub const USED: u32 = 1;
    pub const ACTIVATED: u32 = 2;
    pub const DEPRECATED: u32 = 4;
    pub const IMMEDIATE: u32 = 8;
    pub const HAS_KEY: u32 = 16;
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
    /// Kind parameters as `name=value` lines (YANG leaf names).
    pub params: [u8; PARAMS_LEN],
    pub key: [u8; 32],
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
            key: [0; 32],
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
}

#[repr(C)]
struct Control {
    header: Header,
    modules: [ModuleSlot; MAX_MODULES],
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

#[repr(C)]
struct SocketSlot {
    /// Owning pid; 0 = free.
    owner: AtomicU32,
    /// Odd while the owner rewrites `record`.
    seq: AtomicU32,
    /// Non-zero: the record is not listed (claimed but not written yet, or
    /// a closed socket's, kept for the next one on its descriptor number).
    /// One store on the slot's first cache line hides or shows it again.
    hidden: AtomicU32,
    record: SocketRecord,
}

const fn align(n: usize) -> usize {
    n.div_ceil(PAGE) * PAGE
}

const CONTROL_LEN: usize = align(std::mem::size_of::<Control>());
const STATS_OFFSET: usize = CONTROL_LEN;
const STATS_LEN: usize = std::mem::size_of::<StatsSlot>() * MAX_MODULES;
const SOCKETS_OFFSET: usize = STATS_OFFSET + STATS_LEN;
/// Size of the whole file.
pub const FILE_LEN: usize = align(SOCKETS_OFFSET + std::mem::size_of::<SocketSlot>() * MAX_SOCKETS);
/// The read-write part (statistics and sockets) as mapped by processes.
const SHARED_LEN: usize = FILE_LEN - CONTROL_LEN;

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
}

struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all shared mutation goes through
// atomics or the seqlock protocol documented above.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(
        file: &File,
        offset: usize,
        len: usize,
        writable: bool,
        path: &Path,
    ) -> Result<Mapping, ShmError> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: mapping a regular file we hold open, with a length and a
        // page-aligned offset inside the file (the caller sized it).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(ShmError::Map {
                path: path.display().to_string(),
                source: io::Error::last_os_error(),
            });
        }
        NonNull::new(ptr.cast())
            .map(|ptr| Mapping { ptr, len })
            .ok_or_else(|| ShmError::Map {
                path: path.display().to_string(),
                source: io::Error::other("mmap returned NULL"),
            })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped; no references outlive
        // the owner of the mapping.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
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

    fn socket(&self, index: usize) -> Option<&SocketSlot> {
        if index >= MAX_SOCKETS {
            return None;
        }
        // SAFETY: the socket array follows the stats array inside this
        // mapping; index checked; fields are atomics or read/written only
        // with volatile copies under the slot's seq counter.
        Some(unsafe {
            &*(self
                .map
                .ptr
                .as_ptr()
                .add(STATS_LEN)
                .cast::<SocketSlot>()
                .add(index))
        })
    }

    fn read_record(&self, slot: &SocketSlot) -> Option<(u32, SocketRecord)> {
        for _ in 0..8 {
            let owner = slot.owner.load(Ordering::Acquire);
            if owner == 0 {
                return None;
            }
            let s1 = slot.seq.load(Ordering::Acquire);
            if s1 % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            // SAFETY: a plain-bytes record in bounds; a torn read is detected
            // by the seq check below and retried.
            let record = unsafe { std::ptr::read_volatile(&slot.record) };
            fence(Ordering::Acquire);
            if slot.seq.load(Ordering::Relaxed) == s1 && slot.owner.load(Ordering::Relaxed) == owner
            {
                return Some((owner, record));
            }
        }
        None
    }
}

fn open_file(path: &Path, create: bool) -> Result<File, ShmError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .mode(0o666)
        .open(path)
        .map_err(|source| ShmError::Open {
            path: path.display().to_string(),
            source,
        })
}

// ===== agent side =====

/// The agent's handle: sole writer of the control part.
pub struct ShmWriter {
    _file: File,
    control: Mapping,
    shared: SharedPart,
    path: String,
}

impl ShmWriter {
    /// Opens or creates the control area and takes the writer lock. An
    /// existing file is reused (processes that mapped it keep seeing
    /// updates across agent restarts); its module table is cleared.
    pub fn create(path: &Path) -> Result<ShmWriter, ShmError> {
        let file = open_file(path, true)?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(ShmError::Busy {
                path: path.display().to_string(),
            });
        }
        // Processes may run as other users; they need to map statistics
        // read-write. umask would otherwise narrow the mode.
        let _ = std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o666));
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len != FILE_LEN as u64 {
            file.set_len(FILE_LEN as u64)
                .map_err(|source| ShmError::Open {
                    path: path.display().to_string(),
                    source,
                })?;
        }
        let control = Mapping::new(&file, 0, CONTROL_LEN, true, path)?;
        let shared = SharedPart {
            map: Mapping::new(&file, CONTROL_LEN, SHARED_LEN, true, path)?,
        };
        let w = ShmWriter {
            _file: file,
            control,
            shared,
            path: path.display().to_string(),
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
            }
        }
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
        let old = self.modules();
        self.begin_write();
        for (i, slot) in table.iter().enumerate() {
            // SAFETY: sole writer (flock), bounds from the array type.
            unsafe { std::ptr::write_volatile(&mut (*self.control_ptr()).modules[i], *slot) };
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

    /// Frees the socket slots of processes that are gone (a process that
    /// exits leaves its slots claimed); returns how many. Reads one word
    /// per slot and asks the kernel once per owner seen.
    pub fn reclaim_dead_sockets(&self) -> usize {
        let mut alive: Vec<(u32, bool)> = Vec::new();
        let mut freed = 0;
        for i in 0..MAX_SOCKETS {
            let Some(slot) = self.shared.socket(i) else {
                break;
            };
            let owner = slot.owner.load(Ordering::Acquire);
            if owner == 0 {
                continue;
            }
            let live = match alive.iter().find(|(pid, _)| *pid == owner) {
                Some(&(_, live)) => live,
                None => {
                    let live = process_alive(owner);
                    alive.push((owner, live));
                    live
                }
            };
            if !live
                && slot
                    .owner
                    .compare_exchange(owner, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                freed += 1;
            }
        }
        freed
    }

    /// Sockets published by tapped processes; slots of dead processes are
    /// freed first.
    pub fn sockets(&self) -> Vec<(u32, SocketRecord)> {
        self.reclaim_dead_sockets();
        (0..MAX_SOCKETS)
            .map_while(|i| self.shared.socket(i))
            .filter(|slot| slot.hidden.load(Ordering::Acquire) == 0)
            .filter_map(|slot| self.shared.read_record(slot))
            .filter(|(_, r)| r.modules[0] != 0)
            .collect()
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

impl ShmReader {
    pub fn open(path: &Path) -> Result<ShmReader, ShmError> {
        let file = open_file(path, false)?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len != FILE_LEN as u64 {
            return Err(ShmError::Foreign {
                path: path.display().to_string(),
            });
        }
        let control = Mapping::new(&file, 0, CONTROL_LEN, false, path)?;
        let shared = SharedPart {
            map: Mapping::new(&file, CONTROL_LEN, SHARED_LEN, true, path)?,
        };
        let r = ShmReader {
            _file: file,
            control,
            shared,
        };
        // SAFETY: header fields in bounds of the control mapping.
        let (magic, version) = unsafe {
            let h = &(*r.control_ptr()).header;
            (
                std::ptr::read_volatile(&h.magic),
                std::ptr::read_volatile(&h.version),
            )
        };
        if magic != MAGIC || version != VERSION {
            return Err(ShmError::Foreign {
                path: path.display().to_string(),
            });
        }
        Ok(r)
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
    pub fn snapshot(&self) -> (u64, Vec<ModuleSlot>) {
        let (g, used) = self.snapshot_used();
        let mut table = vec![ModuleSlot::default(); MAX_MODULES];
        for (i, slot) in used {
            table[i] = slot;
        }
        (g, table)
    }

    /// A consistent copy of the used slots only, with their indices: what
    /// a tapped process parses (a full copy would be 23 KB written into
    /// fresh pages, in every process, for a table that is mostly empty).
    pub fn snapshot_used(&self) -> (u64, Vec<(usize, ModuleSlot)>) {
        loop {
            let g1 = self.generation();
            if g1 % 2 == 1 {
                std::thread::yield_now();
                continue;
            }
            let mut used = Vec::new();
            for i in 0..MAX_MODULES {
                // SAFETY: plain bytes in bounds of the mapping; a concurrent
                // write is detected by the generation check and the copy
                // retried.
                unsafe {
                    let slot = &(*self.control_ptr()).modules[i];
                    if std::ptr::read_volatile(&slot.flags) & flags::USED != 0 {
                        used.push((i, read_slot(slot)));
                    }
                }
            }
            fence(Ordering::Acquire);
            // SAFETY: as in `generation`.
            let g2 = unsafe {
                (*self.control_ptr())
                    .header
                    .generation
                    .load(Ordering::Relaxed)
            };
            if g1 == g2 {
                return (g1, used);
            }
        }
    }

    #[inline]
    pub fn stats(&self, slot: usize) -> Option<&StatsSlot> {
        self.shared.stats(slot)
    }

    /// Claims a free socket slot for this process.
    pub fn claim_socket(&self, pid: u32, hint: usize) -> Option<usize> {
        for k in 0..MAX_SOCKETS {
            let i = (hint + k) % MAX_SOCKETS;
            let slot = self.shared.socket(i)?;
            if slot
                .owner
                .compare_exchange(0, pid, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                // Listed once `write_socket` has filled it in.
                slot.hidden.store(1, Ordering::Release);
                return Some(i);
            }
        }
        None
    }

    /// Rewrites the record of a slot this process owns, with the slot's
    /// seq odd meanwhile so readers retry, and lists it.
    pub fn write_socket(&self, index: usize, pid: u32, record: &SocketRecord) {
        let Some(slot) = self.shared.socket(index) else {
            return;
        };
        if slot.owner.load(Ordering::Acquire) != pid {
            return;
        }
        let s = slot.seq.load(Ordering::Relaxed);
        slot.seq.store(s.wrapping_add(1) | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        // SAFETY: this process owns the slot (checked above); readers detect
        // the rewrite through the odd seq.
        unsafe { std::ptr::write_volatile(std::ptr::addr_of!(slot.record).cast_mut(), *record) };
        slot.seq
            .store((s.wrapping_add(1) | 1).wrapping_add(1), Ordering::Release);
        slot.hidden.store(0, Ordering::Release);
    }

    /// Stops listing (and counting) a slot this process owns: a closed
    /// socket's, kept with its record for the next one on its descriptor
    /// number.
    pub fn withdraw_socket(&self, index: usize, pid: u32) {
        self.set_hidden(index, pid, true);
    }

    /// Undoes `withdraw_socket`: the record as it was is listed again.
    pub fn restore_socket(&self, index: usize, pid: u32) {
        self.set_hidden(index, pid, false);
    }

    fn set_hidden(&self, index: usize, pid: u32, hidden: bool) {
        if let Some(slot) = self.shared.socket(index) {
            if slot.owner.load(Ordering::Acquire) == pid {
                slot.hidden.store(u32::from(hidden), Ordering::Release);
            }
        }
    }

    /// Frees a slot this process owns.
    pub fn release_socket(&self, index: usize, pid: u32) {
        if let Some(slot) = self.shared.socket(index) {
            let _ = slot
                .owner
                .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(id: u32) -> ModuleSlot {
        let mut s = ModuleSlot {
            flags: flags::USED | flags::ACTIVATED,
            id,
            kind: 1,
            priority: 10,
            ..ModuleSlot::default()
        };
        assert!(s.set_params([("tag", "XTAGXdig")]));
        s
    }

    #[test]
    fn writer_publishes_and_reader_sees_generations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tap");
        let w = ShmWriter::create(&path).unwrap();
        let r = ShmReader::open(&path).unwrap();
        let g0 = r.generation();
        assert_eq!(g0 % 2, 0);
        let mut table = [ModuleSlot::default(); MAX_MODULES];
        table[3] = slot(42);
        w.publish(&table);
        let (g1, snap) = r.snapshot();
        assert!(g1 > g0);
        assert_eq!(snap[3], table[3]);
        assert_eq!(snap.iter().filter(|s| s.used()).count(), 1);
        // What a tapped process copies: the used slot alone, with its index.
        assert_eq!(r.snapshot_used(), (g1, vec![(3, table[3])]));
        assert_eq!(
            snap[3].param_pairs().collect::<Vec<_>>(),
            vec![("tag", "XTAGXdig")]
        );
        assert_eq!(w.stats(3).unwrap().id.load(Ordering::Relaxed), 42);
        // A process's counters reach the agent.
        r.stats(3)
            .unwrap()
            .bytes_sent
            .fetch_add(100, Ordering::Relaxed);
        assert_eq!(w.stats(3).unwrap().bytes_sent.load(Ordering::Relaxed), 100);
        // A second agent on the same file is refused.
        assert!(matches!(
            ShmWriter::create(&path),
            Err(ShmError::Busy { .. })
        ));
    }

    #[test]
    fn reader_cannot_write_the_control_part() {
        // The control part is mapped read-only in processes: the kernel,
        // not convention, keeps the agent the only writer.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tap");
        let _w = ShmWriter::create(&path).unwrap();
        let r = ShmReader::open(&path).unwrap();
        let mut prot = 0;
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let start = r.control.ptr.as_ptr() as usize;
        for line in maps.lines() {
            if let Some((range, rest)) = line.split_once(' ') {
                if usize::from_str_radix(range.split('-').next().unwrap(), 16).unwrap() == start {
                    prot = if rest.starts_with("r--") { 1 } else { 2 };
                }
            }
        }
        assert_eq!(prot, 1, "control part must be mapped read-only");
    }

    /// A fresh control area with its writer and a reader (the directory
    /// lives as long as the first element).
    fn area() -> (tempfile::TempDir, ShmWriter, ShmReader) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tap");
        let w = ShmWriter::create(&path).unwrap();
        let r = ShmReader::open(&path).unwrap();
        (dir, w, r)
    }

    #[test]
    fn sockets_are_claimed_listed_and_reaped() {
        let (_dir, w, r) = area();
        let me = std::process::id();
        let i = r.claim_socket(me, 0).unwrap();
        let rec = SocketRecord {
            fd: 7,
            protocol: PROTO_UDP,
            modules: [42, 0, 0, 0, 0, 0, 0, 0],
            ..SocketRecord::default()
        };
        r.write_socket(i, me, &rec);
        assert_eq!(w.sockets(), vec![(me, rec)]);
        r.release_socket(i, me);
        assert!(w.sockets().is_empty());
        // A slot owned by a pid that does not exist is reclaimed.
        let dead = 0x3fff_fff0;
        let j = r.claim_socket(dead, 5).unwrap();
        assert!(w.sockets().is_empty());
        assert_eq!(r.claim_socket(me, j), Some(j));
    }

    #[test]
    fn socket_counts_follow_listed_records_only() {
        let (_dir, w, r) = area();
        let me = std::process::id();
        let record = |fd, modules| SocketRecord {
            fd,
            protocol: PROTO_UDP,
            modules,
            ..SocketRecord::default()
        };
        let a = r.claim_socket(me, 0).unwrap();
        // Claimed, not written yet: neither listed nor counted.
        assert!(w.sockets().is_empty());
        assert!(w.socket_counts().is_empty());
        r.write_socket(a, me, &record(3, [42, 7, 0, 0, 0, 0, 0, 0]));
        let b = r.claim_socket(me, 1).unwrap();
        r.write_socket(b, me, &record(4, [42, 0, 0, 0, 0, 0, 0, 0]));
        assert_eq!(w.socket_counts(), [(42, 2), (7, 1)].into());
        // A parked socket's slot: hidden, so not counted, record kept.
        r.withdraw_socket(a, me);
        assert_eq!(w.socket_counts(), [(42, 1)].into());
        assert_eq!(w.sockets().len(), 1);
        r.restore_socket(a, me);
        assert_eq!(w.socket_counts(), [(42, 2), (7, 1)].into());
        // Another process cannot hide our slot.
        r.withdraw_socket(a, me + 1);
        assert_eq!(w.sockets().len(), 2);
        // Released, or its process gone: no longer counted.
        r.release_socket(b, me);
        assert_eq!(w.socket_counts(), [(42, 1), (7, 1)].into());
        let dead = 0x3fff_fff0;
        let c = r.claim_socket(dead, 9).unwrap();
        r.write_socket(c, dead, &record(5, [7, 0, 0, 0, 0, 0, 0, 0]));
        assert_eq!(w.socket_counts(), [(42, 1), (7, 1)].into());
    }

    #[test]
    fn slots_of_exited_processes_are_reclaimed_and_live_ones_kept() {
        let (_dir, w, r) = area();
        let me = std::process::id();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        let mine = r.claim_socket(me, 100).unwrap();
        let theirs: Vec<usize> = (0..3)
            .map(|k| r.claim_socket(gone, 200 + k).unwrap())
            .collect();
        assert_eq!(w.reclaim_dead_sockets(), 3);
        for i in theirs {
            assert_eq!(r.claim_socket(me, i), Some(i), "slot {i} is free again");
        }
        // Our own slot was kept: claiming from its index finds the next one.
        assert_ne!(r.claim_socket(me, mine), Some(mine));
        assert_eq!(w.reclaim_dead_sockets(), 0);
    }

    #[test]
    fn foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tap");
        std::fs::write(&path, b"not a tap").unwrap();
        assert!(matches!(
            ShmReader::open(&path),
            Err(ShmError::Foreign { .. })
        ));
        assert!(matches!(
            ShmReader::open(&dir.path().join("missing")),
            Err(ShmError::Open { .. })
        ));
    }
}
