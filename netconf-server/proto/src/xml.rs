//! A small namespace-aware element tree over one message, with byte spans
//! into the source so that subtrees can be handed on (e.g. to libyang)
//! without re-serialising them.

use std::ops::Range;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use thiserror::Error;

/// Deepest nesting accepted; deeper input is rejected, not recursed into.
pub const MAX_DEPTH: usize = 512;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("malformed XML at byte {position}: {message}")]
pub struct XmlError {
    pub position: u64,
    pub message: String,
}

/// A namespace declaration: `None` prefix is the default namespace.
pub type NsDecl = (Option<String>, String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub ns: Option<String>,
    pub name: String,
    /// The qualified name as written (`nc:operation`).
    pub qname: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Namespace URI, `None` when the element is in no namespace.
    pub ns: Option<String>,
    pub name: String,
    pub attrs: Vec<Attribute>,
    /// Namespace declarations made on this element.
    pub ns_decls: Vec<NsDecl>,
    pub children: Vec<Element>,
    /// Concatenated character data directly inside this element.
    pub text: String,
    /// Bytes of the whole element in the source.
    pub span: Range<usize>,
    /// Offset just after the element name in its start tag.
    pub name_end: usize,
}

impl Element {
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.name == name && self.ns.as_deref() == Some(ns)
    }

    /// First child with this namespace and name.
    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    pub fn attr(&self, ns: Option<&str>, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.name == name && a.ns.as_deref() == ns)
            .map(|a| a.value.as_str())
    }

    pub fn trimmed_text(&self) -> &str {
        self.text.trim()
    }

    /// The in-scope declarations for this element's children, given the
    /// declarations in scope at this element's parent.
    pub fn scope_for_children(&self, parent_scope: &[NsDecl]) -> Vec<NsDecl> {
        let mut scope: Vec<NsDecl> = parent_scope.to_vec();
        for decl in &self.ns_decls {
            scope.retain(|(p, _)| p != &decl.0);
            scope.push(decl.clone());
        }
        scope
    }

    /// The element's source text, with every declaration in `scope` that the
    /// element does not itself redeclare added to its start tag, so the text
    /// parses on its own.
    pub fn standalone_xml(&self, source: &[u8], scope: &[NsDecl]) -> String {
        let raw = &source[self.span.clone()];
        let name_end = self.name_end - self.span.start;
        let mut out = String::with_capacity(raw.len() + 128);
        out.push_str(&String::from_utf8_lossy(&raw[..name_end]));
        for (prefix, uri) in scope {
            if self.ns_decls.iter().any(|(p, _)| p == prefix) {
                continue;
            }
            match prefix {
                Some(p) => out.push_str(&format!(" xmlns:{p}=\"{}\"", escape_attr(uri))),
                None => out.push_str(&format!(" xmlns=\"{}\"", escape_attr(uri))),
            }
        }
        out.push_str(&String::from_utf8_lossy(&raw[name_end..]));
        out
    }
}

struct Frame {
    element: Element,
    /// Declarations visible inside this element.
    scope: Vec<NsDecl>,
}

