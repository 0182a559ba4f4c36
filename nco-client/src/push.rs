//! Monitoring by YANG-push (RFC 8641): `serve` subscribes on-change to the
//! module list's state of every agent that offers `ietf-yang-push`, next
//! to an RFC 8639 subscription to its NETCONF event stream, and writes
//! every pushed change into the CIB as a report; such a device is left out
//! of the polling monitor rounds while its subscription lives. Agents
//! without YANG-push are followed by `create-subscription` and polled.

use std::collections::BTreeMap;
use std::sync::Arc;

use l45_cib::{ModuleReport, ReportedState};
use l45_netconf_proto::xml::{self, Element};

use crate::device_xml::{self, L45_NS};
use crate::nco::{Nco, NcoError};
use crate::netconf::session::YANG_PUSH_NS;
use crate::netconf::{Notification, Session};

const DATASTORES_NS: &str = "urn:ietf:params:xml:ns:yang:ietf-datastores";

/// The two subscriptions of a monitored device: its event stream, and
/// on-change updates of every module's state (a full update first).
pub fn subscription_inputs() -> Vec<String> {
    vec![
        "<stream>NETCONF</stream>".to_string(),
        format!(
            "<datastore xmlns=\"{YANG_PUSH_NS}\" xmlns:ds=\"{DATASTORES_NS}\">ds:operational</datastore>\
             <datastore-xpath-filter xmlns=\"{YANG_PUSH_NS}\" xmlns:l45=\"{L45_NS}\">/l45:customizations/l45:module/l45:state</datastore-xpath-filter>\
             <on-change xmlns=\"{YANG_PUSH_NS}\"><sync-on-start>true</sync-on-start></on-change>"
        ),
    ]
}

/// A module's pushed `state` container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedState {
    pub module_id: u32,
    pub state: Option<ReportedState>,
    pub active_ts: Option<String>,
    pub socket_count: u32,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub errors: u64,
}

fn leaf<'a>(e: &'a Element, name: &str) -> Option<&'a str> {
    e.child(L45_NS, name).map(|c| c.trimmed_text())
}

fn num<T: std::str::FromStr + Default>(e: &Element, name: &str) -> T {
    leaf(e, name)
        .and_then(|t| t.parse().ok())
        .unwrap_or_default()
}

fn pushed_state(module_id: u32, state: &Element) -> PushedState {
    PushedState {
        module_id,
        state: leaf(state, "state").and_then(ReportedState::parse),
        active_ts: leaf(state, "active-ts").map(str::to_owned),
        socket_count: num(state, "socket-count"),
        bytes_sent: num(state, "bytes-sent"),
        bytes_received: num(state, "bytes-received"),
        messages_sent: num(state, "messages-sent"),
        messages_received: num(state, "messages-received"),
        errors: num(state, "errors"),
    }
}

/// What a pushed notification says about the module list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// `push-update`: every module's state (a module not in it is gone).
    Full(Vec<PushedState>),
    /// `push-change-update`: changed states, and ids whose state went.
    Changes {
        changed: Vec<PushedState>,
        gone: Vec<u32>,
    },
}

/// Parses a `push-update` or `push-change-update` body (`None` for any
/// other notification or one without the module list's shape).
pub fn parse_pushed(n: &Notification) -> Option<Pushed> {
    let (ns, name) = n.kind.as_ref()?;
    if ns != YANG_PUSH_NS {
        return None;
    }
    let root = xml::parse(n.body.as_bytes()).ok()?;
    match name.as_str() {
        "push-update" => {
            let mut all = Vec::new();
            let contents = root.child(YANG_PUSH_NS, "datastore-contents")?;
            for c in contents
                .children
                .iter()
                .filter(|c| c.is(L45_NS, "customizations"))
            {
                for m in c.children.iter().filter(|m| m.is(L45_NS, "module")) {
                    let Some(id) = leaf(m, "id").and_then(|t| t.parse().ok()) else {
                        continue;
                    };
                    if let Some(st) = m.child(L45_NS, "state") {
                        all.push(pushed_state(id, st));
                    }
                }
            }
            Some(Pushed::Full(all))
        }
        "push-change-update" => {
            let patch = root
                .child(YANG_PUSH_NS, "datastore-changes")?
                .child(YANG_PUSH_NS, "yang-patch")?;
            let (mut changed, mut gone) = (Vec::new(), Vec::new());
            for edit in patch.children.iter().filter(|e| e.is(YANG_PUSH_NS, "edit")) {
                let target = edit
                    .child(YANG_PUSH_NS, "target")
                    .map(|t| t.trimmed_text())
                    .unwrap_or("");
                // /layer45-customization:customizations/module=ID/state
                let Some(id) = target
                    .strip_prefix("/layer45-customization:customizations/module=")
                    .and_then(|r| r.strip_suffix("/state"))
                    .and_then(|id| id.parse::<u32>().ok())
                else {
                    continue;
                };
                let op = edit
                    .child(YANG_PUSH_NS, "operation")
                    .map(|o| o.trimmed_text())
                    .unwrap_or("");
                if op == "delete" || op == "remove" {
                    gone.push(id);
                } else if let Some(st) = edit
                    .child(YANG_PUSH_NS, "value")
                    .and_then(|v| v.child(L45_NS, "state"))
                {
                    changed.push(pushed_state(id, st));
                }
            }
            Some(Pushed::Changes { changed, gone })
        }
        _ => None,
    }
}

fn merge(r: &mut ModuleReport, p: &PushedState) {
    r.state = p.state;
    r.active_ts = p.active_ts.clone();
    r.socket_count = p.socket_count;
    r.bytes_sent = p.bytes_sent;
    r.bytes_received = p.bytes_received;
    r.messages_sent = p.messages_sent;
    r.messages_received = p.messages_received;
    r.errors = p.errors;
}

