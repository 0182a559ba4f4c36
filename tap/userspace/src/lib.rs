//! The agent's backend for the user-space tap: every committed transaction
//! becomes one new module table in the shared-memory control area, which
//! every tapped process (running ones included) picks up on its next socket
//! call. Statistics and tapped sockets are read back from the shared part
//! and the users' socket tables, which tapped processes write: the agent
//! treats them as untrusted input (see `SeenSockets` for what socket counts guarantee).
//! Security keys never leave the agent's memory. Sockets that a module's
//! match selects but that escape the tap are found from /proc
//! (`bypass.rs`).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use l45_modules::{security, Instance, Kind};
use l45_tap_control::{
    Attach, Bypass, ChallengeAnswer, Change, KindImage, ModuleConfig, ModuleState, ModuleStats,
    Protocol, SocketInfo, TapControl, TapError, Transaction,
};
use l45_tap_shm::{
    flags, set_name, AddrMatch, ImageRef, ModuleSlot, ShmError, ShmWriter, SocketRecord, MAX_CHAIN,
    MAX_MODULES, MAX_SOCKETS, PROTO_ANY, PROTO_TCP, PROTO_UDP,
};

pub use images::{LoadedKind, IMAGE_TARGET};

pub struct UserspaceTap {
    shm: ShmWriter,
    inner: Mutex<Inner>,
    /// Kinds loaded from module images, by name (`images.rs`).
    kinds: Mutex<HashMap<String, LoadedKind>>,
    seen: Mutex<SeenSockets>,
    bypass: Mutex<bypass::Watch>,
    /// Statistics slots found naming another module (`housekeeping`).
    overwritten_stats: std::sync::atomic::AtomicU64,
}

/// The sockets the agent has seen listed with modules attached, by
/// (pid, descriptor, socket inode), with every module id listed for them.
///
/// Socket tables are per user (`l45_tap_shm`): only a process of a
/// socket's own user can rewrite or erase its record, but any user can
/// list records naming other users' pids in their own table, so a listing
/// alone proves little. A record counts only if /proc shows that pid
/// holds a socket on that descriptor, and erasing cannot hide a socket the
/// agent has seen: a seen socket counts until /proc shows its descriptor
/// closed (or no longer that socket) or its process gone, whatever the
/// table says meanwhile (the agent reads the tables at least once a
/// second). What a forger can still do: make a module look used by naming
/// real sockets (it delays `deprecated-module-idle`, as holding a real
/// tapped socket would). Where /proc cannot be read (a non-root agent and
/// another user's process) a record counts while it is listed, which only
/// that user's processes can change.
#[derive(Default)]
struct SeenSockets {
    sockets: HashMap<(u32, i32, u64), Vec<u32>>,
}

/// Most sockets remembered; beyond it, new ones count only while listed.
const SEEN_MAX: usize = 4 * MAX_SOCKETS;

#[derive(Default)]
struct Inner {
    /// Applied modules by id, with their table slot.
    modules: BTreeMap<u32, (usize, ModuleConfig)>,
    /// Table prepared by the last successful `prepare`.
    prepared: Option<Prepared>,
    revision: u32,
}

struct Prepared {
    table: Box<[ModuleSlot; MAX_MODULES]>,
    images: Box<[ImageRef; MAX_MODULES]>,
    modules: BTreeMap<u32, (usize, ModuleConfig)>,
    revision: u32,
}

/// Why a module cannot go into the table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SlotError {
    #[error("kind {0} is neither built into the user-space tap nor loaded from a module image")]
    UnknownKind(String),
    #[error("parameters: {0}")]
    Parameters(String),
    #[error("{0} is not an IP address or prefix")]
    Address(String),
    #[error("name {0:?} is longer than 15 bytes")]
    Name(String),
    #[error("parameters do not fit the tap's table entry")]
    TooLong,
    #[error("security key must be 32 bytes")]
    Key,
}

