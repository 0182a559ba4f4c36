//! The device agent's shared state ([`Agent`]): datastores, locks,
//! sessions, the pending confirmed commit, the tap, the journal and the
//! event stream; and its start-up. Operations live in `ops/`, the commit
//! pipeline in `config/commit.rs`, state data in `state/`.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

use l45_tap_control::{TapControl, TapError};
use tokio::sync::{broadcast, watch};
use yang3::context::Context;
use yang3::data::{DataFormat, DataParserFlags, DataTree, DataValidationFlags};

use crate::config::edit::{self, Engine};
use crate::datastore::confirmed::{self, PendingError};
use crate::datastore::journal::{apply_replay, Journal};
use crate::datastore::{
    prepare_state_dir, schema, write_atomically, Datastore, Ds, Entry, ModuleMap, Slots,
    StateDirError, Stores,
};
use crate::error::OpError;
use crate::nacm;
use crate::notify::{Event, Notifier};
use crate::sessions::{Counters, SessionInfo};
use crate::subscriptions::log::{LogError, LogLimits, NotificationLog};
use crate::subscriptions::Subscriptions;

/// A datastore's lock (RFC 6241 7.5): who holds it, since when (RFC 6022
/// `locked-time`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DatastoreLock {
    pub session: u32,
    pub since: std::time::SystemTime,
}

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub state_dir: PathBuf,
    pub max_sessions: usize,
    pub limits: l45_netconf_proto::Limits,
    /// Users put in the NACM admin group on first start.
    pub admins: Vec<String>,
    /// Image signers trusted from the first start: (name, base64 Ed25519
    /// public key).
    pub trusted_signers: Vec<(String, String)>,
    pub hello_timeout: Duration,
    /// Most concurrent sessions of one user.
    pub max_sessions_per_user: usize,
    /// A session without an RPC (or a notification) this long is closed.
    pub idle_timeout: Option<Duration>,
    /// Which engine computes edits (`LibyangOnly` to cross-check the
    /// native one).
    pub engine: Engine,
    /// How much of the NETCONF stream the replay log keeps.
    pub notification_log: LogLimits,
    /// Whether YANG-push (RFC 8641) is offered.
    pub yang_push: bool,
}

impl AgentOptions {
    /// The defaults of `l45-agent`'s options, with `admin` as the first
    /// admin and state in `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> AgentOptions {
        AgentOptions {
            state_dir: state_dir.into(),
            max_sessions: 64,
            limits: l45_netconf_proto::Limits::default(),
            admins: vec!["admin".into()],
            trusted_signers: Vec::new(),
            hello_timeout: Duration::from_secs(30),
            max_sessions_per_user: 16,
            idle_timeout: None,
            engine: Engine::Auto,
            notification_log: LogLimits::default(),
            yang_push: true,
        }
    }
}

/// A confirmed commit waiting for its confirmation (stored in the state
/// directory as well, `datastore::confirmed`).
pub(crate) struct ConfirmedCommit {
    pub backup: Ds,
    pub session_id: u32,
    pub persist: Option<String>,
    /// Bumped on every (re)arm so a stale timer does nothing.
    pub generation: u64,
    pub deadline: SystemTime,
    /// Its time is up (timeout, cancel, session end) but restoring the
    /// previous configuration failed: retries are scheduled and it can no
    /// longer be confirmed.
    pub owed: bool,
}

