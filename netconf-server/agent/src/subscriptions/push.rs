//! RFC 8641 YANG-push on the operational datastore: periodic
//! `push-update`s (the same data a `get` with the subscription's filter
//! returns to its user) and on-change `push-change-update`s of the module
//! list's state and the socket list.
//!
//! On-change keeps the last statistics and sockets it reported, compares
//! the tap's current ones natively (integers, no libyang) on every poll
//! and builds libyang data only for what changed, where NACM and the filter
//! decide what the subscriber sees, exactly as for a read.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use l45_netconf_proto::xml::escape_text;
use l45_tap_control::{ModuleStats, Protocol, SocketInfo};
use tokio::sync::{mpsc, watch};
use yang3::data::{Data, DataPrinterFlags, DataTree};

use super::{notification_message, YP_NS};
use crate::agent::Agent;
use crate::datastore::CUSTOMIZATIONS;
use crate::datastore::L45;
use crate::error::OpError;
use crate::filter::Filter;
use crate::nacm::{Access, Nacm};
use crate::sessions::SessionInfo;

/// The shortest time between two polls of the tap for on-change.
pub const ON_CHANGE_POLL: Duration = Duration::from_millis(200);

pub use super::spec::{Spec, Trigger};

/// What an on-change filter can select, natively: module states (all or
/// some ids) and sockets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    /// `None`: no module state; `Some(None)`: every module's.
    pub modules: Option<Option<BTreeSet<u32>>>,
    pub sockets: bool,
    /// Every path selects whole `state` containers or socket entries (no
    /// single leaves): the selection can be rendered without libyang.
    pub whole: bool,
    /// Every path names `state` or the socket list (not the entries'
    /// configuration): a `get` with the filter returns exactly the
    /// selection.
    pub state_only: bool,
}

/// The on-change selection of `filter`, or `None` when it selects data
/// on-change does not cover (configuration, other modules' data).
pub fn on_change_selection(filter: &Filter) -> Option<Selection> {
    // An XPath filter names the module on every step, a subtree filter
    // only on the first.
    let prefixed = format!("{}:", l45_yang::L45_MODULE);
    let paths: Vec<String> = match filter {
        Filter::All => vec![String::new()],
        Filter::XPaths(p) => p
            .iter()
            .map(|p| p.replace(&prefixed, ""))
            .map(|p| p.strip_prefix("/customizations").map(str::to_owned))
            .collect::<Option<Vec<_>>>()?,
    };
    let mut sel = Selection {
        whole: true,
        state_only: true,
        ..Selection::default()
    };
    let add_ids = |sel: &mut Selection, ids: Option<u32>| match (&mut sel.modules, ids) {
        (Some(None), _) => {}
        (Some(Some(set)), Some(id)) => {
            set.insert(id);
        }
        (slot, Some(id)) => *slot = Some(Some(BTreeSet::from([id]))),
        (slot, None) => *slot = Some(None),
    };
    for p in &paths {
        if p.is_empty() {
            add_ids(&mut sel, None);
            sel.sockets = true;
            sel.state_only = false;
        } else if let Some(rest) = p.strip_prefix("/socket") {
            if !(rest.is_empty() || rest.starts_with('/') || rest.starts_with('[')) {
                return None;
            }
            sel.whole &= rest.is_empty();
            sel.state_only &= rest.is_empty();
            sel.sockets = true;
        } else if let Some(rest) = p.strip_prefix("/module") {
            let (id, rest) = match rest.strip_prefix("[id=") {
                Some(r) => {
                    let (id, r) = r.split_once(']')?;
                    let id = id.trim_matches(|c| c == '\'' || c == '"');
                    (Some(id.parse().ok()?), r)
                }
                None => (None, rest),
            };
            if !(rest.is_empty() || rest == "/state" || rest.starts_with("/state/")) {
                return None;
            }
            sel.whole &= !rest.starts_with("/state/");
            sel.state_only &= rest == "/state";
            add_ids(&mut sel, id);
        } else {
            return None;
        }
    }
    Some(sel)
}

