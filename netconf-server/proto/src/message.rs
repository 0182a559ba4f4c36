//! NETCONF messages: hello, the `<rpc>` envelope, `<rpc-reply>` and
//! `<rpc-error>` (RFC 6241 section 4 and Appendix A), `<notification>`
//! (RFC 5277).

use std::fmt::Write as _;

use crate::xml::{self, escape_attr, escape_text, Element, NsDecl, XmlError, XmlErrorKind};

pub const BASE_NS: &str = "urn:ietf:params:xml:ns:netconf:base:1.0";
pub const NOTIFICATION_NS: &str = "urn:ietf:params:xml:ns:netconf:notification:1.0";
pub const CAP_BASE_10: &str = "urn:ietf:params:netconf:base:1.0";
pub const CAP_BASE_11: &str = "urn:ietf:params:netconf:base:1.1";

// ===== hello =====

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub capabilities: Vec<String>,
    pub session_id: Option<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HelloError {
    #[error(transparent)]
    Xml(#[from] XmlError),
    #[error("expected <hello> in the base namespace, got <{0}>")]
    NotHello(String),
    #[error("hello lists no base capability")]
    NoBase,
    #[error("bad session-id in hello: {0}")]
    BadSessionId(String),
}

impl Hello {
    pub fn supports_base_11(&self) -> bool {
        self.capabilities.iter().any(|c| c == CAP_BASE_11)
    }

    pub fn parse(bytes: &[u8]) -> Result<Hello, HelloError> {
        let root = xml::parse(bytes)?;
        if !root.is(BASE_NS, "hello") {
            return Err(HelloError::NotHello(root.name.clone()));
        }
        let capabilities: Vec<String> = root
            .child(BASE_NS, "capabilities")
            .map(|caps| {
                caps.children
                    .iter()
                    .filter(|c| c.is(BASE_NS, "capability"))
                    .map(|c| c.trimmed_text().to_string())
                    .collect()
            })
            .unwrap_or_default();
        if !capabilities
            .iter()
            .any(|c| c == CAP_BASE_10 || c == CAP_BASE_11)
        {
            return Err(HelloError::NoBase);
        }
        let session_id = match root.child(BASE_NS, "session-id") {
            Some(s) => Some(
                s.trimmed_text()
                    .parse()
                    .map_err(|_| HelloError::BadSessionId(s.text.clone()))?,
            ),
            None => None,
        };
        Ok(Hello {
            capabilities,
            session_id,
        })
    }

    pub fn to_xml(&self) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
        let _ = write!(out, "<hello xmlns=\"{BASE_NS}\"><capabilities>");
        for cap in &self.capabilities {
            let _ = write!(out, "<capability>{}</capability>", escape_text(cap));
        }
        out.push_str("</capabilities>");
        if let Some(id) = self.session_id {
            let _ = write!(out, "<session-id>{id}</session-id>");
        }
        out.push_str("</hello>");
        out
    }
}

// ===== rpc envelope =====

/// A parsed `<rpc>`: the envelope and its single operation element.
#[derive(Debug, Clone)]
pub struct Rpc {
    pub message_id: Option<String>,
    /// Attributes of `<rpc>` to echo in the reply (RFC 6241 4.2), as written.
    pub echo_attrs: Vec<(String, String)>,
    /// Namespace declarations in scope inside the operation element.
    pub scope: Vec<NsDecl>,
    /// The operation element (`<get-config>`, `<l45:report>`, ...).
    pub operation: Element,
    /// The whole message, for spans in `operation`.
    pub source: Vec<u8>,
}

/// Path of the element whose children [`parse_rpc`] keeps lazy.
const EDIT_CONFIG_DATA: &[(&str, &str)] = &[
    (BASE_NS, "rpc"),
    (BASE_NS, "edit-config"),
    (BASE_NS, "config"),
];

impl Rpc {
    /// Whether the operation holds lazy elements (see [`parse_rpc`]).
    pub fn has_lazy(&self) -> bool {
        fn any(e: &Element) -> bool {
            e.lazy.is_some() || e.children.iter().any(any)
        }
        any(&self.operation)
    }

    /// The same rpc with every element fully built. `None` only if the
    /// message no longer parses (it did when it arrived).
    pub fn full(&self) -> Option<Rpc> {
        let root = xml::parse(&self.source).ok()?;
        let mut root = root;
        if root.children.len() != 1 {
            return None;
        }
        Some(Rpc {
            message_id: self.message_id.clone(),
            echo_attrs: self.echo_attrs.clone(),
            scope: self.scope.clone(),
            operation: root.children.remove(0),
            source: self.source.clone(),
        })
    }

