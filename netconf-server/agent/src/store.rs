//! The compact native store of `/l45:customizations/module`.
//!
//! A datastore ([`Ds`]) is a small libyang tree for everything else (NACM)
//! plus a `BTreeMap` from module id to the entry's canonical XML, exactly as
//! libyang prints it in `explicit` with-defaults mode (`<module>…</module>`,
//! ≈100 bytes instead of ≈6 KB of libyang nodes). Entries are immutable and
//! shared (`Arc<str>`) between running, candidate, startup and backups.
//!
//! The layout of an entry comes from the YANG schema, walked once
//! ([`ListSchema`]); values are checked by libyang's own type plugins
//! ([`l45_yang::StaticLeaf`]). [`fast_edit`] applies the common edit-config
//! shapes natively; it never reports an error: for anything it is not sure
//! about it answers `None` and the caller runs the general libyang path,
//! which produces the exact rpc-errors of before.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use l45_netconf_proto::message::BASE_NS;
use l45_netconf_proto::xml::{escape_text_cow, Element, NsDecl};
use l45_tap_control::{Attach, MatchRules, ModuleConfig, Protocol};
use l45_yang::StaticLeaf;
use yang3::context::Context;
use yang3::data::{Data, DataNodeRef, DataPrinterFlags, DataTree};
use yang3::schema::{DataValueType, SchemaNode, SchemaNodeKind};

use crate::edit::{EditOp, Touched};

pub const CUSTOMIZATIONS: &str = "/layer45-customization:customizations";
pub const L45_NS: &str = l45_yang::L45_NAMESPACE;
const L45: &str = L45_NS;

/// One module entry: its canonical XML (`<module><id>…</id>…</module>`).
pub type Entry = Arc<str>;
/// Module id → entry.
pub type ModuleMap = BTreeMap<u32, Entry>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("schema node {0} cannot be held by the native store")]
    UnsupportedSchema(String),
    #[error("stored entry is not valid XML: {0}")]
    BadEntry(String),
}

// ===== schema =====

/// One config leaf under `module` (the key excluded), in schema order.
#[derive(Debug)]
pub struct Leaf {
    pub name: String,
    /// Data containers between `module` and the leaf.
    pub parents: Vec<String>,
    pub check: StaticLeaf,
    /// Integer types: the value space (see [`Ints`]).
    pub ints: Option<Ints>,
    pub identity: bool,
    /// Value space small enough to cache checks (enum, boolean).
    pub small: bool,
    /// Default, canonical and as printed.
    pub default: Option<String>,
    pub mandatory: bool,
    /// Index into `ListSchema::cases` when the leaf is in a choice case.
    pub case: Option<usize>,
}

/// The `module` list as the schema defines it.
#[derive(Debug)]
pub struct ListSchema {
    pub key: StaticLeaf,
    key_ints: Option<Ints>,
    pub leaves: Vec<Leaf>,
    /// Data container paths (relative to `module`).
    pub containers: Vec<Vec<String>>,
    /// (choice name, case name, the case's data container name).
    pub cases: Vec<(String, String, Option<String>)>,
    l45_module: String,
    /// Leaf index → checked value → printed value (small domains only).
    cache: Mutex<HashMap<usize, HashMap<String, Option<String>>>>,
}

