//! `<config>` content for libyang: the elements carry the namespace
//! declarations in scope, and RFC 6241's `operation` attribute becomes the
//! internal annotation (see `yang/layer45-netconf-edit*.yang`), since RFC
//! 6241's module predates annotations.

use std::ops::Range;

use l45_netconf_proto::message::BASE_NS;
use l45_netconf_proto::xml::{Element, NsDecl};
use l45_netconf_proto::{ErrorTag, ErrorType, RpcError};
use yang3::context::Context;
use yang3::data::{
    Data, DataFormat, DataNodeRef, DataParserFlags, DataPrinterFlags, DataTree, DataValidationFlags,
};
use yang3::schema::SchemaNodeKind;

use super::EditOp;
use crate::yangerr::to_rpc_error;

/// Turns the children of `<config>` into one XML text libyang can parse:
/// every top-level element carries the namespace declarations in scope, and
/// the base-namespace `operation` attribute is renamed to the internal
/// annotation (see `yang/layer45-netconf-edit*.yang`).
pub fn config_xml(config: &Element, source: &[u8], scope: &[NsDecl]) -> Result<String, RpcError> {
    config_xml_replacing(config, source, scope, &[])
}

/// As [`config_xml`], with some elements (byte ranges of `source`)
/// replaced by other text, such as [`ValuelessLeaf`]s given a value.
pub fn config_xml_replacing(
    config: &Element,
    source: &[u8],
    scope: &[NsDecl],
    replacements: &[(Range<usize>, String)],
) -> Result<String, RpcError> {
    let inner_scope = config.scope_for_children(scope);
    let mut out = String::new();
    // Every top-level element repeats the declarations in scope, so many
    // small ones under a long namespace would make this text far larger
    // than the message: refuse that instead of building it.
    let budget = 2 * source.len() + (1 << 20);
    for child in &config.children {
        if out.len() > budget {
            return Err(RpcError::new(ErrorType::Application, ErrorTag::TooBig).message(
                "<config> holds too many top-level elements for the namespace declarations in scope",
            ));
        }
        let mut renames: Vec<(usize, usize)> = Vec::new();
        collect_operation_attrs(child, source, &mut renames)?;
        let inside = |r: &Range<usize>| child.span.start < r.start && r.end <= child.span.end;
        // An operation attribute of a replaced element goes with it.
        renames.retain(|(at, _)| !replacements.iter().any(|(r, _)| r.contains(at)));
        let mut edits: Vec<(usize, usize, &str)> = renames
            .iter()
            .map(|&(at, len)| (at, len, "l45nc:operation"))
            .collect();
        edits.extend(
            replacements
                .iter()
                .filter(|(r, _)| inside(r))
                .map(|(r, text)| (r.start, r.len(), text.as_str())),
        );
        let mut scope = inner_scope.clone();
        if !renames.is_empty() {
            scope.push((Some("l45nc".into()), l45_yang::EDIT_NAMESPACE.into()));
        }
        let text = child.standalone_xml(source, &scope);
        if edits.is_empty() {
            out.push_str(&text);
            continue;
        }
        // standalone_xml only inserted declarations right after the root's
        // name; shift offsets found in the source accordingly.
        let inserted = text.len() - (child.span.end - child.span.start);
        let base = child.span.start;
        let root_name_end = child.name_end - base;
        let mut rewritten = String::with_capacity(text.len() + 16 * edits.len());
        let mut last = 0;
        edits.sort_by_key(|&(start, _, _)| start);
        for (start, len, with) in edits {
            let mut at = start - base;
            if at >= root_name_end {
                at += inserted;
            }
            rewritten.push_str(&text[last..at]);
            rewritten.push_str(with);
            last = at + len;
        }
        rewritten.push_str(&text[last..]);
        out.push_str(&rewritten);
    }
    Ok(out)
}

/// A leaf the edit deletes or removes without a value
/// (`<priority nc:operation="delete"/>`, RFC 6241 7.2). libyang cannot
/// parse an empty value of most types, and delete/remove never look at the
/// value, so the caller gives it any valid one (see [`with_value`]) or
/// leaves it out.
#[derive(Debug, Clone)]
pub struct ValuelessLeaf {
    /// libyang data path, as `DataNodeRef::path` prints it.
    pub path: String,
    /// Its schema path (every node prefixed).
    schema_path: String,
    pub op: EditOp,
    /// The element's bytes in the message.
    pub span: Range<usize>,
}

