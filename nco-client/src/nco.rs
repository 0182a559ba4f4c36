//! The NCO's functions on top of the CIB and the NETCONF pool: carry out due
//! requests (deploy, revoke, deprecate, activate, priority), monitor,
//! security checks and rotation.
//!
//! Crash safety comes from the CIB's request state machine: a request is
//! marked sent before its RPC goes out, every device operation is
//! idempotent (a deploy is an edit-config merge of the whole entry keyed by
//! the CIB's never-reused module id; revoking an id the device does not have
//! counts as done), so a restarted NCO requeues what was in flight and sends
//! it again.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use l45_cib::{
    alert_kind, Action, Cib, CibError, Failure, HostKeyCheck, Module, NewAlert, Request,
    RequestState, SecurityOutcome, Severity, Timestamp,
};
use l45_modules::security;
use tokio::task::JoinSet;

use crate::device_xml;
use crate::netconf::{
    BackoffConfig, ConnectOptions, Datastore, EditOptions, HostKeyPolicy, NetconfError, Pool,
    Route, Session,
};

/// Timing and concurrency of the NCO.
#[derive(Debug, Clone)]
pub struct NcoConfig {
    /// How often every device is asked for its state report.
    pub state_req_window: Duration,
    /// How often every deployed module with a key is challenged.
    pub sec_check_window: Duration,
    /// Most devices worked on at once.
    pub concurrency: usize,
    pub backoff: BackoffConfig,
    /// Per-RPC timeout.
    pub rpc_timeout: Duration,
}