/// What on-change last reported, each list sorted by id (a tick compares
/// two sorted lists: no hashing of 100k entries per poll).
#[derive(Default)]
struct Seen {
    modules: Vec<ModuleStats>,
    sockets: Vec<SocketInfo>,
}

impl Seen {
    fn now(agent: &Agent, sel: &Selection) -> Seen {
        let mut modules = match &sel.modules {
            None => Vec::new(),
            Some(None) => agent.tap.module_stats(),
            Some(Some(ids)) => agent
                .tap
                .module_stats()
                .into_iter()
                .filter(|m| ids.contains(&m.id))
                .collect(),
        };
        // (linear when the tap lists them in order already)
        modules.sort_unstable_by_key(|m| m.id);
        let mut sockets = if sel.sockets {
            agent.tap.sockets()
        } else {
            Vec::new()
        };
        sockets.sort_unstable_by_key(|s| s.id);
        Seen { modules, sockets }
    }

    fn module(&self, id: u32) -> Option<&ModuleStats> {
        self.modules
            .binary_search_by_key(&id, |m| m.id)
            .ok()
            .map(|i| &self.modules[i])
    }

    fn socket(&self, id: u64) -> Option<&SocketInfo> {
        self.sockets
            .binary_search_by_key(&id, |s| s.id)
            .ok()
            .map(|i| &self.sockets[i])
    }
}

/// A libyang tree of the given module states and sockets.
fn state_tree(
    ctx: &'static yang3::context::Context,
    modules: &[&ModuleStats],
    sockets: &[&SocketInfo],
) -> Result<DataTree<'static>, yang3::Error> {
    let mut tree = DataTree::new(ctx);
    for st in modules {
        let p = format!("{CUSTOMIZATIONS}/module[id='{}']/state", st.id);
        for (leaf, v) in crate::state::tap::module_state_leaves(st) {
            tree.new_path(&format!("{p}/{leaf}"), Some(&v), false)?;
        }
    }
    for sock in sockets {
        crate::state::tap::add_socket(&mut tree, sock)?;
    }
    Ok(tree)
}

/// `tree` as `user` may see it through `filter`.
fn visible(
    agent: &Agent,
    user: &str,
    filter: &Filter,
    mut tree: DataTree<'static>,
) -> Result<DataTree<'static>, OpError> {
    let nacm = Nacm::from_running(&agent.stores().running.rest);
    crate::ops::nacm_read_filter(&mut tree, user, &nacm);
    Ok(crate::filter::select(agent.ctx, &tree, filter)?)
}

/// Whether NACM lets `user` read the module list whole (no rule on single
/// nodes): then a whole-entity selection is rendered natively, as the
/// libyang path would give it, at a fraction of the cost.
fn reads_everything(agent: &Agent, user: &str) -> bool {
    let nacm = Nacm::from_running(&agent.stores().running.rest);
    nacm.data_rules(user, Access::Read).is_empty()
        && nacm.may(user, l45_yang::L45_MODULE, Access::Read, false)
}

/// A module's `state` container as XML (`ns`: with its namespace), as
/// the native `get` renders it (schema order, canonical values); `None`
/// when that renderer steps aside.
fn state_xml(st: &ModuleStats, ns: bool) -> Option<String> {
    let mut out = String::with_capacity(320);
    crate::state::entry_xml::push_entry_with_state("<module></module>", Some(st), &mut out)?;
    let state = out.strip_prefix("<module>")?.strip_suffix("</module>")?;
    Some(if ns {
        state.replacen("<state>", &format!("<state xmlns=\"{L45}\">"), 1)
    } else {
        state.to_string()
    })
}

