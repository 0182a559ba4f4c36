//! Notifications (RFC 5277): the agent's event stream, the config-change
//! notification (RFC 6470) and the model's module-registered/revoked,
//! security-check-failed and deprecated-module-idle events.

use std::collections::BTreeSet;
use std::time::SystemTime;

use l45_netconf_proto::xml::escape_text;
use l45_tap_control::{Change, ModuleState, Transaction};
use tokio::sync::broadcast;

use l45_tap_control::ModuleStats;
use yang3::context::Context;

use crate::config::edit::{EditOp, Touched, TOUCHED_MAX};
use crate::sessions::Actor;

const L45: &str = l45_yang::L45_MODULE;
const NC_NOTIF_NS: &str = "urn:ietf:params:xml:ns:yang:ietf-netconf-notifications";

/// A notification for subscribed sessions: content XML and event time.
#[derive(Debug, Clone)]
pub struct Event {
    pub time: SystemTime,
    pub xml: String,
    /// The YANG module and name of the notification (for NACM, RFC 8341
    /// 3.4.6).
    pub module: &'static str,
    pub name: &'static str,
}

/// The agent's event stream: every subscribed session gets every event.
pub struct Notifier {
    events: broadcast::Sender<Event>,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier {
            events: broadcast::channel(1024).0,
        }
    }
}

impl Notifier {
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn emit(&self, module: &'static str, name: &'static str, xml: String) {
        // (no subscriber is not an error)
        let _ = self.events.send(Event {
            module,
            name,
            time: SystemTime::now(),
            xml,
        });
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
        // Nobody subscribed: emit would drop every event (100k module
        // notifications after a load), so do not build them.
        if self.events.receiver_count() == 0 {
            return;
        }
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
        self.emit("ietf-netconf-notifications", "netconf-config-change", xml);
        for change in &txn.changes {
            match change {
                Change::Register(m) => self.emit(L45, "module-registered", format!(
                    "<module-registered xmlns=\"{}\"><id>{}</id><name>{}</name></module-registered>",
                    l45_yang::L45_NAMESPACE,
                    m.id,
                    escape_text(&m.name)
                )),
                Change::Unregister(id) => self.emit(L45, "module-revoked", format!(
                    "<module-revoked xmlns=\"{}\"><id>{}</id><reason>removed from running</reason></module-revoked>",
                    l45_yang::L45_NAMESPACE,
                    id
                )),
                Change::Update(_) => {}
            }
        }
    }
}