impl Default for NcoConfig {
    fn default() -> Self {
        NcoConfig {
            state_req_window: Duration::from_secs(30),
            sec_check_window: Duration::from_secs(300),
            concurrency: 256,
            backoff: BackoffConfig::default(),
            rpc_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NcoError {
    #[error(transparent)]
    Cib(#[from] CibError),
    #[error("{device}: {source}")]
    Device {
        device: String,
        #[source]
        source: NetconfError,
    },
    #[error("{device}: host key {presented} does not match the pinned {pinned}")]
    HostKey {
        device: String,
        pinned: String,
        presented: String,
    },
    #[error("{device}: unreadable report: {message}")]
    Report { device: String, message: String },
    #[error("rotation step {step} failed: {message}")]
    Rotation { step: String, message: String },
    #[error("timed out waiting for {0}")]
    Timeout(String),
    #[error("no randomness: {0}")]
    Random(String),
    #[error("middlebox: {0}")]
    Middlebox(String),
    #[error("image {sha256}: {reason}")]
    Image { sha256: String, reason: String },
}

/// What one wave of due requests did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Wave {
    pub confirmed: usize,
    pub retried: usize,
    pub failed: usize,
}

/// What one monitor round found.
#[derive(Debug, Default, Clone)]
pub struct MonitorRound {
    pub devices_reported: usize,
    pub unreachable: Vec<String>,
    pub alerts_raised: usize,
}

/// Outcome of one security check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityResult {
    pub device: String,
    pub module_id: u32,
    pub passed: bool,
    pub detail: String,
}

pub struct Nco {
    cib: Mutex<Cib>,
    pool: Pool,
    cfg: NcoConfig,
    registered: Mutex<HashSet<String>>,
    metrics: crate::metrics::NcoMetrics,
    /// How sessions to devices that call home are had: in `serve` they
    /// come from the call-home listener, elsewhere through its relay.
    call_home_route: Mutex<Route>,
    /// Sessions of pending devices, by host key, kept open until the
    /// operator accepts (or rejects) them (`crate::callhome`).
    pub(crate) held: Mutex<std::collections::HashMap<String, Arc<Session>>>,
    /// Devices whose state arrives by YANG-push (`push.rs`): monitor
    /// rounds do not poll them.
    pub(crate) pushing: Mutex<HashSet<String>>,
    /// `install-module` inputs of images, built once (`images/input_cache.rs`).
    pub(crate) image_inputs: crate::images::input_cache::InputCache,
}

fn now() -> Timestamp {
    Timestamp::now()
}

/// Whether a failed device operation is worth retrying: transport trouble
/// is, a device's refusal (`<rpc-error>`) is not.
fn failure_kind(e: &NetconfError) -> Failure {
    match e {
        NetconfError::RpcFailed(_)
        | NetconfError::UnexpectedReply(_)
        | NetconfError::InvalidRequest(_)
        | NetconfError::HostKeyMismatch { .. } => Failure::Permanent,
        _ => Failure::Transient,
    }
}

fn is_unreachable(e: &NetconfError) -> bool {
    matches!(
        e,
        NetconfError::Connect { .. }
            | NetconfError::AwaitingCall { .. }
            | NetconfError::Unreachable { .. }
            | NetconfError::Timeout { .. }
            | NetconfError::Disconnected
            | NetconfError::Auth { .. }
            | NetconfError::Hello(_)
    )
}

impl Nco {
    pub fn new(cib: Cib, cfg: NcoConfig) -> Arc<Nco> {
        Arc::new(Nco {
            cib: Mutex::new(cib),
            pool: Pool::new(cfg.backoff),
            cfg,
            registered: Mutex::new(HashSet::new()),
            metrics: Default::default(),
            call_home_route: Mutex::new(Route::Called),
            held: Mutex::new(std::collections::HashMap::new()),
            pushing: Mutex::new(HashSet::new()),
            image_inputs: Default::default(),
        })
    }

    /// The CIB (calls are short, synchronous SQLite transactions).
    pub fn cib(&self) -> MutexGuard<'_, Cib> {
        self.cib.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// What this process recorded for `--metrics` (`metrics.rs`).
    pub fn metrics(&self) -> &crate::metrics::NcoMetrics {
        &self.metrics
    }

    /// How this process reaches devices that call home: `Route::Called`
    /// in `serve` (the default), `Route::Relay(serve's socket)` elsewhere.
    /// Set before the first request.
    pub fn set_call_home_route(&self, route: Route) {
        *self
            .call_home_route
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = route;
    }

    pub fn config(&self) -> &NcoConfig {
        &self.cfg
    }

    /// True when the device calls home to this process and has no
    /// connection now: its requests wait for the call instead of failing.
    pub(crate) fn waits_for_call(&self, device: &str) -> bool {
        self.register(device).is_ok() && self.pool.awaits_call(device)
    }

    /// Registers a CIB device with the pool (once), pinned if the CIB has
    /// its host key, trust-on-first-use otherwise.
    fn register(&self, device: &str) -> Result<(), NcoError> {
        if self
            .registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(device)
        {
            return Ok(());
        }
        let d = self.cib().device(device)?;
        let policy = match &d.host_key_fingerprint {
            Some(fp) => HostKeyPolicy::Pinned(fp.clone()),
            None => HostKeyPolicy::TrustOnFirstUse,
        };
        let mut opts = ConnectOptions::new(&d.address, &d.username, &d.ssh_key_path, policy);
        opts.rpc_timeout = self.cfg.rpc_timeout;
        opts.connect_timeout = self.cfg.rpc_timeout.min(Duration::from_secs(10));
        let route = if d.call_home {
            self.call_home_route
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        } else {
            Route::Dial
        };
        self.pool.add_device_routed(device, opts, route);
        self.registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(device.to_string());
        Ok(())
    }

    /// The device's session; a first connection pins the host key in the CIB,
    /// later ones must present the same key.
    pub async fn session(&self, device: &str) -> Result<Arc<Session>, NcoError> {
        self.register(device)?;
        let session = self.pool.session(device).await.map_err(|source| {
            if is_unreachable(&source) {
                let _ = self.cib().raise_alert(&NewAlert {
                    severity: Severity::Warning,
                    device: Some(device.to_string()),
                    module_id: None,
                    kind: alert_kind::DEVICE_UNREACHABLE.to_string(),
                    message: source.to_string(),
                });
            }
            NcoError::Device {
                device: device.to_string(),
                source,
            }
        })?;
        let presented = session.host_key_fingerprint().to_string();
        match self.cib().check_host_key(device, &presented)? {
            HostKeyCheck::Mismatch { pinned } => {
                self.pool.remove_device(device);
                self.registered
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(device);
                Err(NcoError::HostKey {
                    device: device.to_string(),
                    pinned,
                    presented,
                })
            }
            _ => Ok(session),
        }
    }

    // ===== requests =====

    /// Carries out every request due now, concurrently across devices; one
    /// CIB transaction marks the wave sent, one confirms what succeeded.
    pub async fn run_wave(self: &Arc<Self>, limit: u32) -> Result<Wave, NcoError> {
        let t = now();
        let mut due = self.cib().due_requests(t, limit)?;
        // A device that calls home and is not connected: its requests
        // wait for the call (no attempt is used up).
        due.retain(|r| !self.waits_for_call(&r.device));
        if due.is_empty() {
            return Ok(Wave::default());
        }
        let ids: Vec<i64> = due.iter().map(|r| r.id).collect();
        let sent = {
            let mut cib = self.cib();
            match cib.mark_sent_many(&ids, t) {
                Ok(sent) => sent,
                // Someone else took some of them: claim one by one.
                Err(CibError::InvalidState { .. }) => ids
                    .iter()
                    .filter_map(|&id| cib.mark_sent(id, t).ok())
                    .collect(),
                Err(e) => return Err(e.into()),
            }
        };
        let sem = Arc::new(tokio::sync::Semaphore::new(self.cfg.concurrency.max(1)));
        let mut set = JoinSet::new();
        for r in sent {
            let nco = self.clone();
            let sem = sem.clone();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let started = std::time::Instant::now();
                let result = nco.execute(&r).await;
                nco.metrics
                    .request(r.action, result.is_ok(), started.elapsed());
                (r, result)
            });
        }
        let mut wave = Wave::default();
        let mut confirmed = Vec::new();
        let mut failures = Vec::new();
        while let Some(joined) = set.join_next().await {
            let Ok((r, result)) = joined else { continue };
            match result {
                Ok(()) => confirmed.push(r.id),
                Err(e) => failures.push((r, e)),
            }
        }
        let t = now();
        let mut cib = self.cib();
        if !confirmed.is_empty() {
            if cib.mark_confirmed_many(&confirmed, t).is_err() {
                for id in &confirmed {
                    let _ = cib.mark_confirmed(*id, t);
                }
            }
            wave.confirmed = confirmed.len();
        }
        for (r, e) in failures {
            let (message, kind) = match &e {
                NcoError::Device { source, .. } => (source.to_string(), failure_kind(source)),
                NcoError::HostKey { .. } | NcoError::Image { .. } => {
                    (e.to_string(), Failure::Permanent)
                }
                other => (other.to_string(), Failure::Transient),
            };
            tracing::warn!(device = %r.device, module = r.module_id, action = %r.action, error = %message, "request failed");
            match cib.mark_failed(r.id, &message, kind, t) {
                Ok(after) if after.state == RequestState::Pending => wave.retried += 1,
                Ok(_) => wave.failed += 1,
                Err(err) => tracing::error!(request = r.id, %err, "cannot record failure"),
            }
        }
        Ok(wave)
    }

