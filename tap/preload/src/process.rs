//! Per-process state: the mapped control area and the parsed module table.

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::real::HOT;
use l45_tap_engine::{Config, Needs, PeerPortFilter, PEER_FILTER_MAX};
use l45_tap_shm::{ImageRef, ModuleSlot, ShmReader, StatsSlot, NAME_LEN, PROTO_TCP, PROTO_UDP};

static SHM: OnceLock<ShmReader> = OnceLock::new();
/// Last time (s since the epoch) opening the control area failed.
static LAST_TRY: AtomicU64 = AtomicU64::new(0);
static CONFIG: Mutex<Option<Arc<Active>>> = Mutex::new(None);
static PROCESS_NAME: OnceLock<([u8; NAME_LEN], usize)> = OnceLock::new();
/// This process's id, 0 until asked (glibc no longer caches getpid). A
/// forked child starts with 0 again (see `forked_child`).
static PID: AtomicU32 = AtomicU32::new(0);

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Wall-clock time for the modules' active timestamps. The coarse clock
/// (one tick's resolution, a few ms) is read from the vDSO without the
/// clock-source read the precise one needs: this runs on every customized
/// message.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The control area, once it exists. Until the agent has created it (or
/// while the file at the path is not one this process may trust:
/// `ShmReader::open`), the tap passes everything through and retries at
/// most once a second.
#[inline]
pub fn shm() -> Option<&'static ShmReader> {
    match SHM.get() {
        Some(s) => Some(s),
        None => open_shm(),
    }
}

#[cold]
fn open_shm() -> Option<&'static ShmReader> {
    let now = now_s();
    let last = LAST_TRY.load(Ordering::Relaxed);
    if last != 0 && now.saturating_sub(last) < 1 {
        return None;
    }
    LAST_TRY.store(now.max(1), Ordering::Relaxed);
    // L45_TAP_SHM only if this is not a set-uid/set-gid process.
    let path = l45_tap_shm::control_path_of_this_process();
    match ShmReader::open(&path) {
        Ok(r) => {
            let _ = SHM.set(r);
            let mapped = SHM.get();
            if let Some(m) = mapped {
                HOT.generation.store(
                    std::ptr::from_ref(m.generation_word()).cast_mut(),
                    Ordering::Release,
                );
            }
            mapped
        }
        Err(_) => None,
    }
}

/// One generation of the module table as this process sees it.
pub struct Active {
    pub config: Config,
    /// `Config::needs` for new TCP and UDP sockets of this process.
    needs: [Option<Needs>; 2],
    /// `Config::candidates` for new TCP and UDP sockets of this process.
    candidates: [Vec<usize>; 2],
    /// `Config::deferred_candidates` for new TCP and UDP sockets.
    deferred: [Vec<usize>; 2],
    /// The table as read, for the deferred modules' slots and images.
    slots: Vec<(usize, ModuleSlot)>,
    images: Vec<(usize, ImageRef)>,
}

impl Active {
    pub fn needs(&self, protocol: u8) -> Option<Needs> {
        self.needs[usize::from(protocol == PROTO_UDP)]
    }

    pub fn candidates(&self, protocol: u8) -> &[usize] {
        &self.candidates[usize::from(protocol == PROTO_UDP)]
    }

    /// Deferred modules (kinds from images not loaded yet) a new socket of
    /// `protocol` could attach: `Config::deferred_at_first_sight` among them.
    pub fn deferred(&self, protocol: u8) -> &[usize] {
        &self.deferred[usize::from(protocol == PROTO_UDP)]
    }

    /// What a process needs of one table: candidates and filter computed
    /// once (and again when a deferred module is resolved).
    fn new(
        config: Config,
        slots: Vec<(usize, ModuleSlot)>,
        images: Vec<(usize, ImageRef)>,
    ) -> Active {
        let name = process_name();
        let needs = [config.needs(PROTO_TCP, name), config.needs(PROTO_UDP, name)];
        let candidates = [
            config.candidates(PROTO_TCP, name),
            config.candidates(PROTO_UDP, name),
        ];
        let deferred = [
            config.deferred_candidates(PROTO_TCP, name),
            config.deferred_candidates(PROTO_UDP, name),
        ];
        publish_udp_peer_filter(
            config.generation,
            config.peer_port_filter_with(&candidates[1], &deferred[1]),
        );
        Active {
            config,
            needs,
            candidates,
            deferred,
            slots,
            images,
        }
    }
}

