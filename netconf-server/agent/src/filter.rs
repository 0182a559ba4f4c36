//! `<filter>`: subtree filters (RFC 6241 section 6) are turned into libyang
//! XPath queries; XPath filters have their XML prefixes rewritten to module
//! names. Either way libyang selects the nodes and they are copied, with
//! their ancestors and list keys, into the reply tree.

use l45_netconf_proto::message::BASE_NS;
use l45_netconf_proto::xml::{Element, NsDecl};
use l45_netconf_proto::{ErrorTag, ErrorType, RpcError};
use yang3::context::Context;
use yang3::data::{Data, DataTree};

/// What a `<filter>` selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// No filter: everything.
    All,
    /// libyang (JSON-prefixed) XPath expressions; empty selects nothing.
    XPaths(Vec<String>),
}

/// Reads the `<filter>` child of an operation, if any.
pub fn parse_filter(
    ctx: &Context,
    filter: Option<&Element>,
    scope: &[NsDecl],
) -> Result<Filter, RpcError> {
    let Some(filter) = filter else {
        return Ok(Filter::All);
    };
    let kind = filter
        .attr(None, "type")
        .or_else(|| filter.attr(Some(BASE_NS), "type"))
        .unwrap_or("subtree");
    match kind {
        "subtree" => Ok(subtree_filter(ctx, filter, scope)),
        "xpath" => {
            let select = filter
                .attr(None, "select")
                .or_else(|| filter.attr(Some(BASE_NS), "select"))
                .ok_or_else(|| {
                    RpcError::new(ErrorType::Protocol, ErrorTag::MissingAttribute)
                        .message("an xpath filter needs a select attribute")
                        .info("bad-attribute", "select")
                        .info("bad-element", "filter")
                })?;
            let scope = filter.scope_for_children(scope);
            Ok(Filter::XPaths(vec![translate_xpath(ctx, select, &scope)?]))
        }
        other => Err(RpcError::new(ErrorType::Protocol, ErrorTag::BadAttribute)
            .message(format!("unknown filter type '{other}'"))
            .info("bad-attribute", "type")
            .info("bad-element", "filter")),
    }
}

/// A subtree filter given as an element's children (RFC 8526
/// `subtree-filter`, RFC 8639 `*-subtree-filter`); no children select
/// nothing, as an empty `<filter>`.
pub fn subtree_filter(ctx: &Context, filter: &Element, parent_scope: &[NsDecl]) -> Filter {
    let mut out = Vec::new();
    let scope = filter.scope_for_children(parent_scope);
    for child in &filter.children {
        subtree(ctx, child, &scope, "", "", None, &mut out);
    }
    Filter::XPaths(out)
}

fn quote(value: &str) -> String {
    if value.contains('\'') {
        format!("\"{value}\"")
    } else {
        format!("'{value}'")
    }
}

/// The value of a content-match node as libyang compares it: an
/// identityref's `prefix:name` (XML prefixes, RFC 7950 9.10.3) becomes
/// `module:name`; other values are as written.
fn content_value(ctx: &Context, el: &Element, scope: &[NsDecl], schema_path: &str) -> String {
    let text = el.trimmed_text();
    let identityref = ctx.find_path(schema_path).is_ok_and(|node| {
        node.leaf_type()
            .is_some_and(|t| t.base_type() == yang3::schema::DataValueType::IdentityRef)
    });
    if !identityref {
        return text.to_string();
    }
    let (prefix, name) = match text.split_once(':') {
        Some((p, n)) => (Some(p), n),
        None => (None, text),
    };
    let scope = el.scope_cow(scope);
    scope
        .iter()
        .rev()
        .find(|(p, _)| p.as_deref() == prefix)
        .and_then(|(_, ns)| ctx.get_module_latest_ns(ns))
        .map(|m| format!("{}:{name}", m.name()))
        // An unknown prefix matches no identity: keep it as written.
        .unwrap_or_else(|| text.to_string())
}