fn addr_match(text: &str) -> Result<AddrMatch, SlotError> {
    let bad = || SlotError::Address(text.to_string());
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
        None => (text, None),
    };
    // YANG ip-address may carry a zone ("fe80::1%eth0"); matching ignores it.
    let addr = addr.split('%').next().unwrap_or(addr);
    let ip: IpAddr = addr.parse().map_err(|_| bad())?;
    let mut m = AddrMatch::default();
    match ip {
        IpAddr::V4(v4) => {
            m.family = 4;
            m.prefix = prefix.unwrap_or(32);
            m.addr[..4].copy_from_slice(&v4.octets());
            if m.prefix > 32 {
                return Err(bad());
            }
        }
        IpAddr::V6(v6) => {
            m.family = 6;
            m.prefix = prefix.unwrap_or(128);
            m.addr = v6.octets();
            if m.prefix > 128 {
                return Err(bad());
            }
        }
    }
    Ok(m)
}

/// The table entry for one module, and the module image of its kind if
/// that is not built in (found in `kinds`, the loaded images). The
/// parameters are checked by the kind's own parser, as the tapped
/// processes will parse them.
pub fn module_slot(
    m: &ModuleConfig,
    revision: u32,
    kinds: &HashMap<String, LoadedKind>,
) -> Result<(ModuleSlot, ImageRef), SlotError> {
    let unknown = || SlotError::UnknownKind(m.kind.clone());
    let (kind, image) = match Kind::from_name(&m.kind) {
        Some(k) => (k, ImageRef::default()),
        None => {
            let loaded = kinds.get(&m.kind).ok_or_else(unknown)?;
            let image = ImageRef::new(&m.kind, loaded.sha256).ok_or_else(unknown)?;
            (Kind::External(loaded.kind), image)
        }
    };
    let pairs = || m.parameters.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    Instance::new(m.id, kind, pairs()).map_err(|e| SlotError::Parameters(e.to_string()))?;
    let mut s = ModuleSlot {
        flags: flags::USED,
        id: m.id,
        kind: kind.code(),
        priority: m.priority,
        revision,
        ..ModuleSlot::default()
    };
    if m.activated {
        s.flags |= flags::ACTIVATED;
    }
    if m.deprecated {
        s.flags |= flags::DEPRECATED;
    }
    if m.attach == Attach::Immediate {
        s.flags |= flags::IMMEDIATE;
    }
    s.protocol = match m.matching.protocol {
        Some(Protocol::Tcp) => PROTO_TCP,
        Some(Protocol::Udp) => PROTO_UDP,
        Some(Protocol::Any) | None => PROTO_ANY,
    };
    if let Some(a) = &m.matching.source_address {
        s.source = addr_match(a)?;
    }
    if let Some(a) = &m.matching.destination_address {
        s.destination = addr_match(a)?;
    }
    if let Some(p) = m.matching.source_port {
        s.flags |= flags::HAS_SRC_PORT;
        s.source_port = p;
    }
    if let Some(p) = m.matching.destination_port {
        s.flags |= flags::HAS_DST_PORT;
        s.destination_port = p;
    }
    for (field, name) in [
        (&mut s.thread_name, &m.matching.thread_name),
        (&mut s.process_name, &m.matching.process_name),
    ] {
        if let Some(n) = name {
            if !set_name(field, n) {
                return Err(SlotError::Name(n.clone()));
            }
        }
    }
    if !s.set_params(pairs()) {
        return Err(SlotError::TooLong);
    }
    // The key stays in the agent (`challenge`): the table is readable by
    // every local user.
    if m.key.as_ref().is_some_and(|k| k.len() != 32) {
        return Err(SlotError::Key);
    }
    Ok((s, image))
}

impl UserspaceTap {
    /// Creates (or takes over) the control area at `path`.
    pub fn new(path: &Path) -> Result<UserspaceTap, ShmError> {
        Ok(UserspaceTap {
            shm: ShmWriter::create(path)?,
            inner: Mutex::default(),
            kinds: Mutex::default(),
            seen: Mutex::default(),
            bypass: Mutex::default(),
            overwritten_stats: Default::default(),
        })
    }

