//! One `module` entry: its canonical XML ([`Entry`]), taken apart into
//! one optional value per schema leaf ([`Slots`]) and read as the tap's
//! [`ModuleConfig`].

use std::collections::BTreeMap;
use std::sync::Arc;

use l45_netconf_proto::xml::{escape_text_cow, Element};
use l45_tap_control::{Attach, MatchRules, ModuleConfig, Protocol};
use yang3::data::{Data, DataNodeRef, DataPrinterFlags, DataTree};

use super::schema::ListSchema;
use super::{StoreError, CUSTOMIZATIONS, L45};

/// One module entry: its canonical XML (`<module><id>…</id>…</module>`),
/// exactly as libyang prints it in `explicit` with-defaults mode.
pub type Entry = Arc<str>;
/// Module id → entry.
pub type ModuleMap = BTreeMap<u32, Entry>;

pub fn module_path(id: u32) -> String {
    format!("{CUSTOMIZATIONS}/module[id='{id}']")
}

/// The `parameters` case a module kind takes.
pub fn parameters_case(kind: &str) -> Option<&'static str> {
    match kind {
        "installed-binary" => Some("installed"),
        other => l45_modules::Kind::from_name(other).map(l45_modules::Kind::parameter_container),
    }
}

/// An entry taken apart: one optional printed value per schema leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slots {
    pub id: u32,
    pub values: Vec<Option<String>>,
}

impl Slots {
    pub(crate) fn empty(schema: &ListSchema, id: u32) -> Slots {
        Slots {
            id,
            values: vec![None; schema.leaves.len()],
        }
    }

    /// Cases with at least one value set.
    pub(crate) fn active_cases(&self, schema: &ListSchema) -> Vec<usize> {
        let mut cases: Vec<usize> = schema
            .leaves
            .iter()
            .zip(&self.values)
            .filter(|(_, v)| v.is_some())
            .filter_map(|(l, _)| l.case)
            .collect();
        cases.dedup();
        cases
    }

    /// Mandatory leaves present and at most one case per choice.
    pub(crate) fn complete(&self, schema: &ListSchema) -> bool {
        let cases = self.active_cases(schema);
        let mut choices: Vec<&str> = cases.iter().map(|c| schema.cases[*c].0.as_str()).collect();
        choices.sort();
        let n = choices.len();
        choices.dedup();
        if choices.len() != n {
            return false;
        }
        schema.leaves.iter().zip(&self.values).all(|(l, v)| {
            !l.mandatory || v.is_some() || l.case.is_some_and(|c| !cases.contains(&c))
        })
    }

    /// The value in effect: explicit, or the default where libyang would
    /// instantiate one (outside cases, or in the active case).
    pub fn effective<'a>(&'a self, schema: &'a ListSchema, name: &str) -> Option<&'a str> {
        self.effective_in(schema, &self.active_cases(schema), name)
    }

