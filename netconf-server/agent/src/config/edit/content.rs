//! `<config>` content for libyang: the elements carry the namespace
//! declarations in scope, and RFC 6241's `operation` attribute becomes the
//! internal annotation (see `yang/layer45-netconf-edit*.yang`), since RFC
//! 6241's module predates annotations.

use l45_netconf_proto::message::BASE_NS;
use l45_netconf_proto::xml::{Element, NsDecl};
use l45_netconf_proto::{ErrorTag, ErrorType, RpcError};
use yang3::context::Context;
use yang3::data::{DataFormat, DataNodeRef, DataParserFlags, DataTree, DataValidationFlags};
use yang3::schema::SchemaNodeKind;

use super::EditOp;
use crate::yangerr::to_rpc_error;

/// Turns the children of `<config>` into one XML text libyang can parse:
/// every top-level element carries the namespace declarations in scope, and
/// the base-namespace `operation` attribute is renamed to the internal
/// annotation (see `yang/layer45-netconf-edit*.yang`).
pub fn config_xml(config: &Element, source: &[u8], scope: &[NsDecl]) -> Result<String, RpcError> {
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
        let mut scope = inner_scope.clone();
        if !renames.is_empty() {
            scope.push((Some("l45nc".into()), l45_yang::EDIT_NAMESPACE.into()));
        }
        let text = child.standalone_xml(source, &scope);
        if renames.is_empty() {
            out.push_str(&text);
            continue;
        }
        // standalone_xml only inserted declarations right after the root's
        // name; shift offsets found in the source accordingly.
        let inserted = text.len() - (child.span.end - child.span.start);
        let base = child.span.start;
        let root_name_end = child.name_end - base;
        let mut rewritten = String::with_capacity(text.len() + 16 * renames.len());
        let mut last = 0;
        renames.sort();
        for (start, len) in renames {
            let mut at = start - base;
            if at >= root_name_end {
                at += inserted;
            }
            rewritten.push_str(&text[last..at]);
            rewritten.push_str("l45nc:operation");
            last = at + len;
        }
        rewritten.push_str(&text[last..]);
        out.push_str(&rewritten);
    }
    Ok(out)
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
