//! The device agent's shared state (datastores, locks, sessions, the tap)
//! and every NETCONF operation. Operations run on blocking threads: libyang
//! work is CPU-bound. Readers share the datastores; writers are serialised.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use l45_netconf_proto::message::{self, Rpc, NOTIFICATION_NS};
use l45_netconf_proto::xml::{escape_text, Element};
use l45_netconf_proto::{ErrorTag, ErrorType, RpcError, BASE_NS};
use l45_tap_control::{Change, TapControl, TapError, Transaction};
use tokio::sync::{broadcast, watch};
use yang3::context::Context;
use yang3::data::{
    Data, DataFormat, DataParserFlags, DataPrinterFlags, DataTree, DataValidationFlags,
};

use crate::edit::{self, EditOp, Touched};
use crate::filter;
use crate::nacm::{self, Access, Nacm};
use crate::persist::Journal;
use crate::store::{self, Delta, Ds, Slots};
use crate::tapbridge;
use crate::yangerr::to_rpc_error;

pub const MONITORING_NS: &str = "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring";
pub const WITH_DEFAULTS_NS: &str = "urn:ietf:params:xml:ns:yang:ietf-netconf-with-defaults";
const NC_NOTIF_NS: &str = "urn:ietf:params:xml:ns:yang:ietf-netconf-notifications";

// ===== options =====

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub state_dir: PathBuf,
    pub max_sessions: usize,
    pub limits: l45_netconf_proto::Limits,
    /// Users put in the NACM admin group on first start.
    pub admins: Vec<String>,
    pub hello_timeout: Duration,
}

// ===== datastores =====

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datastore {
    Running,
    Candidate,
    Startup,
}

impl Datastore {
    pub fn name(self) -> &'static str {
        match self {
            Datastore::Running => "running",
            Datastore::Candidate => "candidate",
            Datastore::Startup => "startup",
        }
    }
}

struct Stores {
    running: Ds,
    /// `None`: candidate is running (shared, nothing copied). Becomes its
    /// own datastore (entries still shared) on its first edit.
    candidate: Option<Ds>,
    startup: Ds,
    /// Candidate differs from running by edits not yet committed.
    candidate_dirty: bool,
    /// An edit with test-option `set` put unvalidated data in candidate.
    candidate_unvalidated: bool,
}

impl Stores {
    fn get(&self, ds: Datastore) -> &Ds {
        match ds {
            Datastore::Running => &self.running,
            Datastore::Candidate => self.candidate.as_ref().unwrap_or(&self.running),
            Datastore::Startup => &self.startup,
        }
    }

    fn reset_candidate(&mut self) {
        self.candidate = None;
        self.candidate_dirty = false;
        self.candidate_unvalidated = false;
    }
}

struct ConfirmedCommit {
    backup: Ds,
    session_id: u32,
    persist: Option<String>,
    /// Bumped on every (re)arm so a stale timer does nothing.
    generation: u64,
}

// ===== sessions =====

/// What the agent keeps about a session, for monitoring and kill-session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: u32,
    pub username: String,
    pub source_host: Option<String>,
    pub login_time: SystemTime,
    pub kill: watch::Sender<bool>,
    pub in_rpcs: Arc<AtomicU64>,
    pub in_bad_rpcs: Arc<AtomicU64>,
    pub out_rpc_errors: Arc<AtomicU64>,
    pub out_notifications: Arc<AtomicU64>,
}

/// A notification for subscribed sessions: content XML and event time.
#[derive(Debug, Clone)]
pub struct Event {
    pub time: SystemTime,
    pub xml: String,
}

/// What the session loop must do after a reply.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    Continue,
    Close,
    Subscribe,
}

#[derive(Default)]
struct Counters {
    in_sessions: AtomicU64,
    in_bad_hellos: AtomicU64,
    dropped_sessions: AtomicU64,
    in_rpcs: AtomicU64,
    in_bad_rpcs: AtomicU64,
    out_rpc_errors: AtomicU64,
    out_notifications: AtomicU64,
}

pub struct Agent {
    pub ctx: &'static Context,
    pub opts: AgentOptions,
    stores: RwLock<Stores>,
    /// Serialises writers so a write's read-modify-swap is atomic while
    /// readers keep going on the old trees.
    write_lock: Mutex<()>,
    locks: Mutex<BTreeMap<&'static str, u32>>,
    sessions: Mutex<BTreeMap<u32, SessionInfo>>,
    next_session_id: AtomicU32,
    confirmed: Mutex<Option<ConfirmedCommit>>,
    confirmed_generation: AtomicU64,
    tap: Arc<dyn TapControl>,
    /// running.xml and its journal; used with `write_lock` held.
    journal: Mutex<Journal>,
    events: broadcast::Sender<Event>,
    counters: Counters,
    started: SystemTime,
    runtime: tokio::runtime::Handle,
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
    #[error("stored configuration {path} is invalid: {message}")]
    BadStore { path: PathBuf, message: String },
    #[error("tap refused the stored configuration: {0}")]
    Tap(#[from] TapError),
}

type Reply = Result<(String, After), Vec<RpcError>>;

fn rpc_err(tag: ErrorTag, message: impl Into<String>) -> RpcError {
    RpcError::new(ErrorType::Protocol, tag).message(message)
}

fn app_err(tag: ErrorTag, message: impl Into<String>) -> RpcError {
    RpcError::new(ErrorType::Application, tag).message(message)
}

fn yerr(ctx: &Context) -> impl Fn(yang3::Error) -> Vec<RpcError> + '_ {
    move |e| vec![to_rpc_error(ctx, &e)]
}

/// RFC 3339 time in UTC with seconds, as yang:date-and-time.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn print_xml(tree: &DataTree<'static>, flags: DataPrinterFlags) -> Result<String, yang3::Error> {
    l45_yang::print_xml(tree, flags | DataPrinterFlags::SHRINK)
}

/// Reads a stored datastore: the module entries through the native
/// parser, the rest through libyang; falls back to libyang for all of it.
fn load_ds(ctx: &'static Context, text: &str) -> Result<Ds, String> {
    if text.trim().is_empty() {
        return Ok(Ds::new(ctx));
    }
    let schema = store::schema()?;
    let wrapped = format!("<config xmlns=\"{BASE_NS}\">{text}</config>");
    // Top-level elements lazy: the module list is read one entry at a time.
    if let Ok(root) = l45_netconf_proto::xml::parse_lazy(wrapped.as_bytes(), &[(BASE_NS, "config")])
    {
        let (cust, others): (Vec<Element>, Vec<Element>) = root
            .children
            .iter()
            .cloned()
            .partition(|c| c.is(l45_yang::L45_NAMESPACE, "customizations"));
        let all = store::WriteAccess {
            module: true,
            keys: true,
        };
        let modules = if cust.is_empty() {
            Some(store::ModuleMap::new())
        } else {
            let scope = root.scope_for_children(&[]);
            store::fast_edit(
                schema,
                &store::ModuleMap::new(),
                wrapped.as_bytes(),
                &cust,
                &scope,
                EditOp::Merge,
                all,
            )
            .map(|(d, _)| {
                let mut m = store::ModuleMap::new();
                d.apply_to(&mut m);
                m
            })
        };
        if let Some(modules) = modules {
            let scope = root.scope_for_children(&[]);
            let rest_xml: String = others
                .iter()
                .map(|o| o.standalone_xml(wrapped.as_bytes(), &scope))
                .collect();
            let mut rest = if rest_xml.is_empty() {
                DataTree::new(ctx)
            } else {
                DataTree::parse_string(
                    ctx,
                    &rest_xml,
                    DataFormat::XML,
                    DataParserFlags::STRICT | DataParserFlags::NO_STATE,
                    DataValidationFlags::NO_STATE,
                )
                .map_err(|e| e.to_string())?
            };
            rest.validate(DataValidationFlags::NO_STATE)
                .map_err(|e| e.to_string())?;
            return Ok(Ds { rest, modules });
        }
    }
    let mut tree = DataTree::parse_string(
        ctx,
        text,
        DataFormat::XML,
        DataParserFlags::STRICT | DataParserFlags::NO_STATE,
        DataValidationFlags::NO_STATE,
    )
    .map_err(|e| e.to_string())?;
    tree.validate(DataValidationFlags::NO_STATE)
        .map_err(|e| e.to_string())?;
    Ds::from_tree(&tree).map_err(|e| e.to_string())
}