    /// [`Slots::effective`] with the active cases already known.
    fn effective_in<'a>(
        &'a self,
        schema: &'a ListSchema,
        cases: &[usize],
        name: &str,
    ) -> Option<&'a str> {
        schema
            .leaves
            .iter()
            .zip(&self.values)
            .find(|(l, _)| l.name == name)
            .and_then(|(l, v)| match v {
                Some(v) => Some(v.as_str()),
                None if l.case.is_none_or(|c| cases.contains(&c)) => l.default.as_deref(),
                None => None,
            })
    }

    /// The entry's XML as libyang prints it (explicit mode, shrunk).
    pub fn to_xml(&self, schema: &ListSchema, with_keys: bool) -> String {
        let mut out = String::with_capacity(96);
        out.push_str("<module><id>");
        out.push_str(&self.id.to_string());
        out.push_str("</id>");
        let mut open: Vec<&str> = Vec::new();
        for (leaf, value) in schema.leaves.iter().zip(&self.values) {
            let Some(value) = value else { continue };
            if !with_keys && leaf.parents.first().map(String::as_str) == Some("security") {
                continue;
            }
            let common = open
                .iter()
                .zip(&leaf.parents)
                .take_while(|(a, b)| **a == b.as_str())
                .count();
            while open.len() > common {
                if let Some(c) = open.pop() {
                    out.push_str("</");
                    out.push_str(c);
                    out.push('>');
                }
            }
            for p in &leaf.parents[common..] {
                out.push('<');
                out.push_str(p);
                out.push('>');
                open.push(p);
            }
            out.push('<');
            out.push_str(&leaf.name);
            out.push('>');
            out.push_str(&escape_text_cow(value));
            out.push_str("</");
            out.push_str(&leaf.name);
            out.push('>');
        }
        while let Some(c) = open.pop() {
            out.push_str("</");
            out.push_str(c);
            out.push('>');
        }
        out.push_str("</module>");
        out
    }

    /// Reads an entry's XML back.
    pub fn parse(schema: &ListSchema, xml: &str) -> Result<Slots, StoreError> {
        let root = l45_netconf_proto::xml::parse(xml.as_bytes())
            .map_err(|e| StoreError::BadEntry(e.to_string()))?;
        let id = root
            .children
            .first()
            .filter(|c| c.name == "id")
            .and_then(|c| c.text.parse().ok())
            .ok_or_else(|| StoreError::BadEntry("no id".into()))?;
        let mut slots = Slots::empty(schema, id);
        fn fill(
            schema: &ListSchema,
            el: &Element,
            parents: &mut Vec<String>,
            slots: &mut Slots,
        ) -> Result<(), StoreError> {
            for c in &el.children {
                if parents.is_empty() && c.name == "id" {
                    continue;
                }
                if let Some(i) = schema.leaf_index(parents, &c.name) {
                    slots.values[i] = Some(c.text.clone());
                } else {
                    parents.push(c.name.clone());
                    if !schema.is_container(parents) {
                        return Err(StoreError::BadEntry(c.name.clone()));
                    }
                    fill(schema, c, parents, slots)?;
                    parents.pop();
                }
            }
            Ok(())
        }
        fill(schema, &root, &mut Vec::new(), &mut slots)?;
        Ok(slots)
    }

    /// Whether the entry has a value libyang would hide from readers
    /// without the NACM permit (the module key).
    pub fn has_security(xml: &str) -> bool {
        xml.contains("<security>")
    }

    /// The tap's view of the entry (what `tapbridge` read from libyang
    /// nodes, defaults included).
    pub fn module_config(&self, schema: &ListSchema) -> ModuleConfig {
        let cases = self.active_cases(schema);
        let get = |n: &str| self.effective_in(schema, &cases, n);
        let mut parameters = BTreeMap::new();
        for (leaf, v) in schema.leaves.iter().zip(&self.values) {
            if leaf.parents.first().map(String::as_str) != Some("parameters") {
                continue;
            }
            let v = match v {
                Some(v) => Some(v.clone()),
                None if leaf.case.is_none_or(|c| cases.contains(&c)) => leaf.default.clone(),
                None => None,
            };
            if let Some(v) = v {
                parameters.insert(leaf.name.clone(), v);
            }
        }
        let slot = |parent: &str, name: &str| -> Option<String> {
            schema
                .leaves
                .iter()
                .zip(&self.values)
                .find(|(l, _)| {
                    l.name == name && l.parents.first().map(String::as_str) == Some(parent)
                })
                .and_then(|(_, v)| v.clone())
        };
        use base64::Engine as _;
        ModuleConfig {
            id: self.id,
            name: get("name").unwrap_or_default().to_string(),
            kind: get("kind").unwrap_or_default().to_string(),
            priority: get("priority").and_then(|v| v.parse().ok()).unwrap_or(100),
            activated: get("activated").map(|v| v == "true").unwrap_or(true),
            deprecated: get("deprecated").map(|v| v == "true").unwrap_or(false),
            attach: if get("attach") == Some("immediate") {
                Attach::Immediate
            } else {
                Attach::NewSockets
            },
            matching: MatchRules {
                protocol: slot("match", "protocol").map(|v| match v.as_str() {
                    "tcp" => Protocol::Tcp,
                    "udp" => Protocol::Udp,
                    _ => Protocol::Any,
                }),
                source_address: slot("match", "source-address"),
                source_port: slot("match", "source-port").and_then(|v| v.parse().ok()),
                destination_address: slot("match", "destination-address"),
                destination_port: slot("match", "destination-port").and_then(|v| v.parse().ok()),
                thread_name: slot("match", "thread-name"),
                process_name: slot("match", "process-name"),
            },
            parameters,
            key: slot("security", "key").and_then(|k| {
                base64::engine::general_purpose::STANDARD
                    .decode(k.trim())
                    .ok()
            }),
        }
    }

    /// The data container of the case the parameters are in, if any.
    pub fn parameters_case<'s>(&self, schema: &'s ListSchema) -> Option<&'s str> {
        self.parameters_case_index(schema)
            .and_then(|c| schema.cases[c].2.as_deref())
    }

    /// Index in `schema.cases` of the case the parameters are in, if any.
    pub fn parameters_case_index(&self, schema: &ListSchema) -> Option<usize> {
        self.active_cases(schema)
            .first()
            .copied()
            .filter(|c| schema.cases[*c].2.is_some())
    }
}