    async fn execute(&self, r: &Request) -> Result<(), NcoError> {
        let session = self.session(&r.device).await?;
        let dev = |source| NcoError::Device {
            device: r.device.clone(),
            source,
        };
        let edit = |xml: String| {
            let session = session.clone();
            async move {
                session
                    .edit_config(Datastore::Running, &xml, EditOptions::default())
                    .await
            }
        };
        match r.action {
            Action::Deploy => {
                let m = self.cib().module(&r.device, r.module_id)?;
                // The image first (once per device: one it holds is not
                // sent again), then the module that uses it.
                if let Some(sha256) = &m.image {
                    self.ensure_image(&session, &r.device, sha256).await?;
                }
                edit(device_xml::module_entry(&m)).await.map_err(dev)
            }
            Action::Revoke => match session.revoke_module(r.module_id).await {
                Ok(()) => Ok(()),
                // Already gone (a resend after a crash, or never deployed).
                Err(NetconfError::RpcFailed(errs))
                    if errs.iter().all(|e| e.error_tag == "data-missing") =>
                {
                    Ok(())
                }
                Err(e) => Err(dev(e)),
            },
            Action::Deprecate => edit(device_xml::module_leaf(r.module_id, "deprecated", "true"))
                .await
                .map_err(dev),
            Action::Activate => edit(device_xml::module_leaf(r.module_id, "activated", "true"))
                .await
                .map_err(dev),
            Action::Deactivate => edit(device_xml::module_leaf(r.module_id, "activated", "false"))
                .await
                .map_err(dev),
            Action::SetPriority(p) => edit(device_xml::module_leaf(
                r.module_id,
                "priority",
                &p.to_string(),
            ))
            .await
            .map_err(dev),
        }
    }