fn walk(
    node: &SchemaNode<'static>,
    parents: &mut Vec<String>,
    case: Option<usize>,
    schema: &mut ListSchema,
) -> Result<(), StoreError> {
    for child in node.children() {
        if !child.is_config() {
            continue;
        }
        match child.kind() {
            SchemaNodeKind::Leaf => {
                if child.is_list_key() {
                    continue;
                }
                let base = child.leaf_type().map(|t| t.base_type());
                let identity = matches!(base, Some(DataValueType::IdentityRef));
                if matches!(
                    base,
                    Some(DataValueType::LeafRef | DataValueType::InstanceId) | None
                ) {
                    return Err(StoreError::UnsupportedSchema(child.name().to_string()));
                }
                // (yang3 dereferences a missing default: ask has_default first)
                let default = child
                    .has_default()
                    .then(|| child.default_value_canonical())
                    .flatten()
                    .map(|d| {
                        if identity {
                            d.rsplit(':').next().unwrap_or(d).to_string()
                        } else {
                            d.to_string()
                        }
                    });
                schema.leaves.push(Leaf {
                    name: child.name().to_string(),
                    parents: parents.clone(),
                    check: StaticLeaf::new(&child),
                    ints: Ints::of(&child),
                    identity,
                    small: matches!(base, Some(DataValueType::Bool | DataValueType::Enum)),
                    default,
                    mandatory: child.is_mandatory(),
                    case,
                });
            }
            SchemaNodeKind::Container if child.is_np_container() => {
                parents.push(child.name().to_string());
                schema.containers.push(parents.clone());
                let mut case = case;
                if let Some(c) = case {
                    if schema.cases[c].2.is_none() {
                        schema.cases[c].2 = Some(child.name().to_string());
                    } else if parents.len() == 1 {
                        case = None;
                    }
                }
                walk(&child, parents, case, schema)?;
                parents.pop();
            }
            SchemaNodeKind::Choice => {
                if child.is_mandatory() || child.default_case().is_some() {
                    return Err(StoreError::UnsupportedSchema(child.name().to_string()));
                }
                for c in child.children() {
                    schema
                        .cases
                        .push((child.name().to_string(), c.name().to_string(), None));
                    let idx = schema.cases.len() - 1;
                    walk(&c, parents, Some(idx), schema)?;
                }
            }
            _ => return Err(StoreError::UnsupportedSchema(child.name().to_string())),
        }
    }
    Ok(())
}

impl ListSchema {
    /// Walks the schema of `module`; fails if it holds a node kind the
    /// store cannot keep (so a model change cannot silently lose data).
    pub fn build(ctx: &'static Context) -> Result<ListSchema, StoreError> {
        let list = ctx
            .find_path(&format!("{CUSTOMIZATIONS}/module"))
            .map_err(|e| StoreError::UnsupportedSchema(e.to_string()))?;
        let key = list
            .list_keys()
            .next()
            .ok_or_else(|| StoreError::UnsupportedSchema("module key".into()))?;
        if key.name() != "id" || list.list_keys().count() != 1 {
            return Err(StoreError::UnsupportedSchema("module key".into()));
        }
        let mut schema = ListSchema {
            key: StaticLeaf::new(&key),
            key_ints: Ints::of(&key),
            leaves: Vec::new(),
            containers: Vec::new(),
            cases: Vec::new(),
            l45_module: list.module().name().to_string(),
            cache: Mutex::new(HashMap::new()),
        };
        walk(&list, &mut Vec::new(), None, &mut schema)?;
        Ok(schema)
    }

    fn leaf_index(&self, parents: &[String], name: &str) -> Option<usize> {
        self.leaves
            .iter()
            .position(|l| l.name == name && l.parents == parents)
    }

    fn is_container(&self, path: &[String]) -> bool {
        self.containers.iter().any(|c| c == path)
    }

    /// Checks a value as libyang would parse it; `Some(printed value)`.
    fn check(&self, idx: usize, json_value: &str) -> Option<String> {
        let leaf = &self.leaves[idx];
        let check = || {
            let canon = leaf.check.canonical(json_value)?;
            if leaf.identity {
                let (module, name) = canon.split_once(':')?;
                (module == self.l45_module).then(|| name.to_string())
            } else {
                Some(canon)
            }
        };
        if let Some(ints) = &leaf.ints {
            if ints.accepts(json_value) {
                return Some(json_value.to_string());
            }
        }
        if !leaf.small && !leaf.identity {
            return check();
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = cache.get(&idx).and_then(|m| m.get(json_value)) {
            return v.clone();
        }
        let v = check();
        if cache.values().map(HashMap::len).sum::<usize>() < 4096 {
            cache
                .entry(idx)
                .or_default()
                .insert(json_value.to_string(), v.clone());
        }
        v
    }

    /// Canonical module id of a key value.
    pub fn key_of(&self, text: &str) -> Option<u32> {
        if self.key_ints.as_ref().is_some_and(|i| i.accepts(text)) {
            // (canonical already; a range beyond u32 falls through)
            if let Ok(id) = text.parse() {
                return Some(id);
            }
        }
        self.key.canonical(text)?.parse().ok()
    }
}

/// The value space of an integer leaf, read from the compiled schema, to
/// accept values already in canonical form (`0`, `[1-9][0-9]*`, with `-`
/// for signed types) without a libyang call: for those libyang's canonical
/// form is the text itself, and it accepts them exactly when they are in
/// the range. Anything else (leading zeros, `+`, spaces, out of range) is
/// left to libyang.
#[derive(Debug)]
pub struct Ints(Vec<(i128, i128)>);

impl Ints {
    fn of(node: &SchemaNode<'static>) -> Option<Ints> {
        l45_yang::integer_intervals(node).map(Ints)
    }

