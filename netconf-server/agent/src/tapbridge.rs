//! Between the YANG data and the tap: reads `module` list entries into
//! [`ModuleConfig`]s and turns a change of running into a [`Transaction`].

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use l45_tap_control::{Attach, Change, MatchRules, ModuleConfig, Protocol, Transaction};
use yang3::data::{Data, DataNodeRef, DataTree};

use crate::edit::Touched;

pub const CUSTOMIZATIONS: &str = "/layer45-customization:customizations";

fn module_path(id: u32) -> String {
    format!("{CUSTOMIZATIONS}/module[id='{id}']")
}

/// Module ids an edit touched; `None` when it touched the whole container.
pub fn touched_ids(touched: &[Touched]) -> Option<BTreeSet<u32>> {
    let mut ids = BTreeSet::new();
    for t in touched {
        let Some(rest) = t.path.strip_prefix(CUSTOMIZATIONS) else {
            continue;
        };
        if rest.is_empty() {
            return None;
        }
        if let Some(after) = rest.strip_prefix("/module[id='") {
            match after.split('\'').next().and_then(|s| s.parse().ok()) {
                Some(id) => {
                    ids.insert(id);
                }
                None => return None,
            }
        } else if rest.starts_with("/module") {
            return None;
        }
    }
    Some(ids)
}

/// Every module id in a tree.
pub fn all_ids(tree: &DataTree<'static>) -> BTreeSet<u32> {
    let mut ids = BTreeSet::new();
    if let Ok(container) = tree.find_path(CUSTOMIZATIONS) {
        for module in container.children() {
            if module.schema().name() != "module" {
                continue;
            }
            if let Some(id) = module
                .list_keys()
                .next()
                .and_then(|k| k.value_canonical())
                .and_then(|v| v.parse().ok())
            {
                ids.insert(id);
            }
        }
    }
    ids
}

/// The configuration of module `id` in `tree`, if present.
pub fn module_config(tree: &DataTree<'static>, id: u32) -> Option<ModuleConfig> {
    let node = tree.find_path(&module_path(id)).ok()?;
    Some(read_module(&node, id))
}

fn strip_module(v: &str) -> String {
    v.rsplit(':').next().unwrap_or(v).to_string()
}

fn read_module(node: &DataNodeRef<'_>, id: u32) -> ModuleConfig {
    let mut m = ModuleConfig {
        id,
        name: String::new(),
        kind: String::new(),
        priority: 100,
        activated: true,
        deprecated: false,
        attach: Attach::NewSockets,
        matching: MatchRules::default(),
        parameters: BTreeMap::new(),
        key: None,
    };
    for child in node.children() {
        let value = child.value_canonical().unwrap_or_default();
        match child.schema().name() {
            "name" => m.name = value,
            "kind" => m.kind = strip_module(&value),
            "priority" => m.priority = value.parse().unwrap_or(100),
            "activated" => m.activated = value == "true",
            "deprecated" => m.deprecated = value == "true",
            "attach" => {
                m.attach = if value == "immediate" {
                    Attach::Immediate
                } else {
                    Attach::NewSockets
                }
            }
            "match" => {
                for leaf in child.children() {
                    let v = leaf.value_canonical().unwrap_or_default();
                    let r = &mut m.matching;
                    match leaf.schema().name() {
                        "protocol" => {
                            r.protocol = Some(match v.as_str() {
                                "tcp" => Protocol::Tcp,
                                "udp" => Protocol::Udp,
                                _ => Protocol::Any,
                            })
                        }
                        "source-address" => r.source_address = Some(v),
                        "source-port" => r.source_port = v.parse().ok(),
                        "destination-address" => r.destination_address = Some(v),
                        "destination-port" => r.destination_port = v.parse().ok(),
                        "thread-name" => r.thread_name = Some(v),
                        "process-name" => r.process_name = Some(v),
                        _ => {}
                    }
                }
            }
            "security" => {
                for leaf in child.children() {
                    if leaf.schema().name() == "key" {
                        let text = leaf.value_canonical().unwrap_or_default();
                        m.key = base64::engine::general_purpose::STANDARD
                            .decode(text.trim())
                            .ok();
                    }
                }
            }
            "parameters" => {
                for kind in child.children() {
                    for leaf in kind.children() {
                        if let Some(v) = leaf.value_canonical() {
                            m.parameters.insert(leaf.schema().name().to_string(), v);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    m
}

/// The `parameters` case a module kind takes.
pub fn parameters_case(kind: &str) -> Option<&'static str> {
    match kind {
        "installed-binary" => Some("installed"),
        other => l45_modules::Kind::from_name(other).map(l45_modules::Kind::parameter_container),
    }
}

/// Checks that every registered or updated module's parameters fit its
/// kind (the YANG choice cannot tie the case to the kind leaf). Returns the
/// offending module id, kind and case.
pub fn check_parameters(
    tree: &DataTree<'static>,
    txn: &Transaction,
) -> Result<(), (u32, String, String)> {
    for change in &txn.changes {
        let m = match change {
            Change::Register(m) | Change::Update(m) => m,
            Change::Unregister(_) => continue,
        };
        let Ok(params) = tree.find_path(&format!("{}/parameters", module_path(m.id))) else {
            continue;
        };
        for case in params.children() {
            let name = case.schema().name().to_string();
            if parameters_case(&m.kind) != Some(name.as_str()) {
                return Err((m.id, m.kind.clone(), name));
            }
        }
    }
    Ok(())
}

/// The tap changes that turn `old` into `new`, looking only at `ids` (all
/// ids when `None`).
pub fn transaction(
    old: &DataTree<'static>,
    new: &DataTree<'static>,
    ids: Option<BTreeSet<u32>>,
) -> Transaction {
    let ids = ids.unwrap_or_else(|| {
        let mut all = all_ids(old);
        all.extend(all_ids(new));
        all
    });
    let mut changes = Vec::new();
    for id in ids {
        match (module_config(old, id), module_config(new, id)) {
            (None, Some(n)) => changes.push(Change::Register(n)),
            (Some(_), None) => changes.push(Change::Unregister(id)),
            (Some(o), Some(n)) if o != n => changes.push(Change::Update(n)),
            _ => {}
        }
    }
    Transaction { changes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit::EditOp;

    #[test]
    fn touched_ids_from_paths() {
        let t = |p: &str| Touched {
            path: p.to_string(),
            op: EditOp::Merge,
        };
        assert_eq!(
            touched_ids(&[
                t("/layer45-customization:customizations/module[id='4']/priority"),
                t("/ietf-netconf-acm:nacm")
            ]),
            Some([4].into_iter().collect())
        );
        assert_eq!(touched_ids(&[t(CUSTOMIZATIONS)]), None);
    }
}