fn subtree(
    ctx: &Context,
    el: &Element,
    scope: &[NsDecl],
    parent: &str,
    parent_schema: &str,
    parent_module: Option<&str>,
    out: &mut Vec<String>,
) {
    // An element in a namespace no module has cannot match anything.
    let Some(module) = el
        .ns
        .as_deref()
        .and_then(|ns| ctx.get_module_latest_ns(ns))
        .map(|m| m.name().to_string())
    else {
        return;
    };
    let step = |name: &str, m: &str, parent_m: Option<&str>| {
        if Some(m) == parent_m {
            name.to_string()
        } else {
            format!("{m}:{name}")
        }
    };
    let mut path = format!("{parent}/{}", step(&el.name, &module, parent_module));
    let schema = format!("{parent_schema}/{module}:{}", el.name);
    let (content, others): (Vec<&Element>, Vec<&Element>) = el
        .children
        .iter()
        .partition(|c| c.children.is_empty() && !c.trimmed_text().is_empty());
    if el.children.is_empty() && !el.trimmed_text().is_empty() {
        // A content-match node at the top: the leaf with that value.
        let value = content_value(ctx, el, scope, &schema);
        out.push(format!("{path}[.={}]", quote(&value)));
        return;
    }
    let children_scope = el.scope_cow(scope);
    let mut content_paths = Vec::new();
    for c in &content {
        let Some(cm) = c.ns.as_deref().and_then(|ns| ctx.get_module_latest_ns(ns)) else {
            return;
        };
        let name = step(&c.name, cm.name(), Some(&module));
        let value = content_value(
            ctx,
            c,
            &children_scope,
            &format!("{schema}/{}:{}", cm.name(), c.name),
        );
        path.push_str(&format!("[{name}={}]", quote(&value)));
        content_paths.push(name);
    }
    if others.is_empty() {
        out.push(path);
        return;
    }
    for name in content_paths {
        out.push(format!("{path}/{name}"));
    }
    for o in others {
        subtree(ctx, o, &children_scope, &path, &schema, Some(&module), out);
    }
}

/// Rewrites `prefix:name` in an XPath from XML prefixes (declared in scope)
/// to the module names libyang expects. Literals are left alone.
pub fn translate_xpath(ctx: &Context, select: &str, scope: &[NsDecl]) -> Result<String, RpcError> {
    let mut out = String::with_capacity(select.len() + 32);
    let chars: Vec<char> = select.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' || c == '"' {
            let end = chars[i + 1..]
                .iter()
                .position(|&x| x == c)
                .map(|p| p + i + 1)
                .unwrap_or(chars.len() - 1);
            out.extend(&chars[i..=end]);
            i = end + 1;
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '-' | '.'))
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let is_prefix = i + 1 < chars.len() && chars[i] == ':' && chars[i + 1] != ':';
            if is_prefix {
                let uri = scope
                    .iter()
                    .rev()
                    .find(|(p, _)| p.as_deref() == Some(word.as_str()))
                    .map(|(_, u)| &**u);
                // Unbound prefixes may be module names, as netopeer2-cli and
                // JSON-style paths write them.
                let module = uri
                    .and_then(|u| ctx.get_module_latest_ns(u))
                    .or_else(|| {
                        uri.is_none()
                            .then(|| ctx.get_module_latest(&word))
                            .flatten()
                            .filter(|m| m.is_implemented())
                    })
                    .map(|m| m.name().to_string());
                match module {
                    Some(m) => out.push_str(&m),
                    None => {
                        return Err(
                            RpcError::new(ErrorType::Application, ErrorTag::InvalidValue)
                                .message(format!(
                                    "XPath prefix '{word}' is not bound to a known namespace"
                                ))
                                .info("bad-element", "filter"),
                        )
                    }
                }
            } else {
                out.push_str(&word);
            }
            continue;
        }
        out.push(c);
        i += 1;
    }
    Ok(out)
}