    /// Whether `text` is a canonical decimal inside the value space.
    pub fn accepts(&self, text: &str) -> bool {
        let digits = text.strip_prefix('-').unwrap_or(text);
        let canonical = !digits.is_empty()
            && digits.len() <= 20
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'))
            && text != "-0";
        if !canonical {
            return false;
        }
        let Ok(v) = text.parse::<i128>() else {
            return false;
        };
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&v))
    }
}

static SCHEMA: OnceLock<Result<ListSchema, String>> = OnceLock::new();

/// The schema of the module list in the process-wide context.
pub fn schema() -> Result<&'static ListSchema, String> {
    SCHEMA
        .get_or_init(|| {
            let ctx = l45_yang::context().map_err(|e| e.to_string())?;
            ListSchema::build(ctx).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

// ===== entries: slots ↔ XML =====

/// An entry taken apart: one optional printed value per schema leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slots {
    pub id: u32,
    pub values: Vec<Option<String>>,
}

impl Slots {
    fn empty(schema: &ListSchema, id: u32) -> Slots {
        Slots {
            id,
            values: vec![None; schema.leaves.len()],
        }
    }

    /// Cases with at least one value set.
    fn active_cases(&self, schema: &ListSchema) -> Vec<usize> {
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
    fn complete(&self, schema: &ListSchema) -> bool {
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

// ===== datastores =====

/// One datastore: the libyang tree of everything but the module list, and
/// the module entries.
pub struct Ds {
    pub rest: DataTree<'static>,
    pub modules: ModuleMap,
}

impl Ds {
    pub fn new(ctx: &'static Context) -> Ds {
        Ds {
            rest: DataTree::new(ctx),
            modules: ModuleMap::new(),
        }
    }

    /// A copy sharing every entry (O(n) pointer copies, no entry copies).
    pub fn share(&self) -> Result<Ds, yang3::Error> {
        Ok(Ds {
            rest: self.rest.duplicate()?,
            modules: self.modules.clone(),
        })
    }

    /// `<customizations>…</customizations>` of `modules`, or nothing when
    /// there is no entry (libyang prints no empty non-presence container).
    pub fn write_customizations(
        modules: &ModuleMap,
        with_keys: bool,
        out: &mut impl std::fmt::Write,
    ) -> std::fmt::Result {
        if modules.is_empty() {
            return Ok(());
        }
        write!(out, "<customizations xmlns=\"{L45}\">")?;
        for e in modules.values() {
            if !with_keys && Slots::has_security(e) {
                if let Ok(schema) = schema() {
                    if let Ok(s) = Slots::parse(schema, e) {
                        out.write_str(&s.to_xml(schema, false))?;
                        continue;
                    }
                }
            }
            out.write_str(e)?;
        }
        out.write_str("</customizations>")
    }

    /// The datastore as libyang XML (explicit mode), as running.xml holds it.
    pub fn to_xml(&self) -> Result<String, yang3::Error> {
        let mut text = l45_yang::print_xml(
            &self.rest,
            DataPrinterFlags::WD_EXPLICIT | DataPrinterFlags::SHRINK,
        )?;
        text.reserve(self.modules.values().map(|e| e.len()).sum::<usize>() + 128);
        let _ = Self::write_customizations(&self.modules, true, &mut text);
        Ok(text)
    }

    /// The whole datastore as one validated libyang tree (for the general
    /// paths: filters, `get` with state, `validate`).
    pub fn to_tree(&self, ctx: &'static Context) -> Result<DataTree<'static>, yang3::Error> {
        self.tree_of(ctx, self.modules.values())
    }

    /// The rest tree plus the given entries, validated.
    pub fn tree_of<'a>(
        &self,
        ctx: &'static Context,
        entries: impl Iterator<Item = &'a Entry>,
    ) -> Result<DataTree<'static>, yang3::Error> {
        let mut tree = self.rest.duplicate()?;
        let mut text = String::new();
        for e in entries {
            text.push_str(e);
        }
        if !text.is_empty() {
            let xml = format!("<customizations xmlns=\"{L45}\">{text}</customizations>");
            let part = DataTree::parse_string(
                ctx,
                &xml,
                yang3::data::DataFormat::XML,
                yang3::data::DataParserFlags::STRICT
                    | yang3::data::DataParserFlags::NO_STATE
                    | yang3::data::DataParserFlags::NO_VALIDATION,
                yang3::data::DataValidationFlags::empty(),
            )?;
            tree.merge(&part)?;
        }
        tree.validate(yang3::data::DataValidationFlags::NO_STATE)?;
        Ok(tree)
    }

    /// Splits a libyang tree into the native form.
    pub fn from_tree(tree: &DataTree<'static>) -> Result<Ds, yang3::Error> {
        let mut rest = tree.duplicate()?;
        let modules = entries_of(tree)?;
        if rest.find_path(CUSTOMIZATIONS).is_ok() {
            rest.remove(CUSTOMIZATIONS)?;
        }
        Ok(Ds { rest, modules })
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

pub fn module_path(id: u32) -> String {
    format!("{CUSTOMIZATIONS}/module[id='{id}']")
}

// ===== fast edit =====

/// What an edit does to the module list.
#[derive(Debug, Default)]
pub struct Delta {
    /// Every entry not in `changes` goes.
    pub clear: bool,
    /// id → new entry, or `None` to remove it.
    pub changes: BTreeMap<u32, Option<Entry>>,
    /// New entries' tap view, to skip re-parsing them for the tap (taken
    /// out, not copied, when the transaction is built). Sorted by id; each
    /// id has `Some` entry in `changes`.
    pub parsed: Vec<(u32, Parsed)>,
}

/// What the tap needs of a new entry.
#[derive(Debug)]
pub struct Parsed {
    pub config: ModuleConfig,
    /// Index in `ListSchema::cases` of the parameters' case, if any.
    pub case: Option<usize>,
}

/// Most `Touched` an edit reports (notifications summarise large edits by
/// their first entries).
pub const TOUCHED_MAX: usize = 100;

fn touch(touched: &mut Vec<Touched>, t: impl FnOnce() -> Touched) {
    if touched.len() < TOUCHED_MAX {
        touched.push(t());
    }
}

impl Delta {
    /// The entry `id` has after the delta, given its current one.
    pub fn after<'a>(&'a self, id: u32, current: Option<&'a Entry>) -> Option<&'a Entry> {
        match self.changes.get(&id) {
            Some(v) => v.as_ref(),
            None if self.clear => None,
            None => current,
        }
    }

    /// Applies the delta to a map.
    pub fn apply_to(self, map: &mut ModuleMap) {
        if self.clear {
            map.clear();
        }
        for (id, v) in self.changes {
            match v {
                Some(e) => {
                    map.insert(id, e);
                }
                None => {
                    map.remove(&id);
                }
            }
        }
    }

    /// The delta that turns `old` into `new` (entries compared by pointer
    /// first, then by text).
    pub fn between(old: &ModuleMap, new: &ModuleMap) -> Delta {
        let mut d = Delta::default();
        for (id, e) in new {
            match old.get(id) {
                Some(o) if Arc::ptr_eq(o, e) || o == e => {}
                _ => {
                    d.changes.insert(*id, Some(e.clone()));
                }
            }
        }
        for id in old.keys() {
            if !new.contains_key(id) {
                d.changes.insert(*id, None);
            }
        }
        d
    }
}

fn op_attr(el: &Element) -> Result<Option<EditOp>, ()> {
    let mut op = None;
    for a in &el.attrs {
        if a.name == "operation" && a.ns.as_deref() == Some(BASE_NS) {
            match EditOp::parse(&a.value) {
                Some(EditOp::None) | None => return Err(()),
                Some(o) => op = Some(o),
            }
        } else {
            return Err(());
        }
    }
    Ok(op)
}

fn has_op_below(el: &Element) -> bool {
    el.children
        .iter()
        .any(|c| !c.attrs.is_empty() || has_op_below(c))
}

/// Reads the leaves of a `module` element (its key excluded) into slots.
/// `None` for anything unusual.
fn read_leaves(
    schema: &ListSchema,
    el: &Element,
    scope: &[NsDecl],
    parents: &mut Vec<String>,
    slots: &mut Slots,
    seen: &mut Vec<bool>,
) -> Option<()> {
    for c in el.children.iter().skip(usize::from(parents.is_empty())) {
        if c.ns.as_deref() != Some(L45) || !c.attrs.is_empty() {
            return None;
        }
        let scope = c.scope_cow(scope);
        if let Some(i) = schema.leaf_index(parents, &c.name) {
            if !c.children.is_empty() || seen[i] {
                return None;
            }
            seen[i] = true;
            let text = c.text.as_str();
            if text.is_empty() || text.trim() != text {
                return None;
            }
            let json = if schema.leaves[i].identity {
                let (prefix, name) = match text.split_once(':') {
                    Some((p, n)) => (Some(p), n),
                    None => (None, text),
                };
                let ns = scope
                    .iter()
                    .rev()
                    .find(|(p, _)| p.as_deref() == prefix)
                    .map(|(_, u)| u.as_str())?;
                if ns != L45 {
                    return None;
                }
                format!("{}:{name}", schema.l45_module)
            } else {
                text.to_string()
            };
            slots.values[i] = Some(schema.check(i, &json)?);
        } else {
            parents.push(c.name.clone());
            if !schema.is_container(parents) || c.children.is_empty() {
                return None;
            }
            read_leaves(schema, c, &scope, parents, slots, seen)?;
            parents.pop();
        }
    }
    Some(())
}

/// Access the fast path may assume (NACM decided by the caller).
#[derive(Debug, Clone, Copy)]
pub struct WriteAccess {
    pub module: bool,
    pub keys: bool,
}

/// Applies an edit whose `<config>` holds only `customizations` natively.
/// `None` means: use the general path (which also produces every error).
/// `config_children` may be lazy (see `xml::parse_lazy`); their content is
/// then read from `source` one module at a time.
#[allow(clippy::too_many_arguments)]
pub fn fast_edit(
    schema: &ListSchema,
    current: &ModuleMap,
    source: &[u8],
    config_children: &[Element],
    scope: &[NsDecl],
    default_op: EditOp,
    access: WriteAccess,
) -> Option<(Delta, Vec<Touched>)> {
    let [cust] = config_children else {
        return None;
    };
    if !cust.is(L45, "customizations") || !access.module {
        return None;
    }
    let parent_scope = scope;
    let scope = cust.scope_for_children(scope);
    let attr = op_attr(cust).ok()?;
    let cop = attr.unwrap_or(default_op);
    let (no_children, attrs_below) = match cust.lazy {
        Some(l) => (l.children == 0, l.attributes_below),
        None => (cust.children.is_empty(), has_op_below(cust)),
    };
    let any_ops = attr.is_some() || attrs_below;
    let mut delta = Delta::default();
    let mut touched = Vec::new();
    // Container-level operations.
    let inherited = match cop {
        EditOp::Delete | EditOp::Remove => {
            if !no_children || (cop == EditOp::Delete && current.is_empty()) {
                return None;
            }
            delta.clear = true;
            if !current.is_empty() {
                touch(&mut touched, || Touched {
                    path: CUSTOMIZATIONS.into(),
                    op: cop,
                });
            }
            return Some((delta, touched));
        }
        EditOp::Create if !current.is_empty() => return None,
        EditOp::Create | EditOp::Replace => {
            if attrs_below {
                return None;
            }
            delta.clear = cop == EditOp::Replace;
            touch(&mut touched, || Touched {
                path: CUSTOMIZATIONS.into(),
                op: cop,
            });
            EditOp::Replace
        }
        EditOp::Merge | EditOp::None => {
            if !any_ops {
                if cop == EditOp::None {
                    // Nothing is created or changed; values still get checked.
                } else if no_children {
                    touch(&mut touched, || Touched {
                        path: CUSTOMIZATIONS.into(),
                        op: EditOp::Merge,
                    });
                }
            } else if cop == EditOp::Merge && current.is_empty() {
                touch(&mut touched, || Touched {
                    path: CUSTOMIZATIONS.into(),
                    op: EditOp::Create,
                });
            }
            cop
        }
    };
    let plain_merge = !any_ops && cop == EditOp::Merge;
    let mut seen_ids = std::collections::HashSet::new();
    // Collected unordered, sorted once at the end (a bulk-built map is
    // cheaper than 100k single inserts).
    let mut changes: Vec<(u32, Option<Entry>)> = Vec::new();
    let mut parsed_all: Vec<(u32, Parsed)> = Vec::new();
    let clear = delta.clear;
    let mut one = |m: &Element| -> Option<()> {
        if !m.is(L45, "module") {
            return None;
        }
        let mop = op_attr(m).ok()?.unwrap_or(inherited);
        let scope = m.scope_cow(&scope);
        let id_el = m.children.first().filter(|c| c.is(L45, "id"))?;
        if !id_el.attrs.is_empty() || !id_el.children.is_empty() {
            return None;
        }
        let id = schema.key_of(&id_el.text)?;
        if !seen_ids.insert(id) {
            return None;
        }
        let mut slots = Slots::empty(schema, id);
        let mut seen = vec![false; schema.leaves.len()];
        read_leaves(schema, m, &scope, &mut Vec::new(), &mut slots, &mut seen)?;
        let has_key =
            schema.leaves.iter().zip(&slots.values).any(|(l, v)| {
                v.is_some() && l.parents.first().map(String::as_str) == Some("security")
            });
        if has_key && !access.keys {
            return None;
        }
        let existing = if clear { None } else { current.get(&id) };
        let path = || module_path(id);
        let new_slots = match mop {
            EditOp::None => return Some(()),
            EditOp::Delete | EditOp::Remove => {
                if existing.is_none() {
                    if mop == EditOp::Delete {
                        return None;
                    }
                    return Some(());
                }
                changes.push((id, None));
                touch(&mut touched, || Touched {
                    path: path(),
                    op: mop,
                });
                return Some(());
            }
            EditOp::Create if existing.is_some() => return None,
            EditOp::Create | EditOp::Replace => {
                // Children of a created or replaced container are inserted
                // with it and not reported one by one (as before).
                if !matches!(cop, EditOp::Create | EditOp::Replace) {
                    touch(&mut touched, || Touched {
                        path: path(),
                        op: mop,
                    });
                }
                slots
            }
            EditOp::Merge => {
                let mut base = match existing {
                    Some(e) => Slots::parse(schema, e).ok()?,
                    None => Slots::empty(schema, id),
                };
                if plain_merge {
                    touch(&mut touched, || Touched {
                        path: path(),
                        op: EditOp::Merge,
                    });
                } else if existing.is_none() {
                    touch(&mut touched, || Touched {
                        path: path(),
                        op: EditOp::Create,
                    });
                }
                for (i, v) in slots.values.into_iter().enumerate() {
                    if let Some(v) = v {
                        if !plain_merge {
                            touch(&mut touched, || {
                                let l = &schema.leaves[i];
                                let mut p = path();
                                for c in &l.parents {
                                    p.push('/');
                                    p.push_str(c);
                                }
                                p.push('/');
                                p.push_str(&l.name);
                                Touched {
                                    path: p,
                                    op: EditOp::Merge,
                                }
                            });
                        }
                        base.values[i] = Some(v);
                    }
                }
                base
            }
        };
        if !new_slots.complete(schema) {
            return None;
        }
        // A merge that moves the parameters to another case is left to
        // libyang (it removes the old case).
        if let Some(e) = existing {
            if mop == EditOp::Merge {
                let old = Slots::parse(schema, e).ok()?;
                let (a, b) = (old.active_cases(schema), new_slots.active_cases(schema));
                if !a.is_empty() && a != b {
                    return None;
                }
            }
        }
        let xml: Entry = Arc::from(new_slots.to_xml(schema, true));
        let parsed = Parsed {
            config: new_slots.module_config(schema),
            case: new_slots.parameters_case_index(schema),
        };
        parsed_all.push((id, parsed));
        changes.push((id, Some(xml)));
        Some(())
    };
    if cust.lazy.is_some() {
        let mut ok = true;
        let read = l45_netconf_proto::xml::for_each_child(source, cust, parent_scope, |m| {
            ok = one(m).is_some();
            ok
        });
        if read.is_err() || !ok {
            return None;
        }
    } else {
        for m in &cust.children {
            one(m)?;
        }
    }
    // (ids are unique: `seen_ids`)
    changes.sort_unstable_by_key(|(id, _)| *id);
    parsed_all.sort_unstable_by_key(|(id, _)| *id);
    delta.changes = changes.into_iter().collect();
    delta.parsed = parsed_all;
    Some((delta, touched))
}

#[cfg(test)]
mod tests {
    use super::*;
    use yang3::data::{DataFormat, DataParserFlags, DataValidationFlags};

    fn ctx() -> &'static Context {
        l45_yang::context().expect("context")
    }

    fn tree(xml: &str) -> DataTree<'static> {
        let mut t = DataTree::parse_string(
            ctx(),
            xml,
            DataFormat::XML,
            DataParserFlags::STRICT | DataParserFlags::NO_STATE,
            DataValidationFlags::NO_STATE,
        )
        .expect("parse");
        t.validate(DataValidationFlags::NO_STATE).expect("valid");
        t
    }

    fn config(body: &str) -> Element {
        let src = format!(
            "<config xmlns=\"{BASE_NS}\" xmlns:nc=\"{BASE_NS}\"><customizations xmlns=\"{L45}\" xmlns:l45=\"{L45}\">{body}</customizations></config>"
        );
        l45_netconf_proto::xml::parse(src.as_bytes()).expect("xml")
    }

    const ALL: WriteAccess = WriteAccess {
        module: true,
        keys: true,
    };

    const RICH: &str = "<module><id>7</id><name>a &amp; &lt;b&gt; \"c\"</name><kind>l45:stream-tag</kind><priority>100</priority><activated>false</activated><attach>immediate</attach><match><protocol>tcp</protocol><source-address>10.0.0.0/8</source-address><destination-port>53</destination-port><process-name>dig</process-name></match><security><key>AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=</key></security><parameters><stream-tag><tag>TT</tag><interval>0100</interval></stream-tag></parameters></module>";

    #[test]
    fn schema_walk_finds_every_config_leaf() {
        let s = schema().expect("schema");
        let names: Vec<&str> = s.leaves.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            &names[..7],
            [
                "name",
                "kind",
                "priority",
                "activated",
                "deprecated",
                "attach",
                "protocol"
            ]
        );
        assert!(s
            .leaves
            .iter()
            .any(|l| l.name == "sha256" && l.case.is_some()));
        assert_eq!(s.cases.len(), 7);
    }

    #[test]
    fn native_integer_checks_agree_with_libyang() {
        let s = schema().expect("schema");
        let samples = [
            "0",
            "1",
            "7",
            "100",
            "255",
            "256",
            "65535",
            "65536",
            "4294967295",
            "4294967296",
            "18446744073709551615",
            "18446744073709551616",
            "-1",
            "-0",
            "00",
            "01",
            "+1",
            " 1",
            "1 ",
            "1.0",
            "",
            "-",
            "99999999999999999999999",
            "-128",
            "-129",
            "127",
            "128",
            "2147483647",
            "-2147483648",
            "-9223372036854775808",
            "9223372036854775807",
            "9223372036854775808",
        ];
        let mut ints = 0;
        for (i, leaf) in s.leaves.iter().enumerate() {
            let Some(native) = &leaf.ints else { continue };
            ints += 1;
            for v in samples {
                if native.accepts(v) {
                    assert_eq!(
                        leaf.check.canonical(v).as_deref(),
                        Some(v),
                        "{} {v}",
                        leaf.name
                    );
                    assert_eq!(s.check(i, v).as_deref(), Some(v));
                }
            }
            // Values libyang accepts in canonical form are accepted natively.
            for v in samples {
                if leaf.check.canonical(v).as_deref() == Some(v) {
                    assert!(native.accepts(v), "{} {v}", leaf.name);
                }
            }
        }
        assert!(ints >= 3, "priority, ports, ... are integers");
        let key = s.key_ints.as_ref().expect("the key is an integer");
        for v in samples {
            if key.accepts(v) {
                assert_eq!(s.key.canonical(v).as_deref(), Some(v), "id {v}");
            }
            if s.key.canonical(v).as_deref() == Some(v) {
                assert!(key.accepts(v), "id {v}");
            }
            assert_eq!(
                s.key_of(v),
                s.key.canonical(v).and_then(|c| c.parse().ok()),
                "id {v}"
            );
        }
    }

    #[test]
    fn fast_edit_output_is_byte_for_byte_libyang() {
        let s = schema().expect("schema");
        for body in [
            RICH.to_string(),
            "<module><id>1</id><kind>l45:dns-front-tag</kind><name>x</name></module>".into(),
            "<module><id>2</id><name>n</name><kind>l45:rate-limit</kind><parameters><rate-limit><delay>5</delay></rate-limit></parameters><deprecated>true</deprecated></module>".into(),
        ] {
            let el = config(&body);
            let (delta, _) =
                fast_edit(s, &ModuleMap::new(), b"", &el.children, &[], EditOp::Merge, ALL).expect("fast");
            let mut map = ModuleMap::new();
            delta.apply_to(&mut map);
            let mut native = String::new();
            Ds::write_customizations(&map, true, &mut native).unwrap();
            let src = format!("<customizations xmlns=\"{L45}\" xmlns:l45=\"{L45}\">{body}</customizations>");
            let lib = l45_yang::print_xml(&tree(&src), DataPrinterFlags::WD_EXPLICIT | DataPrinterFlags::SHRINK).unwrap();
            assert_eq!(native, lib);
            // and the libyang-printed entry is what the store keeps
            assert_eq!(entries_of(&tree(&src)).unwrap(), map);
        }
    }

    #[test]
    fn invalid_or_unusual_edits_take_the_general_path() {
        let s = schema().expect("schema");
        let mut current = ModuleMap::new();
        current.insert(
            1,
            Arc::from("<module><id>1</id><name>m</name><kind>dns-front-tag</kind></module>"),
        );
        for body in [
            "<module><id>2</id><name>x</name><kind>l45:dns-front-tag</kind><priority>70000</priority></module>",
            "<module><id>0</id><name>x</name><kind>l45:dns-front-tag</kind></module>",
            "<module><id>3</id><name>x</name></module>",
            "<module><id>3</id><name>x</name><kind>l45:nope</kind></module>",
            "<module><id>3</id><name>x</name><kind>l45:rate-limit</kind><parameters><rate-limit><delay>1</delay></rate-limit><stream-tag><interval>20</interval></stream-tag></parameters></module>",
            "<module nc:operation=\"create\"><id>1</id><name>x</name><kind>l45:dns-front-tag</kind></module>",
            "<module nc:operation=\"delete\"><id>9</id></module>",
            "<module><id>4</id><name>x</name><kind>l45:dns-front-tag</kind></module><module><id>4</id><name>y</name><kind>l45:dns-front-tag</kind></module>",
            "<bogus/>",
            "<module><id>5</id><name> x</name><kind>l45:dns-front-tag</kind></module>",
            "<module><id>5</id><name>x</name><kind>l45:dns-front-tag</kind><match/></module>",
        ] {
            let el = config(body);
            assert!(
                fast_edit(s, &current, b"", &el.children, &[], EditOp::Merge, ALL).is_none(),
                "{body}"
            );
        }
        let key = config(RICH);
        let no_keys = WriteAccess {
            module: true,
            keys: false,
        };
        assert!(fast_edit(s, &current, b"", &key.children, &[], EditOp::Merge, no_keys).is_none());
    }

    #[test]
    fn merge_delete_and_delta_leave_the_original_map_alone() {
        let s = schema().expect("schema");
        let mut current = ModuleMap::new();
        current.insert(
            1,
            Arc::from("<module><id>1</id><name>m</name><kind>dns-front-tag</kind></module>"),
        );
        let before = current.clone();
        let el = config("<module><id>1</id><priority>7</priority></module>");
        let (delta, touched) =
            fast_edit(s, &current, b"", &el.children, &[], EditOp::Merge, ALL).unwrap();
        assert_eq!(current, before, "the edit changes nothing until applied");
        assert_eq!(touched[0].path, module_path(1));
        delta.apply_to(&mut current);
        assert_eq!(&*current[&1], "<module><id>1</id><name>m</name><kind>dns-front-tag</kind><priority>7</priority></module>");
        let del = config("<module nc:operation=\"delete\"><id>1</id></module>");
        let (delta, _) =
            fast_edit(s, &current, b"", &del.children, &[], EditOp::Merge, ALL).unwrap();
        delta.apply_to(&mut current);
        assert!(current.is_empty());
    }

    #[test]
    fn module_config_matches_tapbridge_reading_libyang() {
        let s = schema().expect("schema");
        let src =
            format!("<customizations xmlns=\"{L45}\" xmlns:l45=\"{L45}\">{RICH}</customizations>");
        let t = tree(&src);
        let from_libyang = crate::tapbridge::module_config(&t, 7).unwrap();
        let map = entries_of(&t).unwrap();
        let native = Slots::parse(s, &map[&7]).unwrap().module_config(s);
        assert_eq!(native, from_libyang);
    }

    #[test]
    fn to_tree_round_trips() {
        let src =
            format!("<customizations xmlns=\"{L45}\" xmlns:l45=\"{L45}\">{RICH}</customizations>");
        let ds = Ds::from_tree(&tree(&src)).unwrap();
        let back = ds.to_tree(ctx()).unwrap();
        assert_eq!(
            l45_yang::print_xml(&back, DataPrinterFlags::WD_ALL).unwrap(),
            l45_yang::print_xml(&tree(&src), DataPrinterFlags::WD_ALL).unwrap()
        );
    }
}
