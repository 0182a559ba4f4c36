//! One NETCONF session per device, opened lazily and re-opened with
//! exponential backoff (with jitter) after failures.
//!
//! A device whose last attempt failed is not retried before its backoff
//! expires; calls in the meantime fail at once with
//! [`NetconfError::Unreachable`], so the NCO can report the device as
//! unreachable and move on. [`Pool::state`] exposes the backoff state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::error::NetconfError;
use super::reply::Reply;
use super::session::{ConnectOptions, HostKeyPolicy, Session};

/// Reconnect backoff: after the n-th consecutive failure the next attempt
/// waits `min(max, base * 2^(n-1))`, scaled by a random factor in
/// `[1 - jitter, 1 + jitter]` (and never above `max`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffConfig {
    pub base: Duration,
    pub max: Duration,
    /// 0.0 (none) ..= 1.0.
    pub jitter: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            jitter: 0.2,
        }
    }
}

impl BackoffConfig {
    /// The delay without jitter after `failures` consecutive failures.
    pub fn nominal_delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (failures - 1).min(20);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The delay with jitter applied.
    pub fn delay(&self, failures: u32) -> Duration {
        let nominal = self.nominal_delay(failures);
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 || nominal.is_zero() {
            return nominal;
        }
        let factor = rand::random_range((1.0 - jitter)..=(1.0 + jitter));
        nominal.mul_f64(factor).min(self.max)
    }
}

/// What the pool knows about one device.
#[derive(Debug, Clone)]
pub struct DeviceState {
    pub name: String,
    pub addr: String,
    /// A live session exists.
    pub connected: bool,
    /// Consecutive failed connection attempts (0 after a success).
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    /// No attempt before this instant.
    pub retry_at: Option<Instant>,
    /// Duration of the last successful connect + hello.
    pub last_connect_time: Option<Duration>,
    pub session_id: Option<u32>,
}

impl DeviceState {
    /// Time left before the next attempt is allowed.
    pub fn retry_in(&self) -> Option<Duration> {
        self.retry_at
            .map(|t| t.saturating_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }

    /// Not connected and the last attempt failed.
    pub fn is_unreachable(&self) -> bool {
        !self.connected && self.consecutive_failures > 0
    }
}

#[derive(Default)]
struct Slot {
    session: Option<Arc<Session>>,
    failures: u32,
    last_error: Option<String>,
    retry_at: Option<Instant>,
    last_connect_time: Option<Duration>,
}

/// How a device's sessions are opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The NCO connects to the device's address.
    Dial,
    /// The device calls home to `serve`; this process asks `serve` for a
    /// channel through its relay socket at this path.
    Relay(std::path::PathBuf),
    /// The device calls home to this process: sessions come from
    /// [`Pool::attach`]; without one, requests wait for the call.
    Called,
}

struct Device {
    name: String,
    route: Route,
    opts: Mutex<ConnectOptions>,
    /// Serialises connection attempts to this device.
    connecting: tokio::sync::Mutex<()>,
    slot: Mutex<Slot>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Device {
    fn live_session(&self) -> Option<Arc<Session>> {
        let mut slot = lock(&self.slot);
        match &slot.session {
            Some(s) if !s.is_closed() => Some(Arc::clone(s)),
            Some(_) => {
                slot.session = None;
                None
            }
            None => None,
        }
    }

    fn state(&self) -> DeviceState {
        let addr = lock(&self.opts).addr.clone();
        let slot = lock(&self.slot);
        let live = slot.session.as_ref().filter(|s| !s.is_closed());
        DeviceState {
            name: self.name.clone(),
            addr,
            connected: live.is_some(),
            consecutive_failures: slot.failures,
            last_error: slot.last_error.clone(),
            retry_at: slot.retry_at,
            last_connect_time: slot.last_connect_time,
            session_id: live.map(|s| s.session_id()),
        }
    }
}

struct Inner {
    backoff: BackoffConfig,
    devices: RwLock<HashMap<String, Arc<Device>>>,
}

/// Sessions to many devices, keyed by device name. Cloning is cheap (the
/// clones share the sessions).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("devices", &self.len())
            .field("backoff", &self.inner.backoff)
            .finish()
    }
}