    pub fn path(&self) -> &str {
        self.shm.path()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn watch(&self) -> std::sync::MutexGuard<'_, bypass::Watch> {
        self.bypass.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts sockets (`SeenSockets`) and looks for sockets escaping the
    /// activated modules (`bypass.rs`), from one read of the tables.
    fn count_and_detect(&self) {
        let table = self.shm.modules();
        let mut watch = self.watch();
        if !bypass::Watch::wanted(&table) {
            let _ = self.socket_counts_of(self.checked_sockets());
            watch.tick(&table, &[], &[], &bypass::Proc { me: 0 });
            return;
        }
        // /proc/net first: a socket a tapped process has just made is
        // listed by the time the tables are read.
        let net = procfs::read_net_sockets();
        let checked = self.checked_sockets();
        let listed: Vec<bypass::Listed> = checked
            .iter()
            .filter_map(|(pid, r, inode)| {
                Some(bypass::Listed {
                    pid: *pid,
                    inode: (*inode)?,
                    chain: chain_ids(r),
                })
            })
            .collect();
        let _ = self.socket_counts_of(checked);
        watch.tick(
            &table,
            &net,
            &listed,
            &bypass::Proc {
                me: std::process::id(),
            },
        );
    }

    /// Listed sockets whose pid holds a socket on that descriptor (or
    /// cannot be checked), with its inode when checked.
    fn checked_sockets(&self) -> Vec<(u32, SocketRecord, Option<u64>)> {
        self.shm
            .sockets()
            .into_iter()
            .filter_map(|(pid, r)| match procfs::socket_of(pid, r.fd) {
                procfs::Socket::Open(inode) => Some((pid, r, Some(inode))),
                procfs::Socket::Unknown => Some((pid, r, None)),
                procfs::Socket::Gone => None,
            })
            .collect()
    }

    /// Sockets per module id, as `SeenSockets` explains.
    fn socket_counts(&self) -> HashMap<u32, u32> {
        self.socket_counts_of(self.checked_sockets())
    }

    fn socket_counts_of(&self, listed: Vec<(u32, SocketRecord, Option<u64>)>) -> HashMap<u32, u32> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut now: HashMap<(u32, i32, u64), Vec<u32>> = HashMap::new();
        let mut counts = HashMap::new();
        let mut count = |modules: &[u32]| {
            for &id in modules {
                *counts.entry(id).or_insert(0u32) += 1;
            }
        };
        for (pid, r, inode) in listed {
            let ids = chain_ids(&r);
            let Some(inode) = inode else {
                count(&ids);
                continue;
            };
            let key = (pid, r.fd, inode);
            if !now.contains_key(&key) {
                let known = seen.sockets.remove(&key);
                if known.is_none() && now.len() + seen.sockets.len() >= SEEN_MAX {
                    count(&ids);
                    continue;
                }
                now.insert(key, known.unwrap_or_default());
            }
            let Some(modules) = now.get_mut(&key) else {
                continue;
            };
            // A rewrite never drops a module the socket was seen with.
            for id in ids {
                if !modules.contains(&id) && modules.len() < 2 * MAX_CHAIN {
                    modules.push(id);
                }
            }
        }
        for (key, modules) in seen.sockets.drain() {
            if !now.contains_key(&key)
                && procfs::socket_of(key.0, key.1) == procfs::Socket::Open(key.2)
            {
                now.insert(key, modules);
            }
        }
        for modules in now.values() {
            count(modules);
        }
        seen.sockets = now;
        counts
    }
}

fn chain_ids(r: &SocketRecord) -> Vec<u32> {
    r.modules
        .iter()
        .copied()
        .take_while(|&id| id != 0)
        .collect()
}