/// A socket list entry as XML (`ns`: with its namespace).
fn socket_xml(s: &SocketInfo, ns: bool) -> String {
    let protocol = match s.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Any => "any",
    };
    let mut x = if ns {
        format!("<socket xmlns=\"{L45}\">")
    } else {
        "<socket>".to_string()
    };
    x.push_str(&format!("<id>{}</id><protocol>{protocol}</protocol>", s.id));
    for (end, addr) in [("source", s.source), ("destination", s.destination)] {
        if let Some(a) = addr {
            x.push_str(&format!(
                "<{end}-address>{}</{end}-address><{end}-port>{}</{end}-port>",
                a.ip(),
                a.port()
            ));
        }
    }
    x.push_str(&format!(
        "<pid>{}</pid><thread-name>{}</thread-name><process-name>{}</process-name>",
        s.pid,
        escape_text(&s.thread_name),
        escape_text(&s.process_name)
    ));
    for m in &s.modules {
        x.push_str(&format!("<module>{m}</module>"));
    }
    x.push_str("</socket>");
    x
}

/// A `push-update` of everything `seen` holds that `user` may see
/// (`native`: rendered without libyang, see [`reads_everything`]).
fn full_update(
    agent: &Agent,
    user: &str,
    filter: &Filter,
    id: u32,
    seen: &Seen,
    native: bool,
) -> Result<String, OpError> {
    let mut mods: Vec<&ModuleStats> = seen.modules.iter().collect();
    mods.sort_unstable_by_key(|m| m.id);
    let mut socks: Vec<&SocketInfo> = seen.sockets.iter().collect();
    socks.sort_unstable_by_key(|s| s.id);
    if native {
        if mods.is_empty() && socks.is_empty() {
            return Ok(push_update(id, ""));
        }
        let rendered = (|| {
            let mut data = format!("<customizations xmlns=\"{L45}\">");
            for m in &mods {
                let state = state_xml(m, false)?;
                data.push_str(&format!("<module><id>{}</id>{state}</module>", m.id));
            }
            for s in &socks {
                data.push_str(&socket_xml(s, false));
            }
            data.push_str("</customizations>");
            Some(data)
        })();
        // (else the libyang path below)
        if let Some(data) = rendered {
            return Ok(push_update(id, &data));
        }
    }
    let tree = visible(agent, user, filter, state_tree(agent.ctx, &mods, &socks)?)?;
    let data = l45_yang::print_xml(&tree, DataPrinterFlags::SHRINK)?;
    Ok(push_update(id, &data))
}

/// One YANG-patch edit of a push-change-update.
struct Edit {
    operation: &'static str,
    /// RESTCONF data-resource target (RFC 8072).
    target: String,
    value: Option<String>,
}

fn module_target(id: u32) -> String {
    format!("{CUSTOMIZATIONS}/module={id}/state")
}

fn socket_target(id: u64) -> String {
    format!("{CUSTOMIZATIONS}/socket={id}")
}