/// The control area's current generation, once it is mapped.
#[inline]
pub fn generation() -> Option<u64> {
    let word = HOT.generation.load(Ordering::Acquire);
    // SAFETY: a non-null pointer is the generation word of the control
    // area, mapped for the rest of the process's life (SHM is never reset).
    (!word.is_null()).then(|| unsafe { (*word).load(Ordering::Acquire) })
}

/// The parsed module table of generation `generation` (parsed once per
/// process per generation); `None` if the agent did not finish writing it
/// in time (the caller keeps its socket's chain for this call).
///
/// Parsing loads nothing: a module of a kind from an image this process
/// has not loaded is deferred (`Config::from_used_deferring`) until a
/// socket's chain would include it (`resolve`).
pub fn config(shm: &ShmReader, generation: u64) -> Option<Arc<Active>> {
    let mut cached = CONFIG.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = cached.as_ref() {
        if c.config.generation == generation {
            return Some(c.clone());
        }
    }
    let (g, slots, images) = shm.snapshot_with_images()?;
    let config = Config::from_used_deferring(g, slots.iter().map(|(i, s)| (*i, s)), |slot| {
        images
            .iter()
            .find(|(i, _)| *i == slot)
            .and_then(|(_, image)| crate::images::loaded(image))
    });
    let c = Arc::new(Active::new(config, slots, images));
    *cached = Some(c.clone());
    Some(c)
}

/// Whether this thread may load a module image now: not inside a signal
/// handler (loading reads a file, allocates and calls `dlopen`, none of
/// which is async-signal-safe). A socket that meets a deferred module
/// there stays as it is for this call and tries again at its next one.
pub fn may_load() -> bool {
    !crate::signals::in_handler()
}

