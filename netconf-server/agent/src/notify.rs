//! Notifications (RFC 5277): the agent's event stream, the config-change
//! notification (RFC 6470) and the model's module-registered/revoked,
//! security-check-failed, deprecated-module-idle and module-bypassed
//! events.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::SystemTime;

use l45_netconf_proto::xml::escape_text;
use l45_tap_control::{Bypass, Change, ModuleState, Protocol, Transaction};
use tokio::sync::broadcast;

use l45_tap_control::ModuleStats;
use yang3::context::Context;

use crate::config::edit::{EditOp, Touched, TOUCHED_MAX};
use crate::sessions::Actor;
use crate::subscriptions::log::{LogLimits, NotificationLog};
use crate::sync::guard;

const L45: &str = l45_yang::L45_MODULE;
const NC_NOTIF_NS: &str = "urn:ietf:params:xml:ns:yang:ietf-netconf-notifications";

pub use crate::subscriptions::log::Event;

/// The agent's event stream: every subscribed session gets every event,
/// and the replay log keeps the recent ones.
pub struct Notifier {
    events: broadcast::Sender<Event>,
    /// Held while an event is logged and sent, so a new subscriber's replay
    /// and live events meet without a gap or a repeat.
    log: Mutex<NotificationLog>,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier::new(NotificationLog::in_memory(LogLimits::default()))
    }
}