/// The edits between `before` and `after` that `user` may see (`native`:
/// rendered without libyang, see [`reads_everything`]).
fn diff(
    agent: &Agent,
    user: &str,
    filter: &Filter,
    before: &Seen,
    after: &Seen,
    native: bool,
) -> Result<Vec<Edit>, OpError> {
    let changed: Vec<&ModuleStats> = after
        .modules
        .iter()
        .filter(|m| before.module(m.id) != Some(*m))
        .collect();
    let gone: Vec<&ModuleStats> = before
        .modules
        .iter()
        .filter(|m| after.module(m.id).is_none())
        .collect();
    let changed_socks: Vec<&SocketInfo> = after
        .sockets
        .iter()
        .filter(|s| before.socket(s.id) != Some(*s))
        .collect();
    let gone_socks: Vec<&SocketInfo> = before
        .sockets
        .iter()
        .filter(|s| after.socket(s.id).is_none())
        .collect();
    let mut edits = Vec::new();
    let op = |known: bool| if known { "replace" } else { "create" };
    // Natively unless the state renderer steps aside (then libyang below).
    let states: Option<Vec<String>> = if native {
        changed.iter().map(|m| state_xml(m, true)).collect()
    } else {
        None
    };
    if let Some(states) = states {
        let mut changed: Vec<(&ModuleStats, String)> = changed.into_iter().zip(states).collect();
        changed.sort_unstable_by_key(|(m, _)| m.id);
        for (m, state) in changed {
            edits.push(Edit {
                operation: op(before.module(m.id).is_some()),
                target: module_target(m.id),
                value: Some(state),
            });
        }
        let mut changed_socks = changed_socks;
        changed_socks.sort_unstable_by_key(|s| s.id);
        for s in changed_socks {
            edits.push(Edit {
                operation: op(before.socket(s.id).is_some()),
                target: socket_target(s.id),
                value: Some(socket_xml(s, true)),
            });
        }
        let mut gone: Vec<u32> = gone.iter().map(|m| m.id).collect();
        gone.sort_unstable();
        edits.extend(gone.into_iter().map(|id| Edit {
            operation: "delete",
            target: module_target(id),
            value: None,
        }));
        let mut gone_socks: Vec<u64> = gone_socks.iter().map(|s| s.id).collect();
        gone_socks.sort_unstable();
        edits.extend(gone_socks.into_iter().map(|id| Edit {
            operation: "delete",
            target: socket_target(id),
            value: None,
        }));
        return Ok(edits);
    }
    if !changed.is_empty() || !changed_socks.is_empty() {
        let tree = visible(
            agent,
            user,
            filter,
            state_tree(agent.ctx, &changed, &changed_socks)?,
        )?;
        let mut ids: Vec<u32> = changed.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        for id in ids {
            let path = format!("{CUSTOMIZATIONS}/module[id='{id}']/state");
            if let Ok(node) = tree.find_path(&path) {
                let op = if before.module(id).is_some() {
                    "replace"
                } else {
                    "create"
                };
                edits.push(Edit {
                    operation: op,
                    target: module_target(id),
                    value: Some(l45_yang::print_node_xml(&node, DataPrinterFlags::SHRINK)?),
                });
            }
        }
        let mut sids: Vec<u64> = changed_socks.iter().map(|s| s.id).collect();
        sids.sort_unstable();
        for id in sids {
            let path = format!("{CUSTOMIZATIONS}/socket[id='{id}']");
            if let Ok(node) = tree.find_path(&path) {
                let op = if before.socket(id).is_some() {
                    "replace"
                } else {
                    "create"
                };
                edits.push(Edit {
                    operation: op,
                    target: socket_target(id),
                    value: Some(l45_yang::print_node_xml(&node, DataPrinterFlags::SHRINK)?),
                });
            }
        }
    }
    if !gone.is_empty() || !gone_socks.is_empty() {
        // A removal is reported only when the subscriber could see what
        // went.
        let tree = visible(
            agent,
            user,
            filter,
            state_tree(agent.ctx, &gone, &gone_socks)?,
        )?;
        let mut ids: Vec<u32> = gone.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        for id in ids {
            let path = format!("{CUSTOMIZATIONS}/module[id='{id}']/state");
            if tree.find_path(&path).is_ok() {
                edits.push(Edit {
                    operation: "delete",
                    target: module_target(id),
                    value: None,
                });
            }
        }
        let mut sids: Vec<u64> = gone_socks.iter().map(|s| s.id).collect();
        sids.sort_unstable();
        for id in sids {
            if tree
                .find_path(&format!("{CUSTOMIZATIONS}/socket[id='{id}']"))
                .is_ok()
            {
                edits.push(Edit {
                    operation: "delete",
                    target: socket_target(id),
                    value: None,
                });
            }
        }
    }
    Ok(edits)
}

fn push_change_update(id: u32, patch: u64, edits: &[Edit]) -> String {
    let mut xml = format!(
        "<push-change-update xmlns=\"{YP_NS}\"><id>{id}</id><datastore-changes><yang-patch><patch-id>{patch}</patch-id>"
    );
    for (i, e) in edits.iter().enumerate() {
        xml.push_str(&format!(
            "<edit><edit-id>{}</edit-id><operation>{}</operation><target>{}</target>",
            i + 1,
            e.operation,
            escape_text(&e.target)
        ));
        if let Some(v) = &e.value {
            xml.push_str(&format!("<value>{v}</value>"));
        }
        xml.push_str("</edit>");
    }
    xml.push_str("</yang-patch></datastore-changes></push-change-update>");
    xml
}

