//! What the agent keeps about NETCONF sessions (RFC 6022 monitoring,
//! kill-session) and its counters; who makes a change ([`Actor`]).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

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

/// Who makes a change: a session, or the agent itself (session 0).
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub session_id: u32,
    pub user: &'a str,
}

impl Actor<'_> {
    /// The agent itself: start-up, a confirmed commit's timeout.
    pub const SYSTEM: Actor<'static> = Actor {
        session_id: 0,
        user: "system",
    };
}

impl SessionInfo {
    pub fn actor(&self) -> Actor<'_> {
        Actor {
            session_id: self.id,
            user: &self.username,
        }
    }
}

/// Agent-wide counters of RFC 6022 `statistics`.
#[derive(Default)]
pub struct Counters {
    pub in_sessions: AtomicU64,
    pub in_bad_hellos: AtomicU64,
    pub dropped_sessions: AtomicU64,
    pub in_rpcs: AtomicU64,
    pub in_bad_rpcs: AtomicU64,
    pub out_rpc_errors: AtomicU64,
    pub out_notifications: AtomicU64,
}