    /// Declarations in scope at the operation element's children.
    pub fn op_child_scope(&self) -> Vec<NsDecl> {
        self.operation.scope_for_children(&self.scope)
    }
}

/// What a message turned out to be when an `<rpc>` was expected.
#[derive(Debug)]
pub enum Incoming {
    Rpc(Rpc),
    /// Well-formed but unusable; reply with this error. `message_id` and the
    /// echo attributes are filled in where the envelope allowed.
    Invalid {
        echo_attrs: Vec<(String, String)>,
        error: RpcError,
    },
}

/// Parses a message that should be an `<rpc>`; never fails, every problem
/// becomes the `rpc-error` to send back.
pub fn parse_rpc(bytes: Vec<u8>) -> Incoming {
    // XML 1.0 forbids NUL; rejecting it here also keeps it away from C
    // libraries further on.
    if bytes.contains(&0) {
        return malformed(&bytes, "message contains a NUL byte".to_string());
    }
    // The data of an edit-config is kept unparsed (checked, with a summary)
    // so a large edit is never held as an element tree: the agent reads
    // it with `xml::for_each_child`, or calls `Rpc::full` for the tree.
    let root = match xml::parse_lazy(&bytes, EDIT_CONFIG_DATA) {
        Ok(root) => root,
        Err(e) => return unparsable(&bytes, &e),
    };
    let echo_attrs: Vec<(String, String)> = root
        .attrs
        .iter()
        .map(|a| (a.qname.clone(), a.value.clone()))
        .chain(
            root.ns_decls
                .iter()
                .filter_map(|(p, uri)| p.as_ref().map(|p| (format!("xmlns:{p}"), uri.to_string()))),
        )
        .collect();
    if !root.is(BASE_NS, "rpc") {
        let error = if root.name == "rpc" {
            RpcError::new(ErrorType::Rpc, ErrorTag::UnknownNamespace)
                .message("<rpc> must be in the NETCONF base namespace")
                .info("bad-element", "rpc")
                .info("bad-namespace", root.ns.as_deref().unwrap_or(""))
        } else {
            RpcError::new(ErrorType::Rpc, ErrorTag::UnknownElement)
                .message(format!("expected <rpc>, got <{}>", root.name))
                .info("bad-element", &root.name)
        };
        return Incoming::Invalid { echo_attrs, error };
    }
    let message_id = root.attr(None, "message-id").map(str::to_string);
    if message_id.is_none() {
        return Incoming::Invalid {
            echo_attrs,
            error: RpcError::new(ErrorType::Rpc, ErrorTag::MissingAttribute)
                .message("<rpc> has no message-id")
                .info("bad-attribute", "message-id")
                .info("bad-element", "rpc"),
        };
    }
    let scope = root.scope_for_children(&[]);
    let mut root = root;
    if root.children.len() != 1 {
        let error = if root.children.is_empty() {
            RpcError::new(ErrorType::Rpc, ErrorTag::MissingElement)
                .message("<rpc> holds no operation")
        } else {
            RpcError::new(ErrorType::Rpc, ErrorTag::MalformedMessage)
                .message("<rpc> holds more than one operation")
        };
        return Incoming::Invalid { echo_attrs, error };
    }
    let operation = root.children.remove(0);
    Incoming::Rpc(Rpc {
        message_id,
        echo_attrs,
        scope,
        operation,
        source: bytes,
    })
}

/// A `malformed-message` error that still names the message-id when the
/// head of the message shows one.
fn malformed(bytes: &[u8], message: String) -> Incoming {
    refused(bytes, ErrorTag::MalformedMessage, message)
}

/// The error for a message the XML parser refused: `malformed-message`, or
/// `too-big` when it went over one of the parser's limits (like a message
/// over the size limit).
fn unparsable(bytes: &[u8], e: &XmlError) -> Incoming {
    let tag = match e.kind {
        XmlErrorKind::Malformed => ErrorTag::MalformedMessage,
        XmlErrorKind::Limit => ErrorTag::TooBig,
    };
    refused(bytes, tag, e.to_string())
}

fn refused(bytes: &[u8], tag: ErrorTag, message: String) -> Incoming {
    let echo_attrs = message_id_from_head(bytes)
        .map(|id| vec![("message-id".to_string(), id)])
        .unwrap_or_default();
    Incoming::Invalid {
        echo_attrs,
        error: RpcError::new(ErrorType::Rpc, tag).message(message),
    }
}

