//! Pure parsing of what a NETCONF server sends after the hello:
//! `<rpc-reply>` (with `<ok/>`, data or `<rpc-error>`s) and `<notification>`.
//! Built on the proto crate's namespace-aware element tree, so prefixed
//! replies (`<nc:rpc-reply xmlns:nc=…>`) are handled like unprefixed ones.

use l45_netconf_proto::message::NOTIFICATION_NS;
use l45_netconf_proto::xml::{self, Element, NsDecl};
use l45_netconf_proto::BASE_NS;

use super::error::{NetconfError, RpcErrorInfo};

/// The outcome of one RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `<ok/>`.
    Ok,
    /// Anything else without errors: the reply's child elements, each as
    /// standalone XML (namespace declarations inherited from `<rpc-reply>`
    /// are copied onto it). For `<get>`/`<get-config>` this is the
    /// `<data>` element; [`super::Session::get`] and
    /// [`super::Session::get_config`] return its content instead. An empty
    /// reply (an RPC without output) gives an empty string.
    Data(String),
    /// One or more `<rpc-error>` (warnings included).
    Errors(Vec<RpcErrorInfo>),
}

impl Reply {
    /// `Ok(())` for `<ok/>` or an empty reply; errors become
    /// [`NetconfError::RpcFailed`]; data is unexpected.
    pub fn into_ok(self) -> Result<(), NetconfError> {
        match self {
            Reply::Ok => Ok(()),
            Reply::Data(d) if d.trim().is_empty() => Ok(()),
            Reply::Data(d) => Err(NetconfError::UnexpectedReply(format!(
                "expected <ok/>, got data ({} bytes)",
                d.len()
            ))),
            Reply::Errors(e) => Err(NetconfError::RpcFailed(e)),
        }
    }

    /// The data of a successful reply (`""` for `<ok/>`); errors become
    /// [`NetconfError::RpcFailed`].
    pub fn into_data(self) -> Result<String, NetconfError> {
        match self {
            Reply::Ok => Ok(String::new()),
            Reply::Data(d) => Ok(d),
            Reply::Errors(e) => Err(NetconfError::RpcFailed(e)),
        }
    }
}

/// One event notification (RFC 5277).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// `eventTime` as sent (RFC 3339).
    pub event_time: String,
    /// Namespace and local name of the first content element, e.g.
    /// (`urn:ietf:params:xml:ns:yang:ietf-netconf-notifications`,
    /// `netconf-config-change`).
    pub kind: Option<(String, String)>,
    /// The content elements (everything but `eventTime`), standalone XML.
    pub body: String,
}

/// A parsed message from the server (after the hello).
#[derive(Debug)]
pub(crate) enum Incoming {
    Reply(RawReply),
    Notification(Notification),
}

/// A parsed `<rpc-reply>` not yet turned into a [`Reply`]: the conversion
/// runs in the caller's task, not in the session's reader.
#[derive(Debug)]
pub(crate) struct RawReply {
    pub message_id: Option<String>,
    pub source: Vec<u8>,
    pub root: Element,
}

/// Classifies one complete message. On failure the message comes back
/// with the reason, so the caller can still look for its message-id.
pub(crate) fn parse_incoming(source: Vec<u8>) -> Result<Incoming, (String, Vec<u8>)> {
    let root = match xml::parse(&source) {
        Ok(root) => root,
        Err(e) => return Err((e.to_string(), source)),
    };
    if root.is(BASE_NS, "rpc-reply") {
        let message_id = root.attr(None, "message-id").map(str::to_string);
        return Ok(Incoming::Reply(RawReply {
            message_id,
            source,
            root,
        }));
    }
    if root.is(NOTIFICATION_NS, "notification") {
        return Ok(Incoming::Notification(notification(&root, &source)));
    }
    Err((
        format!(
            "expected <rpc-reply> or <notification>, got <{}> in namespace {}",
            root.name,
            root.ns.as_deref().unwrap_or("(none)")
        ),
        source,
    ))
}