/// Resolves the deferred module `id` of generation `generation`: loads
/// its image (`images::kind`: trusted published copy, digest checked)
/// and makes it a module of the table this process uses, or — if it
/// cannot be loaded — rejects it: its sockets in this process stay
/// uncustomized, and the module's `errors` counter says so (once per
/// process and table generation). False if the table moved on meanwhile
/// (the caller syncs again at its next call). Never from a signal handler
/// (`may_load`).
pub fn resolve(generation: u64, id: u32) -> bool {
    let active = {
        let mut cached = CONFIG.lock().unwrap_or_else(|p| p.into_inner());
        let Some(current) = cached
            .as_ref()
            .filter(|c| c.config.generation == generation)
        else {
            return false;
        };
        // Another thread may have resolved it already: then this thread
        // only picks up the table it made.
        if let Some(d) = current.config.deferred.iter().find(|d| d.id == id) {
            let slot = d.slot;
            let module = current
                .slots
                .iter()
                .find(|(i, _)| *i == slot)
                .map(|(_, s)| *s);
            let kind = current
                .images
                .iter()
                .find(|(i, _)| *i == slot)
                .and_then(|(_, image)| crate::images::kind(image));
            if kind.is_none() {
                // (stats.rs sits above this file: credited here directly.)
                if let Some(st) = stats(slot, id) {
                    st.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            let config = match module {
                Some(m) => current.config.resolve(slot, &m, kind),
                None => {
                    let mut c = current.config.clone();
                    c.deferred.retain(|d| d.id != id);
                    c.rejected.push(id);
                    c
                }
            };
            let next = Arc::new(Active::new(
                config,
                current.slots.clone(),
                current.images.clone(),
            ));
            *cached = Some(next);
        }
        cached.clone()
    };
    // This thread's copy is of the same generation: replace it, or
    // `with_config` would keep answering with the deferred module.
    let _ = THREAD_CONFIG.try_with(|c| {
        if let Ok(mut slot) = c.try_borrow_mut() {
            *slot = active;
        }
    });
    true
}

/// `Config::peer_port_filter` of this process's new UDP sockets, for the
/// generation in `stamp` (generation + 1; 0: none). Plain atomics, written
/// seqlock-style under the `CONFIG` lock: a connect reads it with neither a
/// lock nor a thread-local.
struct UdpPeerFilter {
    stamp: AtomicU64,
    len: AtomicU32,
    /// A port, or `ANY_PORT`.
    ports: [AtomicU32; PEER_FILTER_MAX],
}

const ANY_PORT: u32 = 1 << 16;

static UDP_PEER: UdpPeerFilter = UdpPeerFilter {
    stamp: AtomicU64::new(0),
    len: AtomicU32::new(0),
    ports: [const { AtomicU32::new(0) }; PEER_FILTER_MAX],
};

fn publish_udp_peer_filter(generation: u64, filter: Option<PeerPortFilter>) {
    UDP_PEER.stamp.store(0, Ordering::Relaxed);
    let Some(f) = filter else { return };
    fence(Ordering::Release);
    UDP_PEER.len.store(f.len as u32, Ordering::Relaxed);
    for (slot, port) in UDP_PEER.ports.iter().zip(&f.ports[..f.len]) {
        slot.store(port.map_or(ANY_PORT, u32::from), Ordering::Relaxed);
    }
    UDP_PEER.stamp.store(generation + 1, Ordering::Release);
}

/// Whether a module attaches to a new UDP socket of this process that
/// connects to a peer on `port`, if the filter for `generation` is at hand
/// (`None`: ask the parsed table).
#[inline]
pub fn udp_peer_attaches(generation: u64, port: u16) -> Option<bool> {
    let stamp = generation + 1;
    if UDP_PEER.stamp.load(Ordering::Acquire) != stamp {
        return None;
    }
    let len = (UDP_PEER.len.load(Ordering::Relaxed) as usize).min(PEER_FILTER_MAX);
    let attaches = UDP_PEER.ports[..len].iter().any(|p| {
        let p = p.load(Ordering::Relaxed);
        p == ANY_PORT || p == u32::from(port)
    });
    fence(Ordering::Acquire);
    (UDP_PEER.stamp.load(Ordering::Relaxed) == stamp).then_some(attaches)
}

std::thread_local! {
    /// The table this thread used last: first sight on a new socket then
    /// takes neither the process-wide lock nor a reference count.
    static THREAD_CONFIG: std::cell::RefCell<Option<Arc<Active>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` on the parsed module table of generation `generation`; `None`
/// as `config`.
pub fn with_config<R>(
    shm: &ShmReader,
    generation: u64,
    mut f: impl FnMut(&Active) -> R,
) -> Option<R> {
    let hit = THREAD_CONFIG.try_with(|c| {
        let cached = c.try_borrow().ok()?;
        let active = cached
            .as_ref()
            .filter(|a| a.config.generation == generation)?;
        Some(f(active))
    });
    if let Ok(Some(r)) = hit {
        return Some(r);
    }
    let active = config(shm, generation)?;
    let r = f(&active);
    let _ = THREAD_CONFIG.try_with(|c| {
        if let Ok(mut slot) = c.try_borrow_mut() {
            *slot = Some(active);
        }
    });
    Some(r)
}

pub fn stats(slot: usize, id: u32) -> Option<&'static StatsSlot> {
    let s = SHM.get()?.stats(slot)?;
    (s.id.load(Ordering::Acquire) == id).then_some(s)
}

/// The process name (comm of the thread-group leader).
pub fn process_name() -> &'static [u8] {
    let (name, len) = PROCESS_NAME.get_or_init(|| {
        let mut name = [0u8; NAME_LEN];
        let text = std::fs::read("/proc/self/comm").unwrap_or_default();
        let text = text.strip_suffix(b"\n").unwrap_or(&text);
        let len = text.len().min(NAME_LEN - 1);
        name[..len].copy_from_slice(&text[..len]);
        (name, len)
    });
    &name[..*len]
}

/// The calling thread's name.
pub fn thread_name() -> ([u8; NAME_LEN], usize) {
    let mut name = [0u8; NAME_LEN];
    // SAFETY: PR_GET_NAME writes at most 16 bytes (NUL included) to `name`.
    unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
    let len = name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
    (name, len)
}

pub fn pid() -> u32 {
    let p = PID.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    watch_forks();
    // SAFETY: getpid has no preconditions.
    let p = unsafe { libc::getpid() } as u32;
    PID.store(p, Ordering::Relaxed);
    p
}

std::thread_local! {
    /// The calling thread's id, 0 until asked.
    static TID: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// The calling thread's id (one system call per thread, then cached).
pub fn tid() -> u32 {
    TID.with(|t| {
        if t.get() == 0 {
            watch_forks();
            // SAFETY: gettid has no preconditions.
            t.set(unsafe { libc::gettid() } as u32);
        }
        t.get()
    })
}

fn watch_forks() {
    static ATFORK: std::sync::Once = std::sync::Once::new();
    ATFORK.call_once(|| {
        // SAFETY: registers a handler that only resets our caches. A child
        // made by a raw clone system call skips it and would report its
        // parent's ids (docs/user-space-tap.md, limits).
        unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
    });
}

/// Runs in a forked child (pthread_atfork): new process and thread ids.
extern "C" fn forked_child() {
    PID.store(0, Ordering::Relaxed);
    let _ = TID.try_with(|t| t.set(0));
}
