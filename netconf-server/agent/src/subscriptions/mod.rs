//! Subscriptions: RFC 5277 `create-subscription` on the NETCONF stream
//! with replay ([`stream`], [`log`]), RFC 8639 dynamic subscriptions to
//! that stream and RFC 8641 YANG-push periodic and on-change
//! subscriptions to the operational datastore ([`push`]); their RPCs are
//! in [`rpc`].
//!
//! Each subscription is a task on the agent's runtime that writes whole
//! `<notification>` messages into its session's outbox; the session loop
//! sends them between replies. The registry here knows which session owns
//! which subscription, so a subscription ends with its session and
//! `kill-subscription` can end another session's.

pub mod log;
pub mod push;
pub mod rpc;
pub mod spec;
pub mod stream;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::sync::guard;

/// RFC 5277 namespace of `replayComplete`/`notificationComplete` and of
/// `/netconf/streams`.
pub const NC_NOTIFICATIONS_NS: &str = "urn:ietf:params:xml:ns:netmod:notification";
pub const SN_NS: &str = "urn:ietf:params:xml:ns:yang:ietf-subscribed-notifications";
pub const YP_NS: &str = "urn:ietf:params:xml:ns:yang:ietf-yang-push";
pub const SN_MODULE: &str = "ietf-subscribed-notifications";
pub const YP_MODULE: &str = "ietf-yang-push";
/// The one event stream.
pub const NETCONF_STREAM: &str = "NETCONF";

/// Notifications waiting for a session's loop, bounded: a session that
/// does not read makes its subscriptions wait (and the event stream's
/// receivers then report what they lost).
const OUTBOX: usize = 1024;

/// What a subscription is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// RFC 5277 `create-subscription` (at most one per session, no id on
    /// the wire).
    Rfc5277,
    /// RFC 8639 subscription to the NETCONF event stream.
    Stream,
    /// RFC 8641 datastore subscription.
    Datastore,
}

struct Running {
    kind: Kind,
    task: JoinHandle<()>,
    /// A datastore subscription's parameters, replaced by
    /// `modify-subscription`.
    control: Option<tokio::sync::watch::Sender<spec::Spec>>,
}

struct SessionSubs {
    outbox: mpsc::Sender<String>,
    /// The receiving end until the session loop takes it.
    unclaimed: Option<mpsc::Receiver<String>>,
    subs: BTreeMap<u32, Running>,
}

/// Every session's subscriptions.
#[derive(Default)]
pub struct Subscriptions {
    sessions: Mutex<BTreeMap<u32, SessionSubs>>,
    /// Subscription ids (RFC 8639 `subscription-id`), unique in the agent's
    /// life.
    next_id: AtomicU32,
}

/// Why a subscription cannot start.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The session has an RFC 5277 subscription already.
    AlreadySubscribed,
    /// RFC 5277 and RFC 8639 subscriptions do not share a session (RFC
    /// 8639 1.3).
    Mixed,
}