    /// Runs waves until every request in `ids` is finished (confirmed,
    /// failed or cancelled), sleeping until the next one is due in between.
    /// `progress(done, total)` is called after every wave.
    pub async fn drive(
        self: &Arc<Self>,
        ids: &[i64],
        deadline: Duration,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Vec<Request>, NcoError> {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            self.run_wave(10_000).await?;
            let reqs: Vec<Request> = {
                let cib = self.cib();
                ids.iter()
                    .map(|&id| cib.get_request(id))
                    .collect::<Result<_, _>>()?
            };
            let done = reqs.iter().filter(|r| !r.state.is_open()).count();
            progress(done, reqs.len());
            if done == reqs.len() {
                return Ok(reqs);
            }
            let next = self.cib().next_due_at()?;
            let wait = next
                .map(
                    |at| Duration::from_millis(at.0.saturating_sub(now().0).clamp(10, 1000) as u64),
                )
                .unwrap_or(Duration::from_millis(200));
            if tokio::time::Instant::now() + wait > end {
                return Err(NcoError::Timeout(format!(
                    "{} of {} requests",
                    reqs.len() - done,
                    reqs.len()
                )));
            }
            tokio::time::sleep(wait).await;
        }
    }

    // ===== monitor =====

    /// Asks every device with deployed modules for its report and records it
    /// (the CIB raises mismatch alerts and queues revokes of idle deprecated
    /// modules); then looks for customizations active on one end only.
    pub async fn monitor_round(self: &Arc<Self>) -> Result<MonitorRound, NcoError> {
        let pushing = self
            .pushing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let devices: Vec<String> = self
            .cib()
            .devices()?
            .into_iter()
            .map(|d| d.name)
            .filter(|d| !pushing.contains(d))
            .collect();
        let mut set = JoinSet::new();
        for device in devices {
            let nco = self.clone();
            set.spawn(async move {
                let r = nco.report(&device).await;
                (device, r)
            });
        }
        let mut round = MonitorRound::default();
        while let Some(joined) = set.join_next().await {
            let Ok((device, r)) = joined else { continue };
            match r {
                Ok(()) => round.devices_reported += 1,
                Err(e) => {
                    tracing::warn!(%device, error = %e, "no report");
                    round.unreachable.push(device);
                }
            }
        }
        round.alerts_raised = self.check_one_sided()?;
        Ok(round)
    }

    /// One device's report into the CIB.
    pub async fn report(&self, device: &str) -> Result<(), NcoError> {
        let reports = self.fetch_report(device).await?;
        self.cib().record_report(device, &reports, now())?;
        Ok(())
    }

    /// A customization is the set of modules with one name on several
    /// devices; if one end customizes traffic while another end never did,
    /// the ends disagree (e.g. a sender tagging for a receiver without the
    /// module). Raises one alert per such module.
    fn check_one_sided(&self) -> Result<usize, NcoError> {
        let mut cib = self.cib();
        let deployments = cib.deployments(None)?;
        let mut by_name: BTreeMap<String, Vec<&l45_cib::Deployment>> = BTreeMap::new();
        for d in &deployments {
            by_name.entry(d.module_name.clone()).or_default().push(d);
        }
        let mut alerts = Vec::new();
        for (name, ends) in &by_name {
            if ends.len() < 2 {
                continue;
            }
            let busy = |d: &&l45_cib::Deployment| d.messages_sent + d.messages_received > 0;
            if ends.iter().any(busy) {
                for idle in ends
                    .iter()
                    .filter(|d| !busy(d) && d.activated != Some(false))
                {
                    alerts.push(NewAlert {
                        severity: Severity::Warning,
                        device: Some(idle.device.clone()),
                        module_id: Some(idle.module_id),
                        kind: alert_kind::ACTIVE_ON_ONE_END_ONLY.to_string(),
                        message: format!(
                            "customization {name} is active on another device but module {} on {} never customized traffic",
                            idle.module_id, idle.device
                        ),
                    });
                }
            }
        }
        let n = alerts.len();
        for a in alerts {
            cib.raise_alert(&a)?;
        }
        Ok(n)
    }