fn push_update(id: u32, data: &str) -> String {
    format!(
        "<push-update xmlns=\"{YP_NS}\"><id>{id}</id><datastore-contents>{data}</datastore-contents></push-update>"
    )
}

/// The next periodic update time after `now`: `anchor + k * period`.
fn next_period(now: SystemTime, period: Duration, anchor: Option<SystemTime>) -> SystemTime {
    let Some(anchor) = anchor else {
        return now + period;
    };
    let p = period.as_nanos().max(1);
    match now.duration_since(anchor) {
        // anchor in the past: the next multiple after now
        Ok(since) => {
            let k = since.as_nanos() / p + 1;
            anchor + Duration::from_nanos(u64::try_from(k * p).unwrap_or(u64::MAX))
        }
        // anchor in the future: the first multiple after now, counted back
        Err(e) => {
            let until = e.duration().as_nanos();
            let k = until / p;
            anchor - Duration::from_nanos(u64::try_from(k * p).unwrap_or(0))
        }
    }
}

fn instant_of(t: SystemTime) -> tokio::time::Instant {
    tokio::time::Instant::now() + t.duration_since(SystemTime::now()).unwrap_or_default()
}

/// A running datastore subscription.
pub struct PushSub {
    pub id: u32,
    pub session: SessionInfo,
}