/// Parses one XML document (a single root element, optional XML declaration,
/// comments and processing instructions around it).
pub fn parse(source: &[u8]) -> Result<Element, XmlError> {
    let mut reader = Reader::from_reader(source);
    reader.config_mut().check_end_names = true;
    reader.config_mut().check_comments = true;
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Element> = None;
    let base_scope: Vec<NsDecl> = vec![(
        Some("xml".to_string()),
        "http://www.w3.org/XML/1998/namespace".to_string(),
    )];
    loop {
        let start_pos = reader.buffer_position() as usize;
        let event = reader.read_event().map_err(|e| XmlError {
            position: reader.error_position(),
            message: e.to_string(),
        })?;
        let end_pos = reader.buffer_position() as usize;
        let err = |message: String| XmlError {
            position: start_pos as u64,
            message,
        };
        match event {
            Event::Start(start) | Event::Empty(start) if root.is_some() => {
                let _ = start;
                return Err(err("content after the root element".into()));
            }
            Event::Start(ref start) | Event::Empty(ref start) => {
                let is_empty = matches!(event, Event::Empty(_));
                if stack.len() >= MAX_DEPTH {
                    return Err(err(format!("elements nested deeper than {MAX_DEPTH}")));
                }
                let parent_scope = stack
                    .last()
                    .map(|f| f.scope.as_slice())
                    .unwrap_or(&base_scope);
                let (element, scope) =
                    open_element(start, parent_scope, start_pos, end_pos).map_err(err)?;
                if is_empty {
                    match stack.last_mut() {
                        Some(parent) => parent.element.children.push(element),
                        None => root = Some(element),
                    }
                } else {
                    stack.push(Frame { element, scope });
                }
            }
            Event::End(_) => {
                let Some(mut frame) = stack.pop() else {
                    return Err(err("unexpected end tag".into()));
                };
                frame.element.span.end = end_pos;
                match stack.last_mut() {
                    Some(parent) => parent.element.children.push(frame.element),
                    None => root = Some(frame.element),
                }
            }
            Event::Text(text) => {
                let decoded = text.xml_content().map_err(|e| err(e.to_string()))?;
                match stack.last_mut() {
                    Some(frame) => frame.element.text.push_str(&decoded),
                    None => {
                        if !decoded.trim().is_empty() {
                            return Err(err("text outside the root element".into()));
                        }
                    }
                }
            }
            Event::CData(data) => {
                let Some(frame) = stack.last_mut() else {
                    return Err(err("CDATA outside the root element".into()));
                };
                let decoded = data.decode().map_err(|e| err(e.to_string()))?;
                frame.element.text.push_str(&decoded);
            }
            Event::GeneralRef(reference) => {
                let Some(frame) = stack.last_mut() else {
                    return Err(err("entity reference outside the root element".into()));
                };
                if reference.is_char_ref() {
                    match reference.resolve_char_ref() {
                        Ok(Some(c)) => frame.element.text.push(c),
                        _ => return Err(err("invalid character reference".into())),
                    }
                } else {
                    let name = reference.decode().map_err(|e| err(e.to_string()))?;
                    let c = match name.as_ref() {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "apos" => '\'',
                        "quot" => '"',
                        other => return Err(err(format!("undefined entity &{other};"))),
                    };
                    frame.element.text.push(c);
                }
            }
            Event::DocType(_) => return Err(err("DOCTYPE is not allowed".into())),
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) => {}
            Event::Eof => {
                if !stack.is_empty() {
                    return Err(err("document ends inside an element".into()));
                }
                return root.ok_or_else(|| err("no root element".into()));
            }
        }
    }
}

fn open_element(
    start: &BytesStart<'_>,
    parent_scope: &[NsDecl],
    start_pos: usize,
    end_pos: usize,
) -> Result<(Element, Vec<NsDecl>), String> {
    let qname = std::str::from_utf8(start.name().as_ref())
        .map_err(|e| e.to_string())?
        .to_string();
    let mut ns_decls = Vec::new();
    let mut raw_attrs = Vec::new();
    for attr in start.attributes().with_checks(true) {
        let attr = attr.map_err(|e| e.to_string())?;
        let key = std::str::from_utf8(attr.key.as_ref())
            .map_err(|e| e.to_string())?
            .to_string();
        let value = attr
            .unescape_value()
            .map_err(|e| e.to_string())?
            .into_owned();
        if key == "xmlns" {
            ns_decls.push((None, value));
        } else if let Some(prefix) = key.strip_prefix("xmlns:") {
            if value.is_empty() {
                return Err(format!("empty namespace for prefix {prefix}"));
            }
            ns_decls.push((Some(prefix.to_string()), value));
        } else {
            raw_attrs.push((key, value));
        }
    }
    let mut scope = parent_scope.to_vec();
    for decl in &ns_decls {
        scope.retain(|(p, _)| p != &decl.0);
        scope.push(decl.clone());
    }
    let lookup = |prefix: Option<&str>| -> Option<String> {
        scope
            .iter()
            .rev()
            .find(|(p, _)| p.as_deref() == prefix)
            .map(|(_, uri)| uri.clone())
            .filter(|u| !u.is_empty())
    };
    let (ns, name) = match qname.split_once(':') {
        Some((prefix, local)) => {
            let ns = lookup(Some(prefix))
                .ok_or_else(|| format!("undeclared namespace prefix '{prefix}'"))?;
            (Some(ns), local.to_string())
        }
        None => (lookup(None), qname.clone()),
    };
    let mut attrs = Vec::with_capacity(raw_attrs.len());
    for (key, value) in raw_attrs {
        let (ns, name) = match key.split_once(':') {
            Some((prefix, local)) => {
                let ns = lookup(Some(prefix))
                    .ok_or_else(|| format!("undeclared namespace prefix '{prefix}'"))?;
                (Some(ns), local.to_string())
            }
            // Unprefixed attributes are in no namespace.
            None => (None, key.clone()),
        };
        attrs.push(Attribute {
            ns,
            name,
            qname: key,
            value,
        });
    }
    let element = Element {
        ns,
        name,
        attrs,
        ns_decls,
        children: Vec::new(),
        text: String::new(),
        span: start_pos..end_pos,
        name_end: start_pos + 1 + qname.len(),
    };
    Ok((element, scope))
}