/// Finds `message-id="…"` in the first bytes of a message that could not be
/// parsed (truncated, oversized), so the error can still be matched.
pub fn message_id_from_head(bytes: &[u8]) -> Option<String> {
    let head = &bytes[..bytes.len().min(crate::framing::OVERSIZE_HEAD)];
    let text = String::from_utf8_lossy(head);
    let rpc_at = text.find("rpc")?;
    let tag_end = text[rpc_at..]
        .find('>')
        .map(|i| i + rpc_at)
        .unwrap_or(text.len());
    let tag = &text[rpc_at..tag_end];
    let at = tag.find("message-id")?;
    let rest = tag[at + "message-id".len()..]
        .trim_start()
        .strip_prefix('=')?
        .trim_start();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = &rest[1..];
    let end = value.find(quote)?;
    Some(value[..end].to_string())
}

// ===== rpc-reply =====

/// Builds `<rpc-reply>` around `body`, echoing the request's attributes.
pub fn rpc_reply(echo_attrs: &[(String, String)], body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 256);
    let _ = write!(out, "<rpc-reply xmlns=\"{BASE_NS}\"");
    for (name, value) in echo_attrs {
        // Our default namespace is already declared.
        if name == "xmlns" {
            continue;
        }
        let _ = write!(out, " {}=\"{}\"", name, escape_attr(value));
    }
    out.push('>');
    out.push_str(body);
    out.push_str("</rpc-reply>");
    out
}

pub fn ok_reply(echo_attrs: &[(String, String)]) -> String {
    rpc_reply(echo_attrs, "<ok/>")
}

pub fn error_reply(echo_attrs: &[(String, String)], errors: &[RpcError]) -> String {
    let body: String = errors.iter().map(RpcError::to_xml).collect();
    rpc_reply(echo_attrs, &body)
}

/// Builds `<notification>` with its event time (RFC 3339) and content.
pub fn notification(event_time: &str, content: &str) -> String {
    format!("<notification xmlns=\"{NOTIFICATION_NS}\"><eventTime>{}</eventTime>{content}</notification>", escape_text(event_time))
}

// ===== rpc-error =====

/// RFC 6241 Appendix A error-type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    Transport,
    Rpc,
    Protocol,
    Application,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Transport => "transport",
            ErrorType::Rpc => "rpc",
            ErrorType::Protocol => "protocol",
            ErrorType::Application => "application",
        }
    }
}

/// RFC 6241 Appendix A error-tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorTag {
    InUse,
    InvalidValue,
    TooBig,
    MissingAttribute,
    BadAttribute,
    UnknownAttribute,
    MissingElement,
    BadElement,
    UnknownElement,
    UnknownNamespace,
    AccessDenied,
    LockDenied,
    ResourceDenied,
    RollbackFailed,
    DataExists,
    DataMissing,
    OperationNotSupported,
    OperationFailed,
    MalformedMessage,
}

impl ErrorTag {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorTag::InUse => "in-use",
            ErrorTag::InvalidValue => "invalid-value",
            ErrorTag::TooBig => "too-big",
            ErrorTag::MissingAttribute => "missing-attribute",
            ErrorTag::BadAttribute => "bad-attribute",
            ErrorTag::UnknownAttribute => "unknown-attribute",
            ErrorTag::MissingElement => "missing-element",
            ErrorTag::BadElement => "bad-element",
            ErrorTag::UnknownElement => "unknown-element",
            ErrorTag::UnknownNamespace => "unknown-namespace",
            ErrorTag::AccessDenied => "access-denied",
            ErrorTag::LockDenied => "lock-denied",
            ErrorTag::ResourceDenied => "resource-denied",
            ErrorTag::RollbackFailed => "rollback-failed",
            ErrorTag::DataExists => "data-exists",
            ErrorTag::DataMissing => "data-missing",
            ErrorTag::OperationNotSupported => "operation-not-supported",
            ErrorTag::OperationFailed => "operation-failed",
            ErrorTag::MalformedMessage => "malformed-message",
        }
    }
}

/// An `error-path` with the namespace declarations its prefixes need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorPath {
    pub xpath: String,
    pub namespaces: Vec<(String, String)>,
}

/// One `<rpc-error>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{tag:?}: {}", message.as_deref().unwrap_or(""))]
pub struct RpcError {
    pub error_type: ErrorType,
    pub tag: ErrorTag,
    pub app_tag: Option<String>,
    /// Boxed: most errors have none, and unboxed it made every
    /// `Result<_, RpcError>` 128+ bytes (clippy `result_large_err`).
    pub path: Option<Box<ErrorPath>>,
    pub message: Option<String>,
    /// `error-info` children in the base namespace: (element, text).
    pub info: Vec<(String, String)>,
}