pub struct Agent {
    /// This agent, for the timers it starts from `&self` methods.
    pub(crate) me: Weak<Agent>,
    pub ctx: &'static Context,
    pub opts: AgentOptions,
    pub(crate) stores: RwLock<Stores>,
    /// Serialises writers so a write's read-modify-swap is atomic while
    /// readers keep going on the old trees.
    pub(crate) write_lock: Mutex<()>,
    /// Datastore name → its lock.
    pub(crate) locks: Mutex<BTreeMap<&'static str, DatastoreLock>>,
    pub(crate) sessions: Mutex<BTreeMap<u32, SessionInfo>>,
    pub(crate) next_session_id: AtomicU32,
    pub(crate) confirmed: Mutex<Option<ConfirmedCommit>>,
    pub(crate) confirmed_generation: AtomicU64,
    pub(crate) tap: Arc<dyn TapControl>,
    /// The installed module images (`images.rs`); taken after
    /// `write_lock` when both are held.
    pub(crate) images: Mutex<crate::images::ImageStore>,
    /// running.xml and its journal; used with `write_lock` held.
    pub(crate) journal: Mutex<Journal>,
    pub(crate) notifier: Notifier,
    pub(crate) subscriptions: Subscriptions,
    pub(crate) counters: Counters,
    /// RPCs and commits for `--metrics` (`metrics/recorded.rs`).
    pub metrics: crate::metrics::recorded::AgentMetrics,
    pub(crate) started: SystemTime,
    pub(crate) runtime: tokio::runtime::Handle,
    /// What the device says about itself (`/l45:device`); unset in
    /// in-process tests, whose replies must not depend on the host.
    pub(crate) device_info: std::sync::OnceLock<crate::device_info::DeviceInfo>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("libyang context: {0}")]
    Yang(String),
    #[error("state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    UnsafeStateDir(#[from] StateDirError),
    #[error("pending confirmed commit: {0}")]
    Pending(#[from] PendingError),
    #[error("stored configuration {path} is invalid: {message}")]
    BadStore { path: PathBuf, message: String },
    #[error("tap refused the stored configuration: {0}")]
    Tap(#[from] TapError),
    #[error(transparent)]
    NotificationLog(#[from] LogError),
    #[error("module image store {path}: {source}")]
    Images {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub(crate) use crate::sync::guard;

/// The first-start running configuration: the NACM bootstrap policy and
/// the image signers given on the command line.
fn bootstrap(
    ctx: &'static Context,
    admins: &[String],
    signers: &[(String, String)],
) -> Result<Ds, yang3::Error> {
    let mut xml = nacm::bootstrap_xml(admins);
    if !signers.is_empty() {
        let esc = l45_netconf_proto::xml::escape_text;
        xml.push_str(&format!("<images xmlns=\"{}\">", l45_yang::L45_NAMESPACE));
        for (name, key) in signers {
            xml.push_str(&format!(
                "<trusted-signer><name>{}</name><public-key>{}</public-key></trusted-signer>",
                esc(name),
                esc(key)
            ));
        }
        xml.push_str("</images>");
    }
    let mut t = DataTree::parse_string(
        ctx,
        xml,
        DataFormat::XML,
        DataParserFlags::STRICT | DataParserFlags::NO_STATE,
        DataValidationFlags::NO_STATE,
    )?;
    t.validate(DataValidationFlags::NO_STATE)?;
    Ok(Ds {
        rest: t,
        modules: ModuleMap::new(),
    })
}

impl Agent {
    /// Loads the stored datastores (or bootstraps a new device) and commits
    /// the running configuration onto an empty running: the tap gets every
    /// module through the same pipeline as any edit.
    pub fn new(
        opts: AgentOptions,
        tap: Arc<dyn TapControl>,
        runtime: tokio::runtime::Handle,
    ) -> Result<Arc<Agent>, AgentError> {
        let ctx = l45_yang::context().map_err(|e| AgentError::Yang(e.to_string()))?;
        let state_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| AgentError::StateDir { path, source }
        };
        prepare_state_dir(&opts.state_dir)?;
        let running_path = opts.state_dir.join("running.xml");
        let startup_path = opts.state_dir.join("startup.xml");
        let schema = schema().map_err(AgentError::Yang)?;
        let bad_store = |path: &Path| {
            let path = path.to_path_buf();
            move |message| AgentError::BadStore { path, message }
        };
        let load = |path: &Path| -> Result<Option<Ds>, AgentError> {
            match std::fs::read_to_string(path) {
                Ok(text) => edit::load(ctx, opts.engine, &text)
                    .map(Some)
                    .map_err(bad_store(path)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(state_err(path)(source)),
            }
        };
        let log = NotificationLog::open(
            &opts.state_dir.join("notifications.log"),
            opts.notification_log,
        )?;
        let mut journal = Journal::new(&opts.state_dir);
        let startup = load(&startup_path)?;
        let snapshot = journal
            .read_snapshot()
            .map_err(state_err(&running_path))?
            .map(|text| edit::load(ctx, opts.engine, &text).map_err(bad_store(&running_path)))
            .transpose()?;
        let running = match snapshot {
            Some(mut r) => {
                let records = journal.replay().map_err(state_err(&running_path))?;
                for rec in records {
                    let id_of = |e: &Entry| Slots::parse(schema, e).ok().map(|s| s.id);
                    if let Some(rest) = apply_replay(&mut r.modules, id_of, rec) {
                        r.rest = edit::load(ctx, opts.engine, &rest)
                            .map_err(bad_store(&running_path))?
                            .rest;
                    }
                }
                r
            }
            None => match &startup {
                Some(s) => s.share(),
                None => bootstrap(ctx, &opts.admins, &opts.trusted_signers),
            }
            .map_err(|e| AgentError::Yang(e.to_string()))?,
        };
        let startup = match startup {
            Some(s) => s,
            None => running
                .share()
                .map_err(|e| AgentError::Yang(e.to_string()))?,
        };
        // Stored images are loaded before the stored configuration is
        // committed, so modules that use them come back.
        let images = crate::images::ImageStore::open(&opts.state_dir, &*tap).map_err(|source| {
            AgentError::Images {
                path: opts.state_dir.join("images"),
                source,
            }
        })?;
        let agent = Arc::new_cyclic(|me| Agent {
            me: me.clone(),
            ctx,
            stores: RwLock::new(Stores {
                running: Ds::new(ctx),
                candidate: None,
                startup,
                candidate_dirty: false,
                candidate_unvalidated: false,
            }),
            write_lock: Mutex::new(()),
            locks: Mutex::new(BTreeMap::new()),
            sessions: Mutex::new(BTreeMap::new()),
            next_session_id: AtomicU32::new(1),
            confirmed: Mutex::new(None),
            confirmed_generation: AtomicU64::new(0),
            tap,
            images: Mutex::new(images),
            journal: Mutex::new(journal),
            notifier: Notifier::new(log),
            subscriptions: Subscriptions::default(),
            counters: Counters::default(),
            metrics: Default::default(),
            started: SystemTime::now(),
            runtime,
            device_info: std::sync::OnceLock::new(),
            opts,
        });
        agent.commit_startup(running).map_err(|e| match e {
            OpError::Tap(e) => AgentError::Tap(e),
            OpError::Persist { source, .. } => state_err(&running_path)(source),
            other => bad_store(&running_path)(other.to_string()),
        })?;
        agent
            .save(Datastore::Startup)
            .map_err(|e| bad_store(&startup_path)(e.to_string()))?;
        if let Some(pending) = confirmed::load(&agent.opts.state_dir)? {
            let path = confirmed::path(&agent.opts.state_dir);
            agent
                .resume_confirmed(pending)
                .map_err(|e| bad_store(&path)(e.to_string()))?;
        }
        Ok(agent)
    }

    pub(crate) fn stores(&self) -> std::sync::RwLockReadGuard<'_, Stores> {
        self.stores.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn stores_mut(&self) -> std::sync::RwLockWriteGuard<'_, Stores> {
        self.stores.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe_events(&self) -> broadcast::Receiver<Event> {
        self.notifier.subscribe()
    }

    /// The notifications of a session's subscriptions, as whole messages
    /// (once, for its session loop).
    pub fn take_outbox(&self, session: u32) -> Option<tokio::sync::mpsc::Receiver<String>> {
        self.subscriptions.take_outbox(session)
    }

    /// Whether NACM lets `user` receive `event` (RFC 8341 3.4.6), under
    /// the running configuration of now.
    pub fn may_receive(&self, user: &str, event: &Event) -> bool {
        nacm::Nacm::from_running(&self.stores().running.rest).may_notify(
            user,
            &event.module,
            &event.name,
        )
    }

    /// Emits `deprecated-module-idle` once for every deprecated module the
    /// tap reports attached to no socket (see [`Notifier::idle_deprecated`]).
    pub fn announce_idle_deprecated(&self, announced: &mut BTreeSet<u32>) {
        self.notifier
            .idle_deprecated(&self.tap.module_stats(), announced);
    }

    /// The tap's periodic upkeep (`TapControl::housekeeping`).
    pub fn tap_housekeeping(&self) {
        self.tap.housekeeping();
    }

    /// Emits `module-bypassed` for the sockets the tap found escaping a
    /// module since the last call (a burst is capped; the modules'
    /// `bypassed` counters count every one).
    pub fn announce_bypasses(&self) {
        let found = self.tap.bypasses();
        let left_out = self.notifier.module_bypassed(&found);
        if left_out > 0 {
            tracing::warn!(
                found = found.len(),
                left_out,
                "too many bypassed sockets at once: not every one is notified"
            );
        }
    }

    /// Writes a whole datastore file (startup; running has its journal).
    pub(crate) fn save(&self, ds: Datastore) -> Result<(), OpError> {
        let (file, what) = match ds {
            Datastore::Running => ("running.xml", "running"),
            Datastore::Startup => ("startup.xml", "startup"),
            Datastore::Candidate => return Ok(()),
        };
        let text = self.stores().get(ds).to_xml()?;
        write_atomically(&self.opts.state_dir.join(file), text.as_bytes())
            .map_err(|source| OpError::Persist { what, source })
    }

    /// The session holding `ds`'s lock, when it is not `s`, as an error.
    pub(crate) fn check_lock(&self, ds: Datastore, s: &SessionInfo) -> Result<(), OpError> {
        match guard(&self.locks).get(ds.as_str()) {
            Some(lock) if lock.session != s.id => Err(OpError::Locked {
                datastore: ds,
                owner: lock.session,
                already: false,
            }),
            _ => Ok(()),
        }
    }

    // ===== sessions =====

    /// Registers a session, or refuses it when the limit is reached.
    pub fn open_session(
        &self,
        username: &str,
        source_host: Option<String>,
    ) -> Option<(SessionInfo, watch::Receiver<bool>)> {
        let mut sessions = guard(&self.sessions);
        let of_user = sessions.values().filter(|s| s.username == username).count();
        if of_user >= self.opts.max_sessions_per_user {
            tracing::warn!(
                user = username,
                limit = self.opts.max_sessions_per_user,
                "per-user session limit reached"
            );
            self.counters
                .dropped_sessions
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if sessions.len() >= self.opts.max_sessions {
            self.counters
                .dropped_sessions
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let id = self.next_session_id.fetch_add(1, Ordering::Relaxed);
        let (kill, killed) = watch::channel(false);
        let info = SessionInfo {
            id,
            username: username.to_string(),
            source_host,
            login_time: SystemTime::now(),
            kill,
            in_rpcs: Arc::default(),
            in_bad_rpcs: Arc::default(),
            out_rpc_errors: Arc::default(),
            out_notifications: Arc::default(),
        };
        sessions.insert(id, info.clone());
        self.counters.in_sessions.fetch_add(1, Ordering::Relaxed);
        Some((info, killed))
    }

    /// Releases everything a session held (locks, a candidate it locked,
    /// a pending confirmed commit without persist).
    pub fn close_session(&self, id: u32) {
        guard(&self.sessions).remove(&id);
        self.subscriptions.end_session(id);
        let mut released_candidate = false;
        {
            let mut locks = guard(&self.locks);
            locks.retain(|ds, lock| {
                if lock.session == id {
                    released_candidate |= *ds == "candidate";
                    false
                } else {
                    true
                }
            });
        }
        if released_candidate {
            // RFC 6241 8.3.5.2: the candidate's uncommitted changes go with
            // the lock.
            let _w = guard(&self.write_lock);
            let mut stores = self.stores_mut();
            if stores.candidate_dirty {
                stores.reset_candidate();
            }
        }
        let pending = guard(&self.confirmed)
            .as_ref()
            .filter(|c| c.session_id == id && c.persist.is_none())
            .map(|c| c.generation);
        if let (Some(generation), Some(me)) = (pending, self.me.upgrade()) {
            tracing::info!(
                session_id = id,
                "session with a pending confirmed commit ended; rolling back"
            );
            me.rollback_or_retry(generation, 0, "cancel");
        }
    }

    pub fn count_notification(&self) {
        self.counters
            .out_notifications
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_bad_hello(&self) {
        self.counters.in_bad_hellos.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an RPC that never reached dispatch (malformed).
    pub fn count_bad_rpc(&self, session: &SessionInfo) {
        self.counters.in_bad_rpcs.fetch_add(1, Ordering::Relaxed);
        self.counters.out_rpc_errors.fetch_add(1, Ordering::Relaxed);
        session.in_bad_rpcs.fetch_add(1, Ordering::Relaxed);
        session.out_rpc_errors.fetch_add(1, Ordering::Relaxed);
    }
}