/// Escapes character data.
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            _ => out.push(c),
        }
    }
    out
}

/// Escapes an attribute value for double quotes.
pub fn escape_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#10;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_prefixed_and_default_namespaces() {
        let src = br#"<?xml version="1.0"?><nc:rpc xmlns:nc="urn:b" message-id="1"><get-config xmlns="urn:b"><source><running/></source></get-config></nc:rpc>"#;
        let root = parse(src).unwrap();
        assert!(root.is("urn:b", "rpc"));
        assert_eq!(root.attr(None, "message-id"), Some("1"));
        let op = &root.children[0];
        assert!(op.is("urn:b", "get-config"));
        assert!(op
            .child("urn:b", "source")
            .unwrap()
            .child("urn:b", "running")
            .is_some());
    }

    #[test]
    fn entity_and_char_references_are_decoded() {
        let root = parse(b"<a>x &lt; y &amp;&#65;&#x42;<![CDATA[<z>]]></a>").unwrap();
        assert_eq!(root.text, "x < y &AB<z>");
    }

    #[test]
    fn malformed_documents_are_errors() {
        for bad in [
            &b"<a><b></a>"[..],
            b"<a>",
            b"",
            b"<a/><b/>",
            b"<p:a/>",
            b"<a>&bogus;</a>",
            b"<!DOCTYPE a [<!ENTITY x 'y'>]><a/>",
            b"\xff\xfe<a/>",
            b"<a b='1' b='2'/>",
            b"text",
        ] {
            assert!(
                parse(bad).is_err(),
                "{:?} should fail",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn deep_nesting_is_rejected_without_recursion() {
        let mut src = Vec::new();
        for _ in 0..(MAX_DEPTH + 10) {
            src.extend_from_slice(b"<a>");
        }
        let e = parse(&src).unwrap_err();
        assert!(e.message.contains("deeper"));
    }

    #[test]
    fn standalone_xml_carries_inherited_namespaces() {
        let src = br#"<rpc xmlns="urn:b" xmlns:l="urn:l"><config><l:top><l:x>1</l:x></l:top></config></rpc>"#;
        let root = parse(src).unwrap();
        let scope = root.scope_for_children(&[]);
        let config = &root.children[0];
        let scope = config.scope_for_children(&scope);
        let top = &config.children[0];
        let xml = top.standalone_xml(src, &scope);
        assert_eq!(
            xml,
            r#"<l:top xmlns="urn:b" xmlns:l="urn:l"><l:x>1</l:x></l:top>"#
        );
        let reparsed = parse(xml.as_bytes()).unwrap();
        assert!(reparsed.is("urn:l", "top"));
    }

    #[test]
    fn escaping() {
        assert_eq!(escape_text("a<b&c>"), "a&lt;b&amp;c&gt;");
        assert_eq!(escape_attr("\"x\"&"), "&quot;x&quot;&amp;");
    }
}
