//! The libyang engine: the edit is parsed by libyang, applied
//! ([`super::apply`]) to a tree of the non-module data plus only the entries
//! it names (every entry when it works on the whole list), which is then
//! validated. Handles every edit, and produces every rpc-error an edit can
//! get.

use std::collections::BTreeSet;

use l45_netconf_proto::message::Rpc;
use yang3::context::Context;
use yang3::data::{Data, DataTree, DataValidationFlags};

use super::apply::{apply, node_op};
use super::content::{
    config_xml, config_xml_replacing, config_xml_with_values, parse_config, valueless_leaves,
};
use super::{Computed, EditConfig, EditOp, TestOption};
use crate::config::delta::Delta;
use crate::datastore::{entries_of, Ds, CUSTOMIZATIONS};
use crate::error::OpError;

/// Module ids a parsed edit names; `None` when it may touch any entry
/// (an operation on the list's container, a default `replace`, a module
/// without a usable key).
fn edit_entry_ids(edit_tree: &DataTree<'static>, default_op: EditOp) -> Option<BTreeSet<u32>> {
    let mut ids = BTreeSet::new();
    let Ok(cust) = edit_tree.find_path(CUSTOMIZATIONS) else {
        return Some(ids);
    };
    if default_op == EditOp::Replace
        || node_op(&cust).is_some_and(|op| !matches!(op, EditOp::Merge))
    {
        return None;
    }
    for m in cust.children() {
        if m.schema().name() != "module" {
            return None;
        }
        let id = m
            .list_keys()
            .next()
            .and_then(|k| k.value_canonical())
            .and_then(|v| v.parse().ok())?;
        ids.insert(id);
    }
    Some(ids)
}

/// Computes `edit` on `current`. `authorize` sees the parsed edit first
/// (NACM write access).
pub(super) fn compute(
    ctx: &'static Context,
    edit: &EditConfig<'_>,
    current: &Ds,
    authorize: &dyn Fn(&DataTree<'static>) -> Result<(), OpError>,
) -> Result<Computed, OpError> {
    // The data may have arrived lazy (see message::parse_rpc): build it whole.
    let full: Rpc;
    let rpc = if edit.rpc.has_lazy() {
        full = edit
            .rpc
            .full()
            .ok_or_else(|| OpError::Malformed("message no longer parses".into()))?;
        &full
    } else {
        edit.rpc
    };
    let config = super::config_element(&rpc.operation)?;
    let scope = rpc.op_child_scope();
    let valueless = valueless_leaves(ctx, config);
    let (edit_tree, ids, mut new_tree) = if valueless.is_empty() {
        let edit_tree = parse_config(ctx, &config_xml(config, &rpc.source, &scope)?)?;
        authorize(&edit_tree)?;
        let ids = edit_entry_ids(&edit_tree, edit.default_operation);
        let new_tree = target_tree(ctx, current, &ids)?;
        (edit_tree, ids, new_tree)
    } else {
        // Read the edit without those leaves to learn which entries it
        // names, then again with their values from those entries.
        let without: Vec<_> = valueless
            .iter()
            .map(|l| (l.span.clone(), String::new()))
            .collect();
        let probe = parse_config(
            ctx,
            &config_xml_replacing(config, &rpc.source, &scope, &without)?,
        )?;
        let ids = edit_entry_ids(&probe, edit.default_operation);
        let new_tree = target_tree(ctx, current, &ids)?;
        let xml = config_xml_with_values(ctx, config, &rpc.source, &scope, &valueless, &new_tree)?;
        let edit_tree = parse_config(ctx, &xml)?;
        authorize(&edit_tree)?;
        (edit_tree, ids, new_tree)
    };
    let (touched, errors) = apply(
        ctx,
        &mut new_tree,
        &edit_tree,
        edit.default_operation,
        edit.continue_on_error(),
    )?;
    if edit.test_option != TestOption::Set {
        new_tree.validate(DataValidationFlags::NO_STATE)?;
    }
    let entries = entries_of(&new_tree)?;
    let mut delta = Delta::default();
    match ids {
        None => {
            delta.clear = true;
            delta.changes = entries.into_iter().map(|(id, e)| (id, Some(e))).collect();
        }
        Some(ids) => {
            for id in ids {
                delta.changes.insert(id, entries.get(&id).cloned());
            }
            for (id, e) in entries {
                delta.changes.entry(id).or_insert(Some(e));
            }
        }
    }
    let mut rest = new_tree;
    if rest.find_path(CUSTOMIZATIONS).is_ok() {
        rest.remove(CUSTOMIZATIONS)?;
    }
    Ok(Computed {
        delta,
        rest: Some(rest),
        touched,
        errors,
    })
}

/// The part of `current` an edit naming `ids` can change (all of it for
/// `None`), as a libyang tree.
fn target_tree(
    ctx: &'static Context,
    current: &Ds,
    ids: &Option<BTreeSet<u32>>,
) -> Result<DataTree<'static>, OpError> {
    Ok(match ids {
        Some(ids) => current.tree_of(ctx, ids.iter().filter_map(|i| current.modules.get(i))),
        None => current.to_tree(ctx),
    }?)
}

/// Reads a stored datastore whole through libyang.
pub(super) fn load(ctx: &'static Context, text: &str) -> Result<Ds, yang3::Error> {
    let mut tree = DataTree::parse_string(
        ctx,
        text,
        yang3::data::DataFormat::XML,
        yang3::data::DataParserFlags::STRICT | yang3::data::DataParserFlags::NO_STATE,
        DataValidationFlags::NO_STATE,
    )?;
    tree.validate(DataValidationFlags::NO_STATE)?;
    Ds::from_tree(&tree)
}