/// The tap changes of a delta on `current`, checking that parameters fit
/// the kind; `Err((id, kind, case))` otherwise.
fn delta_transaction(
    schema: &store::ListSchema,
    current: &store::ModuleMap,
    delta: &mut Delta,
) -> Result<Transaction, (u32, String, String)> {
    let check_case =
        |id: u32, kind: &str, case: Option<usize>| -> Result<(), (u32, String, String)> {
            if let Some(case) = case.and_then(|c| schema.cases[c].2.as_deref()) {
                if tapbridge::parameters_case(kind) != Some(case) {
                    return Err((id, kind.to_string(), case.to_string()));
                }
            }
            Ok(())
        };
    let parsed = std::mem::take(&mut delta.parsed);
    // A load: only new entries, each already parsed by the edit. Their tap
    // view moves into the transaction (same order, no second copy).
    let only_new = !delta.clear
        && parsed.len() == delta.changes.len()
        && parsed
            .iter()
            .zip(&delta.changes)
            .all(|((p, _), (c, _))| p == c && !current.contains_key(p));
    if only_new {
        for (id, p) in &parsed {
            check_case(*id, &p.config.kind, p.case)?;
        }
        let changes = parsed
            .into_iter()
            .map(|(_, p)| Change::Register(p.config))
            .collect();
        return Ok(Transaction { changes });
    }
    let mut ids: std::collections::BTreeSet<u32> = delta.changes.keys().copied().collect();
    if delta.clear {
        ids.extend(current.keys().copied());
    }
    let slots = |e: &store::Entry| Slots::parse(schema, e).ok();
    let mut parsed = parsed.into_iter().peekable();
    let mut changes = Vec::with_capacity(ids.len());
    for id in ids {
        // (both ascending; `parsed` ids are a subset of `ids`)
        let mut pre = None;
        while let Some((pid, _)) = parsed.peek() {
            if *pid > id {
                break;
            }
            if let Some((pid, p)) = parsed.next() {
                if pid == id {
                    pre = Some(p);
                }
            }
        }
        let old = current.get(&id);
        let new = delta.after(id, old);
        if let (Some(o), Some(n)) = (old, new) {
            if Arc::ptr_eq(o, n) {
                continue;
            }
        }
        let (new_cfg, new_case) = match (new, pre) {
            (None, _) => (None, None),
            (Some(_), Some(p)) => (Some(p.config), p.case),
            (Some(n), None) => match slots(n) {
                Some(s) => (
                    Some(s.module_config(schema)),
                    s.parameters_case_index(schema),
                ),
                None => (None, None),
            },
        };
        if let Some(m) = &new_cfg {
            check_case(id, &m.kind, new_case)?;
        }
        match (old, new_cfg) {
            (None, Some(n)) => changes.push(Change::Register(n)),
            // The tap holds the old configuration: no need to read it.
            (Some(_), None) => changes.push(Change::Unregister(id)),
            (Some(o), Some(n)) => {
                if slots(o).map(|s| s.module_config(schema)).as_ref() != Some(&n) {
                    changes.push(Change::Update(n));
                }
            }
            (None, None) => {}
        }
    }
    Ok(Transaction { changes })
}

type EditOutcome = (
    Delta,
    Option<DataTree<'static>>,
    Vec<Touched>,
    Vec<RpcError>,
);

/// Module ids a parsed edit names; `None` when it may touch any entry
/// (an operation on the list's container, a default `replace`, a module
/// without a usable key).
fn edit_entry_ids(
    edit_tree: &DataTree<'static>,
    default_op: EditOp,
) -> Option<std::collections::BTreeSet<u32>> {
    let mut ids = std::collections::BTreeSet::new();
    let Ok(cust) = edit_tree.find_path(tapbridge::CUSTOMIZATIONS) else {
        return Some(ids);
    };
    if default_op == EditOp::Replace
        || edit::node_op(&cust).is_some_and(|op| !matches!(op, EditOp::Merge))
    {
        return None;
    }
    for m in cust.children() {
        if m.schema().name() != "module" {
            return None;
        }
        let id = m
            .list_keys()
            .next()
            .and_then(|k| k.value_canonical())
            .and_then(|v| v.parse().ok())?;
        ids.insert(id);
    }
    Some(ids)
}

fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Agent {
    /// Loads the stored datastores (or bootstraps a new device), hands the
    /// running configuration to the tap and returns the agent.
    pub fn new(
        opts: AgentOptions,
        tap: Arc<dyn TapControl>,
        runtime: tokio::runtime::Handle,
    ) -> Result<Arc<Agent>, AgentError> {
        let ctx = l45_yang::context().map_err(|e| AgentError::Yang(e.to_string()))?;
        std::fs::create_dir_all(&opts.state_dir).map_err(|source| AgentError::StateDir {
            path: opts.state_dir.clone(),
            source,
        })?;
        let running_path = opts.state_dir.join("running.xml");
        let startup_path = opts.state_dir.join("startup.xml");
        let schema = store::schema().map_err(AgentError::Yang)?;
        let load = |path: &Path| -> Result<Option<Ds>, AgentError> {
            match std::fs::read_to_string(path) {
                Ok(text) => load_ds(ctx, &text)
                    .map(Some)
                    .map_err(|message| AgentError::BadStore {
                        path: path.to_path_buf(),
                        message,
                    }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(AgentError::StateDir {
                    path: path.to_path_buf(),
                    source,
                }),
            }
        };
        let mut journal = Journal::new(&opts.state_dir);
        let startup = load(&startup_path)?;
        let running = match load(&running_path)? {
            Some(mut r) => {
                let records = journal.replay().map_err(|source| AgentError::StateDir {
                    path: running_path.clone(),
                    source,
                })?;
                for rec in records {
                    let id_of = |e: &store::Entry| Slots::parse(schema, e).ok().map(|s| s.id);
                    if let Some(rest) = crate::persist::apply_replay(&mut r.modules, id_of, rec) {
                        r.rest = load_ds(ctx, &rest)
                            .map_err(|message| AgentError::BadStore {
                                path: running_path.clone(),
                                message,
                            })?
                            .rest;
                    }
                }
                r
            }
            None => match &startup {
                Some(s) => s.share().map_err(|e| AgentError::Yang(e.to_string()))?,
                None => {
                    let mut t = DataTree::parse_string(
                        ctx,
                        nacm::bootstrap_xml(&opts.admins),
                        DataFormat::XML,
                        DataParserFlags::STRICT | DataParserFlags::NO_STATE,
                        DataValidationFlags::NO_STATE,
                    )
                    .map_err(|e| AgentError::Yang(e.to_string()))?;
                    t.validate(DataValidationFlags::NO_STATE)
                        .map_err(|e| AgentError::Yang(e.to_string()))?;
                    Ds {
                        rest: t,
                        modules: store::ModuleMap::new(),
                    }
                }
            },
        };
        let startup = match startup {
            Some(s) => s,
            None => running
                .share()
                .map_err(|e| AgentError::Yang(e.to_string()))?,
        };
        // The tap starts empty: register everything configured.
        let mut all = Delta {
            clear: false,
            changes: running
                .modules
                .iter()
                .map(|(id, e)| (*id, Some(e.clone())))
                .collect(),
            parsed: Vec::new(),
        };
        let txn = delta_transaction(schema, &store::ModuleMap::new(), &mut all).map_err(
            |(id, kind, case)| AgentError::BadStore {
                path: running_path.clone(),
                message: format!("module {id} of kind {kind} cannot take {case} parameters"),
            },
        )?;
        drop(all);
        tap.prepare(&txn)?;
        tap.apply(&txn);
        // Start from a compact snapshot and an empty journal.
        journal
            .write_snapshot(&running.rest, running.modules.values())
            .map_err(|source| AgentError::StateDir {
                path: running_path.clone(),
                source,
            })?;
        let (events, _) = broadcast::channel(1024);
        let agent = Arc::new(Agent {
            ctx,
            stores: RwLock::new(Stores {
                running,
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
            journal: Mutex::new(journal),
            events,
            counters: Counters::default(),
            started: SystemTime::now(),
            runtime,
            opts,
        });
        agent
            .persist(Datastore::Startup)
            .map_err(|e| AgentError::BadStore {
                path: startup_path,
                message: format!("{e:?}"),
            })?;
        Ok(agent)
    }

    fn stores(&self) -> std::sync::RwLockReadGuard<'_, Stores> {
        self.stores.read().unwrap_or_else(|p| p.into_inner())
    }

    fn stores_mut(&self) -> std::sync::RwLockWriteGuard<'_, Stores> {
        self.stores.write().unwrap_or_else(|p| p.into_inner())
    }

    fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe_events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn emit(&self, xml: String) {
        let _ = self.events.send(Event {
            time: SystemTime::now(),
            xml,
        });
    }

    /// Emits `deprecated-module-idle` once for every deprecated module the
    /// tap reports attached to no socket (the NCO then revokes it). `announced`
    /// carries what was already announced between calls; a module that gains
    /// sockets again (or is revoked) is forgotten so it can be announced anew.
    /// The tap's periodic upkeep (`TapControl::housekeeping`).
    pub fn tap_housekeeping(&self) {
        self.tap.housekeeping();
    }

    pub fn announce_idle_deprecated(&self, announced: &mut std::collections::BTreeSet<u32>) {
        let mut idle = std::collections::BTreeSet::new();
        for st in self.tap.module_stats() {
            if st.state == l45_tap_control::ModuleState::Deprecated && st.socket_count == 0 {
                idle.insert(st.id);
                if !announced.contains(&st.id) {
                    self.emit(format!(
                        "<deprecated-module-idle xmlns=\"{}\"><id>{}</id></deprecated-module-idle>",
                        l45_yang::L45_NAMESPACE,
                        st.id
                    ));
                }
            }
        }
        *announced = idle;
    }

    pub fn count_notification(&self) {
        self.counters
            .out_notifications
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_bad_hello(&self) {
        self.counters.in_bad_hellos.fetch_add(1, Ordering::Relaxed);
    }

    // ===== sessions =====

    /// Registers a session, or refuses it when the limit is reached.
    pub fn open_session(
        &self,
        username: &str,
        source_host: Option<String>,
    ) -> Option<(SessionInfo, watch::Receiver<bool>)> {
        let mut sessions = Self::guard(&self.sessions);
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

    /// Releases everything a session held (locks, pending confirmed commit).
    pub fn close_session(&self, id: u32) {
        Self::guard(&self.sessions).remove(&id);
        let mut released_candidate = false;
        {
            let mut locks = Self::guard(&self.locks);
            locks.retain(|ds, owner| {
                if *owner == id {
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
            let _w = Self::guard(&self.write_lock);
            let mut stores = self.stores_mut();
            if stores.candidate_dirty {
                stores.reset_candidate();
            }
        }
        let pending = Self::guard(&self.confirmed)
            .as_ref()
            .map(|c| c.session_id == id && c.persist.is_none())
            .unwrap_or(false);
        if pending {
            tracing::info!(
                session_id = id,
                "session with a pending confirmed commit ended; rolling back"
            );
            let _ = self.rollback_confirmed(None);
        }
    }

    // ===== hello =====

    pub fn capabilities(&self) -> Vec<String> {
        let mut caps: Vec<String> = [
            "urn:ietf:params:netconf:base:1.0",
            "urn:ietf:params:netconf:base:1.1",
            "urn:ietf:params:netconf:capability:writable-running:1.0",
            "urn:ietf:params:netconf:capability:candidate:1.0",
            "urn:ietf:params:netconf:capability:confirmed-commit:1.1",
            "urn:ietf:params:netconf:capability:rollback-on-error:1.0",
            "urn:ietf:params:netconf:capability:validate:1.1",
            "urn:ietf:params:netconf:capability:startup:1.0",
            "urn:ietf:params:netconf:capability:xpath:1.0",
            "urn:ietf:params:netconf:capability:with-defaults:1.0?basic-mode=explicit&also-supported=report-all,report-all-tagged,trim",
            "urn:ietf:params:netconf:capability:notification:1.0",
            "urn:ietf:params:netconf:capability:interleave:1.0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for m in self.ctx.modules(false) {
            if l45_yang::INTERNAL_MODULES.contains(&m.name()) || !m.is_implemented() {
                continue;
            }
            let mut cap = format!("{}?module={}", m.namespace(), m.name());
            if let Some(rev) = m.revision() {
                cap.push_str(&format!("&revision={rev}"));
            }
            if let Some(em) = l45_yang::find_module(m.name(), m.revision()) {
                if !em.features.is_empty() {
                    cap.push_str(&format!("&features={}", em.features.join(",")));
                }
            }
            caps.push(cap);
        }
        caps
    }

    // ===== dispatch =====

    /// Handles one RPC of session `sid` (run on a blocking thread).
    pub fn handle(self: &Arc<Self>, session: &SessionInfo, rpc: &Rpc) -> (String, After) {
        self.counters.in_rpcs.fetch_add(1, Ordering::Relaxed);
        session.in_rpcs.fetch_add(1, Ordering::Relaxed);
        let result = self.dispatch(session, rpc);
        match result {
            Ok((body, after)) => (message::rpc_reply(&rpc.echo_attrs, &body), after),
            Err(errors) => {
                self.counters.out_rpc_errors.fetch_add(1, Ordering::Relaxed);
                session.out_rpc_errors.fetch_add(1, Ordering::Relaxed);
                if errors.iter().any(|e| {
                    matches!(
                        e.tag,
                        ErrorTag::UnknownElement
                            | ErrorTag::UnknownNamespace
                            | ErrorTag::OperationNotSupported
                    ) && e.error_type == ErrorType::Protocol
                }) {
                    self.counters.in_bad_rpcs.fetch_add(1, Ordering::Relaxed);
                    session.in_bad_rpcs.fetch_add(1, Ordering::Relaxed);
                }
                (
                    message::error_reply(&rpc.echo_attrs, &errors),
                    After::Continue,
                )
            }
        }
    }

    /// Counts an RPC that never reached dispatch (malformed).
    pub fn count_bad_rpc(&self, session: &SessionInfo) {
        self.counters.in_bad_rpcs.fetch_add(1, Ordering::Relaxed);
        self.counters.out_rpc_errors.fetch_add(1, Ordering::Relaxed);
        session.in_bad_rpcs.fetch_add(1, Ordering::Relaxed);
        session.out_rpc_errors.fetch_add(1, Ordering::Relaxed);
    }

    fn dispatch(self: &Arc<Self>, s: &SessionInfo, rpc: &Rpc) -> Reply {
        let op = &rpc.operation;
        let ns = op.ns.as_deref().unwrap_or("");
        let nacm = Nacm::from_running(&self.stores().running.rest);
        let module = match ns {
            BASE_NS => "ietf-netconf",
            MONITORING_NS => "ietf-netconf-monitoring",
            NOTIFICATION_NS => "notifications",
            l45_yang::L45_NAMESPACE => l45_yang::L45_MODULE,
            _ => "",
        };
        if !module.is_empty() {
            let default_deny = module == "ietf-netconf"
                && matches!(op.name.as_str(), "kill-session" | "delete-config");
            if !nacm.may_exec(&s.username, module, &op.name, default_deny) {
                return Err(vec![app_err(
                    ErrorTag::AccessDenied,
                    format!("user '{}' may not run {}", s.username, op.name),
                )]);
            }
        }
        match (ns, op.name.as_str()) {
            (BASE_NS, "get") => self.op_get(s, rpc, &nacm, true),
            (BASE_NS, "get-config") => self.op_get(s, rpc, &nacm, false),
            (BASE_NS, "edit-config") => self.op_edit_config(s, rpc, &nacm),
            (BASE_NS, "copy-config") => self.op_copy_config(s, rpc, &nacm),
            (BASE_NS, "delete-config") => self.op_delete_config(s, rpc),
            (BASE_NS, "lock") => self.op_lock(s, rpc, true),
            (BASE_NS, "unlock") => self.op_lock(s, rpc, false),
            (BASE_NS, "close-session") => Ok(("<ok/>".into(), After::Close)),
            (BASE_NS, "kill-session") => self.op_kill_session(s, rpc),
            (BASE_NS, "validate") => self.op_validate(rpc),
            (BASE_NS, "commit") => self.op_commit(s, rpc),
            (BASE_NS, "discard-changes") => self.op_discard(s),
            (BASE_NS, "cancel-commit") => self.op_cancel_commit(s, rpc),
            (MONITORING_NS, "get-schema") => self.op_get_schema(rpc),
            (NOTIFICATION_NS, "create-subscription") => self.op_create_subscription(rpc),
            (l45_yang::L45_NAMESPACE, _) => self.op_l45(s, rpc),
            (BASE_NS, other) => Err(vec![rpc_err(
                ErrorTag::OperationNotSupported,
                format!("operation {other} is not supported"),
            )
            .info("bad-element", other)]),
            (_, other) => {
                if self.ctx.get_module_latest_ns(ns).is_some() {
                    Err(vec![rpc_err(
                        ErrorTag::OperationNotSupported,
                        format!("operation {other} is not supported"),
                    )
                    .info("bad-element", other)])
                } else {
                    Err(vec![rpc_err(
                        ErrorTag::UnknownNamespace,
                        format!("unknown namespace {ns:?} of operation {other}"),
                    )
                    .info("bad-element", other)
                    .info("bad-namespace", ns)])
                }
            }
        }
    }

    // ===== parameters =====

    fn datastore_param(op: &Element, which: &str) -> Result<Datastore, Vec<RpcError>> {
        let el = op.child(BASE_NS, which).ok_or_else(|| {
            vec![
                rpc_err(ErrorTag::MissingElement, format!("<{which}> is missing"))
                    .info("bad-element", which),
            ]
        })?;
        let Some(ds) = el.children.first() else {
            return Err(vec![rpc_err(
                ErrorTag::MissingElement,
                format!("<{which}> names no datastore"),
            )
            .info("bad-element", which)]);
        };
        if ds.ns.as_deref() != Some(BASE_NS) {
            return Err(vec![rpc_err(
                ErrorTag::UnknownNamespace,
                "datastore in an unknown namespace",
            )
            .info("bad-element", &ds.name)]);
        }
        match ds.name.as_str() {
            "running" => Ok(Datastore::Running),
            "candidate" => Ok(Datastore::Candidate),
            "startup" => Ok(Datastore::Startup),
            "url" => Err(vec![rpc_err(
                ErrorTag::OperationNotSupported,
                "the :url capability is not supported",
            )
            .info("bad-element", "url")]),
            other => Err(vec![rpc_err(
                ErrorTag::BadElement,
                format!("unknown datastore {other}"),
            )
            .info("bad-element", other)]),
        }
    }

    fn check_lock(&self, ds: Datastore, s: &SessionInfo) -> Result<(), Vec<RpcError>> {
        if let Some(owner) = Self::guard(&self.locks).get(ds.name()) {
            if *owner != s.id {
                return Err(vec![RpcError::new(
                    ErrorType::Protocol,
                    ErrorTag::LockDenied,
                )
                .message(format!("{} is locked by session {owner}", ds.name()))
                .info("session-id", &owner.to_string())]);
            }
        }
        Ok(())
    }

    fn print_flags(op: &Element) -> Result<DataPrinterFlags, Vec<RpcError>> {
        let Some(wd) = op.child(WITH_DEFAULTS_NS, "with-defaults") else {
            return Ok(DataPrinterFlags::WD_EXPLICIT);
        };
        Ok(match wd.trimmed_text() {
            "report-all" => DataPrinterFlags::WD_ALL,
            "report-all-tagged" => {
                DataPrinterFlags::from_bits_retain(yang3::ffi::LYD_PRINT_WD_ALL_TAG)
            }
            "trim" => DataPrinterFlags::WD_TRIM,
            "explicit" => DataPrinterFlags::WD_EXPLICIT,
            other => {
                return Err(vec![app_err(
                    ErrorTag::InvalidValue,
                    format!("unknown with-defaults mode {other}"),
                )
                .info("bad-element", "with-defaults")])
            }
        })
    }

    /// Removes what NACM hides from `user` in a reply tree.
    fn nacm_read_filter(&self, tree: &mut DataTree<'static>, user: &str, nacm: &Nacm) {
        let tops: Vec<(String, String)> = match tree.reference() {
            Some(first) => first
                .inclusive_siblings()
                .map(|n| (n.path(), n.schema().module().name().to_string()))
                .collect(),
            None => return,
        };
        for (path, module) in tops {
            if !nacm.may(user, &module, Access::Read, false) {
                let _ = tree.remove(&path);
            }
        }
        if !nacm.may(user, l45_yang::L45_MODULE, Access::Read, true) {
            let keys: Vec<String> = tree
                .find_xpath("/layer45-customization:customizations/module/security/key")
                .map(|set| set.map(|n| n.path()).collect())
                .unwrap_or_default();
            for k in keys {
                let _ = tree.remove(&k);
            }
        }
    }

    // ===== get / get-config =====

    fn op_get(
        self: &Arc<Self>,
        s: &SessionInfo,
        rpc: &Rpc,
        nacm: &Nacm,
        with_state: bool,
    ) -> Reply {
        let op = &rpc.operation;
        let ds = if with_state {
            Datastore::Running
        } else {
            Self::datastore_param(op, "source")?
        };
        let flags = Self::print_flags(op)?;
        let filter =
            filter::parse_filter(self.ctx, op.child(BASE_NS, "filter"), &rpc.op_child_scope())
                .map_err(|e| vec![e])?;
        // Fast path: explicit mode, no filter or just `<customizations/>`:
        // the entries are copied out as stored.
        let whole = filter == filter::Filter::All;
        let only_customizations =
            filter == filter::Filter::XPaths(vec![tapbridge::CUSTOMIZATIONS.to_string()]);
        if !with_state
            && flags.bits() == DataPrinterFlags::WD_EXPLICIT.bits()
            && (whole || only_customizations)
        {
            let stores = self.stores();
            let store = stores.get(ds);
            let mut rest_xml = String::new();
            if whole {
                let mut rest = store.rest.duplicate().map_err(yerr(self.ctx))?;
                self.nacm_read_filter(&mut rest, &s.username, nacm);
                rest_xml = print_xml(&rest, flags).map_err(yerr(self.ctx))?;
            }
            let size: usize = store.modules.values().map(|e| e.len()).sum();
            let mut body = String::with_capacity(size + rest_xml.len() + 128);
            body.push_str("<data>");
            body.push_str(&rest_xml);
            if nacm.may(&s.username, l45_yang::L45_MODULE, Access::Read, false) {
                let keys = nacm.may(&s.username, l45_yang::L45_MODULE, Access::Read, true);
                let _ = Ds::write_customizations(&store.modules, keys, &mut body);
            }
            body.push_str("</data>");
            return Ok((body, After::Continue));
        }
        let mut tree = {
            let full = {
                let stores = self.stores();
                stores.get(ds).to_tree(self.ctx).map_err(yerr(self.ctx))?
            };
            if with_state {
                let mut full = full;
                self.add_state(&mut full).map_err(yerr(self.ctx))?;
                filter::select(self.ctx, &full, &filter).map_err(|e| vec![e])?
            } else {
                filter::select(self.ctx, &full, &filter).map_err(|e| vec![e])?
            }
        };
        self.nacm_read_filter(&mut tree, &s.username, nacm);
        let body = print_xml(&tree, flags).map_err(yerr(self.ctx))?;
        Ok((format!("<data>{body}</data>"), After::Continue))
    }

    /// Adds config-false data: tap statistics, sockets, monitoring, library.
    fn add_state(&self, tree: &mut DataTree<'static>) -> Result<(), yang3::Error> {
        let base = tapbridge::CUSTOMIZATIONS;
        for st in self.tap.module_stats() {
            let m = format!("{base}/module[id='{}']", st.id);
            if tree.find_path(&m).is_err() {
                continue;
            }
            let p = format!("{m}/state");
            tree.new_path(&format!("{p}/state"), Some(st.state.as_str()), false)?;
            if let Some(ts) = st.active_ts {
                tree.new_path(&format!("{p}/active-ts"), Some(&rfc3339(ts)), false)?;
            }
            for (leaf, v) in [
                ("socket-count", st.socket_count as u64),
                ("bytes-sent", st.bytes_sent),
                ("bytes-received", st.bytes_received),
                ("messages-sent", st.messages_sent),
                ("messages-received", st.messages_received),
                ("errors", st.errors),
            ] {
                tree.new_path(&format!("{p}/{leaf}"), Some(&v.to_string()), false)?;
            }
        }
        for sock in self.tap.sockets() {
            let p = format!("{base}/socket[id='{}']", sock.id);
            let proto = match sock.protocol {
                l45_tap_control::Protocol::Tcp => "tcp",
                l45_tap_control::Protocol::Udp => "udp",
                l45_tap_control::Protocol::Any => "any",
            };
            tree.new_path(&format!("{p}/protocol"), Some(proto), false)?;
            if let Some(a) = sock.source {
                tree.new_path(
                    &format!("{p}/source-address"),
                    Some(&a.ip().to_string()),
                    false,
                )?;
                tree.new_path(
                    &format!("{p}/source-port"),
                    Some(&a.port().to_string()),
                    false,
                )?;
            }
            if let Some(a) = sock.destination {
                tree.new_path(
                    &format!("{p}/destination-address"),
                    Some(&a.ip().to_string()),
                    false,
                )?;
                tree.new_path(
                    &format!("{p}/destination-port"),
                    Some(&a.port().to_string()),
                    false,
                )?;
            }
            tree.new_path(&format!("{p}/pid"), Some(&sock.pid.to_string()), false)?;
            tree.new_path(&format!("{p}/thread-name"), Some(&sock.thread_name), false)?;
            tree.new_path(
                &format!("{p}/process-name"),
                Some(&sock.process_name),
                false,
            )?;
            for id in &sock.modules {
                tree.new_path(&format!("{p}/module[.='{id}']"), None, false)?;
            }
        }
        self.add_monitoring(tree)?;
        self.add_yang_library(tree)?;
        Ok(())
    }

    fn add_monitoring(&self, tree: &mut DataTree<'static>) -> Result<(), yang3::Error> {
        let base = "/ietf-netconf-monitoring:netconf-state";
        for cap in self.capabilities() {
            let quoted = if cap.contains('\'') {
                format!("\"{cap}\"")
            } else {
                format!("'{cap}'")
            };
            tree.new_path(
                &format!("{base}/capabilities/capability[.={quoted}]"),
                None,
                false,
            )?;
        }
        let locks = Self::guard(&self.locks).clone();
        for ds in ["running", "candidate", "startup"] {
            let p = format!("{base}/datastores/datastore[name='{ds}']");
            tree.new_path(&p, None, false)?;
            if let Some(owner) = locks.get(ds) {
                tree.new_path(
                    &format!("{p}/locks/global-lock/locked-by-session"),
                    Some(&owner.to_string()),
                    false,
                )?;
                tree.new_path(
                    &format!("{p}/locks/global-lock/locked-time"),
                    Some(&rfc3339(SystemTime::now())),
                    false,
                )?;
            }
        }
        for m in l45_yang::MODULES
            .iter()
            .filter(|m| !l45_yang::INTERNAL_MODULES.contains(&m.name))
        {
            let p = format!(
                "{base}/schemas/schema[identifier='{}'][version='{}'][format='yang']",
                m.name, m.revision
            );
            let namespace = self
                .ctx
                .get_module_latest(m.name)
                .map(|x| x.namespace().to_string())
                .unwrap_or_default();
            tree.new_path(&format!("{p}/namespace"), Some(&namespace), false)?;
            tree.new_path(&format!("{p}/location"), Some("NETCONF"), false)?;
        }
        let sessions: Vec<SessionInfo> = Self::guard(&self.sessions).values().cloned().collect();
        for si in sessions {
            let p = format!("{base}/sessions/session[session-id='{}']", si.id);
            tree.new_path(
                &format!("{p}/transport"),
                Some("ietf-netconf-monitoring:netconf-ssh"),
                false,
            )?;
            tree.new_path(&format!("{p}/username"), Some(&si.username), false)?;
            if let Some(h) = &si.source_host {
                let _ = tree.new_path(&format!("{p}/source-host"), Some(h), false);
            }
            tree.new_path(
                &format!("{p}/login-time"),
                Some(&rfc3339(si.login_time)),
                false,
            )?;
            for (leaf, v) in [
                ("in-rpcs", &si.in_rpcs),
                ("in-bad-rpcs", &si.in_bad_rpcs),
                ("out-rpc-errors", &si.out_rpc_errors),
                ("out-notifications", &si.out_notifications),
            ] {
                tree.new_path(
                    &format!("{p}/{leaf}"),
                    Some(&v.load(Ordering::Relaxed).to_string()),
                    false,
                )?;
            }
        }
        let c = &self.counters;
        tree.new_path(
            &format!("{base}/statistics/netconf-start-time"),
            Some(&rfc3339(self.started)),
            false,
        )?;
        for (leaf, v) in [
            ("in-bad-hellos", &c.in_bad_hellos),
            ("in-sessions", &c.in_sessions),
            ("dropped-sessions", &c.dropped_sessions),
            ("in-rpcs", &c.in_rpcs),
            ("in-bad-rpcs", &c.in_bad_rpcs),
            ("out-rpc-errors", &c.out_rpc_errors),
            ("out-notifications", &c.out_notifications),
        ] {
            tree.new_path(
                &format!("{base}/statistics/{leaf}"),
                Some(&v.load(Ordering::Relaxed).to_string()),
                false,
            )?;
        }
        Ok(())
    }

    fn add_yang_library(&self, tree: &mut DataTree<'static>) -> Result<(), yang3::Error> {
        let lib = "/ietf-yang-library:yang-library";
        let set = format!("{lib}/module-set[name='complete']");
        let legacy = "/ietf-yang-library:modules-state";
        for m in self.ctx.modules(false) {
            if l45_yang::INTERNAL_MODULES.contains(&m.name()) {
                continue;
            }
            let rev = m.revision().unwrap_or("");
            if m.is_implemented() {
                let p = format!("{set}/module[name='{}']", m.name());
                if !rev.is_empty() {
                    tree.new_path(&format!("{p}/revision"), Some(rev), false)?;
                }
                tree.new_path(&format!("{p}/namespace"), Some(m.namespace()), false)?;
                if let Some(em) = l45_yang::find_module(m.name(), m.revision()) {
                    for f in em.features {
                        tree.new_path(&format!("{p}/feature[.='{f}']"), None, false)?;
                    }
                }
            } else {
                let p = format!(
                    "{set}/import-only-module[name='{}'][revision='{rev}']",
                    m.name()
                );
                tree.new_path(&format!("{p}/namespace"), Some(m.namespace()), false)?;
            }
            let lp = format!("{legacy}/module[name='{}'][revision='{rev}']", m.name());
            tree.new_path(&format!("{lp}/namespace"), Some(m.namespace()), false)?;
            tree.new_path(
                &format!("{lp}/conformance-type"),
                Some(if m.is_implemented() {
                    "implement"
                } else {
                    "import"
                }),
                false,
            )?;
        }
        let content_id = self.ctx.get_module_set_id().to_string();
        tree.new_path(&format!("{legacy}/module-set-id"), Some(&content_id), false)?;
        tree.new_path(
            &format!("{lib}/schema[name='complete']/module-set[.='complete']"),
            None,
            false,
        )?;
        for ds in ["running", "candidate", "startup", "operational"] {
            tree.new_path(
                &format!("{lib}/datastore[name='ietf-datastores:{ds}']/schema"),
                Some("complete"),
                false,
            )?;
        }
        tree.new_path(&format!("{lib}/content-id"), Some(&content_id), false)?;
        Ok(())
    }

    // ===== edit-config and friends =====

    fn check_write_access(
        &self,
        s: &SessionInfo,
        nacm: &Nacm,
        edit: &DataTree<'static>,
    ) -> Result<(), Vec<RpcError>> {
        if let Some(first) = edit.reference() {
            for top in first.inclusive_siblings() {
                let module = top.schema().module().name().to_string();
                if !nacm.may(&s.username, &module, Access::Write, false) {
                    return Err(vec![app_err(
                        ErrorTag::AccessDenied,
                        format!("user '{}' may not write {module} data", s.username),
                    )
                    .path(crate::yangerr::xml_error_path(self.ctx, &top.path()))]);
                }
            }
        }
        if edit
            .find_xpath("/layer45-customization:customizations/module/security/key")
            .map(|mut s| s.next().is_some())
            .unwrap_or(false)
            && !nacm.may(&s.username, l45_yang::L45_MODULE, Access::Write, true)
        {
            return Err(vec![app_err(
                ErrorTag::AccessDenied,
                "module keys need an explicit NACM permit",
            )]);
        }
        Ok(())
    }

    fn op_edit_config(self: &Arc<Self>, s: &SessionInfo, rpc: &Rpc, nacm: &Nacm) -> Reply {
        let op = &rpc.operation;
        let target = Self::datastore_param(op, "target")?;
        if target == Datastore::Startup {
            return Err(vec![rpc_err(
                ErrorTag::OperationNotSupported,
                "edit-config on startup is not supported; use copy-config",
            )]);
        }
        let default_op = match op
            .child(BASE_NS, "default-operation")
            .map(|e| e.trimmed_text())
        {
            None | Some("merge") => EditOp::Merge,
            Some("replace") => EditOp::Replace,
            Some("none") => EditOp::None,
            Some(other) => {
                return Err(vec![rpc_err(
                    ErrorTag::InvalidValue,
                    format!("bad default-operation {other}"),
                )
                .info("bad-element", "default-operation")])
            }
        };
        let test_option = op
            .child(BASE_NS, "test-option")
            .map(|e| e.trimmed_text().to_string())
            .unwrap_or_else(|| "test-then-set".into());
        if !matches!(test_option.as_str(), "test-then-set" | "set" | "test-only") {
            return Err(vec![rpc_err(
                ErrorTag::InvalidValue,
                format!("bad test-option {test_option}"),
            )
            .info("bad-element", "test-option")]);
        }
        let error_option = op
            .child(BASE_NS, "error-option")
            .map(|e| e.trimmed_text().to_string())
            .unwrap_or_else(|| "stop-on-error".into());
        let continue_on_error = match error_option.as_str() {
            "stop-on-error" | "rollback-on-error" => false,
            "continue-on-error" => true,
            other => {
                return Err(vec![rpc_err(
                    ErrorTag::InvalidValue,
                    format!("bad error-option {other}"),
                )
                .info("bad-element", "error-option")])
            }
        };
        let config = match op.child(BASE_NS, "config") {
            Some(c) => c,
            None if op.child(BASE_NS, "url").is_some() => {
                return Err(vec![rpc_err(
                    ErrorTag::OperationNotSupported,
                    "the :url capability is not supported",
                )])
            }
            None => {
                return Err(vec![rpc_err(
                    ErrorTag::MissingElement,
                    "<config> is missing",
                )
                .info("bad-element", "config")])
            }
        };
        let _w = Self::guard(&self.write_lock);
        // Fast path: the module list natively, validating only what the
        // edit touches. It reports no errors: anything it is unsure of goes
        // to the general path below, which produces them.
        let access = store::WriteAccess {
            module: nacm.may(&s.username, l45_yang::L45_MODULE, Access::Write, false),
            keys: nacm.may(&s.username, l45_yang::L45_MODULE, Access::Write, true),
        };
        let t0 = std::time::Instant::now();
        let fast = match (continue_on_error, store::schema()) {
            (false, Ok(schema)) => {
                let stores = self.stores();
                let scope = config.scope_for_children(&rpc.op_child_scope());
                store::fast_edit(
                    schema,
                    &stores.get(target).modules,
                    &rpc.source,
                    &config.children,
                    &scope,
                    default_op,
                    access,
                )
            }
            _ => None,
        };
        tracing::debug!(
            fast = fast.is_some(),
            ms = t0.elapsed().as_secs_f64() * 1e3,
            "edit-config: fast path"
        );
        let (delta, rest, touched, errors) = match fast {
            Some((delta, touched)) => {
                self.check_lock(target, s)?;
                (delta, None, touched, Vec::new())
            }
            None => self.general_edit(
                s,
                nacm,
                rpc,
                config,
                target,
                default_op,
                continue_on_error,
                &test_option,
            )?,
        };
        if test_option == "test-only" {
            return if errors.is_empty() {
                Ok(("<ok/>".into(), After::Continue))
            } else {
                Err(errors)
            };
        }
        match target {
            Datastore::Running => {
                self.commit_running(s, delta, rest, &touched, Datastore::Running)?
            }
            Datastore::Candidate => {
                let mut guard = self.stores_mut();
                let stores = &mut *guard;
                if stores.candidate.is_none() {
                    stores.candidate = Some(stores.running.share().map_err(yerr(self.ctx))?);
                }
                if let Some(c) = stores.candidate.as_mut() {
                    if let Some(rest) = rest {
                        c.rest = rest;
                    }
                    delta.apply_to(&mut c.modules);
                }
                stores.candidate_dirty = true;
                stores.candidate_unvalidated |= test_option == "set";
            }
            Datastore::Startup => {}
        }
        if errors.is_empty() {
            Ok(("<ok/>".into(), After::Continue))
        } else {
            Err(errors)
        }
    }

    /// edit-config by libyang, as before the native store: the edit is
    /// applied to a tree of the non-module data plus only the entries the
    /// edit names (every entry when it works on the whole list), which is
    /// then validated. Returns the result as a delta.
    #[allow(clippy::too_many_arguments)]
    fn general_edit(
        &self,
        s: &SessionInfo,
        nacm: &Nacm,
        rpc: &Rpc,
        config: &Element,
        target: Datastore,
        default_op: EditOp,
        continue_on_error: bool,
        test_option: &str,
    ) -> Result<EditOutcome, Vec<RpcError>> {
        // The data arrived lazy (see message::parse_rpc): build it whole.
        let full;
        let (rpc, config) = if rpc.has_lazy() {
            full = rpc.full().ok_or_else(|| {
                vec![rpc_err(
                    ErrorTag::MalformedMessage,
                    "message no longer parses",
                )]
            })?;
            let config = full.operation.child(BASE_NS, "config").ok_or_else(|| {
                vec![rpc_err(ErrorTag::MissingElement, "<config> is missing")
                    .info("bad-element", "config")]
            })?;
            (&full, config)
        } else {
            (rpc, config)
        };
        let xml =
            edit::config_xml(config, &rpc.source, &rpc.op_child_scope()).map_err(|e| vec![e])?;
        let edit_tree = edit::parse_config(self.ctx, &xml).map_err(|e| vec![e])?;
        self.check_write_access(s, nacm, &edit_tree)?;
        self.check_lock(target, s)?;
        let ids = edit_entry_ids(&edit_tree, default_op);
        let mut new_tree = {
            let stores = self.stores();
            let ds = stores.get(target);
            match &ids {
                Some(ids) => ds.tree_of(self.ctx, ids.iter().filter_map(|i| ds.modules.get(i))),
                None => ds.to_tree(self.ctx),
            }
            .map_err(yerr(self.ctx))?
        };
        let (touched, errors) = edit::apply(
            self.ctx,
            &mut new_tree,
            &edit_tree,
            default_op,
            continue_on_error,
        )
        .map_err(|e| vec![e])?;
        if test_option != "set" {
            new_tree
                .validate(DataValidationFlags::NO_STATE)
                .map_err(yerr(self.ctx))?;
        }
        let entries = store::entries_of(&new_tree).map_err(yerr(self.ctx))?;
        let mut delta = Delta::default();
        match ids {
            None => {
                delta.clear = true;
                delta.changes = entries.into_iter().map(|(id, e)| (id, Some(e))).collect();
            }
            Some(ids) => {
                for id in ids {
                    delta.changes.insert(id, entries.get(&id).cloned());
                }
                for (id, e) in entries {
                    delta.changes.entry(id).or_insert(Some(e));
                }
            }
        }
        let mut rest = new_tree;
        if rest.find_path(tapbridge::CUSTOMIZATIONS).is_ok() {
            rest.remove(tapbridge::CUSTOMIZATIONS)
                .map_err(yerr(self.ctx))?;
        }
        Ok((delta, Some(rest), touched, errors))
    }

    /// The one path by which running changes: tap prepare → persist → tap
    /// apply → swap, with notifications. Call with `write_lock` held.
    /// `rest` replaces the non-module data when given.
    fn commit_running(
        &self,
        s: &SessionInfo,
        delta: Delta,
        rest: Option<DataTree<'static>>,
        touched: &[Touched],
        source: Datastore,
    ) -> Result<(), Vec<RpcError>> {
        let schema = store::schema().map_err(|e| vec![app_err(ErrorTag::OperationFailed, e)])?;
        let t0 = std::time::Instant::now();
        let ms = |t: std::time::Instant| t.elapsed().as_secs_f64() * 1e3;
        let mut delta = delta;
        let txn = {
            let stores = self.stores();
            delta_transaction(schema, &stores.running.modules, &mut delta)
        };
        let txn = match txn {
            Ok(t) => t,
            Err((id, kind, case)) => {
                return Err(vec![app_err(
                    ErrorTag::InvalidValue,
                    format!("module {id} of kind {kind} cannot take {case} parameters"),
                )
                .path(crate::yangerr::xml_error_path(
                    self.ctx,
                    &format!("{}/parameters/{case}", store::module_path(id)),
                ))])
            }
        };
        let txn_ms = ms(t0);
        let t = std::time::Instant::now();
        self.tap.prepare(&txn).map_err(|e| vec![tap_error(&e)])?;
        let prepare_ms = ms(t);
        let t = std::time::Instant::now();
        if let Err(e) = self.persist_running(&delta, rest.as_ref()) {
            self.tap.abort(&txn);
            return Err(vec![app_err(
                ErrorTag::OperationFailed,
                format!("could not persist running: {e}"),
            )]);
        }
        let persist_ms = ms(t);
        let t = std::time::Instant::now();
        self.tap.apply(&txn);
        let apply_ms = ms(t);
        let t = std::time::Instant::now();
        let removed = delta.clear || delta.changes.values().filter(|v| v.is_none()).count() >= 1000;
        {
            let mut stores = self.stores_mut();
            if let Some(rest) = rest {
                stores.running.rest = rest;
            }
            delta.apply_to(&mut stores.running.modules);
            if !stores.candidate_dirty {
                stores.candidate = None;
            }
        }
        let swap_ms = ms(t);
        tracing::info!(session_id = s.id, user = %s.username, changes = txn.changes.len(), source = source.name(), "running configuration changed");
        self.notify_config_change(s, touched, &txn);
        // Trim only once the transaction (the tap's view of every changed
        // entry) is gone too.
        drop(txn);
        let t = std::time::Instant::now();
        if removed {
            crate::memtrim::release();
        }
        let trim_ms = ms(t);
        tracing::debug!(
            txn_ms,
            prepare_ms,
            persist_ms,
            apply_ms,
            swap_ms,
            trim_ms,
            "commit_running timings"
        );
        Ok(())
    }

    /// Makes a running change durable before it is applied: a journal
    /// record, or a new snapshot when the change is large.
    fn persist_running(
        &self,
        delta: &Delta,
        rest: Option<&DataTree<'static>>,
    ) -> std::io::Result<()> {
        let mut journal = Self::guard(&self.journal);
        let stores = self.stores();
        let running = &stores.running;
        if journal.wants_snapshot(delta.changes.len(), running.modules.len(), delta.clear) {
            let rest = rest.unwrap_or(&running.rest);
            let mut next = if delta.clear {
                store::ModuleMap::new()
            } else {
                running.modules.clone()
            };
            for (id, v) in &delta.changes {
                match v {
                    Some(e) => {
                        next.insert(*id, e.clone());
                    }
                    None => {
                        next.remove(id);
                    }
                }
            }
            journal.write_snapshot(rest, next.values())
        } else {
            journal.append(delta, rest)
        }
    }

    fn notify_config_change(&self, s: &SessionInfo, touched: &[Touched], txn: &Transaction) {
        // Nobody subscribed: emit would drop every event (100k module
        // notifications after a load), so do not build them.
        if self.events.receiver_count() == 0 {
            return;
        }
        let mut xml = format!(
            "<netconf-config-change xmlns=\"{NC_NOTIF_NS}\"><changed-by><username>{}</username><session-id>{}</session-id></changed-by><datastore>running</datastore>",
            escape_text(&s.username),
            s.id
        );
        // Large edits are summarised by their first entries.
        for t in touched.iter().take(store::TOUCHED_MAX) {
            let p = crate::yangerr::xml_error_path(self.ctx, &t.path);
            let decls: String = p
                .namespaces
                .iter()
                .map(|(pre, uri)| format!(" xmlns:{pre}=\"{uri}\""))
                .collect();
            let op = match t.op {
                EditOp::None => "merge",
                other => other.as_str(),
            };
            xml.push_str(&format!(
                "<edit><target{decls}>{}</target><operation>{op}</operation></edit>",
                escape_text(&p.xpath)
            ));
        }
        xml.push_str("</netconf-config-change>");
        self.emit(xml);
        for change in &txn.changes {
            match change {
                Change::Register(m) => self.emit(format!(
                    "<module-registered xmlns=\"{}\"><id>{}</id><name>{}</name></module-registered>",
                    l45_yang::L45_NAMESPACE,
                    m.id,
                    escape_text(&m.name)
                )),
                Change::Unregister(id) => self.emit(format!(
                    "<module-revoked xmlns=\"{}\"><id>{}</id><reason>removed from running</reason></module-revoked>",
                    l45_yang::L45_NAMESPACE,
                    id
                )),
                Change::Update(_) => {}
            }
        }
    }

    fn persist(&self, ds: Datastore) -> Result<(), Vec<RpcError>> {
        let file = match ds {
            Datastore::Running => "running.xml",
            Datastore::Startup => "startup.xml",
            Datastore::Candidate => return Ok(()),
        };
        let text = self.stores().get(ds).to_xml().map_err(yerr(self.ctx))?;
        write_atomically(&self.opts.state_dir.join(file), text.as_bytes()).map_err(|e| {
            vec![app_err(
                ErrorTag::OperationFailed,
                format!("could not persist {}: {e}", ds.name()),
            )]
        })
    }

    fn op_copy_config(self: &Arc<Self>, s: &SessionInfo, rpc: &Rpc, nacm: &Nacm) -> Reply {
        let op = &rpc.operation;
        let target = Self::datastore_param(op, "target")?;
        let source_el = op.child(BASE_NS, "source").ok_or_else(|| {
            vec![rpc_err(ErrorTag::MissingElement, "<source> is missing")
                .info("bad-element", "source")]
        })?;
        let new_tree = match source_el.child(BASE_NS, "config") {
            Some(config) => {
                let scope = source_el.scope_for_children(&rpc.op_child_scope());
                let xml = edit::config_xml(config, &rpc.source, &scope).map_err(|e| vec![e])?;
                if xml.contains("l45nc:operation") {
                    return Err(vec![rpc_err(
                        ErrorTag::BadAttribute,
                        "copy-config content may not carry operation attributes",
                    )]);
                }
                let mut t = edit::parse_config(self.ctx, &xml).map_err(|e| vec![e])?;
                self.check_write_access(s, nacm, &t)?;
                t.validate(DataValidationFlags::NO_STATE)
                    .map_err(yerr(self.ctx))?;
                Ds::from_tree(&t).map_err(yerr(self.ctx))?
            }
            None => {
                let source = Self::datastore_param(op, "source")?;
                if source == target {
                    return Err(vec![rpc_err(
                        ErrorTag::InvalidValue,
                        "source and target are the same datastore",
                    )]);
                }
                self.stores().get(source).share().map_err(yerr(self.ctx))?
            }
        };
        if !nacm.may(&s.username, "*", Access::Write, false) && target != Datastore::Startup {
            let tree = new_tree.to_tree(self.ctx).map_err(yerr(self.ctx))?;
            self.check_write_access(s, nacm, &tree)?;
        }
        let _w = Self::guard(&self.write_lock);
        self.check_lock(target, s)?;
        match target {
            Datastore::Running => {
                let touched = [Touched {
                    path: tapbridge::CUSTOMIZATIONS.to_string(),
                    op: EditOp::Replace,
                }];
                let delta = Delta::between(&self.stores().running.modules, &new_tree.modules);
                self.commit_running(s, delta, Some(new_tree.rest), &touched, Datastore::Running)?;
            }
            Datastore::Candidate => {
                let mut stores = self.stores_mut();
                stores.candidate = Some(new_tree);
                stores.candidate_dirty = true;
            }
            Datastore::Startup => {
                self.stores_mut().startup = new_tree;
                self.persist(Datastore::Startup)?;
            }
        }
        Ok(("<ok/>".into(), After::Continue))
    }

    fn op_delete_config(self: &Arc<Self>, s: &SessionInfo, rpc: &Rpc) -> Reply {
        let target = Self::datastore_param(&rpc.operation, "target")?;
        let _w = Self::guard(&self.write_lock);
        self.check_lock(target, s)?;
        match target {
            Datastore::Running => Err(vec![rpc_err(
                ErrorTag::OperationNotSupported,
                "running cannot be deleted",
            )]),
            Datastore::Candidate => {
                self.stores_mut().reset_candidate();
                Ok(("<ok/>".into(), After::Continue))
            }
            Datastore::Startup => {
                self.stores_mut().startup = Ds::new(self.ctx);
                self.persist(Datastore::Startup)?;
                Ok(("<ok/>".into(), After::Continue))
            }
        }
    }

    fn op_lock(self: &Arc<Self>, s: &SessionInfo, rpc: &Rpc, lock: bool) -> Reply {
        let target = Self::datastore_param(&rpc.operation, "target")?;
        let mut locks = Self::guard(&self.locks);
        let owner = locks.get(target.name()).copied();
        if lock {
            if let Some(owner) = owner {
                return Err(vec![RpcError::new(
                    ErrorType::Protocol,
                    ErrorTag::LockDenied,
                )
                .message(format!(
                    "{} is already locked by session {owner}",
                    target.name()
                ))
                .info("session-id", &owner.to_string())]);
            }
            if target == Datastore::Candidate && self.stores().candidate_dirty {
                return Err(vec![RpcError::new(
                    ErrorType::Protocol,
                    ErrorTag::LockDenied,
                )
                .message("candidate has uncommitted changes")
                .info("session-id", "0")]);
            }
            locks.insert(target.name(), s.id);
        } else {
            match owner {
                Some(o) if o == s.id => {
                    locks.remove(target.name());
                }
                Some(o) => {
                    return Err(vec![RpcError::new(
                        ErrorType::Protocol,
                        ErrorTag::LockDenied,
                    )
                    .message(format!("{} is locked by session {o}", target.name()))
                    .info("session-id", &o.to_string())])
                }
                None => {
                    return Err(vec![rpc_err(
                        ErrorTag::OperationFailed,
                        format!("{} is not locked", target.name()),
                    )])
                }
            }
        }
        Ok(("<ok/>".into(), After::Continue))
    }

    fn op_kill_session(self: &Arc<Self>, s: &SessionInfo, rpc: &Rpc) -> Reply {
        let text = rpc
            .operation
            .child(BASE_NS, "session-id")
            .map(|e| e.trimmed_text().to_string());
        let Some(id) = text.as_deref().and_then(|t| t.parse::<u32>().ok()) else {
            return Err(vec![rpc_err(
                ErrorTag::MissingElement,
                "kill-session needs a session-id",
            )
            .info("bad-element", "session-id")]);
        };
        if id == s.id {
            return Err(vec![rpc_err(
                ErrorTag::InvalidValue,
                "a session cannot kill itself; use close-session",
            )]);
        }
        let target = Self::guard(&self.sessions).get(&id).cloned();
        match target {
            Some(info) => {
                let _ = info.kill.send(true);
                // Release its locks now, so the caller can take them at once.
                self.close_session(id);
                Ok(("<ok/>".into(), After::Continue))
            }
            None => Err(vec![app_err(
                ErrorTag::InvalidValue,
                format!("no session {id}"),
            )
            .info("bad-element", "session-id")]),
        }
    }

    fn op_validate(self: &Arc<Self>, rpc: &Rpc) -> Reply {
        let op = &rpc.operation;
        let source_el = op
            .child(BASE_NS, "source")
            .ok_or_else(|| vec![rpc_err(ErrorTag::MissingElement, "<source> is missing")])?;
        let mut tree = match source_el.child(BASE_NS, "config") {
            Some(config) => {
                let scope = source_el.scope_for_children(&rpc.op_child_scope());
                let xml = edit::config_xml(config, &rpc.source, &scope).map_err(|e| vec![e])?;
                edit::parse_config(self.ctx, &xml).map_err(|e| vec![e])?
            }
            None => self
                .stores()
                .get(Self::datastore_param(op, "source")?)
                .to_tree(self.ctx)
                .map_err(yerr(self.ctx))?,
        };
        tree.validate(DataValidationFlags::NO_STATE)
            .map_err(yerr(self.ctx))?;
        Ok(("<ok/>".into(), After::Continue))
    }

    // ===== candidate: commit, discard, confirmed commit =====

    fn op_commit(self: &Arc<Self>, s: &SessionInfo, rpc: &Rpc) -> Reply {
        let op = &rpc.operation;
        let confirmed = op.child(BASE_NS, "confirmed").is_some();
        let timeout = match op.child(BASE_NS, "confirm-timeout") {
            Some(t) => t
                .trimmed_text()
                .parse::<u32>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| {
                    vec![rpc_err(
                        ErrorTag::InvalidValue,
                        "confirm-timeout must be a positive number of seconds",
                    )
                    .info("bad-element", "confirm-timeout")]
                })?,
            None => 600,
        };
        let persist = op
            .child(BASE_NS, "persist")
            .map(|e| e.trimmed_text().to_string());
        let persist_id = op
            .child(BASE_NS, "persist-id")
            .map(|e| e.trimmed_text().to_string());

        let _w = Self::guard(&self.write_lock);
        self.check_lock(Datastore::Running, s)?;
        // A pending confirmed commit may only be confirmed by its session or
        // by the holder of its persist id.
        {
            let pending = Self::guard(&self.confirmed);
            if let Some(p) = pending.as_ref() {
                let allowed = match (&p.persist, &persist_id) {
                    (Some(expected), Some(given)) => expected == given,
                    (Some(_), None) => false,
                    (None, _) => p.session_id == s.id,
                };
                if !allowed {
                    return Err(vec![app_err(
                        ErrorTag::InUse,
                        "a confirmed commit of another session is pending",
                    )]);
                }
            } else if persist_id.is_some() {
                return Err(vec![app_err(
                    ErrorTag::InvalidValue,
                    "no confirmed commit with that persist-id is pending",
                )
                .info("bad-element", "persist-id")]);
            }
        }
        let (delta, rest, backup) = {
            let stores = self.stores();
            let c = stores.get(Datastore::Candidate);
            if stores.candidate_unvalidated {
                c.to_tree(self.ctx).map_err(yerr(self.ctx))?;
            }
            (
                Delta::between(&stores.running.modules, &c.modules),
                c.rest.duplicate().map_err(yerr(self.ctx))?,
                stores.running.share().map_err(yerr(self.ctx))?,
            )
        };
        let touched = [Touched {
            path: tapbridge::CUSTOMIZATIONS.to_string(),
            op: EditOp::Replace,
        }];
        self.commit_running(s, delta, Some(rest), &touched, Datastore::Candidate)?;
        self.stores_mut().reset_candidate();
        let mut pending = Self::guard(&self.confirmed);
        if confirmed {
            let generation = self.confirmed_generation.fetch_add(1, Ordering::Relaxed) + 1;
            match pending.as_mut() {
                Some(p) => {
                    p.generation = generation;
                    if persist.is_some() {
                        p.persist = persist;
                    }
                }
                None => {
                    *pending = Some(ConfirmedCommit {
                        backup,
                        session_id: s.id,
                        persist,
                        generation,
                    })
                }
            }
            let agent = Arc::clone(self);
            self.runtime.spawn(async move {
                tokio::time::sleep(Duration::from_secs(timeout as u64)).await;
                let _ =
                    tokio::task::spawn_blocking(move || agent.rollback_confirmed(Some(generation)))
                        .await;
            });
            tracing::info!(session_id = s.id, timeout, "confirmed commit pending");
        } else if pending.take().is_some() {
            tracing::info!(session_id = s.id, "confirmed commit confirmed");
        }
        Ok(("<ok/>".into(), After::Continue))
    }

    /// Restores running from before a confirmed commit. `generation` None
    /// rolls back unconditionally; otherwise only if the timer is current.
    pub fn rollback_confirmed(&self, generation: Option<u64>) -> Result<(), Vec<RpcError>> {
        let _w = Self::guard(&self.write_lock);
        let backup = {
            let mut pending = Self::guard(&self.confirmed);
            match (pending.as_ref(), generation) {
                (None, _) => return Ok(()),
                (Some(p), Some(g)) if p.generation != g => return Ok(()),
                _ => {}
            }
            match pending.take() {
                Some(p) => p.backup,
                None => return Ok(()),
            }
        };
        let system = SessionInfo {
            id: 0,
            username: "system".into(),
            source_host: None,
            login_time: SystemTime::now(),
            kill: watch::channel(false).0,
            in_rpcs: Arc::default(),
            in_bad_rpcs: Arc::default(),
            out_rpc_errors: Arc::default(),
            out_notifications: Arc::default(),
        };
        let touched = [Touched {
            path: tapbridge::CUSTOMIZATIONS.to_string(),
            op: EditOp::Replace,
        }];
        tracing::warn!(
            "confirmed commit not confirmed; restoring the previous running configuration"
        );
        let delta = Delta::between(&self.stores().running.modules, &backup.modules);
        self.commit_running(
            &system,
            delta,
            Some(backup.rest),
            &touched,
            Datastore::Running,
        )?;
        self.stores_mut().reset_candidate();
        Ok(())
    }

    fn op_cancel_commit(self: &Arc<Self>, s: &SessionInfo, rpc: &Rpc) -> Reply {
        let persist_id = rpc
            .operation
            .child(BASE_NS, "persist-id")
            .map(|e| e.trimmed_text().to_string());
        {
            let pending = Self::guard(&self.confirmed);
            let Some(p) = pending.as_ref() else {
                return Err(vec![app_err(
                    ErrorTag::OperationFailed,
                    "no confirmed commit is pending",
                )]);
            };
            let allowed = match (&p.persist, &persist_id) {
                (Some(e), Some(g)) => e == g,
                (None, None) => p.session_id == s.id,
                _ => false,
            };
            if !allowed {
                return Err(vec![app_err(
                    ErrorTag::InvalidValue,
                    "this session may not cancel the pending confirmed commit",
                )]);
            }
        }
        self.rollback_confirmed(None)?;
        Ok(("<ok/>".into(), After::Continue))
    }

    fn op_discard(self: &Arc<Self>, s: &SessionInfo) -> Reply {
        let _w = Self::guard(&self.write_lock);
        self.check_lock(Datastore::Candidate, s)?;
        self.stores_mut().reset_candidate();
        Ok(("<ok/>".into(), After::Continue))
    }

    // ===== monitoring, notifications =====

    fn op_get_schema(self: &Arc<Self>, rpc: &Rpc) -> Reply {
        let op = &rpc.operation;
        let id = op
            .child(MONITORING_NS, "identifier")
            .map(|e| e.trimmed_text().to_string())
            .ok_or_else(|| {
                vec![
                    rpc_err(ErrorTag::MissingElement, "get-schema needs an identifier")
                        .info("bad-element", "identifier"),
                ]
            })?;
        let version = op
            .child(MONITORING_NS, "version")
            .map(|e| e.trimmed_text().to_string());
        if let Some(format) = op.child(MONITORING_NS, "format") {
            let f = format.trimmed_text();
            if !(f == "yang" || f.ends_with(":yang")) {
                return Err(vec![app_err(
                    ErrorTag::InvalidValue,
                    format!("schema format {f} is not available"),
                )
                .info("bad-element", "format")]);
            }
        }
        let module = l45_yang::find_module(&id, version.as_deref())
            .filter(|m| !l45_yang::INTERNAL_MODULES.contains(&m.name))
            .map(|m| m.text.to_string())
            .or_else(|| {
                // Modules built into libyang (ietf-inet-types, ...).
                let m = match &version {
                    Some(v) if !v.is_empty() => self.ctx.get_module(&id, Some(v)),
                    _ => self.ctx.get_module_latest(&id),
                }?;
                m.print_string(
                    yang3::schema::SchemaOutputFormat::YANG,
                    yang3::schema::SchemaPrinterFlags::empty(),
                )
                .ok()
            })
            .ok_or_else(|| {
                vec![app_err(ErrorTag::InvalidValue, format!("no schema {id}"))
                    .info("bad-element", "identifier")]
            })?;
        Ok((
            format!(
                "<data xmlns=\"{MONITORING_NS}\">{}</data>",
                escape_text(&module)
            ),
            After::Continue,
        ))
    }

    fn op_create_subscription(self: &Arc<Self>, rpc: &Rpc) -> Reply {
        let op = &rpc.operation;
        if let Some(stream) = op.child(NOTIFICATION_NS, "stream") {
            if stream.trimmed_text() != "NETCONF" {
                return Err(vec![app_err(
                    ErrorTag::InvalidValue,
                    format!("no stream {}", stream.trimmed_text()),
                )
                .info("bad-element", "stream")]);
            }
        }
        if op.child(NOTIFICATION_NS, "startTime").is_some() {
            return Err(vec![app_err(
                ErrorTag::OperationNotSupported,
                "notification replay is not supported",
            )
            .info("bad-element", "startTime")]);
        }
        Ok(("<ok/>".into(), After::Subscribe))
    }

    // ===== layer45-customization RPCs =====

    fn op_l45(self: &Arc<Self>, s: &SessionInfo, rpc: &Rpc) -> Reply {
        let tree = yang3::data::DataTreeOwningRef::parse_netconf_rpc_op(self.ctx, &rpc.source)
            .map_err(|e| {
                let mut err = to_rpc_error(self.ctx, &e);
                err.error_type = ErrorType::Protocol;
                vec![err]
            })?;
        let name = rpc.operation.name.as_str();
        let leaf = |leaf: &str| -> Option<String> {
            tree.find_path(&format!("/layer45-customization:{name}/{leaf}"))
                .ok()
                .and_then(|n| n.value_canonical())
        };
        let id = || -> Result<u32, Vec<RpcError>> {
            leaf("id").and_then(|v| v.parse().ok()).ok_or_else(|| {
                vec![rpc_err(ErrorTag::MissingElement, "id is missing").info("bad-element", "id")]
            })
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let ns = l45_yang::L45_NAMESPACE;
        match name {
            "report" => {
                let mut out = String::new();
                let stats = self.tap.module_stats();
                let configs: BTreeMap<u32, bool> = match store::schema() {
                    Ok(schema) => {
                        let stores = self.stores();
                        stats
                            .iter()
                            .filter_map(|st| {
                                let e = stores.running.modules.get(&st.id)?;
                                let slots = Slots::parse(schema, e).ok()?;
                                Some((st.id, slots.module_config(schema).activated))
                            })
                            .collect()
                    }
                    Err(_) => BTreeMap::new(),
                };
                for st in stats {
                    out.push_str(&format!(
                        "<module xmlns=\"{ns}\"><id>{}</id><state>{}</state>",
                        st.id,
                        st.state.as_str()
                    ));
                    if let Some(a) = configs.get(&st.id) {
                        out.push_str(&format!("<activated>{a}</activated>"));
                    }
                    if let Some(ts) = st.active_ts {
                        out.push_str(&format!("<active-ts>{}</active-ts>", rfc3339(ts)));
                    }
                    out.push_str(&format!(
                        "<socket-count>{}</socket-count><bytes-sent>{}</bytes-sent><bytes-received>{}</bytes-received><messages-sent>{}</messages-sent><messages-received>{}</messages-received><errors>{}</errors></module>",
                        st.socket_count, st.bytes_sent, st.bytes_received, st.messages_sent, st.messages_received, st.errors
                    ));
                }
                Ok((out, After::Continue))
            }
            "revoke-module" => {
                let id = id()?;
                let _w = Self::guard(&self.write_lock);
                self.check_lock(Datastore::Running, s)?;
                let path = store::module_path(id);
                if !self.stores().running.modules.contains_key(&id) {
                    return Err(vec![app_err(
                        ErrorTag::DataMissing,
                        format!("no module {id}"),
                    )
                    .path(crate::yangerr::xml_error_path(self.ctx, &path))]);
                }
                let mut delta = Delta::default();
                delta.changes.insert(id, None);
                let touched = [Touched {
                    path,
                    op: EditOp::Delete,
                }];
                self.commit_running(s, delta, None, &touched, Datastore::Running)?;
                Ok(("<ok/>".into(), After::Continue))
            }
            "challenge" => {
                let id = id()?;
                let nonce = leaf("nonce")
                    .and_then(|v| b64.decode(v).ok())
                    .unwrap_or_default();
                let ct = leaf("ciphertext")
                    .and_then(|v| b64.decode(v).ok())
                    .unwrap_or_default();
                let answer = self.tap.challenge(id, &nonce, &ct).map_err(|e| {
                    self.emit(format!("<security-check-failed xmlns=\"{ns}\"><id>{id}</id><reason>{}</reason></security-check-failed>", escape_text(&e.to_string())));
                    vec![tap_error(&e)]
                })?;
                Ok((
                    format!(
                        "<nonce xmlns=\"{ns}\">{}</nonce><ciphertext xmlns=\"{ns}\">{}</ciphertext>",
                        b64.encode(&answer.nonce),
                        b64.encode(&answer.ciphertext)
                    ),
                    After::Continue,
                ))
            }
            "install-module" => {
                let id = id()?;
                let image = leaf("image")
                    .and_then(|v| b64.decode(v).ok())
                    .unwrap_or_default();
                let digest = leaf("sha256").unwrap_or_default();
                self.tap
                    .install(id, &image, &digest)
                    .map_err(|e| vec![tap_error(&e)])?;
                Ok(("<ok/>".into(), After::Continue))
            }
            other => Err(vec![rpc_err(
                ErrorTag::OperationNotSupported,
                format!("operation {other} is not supported"),
            )]),
        }
    }
}

fn tap_error(e: &TapError) -> RpcError {
    let tag = match e {
        TapError::ResourceExhausted(_) => ErrorTag::ResourceDenied,
        TapError::UnknownModule(_) => ErrorTag::DataMissing,
        TapError::Unsupported(_) => ErrorTag::OperationNotSupported,
        TapError::Refused { .. } | TapError::Backend(_) => ErrorTag::OperationFailed,
    };
    app_err(tag, e.to_string()).app_tag("tap-refused")
}

#[cfg(test)]
mod tests {
    use super::rfc3339;
    use std::time::{Duration, SystemTime};

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_305_600)),
            "2026-11-22T00:00:00Z"
        );
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }
}
