//! The socket tables: what tapped processes list about their sockets, from
//! which the agent counts each module's sockets.
//!
//! One table per user: a System V segment the first tapped process of a
//! user creates (mode 0644: that user writes, everyone may read), which
//! the user's later processes find and join. The kernel records who
//! created and owns a segment, so a table's writer is known without
//! trusting anything in it: a hostile process can add, rewrite or erase
//! records only in its own user's table, never hide another user's
//! sockets. Processes find their user's table, and the agent every table,
//! in `/proc/sysvipc/shm` (the kernel's list, not something a user can
//! forge); a table names the agent it reports to (its shared segment's
//! id), so two agents on one host keep apart.
//!
//! A table is marked for removal as soon as its creator attached it:
//! the kernel frees it when the last process of its user (and the agent)
//! detaches, and Linux lets processes attach it by id until then.

use std::io;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::{euid, process_alive, Mapping, SocketRecord, PAGE};

/// Socket records a table holds.
pub const TABLE_SOCKETS: usize = 4096;
/// Mode of a socket table: its user writes, the agent (any user) reads.
pub const TABLE_MODE: u32 = 0o644;
const TABLE_MAGIC: u64 = u64::from_le_bytes(*b"L45SOCK\x01");
const TABLE_VERSION: u32 = 1;
/// Tables the agent reads per user, and in all: a user who makes more
/// (each is a segment of theirs) only hides their own sockets.
const TABLES_PER_USER: usize = 8;
const TABLES_MAX: usize = 1024;

#[repr(C)]
struct TableHeader {
    /// Set last by the creator: a table without it is not read.
    magic: AtomicU64,
    version: AtomicU32,
    /// The shared segment id of the agent this table reports to.
    instance: AtomicU32,
    /// One past the highest slot ever claimed: readers stop there.
    high_water: AtomicU32,
    _reserved: [u32; 11],
}

#[repr(C)]
pub(crate) struct SocketSlot {
    /// Owning pid; 0 = free.
    owner: AtomicU32,
    /// Odd while the owner rewrites `record`.
    pub(crate) seq: AtomicU32,
    /// Non-zero: the record is not listed (claimed but not written yet, or
    /// a closed socket's, kept for the next one on its descriptor number).
    /// One store on the slot's first cache line hides or shows it again.
    hidden: AtomicU32,
    record: SocketRecord,
}

/// Size of a socket table segment.
pub const TABLE_LEN: usize = (std::mem::size_of::<TableHeader>()
    + std::mem::size_of::<SocketSlot>() * TABLE_SOCKETS)
    .div_ceil(PAGE)
    * PAGE;

/// One line of `/proc/sysvipc/shm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub id: i32,
    pub mode: u32,
    pub size: usize,
    pub attached: u64,
    pub uid: u32,
    pub creator: u32,
}

/// The segments listed in the text of `/proc/sysvipc/shm` (columns: key
/// shmid perms size cpid lpid nattch uid gid cuid cgid …); lines that do
/// not parse are skipped.
pub fn parse_segments(text: &str) -> Vec<Segment> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(Segment {
                id: f.get(1)?.parse().ok()?,
                mode: u32::from_str_radix(f.get(2)?, 8).ok()?,
                size: f.get(3)?.parse().ok()?,
                attached: f.get(6)?.parse().ok()?,
                uid: f.get(7)?.parse().ok()?,
                creator: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

impl Segment {
    /// Whether this can be a socket table written only by its user.
    fn is_candidate(&self) -> bool {
        self.size == TABLE_LEN && self.uid == self.creator && self.mode & 0o022 == 0
    }
}

/// The kernel's list of System V segments, read with raw system calls: a
/// tapped process must not go through its own (interposed) `read`/`close`,
/// nor leave `errno` changed for the application.
fn read_segment_list() -> Option<String> {
    let saved = errno();
    let path = c"/proc/sysvipc/shm";
    // SAFETY: plain system calls on a NUL-terminated path and a buffer we
    // own; the descriptor is closed before returning.
    let text = unsafe {
        let fd = libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            None
        } else {
            let mut out = Vec::with_capacity(16 * 1024);
            let mut buf = [0u8; 8192];
            let ok = loop {
                let n = libc::syscall(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len());
                match usize::try_from(n) {
                    Ok(0) => break true,
                    Ok(n) => out.extend_from_slice(&buf[..n.min(buf.len())]),
                    Err(_) if errno() == libc::EINTR => continue,
                    Err(_) => break false,
                }
                // Bounded: a host with more segments than this is read in part.
                if out.len() > 4 << 20 {
                    break true;
                }
            };
            libc::syscall(libc::SYS_close, fd);
            ok.then(|| String::from_utf8_lossy(&out).into_owned())
        }
    };
    set_errno(saved);
    text
}

fn errno() -> i32 {
    // SAFETY: the thread's errno location is always valid.
    unsafe { *libc::__errno_location() }
}

fn set_errno(e: i32) {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = e };
}