fn notification(root: &Element, source: &[u8]) -> Notification {
    let scope = root.scope_for_children(&[]);
    let mut event_time = String::new();
    let mut kind = None;
    let mut body = String::new();
    for child in &root.children {
        if child.is(NOTIFICATION_NS, "eventTime") && event_time.is_empty() {
            event_time = child.trimmed_text().to_string();
            continue;
        }
        if kind.is_none() {
            kind = Some((
                child.ns.as_deref().unwrap_or_default().to_string(),
                child.name.clone(),
            ));
        }
        body.push_str(&child.standalone_xml(source, &scope));
    }
    Notification {
        event_time,
        kind,
        body,
    }
}

impl RawReply {
    fn errors(&self, scope: &[NsDecl]) -> Vec<RpcErrorInfo> {
        self.root
            .children
            .iter()
            .filter(|c| c.is(BASE_NS, "rpc-error"))
            .map(|e| rpc_error(e, &self.source, scope))
            .collect()
    }

    /// The generic view of the reply.
    pub fn to_reply(&self) -> Reply {
        let scope = self.root.scope_for_children(&[]);
        let errors = self.errors(&scope);
        if !errors.is_empty() {
            return Reply::Errors(errors);
        }
        let children = &self.root.children;
        if children.len() == 1 && children[0].is(BASE_NS, "ok") {
            return Reply::Ok;
        }
        Reply::Data(children_xml(children, &self.source, &scope))
    }

    /// The content of `<data>` (get, get-config); `""` for `<ok/>` or an
    /// empty reply.
    pub fn data_content(&self) -> Result<String, NetconfError> {
        let scope = self.root.scope_for_children(&[]);
        let errors = self.errors(&scope);
        if !errors.is_empty() {
            return Err(NetconfError::RpcFailed(errors));
        }
        match self.root.child(BASE_NS, "data") {
            Some(data) => {
                let inner = data.scope_for_children(&scope);
                Ok(children_xml(&data.children, &self.source, &inner))
            }
            None if self.root.children.iter().all(|c| c.is(BASE_NS, "ok")) => Ok(String::new()),
            None => Err(NetconfError::UnexpectedReply(format!(
                "reply has no <data> but <{}>",
                self.root
                    .children
                    .first()
                    .map(|c| c.name.as_str())
                    .unwrap_or("")
            ))),
        }
    }
}

fn children_xml(children: &[Element], source: &[u8], scope: &[NsDecl]) -> String {
    let mut out = String::new();
    for c in children {
        out.push_str(&c.standalone_xml(source, scope));
    }
    out
}

