//! The native engine: the common edit-config shapes on the module list,
//! computed on the stored entries without libyang trees. Each leaf is
//! checked by libyang's own type plugin ([`l45_yang::StaticLeaf`], small
//! domains cached, canonical integers against the compiled range). It never
//! reports an error: for anything it is not sure about it answers `None`
//! and [`super::compute`] runs the libyang engine, which produces the
//! rpc-errors. Byte-identical results to the libyang engine are checked by
//! the conformance suite (run with and without this engine).

use std::sync::Arc;

use l45_netconf_proto::message::BASE_NS;
use l45_netconf_proto::xml::{Element, NsDecl};

use super::touch;
use super::{EditOp, Touched};
use crate::config::delta::{Delta, Parsed};
use crate::datastore::entry::{module_path, Entry, ModuleMap, Slots};
use crate::datastore::schema::ListSchema;
use crate::datastore::{CUSTOMIZATIONS, L45};

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
                    .map(|(_, u)| &**u)?;
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

/// What the container-level operation leaves the module entries to do.
struct ContainerPlan {
    /// The operation a module without its own attribute gets.
    inherited: EditOp,
    /// Every entry not named goes (replace of the list).
    clear: bool,
    /// The container's own operation (or the default one).
    op: EditOp,
    /// No operation attribute anywhere, default merge: only values change.
    plain_merge: bool,
}

/// Decides the `<customizations>` element's own operation. `Err(None)`:
/// leave the edit to libyang; `Err(Some(..))`: the edit is complete.
fn plan_container(
    cust: &Element,
    current: &ModuleMap,
    default_op: EditOp,
    touched: &mut Vec<Touched>,
) -> Result<ContainerPlan, Option<Delta>> {
    let attr = op_attr(cust).map_err(|_| None)?;
    let cop = attr.unwrap_or(default_op);
    let (no_children, attrs_below) = match cust.lazy {
        Some(l) => (l.children == 0, l.attributes_below),
        None => (cust.children.is_empty(), has_op_below(cust)),
    };
    let any_ops = attr.is_some() || attrs_below;
    let container = |op| Touched {
        path: CUSTOMIZATIONS.into(),
        op,
    };
    let (inherited, clear) = match cop {
        EditOp::Delete | EditOp::Remove => {
            if !no_children || (cop == EditOp::Delete && current.is_empty()) {
                return Err(None);
            }
            if !current.is_empty() {
                touch(touched, || container(cop));
            }
            return Err(Some(Delta {
                clear: true,
                ..Delta::default()
            }));
        }
        EditOp::Create if !current.is_empty() => return Err(None),
        // (under `none`, a missing container is data-missing: libyang says so)
        EditOp::None if current.is_empty() => return Err(None),
        EditOp::Create | EditOp::Replace => {
            if attrs_below {
                return Err(None);
            }
            touch(touched, || container(cop));
            (EditOp::Replace, cop == EditOp::Replace)
        }
        EditOp::Merge | EditOp::None => {
            if !any_ops {
                // (under `none` nothing is created or changed; values
                // still get checked)
                if cop == EditOp::Merge && no_children {
                    touch(touched, || container(EditOp::Merge));
                }
            } else if cop == EditOp::Merge && current.is_empty() {
                touch(touched, || container(EditOp::Create));
            }
            (cop, false)
        }
    };
    Ok(ContainerPlan {
        inherited,
        clear,
        op: cop,
        plain_merge: !any_ops && cop == EditOp::Merge,
    })
}

/// The module entries of one native edit, computed one at a time.
struct ModuleEdits<'a> {
    schema: &'a ListSchema,
    current: &'a ModuleMap,
    access: WriteAccess,
    plan: ContainerPlan,
    seen_ids: std::collections::HashSet<u32>,
    // Collected unordered, sorted once at the end (a bulk-built map is
    // cheaper than 100k single inserts).
    changes: Vec<(u32, Option<Entry>)>,
    parsed: Vec<(u32, Parsed)>,
    touched: Vec<Touched>,
}

