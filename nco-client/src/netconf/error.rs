//! Typed errors of the NETCONF client and the parsed form of `<rpc-error>`.

use std::fmt;
use std::time::Duration;

/// One `<rpc-error>` of a reply (RFC 6241 section 4.3), as the server sent it.
///
/// Values are kept as strings: the client must be able to report errors from
/// any server, including tags and types this crate does not know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RpcErrorInfo {
    /// `transport`, `rpc`, `protocol` or `application`.
    pub error_type: String,
    /// `invalid-value`, `lock-denied`, ...
    pub error_tag: String,
    /// `error` or `warning`.
    pub error_severity: String,
    pub error_app_tag: Option<String>,
    /// The instance identifier as written by the server; its prefixes are
    /// resolved by [`RpcErrorInfo::error_path_namespaces`].
    pub error_path: Option<String>,
    /// Namespace declarations in scope at `<error-path>`: (prefix, URI);
    /// prefix `None` is the default namespace.
    pub error_path_namespaces: Vec<(Option<String>, String)>,
    pub error_message: Option<String>,
    /// The `<error-info>` element, standalone XML (with its in-scope
    /// namespace declarations), unparsed.
    pub error_info: Option<String>,
}

impl RpcErrorInfo {
    /// True unless the server marked it as a warning.
    pub fn is_error(&self) -> bool {
        self.error_severity != "warning"
    }
}

impl fmt::Display for RpcErrorInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.error_type, self.error_tag)?;
        if let Some(path) = &self.error_path {
            write!(f, " at {path}")?;
        }
        if let Some(m) = &self.error_message {
            write!(f, ": {m}")?;
        }
        Ok(())
    }
}

fn join_errors(errors: &[RpcErrorInfo]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Which step of the session a timeout hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// TCP connect, SSH handshake, authentication and subsystem request.
    Connect,
    /// The hello exchange.
    Hello,
    /// Waiting for an rpc-reply.
    Rpc,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Connect => "connect",
            Phase::Hello => "hello",
            Phase::Rpc => "rpc",
        })
    }
}

/// Everything that can go wrong talking NETCONF to a device.
///
/// The type is `Clone` so that one transport failure can be handed to every
/// outstanding RPC.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NetconfError {
    /// TCP connect or SSH handshake failed (refused, unreachable, protocol).
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    /// The server presented a host key other than the pinned one. Nothing
    /// was sent to it beyond the key exchange.
    #[error("host key mismatch: expected {expected}, server presented {got}")]
    HostKeyMismatch { expected: String, got: String },
    /// The client key could not be read.
    #[error("cannot load client key {path}: {message}")]
    Key { path: String, message: String },
    /// The server refused our key.
    #[error("authentication as {user} refused: {message}")]
    Auth { user: String, message: String },
    /// The server refused the `netconf` subsystem (or the channel).
    #[error("netconf subsystem refused: {0}")]
    Subsystem(String),
    /// Bad or missing server hello.
    #[error("hello exchange failed: {0}")]
    Hello(String),
    /// The byte stream broke RFC 6242 framing; the session is gone.
    #[error("framing error: {0}")]
    Framing(String),
    /// The session ended (peer closed, connection lost, closed locally).
    #[error("session disconnected")]
    Disconnected,
    #[error("{phase} timed out after {after:?}")]
    Timeout { phase: Phase, after: Duration },
    /// The reply carried `<rpc-error>`s (helpers that expect success).
    #[error("rpc failed: {}", join_errors(.0))]
    RpcFailed(Vec<RpcErrorInfo>),
    /// A reply was larger than the configured limit and was discarded.
    #[error("reply of {size} bytes exceeds the limit of {limit} bytes")]
    ReplyTooLarge { size: usize, limit: usize },
    /// The reply was not well-formed or not an `<rpc-reply>`.
    #[error("malformed reply: {0}")]
    MalformedReply(String),
    /// The reply was well-formed but not what the operation returns.
    #[error("unexpected reply: {0}")]
    UnexpectedReply(String),
    /// The request body given to the client is not one XML element.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Pool: no such device registered.
    #[error("unknown device {0}")]
    UnknownDevice(String),
    /// Pool: the device calls home (RFC 8071) and has no connection open
    /// now; requests wait for its next call.
    #[error("device {device} calls home and has not called (no connection now): {detail}")]
    AwaitingCall { device: String, detail: String },
    /// Pool: the device failed recently and its backoff has not expired.
    #[error("device {device} unreachable ({failures} consecutive failures, retry in {retry_in:?}): {last_error}")]
    Unreachable {
        device: String,
        failures: u32,
        retry_in: Duration,
        last_error: String,
    },
}

impl NetconfError {
    /// True for errors after which the session cannot be used any more.
    pub fn is_fatal_for_session(&self) -> bool {
        matches!(
            self,
            NetconfError::Disconnected | NetconfError::Framing(_) | NetconfError::Connect { .. }
        )
    }
}