/// The data paths of the nodes `filter` selects in `tree` (for no filter,
/// its top-level nodes), each once.
pub fn selected_paths(tree: &DataTree<'static>, filter: &Filter) -> Result<Vec<String>, RpcError> {
    let Some(first) = tree.reference() else {
        return Ok(Vec::new());
    };
    let paths = match filter {
        Filter::All => return Ok(first.inclusive_siblings().map(|n| n.path()).collect()),
        Filter::XPaths(paths) => paths,
    };
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for xpath in paths {
        let set = tree
            .find_xpath(xpath)
            .map_err(|e| bad_expression(xpath, &e))?;
        for node in set {
            let path = node.path();
            if seen.insert(path.clone()) {
                out.push(path);
            }
        }
    }
    Ok(out)
}

pub(crate) fn bad_expression(xpath: &str, e: &yang3::Error) -> RpcError {
    RpcError::new(ErrorType::Application, ErrorTag::InvalidValue)
        .message(format!("bad filter expression {xpath}: {e}"))
        .info("bad-element", "filter")
}

/// Copies what `filter` selects from `tree` into a new tree.
pub fn select(
    ctx: &'static Context,
    tree: &DataTree<'static>,
    filter: &Filter,
) -> Result<DataTree<'static>, RpcError> {
    let paths = match filter {
        Filter::All => {
            return tree
                .duplicate()
                .map_err(|e| crate::yangerr::to_rpc_error(ctx, &e))
        }
        Filter::XPaths(paths) => paths,
    };
    let mut result = DataTree::new(ctx);
    if tree.reference().is_none() {
        return Ok(result);
    }
    for xpath in paths {
        let set = tree
            .find_xpath(xpath)
            .map_err(|e| bad_expression(xpath, &e))?;
        for node in set {
            let dup = node
                .duplicate(true)
                .map_err(|e| crate::yangerr::to_rpc_error(ctx, &e))?;
            result
                .merge(&dup)
                .map_err(|e| crate::yangerr::to_rpc_error(ctx, &e))?;
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> &'static Context {
        l45_yang::context().expect("context")
    }

    fn filter(body: &str) -> Filter {
        let src = format!("<filter xmlns=\"{BASE_NS}\" type=\"subtree\">{body}</filter>");
        let el = l45_netconf_proto::xml::parse(src.as_bytes()).expect("xml");
        parse_filter(ctx(), Some(&el), &[]).expect("filter")
    }

    #[test]
    fn subtree_containment_content_and_selection() {
        let ns = l45_yang::L45_NAMESPACE;
        assert_eq!(
            filter(&format!("<customizations xmlns=\"{ns}\"/>")),
            Filter::XPaths(vec!["/layer45-customization:customizations".into()])
        );
        assert_eq!(
            filter(&format!(
                "<customizations xmlns=\"{ns}\"><module><id>5</id></module></customizations>"
            )),
            Filter::XPaths(vec![
                "/layer45-customization:customizations/module[id='5']".into()
            ])
        );
        assert_eq!(
            filter(&format!("<customizations xmlns=\"{ns}\"><module><id>5</id><priority/></module></customizations>")),
            Filter::XPaths(vec![
                "/layer45-customization:customizations/module[id='5']/id".into(),
                "/layer45-customization:customizations/module[id='5']/priority".into()
            ])
        );
        assert_eq!(
            filter("<unknown xmlns=\"urn:nothing\"/>"),
            Filter::XPaths(vec![])
        );
    }

    #[test]
    fn xpath_prefixes_become_module_names() {
        let scope: Vec<l45_netconf_proto::xml::NsDecl> =
            vec![(Some("x".into()), l45_yang::L45_NAMESPACE.into())];
        let t = translate_xpath(ctx(), "/x:customizations/x:module[x:name='a:b']", &scope).unwrap();
        assert_eq!(t, "/layer45-customization:customizations/layer45-customization:module[layer45-customization:name='a:b']");
        assert!(translate_xpath(ctx(), "/y:customizations", &scope).is_err());
        assert_eq!(
            translate_xpath(ctx(), "child::x:customizations", &scope).unwrap(),
            "child::layer45-customization:customizations"
        );
    }
}
