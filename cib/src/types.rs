//! The plain values the CIB takes and returns. No SQL here.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{CibError, Result};

// ===== Timestamp =====

/// A point in time, Unix milliseconds (UTC). Stored as SQLite INTEGER.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Timestamp {
        // A clock before 1970 is a broken clock; 0 keeps ordering sane.
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(ms)
    }

    pub fn from_secs(secs: i64) -> Timestamp {
        Timestamp(secs.saturating_mul(1000))
    }

    pub fn plus_millis(self, ms: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }

    pub fn millis(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // RFC 3339 in UTC with the CIB's precision (milliseconds).
        f.write_str(&l45_netconf_proto::time::date_and_time(self.0, true))
    }
}

// ===== small enums stored as text =====

macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The text stored in the CIB (and used by the YANG model where it has one).
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<$name> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }

            pub(crate) fn from_db(text: &str) -> Result<$name> {
                $name::parse(text).ok_or_else(|| {
                    CibError::corrupt(format!("{} \"{}\"", stringify!($name), text))
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// Which sockets a module may attach to (YANG `attach`).
    Attach { NewSockets => "new-sockets", Immediate => "immediate" }
);

text_enum!(
    /// Transport protocol a module matches (YANG `protocol`).
    Protocol { Tcp => "tcp", Udp => "udp", Any => "any" }
);

text_enum!(
    /// Where a built instance is in its life: built in the CIB only, deploy
    /// confirmed by the device, revoke confirmed (or never sent).
    ModuleStatus { Built => "built", Deployed => "deployed", Revoked => "revoked" }
);

text_enum!(
    /// Request state machine; see docs/cib.md.
    RequestState {
        Pending => "pending",
        Sent => "sent",
        Confirmed => "confirmed",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

text_enum!(
    /// Module state as the device reports it (YANG `module-state`).
    ReportedState {
        Registered => "registered",
        Active => "active",
        Deprecated => "deprecated",
        Revoked => "revoked",
    }
);

text_enum!(
    Severity { Info => "info", Warning => "warning", Critical => "critical" }
);

text_enum!(
    /// State of an inverse module on a middlebox.
    MiddleboxDeploymentState {
        Pending => "pending",
        Deployed => "deployed",
        Failed => "failed",
        Removed => "removed",
    }
);

impl RequestState {
    /// Pending or sent: the NCO still owes work on it.
    pub fn is_open(self) -> bool {
        matches!(self, RequestState::Pending | RequestState::Sent)
    }
}

/// Alert kinds the NCO raises; free text is allowed too, these are the
/// ones the CIB itself raises or the design names.
pub mod alert_kind {
    pub const SECURITY_CHECK_FAILED: &str = "security-check-failed";
    pub const UNKNOWN_MODULE_ON_DEVICE: &str = "unknown-module-on-device";
    pub const MISSING_ON_DEVICE: &str = "missing-on-device";
    pub const ACTIVE_ON_ONE_END_ONLY: &str = "active-on-one-end-only";
    pub const DEVICE_UNREACHABLE: &str = "device-unreachable";
    pub const RPC_ERROR: &str = "rpc-error";
    pub const HOST_KEY_MISMATCH: &str = "host-key-mismatch";
    pub const FLOW_REJECTED: &str = "flow-rejected";
    /// A device's tap found a socket escaping a module (the agent's
    /// `module-bypassed` notification).
    pub const MODULE_BYPASSED: &str = "module-bypassed";
    /// A device called home with a host key the CIB does not know and no
    /// valid enrollment token: it waits for `devices accept`.
    pub const DEVICE_PENDING: &str = "device-pending";
    /// An enrollment token was presented that is unknown, used or expired.
    pub const ENROLLMENT_REFUSED: &str = "enrollment-refused";
}

// ===== devices and middleboxes =====

/// Input to [`crate::Cib::add_device`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewDevice {
    pub name: String,
    /// `host:port` of the device agent; IPv6 as `[addr]:port`.
    pub address: String,
    pub username: String,
    pub ssh_key_path: String,
    /// `SHA256:...` as OpenSSH prints it; `None` = trust on first use.
    pub host_key_fingerprint: Option<String>,
    pub role: Option<String>,
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub address: String,
    pub username: String,
    pub ssh_key_path: String,
    pub host_key_fingerprint: Option<String>,
    /// The device calls the NCO (RFC 8071); `address` is where its last
    /// call came from.
    pub call_home: bool,
    pub role: Option<String>,
    pub labels: Vec<String>,
    pub added_at: Timestamp,
}

impl Device {
    /// Host part of `address` (brackets of an IPv6 literal removed).
    pub fn host(&self) -> &str {
        crate::addr::split_host_port(&self.address)
            .map(|(host, _)| host)
            .unwrap_or(&self.address)
    }
}

/// What a device reports about itself (`/l45:device`), its check-in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceData {
    pub host_name: String,
    pub machine_id: String,
    pub architecture: String,
    pub os_name: String,
    pub kernel_release: String,
    pub agent_version: String,
    /// `recording`, `userspace` or `kernel`.
    pub tap_backend: String,
    pub userspace_abi_version: Option<u32>,
    pub kernel_module_release: Option<String>,
    /// Module kinds the tap runs (YANG identity names).
    pub kinds: Vec<String>,
    /// When the agent last started, as it reported it.
    pub last_start: Option<String>,
}

impl DeviceData {
    /// Why a module of `kind` cannot be built for this device, if it
    /// cannot.
    pub fn lacks(&self, kind: &str) -> Option<String> {
        (!self.kinds.iter().any(|k| k == kind)).then(|| {
            format!(
                "its {} tap ({}, {}) does not run {kind} (it runs: {})",
                self.tap_backend,
                self.architecture,
                self.kernel_release,
                if self.kinds.is_empty() {
                    "nothing".to_string()
                } else {
                    self.kinds.join(", ")
                }
            )
        })
    }
}

/// A device's latest check-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckIn {
    pub device: String,
    pub data: DeviceData,
    pub checked_in_at: Timestamp,
}

/// `pending` (waiting for the operator) or `rejected` (calls are refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingState {
    Pending,
    Rejected,
}

