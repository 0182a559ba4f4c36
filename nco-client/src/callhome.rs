//! Devices that call home (RFC 8071): `serve` listens (default port 4334);
//! a device opens the TCP connection and is the SSH server on it, so the
//! NCO still checks the device's host key and logs in with its own key.
//!
//! Every call: SSH handshake → the presented host key decides the login
//! (a known device: its CIB user and key; an unknown one: the call-home
//! key) → `get` of `/l45:device`, the check-in, first. Then:
//! - a device whose key is pinned: check-in recorded, the session becomes
//!   the device's session in the pool (requests waiting for the call go
//!   out on the next wave);
//! - an unknown key presenting an enrollment token: the CIB checks the
//!   token (hash, unused, unexpired) and adds the device with this key
//!   pinned, or refuses with an alert;
//! - an unknown key without a token: the machine id of a known device
//!   means a changed host key (refused, critical alert); otherwise the
//!   device is pending (alert) and its connection is held open until the
//!   operator accepts it (then it is adopted at once) or rejects it.
//!
//! The token is read only after the NCO has logged in with its key, over
//! the session whose host key is the one being enrolled: a device that
//! does not hold the NCO's authorized key cannot be read, and a man in
//! the middle cannot present the device's token with its own host key
//! without being able to log in to the device as the NCO.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use l45_cib::{Device, EnrollOutcome, UnknownCall};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::device_xml::{self, CheckInData};
use crate::nco::Nco;
use crate::netconf::{ConnectOptions, HostKeyPolicy, Session};

/// How `serve` takes calls.
#[derive(Debug, Clone)]
pub struct CallHomeConfig {
    /// User the NCO logs in as on a device it does not know yet.
    pub user: String,
    /// The NCO's key for devices it does not know yet (enrollment,
    /// pending); without it an unknown device is recorded as pending from
    /// its host key alone.
    pub key: Option<PathBuf>,
    /// SSH keepalive on call-home sessions: a cut link is noticed after
    /// three unanswered keepalives.
    pub keepalive: Duration,
}