/// Entry XML of one libyang `module` node.
pub fn entry_of(node: &DataNodeRef<'_>) -> Result<Entry, yang3::Error> {
    let text = l45_yang::print_node_xml(
        node,
        DataPrinterFlags::WD_EXPLICIT | DataPrinterFlags::SHRINK,
    )?;
    let head = format!("<module xmlns=\"{L45}\"");
    let text = match text.strip_prefix(&head) {
        Some(rest) => format!("<module{rest}"),
        None => text,
    };
    Ok(Arc::from(text))
}

/// The ids of the module entries in a libyang tree.
pub fn ids_in(tree: &DataTree<'static>) -> std::collections::HashSet<u32> {
    let Ok(container) = tree.find_path(CUSTOMIZATIONS) else {
        return Default::default();
    };
    container
        .children()
        .filter(|m| m.schema().name() == "module")
        .filter_map(|m| {
            m.list_keys()
                .next()
                .and_then(|k| k.value_canonical())
                .and_then(|v| v.parse().ok())
        })
        .collect()
}

/// Every module entry of a libyang tree.
pub fn entries_of(tree: &DataTree<'static>) -> Result<ModuleMap, yang3::Error> {
    let mut map = ModuleMap::new();
    if let Ok(container) = tree.find_path(CUSTOMIZATIONS) {
        for module in container.children() {
            if module.schema().name() != "module" {
                continue;
            }
            let id = module
                .list_keys()
                .next()
                .and_then(|k| k.value_canonical())
                .and_then(|v| v.parse().ok());
            if let Some(id) = id {
                map.insert(id, entry_of(&module)?);
            }
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::schema;
    use crate::testutil::{tree, L45, RICH};

    #[test]
    fn module_config_reads_every_leaf_kind() {
        let s = schema().expect("schema");
        let src =
            format!("<customizations xmlns=\"{L45}\" xmlns:l45=\"{L45}\">{RICH}</customizations>");
        let map = entries_of(&tree(&src)).expect("entries");
        let got = Slots::parse(s, &map[&7]).expect("slots").module_config(s);
        let want = ModuleConfig {
            id: 7,
            name: "a & <b> \"c\"".into(),
            kind: "stream-tag".into(),
            priority: 100,
            activated: false,
            deprecated: false,
            attach: Attach::Immediate,
            matching: MatchRules {
                protocol: Some(Protocol::Tcp),
                source_address: Some("10.0.0.0/8".into()),
                source_port: None,
                destination_address: None,
                destination_port: Some(53),
                thread_name: None,
                process_name: Some("dig".into()),
            },
            parameters: [("tag", "TT"), ("interval", "100")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            key: Some(vec![0; 32]),
        };
        assert_eq!(got, want);
        assert_eq!(
            parameters_case(&got.kind),
            Slots::parse(s, &map[&7]).expect("slots").parameters_case(s)
        );
    }
}