impl PendingState {
    pub fn as_str(self) -> &'static str {
        match self {
            PendingState::Pending => "pending",
            PendingState::Rejected => "rejected",
        }
    }
}

/// A device that called with an unknown host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDevice {
    /// Proposed name (its host name, made unique).
    pub name: String,
    pub host_key_fingerprint: String,
    pub state: PendingState,
    /// Where the last call came from.
    pub peer: String,
    pub username: String,
    pub ssh_key_path: String,
    pub data: DeviceData,
    pub first_seen_at: Timestamp,
    pub last_seen_at: Timestamp,
    pub calls: u32,
}

/// What the CIB made of a call from a host key it does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnknownCall {
    /// Recorded (or refreshed) as pending; an alert was raised the first time.
    Pending { name: String },
    /// The operator rejected this key.
    Rejected { name: String },
    /// Another host key is pinned for this machine: refused, critical alert.
    HostKeyChanged { device: String, pinned: String },
}

/// A one-time enrollment token as issued (the token itself is shown once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    pub device: String,
    pub token: String,
    pub expires_at: Timestamp,
}

/// What [`crate::Cib::check_host_key`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyCheck {
    /// No key was pinned; this one now is (trust on first use).
    PinnedNow,
    /// The presented key is the pinned one.
    Matches,
    /// A different key is pinned; an alert was raised. Do not connect.
    Mismatch { pinned: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewMiddlebox {
    pub name: String,
    pub address: String,
    /// Middlebox type, e.g. `wireshark`; selects the inverse artefact.
    pub mb_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Middlebox {
    pub name: String,
    pub address: String,
    pub mb_type: String,
    pub added_at: Timestamp,
}

// ===== modules =====

/// Socket selection (YANG `match`); `None` = wildcard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchRules {
    pub protocol: Option<Protocol>,
    /// IPv4/IPv6 address or prefix (`10.0.0.0/8`).
    pub source_address: Option<String>,
    pub source_port: Option<u16>,
    pub destination_address: Option<String>,
    pub destination_port: Option<u16>,
    /// PID comm, 1..=15 bytes.
    pub thread_name: Option<String>,
    /// TGID comm, 1..=15 bytes.
    pub process_name: Option<String>,
}

/// Input to [`crate::Cib::construct_module`]: one instance for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewModule {
    pub device: String,
    pub name: String,
    /// YANG identity name, e.g. `dns-front-tag`.
    pub kind: String,
    /// (leaf name, value) pairs of the kind's parameter container.
    pub parameters: Vec<(String, String)>,
    pub priority: u16,
    pub activated: bool,
    pub attach: Attach,
    pub match_rules: MatchRules,
    /// SHA-256 of a recorded image of `kind` that the deploy installs on
    /// the device first (`modules deploy --image`); `None`: the kind is
    /// built in or already installed.
    pub image: Option<String>,
}

