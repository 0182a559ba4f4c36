//! The tap's view: per module state and counters, per tapped socket its
//! 5-tuple, process and attached modules.

use l45_tap_control::{ModuleStats, Protocol, SocketInfo};
use yang3::data::DataTree;

use crate::agent::Agent;
use crate::datastore::CUSTOMIZATIONS;
use crate::time::rfc3339;

/// The leaves of a module's `state` container (name, value as given to
/// libyang). The native `get` renders the same list (`state/entry_xml.rs`),
/// so a leaf belongs here, not in a `new_path` of its own.
pub(crate) fn module_state_leaves(st: &ModuleStats) -> Vec<(&'static str, String)> {
    let mut leaves = Vec::with_capacity(9);
    visit_module_state_leaves(st, |leaf, v| leaves.push((leaf, v.to_string())));
    leaves
}

/// A leaf value of [`visit_module_state_leaves`], as given to libyang by
/// its `Display`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StateValue {
    Text(&'static str),
    Count(u64),
    Time(std::time::SystemTime),
}

impl std::fmt::Display for StateValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateValue::Text(t) => f.write_str(t),
            StateValue::Count(n) => write!(f, "{n}"),
            StateValue::Time(t) => f.write_str(&rfc3339(*t)),
        }
    }
}

/// The leaves of [`module_state_leaves`] without building their text (the
/// native `get` writes them straight into the reply).
pub(crate) fn visit_module_state_leaves(
    st: &ModuleStats,
    mut leaf: impl FnMut(&'static str, StateValue),
) {
    leaf("state", StateValue::Text(st.state.as_str()));
    if let Some(ts) = st.active_ts {
        leaf("active-ts", StateValue::Time(ts));
    }
    for (name, v) in [
        ("socket-count", st.socket_count as u64),
        ("bypassed", st.bypassed),
        ("bytes-sent", st.bytes_sent),
        ("bytes-received", st.bytes_received),
        ("messages-sent", st.messages_sent),
        ("messages-received", st.messages_received),
        ("errors", st.errors),
    ] {
        leaf(name, StateValue::Count(v));
    }
}

/// Adds one entry of the socket list.
pub(crate) fn add_socket(
    tree: &mut DataTree<'static>,
    sock: &SocketInfo,
) -> Result<(), yang3::Error> {
    let p = format!("{CUSTOMIZATIONS}/socket[id='{}']", sock.id);
    let proto = match sock.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Any => "any",
    };
    tree.new_path(&format!("{p}/protocol"), Some(proto), false)?;
    for (end, addr) in [("source", sock.source), ("destination", sock.destination)] {
        if let Some(a) = addr {
            let ip = a.ip().to_string();
            tree.new_path(&format!("{p}/{end}-address"), Some(&ip), false)?;
            let port = a.port().to_string();
            tree.new_path(&format!("{p}/{end}-port"), Some(&port), false)?;
        }
    }
    tree.new_path(&format!("{p}/pid"), Some(&sock.pid.to_string()), false)?;
    tree.new_path(&format!("{p}/thread-name"), Some(&sock.thread_name), false)?;
    tree.new_path(
        &format!("{p}/process-name"),
        Some(&sock.process_name),
        false,
    )?;
    for id in &sock.modules {
        tree.new_path(&format!("{p}/module[.='{id}']"), None, false)?;
    }
    Ok(())
}

impl Agent {
    pub(super) fn add_tap_state(&self, tree: &mut DataTree<'static>) -> Result<(), yang3::Error> {
        let base = CUSTOMIZATIONS;
        // State only for the entries in the tree (a narrowed read has few).
        let present = crate::datastore::ids_in(tree);
        for st in self.tap.module_stats() {
            if !present.contains(&st.id) {
                continue;
            }
            let m = format!("{base}/module[id='{}']", st.id);
            let p = format!("{m}/state");
            for (leaf, v) in module_state_leaves(&st) {
                tree.new_path(&format!("{p}/{leaf}"), Some(&v), false)?;
            }
        }
        for sock in self.tap.sockets() {
            add_socket(tree, &sock)?;
        }
        Ok(())
    }
}
