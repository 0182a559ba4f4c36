//! The boundary between the device agent and a tap backend.
//!
//! The agent turns every committed change of `/l45:customizations` into one
//! [`Transaction`] and drives it through [`TapControl`] in two phases, as holo
//! does: `prepare` may fail and must then leave the tap unchanged; `apply`
//! cannot fail; `abort` undoes a successful `prepare` when a later step (for
//! example persisting the configuration) fails. Backends (user-space preload
//! tap, kernel tap, the [`RecordingTap`] used by tests and benchmarks) plug in
//! here without changes to the server.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

// ===== configuration handed to the tap =====

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    NewSockets,
    Immediate,
}

/// Socket selection; `None` is a wildcard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchRules {
    pub protocol: Option<Protocol>,
    /// Address or prefix, as configured (`10.0.0.0/8`, `::1`).
    pub source_address: Option<String>,
    pub source_port: Option<u16>,
    pub destination_address: Option<String>,
    pub destination_port: Option<u16>,
    pub thread_name: Option<String>,
    pub process_name: Option<String>,
}

/// One configured module, as the tap needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleConfig {
    pub id: u32,
    pub name: String,
    /// Identity name of the kind, without prefix (`dns-front-tag`).
    pub kind: String,
    pub priority: u16,
    pub activated: bool,
    pub deprecated: bool,
    pub attach: Attach,
    pub matching: MatchRules,
    /// Kind-specific parameters: leaf name under the kind's container → value.
    pub parameters: BTreeMap<String, String>,
    /// Challenge-response key (32 bytes), if configured.
    pub key: Option<Vec<u8>>,
}

/// One change of a transaction. A backend keeps the configuration of every
/// module it holds, so a change carries only what is new: the whole new
/// configuration, or the id of the module that goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A module the tap does not hold yet.
    Register(ModuleConfig),
    /// A held module whose configuration differs: the new configuration.
    Update(ModuleConfig),
    /// A held module that goes, by id.
    Unregister(u32),
}

impl Change {
    pub fn id(&self) -> u32 {
        match self {
            Change::Register(m) | Change::Update(m) => m.id,
            Change::Unregister(id) => *id,
        }
    }
}

/// All changes of one commit, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transaction {
    pub changes: Vec<Change>,
}