impl TapControl for UserspaceTap {
    fn name(&self) -> &'static str {
        "userspace"
    }

    fn prepare(&self, txn: &Transaction) -> Result<(), TapError> {
        let mut inner = self.lock();
        let mut modules = inner.modules.clone();
        let mut revision = inner.revision;
        for change in &txn.changes {
            match change {
                Change::Unregister(id) => {
                    modules.remove(id);
                }
                Change::Register(m) | Change::Update(m) => {
                    let slot = match modules.get(&m.id) {
                        Some((slot, _)) => *slot,
                        None => (0..MAX_MODULES)
                            .find(|s| !modules.values().any(|(used, _)| used == s))
                            .ok_or_else(|| {
                                TapError::ResourceExhausted(format!(
                                    "the user-space tap holds at most {MAX_MODULES} modules"
                                ))
                            })?,
                    };
                    modules.insert(m.id, (slot, m.clone()));
                }
            }
        }
        let kinds = self.kinds();
        let mut table = Box::new([ModuleSlot::default(); MAX_MODULES]);
        let mut images = Box::new([ImageRef::default(); MAX_MODULES]);
        let current: BTreeMap<u32, ModuleSlot> = self
            .shm
            .modules()
            .into_iter()
            .filter(|s| s.used())
            .map(|s| (s.id, s))
            .collect();
        for (id, (slot, m)) in &modules {
            let unchanged = inner.modules.get(id).is_some_and(|(_, old)| old == m);
            let refused = |e: SlotError| TapError::Refused {
                id: *id,
                reason: e.to_string(),
            };
            let (entry, image) = match current.get(id) {
                Some(s) if unchanged => {
                    (*s, module_slot(m, s.revision, &kinds).map_err(refused)?.1)
                }
                _ => {
                    revision = revision.wrapping_add(1);
                    module_slot(m, revision, &kinds).map_err(refused)?
                }
            };
            table[*slot] = entry;
            images[*slot] = image;
        }
        inner.prepared = Some(Prepared {
            table,
            images,
            modules,
            revision,
        });
        Ok(())
    }

    fn apply(&self, _txn: &Transaction) {
        let mut inner = self.lock();
        if let Some(p) = inner.prepared.take() {
            self.shm.publish_with_images(&p.table, &p.images);
            inner.modules = p.modules;
            inner.revision = p.revision;
            // Modules attaching to new sockets only do not count the
            // sockets that exist now as escaping them.
            let mut watch = self.watch();
            let net = if watch.needs_net(&p.table[..]) {
                procfs::read_net_sockets()
            } else {
                Vec::new()
            };
            watch.applied(&p.table[..], &net);
            tracing::info!(
                generation = self.shm.generation(),
                modules = inner.modules.len(),
                "user-space tap table published"
            );
        }
    }

    fn abort(&self, _txn: &Transaction) {
        self.lock().prepared = None;
    }

    fn module_stats(&self) -> Vec<ModuleStats> {
        let inner = self.lock();
        // Made from the socket table, not kept by the tapped processes: a
        // process that exits (or is killed) stops counting with it.
        let counts = self.socket_counts();
        let watch = self.watch();
        inner
            .modules
            .values()
            .map(|(slot, m)| {
                // Sockets and state never depend on the statistics slot,
                // which anyone may overwrite (a wrong id there only loses
                // the counters until `housekeeping` stamps it again).
                let st = self
                    .shm
                    .stats(*slot)
                    .filter(|s| s.id.load(Ordering::Acquire) == m.id);
                let load = |f: fn(&l45_tap_shm::StatsSlot) -> &std::sync::atomic::AtomicU64| {
                    st.map_or(0, |s| f(s).load(Ordering::Relaxed))
                };
                let sockets = counts.get(&m.id).copied().unwrap_or(0);
                let active_ts = l45_tap_control::active_ts_from_ns(load(|s| &s.active_ts_ns));
                let state = if m.deprecated {
                    ModuleState::Deprecated
                } else if sockets > 0 || active_ts.is_some() {
                    ModuleState::Active
                } else {
                    ModuleState::Registered
                };
                ModuleStats {
                    id: m.id,
                    state,
                    active_ts,
                    socket_count: sockets,
                    bytes_sent: load(|s| &s.bytes_sent),
                    bytes_received: load(|s| &s.bytes_received),
                    messages_sent: load(|s| &s.messages_sent),
                    messages_received: load(|s| &s.messages_received),
                    errors: load(|s| &s.errors),
                    bypassed: watch.count(m.id),
                }
            })
            .collect()
    }

    fn housekeeping(&self) {
        // Statistics slots whose id someone overwrote count again from zero.
        for (slot, m) in self.lock().modules.values() {
            if self.shm.stamp_stats(*slot, m.id) {
                self.overwritten_stats.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    module = m.id,
                    slot,
                    "statistics slot overwritten by another process; counting again from zero"
                );
            }
        }
        // Every second, so a socket is seen (and protected from erasure)
        // soon after it is listed, whether or not anyone asks.
        self.count_and_detect();
    }

    fn bypasses(&self) -> Vec<Bypass> {
        self.watch().drain()
    }

    fn backend_errors(&self) -> Vec<(&'static str, u64)> {
        vec![(
            "shm_stats_slot_overwritten",
            self.overwritten_stats.load(Ordering::Relaxed),
        )]
    }

    fn sockets(&self) -> Vec<SocketInfo> {
        self.checked_sockets()
            .into_iter()
            .map(|(pid, r, _)| SocketInfo {
                id: (u64::from(pid) << 32) | u64::from(r.fd as u32),
                protocol: match r.protocol {
                    PROTO_TCP => Protocol::Tcp,
                    PROTO_UDP => Protocol::Udp,
                    _ => Protocol::Any,
                },
                // What the tap did not need for matching it did not look
                // up: read it from /proc now.
                source: r
                    .local
                    .to_std()
                    .filter(|a| a.port() != 0) // seen before the kernel bound it
                    .or_else(|| procfs::local_address(pid, r.fd, r.protocol == PROTO_TCP)),
                destination: r.remote.to_std(),
                pid,
                thread_name: match l45_tap_shm::name_bytes(&r.thread_name) {
                    [] => procfs::thread_name(pid, r.tid).unwrap_or_default(),
                    name => String::from_utf8_lossy(name).into_owned(),
                },
                process_name: match l45_tap_shm::name_bytes(&r.process_name) {
                    [] => procfs::process_name(pid).unwrap_or_default(),
                    name => String::from_utf8_lossy(name).into_owned(),
                },
                modules: chain_ids(&r),
            })
            .collect()
    }

    fn challenge(
        &self,
        id: u32,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<ChallengeAnswer, TapError> {
        // Answered from the agent's own copy of the applied module's key:
        // it proves this agent holds the key the NCO configured, not that a
        // tapped process runs the module (processes never see keys).
        let key: [u8; 32] = {
            let inner = self.lock();
            let (_, m) = inner.modules.get(&id).ok_or(TapError::UnknownModule(id))?;
            let Some(k) = &m.key else {
                return Err(TapError::Refused {
                    id,
                    reason: "module has no security key".into(),
                });
            };
            k.as_slice().try_into().map_err(|_| TapError::Refused {
                id,
                reason: "security key must be 32 bytes".into(),
            })?
        };
        let mut fresh = [0u8; security::NONCE_LEN];
        fill_random(&mut fresh).map_err(|e| TapError::Backend(format!("no randomness: {e}")))?;
        let answer = security::respond(&key, id, nonce, ciphertext, &fresh).map_err(|e| {
            TapError::Refused {
                id,
                reason: format!("challenge failed: {e}"),
            }
        })?;
        Ok(ChallengeAnswer {
            nonce: fresh.to_vec(),
            ciphertext: answer.to_vec(),
        })
    }

    fn image_target(&self) -> Option<String> {
        IMAGE_TARGET.map(str::to_string)
    }

    fn load_kind(&self, image: &KindImage) -> Result<(), TapError> {
        self.load_image(image)
    }

    fn unload_kind(&self, kind: &str) -> Result<(), TapError> {
        self.unload_image(kind)
    }
}

fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

mod bypass;
mod images;
mod procfs;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod image_tests;