impl NewModule {
    /// The YANG defaults: priority 100, activated, attach to new sockets, match anything.
    pub fn new(device: &str, name: &str, kind: &str) -> NewModule {
        NewModule {
            device: device.to_owned(),
            name: name.to_owned(),
            kind: kind.to_owned(),
            parameters: Vec::new(),
            priority: DEFAULT_PRIORITY,
            activated: true,
            attach: Attach::NewSockets,
            match_rules: MatchRules::default(),
            image: None,
        }
    }
}

/// YANG default of `priority`.
pub const DEFAULT_PRIORITY: u16 = 100;

/// A built instance. `Debug` does not print the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Module {
    pub device: String,
    /// Unique per device, never reused; the YANG list key.
    pub module_id: u32,
    pub name: String,
    pub kind: String,
    pub parameters: Vec<(String, String)>,
    pub priority: u16,
    pub activated: bool,
    pub deprecated: bool,
    pub attach: Attach,
    pub match_rules: MatchRules,
    /// 256-bit AES-GCM key shared with the module (YANG `security/key`).
    pub key: [u8; 32],
    pub status: ModuleStatus,
    pub created_at: Timestamp,
    pub deployed_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    /// The image its deploy installs first (`NewModule::image`).
    pub image: Option<String>,
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module")
            .field("device", &self.device)
            .field("module_id", &self.module_id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("parameters", &self.parameters)
            .field("priority", &self.priority)
            .field("activated", &self.activated)
            .field("deprecated", &self.deprecated)
            .field("attach", &self.attach)
            .field("match_rules", &self.match_rules)
            .field("key", &"<redacted>")
            .field("status", &self.status)
            .field("created_at", &self.created_at)
            .field("deployed_at", &self.deployed_at)
            .field("revoked_at", &self.revoked_at)
            .field("image", &self.image)
            .finish()
    }
}

// ===== requests =====

/// What a request asks the device to do with a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Configure the module as the CIB holds it.
    Deploy,
    /// `revoke-module`: detach everywhere.
    Revoke,
    /// No new sockets; auto-revoked once idle.
    Deprecate,
    Activate,
    Deactivate,
    SetPriority(u16),
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Deploy => "deploy",
            Action::Revoke => "revoke",
            Action::Deprecate => "deprecate",
            Action::Activate => "activate",
            Action::Deactivate => "deactivate",
            Action::SetPriority(_) => "set-priority",
        }
    }

    pub(crate) fn priority_value(self) -> Option<u16> {
        match self {
            Action::SetPriority(p) => Some(p),
            _ => None,
        }
    }

    pub(crate) fn from_db(name: &str, priority: Option<i64>) -> Result<Action> {
        Ok(match name {
            "deploy" => Action::Deploy,
            "revoke" => Action::Revoke,
            "deprecate" => Action::Deprecate,
            "activate" => Action::Activate,
            "deactivate" => Action::Deactivate,
            "set-priority" => {
                let p = priority
                    .and_then(|p| u16::try_from(p).ok())
                    .ok_or_else(|| CibError::corrupt("set-priority request without a priority"))?;
                Action::SetPriority(p)
            }
            other => return Err(CibError::corrupt(format!("request action \"{other}\""))),
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::SetPriority(p) => write!(f, "set-priority {p}"),
            other => f.write_str(other.name()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// CIB-wide, never reused.
    pub id: i64,
    pub device: String,
    pub module_id: u32,
    pub module_name: String,
    pub action: Action,
    pub state: RequestState,
    /// Times it was marked sent.
    pub attempts: u32,
    pub max_attempts: u32,
    /// The operator's "not before" (deploy at T); `created_at` for "now".
    pub not_before: Timestamp,
    /// When it is due next (`not_before`, then pushed out by backoff).
    pub next_attempt_at: Timestamp,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub sent_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

/// How [`crate::Cib::mark_failed`] treats an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Try again after backoff, unless the attempts are used up.
    Transient,
    /// Do not retry (the device refused the request).
    Permanent,
}

/// Retry policy for new requests and for backoff.
/// Backoff after the n-th failed attempt: `min(base * 2^(n-1), max)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_backoff_ms: i64,
    pub max_backoff_ms: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base_backoff_ms: 2_000,
            max_backoff_ms: 300_000,
        }
    }
}

impl RetryPolicy {
    /// Delay before the next try after `attempts` failed tries (attempts >= 1).
    pub fn backoff_ms(&self, attempts: u32) -> i64 {
        let shift = attempts.saturating_sub(1).min(30);
        self.base_backoff_ms
            .saturating_mul(1i64 << shift)
            .min(self.max_backoff_ms)
    }
}