/// Every [`ValuelessLeaf`] under `<config>`, found through the schema (a
/// leaf-list entry is named by its value, so an empty one stays an error).
pub fn valueless_leaves(ctx: &Context, config: &Element) -> Vec<ValuelessLeaf> {
    let mut out = Vec::new();
    for top in &config.children {
        let Some(module) = top
            .ns
            .as_deref()
            .and_then(|ns| ctx.get_module_implemented_ns(ns))
        else {
            continue;
        };
        let path = format!("/{}:{}", module.name(), top.name);
        let schema_path = path.clone();
        find_valueless(ctx, top, module.name(), &schema_path, &path, &mut out);
    }
    out
}

fn find_valueless(
    ctx: &Context,
    e: &Element,
    module: &str,
    schema_path: &str,
    path: &str,
    out: &mut Vec<ValuelessLeaf>,
) {
    let Ok(schema) = ctx.find_path(schema_path) else {
        return;
    };
    let mut path = path.to_string();
    if schema.kind() == SchemaNodeKind::List {
        for key in schema.list_keys() {
            let Some(k) = e.children.iter().find(|c| c.name == key.name()) else {
                return;
            };
            if k.text.contains('\0') || (k.text.contains('\'') && k.text.contains('"')) {
                return;
            }
            let quote = if k.text.contains('\'') { '"' } else { '\'' };
            path.push_str(&format!("[{}={quote}{}{quote}]", key.name(), k.text));
        }
    }
    for c in &e.children {
        let Some(cm) =
            c.ns.as_deref()
                .and_then(|ns| ctx.get_module_implemented_ns(ns))
        else {
            continue;
        };
        let child_schema_path = format!("{schema_path}/{}:{}", cm.name(), c.name);
        let child_path = if cm.name() == module {
            format!("{path}/{}", c.name)
        } else {
            format!("{path}/{}:{}", cm.name(), c.name)
        };
        let op = c
            .attrs
            .iter()
            .find(|a| a.name == "operation" && a.ns.as_deref() == Some(BASE_NS))
            .and_then(|a| EditOp::parse(&a.value));
        if let Some(op @ (EditOp::Delete | EditOp::Remove)) = op {
            if c.children.is_empty()
                && c.text.trim().is_empty()
                && ctx
                    .find_path(&child_schema_path)
                    .is_ok_and(|s| s.kind() == SchemaNodeKind::Leaf)
            {
                out.push(ValuelessLeaf {
                    path: child_path,
                    schema_path: child_schema_path,
                    op,
                    span: c.span.clone(),
                });
                continue;
            }
        }
        find_valueless(ctx, c, cm.name(), &child_schema_path, &child_path, out);
    }
}

/// `<config>` as libyang text with every [`ValuelessLeaf`] given a value:
/// its current one in `current` when set, else any its type admits
/// ([`l45_yang::sample_value`]). Delete and remove never read it: the edit
/// then does exactly what it does for a leaf given with a value (NACM,
/// data-missing, error-option included).
pub fn config_xml_with_values(
    ctx: &'static Context,
    config: &Element,
    source: &[u8],
    scope: &[NsDecl],
    leaves: &[ValuelessLeaf],
    current: &DataTree<'static>,
) -> Result<String, RpcError> {
    let mut replacements = Vec::with_capacity(leaves.len());
    for leaf in leaves {
        let element = match current.find_path(&leaf.path) {
            // (a default is no value of its own: RFC 6243 explicit mode)
            Ok(node) if !node.is_default() => with_value(leaf, &node)?,
            _ => {
                let sample = ctx
                    .find_path(&leaf.schema_path)
                    .ok()
                    .and_then(|schema| l45_yang::sample_value(&schema));
                let mut scratch = DataTree::new(ctx);
                let created = sample.filter(|_| !leaf.path.contains('\0')).and_then(|v| {
                    scratch.new_path(&leaf.path, Some(&v), false).ok()?;
                    scratch.find_path(&leaf.path).ok()
                });
                match (created, leaf.op) {
                    (Some(node), _) => with_value(leaf, &node)?,
                    // Removing what is not there does nothing.
                    (None, EditOp::Remove) => String::new(),
                    (None, _) => {
                        return Err(
                            RpcError::new(ErrorType::Application, ErrorTag::InvalidValue).message(
                                format!(
                                    "{} has no value to delete; give the leaf's value",
                                    leaf.path
                                ),
                            ),
                        )
                    }
                }
            }
        };
        replacements.push((leaf.span.clone(), element));
    }
    config_xml_replacing(config, source, scope, &replacements)
}