impl RpcError {
    pub fn new(error_type: ErrorType, tag: ErrorTag) -> Self {
        RpcError {
            error_type,
            tag,
            app_tag: None,
            path: None,
            message: None,
            info: Vec::new(),
        }
    }

    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    pub fn app_tag(mut self, tag: impl Into<String>) -> Self {
        self.app_tag = Some(tag.into());
        self
    }

    pub fn path(mut self, path: ErrorPath) -> Self {
        self.path = Some(Box::new(path));
        self
    }

    pub fn info(mut self, element: &str, text: &str) -> Self {
        self.info.push((element.to_string(), text.to_string()));
        self
    }

    pub fn to_xml(&self) -> String {
        let mut out = String::from("<rpc-error>");
        let _ = write!(out, "<error-type>{}</error-type>", self.error_type.as_str());
        let _ = write!(out, "<error-tag>{}</error-tag>", self.tag.as_str());
        out.push_str("<error-severity>error</error-severity>");
        if let Some(app_tag) = &self.app_tag {
            let _ = write!(
                out,
                "<error-app-tag>{}</error-app-tag>",
                escape_text(app_tag)
            );
        }
        if let Some(path) = &self.path {
            out.push_str("<error-path");
            for (prefix, uri) in &path.namespaces {
                let _ = write!(out, " xmlns:{prefix}=\"{}\"", escape_attr(uri));
            }
            let _ = write!(out, ">{}</error-path>", escape_text(&path.xpath));
        }
        if let Some(message) = &self.message {
            let _ = write!(
                out,
                "<error-message xml:lang=\"en\">{}</error-message>",
                escape_text(message)
            );
        }
        if !self.info.is_empty() {
            out.push_str("<error-info>");
            for (element, text) in &self.info {
                let _ = write!(out, "<{element}>{}</{element}>", escape_text(text));
            }
            out.push_str("</error-info>");
        }
        out.push_str("</rpc-error>");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trip_and_base11() {
        let hello = Hello {
            capabilities: vec![CAP_BASE_10.into(), CAP_BASE_11.into()],
            session_id: Some(7),
        };
        let parsed = Hello::parse(hello.to_xml().as_bytes()).unwrap();
        assert_eq!(parsed, hello);
        assert!(parsed.supports_base_11());
    }

    #[test]
    fn hello_without_base_is_rejected() {
        let xml = format!("<hello xmlns=\"{BASE_NS}\"><capabilities><capability>urn:x</capability></capabilities></hello>");
        assert_eq!(Hello::parse(xml.as_bytes()), Err(HelloError::NoBase));
        let wrong_ns = "<hello xmlns=\"urn:other\"><capabilities/></hello>";
        assert!(matches!(
            Hello::parse(wrong_ns.as_bytes()),
            Err(HelloError::NotHello(_))
        ));
    }

    #[test]
    fn prefixed_rpc_is_parsed_by_namespace() {
        let msg = format!(
            r#"<nc:rpc xmlns:nc="{BASE_NS}" message-id="101" xmlns:ex="urn:ex" ex:user="a"><nc:get/></nc:rpc>"#
        );
        let Incoming::Rpc(rpc) = parse_rpc(msg.into_bytes()) else {
            panic!("rpc expected")
        };
        assert_eq!(rpc.message_id.as_deref(), Some("101"));
        assert!(rpc.operation.is(BASE_NS, "get"));
        let reply = ok_reply(&rpc.echo_attrs);
        assert!(reply.contains(r#"message-id="101""#));
        assert!(reply.contains(r#"ex:user="a""#));
        assert!(reply.contains(r#"xmlns:ex="urn:ex""#));
        crate::xml::parse(reply.as_bytes()).expect("reply is well-formed");
    }

    #[test]
    fn rpc_in_wrong_namespace_is_unknown_namespace() {
        let Incoming::Invalid { echo_attrs, error } =
            parse_rpc(br#"<rpc xmlns="urn:wrong" message-id="5"><get/></rpc>"#.to_vec())
        else {
            panic!("invalid expected")
        };
        assert_eq!(error.tag, ErrorTag::UnknownNamespace);
        assert!(echo_attrs.contains(&("message-id".into(), "5".into())));
    }

    #[test]
    fn edit_config_data_is_lazy_and_full_rebuilds_it() {
        let msg = format!(
            r#"<rpc xmlns="{BASE_NS}" message-id="1"><edit-config><target><running/></target><config><top xmlns="urn:t"><x>1</x></top></config></edit-config></rpc>"#
        );
        let Incoming::Rpc(rpc) = parse_rpc(msg.clone().into_bytes()) else {
            panic!()
        };
        assert!(rpc.has_lazy());
        let config = rpc.operation.child(BASE_NS, "config").unwrap();
        assert!(config.lazy.is_none() && config.children[0].lazy.is_some());
        assert!(rpc.operation.child(BASE_NS, "target").unwrap().children[0]
            .lazy
            .is_none());
        let full = rpc.full().unwrap();
        assert!(!full.has_lazy());
        assert_eq!(
            full.operation,
            xml::parse(msg.as_bytes()).unwrap().children[0]
        );
        // Other operations are built whole.
        let msg = format!(
            r#"<rpc xmlns="{BASE_NS}" message-id="1"><get-config><source><running/></source><filter><top xmlns="urn:t"/></filter></get-config></rpc>"#
        );
        let Incoming::Rpc(rpc) = parse_rpc(msg.into_bytes()) else {
            panic!()
        };
        assert!(!rpc.has_lazy());
    }

    #[test]
    fn missing_message_id_is_missing_attribute() {
        let msg = format!(r#"<rpc xmlns="{BASE_NS}"><get/></rpc>"#);
        let Incoming::Invalid { error, .. } = parse_rpc(msg.into_bytes()) else {
            panic!()
        };
        assert_eq!(error.tag, ErrorTag::MissingAttribute);
    }

    #[test]
    fn truncated_xml_is_malformed_and_keeps_message_id() {
        let msg = format!(r#"<rpc xmlns="{BASE_NS}" message-id="42"><get-config><source>"#);
        let Incoming::Invalid { echo_attrs, error } = parse_rpc(msg.into_bytes()) else {
            panic!()
        };
        assert_eq!(error.tag, ErrorTag::MalformedMessage);
        assert_eq!(
            echo_attrs,
            vec![("message-id".to_string(), "42".to_string())]
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let Incoming::Invalid { error, echo_attrs } = parse_rpc(vec![0, 159, 146, 150, b'<', b'<'])
        else {
            panic!()
        };
        assert_eq!(error.tag, ErrorTag::MalformedMessage);
        assert!(echo_attrs.is_empty());
    }

    #[test]
    fn empty_and_double_operations_are_errors() {
        let msg = format!(r#"<rpc xmlns="{BASE_NS}" message-id="1"></rpc>"#);
        let Incoming::Invalid { error, .. } = parse_rpc(msg.into_bytes()) else {
            panic!()
        };
        assert_eq!(error.tag, ErrorTag::MissingElement);
        let msg = format!(r#"<rpc xmlns="{BASE_NS}" message-id="1"><get/><get/></rpc>"#);
        let Incoming::Invalid { error, .. } = parse_rpc(msg.into_bytes()) else {
            panic!()
        };
        assert_eq!(error.tag, ErrorTag::MalformedMessage);
    }

    #[test]
    fn message_id_from_head_variants() {
        assert_eq!(
            message_id_from_head(br#"<rpc message-id = '7' xmlns="x">"#).as_deref(),
            Some("7")
        );
        assert_eq!(
            message_id_from_head(br#"<nc:rpc xmlns:nc="x" message-id="a b">"#).as_deref(),
            Some("a b")
        );
        assert_eq!(message_id_from_head(b"<rpc><message-id>").as_deref(), None);
        assert_eq!(message_id_from_head(b"garbage").as_deref(), None);
    }

    #[test]
    fn rpc_error_xml_matches_rfc6241_shape() {
        let e = RpcError::new(ErrorType::Application, ErrorTag::InvalidValue)
            .path(ErrorPath {
                xpath: "/l45:customizations/l45:module[l45:id='1']/l45:priority".into(),
                namespaces: vec![("l45".into(), "urn:l45".into())],
            })
            .message("value out of range <70000>")
            .info("bad-element", "priority");
        let xml = e.to_xml();
        assert_eq!(
            xml,
            "<rpc-error><error-type>application</error-type><error-tag>invalid-value</error-tag><error-severity>error</error-severity>\
<error-path xmlns:l45=\"urn:l45\">/l45:customizations/l45:module[l45:id='1']/l45:priority</error-path>\
<error-message xml:lang=\"en\">value out of range &lt;70000&gt;</error-message>\
<error-info><bad-element>priority</bad-element></error-info></rpc-error>"
        );
        let reply = error_reply(&[("message-id".into(), "3".into())], &[e]);
        crate::xml::parse(reply.as_bytes()).expect("well-formed");
    }
}
