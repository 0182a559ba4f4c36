//! What the device says about itself (`/l45:device`): identity, platform,
//! tap backend, call-home endpoints and the enrollment token. Collected
//! once at start-up (`DeviceInfo::collect`); the call-home status changes
//! as connections come and go. Rendered into `get` by `state/device.rs`.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// One NCO this agent calls home to, and how that goes.
#[derive(Debug)]
pub struct CallHomeStatus {
    /// `host:port` of the NCO.
    pub address: String,
    connected: AtomicBool,
    connects: AtomicU32,
    last_error: Mutex<Option<String>>,
}

impl CallHomeStatus {
    pub fn new(address: impl Into<String>) -> Self {
        CallHomeStatus {
            address: address.into(),
            connected: AtomicBool::new(false),
            connects: AtomicU32::new(0),
            last_error: Mutex::new(None),
        }
    }

    pub fn set_connected(&self) {
        self.connected.store(true, Ordering::Relaxed);
        self.connects.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_disconnected(&self, why: impl Into<String>) {
        self.connected.store(false, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.into());
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn connects(&self) -> u32 {
        self.connects.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The tap backend and what it can load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapInfo {
    /// `recording`, `userspace` or `kernel` (the YANG enumeration).
    pub backend: String,
    /// The shared-memory layout version (user-space tap only).
    pub userspace_abi_version: Option<u32>,
    /// The kernel release a kernel module must be built for (kernel tap).
    pub kernel_module_release: Option<String>,
    /// Module kinds (YANG identity names) the tap runs.
    pub kinds: Vec<String>,
}

/// The device data of one agent.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub host_name: String,
    pub machine_id: String,
    pub architecture: String,
    pub os_name: String,
    pub kernel_release: String,
    pub agent_version: String,
    pub host_key_fingerprint: String,
    pub tap: TapInfo,
    pub call_home: Vec<Arc<CallHomeStatus>>,
    pub enrollment_token: Option<String>,
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// `PRETTY_NAME` (else `NAME`) of an os-release file's text.
pub fn os_release_name(text: &str) -> Option<String> {
    let value = |key: &str| {
        text.lines().find_map(|l| {
            let v = l.strip_prefix(key)?.strip_prefix('=')?;
            Some(v.trim().trim_matches('"').to_string())
        })
    };
    value("PRETTY_NAME").or_else(|| value("NAME"))
}

impl DeviceInfo {
    /// Reads this host's data (`/proc/sys/kernel`, `/etc/machine-id`,
    /// os-release); what cannot be read is left empty rather than failing
    /// the agent's start.
    pub fn collect(host_key_fingerprint: String, tap_backend: &str) -> DeviceInfo {
        let kernel_release = read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default();
        let os_name = read_trimmed("/etc/os-release")
            .or_else(|| read_trimmed("/usr/lib/os-release"))
            .and_then(|t| os_release_name(&t))
            .unwrap_or_else(|| std::env::consts::OS.to_string());
        let tap = TapInfo {
            backend: tap_backend.to_string(),
            userspace_abi_version: (tap_backend == "userspace").then_some(l45_tap_shm::VERSION),
            kernel_module_release: (tap_backend == "kernel").then(|| kernel_release.clone()),
            kinds: l45_modules::Kind::ALL
                .iter()
                .map(|k| k.name().to_string())
                .collect(),
        };
        DeviceInfo {
            host_name: read_trimmed("/proc/sys/kernel/hostname").unwrap_or_default(),
            machine_id: read_trimmed("/etc/machine-id")
                .or_else(|| read_trimmed("/var/lib/dbus/machine-id"))
                .unwrap_or_default(),
            architecture: std::env::consts::ARCH.to_string(),
            os_name,
            kernel_release,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            host_key_fingerprint,
            tap,
            call_home: Vec::new(),
            enrollment_token: None,
        }
    }
}

/// Reads a one-time enrollment token from its file: the first line,
/// which must be non-empty. The file should be readable by the agent's
/// user only; a group- or world-readable one is refused, because the
/// token lets whoever holds it enroll a device.
pub fn read_enrollment_token(path: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{}: mode {:o} lets others read the enrollment token; make it 0600",
            path.display(),
            meta.mode() & 0o777
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(format!("{}: no enrollment token in it", path.display()));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_prefers_pretty_name() {
        let t = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n";
        assert_eq!(
            os_release_name(t).as_deref(),
            Some("Debian GNU/Linux 13 (trixie)")
        );
        assert_eq!(os_release_name("NAME=Alpine\n").as_deref(), Some("Alpine"));
        assert_eq!(os_release_name("ID=x\n"), None);
    }

    #[test]
    fn collects_this_host() {
        let d = DeviceInfo::collect("SHA256:x".into(), "userspace");
        assert_eq!(d.architecture, std::env::consts::ARCH);
        assert_eq!(d.tap.userspace_abi_version, Some(l45_tap_shm::VERSION));
        assert_eq!(d.tap.kernel_module_release, None);
        assert_eq!(d.tap.kinds.len(), l45_modules::Kind::ALL.len());
    }

    #[test]
    fn token_file_must_be_private() {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str, mode: u32| {
            let p = dir.path().join(name);
            let mut f = std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(mode)
                .open(&p)
                .unwrap();
            f.write_all(b"tok123\n").unwrap();
            p
        };
        assert_eq!(read_enrollment_token(&open("a", 0o600)).unwrap(), "tok123");
        let err = read_enrollment_token(&open("b", 0o644)).unwrap_err();
        assert!(err.contains("0600"), "{err}");
    }
}