/// The element of a [`ValuelessLeaf`] written with `value` (a leaf of the
/// same schema node, whose XML gives the value and its namespaces).
pub fn with_value(leaf: &ValuelessLeaf, value: &DataNodeRef<'_>) -> Result<String, RpcError> {
    let printed = l45_yang::print_node_xml(value, DataPrinterFlags::SHRINK).map_err(|e| {
        RpcError::new(ErrorType::Application, ErrorTag::OperationFailed).message(e.to_string())
    })?;
    let printed = printed.trim_end();
    let name_end = printed
        .find([' ', '>', '/'])
        .filter(|&i| i > 1)
        .ok_or_else(|| {
            RpcError::new(ErrorType::Application, ErrorTag::OperationFailed)
                .message("unprintable leaf")
        })?;
    Ok(format!(
        "{} xmlns:l45nc=\"{}\" l45nc:operation=\"{}\"{}",
        &printed[..name_end],
        l45_yang::EDIT_NAMESPACE,
        leaf.op.as_str(),
        &printed[name_end..]
    ))
}

/// Finds, for every element with a base-namespace `operation` attribute, the
/// byte range of the attribute's qualified name in the source.
fn collect_operation_attrs(
    e: &Element,
    source: &[u8],
    out: &mut Vec<(usize, usize)>,
) -> Result<(), RpcError> {
    for attr in &e.attrs {
        if attr.name == "operation" && attr.ns.as_deref() == Some(BASE_NS) {
            if EditOp::parse(&attr.value).is_none() || attr.value == "none" {
                return Err(RpcError::new(ErrorType::Rpc, ErrorTag::BadAttribute)
                    .message(format!("unknown edit operation '{}'", attr.value))
                    .info("bad-attribute", "operation")
                    .info("bad-element", &e.name));
            }
            let tag_end = source[e.name_end..e.span.end]
                .iter()
                .position(|&b| b == b'>')
                .map(|p| p + e.name_end)
                .unwrap_or(e.span.end);
            let needle = attr.qname.as_bytes();
            let found = source[e.name_end..tag_end]
                .windows(needle.len())
                .enumerate()
                .find(|(i, w)| {
                    *w == needle && {
                        let before = source[e.name_end + i - 1];
                        let after = source
                            .get(e.name_end + i + needle.len())
                            .copied()
                            .unwrap_or(b' ');
                        before.is_ascii_whitespace()
                            && (after == b'=' || after.is_ascii_whitespace())
                    }
                })
                .map(|(i, _)| i + e.name_end);
            match found {
                Some(start) => out.push((start, needle.len())),
                None => {
                    return Err(RpcError::new(ErrorType::Rpc, ErrorTag::MalformedMessage)
                        .message("could not locate the operation attribute"))
                }
            }
        }
    }
    for child in &e.children {
        collect_operation_attrs(child, source, out)?;
    }
    Ok(())
}

/// Parses `<config>` content without validation (the whole datastore is
/// validated after the edit).
pub fn parse_config(ctx: &'static Context, xml: &str) -> Result<DataTree<'static>, RpcError> {
    if xml.trim().is_empty() {
        return Ok(DataTree::new(ctx));
    }
    let tree = DataTree::parse_string(
        ctx,
        xml,
        DataFormat::XML,
        DataParserFlags::STRICT | DataParserFlags::NO_VALIDATION | DataParserFlags::NO_STATE,
        DataValidationFlags::empty(),
    )
    .map_err(|e| {
        let mut err = to_rpc_error(ctx, &e);
        err.error_type = ErrorType::Protocol;
        err
    })?;
    if let Some(first) = tree.reference() {
        single_instances(first.inclusive_siblings())?;
    }
    Ok(tree)
}

/// Refuses a container, leaf or list entry (same keys) given twice under
/// one parent. Parsing
/// without validation lets such trees through, and libyang's validation
/// of them loops or crashes (two top-level `<nacm>`, found by fuzzing).
fn single_instances<'a>(siblings: impl Iterator<Item = DataNodeRef<'a>>) -> Result<(), RpcError> {
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut set = std::collections::HashSet::new();
    for node in siblings {
        let schema = node.schema();
        let single = matches!(
            schema.kind(),
            SchemaNodeKind::Container | SchemaNodeKind::Leaf
        );
        // A list entry is one instance per key value: its path says which.
        let entry = schema.kind() == SchemaNodeKind::List;
        if single || entry {
            let id = (
                schema.module().name().to_string(),
                if entry {
                    node.path()
                } else {
                    schema.name().to_string()
                },
            );
            // (a short list while few, a set beyond: linear either way)
            let repeated = if seen.len() < 8 {
                let r = seen.contains(&id);
                seen.push(id);
                r
            } else {
                if set.is_empty() {
                    set.extend(seen.drain(..));
                }
                !set.insert(id)
            };
            if repeated {
                return Err(RpcError::new(ErrorType::Protocol, ErrorTag::BadElement)
                    .message(format!("<{}> appears more than once", schema.name()))
                    .info("bad-element", schema.name()));
            }
        }
        single_instances(node.children())?;
    }
    Ok(())
}
