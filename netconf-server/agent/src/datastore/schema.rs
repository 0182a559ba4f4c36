//! The layout of a `module` entry, walked once from the YANG schema.
//!
//! [`ListSchema`] lists every config leaf under `/l45:customizations/module`
//! (the key excluded) in schema order, with its type check
//! ([`l45_yang::StaticLeaf`]), integer range ([`Ints`]), default, choice
//! case and whether it is mandatory. Building it fails on a node kind the
//! native store cannot hold, so a model change cannot silently lose data.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use l45_yang::StaticLeaf;
use yang3::context::Context;
use yang3::schema::{DataValueType, SchemaNode, SchemaNodeKind};

use super::{StoreError, CUSTOMIZATIONS};

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
    pub(crate) key_ints: Option<Ints>,
    pub leaves: Vec<Leaf>,
    /// Data container paths (relative to `module`).
    pub containers: Vec<Vec<String>>,
    /// (choice name, case name, the case's data container name).
    pub cases: Vec<(String, String, Option<String>)>,
    pub(crate) l45_module: String,
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

    pub(crate) fn leaf_index(&self, parents: &[String], name: &str) -> Option<usize> {
        self.leaves
            .iter()
            .position(|l| l.name == name && l.parents == parents)
    }

    pub(crate) fn is_container(&self, path: &[String]) -> bool {
        self.containers.iter().any(|c| c == path)
    }

    /// Checks a value as libyang would parse it; `Some(printed value)`.
    pub(crate) fn check(&self, idx: usize, json_value: &str) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