impl Subscriptions {
    /// A new subscription id.
    pub fn new_id(&self) -> u32 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Checks that `session` may start a subscription of `kind` and returns
    /// its outbox.
    pub fn admit(&self, session: u32, kind: Kind) -> Result<mpsc::Sender<String>, Refusal> {
        let mut sessions = guard(&self.sessions);
        let s = sessions.entry(session).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(OUTBOX);
            SessionSubs {
                outbox: tx,
                unclaimed: Some(rx),
                subs: BTreeMap::new(),
            }
        });
        let rfc5277 = s.subs.values().any(|r| r.kind == Kind::Rfc5277);
        match kind {
            Kind::Rfc5277 if rfc5277 => return Err(Refusal::AlreadySubscribed),
            Kind::Rfc5277 if !s.subs.is_empty() => return Err(Refusal::Mixed),
            Kind::Stream | Kind::Datastore if rfc5277 => return Err(Refusal::Mixed),
            _ => {}
        }
        Ok(s.outbox.clone())
    }

    /// Records a started subscription.
    pub fn started(
        &self,
        session: u32,
        id: u32,
        kind: Kind,
        task: JoinHandle<()>,
        control: Option<tokio::sync::watch::Sender<spec::Spec>>,
    ) {
        match guard(&self.sessions).get_mut(&session) {
            Some(s) => {
                s.subs.insert(
                    id,
                    Running {
                        kind,
                        task,
                        control,
                    },
                );
            }
            // The session ended meanwhile.
            None => task.abort(),
        }
    }

    /// The outbox's receiving end, for the session loop (once).
    pub fn take_outbox(&self, session: u32) -> Option<mpsc::Receiver<String>> {
        guard(&self.sessions)
            .get_mut(&session)
            .and_then(|s| s.unclaimed.take())
    }

    /// A subscription's task ended on its own (stop time reached).
    pub fn finished(&self, session: u32, id: u32) {
        if let Some(s) = guard(&self.sessions).get_mut(&session) {
            s.subs.remove(&id);
        }
    }

    /// The session owning subscription `id` and its kind.
    pub fn owner(&self, id: u32) -> Option<(u32, Kind)> {
        guard(&self.sessions)
            .iter()
            .find_map(|(sid, s)| s.subs.get(&id).map(|r| (*sid, r.kind)))
    }

    /// Replaces a datastore subscription's parameters.
    pub fn modify(&self, id: u32, spec: spec::Spec) -> bool {
        guard(&self.sessions)
            .values()
            .find_map(|s| s.subs.get(&id))
            .and_then(|r| r.control.as_ref())
            .is_some_and(|c| c.send(spec).is_ok())
    }

    /// Asks on-change subscription `id` for a full update; false if it is
    /// not one (periodic, a stream, or gone).
    pub fn resync(&self, id: u32) -> bool {
        guard(&self.sessions)
            .values()
            .find_map(|s| s.subs.get(&id))
            .and_then(|r| r.control.as_ref())
            .is_some_and(|c| {
                c.send_if_modified(|spec| match spec.trigger {
                    spec::Trigger::OnChange { .. } => {
                        spec.resync = spec.resync.wrapping_add(1);
                        true
                    }
                    spec::Trigger::Periodic { .. } => false,
                })
            })
    }

    /// Ends subscription `id`; with `notice`, a last notification (already
    /// a whole message) goes to its session first.
    pub fn end(&self, id: u32, notice: Option<String>) -> bool {
        let mut sessions = guard(&self.sessions);
        for s in sessions.values_mut() {
            if let Some(r) = s.subs.remove(&id) {
                r.task.abort();
                if let Some(n) = notice {
                    // A full outbox loses the notice, not the ending.
                    let _ = s.outbox.try_send(n);
                }
                return true;
            }
        }
        false
    }

    /// Queues a notification (a whole message) for a session with
    /// subscriptions; a full outbox loses it.
    pub fn notify(&self, session: u32, msg: String) {
        if let Some(s) = guard(&self.sessions).get(&session) {
            let _ = s.outbox.try_send(msg);
        }
    }

    /// Ends every subscription of a session (it closed).
    pub fn end_session(&self, session: u32) {
        if let Some(s) = guard(&self.sessions).remove(&session) {
            for r in s.subs.into_values() {
                r.task.abort();
            }
        }
    }

    /// (session, id, kind) of every subscription, for state data.
    pub fn list(&self) -> Vec<(u32, u32, Kind)> {
        guard(&self.sessions)
            .iter()
            .flat_map(|(sid, s)| s.subs.iter().map(|(id, r)| (*sid, *id, r.kind)))
            .collect()
    }
}

/// A whole `<notification>` message.
pub fn notification_message(time: std::time::SystemTime, content: &str) -> String {
    l45_netconf_proto::message::notification(&crate::time::rfc3339(time), content)
}