fn rpc_error(e: &Element, source: &[u8], parent_scope: &[NsDecl]) -> RpcErrorInfo {
    let scope = e.scope_for_children(parent_scope);
    let mut info = RpcErrorInfo::default();
    for c in &e.children {
        if c.ns.as_deref() != Some(BASE_NS) {
            continue;
        }
        let text = || c.trimmed_text().to_string();
        match c.name.as_str() {
            "error-type" => info.error_type = text(),
            "error-tag" => info.error_tag = text(),
            "error-severity" => info.error_severity = text(),
            "error-app-tag" => info.error_app_tag = Some(text()),
            "error-path" => {
                info.error_path = Some(text());
                info.error_path_namespaces = c
                    .scope_for_children(&scope)
                    .into_iter()
                    .map(|(p, uri)| (p.map(|p| p.to_string()), uri.to_string()))
                    .collect();
            }
            "error-message" => info.error_message = Some(text()),
            "error-info" => info.error_info = Some(c.standalone_xml(source, &scope)),
            _ => {}
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(xml: &str) -> RawReply {
        match parse_incoming(xml.as_bytes().to_vec()) {
            Ok(Incoming::Reply(r)) => r,
            other => panic!("not a reply: {other:?}"),
        }
    }

    #[test]
    fn prefixed_ok_reply() {
        let r = reply(&format!(
            r#"<nc:rpc-reply xmlns:nc="{BASE_NS}" message-id="7"><nc:ok/></nc:rpc-reply>"#
        ));
        assert_eq!(r.message_id.as_deref(), Some("7"));
        assert_eq!(r.to_reply(), Reply::Ok);
        assert_eq!(r.data_content().unwrap(), "");
    }

    #[test]
    fn data_reply_keeps_inherited_namespaces() {
        let r = reply(&format!(
            r#"<rpc-reply xmlns="{BASE_NS}" xmlns:x="urn:x" message-id="1"><data><x:top><x:a>1</x:a></x:top><b xmlns="urn:b"/></data></rpc-reply>"#
        ));
        let content = r.data_content().unwrap();
        assert_eq!(
            content,
            format!(
                r#"<x:top xmlns="{BASE_NS}" xmlns:x="urn:x"><x:a>1</x:a></x:top><b xmlns:x="urn:x" xmlns="urn:b"/>"#
            )
        );
        match r.to_reply() {
            Reply::Data(d) => assert!(d.starts_with("<data xmlns=")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_are_parsed() {
        let r = reply(&format!(
            r#"<rpc-reply xmlns="{BASE_NS}" message-id="3"><rpc-error><error-type>application</error-type><error-tag>invalid-value</error-tag><error-severity>error</error-severity><error-app-tag>range</error-app-tag><error-path xmlns:l45="urn:l45">/l45:c/l45:m[l45:id='1']/l45:priority</error-path><error-message xml:lang="en">out of range</error-message><error-info><bad-element>priority</bad-element></error-info></rpc-error><rpc-error><error-type>rpc</error-type><error-tag>lock-denied</error-tag><error-severity>error</error-severity></rpc-error></rpc-reply>"#
        ));
        let Reply::Errors(errs) = r.to_reply() else {
            panic!("expected errors")
        };
        assert_eq!(errs.len(), 2);
        let e = &errs[0];
        assert_eq!(e.error_type, "application");
        assert_eq!(e.error_tag, "invalid-value");
        assert_eq!(e.error_severity, "error");
        assert_eq!(e.error_app_tag.as_deref(), Some("range"));
        assert_eq!(
            e.error_path.as_deref(),
            Some("/l45:c/l45:m[l45:id='1']/l45:priority")
        );
        assert!(e
            .error_path_namespaces
            .contains(&(Some("l45".into()), "urn:l45".into())));
        assert_eq!(e.error_message.as_deref(), Some("out of range"));
        assert!(e
            .error_info
            .as_deref()
            .unwrap_or("")
            .contains("<bad-element>priority</bad-element>"));
        assert_eq!(errs[1].error_tag, "lock-denied");
        assert!(matches!(
            r.data_content(),
            Err(NetconfError::RpcFailed(v)) if v.len() == 2
        ));
    }

    #[test]
    fn notification_is_parsed() {
        let xml = format!(
            r#"<notification xmlns="{NOTIFICATION_NS}"><eventTime>2026-01-01T00:00:00Z</eventTime><netconf-config-change xmlns="urn:n"><datastore>running</datastore></netconf-config-change></notification>"#
        );
        let Ok(Incoming::Notification(n)) = parse_incoming(xml.into_bytes()) else {
            panic!("expected notification")
        };
        assert_eq!(n.event_time, "2026-01-01T00:00:00Z");
        assert_eq!(
            n.kind,
            Some(("urn:n".to_string(), "netconf-config-change".to_string()))
        );
        assert!(n
            .body
            .starts_with("<netconf-config-change xmlns=\"urn:n\">"));
    }

    #[test]
    fn other_roots_and_garbage_are_rejected() {
        assert!(parse_incoming(b"<rpc-reply/>".to_vec()).is_err());
        assert!(parse_incoming(b"<a><b></a>".to_vec()).is_err());
        assert!(parse_incoming(format!("<hello xmlns=\"{BASE_NS}\"/>").into_bytes()).is_err());
    }
}
