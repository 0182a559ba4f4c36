//! libyang errors turned into RFC 6241 `<rpc-error>`s, and libyang's JSON
//! paths (`/module:node[key='v']`) turned into XML error-paths with declared
//! prefixes.

use l45_netconf_proto::{ErrorPath, ErrorTag, ErrorType, RpcError};
use yang3::context::Context;

/// Maps a libyang error to the closest RFC 6241 error-tag.
pub fn to_rpc_error(ctx: &Context, e: &yang3::Error) -> RpcError {
    let message = e
        .msg
        .clone()
        .unwrap_or_else(|| "validation failed".to_string());
    let tag = classify(&message, e.apptag.as_deref());
    let mut err = RpcError::new(ErrorType::Application, tag).message(message);
    if let Some(app) = &e.apptag {
        err = err.app_tag(app.clone());
    }
    if let Some(path) = &e.path {
        err = err.path(xml_error_path(ctx, path));
    }
    err
}

fn classify(message: &str, apptag: Option<&str>) -> ErrorTag {
    match apptag {
        Some("data-not-unique" | "too-many-elements" | "too-few-elements" | "must-violation") => {
            return ErrorTag::OperationFailed
        }
        Some("missing-choice" | "instance-required") => return ErrorTag::DataMissing,
        _ => {}
    }
    if message.contains("Mandatory node")
        || message.contains("missing its key")
        || message.contains("Missing key")
    {
        ErrorTag::MissingElement
    } else if message.contains("No module with namespace") || message.contains("No module named") {
        ErrorTag::UnknownNamespace
    } else if message.starts_with("Invalid ") {
        // A value libyang could not take ("Invalid identityref ... not
        // found", "Invalid type uint16 value ..."): RFC 7950 8.3.1.
        ErrorTag::InvalidValue
    } else if message.contains("not found")
        || message.contains("Unknown element")
        || message.contains("unknown element")
    {
        ErrorTag::UnknownElement
    } else if message.contains("Duplicate instance") {
        ErrorTag::OperationFailed
    } else if message.contains("annotation") || message.contains("attribute") {
        ErrorTag::BadAttribute
    } else {
        ErrorTag::InvalidValue
    }
}

/// Converts a libyang data path (module names as prefixes, inherited by
/// unprefixed steps) into an XPath whose every name has an XML prefix, and
/// the declarations those prefixes need.
pub fn xml_error_path(ctx: &Context, json_path: &str) -> ErrorPath {
    let mut out = String::with_capacity(json_path.len() + 32);
    let mut namespaces: Vec<(String, String)> = Vec::new();
    let mut current_prefix: Option<String> = None;
    let chars: Vec<char> = json_path.chars().collect();
    let mut i = 0;
    let mut quote: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            out.push(c);
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        if c == '\'' || c == '"' {
            quote = Some(c);
            out.push(c);
            i += 1;
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '-' | '.' | ':'))
            {
                i += 1;
            }
            let token: String = chars[start..i].iter().collect();
            let (module, name) = match token.split_once(':') {
                Some((m, n)) => (Some(m.to_string()), n.to_string()),
                None => (None, token.clone()),
            };
            if let Some(module) = module {
                if let Some(m) = ctx.get_module_latest(&module) {
                    let prefix = m.prefix().to_string();
                    if !namespaces.iter().any(|(p, _)| p == &prefix) {
                        namespaces.push((prefix.clone(), m.namespace().to_string()));
                    }
                    current_prefix = Some(prefix);
                } else {
                    current_prefix = Some(module);
                }
            }
            match &current_prefix {
                Some(p) => {
                    out.push_str(p);
                    out.push(':');
                    out.push_str(&name);
                }
                None => out.push_str(&name),
            }
            continue;
        }
        out.push(c);
        i += 1;
    }
    ErrorPath {
        xpath: out,
        namespaces,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_path_gets_xml_prefixes() {
        let ctx = l45_yang::context().expect("context");
        let p = xml_error_path(
            ctx,
            "/layer45-customization:customizations/module[id='5']/priority",
        );
        assert_eq!(
            p.xpath,
            "/l45:customizations/l45:module[l45:id='5']/l45:priority"
        );
        assert_eq!(
            p.namespaces,
            vec![("l45".to_string(), l45_yang::L45_NAMESPACE.to_string())]
        );
        let q = xml_error_path(
            ctx,
            "/layer45-customization:customizations/module[name='a:b c']",
        );
        assert_eq!(q.xpath, "/l45:customizations/l45:module[l45:name='a:b c']");
    }

    #[test]
    fn classification() {
        assert_eq!(
            classify("Mandatory node \"name\" instance does not exist.", None),
            ErrorTag::MissingElement
        );
        assert_eq!(
            classify(
                "Value \"70000\" is out of type uint16 min/max bounds.",
                None
            ),
            ErrorTag::InvalidValue
        );
        assert_eq!(
            classify("x", Some("data-not-unique")),
            ErrorTag::OperationFailed
        );
    }
}