impl Nco {
    /// Takes calls on `listener` until the task is dropped.
    pub async fn serve_call_home(self: Arc<Self>, listener: TcpListener, cfg: CallHomeConfig) {
        let cfg = Arc::new(cfg);
        let promote = tokio::spawn(Arc::clone(&self).adopt_accepted());
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "call-home accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let nco = Arc::clone(&self);
            let cfg = Arc::clone(&cfg);
            tokio::spawn(async move { nco.take_call(stream, peer, &cfg).await });
            if promote.is_finished() {
                warn!("pending-device watcher ended");
            }
        }
    }

    async fn take_call(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        cfg: &CallHomeConfig,
    ) {
        let known: Arc<Mutex<Option<Device>>> = Arc::default();
        let seen: Arc<Mutex<Option<String>>> = Arc::default();
        let mut opts = ConnectOptions::new(
            peer,
            cfg.user.clone(),
            cfg.key.clone().unwrap_or_default(),
            HostKeyPolicy::TrustOnFirstUse,
        );
        opts.rpc_timeout = self.config().rpc_timeout;
        opts.keepalive_interval = Some(cfg.keepalive);
        let login = {
            let (nco, known, seen) = (Arc::clone(&self), Arc::clone(&known), Arc::clone(&seen));
            let (user, key) = (cfg.user.clone(), cfg.key.clone());
            move |fp: &str| {
                *lock(&seen) = Some(fp.to_string());
                match nco.cib().device_by_host_key(fp) {
                    Ok(Some(d)) => {
                        let login = (d.username.clone(), PathBuf::from(&d.ssh_key_path));
                        *lock(&known) = Some(d);
                        Some(login)
                    }
                    Ok(None) => key.map(|k| (user, k)),
                    Err(e) => {
                        warn!(error = %e, "CIB lookup of a calling host key");
                        None
                    }
                }
            }
        };
        let peer_s = peer.to_string();
        let session = match Session::accept_call(opts, stream, login).await {
            Ok(s) => Arc::new(s),
            Err(e) => {
                let fp = lock(&seen).clone();
                match (fp, lock(&known).is_some(), &cfg.key) {
                    // Unknown, and no key to log in with: pending from its
                    // host key alone.
                    (Some(fp), false, None) => {
                        self.unknown_call(&fp, &CheckInData::default(), &peer_s, cfg);
                    }
                    _ => warn!(%peer, error = %e, "call-home connection failed"),
                }
                return;
            }
        };
        let fingerprint = session.host_key_fingerprint().to_string();
        let checkin = match session.get(Some(&device_xml::device_filter())).await {
            Ok(data) => match device_xml::parse_device(&data) {
                Ok(c) => c,
                Err(e) => {
                    warn!(%peer, error = %e, "unreadable check-in; call dropped");
                    return;
                }
            },
            Err(e) => {
                warn!(%peer, error = %e, "no check-in; call dropped");
                return;
            }
        };
        let known = lock(&known).clone();
        if let Some(d) = known {
            if let Err(e) = self.cib().record_check_in(&d.name, &checkin.data, &peer_s) {
                warn!(device = %d.name, error = %e, "recording a check-in");
            }
            self.adopt(&d.name, session);
            return;
        }
        if let Some(token) = &checkin.enrollment_token {
            let user = cfg.user.clone();
            let key = cfg.key.clone().unwrap_or_default().display().to_string();
            let outcome =
                self.cib()
                    .enroll(token, &fingerprint, &checkin.data, &peer_s, &user, &key);
            match outcome {
                Ok(EnrollOutcome::Enrolled(d)) => {
                    info!(device = %d.name, host_key = %fingerprint, %peer, "device enrolled with its token");
                    self.adopt(&d.name, session);
                    return;
                }
                Ok(EnrollOutcome::Refused(reason)) => {
                    warn!(host_key = %fingerprint, %peer, %reason, "enrollment refused");
                }
                Err(e) => warn!(host_key = %fingerprint, %peer, error = %e, "enrollment failed"),
            }
            let _ = session.close_session().await;
            return;
        }
        if self.unknown_call(&fingerprint, &checkin, &peer_s, cfg) {
            lock(&self.held).insert(fingerprint, session);
        } else {
            let _ = session.close_session().await;
        }
    }

    /// Records a call from an unknown host key; true if it is pending (its
    /// session is worth holding).
    fn unknown_call(&self, fp: &str, c: &CheckInData, peer: &str, cfg: &CallHomeConfig) -> bool {
        let key = cfg.key.clone().unwrap_or_default().display().to_string();
        match self
            .cib()
            .record_unknown_call(fp, &c.data, peer, &cfg.user, &key)
        {
            Ok(UnknownCall::Pending { name }) => {
                info!(pending = %name, host_key = %fp, %peer, "unknown device called home: pending");
                true
            }
            Ok(UnknownCall::Rejected { name }) => {
                info!(pending = %name, host_key = %fp, %peer, "rejected device called home; refused");
                false
            }
            Ok(UnknownCall::HostKeyChanged { device, pinned }) => {
                warn!(%device, presented = %fp, %pinned, %peer, "known machine with a changed host key; refused");
                false
            }
            Err(e) => {
                warn!(host_key = %fp, %peer, error = %e, "recording an unknown call");
                false
            }
        }
    }

    /// Makes `session` the device's session.
    fn adopt(&self, device: &str, session: Arc<Session>) {
        if self.waits_for_call(device) || self.pool().live(device).is_some() {
            self.pool().attach(device, session);
            info!(%device, "device called home");
        } else {
            warn!(%device, "device called home but cannot be registered");
        }
    }

    /// Held sessions of pending devices: adopted as soon as the operator
    /// accepts the device, dropped when their connection ends or it is
    /// rejected.
    async fn adopt_accepted(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let held: Vec<(String, Arc<Session>)> = lock(&self.held)
                .iter()
                .map(|(k, v)| (k.clone(), Arc::clone(v)))
                .collect();
            for (fp, session) in held {
                if session.is_closed() {
                    lock(&self.held).remove(&fp);
                    continue;
                }
                let device = self.cib().device_by_host_key(&fp);
                match device {
                    Ok(Some(d)) => {
                        lock(&self.held).remove(&fp);
                        self.adopt(&d.name, session);
                    }
                    Ok(None) => {
                        let rejected = self.cib().pending_devices().is_ok_and(|ps| {
                            ps.iter().any(|p| {
                                p.host_key_fingerprint == fp
                                    && p.state == l45_cib::PendingState::Rejected
                            })
                        });
                        if rejected {
                            lock(&self.held).remove(&fp);
                            let _ = session.close_session().await;
                        }
                    }
                    Err(e) => warn!(error = %e, "CIB lookup of a pending device"),
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