// ===== device-reported state =====

/// One module of a device's `report` RPC output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleReport {
    pub module_id: u32,
    pub state: Option<ReportedState>,
    pub activated: Option<bool>,
    /// `active-ts` as the device printed it.
    pub active_ts: Option<String>,
    pub socket_count: u32,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub errors: u64,
}

/// What [`crate::Cib::record_report`] concluded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportOutcome {
    /// Ids the device runs that the CIB does not know for it (alert raised).
    pub unknown_on_device: Vec<u32>,
    /// Deployed in the CIB but absent from the report (alert raised).
    pub missing_on_device: Vec<u32>,
    /// Deprecated modules found idle; a revoke request was created for each.
    pub auto_revoke_requests: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub device: String,
    pub module_id: u32,
    pub module_name: String,
    pub state: ReportedState,
    pub activated: Option<bool>,
    pub active_ts: Option<String>,
    pub socket_count: u32,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub errors: u64,
    pub last_report_at: Timestamp,
    pub last_security_check: Option<Timestamp>,
    pub last_security_ok: Option<bool>,
    pub security_failures: u32,
}

/// What [`crate::Cib::record_security_check`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityOutcome {
    Passed,
    /// Alert raised; a revoke request exists (new or already open).
    FailedRevokeRequested {
        request_id: i64,
    },
}

// ===== history and alerts =====

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub id: i64,
    pub at: Timestamp,
    pub device: Option<String>,
    pub module_id: Option<u32>,
    pub event: String,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    pub device: Option<String>,
    pub module_id: Option<u32>,
    /// Newest first; `None` = no limit.
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAlert {
    pub severity: Severity,
    pub device: Option<String>,
    pub module_id: Option<u32>,
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub id: i64,
    pub at: Timestamp,
    pub severity: Severity,
    pub device: Option<String>,
    pub module_id: Option<u32>,
    pub kind: String,
    pub message: String,
    pub acknowledged: bool,
    pub acknowledged_at: Option<Timestamp>,
}

// ===== inverse modules and middleboxes =====

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InverseModule {
    pub kind: String,
    pub mb_type: String,
    pub artefact_name: String,
    /// Lower-case hex SHA-256 of the artefact (generator or template).
    pub content_sha256: String,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiddleboxDeployment {
    pub id: i64,
    pub middlebox: String,
    pub device: String,
    pub module_id: u32,
    pub kind: String,
    pub artefact_name: String,
    pub state: MiddleboxDeploymentState,
    /// SHA-256 of the per-instance artefact actually shipped.
    pub content_sha256: Option<String>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A flow a middlebox saw and asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowQuery {
    pub middlebox: String,
    pub protocol: Protocol,
    pub source: std::net::IpAddr,
    pub source_port: u16,
    pub destination: std::net::IpAddr,
    pub destination_port: u16,
}

/// Which end of a flow a device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowEnd {
    Source,
    Destination,
}

/// A deployed module whose match rules cover the queried flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowMatch {
    pub device: String,
    pub end: FlowEnd,
    pub module_id: u32,
    pub module_name: String,
    pub kind: String,
    pub priority: u16,
    /// The inverse for this kind on the middlebox's type, if registered.
    pub inverse: Option<InverseModule>,
    /// Whether this middlebox has the instance's inverse deployed.
    pub inverse_deployed: bool,
}

// ===== status =====

/// One line of the status summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceStatus {
    pub device: String,
    pub modules_built: u32,
    pub modules_deployed: u32,
    pub modules_revoked: u32,
    pub requests_pending: u32,
    pub requests_sent: u32,
    pub requests_failed: u32,
    pub alerts_open: u32,
    pub last_report_at: Option<Timestamp>,
}

/// A signed module image (a kind that is not built in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// SHA-256 of the image file, lowercase hex.
    pub sha256: String,
    pub kind: String,
    /// `userspace-x86_64`, `kernel-<release>-<arch>`.
    pub target: String,
    pub size: u64,
    /// Key id of the signing key.
    pub signer: String,
    /// RFC 3339, from the manifest.
    pub built_at: String,
    /// Where the image file was when recorded.
    pub path: String,
    /// Ed25519 signature over the manifest, lowercase hex (`None`: recorded
    /// before the CIB kept signatures).
    pub signature: Option<String>,
    pub recorded_at: Timestamp,
}

/// A device that accepted an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInstall {
    pub device: String,
    pub sha256: String,
    pub installed_at: Timestamp,
}