impl Transaction {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

// ===== state reported by the tap =====

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleState {
    Registered,
    Active,
    Deprecated,
    Revoked,
}

impl ModuleState {
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleState::Registered => "registered",
            ModuleState::Active => "active",
            ModuleState::Deprecated => "deprecated",
            ModuleState::Revoked => "revoked",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleStats {
    pub id: u32,
    pub state: ModuleState,
    pub active_ts: Option<SystemTime>,
    pub socket_count: u32,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub errors: u64,
    /// Sockets this module's match selects that escaped it (see
    /// [`Bypass`]), since the module was applied.
    pub bypassed: u64,
}

/// A tap's "last active" timestamp (ns since the epoch, 0 = never).
pub fn active_ts_from_ns(ns: u64) -> Option<SystemTime> {
    (ns != 0).then(|| SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(ns))
}

impl ModuleStats {
    pub fn idle(id: u32, state: ModuleState) -> Self {
        ModuleStats {
            id,
            state,
            active_ts: None,
            socket_count: 0,
            bytes_sent: 0,
            bytes_received: 0,
            messages_sent: 0,
            messages_received: 0,
            errors: 0,
            bypassed: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketInfo {
    pub id: u64,
    pub protocol: Protocol,
    pub source: Option<std::net::SocketAddr>,
    pub destination: Option<std::net::SocketAddr>,
    pub pid: u32,
    pub thread_name: String,
    pub process_name: String,
    /// Attached modules in chain order.
    pub modules: Vec<u32>,
}

/// Why a socket that a module's match selects escaped the module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BypassReason {
    /// Its process does not run the tap (a static binary, a program
    /// started without the preload library).
    NotTapped,
    /// Its process runs the tap but holds an io_uring instance, whose
    /// submissions the tap cannot see.
    IoUring,
}

impl BypassReason {
    /// The YANG enumeration's name.
    pub fn as_str(self) -> &'static str {
        match self {
            BypassReason::NotTapped => "not-tapped",
            BypassReason::IoUring => "io-uring",
        }
    }
}

/// A socket a module's match selects whose traffic the module cannot see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bypass {
    /// The module it escaped.
    pub module: u32,
    pub reason: BypassReason,
    pub pid: u32,
    pub process_name: String,
    pub protocol: Protocol,
    /// Our end (the match's "source").
    pub source: Option<std::net::SocketAddr>,
    /// The peer (the match's "destination"), when the socket has one.
    pub destination: Option<std::net::SocketAddr>,
}

/// Answer of a module to a security challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeAnswer {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// A module image the agent verified (size, digest, signature, target)
/// and stored owner-only under its state directory: a kind that is not
/// built in, ready for the backend to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindImage {
    /// The kind's name as module entries name it (`udp-xor-mask`).
    pub kind: String,
    /// What it was built for (`userspace-x86_64`, `kernel-6.12.118-x86_64`).
    pub target: String,
    /// SHA-256 of the image file, lowercase hex.
    pub sha256_hex: String,
    /// The stored image file.
    pub path: std::path::PathBuf,
}

// ===== the trait =====

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TapError {
    /// The tap cannot take the change (capacity, unknown kind, ...).
    #[error("tap refused module {id}: {reason}")]
    Refused { id: u32, reason: String },
    /// The tap is out of a resource.
    #[error("tap out of resources: {0}")]
    ResourceExhausted(String),
    #[error("no module with id {0} in the tap")]
    UnknownModule(u32),
    #[error("{0} is not supported by this tap backend")]
    Unsupported(&'static str),
    #[error("tap backend failure: {0}")]
    Backend(String),
}

/// What the agent needs from a tap backend. Implementations must be cheap to
/// call from many sessions; they are never called while the agent holds a
/// datastore write across a blocking wait on the network.
pub trait TapControl: Send + Sync {
    /// Short backend name for logs and `--help`.
    fn name(&self) -> &'static str;
    /// Checks and reserves everything `apply` needs; on error the tap is as
    /// before.
    fn prepare(&self, txn: &Transaction) -> Result<(), TapError>;
    /// Makes a prepared transaction take effect; cannot fail.
    fn apply(&self, txn: &Transaction);
    /// Releases what `prepare` reserved.
    fn abort(&self, txn: &Transaction);
    /// Live per-module statistics, for every module the tap knows.
    fn module_stats(&self) -> Vec<ModuleStats>;
    /// Periodic upkeep, called by the agent about once a second (the
    /// user-space tap frees the socket-table slots of exited processes).
    fn housekeeping(&self) {}
    /// Sockets the tap has matched.
    fn sockets(&self) -> Vec<SocketInfo>;
    /// Sockets found escaping a module since the last call (each reported
    /// once; drained). A backend that sees every socket (the kernel tap)
    /// has none.
    fn bypasses(&self) -> Vec<Bypass> {
        Vec::new()
    }
    /// Failures of the backend's own channel to the data path since start
    /// (shared memory, netlink), by what failed, for the agent's metrics.
    /// Every kind the backend counts is listed, zero or not.
    fn backend_errors(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// Relays a challenge to module `id` and returns its answer.
    fn challenge(
        &self,
        id: u32,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<ChallengeAnswer, TapError>;
    /// The image target this backend loads (`userspace-x86_64`,
    /// `kernel-6.12.118-x86_64`); `None` if it loads no module images.
    fn image_target(&self) -> Option<String> {
        None
    }
    /// Makes a verified, stored kind available to module entries: called
    /// at install and again at every agent start for each stored image,
    /// before any configuration naming the kind is prepared. Loading the
    /// same image twice is not an error.
    fn load_kind(&self, _image: &KindImage) -> Result<(), TapError> {
        Err(TapError::Unsupported("module images"))
    }
    /// Makes a loaded kind unavailable again; only called when no module
    /// entry uses it.
    fn unload_kind(&self, _kind: &str) -> Result<(), TapError> {
        Err(TapError::Unsupported("module images"))
    }
}

// ===== recording backend =====

/// One call the [`RecordingTap`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Prepare(Transaction),
    Apply(Transaction),
    Abort(Transaction),
    LoadKind(KindImage),
    UnloadKind(String),
}

/// A backend that keeps modules in memory and records every call. It has no
/// data path: statistics are zero and no socket is ever matched. Used by the
/// server's tests, the benchmark, and `l45-agent --tap recording`.
#[derive(Debug, Default)]
pub struct RecordingTap {
    inner: Mutex<RecordingInner>,
    /// Most modules the tap accepts (`None`: unlimited), like a kernel tap's
    /// fixed table.
    capacity: Option<usize>,
    /// Whether to keep the call log (off for benchmarks).
    keep_log: bool,
}

#[derive(Debug, Default)]
struct RecordingInner {
    /// Applied modules: id → deprecated (all the recording tap reports;
    /// keeping whole configurations would only cost memory).
    modules: BTreeMap<u32, bool>,
    /// Loaded image kinds: kind → image digest.
    kinds: BTreeMap<String, String>,
    log: Vec<Recorded>,
}

impl RecordingTap {
    pub fn new(capacity: Option<usize>, keep_log: bool) -> Self {
        RecordingTap {
            inner: Mutex::default(),
            capacity,
            keep_log,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecordingInner> {
        // A panic elsewhere must not wedge the agent; the data is still sound.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The call log so far.
    pub fn log(&self) -> Vec<Recorded> {
        self.lock().log.clone()
    }

    /// Kinds loaded from module images, by name.
    pub fn loaded_kinds(&self) -> Vec<String> {
        self.lock().kinds.keys().cloned().collect()
    }

    /// Ids of the modules currently applied.
    pub fn module_ids(&self) -> Vec<u32> {
        self.lock().modules.keys().copied().collect()
    }
}

impl TapControl for RecordingTap {
    fn name(&self) -> &'static str {
        "recording"
    }

    fn prepare(&self, txn: &Transaction) -> Result<(), TapError> {
        let mut inner = self.lock();
        if self.keep_log {
            inner.log.push(Recorded::Prepare(txn.clone()));
        }
        let mut count = inner.modules.len() as isize;
        for change in &txn.changes {
            match change {
                Change::Register(m) => {
                    if inner.modules.contains_key(&m.id) {
                        return Err(TapError::Refused {
                            id: m.id,
                            reason: "already registered".into(),
                        });
                    }
                    count += 1;
                }
                Change::Unregister(_) => count -= 1,
                Change::Update(_) => {}
            }
        }
        if let Some(cap) = self.capacity {
            if count > cap as isize {
                return Err(TapError::ResourceExhausted(format!(
                    "the tap holds at most {cap} modules"
                )));
            }
        }
        Ok(())
    }

    fn apply(&self, txn: &Transaction) {
        let mut inner = self.lock();
        if self.keep_log {
            inner.log.push(Recorded::Apply(txn.clone()));
        }
        for change in &txn.changes {
            match change {
                Change::Register(m) | Change::Update(m) => {
                    inner.modules.insert(m.id, m.deprecated);
                }
                Change::Unregister(id) => {
                    inner.modules.remove(id);
                }
            }
        }
    }

    fn abort(&self, txn: &Transaction) {
        let mut inner = self.lock();
        if self.keep_log {
            inner.log.push(Recorded::Abort(txn.clone()));
        }
    }

    fn module_stats(&self) -> Vec<ModuleStats> {
        self.lock()
            .modules
            .iter()
            .map(|(&id, &deprecated)| {
                ModuleStats::idle(
                    id,
                    if deprecated {
                        ModuleState::Deprecated
                    } else {
                        ModuleState::Registered
                    },
                )
            })
            .collect()
    }

    fn sockets(&self) -> Vec<SocketInfo> {
        Vec::new()
    }

    fn challenge(
        &self,
        id: u32,
        _nonce: &[u8],
        _ciphertext: &[u8],
    ) -> Result<ChallengeAnswer, TapError> {
        if !self.lock().modules.contains_key(&id) {
            return Err(TapError::UnknownModule(id));
        }
        Err(TapError::Unsupported(
            "challenge-response (the recording tap runs no module code)",
        ))
    }

    /// Loads images built for user space on this machine's architecture,
    /// as the user-space tap does; it records them and runs no code.
    fn image_target(&self) -> Option<String> {
        Some(format!("userspace-{}", std::env::consts::ARCH))
    }

    fn load_kind(&self, image: &KindImage) -> Result<(), TapError> {
        let mut inner = self.lock();
        if self.keep_log {
            inner.log.push(Recorded::LoadKind(image.clone()));
        }
        inner
            .kinds
            .insert(image.kind.clone(), image.sha256_hex.clone());
        Ok(())
    }

    fn unload_kind(&self, kind: &str) -> Result<(), TapError> {
        let mut inner = self.lock();
        if self.keep_log {
            inner.log.push(Recorded::UnloadKind(kind.to_string()));
        }
        inner.kinds.remove(kind);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(id: u32) -> ModuleConfig {
        ModuleConfig {
            id,
            name: format!("m{id}"),
            kind: "dns-front-tag".into(),
            priority: 10,
            activated: true,
            deprecated: false,
            attach: Attach::NewSockets,
            matching: MatchRules::default(),
            parameters: BTreeMap::new(),
            key: None,
        }
    }

    #[test]
    fn prepare_over_capacity_fails_and_changes_nothing() {
        let tap = RecordingTap::new(Some(1), true);
        let one = Transaction {
            changes: vec![Change::Register(module(1))],
        };
        tap.prepare(&one).unwrap();
        tap.apply(&one);
        let two = Transaction {
            changes: vec![Change::Register(module(2))],
        };
        assert!(matches!(
            tap.prepare(&two),
            Err(TapError::ResourceExhausted(_))
        ));
        assert_eq!(tap.module_ids().len(), 1);
        // Replacing within capacity is fine.
        let swap = Transaction {
            changes: vec![Change::Unregister(1), Change::Register(module(2))],
        };
        tap.prepare(&swap).unwrap();
        tap.apply(&swap);
        assert_eq!(tap.module_ids(), vec![2]);
        assert_eq!(tap.log().len(), 5);
    }

    #[test]
    fn stats_follow_deprecation() {
        let tap = RecordingTap::new(None, false);
        let mut m = module(3);
        tap.apply(&Transaction {
            changes: vec![Change::Register(m.clone())],
        });
        assert_eq!(tap.module_stats()[0].state, ModuleState::Registered);
        m.deprecated = true;
        tap.apply(&Transaction {
            changes: vec![Change::Update(m)],
        });
        assert_eq!(tap.module_stats()[0].state, ModuleState::Deprecated);
        assert!(tap.log().is_empty());
    }
}
