//! Subscriptions to the NETCONF event stream: replay from the log, then
//! live events, each checked against NACM (RFC 8341 3.4.6) and the
//! subscription's filter, until the stop time.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{broadcast, mpsc};
use yang3::data::{Data, DataFormat, DataOperation, DataTree};

use super::{notification_message, Kind, NC_NOTIFICATIONS_NS, SN_NS};
use crate::agent::Agent;
use crate::filter::Filter;
use crate::notify::Event;

/// What an event-stream subscription delivers.
pub struct StreamSub {
    pub kind: Kind,
    pub id: u32,
    pub session: u32,
    pub user: String,
    /// Selects on the notification's content (libyang XPaths).
    pub filter: Filter,
    /// Replay was asked for (`startTime`, `replay-start-time`).
    pub replay: bool,
    pub stop: Option<SystemTime>,
}

/// Whether `filter` selects anything of the notification `xml`. A
/// notification libyang cannot parse is not delivered to a filtered
/// subscription (logged: every notification the agent emits is in its
/// schema).
pub fn selects(filter: &Filter, xml: &str) -> bool {
    let Filter::XPaths(paths) = filter else {
        return true;
    };
    let Ok(ctx) = l45_yang::context() else {
        return false;
    };
    let tree = match DataTree::parse_op_string(
        ctx,
        xml,
        DataFormat::XML,
        DataOperation::NotificationYang,
    ) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "a notification does not parse; a filtered subscription skips it");
            return false;
        }
    };
    paths.iter().any(|p| {
        tree.find_xpath(p)
            .map(|mut set| set.next().is_some())
            .unwrap_or(false)
    })
}

impl StreamSub {
    /// The message for `ev`, if this subscriber gets it.
    fn render(&self, agent: &Agent, ev: &Event) -> Option<String> {
        (agent.may_receive(&self.user, ev) && selects(&self.filter, &ev.xml))
            .then(|| notification_message(ev.time, &ev.xml))
    }

    fn replay_done(&self) -> String {
        let content = match self.kind {
            Kind::Rfc5277 => format!("<replayComplete xmlns=\"{NC_NOTIFICATIONS_NS}\"/>"),
            _ => format!(
                "<replay-completed xmlns=\"{SN_NS}\"><id>{}</id></replay-completed>",
                self.id
            ),
        };
        notification_message(SystemTime::now(), &content)
    }

    /// RFC 5277's end of a subscription with a stop time. (RFC 8639's
    /// `subscription-completed` is for configured subscriptions only.)
    fn complete(&self) -> Option<String> {
        (self.kind == Kind::Rfc5277).then(|| {
            notification_message(
                SystemTime::now(),
                &format!("<notificationComplete xmlns=\"{NC_NOTIFICATIONS_NS}\"/>"),
            )
        })
    }

    /// Runs the subscription: `replay` (from the log, taken together with
    /// `events` so nothing is missed or repeated), then live events.
    pub async fn run(
        self,
        agent: Arc<Agent>,
        replay: Vec<Event>,
        mut events: broadcast::Receiver<Event>,
        outbox: mpsc::Sender<String>,
    ) {
        let send = |msg: String| {
            let outbox = outbox.clone();
            async move { outbox.send(msg).await.is_ok() }
        };
        for ev in &replay {
            if let Some(msg) = self.render(&agent, ev) {
                if !send(msg).await {
                    return;
                }
            }
        }
        if self.replay && !send(self.replay_done()).await {
            return;
        }
        let stop_at = self.stop.map(|stop| {
            let left = stop.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::Instant::now() + left
        });
        loop {
            let ev = tokio::select! {
                ev = events.recv() => ev,
                _ = tokio::time::sleep_until(stop_at.unwrap_or_else(tokio::time::Instant::now)), if stop_at.is_some() => break,
            };
            match ev {
                Ok(ev) if self.stop.is_some_and(|s| ev.time > s) => break,
                Ok(ev) => {
                    if let Some(msg) = self.render(&agent, &ev) {
                        if !send(msg).await {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        subscription = self.id,
                        missed = n,
                        "subscriber fell behind; notifications lost"
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
        if let Some(msg) = self.complete() {
            send(msg).await;
        }
        agent.subscriptions.finished(self.session, self.id);
    }
}
