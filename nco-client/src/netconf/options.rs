//! What a session is opened with: address, login, host-key policy,
//! timeouts and limits.

use std::path::PathBuf;
use std::time::Duration;

/// Default largest reply accepted: 256 MiB.
pub const DEFAULT_MAX_REPLY_SIZE: usize = 256 * 1024 * 1024;

/// How the server's host key is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Only a key with this fingerprint (`SHA256:…`, as printed by
    /// `ssh-keygen -lf` and by the agent at start-up) is accepted.
    Pinned(String),
    /// Any key is accepted; [`Session::host_key_fingerprint`] tells which,
    /// so the caller can pin it for the next connections.
    TrustOnFirstUse,
}

/// Everything needed to open a session.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `host:port` (or a `SocketAddr` rendered as a string).
    pub addr: String,
    pub user: String,
    /// OpenSSH private key file (Ed25519 or RSA).
    pub key: PathBuf,
    /// Passphrase of an encrypted key file.
    pub key_passphrase: Option<String>,
    pub host_key: HostKeyPolicy,
    /// TCP connect, SSH handshake, authentication and subsystem request.
    pub connect_timeout: Duration,
    /// Hello exchange.
    pub hello_timeout: Duration,
    /// Default per-RPC timeout (see [`Session::rpc_with_timeout`]).
    pub rpc_timeout: Duration,
    /// Largest reply accepted; larger replies fail their RPC with
    /// [`NetconfError::ReplyTooLarge`] and the session goes on.
    pub max_reply_size: usize,
    /// SSH keepalive interval; a peer that vanished without closing the
    /// connection is detected after three unanswered keepalives.
    pub keepalive_interval: Option<Duration>,
    /// Notifications buffered for a slow consumer before they are dropped
    /// (with a warning); replies are never held up by notifications.
    pub notification_buffer: usize,
}

impl ConnectOptions {
    /// Options with the defaults: 10 s connect, 10 s hello, 60 s per RPC,
    /// 256 MiB replies, 30 s keepalive.
    pub fn new(
        addr: impl ToString,
        user: impl Into<String>,
        key: impl Into<PathBuf>,
        host_key: HostKeyPolicy,
    ) -> Self {
        ConnectOptions {
            addr: addr.to_string(),
            user: user.into(),
            key: key.into(),
            key_passphrase: None,
            host_key,
            connect_timeout: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(10),
            rpc_timeout: Duration::from_secs(60),
            max_reply_size: DEFAULT_MAX_REPLY_SIZE,
            keepalive_interval: Some(Duration::from_secs(30)),
            notification_buffer: 1024,
        }
    }
}

/// Compares fingerprints, tolerating base64 padding and a missing
/// `SHA256:` prefix on the expected value.
pub fn fingerprints_match(expected: &str, got: &str) -> bool {
    fn norm(s: &str) -> &str {
        let s = s.trim();
        let s = s.strip_prefix("SHA256:").unwrap_or(s);
        s.trim_end_matches('=')
    }
    !norm(expected).is_empty() && norm(expected) == norm(got)
}