/// One user's socket table, attached read-write (a process of that user)
/// or read-only (the agent).
pub(crate) struct SocketTable {
    map: Mapping,
}

impl SocketTable {
    fn header(&self) -> &TableHeader {
        // SAFETY: the header is at the start of the mapping (TABLE_LEN
        // bytes, checked when attached) and is all atomics.
        unsafe { &*self.map.ptr.as_ptr().cast::<TableHeader>() }
    }

    pub(crate) fn slot(&self, index: usize) -> Option<&SocketSlot> {
        if index >= TABLE_SOCKETS {
            return None;
        }
        // SAFETY: the slots follow the header inside the mapping; index
        // checked; fields are atomics or read/written only with volatile
        // copies under the slot's seq counter.
        Some(unsafe {
            &*(self
                .map
                .ptr
                .as_ptr()
                .add(std::mem::size_of::<TableHeader>())
                .cast::<SocketSlot>()
                .add(index))
        })
    }

    /// Whether the table reports to the agent with shared segment `instance`.
    fn reports_to(&self, instance: u32) -> bool {
        let h = self.header();
        h.magic.load(Ordering::Acquire) == TABLE_MAGIC
            && h.version.load(Ordering::Relaxed) == TABLE_VERSION
            && h.instance.load(Ordering::Relaxed) == instance
    }

    /// Attaches segment `id` if it is a table of `TABLE_LEN` bytes whose
    /// creator and owner are both `user` and that no one else may write.
    fn attach(id: i32, user: u32, readonly: bool) -> Result<SocketTable, String> {
        let (map, ds) = Mapping::attach_segment(id, TABLE_LEN, readonly)?;
        if ds.shm_perm.uid != user || ds.shm_perm.cuid != user {
            return Err(format!(
                "owned by uid {} (created by {}), not {user}",
                ds.shm_perm.uid, ds.shm_perm.cuid
            ));
        }
        if u32::from(ds.shm_perm.mode) & 0o022 != 0 {
            return Err("group or others may write it".into());
        }
        Ok(SocketTable { map })
    }

    /// This process's user's table for the agent `instance`: one a process
    /// of the same user made, or a new one.
    pub(crate) fn join(instance: u32) -> Result<SocketTable, String> {
        let me = euid();
        let listed = read_segment_list().map(|t| parse_segments(&t));
        for seg in listed.iter().flatten() {
            if seg.is_candidate() && seg.uid == me && seg.mode & 0o777 == TABLE_MODE {
                if let Ok(t) = SocketTable::attach(seg.id, me, false) {
                    if t.reports_to(instance) {
                        return Ok(t);
                    }
                }
            }
        }
        SocketTable::create(instance)
    }