    // ===== security =====

    /// Challenges every deployed module whose last check is older than the
    /// window: AES-256-GCM with a fresh random challenge and nonce, the
    /// answer must decrypt under the module's key with a fresh nonce and
    /// carry the challenge and the module id. A failure revokes the module
    /// and raises a critical alert (both in the CIB, in one transaction).
    pub async fn security_round(self: &Arc<Self>) -> Result<Vec<SecurityResult>, NcoError> {
        let window = self.cfg.sec_check_window.as_millis() as i64;
        let due = self.cib().security_checks_due(now(), window)?;
        let mut set = JoinSet::new();
        for m in due {
            let nco = self.clone();
            set.spawn(async move { nco.challenge(&m).await });
        }
        let mut results = Vec::new();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(Ok(r)) => {
                    self.metrics.security_check(r.passed);
                    results.push(r)
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "security check not done"),
                Err(_) => {}
            }
        }
        Ok(results)
    }

    /// One challenge-response with one module.
    pub async fn challenge(&self, m: &Module) -> Result<SecurityResult, NcoError> {
        let mut challenge = [0u8; security::CHALLENGE_LEN];
        let mut nonce = [0u8; security::NONCE_LEN];
        random(&mut challenge)
            .and_then(|()| random(&mut nonce))
            .map_err(|e| NcoError::Random(e.to_string()))?;
        let ct =
            security::make_challenge(&m.key, m.module_id, &nonce, &challenge).map_err(|e| {
                NcoError::Report {
                    device: m.device.clone(),
                    message: e.to_string(),
                }
            })?;
        let session = self.session(&m.device).await?;
        let (passed, detail) = match session.challenge(m.module_id, &nonce, &ct).await {
            Ok(out) => match device_xml::parse_challenge_answer(&out) {
                Some((their_nonce, _)) if their_nonce == nonce => {
                    (false, "device reused the NCO's nonce".to_string())
                }
                Some((their_nonce, their_ct)) => {
                    match security::verify_response(
                        &m.key,
                        m.module_id,
                        &challenge,
                        &their_nonce,
                        &their_ct,
                    ) {
                        Ok(()) => (true, "answer authentic".to_string()),
                        Err(e) => (false, format!("answer rejected: {e}")),
                    }
                }
                None => (false, "malformed challenge answer".to_string()),
            },
            // A tap that runs no module code cannot be checked: not a failure
            // of the module, but nothing is proven either.
            Err(NetconfError::RpcFailed(errs))
                if errs
                    .iter()
                    .all(|e| e.error_tag == "operation-not-supported") =>
            {
                tracing::info!(device = %m.device, module = m.module_id, "device cannot run challenges; check skipped");
                return Ok(SecurityResult {
                    device: m.device.clone(),
                    module_id: m.module_id,
                    passed: false,
                    detail: "not checkable: the device's tap does not run challenges".into(),
                });
            }
            // The device could not answer: the module is absent or its key wrong.
            Err(NetconfError::RpcFailed(errs)) => (
                false,
                errs.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            Err(source) => {
                return Err(NcoError::Device {
                    device: m.device.clone(),
                    source,
                })
            }
        };
        let outcome =
            self.cib()
                .record_security_check(&m.device, m.module_id, passed, &detail, now())?;
        if let SecurityOutcome::FailedRevokeRequested { .. } = outcome {
            tracing::warn!(device = %m.device, module = m.module_id, %detail, "security check failed: revoke queued");
        }
        Ok(SecurityResult {
            device: m.device.clone(),
            module_id: m.module_id,
            passed,
            detail,
        })
    }

    // ===== long-running service =====

    /// The scheduler: carries out due requests as they fall due, reports
    /// every state_req_window, security checks every sec_check_window, until
    /// `shutdown` resolves. After a crash it first requeues what was in
    /// flight (every operation is idempotent).
    pub async fn serve(
        self: &Arc<Self>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), NcoError> {
        let requeued = self.cib().requeue_all_in_flight(now())?;
        if !requeued.is_empty() {
            tracing::info!(
                count = requeued.len(),
                "requests in flight at the last stop requeued"
            );
        }
        let mut watched = HashSet::new();
        let mut watchers = JoinSet::new();
        let mut monitor = tokio::time::interval(self.cfg.state_req_window);
        let mut security = tokio::time::interval(self.cfg.sec_check_window);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tick.tick() => {
                    if let Err(e) = self.run_wave(10_000).await {
                        tracing::error!(error = %e, "request wave");
                    }
                }
                _ = monitor.tick() => {
                    // Listen to every device's notifications (new devices too).
                    if let Ok(devices) = self.cib().devices() {
                        for d in devices {
                            if watched.insert(d.name.clone()) {
                                watchers.spawn(self.clone().watch(d.name));
                            }
                        }
                    }
                    match self.monitor_round().await {
                        Ok(r) => tracing::debug!(reported = r.devices_reported, unreachable = r.unreachable.len(), "monitor round"),
                        Err(e) => tracing::error!(error = %e, "monitor round"),
                    }
                }
                _ = security.tick() => {
                    if let Err(e) = self.security_round().await {
                        tracing::error!(error = %e, "security round");
                    }
                }
            }
        }
    }
}