impl ModuleEdits<'_> {
    /// One `<module>` element; `None` leaves the whole edit to libyang.
    fn module(&mut self, m: &Element, scope: &[NsDecl]) -> Option<()> {
        let schema = self.schema;
        if !m.is(L45, "module") {
            return None;
        }
        let mop = op_attr(m).ok()?.unwrap_or(self.plan.inherited);
        let scope = m.scope_cow(scope);
        let id_el = m.children.first().filter(|c| c.is(L45, "id"))?;
        if !id_el.attrs.is_empty() || !id_el.children.is_empty() {
            return None;
        }
        let id = schema.key_of(&id_el.text)?;
        if !self.seen_ids.insert(id) {
            return None;
        }
        let mut slots = Slots::empty(schema, id);
        let mut seen = vec![false; schema.leaves.len()];
        read_leaves(schema, m, &scope, &mut Vec::new(), &mut slots, &mut seen)?;
        let has_key =
            schema.leaves.iter().zip(&slots.values).any(|(l, v)| {
                v.is_some() && l.parents.first().map(String::as_str) == Some("security")
            });
        if has_key && !self.access.keys {
            return None;
        }
        let existing = if self.plan.clear {
            None
        } else {
            self.current.get(&id)
        };
        let path = || module_path(id);
        let new_slots = match mop {
            // (a missing entry is data-missing: the libyang engine says so)
            EditOp::None if existing.is_none() => return None,
            EditOp::None => return Some(()),
            EditOp::Delete | EditOp::Remove => {
                if existing.is_none() {
                    return (mop == EditOp::Remove).then_some(());
                }
                self.changes.push((id, None));
                touch(&mut self.touched, || Touched {
                    path: path(),
                    op: mop,
                });
                return Some(());
            }
            EditOp::Create if existing.is_some() => return None,
            EditOp::Create | EditOp::Replace => {
                // Children of a created or replaced container are inserted
                // with it and not reported one by one.
                if !matches!(self.plan.op, EditOp::Create | EditOp::Replace) {
                    touch(&mut self.touched, || Touched {
                        path: path(),
                        op: mop,
                    });
                }
                slots
            }
            EditOp::Merge => self.merge(id, existing, slots)?,
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
        self.parsed.push((id, parsed));
        self.changes.push((id, Some(xml)));
        Some(())
    }

    /// The values of `slots` merged over the existing entry (if any).
    fn merge(&mut self, id: u32, existing: Option<&Entry>, slots: Slots) -> Option<Slots> {
        let schema = self.schema;
        let mut base = match existing {
            Some(e) => Slots::parse(schema, e).ok()?,
            None => Slots::empty(schema, id),
        };
        if self.plan.plain_merge {
            touch(&mut self.touched, || Touched {
                path: module_path(id),
                op: EditOp::Merge,
            });
        } else if existing.is_none() {
            touch(&mut self.touched, || Touched {
                path: module_path(id),
                op: EditOp::Create,
            });
        }
        for (i, v) in slots.values.into_iter().enumerate() {
            let Some(v) = v else { continue };
            if !self.plan.plain_merge {
                touch(&mut self.touched, || {
                    let l = &schema.leaves[i];
                    let mut p = module_path(id);
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
        Some(base)
    }
}

/// Applies an edit whose `<config>` holds only `customizations` natively.
/// `None` means: use the libyang engine (which also produces every error).
/// `config_children` may be lazy (see `xml::parse_lazy`); their content is
/// then read from `source` one module at a time.
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
    let mut touched = Vec::new();
    let plan = match plan_container(cust, current, default_op, &mut touched) {
        Ok(plan) => plan,
        Err(done) => return done.map(|delta| (delta, touched)),
    };
    let clear = plan.clear;
    let mut edits = ModuleEdits {
        schema,
        current,
        access,
        plan,
        seen_ids: Default::default(),
        changes: Vec::new(),
        parsed: Vec::new(),
        touched,
    };
    let inner_scope = cust.scope_for_children(scope);
    if cust.lazy.is_some() {
        let mut ok = true;
        let read = l45_netconf_proto::xml::for_each_child(source, cust, scope, |m| {
            ok = edits.module(m, &inner_scope).is_some();
            ok
        });
        if read.is_err() || !ok {
            return None;
        }
    } else {
        for m in &cust.children {
            edits.module(m, &inner_scope)?;
        }
    }
    // (ids are unique: `seen_ids`)
    edits.changes.sort_unstable_by_key(|(id, _)| *id);
    edits.parsed.sort_unstable_by_key(|(id, _)| *id);
    let delta = Delta {
        clear,
        changes: edits.changes.into_iter().collect(),
        parsed: edits.parsed,
    };
    Some((delta, edits.touched))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::{entries_of, schema, Ds};
    use crate::testutil::{config, RICH};
    use yang3::data::DataPrinterFlags;

    const ALL: WriteAccess = WriteAccess {
        module: true,
        keys: true,
    };

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
            let lib = l45_yang::print_xml(&crate::testutil::tree(&src), DataPrinterFlags::WD_EXPLICIT | DataPrinterFlags::SHRINK).unwrap();
            assert_eq!(native, lib);
            // and the libyang-printed entry is what the store keeps
            assert_eq!(entries_of(&crate::testutil::tree(&src)).unwrap(), map);
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
}