/// The name the NCO uses for this helper.
pub type DeviceConnections = Pool;

impl Pool {
    pub fn new(backoff: BackoffConfig) -> Self {
        Pool {
            inner: Arc::new(Inner {
                backoff,
                devices: RwLock::new(HashMap::new()),
            }),
        }
    }

    fn device(&self, name: &str) -> Result<Arc<Device>, NetconfError> {
        self.inner
            .devices
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| NetconfError::UnknownDevice(name.to_string()))
    }

    /// Registers (or re-registers with new options) a device. Nothing is
    /// connected yet. Re-registering drops the old session and backoff.
    pub fn add_device(&self, name: impl Into<String>, opts: ConnectOptions) {
        self.add_device_routed(name, opts, Route::Dial);
    }

    /// As [`Pool::add_device`], with the way its sessions are opened.
    pub fn add_device_routed(&self, name: impl Into<String>, opts: ConnectOptions, route: Route) {
        let name = name.into();
        let device = Arc::new(Device {
            name: name.clone(),
            route,
            opts: Mutex::new(opts),
            connecting: tokio::sync::Mutex::new(()),
            slot: Mutex::new(Slot::default()),
        });
        self.inner
            .devices
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, device);
    }

    /// Forgets a device; its session (if any) is closed when the last user
    /// drops it.
    pub fn remove_device(&self, name: &str) -> bool {
        self.inner
            .devices
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .is_some()
    }

    pub fn len(&self) -> usize {
        self.inner
            .devices
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn device_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inner
            .devices
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    pub fn state(&self, name: &str) -> Option<DeviceState> {
        self.device(name).ok().map(|d| d.state())
    }

    /// States of all devices, sorted by name.
    pub fn states(&self) -> Vec<DeviceState> {
        let devices: Vec<Arc<Device>> = self
            .inner
            .devices
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut states: Vec<DeviceState> = devices.iter().map(|d| d.state()).collect();
        states.sort_by(|a, b| a.name.cmp(&b.name));
        states
    }

    /// Allows an immediate attempt regardless of the backoff (operator
    /// "retry now").
    pub fn reset_backoff(&self, name: &str) -> Result<(), NetconfError> {
        let d = self.device(name)?;
        let mut slot = lock(&d.slot);
        slot.retry_at = None;
        Ok(())
    }

    /// Makes `session` the device's live session (a call-home connection
    /// the device opened); the session it replaces, if any, is dropped.
    /// False if the device is not registered.
    pub fn attach(&self, name: &str, session: Arc<Session>) -> bool {
        let Ok(device) = self.device(name) else {
            return false;
        };
        let mut slot = lock(&device.slot);
        slot.last_connect_time = Some(session.connect_time());
        slot.session = Some(session);
        slot.failures = 0;
        slot.last_error = None;
        slot.retry_at = None;
        true
    }

    /// The device's live session, without connecting.
    pub fn live(&self, name: &str) -> Option<Arc<Session>> {
        self.device(name).ok()?.live_session()
    }

    /// True when the device calls home to this process and has no live
    /// session: its requests wait (they are not attempts that failed).
    pub fn awaits_call(&self, name: &str) -> bool {
        self.device(name)
            .is_ok_and(|d| d.route == Route::Called && d.live_session().is_none())
    }

    /// The device's live session, connecting if there is none and the
    /// backoff allows. While backing off this fails at once with
    /// [`NetconfError::Unreachable`]; a failed attempt returns its own error
    /// and starts (or extends) the backoff.
    pub async fn session(&self, name: &str) -> Result<Arc<Session>, NetconfError> {
        let device = self.device(name)?;
        if let Some(s) = device.live_session() {
            return Ok(s);
        }
        let _connecting = device.connecting.lock().await;
        if let Some(s) = device.live_session() {
            return Ok(s);
        }
        {
            let slot = lock(&device.slot);
            if let Some(at) = slot.retry_at {
                let now = Instant::now();
                if at > now {
                    return Err(NetconfError::Unreachable {
                        device: name.to_string(),
                        failures: slot.failures,
                        retry_in: at - now,
                        last_error: slot.last_error.clone().unwrap_or_default(),
                    });
                }
            }
        }
        let opts = lock(&device.opts).clone();
        let opened = match &device.route {
            Route::Dial => Session::connect(opts).await,
            Route::Relay(path) => super::relay::connect(path, name, opts).await,
            Route::Called => {
                return Err(NetconfError::AwaitingCall {
                    device: name.to_string(),
                    detail: lock(&device.slot)
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "no call since the NCO started".into()),
                })
            }
        };
        match opened {
            Ok(session) => {
                let session = Arc::new(session);
                {
                    // After a trust-on-first-use connect, pin what we saw.
                    let mut opts = lock(&device.opts);
                    if opts.host_key == HostKeyPolicy::TrustOnFirstUse {
                        opts.host_key =
                            HostKeyPolicy::Pinned(session.host_key_fingerprint().to_string());
                    }
                }
                let mut slot = lock(&device.slot);
                if slot.failures > 0 {
                    info!(
                        device = name,
                        after_failures = slot.failures,
                        "device reachable again"
                    );
                }
                slot.session = Some(Arc::clone(&session));
                slot.failures = 0;
                slot.last_error = None;
                slot.retry_at = None;
                slot.last_connect_time = Some(session.connect_time());
                Ok(session)
            }
            Err(e) => {
                let mut slot = lock(&device.slot);
                slot.failures = slot.failures.saturating_add(1);
                let delay = self.inner.backoff.delay(slot.failures);
                slot.retry_at = Some(Instant::now() + delay);
                slot.last_error = Some(e.to_string());
                warn!(
                    device = name,
                    failures = slot.failures,
                    retry_in_ms = delay.as_millis() as u64,
                    error = %e,
                    "device unreachable"
                );
                Err(e)
            }
        }
    }

    /// Runs one RPC on the device's session (connecting as needed). A
    /// session that turns out dead is dropped so the next call reconnects;
    /// the RPC itself is not retried (it may not be idempotent).
    pub async fn rpc(&self, name: &str, body: &str) -> Result<Reply, NetconfError> {
        let session = self.session(name).await?;
        let result = session.rpc(body).await;
        if let Err(e) = &result {
            if e.is_fatal_for_session() {
                self.forget_session(name, &session);
            }
        }
        result
    }

    fn forget_session(&self, name: &str, session: &Arc<Session>) {
        if let Ok(d) = self.device(name) {
            let mut slot = lock(&d.slot);
            if slot
                .session
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, session))
            {
                slot.session = None;
            }
        }
    }

    /// Connects every device that has no live session and is not backing
    /// off, concurrently; returns the outcome per device.
    pub async fn connect_all(&self) -> Vec<(String, Result<(), NetconfError>)> {
        let mut set = tokio::task::JoinSet::new();
        for name in self.device_names() {
            let pool = self.clone();
            set.spawn(async move {
                let r = pool.session(&name).await.map(|_| ());
                (name, r)
            });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Ok(pair) = r {
                out.push(pair);
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Closes every session (with `<close-session>`), keeps the devices.
    pub async fn close_all(&self) {
        let sessions: Vec<Arc<Session>> = self
            .inner
            .devices
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(|d| lock(&d.slot).session.take())
            .collect();
        for s in sessions {
            let _ = s.close_session().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = BackoffConfig {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            jitter: 0.0,
        };
        assert_eq!(b.delay(0), Duration::ZERO);
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(4), Duration::from_millis(800));
        assert_eq!(b.delay(5), Duration::from_secs(1));
        assert_eq!(b.delay(500), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let b = BackoffConfig {
            base: Duration::from_millis(1000),
            max: Duration::from_secs(10),
            jitter: 0.5,
        };
        for _ in 0..200 {
            let d = b.delay(1);
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_millis(1500));
        }
    }
}