impl Nco {
    /// Follows one device's notifications: a `deprecated-module-idle`
    /// triggers a report at once (the CIB then queues the revoke) instead of
    /// waiting for the next monitor round. Reconnects through the pool's
    /// backoff when the session ends.
    /// A device's tap found a socket escaping a module: a warning alert
    /// for that module (one while unacknowledged, as for every alert).
    pub(crate) fn alert_bypassed(&self, device: &str, body: &str) {
        let Some(b) = device_xml::parse_bypassed(body) else {
            tracing::warn!(%device, "module-bypassed notification without a module id");
            return;
        };
        let alert = NewAlert {
            severity: Severity::Warning,
            device: Some(device.to_string()),
            module_id: Some(b.id),
            kind: alert_kind::MODULE_BYPASSED.to_string(),
            message: b.message(device),
        };
        if let Err(e) = self.cib().raise_alert(&alert) {
            tracing::warn!(%device, module = b.id, error = %e, "recording a module-bypassed alert");
        }
    }

    async fn watch(self: Arc<Self>, device: String) {
        loop {
            if let Ok(session) = self.session(&device).await {
                // An agent offering YANG-push pushes its state (push.rs);
                // after a reconnect this subscribes anew.
                if session.has_capability(crate::netconf::session::YANG_PUSH_NS) {
                    if let Err(e) = self.follow_pushed(&device, &session).await {
                        tracing::warn!(%device, error = %e, "YANG-push subscription");
                    }
                } else if let Ok(mut rx) = session.create_subscription(None).await {
                    // What happened before the subscription: one report.
                    if let Err(e) = self.report(&device).await {
                        tracing::warn!(%device, error = %e, "report after subscribing");
                    }
                    while let Some(n) = rx.recv().await {
                        let Some((ns, name)) = &n.kind else { continue };
                        if ns != device_xml::L45_NS {
                            continue;
                        }
                        tracing::info!(%device, notification = %name, "device notification");
                        if name == "deprecated-module-idle" {
                            if let Err(e) = self.report(&device).await {
                                tracing::warn!(%device, error = %e, "report after idle notification");
                            }
                        } else if name == "module-bypassed" {
                            self.alert_bypassed(&device, &n.body);
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

/// Fresh random bytes from the kernel.
pub fn random(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

// ===== rotation (dissertation figure 5.3, §5.4): nco/rotation.rs =====

mod moving_target;
mod rotation;
pub use moving_target::MovingTarget;
pub use rotation::{parse_duration, Overlap, RotationPlan, RotationStep};