impl Nco {
    /// One device's report, read (the `report` RPC).
    pub(crate) async fn fetch_report(&self, device: &str) -> Result<Vec<ModuleReport>, NcoError> {
        let session = self.session(device).await?;
        let out = session.report().await.map_err(|source| NcoError::Device {
            device: device.to_string(),
            source,
        })?;
        device_xml::parse_report(&out).map_err(|e| NcoError::Report {
            device: device.to_string(),
            message: e.to_string(),
        })
    }

    /// Marks a device as followed by YANG-push (or no longer).
    pub(crate) fn set_pushing(&self, device: &str, on: bool) {
        let mut pushing = self.pushing.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            pushing.insert(device.to_string());
        } else {
            pushing.remove(device);
        }
    }

    /// Follows a device that offers YANG-push until its session ends: the
    /// device's modules as last pushed are kept here and recorded in the
    /// CIB as a whole report on every update (so missing and unknown
    /// modules raise their alerts as with `report`). A module the pushes
    /// name that the last `report` did not have (its configuration, such as
    /// `activated`, is not pushed) is read with one `report`.
    pub(crate) async fn follow_pushed(
        self: &Arc<Self>,
        device: &str,
        session: &Session,
    ) -> Result<(), NcoError> {
        let dev = |source| NcoError::Device {
            device: device.to_string(),
            source,
        };
        let (ids, mut rx) = session
            .establish_subscriptions(&subscription_inputs())
            .await
            .map_err(dev)?;
        tracing::info!(%device, subscriptions = ?ids, "following the device by YANG-push");
        let mut modules: BTreeMap<u32, ModuleReport> = self
            .fetch_report(device)
            .await?
            .into_iter()
            .map(|r| (r.module_id, r))
            .collect();
        self.set_pushing(device, true);
        while let Some(n) = rx.recv().await {
            if let Some(pushed) = parse_pushed(&n) {
                let (changed, gone, full) = match pushed {
                    Pushed::Full(all) => (all, Vec::new(), true),
                    Pushed::Changes { changed, gone } => (changed, gone, false),
                };
                if changed.iter().any(|p| !modules.contains_key(&p.module_id)) {
                    match self.fetch_report(device).await {
                        Ok(r) => modules = r.into_iter().map(|r| (r.module_id, r)).collect(),
                        Err(e) => tracing::warn!(%device, error = %e, "report for new modules"),
                    }
                }
                if full {
                    let present: std::collections::BTreeSet<u32> =
                        changed.iter().map(|p| p.module_id).collect();
                    modules.retain(|id, _| present.contains(id));
                }
                for id in gone {
                    modules.remove(&id);
                }
                for p in &changed {
                    if let Some(r) = modules.get_mut(&p.module_id) {
                        merge(r, p);
                    }
                }
                let reports: Vec<ModuleReport> = modules.values().cloned().collect();
                let outcome =
                    self.cib()
                        .record_report(device, &reports, l45_cib::Timestamp::now())?;
                tracing::debug!(%device, modules = reports.len(), ?outcome, "pushed state recorded");
                continue;
            }
            let Some((ns, name)) = &n.kind else { continue };
            if ns != device_xml::L45_NS {
                continue;
            }
            tracing::info!(%device, notification = %name, "device notification");
            // deprecated-module-idle needs nothing more: the pushed state
            // (no sockets) already queued the revoke.
            if name == "module-bypassed" {
                self.alert_bypassed(device, &n.body);
            }
        }
        self.set_pushing(device, false);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(name: &str, body: &str) -> Notification {
        Notification {
            event_time: "2026-12-06T00:00:00Z".into(),
            kind: Some((YANG_PUSH_NS.into(), name.into())),
            body: body.into(),
        }
    }

    #[test]
    fn push_updates_and_changes_parse() {
        let full = notification(
            "push-update",
            &format!(
                "<push-update xmlns=\"{YANG_PUSH_NS}\"><id>2</id><datastore-contents><customizations xmlns=\"{L45_NS}\">\
                 <module><id>7</id><state><state>active</state><socket-count>2</socket-count><bytes-sent>10</bytes-sent></state></module>\
                 </customizations></datastore-contents></push-update>"
            ),
        );
        let Some(Pushed::Full(all)) = parse_pushed(&full) else {
            panic!("a full update");
        };
        assert_eq!(all.len(), 1);
        assert_eq!(
            (all[0].module_id, all[0].socket_count, all[0].bytes_sent),
            (7, 2, 10)
        );
        assert_eq!(all[0].state, Some(ReportedState::Active));
        let change = notification(
            "push-change-update",
            &format!(
                "<push-change-update xmlns=\"{YANG_PUSH_NS}\"><id>2</id><datastore-changes><yang-patch><patch-id>0</patch-id>\
                 <edit><edit-id>1</edit-id><operation>replace</operation><target>/layer45-customization:customizations/module=7/state</target>\
                 <value><state xmlns=\"{L45_NS}\"><state>deprecated</state><socket-count>0</socket-count></state></value></edit>\
                 <edit><edit-id>2</edit-id><operation>delete</operation><target>/layer45-customization:customizations/module=8/state</target></edit>\
                 </yang-patch></datastore-changes></push-change-update>"
            ),
        );
        assert_eq!(
            parse_pushed(&change),
            Some(Pushed::Changes {
                changed: vec![PushedState {
                    module_id: 7,
                    state: Some(ReportedState::Deprecated),
                    active_ts: None,
                    socket_count: 0,
                    bytes_sent: 0,
                    bytes_received: 0,
                    messages_sent: 0,
                    messages_received: 0,
                    errors: 0,
                }],
                gone: vec![8],
            })
        );
    }
}