impl Notifier {
    pub fn new(log: NotificationLog) -> Notifier {
        Notifier {
            events: broadcast::channel(1024).0,
            log: Mutex::new(log),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// A receiver of the events from now on and, when `start` is given,
    /// the logged events from `start` (to `stop`) before them.
    pub fn subscribe_replay(
        &self,
        start: Option<SystemTime>,
        stop: Option<SystemTime>,
    ) -> (broadcast::Receiver<Event>, Vec<Event>) {
        let log = guard(&self.log);
        let replay = start.map(|s| log.replay(s, stop)).unwrap_or_default();
        (self.events.subscribe(), replay)
    }

    /// The replay log's creation time and, once it dropped events for its
    /// limits, the newest dropped event's time.
    pub fn log_times(&self) -> (SystemTime, Option<SystemTime>) {
        let log = guard(&self.log);
        (log.created(), log.aged())
    }

    fn emit(&self, module: &'static str, name: &'static str, xml: String) {
        self.emit_all(vec![(module, name, xml)]);
    }

    fn emit_all(&self, events: Vec<(&'static str, &'static str, String)>) {
        let time = SystemTime::now();
        let mut events: Vec<Event> = events
            .into_iter()
            .map(|(module, name, xml)| Event {
                seq: 0,
                time,
                xml,
                module: Cow::Borrowed(module),
                name: Cow::Borrowed(name),
            })
            .collect();
        let mut log = guard(&self.log);
        log.append_all(&mut events);
        for e in events {
            // (no subscriber is not an error)
            let _ = self.events.send(e);
        }
    }

    /// Emits `deprecated-module-idle` once for every deprecated module the
    /// tap reports attached to no socket (the NCO then revokes it).
    /// `announced` carries what was already announced between calls; a
    /// module that gains sockets again (or is revoked) is forgotten so it
    /// can be announced anew.
    pub fn idle_deprecated(&self, stats: &[ModuleStats], announced: &mut BTreeSet<u32>) {
        let mut idle = BTreeSet::new();
        for st in stats {
            if st.state == ModuleState::Deprecated && st.socket_count == 0 {
                idle.insert(st.id);
                if !announced.contains(&st.id) {
                    self.emit(
                        L45,
                        "deprecated-module-idle",
                        format!(
                        "<deprecated-module-idle xmlns=\"{}\"><id>{}</id></deprecated-module-idle>",
                        l45_yang::L45_NAMESPACE,
                        st.id
                    ),
                    );
                }
            }
        }
        *announced = idle;
    }

    /// Most `module-bypassed` notifications sent per call (per tick of
    /// the agent); the module's `bypassed` counter counts every one.
    pub const BYPASSES_PER_TICK: usize = 16;

    /// Emits `module-bypassed` for each of `found` (at most
    /// [`Self::BYPASSES_PER_TICK`]); returns how many were left out.
    pub fn module_bypassed(&self, found: &[Bypass]) -> usize {
        for b in found.iter().take(Self::BYPASSES_PER_TICK) {
            self.emit(L45, "module-bypassed", module_bypassed_xml(b));
        }
        found.len().saturating_sub(Self::BYPASSES_PER_TICK)
    }

    pub fn security_check_failed(&self, id: u32, reason: &str) {
        self.emit(L45, "security-check-failed", format!(
            "<security-check-failed xmlns=\"{}\"><id>{id}</id><reason>{}</reason></security-check-failed>",
            l45_yang::L45_NAMESPACE,
            escape_text(reason)
        ));
    }

    /// RFC 6470 `netconf-confirmed-commit`: `event` is start, extend,
    /// complete, cancel or timeout; `timeout` (seconds) with start and
    /// extend.
    pub fn confirmed_commit(&self, actor: &Actor<'_>, event: &str, timeout: Option<u32>) {
        let timeout = timeout
            .map(|t| format!("<timeout>{t}</timeout>"))
            .unwrap_or_default();
        self.emit(
            "ietf-netconf-notifications",
            "netconf-confirmed-commit",
            format!(
                "<netconf-confirmed-commit xmlns=\"{NC_NOTIF_NS}\"><username>{}</username><session-id>{}</session-id><confirm-event>{event}</confirm-event>{timeout}</netconf-confirmed-commit>",
                escape_text(actor.user),
                actor.session_id
            ),
        );
    }

    /// A confirmed commit's rollback failed (it is retried).
    pub fn rollback_failed(&self, attempt: u32, retry_in: u64, reason: &str) {
        self.emit(
            L45,
            "confirmed-commit-rollback-failed",
            format!(
                "<confirmed-commit-rollback-failed xmlns=\"{}\"><attempt>{attempt}</attempt><retry-in>{retry_in}</retry-in><reason>{}</reason></confirmed-commit-rollback-failed>",
                l45_yang::L45_NAMESPACE,
                escape_text(reason)
            ),
        );
    }

    pub fn config_change(
        &self,
        ctx: &Context,
        actor: &Actor<'_>,
        touched: &[Touched],
        txn: &Transaction,
    ) {
        let mut xml = format!(
            "<netconf-config-change xmlns=\"{NC_NOTIF_NS}\"><changed-by><username>{}</username><session-id>{}</session-id></changed-by><datastore>running</datastore>",
            escape_text(actor.user),
            actor.session_id
        );
        // Large edits are summarised by their first entries.
        for t in touched.iter().take(TOUCHED_MAX) {
            let p = crate::yangerr::xml_error_path(ctx, &t.path);
            let decls: String = p
                .namespaces
                .iter()
                .map(|(pre, uri)| format!(" xmlns:{pre}=\"{uri}\""))
                .collect();
            let op = match t.op {
                EditOp::None => "merge",
                other => other.as_str(),
            };
            xml.push_str(&format!(
                "<edit><target{decls}>{}</target><operation>{op}</operation></edit>",
                escape_text(&p.xpath)
            ));
        }
        xml.push_str("</netconf-config-change>");
        let mut events = vec![("ietf-netconf-notifications", "netconf-config-change", xml)];
        // With nobody subscribed, the events the replay log would drop at
        // once (a 100k-entry load) are not built at all.
        let mut changes: &[Change] = &txn.changes;
        if self.events.receiver_count() == 0 {
            let keep = guard(&self.log).max_events();
            changes = &changes[changes.len().saturating_sub(keep)..];
        }
        for change in changes {
            match change {
                Change::Register(m) => events.push((L45, "module-registered", format!(
                    "<module-registered xmlns=\"{}\"><id>{}</id><name>{}</name></module-registered>",
                    l45_yang::L45_NAMESPACE,
                    m.id,
                    escape_text(&m.name)
                ))),
                Change::Unregister(id) => events.push((L45, "module-revoked", format!(
                    "<module-revoked xmlns=\"{}\"><id>{}</id><reason>removed from running</reason></module-revoked>",
                    l45_yang::L45_NAMESPACE,
                    id
                ))),
                Change::Update(_) => {}
            }
        }
        self.emit_all(events);
    }
}

/// The `module-bypassed` notification's content.
fn module_bypassed_xml(b: &Bypass) -> String {
    let protocol = match b.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Any => "any",
    };
    let mut xml = format!(
        "<module-bypassed xmlns=\"{}\"><id>{}</id><reason>{}</reason><pid>{}</pid><process-name>{}</process-name><protocol>{protocol}</protocol>",
        l45_yang::L45_NAMESPACE,
        b.module,
        b.reason.as_str(),
        b.pid,
        escape_text(&b.process_name),
    );
    for (end, addr) in [("source", b.source), ("destination", b.destination)] {
        if let Some(a) = addr {
            xml.push_str(&format!(
                "<{end}-address>{}</{end}-address><{end}-port>{}</{end}-port>",
                a.ip(),
                a.port()
            ));
        }
    }
    xml.push_str("</module-bypassed>");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;
    use l45_tap_control::BypassReason;

    fn bypass(module: u32) -> Bypass {
        Bypass {
            module,
            reason: BypassReason::NotTapped,
            pid: 4242,
            process_name: "static<&>".into(),
            protocol: Protocol::Tcp,
            source: Some("[::1]:40000".parse().unwrap()),
            destination: None,
        }
    }

    #[test]
    fn module_bypassed_is_exact_and_valid_against_the_model() {
        let xml = module_bypassed_xml(&bypass(7));
        assert_eq!(
            xml,
            format!(
                "<module-bypassed xmlns=\"{}\"><id>7</id><reason>not-tapped</reason><pid>4242</pid>\
                 <process-name>static&lt;&amp;&gt;</process-name><protocol>tcp</protocol>\
                 <source-address>::1</source-address><source-port>40000</source-port></module-bypassed>",
                l45_yang::L45_NAMESPACE
            )
        );
        let ctx = l45_yang::context().expect("the model loads");
        let parse = |xml: &str| {
            yang3::data::DataTree::parse_op_string(
                ctx,
                xml,
                yang3::data::DataFormat::XML,
                yang3::data::DataOperation::NotificationYang,
            )
            .map(|_| ())
        };
        parse(&xml).expect("the model accepts the notification");
        let mut io_uring = bypass(8);
        io_uring.reason = BypassReason::IoUring;
        io_uring.destination = Some("10.0.0.1:53".parse().unwrap());
        parse(&module_bypassed_xml(&io_uring)).expect("io-uring with a peer");
        // The check can fail: a reason the model does not have.
        assert!(parse(&xml.replace("not-tapped", "static")).is_err());
    }

    #[test]
    fn a_burst_is_capped_per_tick() {
        let n = Notifier::default();
        let mut rx = n.subscribe();
        let found: Vec<Bypass> = (1..=20).map(bypass).collect();
        assert_eq!(n.module_bypassed(&found), 4);
        let mut got = 0;
        while let Ok(e) = rx.try_recv() {
            assert_eq!(e.name, "module-bypassed");
            got += 1;
        }
        assert_eq!(got, Notifier::BYPASSES_PER_TICK);
    }
}