    fn create(instance: u32) -> Result<SocketTable, String> {
        // SAFETY: plain system call; the mode is not subject to the umask.
        let id = unsafe {
            libc::shmget(
                libc::IPC_PRIVATE,
                TABLE_LEN,
                libc::IPC_CREAT | libc::IPC_EXCL | TABLE_MODE as libc::c_int,
            )
        };
        if id < 0 {
            return Err(format!("shmget: {}", io::Error::last_os_error()));
        }
        let attached = SocketTable::attach(id, euid(), false);
        // SAFETY: removing the segment we just created; it lives on while
        // attached by a process of ours or the agent.
        unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
        let t = attached?;
        let h = t.header();
        h.version.store(TABLE_VERSION, Ordering::Relaxed);
        h.instance.store(instance, Ordering::Relaxed);
        h.magic.store(TABLE_MAGIC, Ordering::Release);
        Ok(t)
    }

    /// Claims a free slot for process `pid`; when none is free, takes over
    /// one of a process that is gone.
    pub(crate) fn claim(&self, pid: u32) -> Option<usize> {
        let take = |i: usize, from: u32| -> bool {
            let Some(slot) = self.slot(i) else {
                return false;
            };
            if slot
                .owner
                .compare_exchange(from, pid, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                return false;
            }
            // Listed once `write` has filled it in.
            slot.hidden.store(1, Ordering::Release);
            self.header()
                .high_water
                .fetch_max(i as u32 + 1, Ordering::AcqRel);
            true
        };
        if let Some(i) = (0..TABLE_SOCKETS).find(|&i| take(i, 0)) {
            return Some(i);
        }
        let mut alive: Vec<(u32, bool)> = Vec::new();
        (0..TABLE_SOCKETS).find(|&i| {
            let Some(owner) = self.slot(i).map(|s| s.owner.load(Ordering::Acquire)) else {
                return false;
            };
            owner != 0 && !is_alive(&mut alive, owner) && take(i, owner)
        })
    }