impl PushSub {
    /// Runs until the session ends, the subscription is deleted or killed
    /// (the task is aborted) or its stop time.
    pub async fn run(
        self,
        agent: Arc<Agent>,
        mut spec: watch::Receiver<Spec>,
        outbox: mpsc::Sender<String>,
    ) {
        let mut seen: Option<Seen> = None;
        let mut patch: u64 = 0;
        let mut resynced = 0;
        loop {
            let current = spec.borrow_and_update().clone();
            // A resync asks for a full update whatever sync-on-start said.
            let full_now = current.resync != resynced;
            resynced = current.resync;
            let stop_at = current.stop.map(instant_of);
            let wake = match &current.trigger {
                Trigger::Periodic { period, anchor } => {
                    instant_of(next_period(SystemTime::now(), *period, *anchor))
                }
                Trigger::OnChange { dampening, .. } if seen.is_none() => {
                    // The baseline (and sync-on-start's full update) at once.
                    let _ = dampening;
                    tokio::time::Instant::now()
                }
                Trigger::OnChange { dampening, .. } => {
                    tokio::time::Instant::now() + (*dampening).max(ON_CHANGE_POLL)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                changed = spec.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // New parameters: an on-change subscription reports
                    // against a new baseline of the new selection.
                    seen = None;
                    continue;
                }
                _ = tokio::time::sleep_until(stop_at.unwrap_or_else(tokio::time::Instant::now)), if stop_at.is_some() => {
                    agent.subscriptions.finished(self.session.id, self.id);
                    return;
                }
            }
            let (a, user, id) = (Arc::clone(&agent), self.session.username.clone(), self.id);
            let session = self.session.clone();
            let first = seen.is_none();
            let prev = seen.take().unwrap_or_default();
            let c = current.clone();
            let done = tokio::task::spawn_blocking(
                move || -> (Option<Seen>, Result<Option<String>, OpError>) {
                    match &c.trigger {
                        Trigger::Periodic { .. } => {
                            // A state-only selection a read shows whole is
                            // rendered natively; anything else is a `get`.
                            let native = on_change_selection(&c.filter)
                                .filter(|s| s.whole && s.state_only)
                                .filter(|_| reads_everything(&a, &user));
                            let msg = match native {
                                Some(sel) => full_update(
                                    &a,
                                    &user,
                                    &c.filter,
                                    id,
                                    &Seen::now(&a, &sel),
                                    true,
                                ),
                                None => a
                                    .operational_snapshot(&session, &c.filter)
                                    .map(|data| push_update(id, &data)),
                            };
                            (None, msg.map(Some))
                        }
                        Trigger::OnChange { sync_on_start, .. } => {
                            let Some(sel) = on_change_selection(&c.filter) else {
                                return (None, Ok(None));
                            };
                            let now = Seen::now(&a, &sel);
                            let native = sel.whole && reads_everything(&a, &user);
                            let msg = if first {
                                if *sync_on_start || full_now {
                                    full_update(&a, &user, &c.filter, id, &now, native).map(Some)
                                } else {
                                    Ok(None)
                                }
                            } else {
                                diff(&a, &user, &c.filter, &prev, &now, native).map(|edits| {
                                    (!edits.is_empty()).then(|| push_change_update(id, 0, &edits))
                                })
                            };
                            (Some(now), msg)
                        }
                    }
                },
            )
            .await;
            let (now, msg) = match done {
                Ok(r) => r,
                Err(_) => return,
            };
            seen = now;
            match msg {
                Ok(Some(mut content)) => {
                    if content.starts_with("<push-change-update") {
                        // Number the patches of this subscription.
                        content = content.replacen(
                            "<patch-id>0</patch-id>",
                            &format!("<patch-id>{patch}</patch-id>"),
                            1,
                        );
                        patch += 1;
                    }
                    if outbox
                        .send(notification_message(SystemTime::now(), &content))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(subscription = self.id, error = %e, "could not build a push update");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xp(paths: &[&str]) -> Filter {
        Filter::XPaths(paths.iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn on_change_covers_state_and_sockets_only() {
        let c = CUSTOMIZATIONS;
        assert_eq!(
            on_change_selection(&xp(&[&format!("{c}/module/state")])),
            Some(Selection {
                modules: Some(None),
                sockets: false,
                whole: true,
                state_only: true,
            })
        );
        assert_eq!(
            on_change_selection(&xp(&[
                &format!("{c}/module[id='5']/state/bytes-sent"),
                &format!("{c}/socket")
            ])),
            Some(Selection {
                modules: Some(Some(BTreeSet::from([5]))),
                sockets: true,
                whole: false,
                state_only: false,
            })
        );
        assert_eq!(
            on_change_selection(&xp(&[
                "/layer45-customization:customizations/layer45-customization:module[layer45-customization:id=7]/layer45-customization:state"
            ])),
            Some(Selection {
                modules: Some(Some(BTreeSet::from([7]))),
                sockets: false,
                whole: true,
                state_only: true,
            })
        );
        assert_eq!(
            on_change_selection(&xp(&[&format!("{c}/module/name")])),
            None
        );
        assert_eq!(on_change_selection(&xp(&["/ietf-netconf-acm:nacm"])), None);
    }

    #[test]
    fn native_rendering_is_what_libyang_prints() {
        let ctx = l45_yang::context().expect("context");
        let mut st = ModuleStats::idle(7, l45_tap_control::ModuleState::Active);
        st.bytes_sent = 42;
        st.active_ts = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_305_600));
        let sock = SocketInfo {
            id: 3,
            protocol: Protocol::Udp,
            source: Some("[::1]:40000".parse().unwrap()),
            destination: Some("127.0.0.1:53".parse().unwrap()),
            pid: 99,
            thread_name: "t<&>".into(),
            process_name: "dig".into(),
            modules: vec![7, 8],
        };
        let tree = state_tree(ctx, &[&st], &[&sock]).unwrap();
        let libyang = l45_yang::print_xml(&tree, DataPrinterFlags::SHRINK).unwrap();
        let native = format!(
            "<customizations xmlns=\"{L45}\"><module><id>7</id>{}</module>{}</customizations>",
            state_xml(&st, false).expect("renders"),
            socket_xml(&sock, false)
        );
        assert_eq!(native, libyang);
    }

    #[test]
    fn periods_follow_the_anchor() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let p = Duration::from_secs(10);
        assert_eq!(next_period(t0, p, None), t0 + p);
        assert_eq!(
            next_period(t0 + Duration::from_secs(3), p, Some(t0)),
            t0 + p
        );
        assert_eq!(
            next_period(t0, p, Some(t0 + Duration::from_secs(25))),
            t0 + Duration::from_secs(5)
        );
    }
}