    /// Rewrites the record of a slot `pid` owns, with the slot's seq odd
    /// meanwhile so readers retry, and lists it.
    pub(crate) fn write(&self, index: usize, pid: u32, record: &SocketRecord) {
        let Some(slot) = self.slot(index) else {
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

    pub(crate) fn set_hidden(&self, index: usize, pid: u32, hidden: bool) {
        if let Some(slot) = self.slot(index) {
            if slot.owner.load(Ordering::Acquire) == pid {
                slot.hidden.store(u32::from(hidden), Ordering::Release);
            }
        }
    }

    pub(crate) fn release(&self, index: usize, pid: u32) {
        if let Some(slot) = self.slot(index) {
            let _ = slot
                .owner
                .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn read_record(slot: &SocketSlot) -> Option<(u32, SocketRecord)> {
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

    /// Listed records (owner pid, record), up to the table's high water.
    fn listed(&self, out: &mut Vec<(u32, SocketRecord)>) {
        let end = (self.header().high_water.load(Ordering::Acquire) as usize).min(TABLE_SOCKETS);
        for i in 0..end {
            let Some(slot) = self.slot(i) else { break };
            if slot.hidden.load(Ordering::Acquire) == 0 {
                if let Some(r) = SocketTable::read_record(slot) {
                    out.push(r);
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn base(&self) -> std::ptr::NonNull<u8> {
        self.map.ptr
    }
}

fn is_alive(cache: &mut Vec<(u32, bool)>, pid: u32) -> bool {
    if let Some(&(_, live)) = cache.iter().find(|(p, _)| *p == pid) {
        return live;
    }
    let live = process_alive(pid);
    cache.push((pid, live));
    live
}

/// The agent's view of every user's table: attached read-only as they
/// appear in `/proc/sysvipc/shm`, detached when no process of theirs is
/// left (so the kernel can free them).
#[derive(Default)]
pub(crate) struct AllTables {
    inner: Mutex<Tables>,
}

#[derive(Default)]
struct Tables {
    /// Attached tables of this agent: segment id → (table, its user).
    ours: std::collections::HashMap<i32, (SocketTable, u32)>,
    /// Segments looked at that are not this agent's tables.
    others: std::collections::HashSet<i32>,
}

impl AllTables {
    /// Brings the set of tables up to date with the kernel's list.
    fn refresh(&self, t: &mut Tables, instance: u32) {
        let Some(text) = read_segment_list() else {
            return;
        };
        let listed = parse_segments(&text);
        let now: std::collections::HashMap<i32, &Segment> =
            listed.iter().map(|s| (s.id, s)).collect();
        // Ours to keep while some process besides us has it attached.
        t.ours
            .retain(|id, _| now.get(id).is_some_and(|s| s.attached > 1));
        t.others.retain(|id| now.contains_key(id));
        let mut per_user: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
        for (_, user) in t.ours.values() {
            *per_user.entry(*user).or_default() += 1;
        }
        for seg in &listed {
            if t.ours.contains_key(&seg.id) || t.others.contains(&seg.id) {
                continue;
            }
            if !seg.is_candidate() || seg.attached == 0 {
                t.others.insert(seg.id);
                continue;
            }
            let n = per_user.entry(seg.uid).or_default();
            if *n >= TABLES_PER_USER || t.ours.len() >= TABLES_MAX {
                // Looked at again next time, when others may have gone.
                continue;
            }
            match SocketTable::attach(seg.id, seg.uid, true) {
                Ok(table) if table.reports_to(instance) => {
                    *n += 1;
                    t.ours.insert(seg.id, (table, seg.uid));
                }
                // A table still being set up is read next time.
                Ok(table) if table.header().magic.load(Ordering::Acquire) == 0 => {}
                _ => {
                    t.others.insert(seg.id);
                }
            }
        }
    }

    /// Every listed record of a live process in every table of this agent.
    pub(crate) fn records(&self, instance: u32) -> Vec<(u32, SocketRecord)> {
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh(&mut t, instance);
        let mut out = Vec::new();
        for (table, _) in t.ours.values() {
            table.listed(&mut out);
        }
        let mut alive = Vec::new();
        out.retain(|(pid, r)| {
            // A record that cannot name a live process's socket is dropped
            // rather than looked up.
            r.modules[0] != 0
                && libc::pid_t::try_from(*pid).is_ok_and(|p| p > 0)
                && r.fd >= 0
                && is_alive(&mut alive, *pid)
        });
        out
    }

    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.inner.lock().map(|t| t.ours.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_list_parses() {
        let text = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap\n\
                             0    1015829  1644                528384  5678  5678      2  1000  1000  1000  1000 1796506312          0 1796506312                  8192                     0\n\
                    1234567890         7   666                  4096     1     1      0     0     0     0     0          0          0 1796506312                     0                     0\n\
                   garbage line\n";
        let segs = parse_segments(text);
        assert_eq!(
            segs,
            vec![
                Segment {
                    id: 1015829,
                    mode: 0o1644,
                    size: 528384,
                    attached: 2,
                    uid: 1000,
                    creator: 1000
                },
                Segment {
                    id: 7,
                    mode: 0o666,
                    size: 4096,
                    attached: 0,
                    uid: 0,
                    creator: 0
                },
            ]
        );
        let table = Segment {
            size: TABLE_LEN,
            ..segs[0]
        };
        assert!(table.is_candidate());
        assert!(
            !Segment {
                mode: 0o666,
                ..table
            }
            .is_candidate(),
            "others may write"
        );
        assert!(
            !Segment {
                creator: 0,
                ..table
            }
            .is_candidate(),
            "given away"
        );
        assert!(!segs[1].is_candidate(), "wrong size");
    }

    #[test]
    fn the_table_size_is_what_tests_outside_look_for() {
        // tests/security/test_tap_control.py finds tables by this size.
        assert_eq!(TABLE_LEN, 528_384);
    }

    #[test]
    fn reading_the_list_keeps_errno() {
        set_errno(libc::EAGAIN);
        assert!(read_segment_list().is_some());
        assert_eq!(errno(), libc::EAGAIN);
    }
}
