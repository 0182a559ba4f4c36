//! A small namespace-aware element tree over one message, with byte spans
//! into the source so that subtrees can be handed on (e.g. to libyang)
//! without re-serialising them.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use thiserror::Error;

// Limits that keep the cost of a document linear in its size: every
// per-element step below is bounded by one of them.

/// Deepest nesting accepted; deeper input is rejected, not recursed into.
pub const MAX_DEPTH: usize = 512;
/// Most attributes on one element, namespace declarations included. Data
/// of the YANG models the agent serves carries a handful (an edit
/// `operation`, a filter's `type`/`select`, declarations); the cap bounds
/// the per-element work of namespace resolution and of readers that scan an
/// element's attributes.
pub const MAX_ATTRIBUTES: usize = 256;
/// Most namespace declarations in scope at any element (those on its
/// ancestors and itself, redeclarations counted). Copying or walking a
/// scope (`Element::scope_for_children`, `Element::standalone_xml`) costs
/// at most this many steps per element.
pub const MAX_NS_IN_SCOPE: usize = 256;

/// Why a document was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XmlErrorKind {
    /// Not well-formed (or not namespace-well-formed) XML.
    Malformed,
    /// Well-formed as far as read, but over one of this module's limits
    /// ([`MAX_DEPTH`], [`MAX_ATTRIBUTES`], [`MAX_NS_IN_SCOPE`]).
    Limit,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{} at byte {position}: {message}", match kind { XmlErrorKind::Malformed => "malformed XML", XmlErrorKind::Limit => "XML over a limit" })]
pub struct XmlError {
    pub position: u64,
    pub message: String,
    pub kind: XmlErrorKind,
}

/// A namespace declaration: `None` prefix is the default namespace. The
/// strings are shared: the tree holds one copy of each declaration however
/// many elements and scopes refer to it.
pub type NsDecl = (Option<Arc<str>>, Arc<str>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Shared with the declaration that bound it (see [`NsDecl`]).
    pub ns: Option<Arc<str>>,
    pub name: String,
    /// The qualified name as written (`nc:operation`).
    pub qname: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Namespace URI, `None` when the element is in no namespace; shared
    /// with the declaration that bound it (see [`NsDecl`]).
    pub ns: Option<Arc<str>>,
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
    /// Set when the element was kept without its content (see
    /// [`parse_lazy`]): `children` and `text` are then empty.
    pub lazy: Option<Lazy>,
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
    /// declarations in scope at this element's parent. Costs one step per
    /// declaration (the strings are shared, not copied).
    pub fn scope_for_children(&self, parent_scope: &[NsDecl]) -> Vec<NsDecl> {
        let mut scope: Vec<NsDecl> = Vec::with_capacity(parent_scope.len() + self.ns_decls.len());
        let redeclared = Redeclared::new(&self.ns_decls);
        scope.extend(
            parent_scope
                .iter()
                .filter(|(p, _)| !redeclared.contains(p.as_deref()))
                .cloned(),
        );
        scope.extend(self.ns_decls.iter().cloned());
        scope
    }

    /// Like [`Element::scope_for_children`], without copying when the
    /// element declares nothing (the usual case).
    pub fn scope_cow<'a>(&self, parent_scope: &'a [NsDecl]) -> std::borrow::Cow<'a, [NsDecl]> {
        if self.ns_decls.is_empty() {
            std::borrow::Cow::Borrowed(parent_scope)
        } else {
            std::borrow::Cow::Owned(self.scope_for_children(parent_scope))
        }
    }

    /// The element's source text, with every declaration in `scope` that the
    /// element does not itself redeclare added to its start tag, so the text
    /// parses on its own.
    pub fn standalone_xml(&self, source: &[u8], scope: &[NsDecl]) -> String {
        let raw = &source[self.span.clone()];
        let name_end = self.name_end - self.span.start;
        let redeclared = Redeclared::new(&self.ns_decls);
        let mut out = String::with_capacity(raw.len() + 128);
        out.push_str(&String::from_utf8_lossy(&raw[..name_end]));
        for (prefix, uri) in scope {
            if redeclared.contains(prefix.as_deref()) {
                continue;
            }
            match prefix {
                Some(p) => {
                    out.push_str(" xmlns:");
                    out.push_str(p);
                }
                None => out.push_str(" xmlns"),
            }
            out.push_str("=\"");
            out.push_str(&escape_attr(uri));
            out.push('"');
        }
        out.push_str(&String::from_utf8_lossy(&raw[name_end..]));
        out
    }
}

/// The prefixes an element declares, for "is this one redeclared here"
/// in one step each: a list scan while short, a set beyond.
enum Redeclared<'a> {
    Few(&'a [NsDecl]),
    Many(HashSet<Option<&'a str>>),
}

impl<'a> Redeclared<'a> {
    const SCAN_MAX: usize = 8;

    fn new(decls: &'a [NsDecl]) -> Self {
        if decls.len() <= Self::SCAN_MAX {
            Redeclared::Few(decls)
        } else {
            Redeclared::Many(decls.iter().map(|(p, _)| p.as_deref()).collect())
        }
    }

    fn contains(&self, prefix: Option<&str>) -> bool {
        match self {
            Redeclared::Few(decls) => decls.iter().any(|(p, _)| p.as_deref() == prefix),
            Redeclared::Many(set) => set.contains(&prefix),
        }
    }
}

/// What a lazy element (see [`parse_lazy`]) holds instead of its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lazy {
    /// Number of child elements.
    pub children: usize,
    /// Whether any element below carries an attribute (namespace
    /// declarations aside).
    pub attributes_below: bool,
}

struct Frame {
    /// `None` inside a lazy element: checked, not kept.
    element: Option<Element>,
    /// Length of the declaration stack before this element's declarations.
    decl_mark: usize,
}

/// Parses one XML document (a single root element, optional XML declaration,
/// comments and processing instructions around it).
pub fn parse(source: &[u8]) -> Result<Element, XmlError> {
    parse_lazy(source, &[])
}

/// Like [`parse`], but the children of the elements at `lazy_below` (a path
/// of (namespace, name) from the root) are kept without their content: their
/// subtrees are checked exactly as [`parse`] checks them (so a document
/// fails the same way), but only their name, attributes, declarations, span
/// and a [`Lazy`] summary remain. Read them with [`for_each_child`].
pub fn parse_lazy(source: &[u8], lazy_below: &[(&str, &str)]) -> Result<Element, XmlError> {
    let mut parser = Parser::new(source, 0, &[]);
    parser.run_inner(lazy_below, None, &mut |_, _| true)?;
    // (run_inner only returns Ok after the root element ended)
    parser.root.take().ok_or_else(|| XmlError {
        position: 0,
        message: "no root element".into(),
        kind: XmlErrorKind::Malformed,
    })
}

/// Calls `f` with each child element of `element` (fully built), one at a
/// time, parsing `element`'s span of `source` again; `scope` is the
/// declarations in scope at `element`'s parent. Stops early when `f`
/// returns `false`. Meant for lazy elements of a document [`parse_lazy`]
/// accepted.
pub fn for_each_child(
    source: &[u8],
    element: &Element,
    scope: &[NsDecl],
    mut f: impl FnMut(&Element) -> bool,
) -> Result<(), XmlError> {
    let bytes = source.get(element.span.clone()).ok_or_else(|| XmlError {
        position: element.span.start as u64,
        message: "element span outside the source".into(),
        kind: XmlErrorKind::Malformed,
    })?;
    Parser::new(bytes, element.span.start, scope).run_children(&mut f)
}

/// The namespace declarations in scope while parsing, innermost last, with
/// an index from prefix to its bindings: resolving a name is one hash probe
/// however many declarations are in scope.
struct Scope {
    decls: Vec<NsDecl>,
    /// Indices in `decls` binding the default namespace, innermost last.
    default: Vec<usize>,
    /// Indices in `decls` binding each prefix, innermost last.
    prefixed: HashMap<Arc<str>, Vec<usize>>,
    /// Every namespace and prefix string of the document, once: elements
    /// and declarations share them.
    interned: HashSet<Arc<str>>,
}

impl Scope {
    /// A scope holding `xml` and then `given`.
    fn new(given: &[NsDecl]) -> Scope {
        let mut scope = Scope {
            decls: Vec::with_capacity(given.len() + 8),
            default: Vec::new(),
            prefixed: HashMap::new(),
            interned: HashSet::new(),
        };
        let xml = (
            Some(scope.intern("xml")),
            scope.intern("http://www.w3.org/XML/1998/namespace"),
        );
        scope.push(xml);
        for decl in given {
            scope.push(decl.clone());
        }
        scope
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.interned.get(s) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(s);
        self.interned.insert(Arc::clone(&shared));
        shared
    }

    fn len(&self) -> usize {
        self.decls.len()
    }

    fn push(&mut self, decl: NsDecl) {
        let at = self.decls.len();
        match &decl.0 {
            None => self.default.push(at),
            Some(p) => self.prefixed.entry(Arc::clone(p)).or_default().push(at),
        }
        self.decls.push(decl);
    }

    /// Drops the declarations made after the scope had `len` of them.
    fn truncate(&mut self, len: usize) {
        while self.decls.len() > len {
            let Some((prefix, _)) = self.decls.pop() else {
                return;
            };
            match prefix {
                None => {
                    self.default.pop();
                }
                Some(p) => {
                    if let Some(stack) = self.prefixed.get_mut(&p) {
                        stack.pop();
                        if stack.is_empty() {
                            self.prefixed.remove(&p);
                        }
                    }
                }
            }
        }
    }

    /// The namespace bound to `prefix`; `None` when unbound or undeclared
    /// (`xmlns=""`).
    fn lookup(&self, prefix: Option<&str>) -> Option<&Arc<str>> {
        let at = match prefix {
            None => self.default.last(),
            Some(p) => self.prefixed.get(p).and_then(|stack| stack.last()),
        }?;
        self.decls
            .get(*at)
            .map(|(_, uri)| uri)
            .filter(|u| !u.is_empty())
    }
}

struct Parser<'s> {
    reader: Reader<&'s [u8]>,
    /// Added to reader positions (when parsing a slice of a message).
    offset: usize,
    scope: Scope,
    stack: Vec<Frame>,
    /// The root element once it ended.
    root: Option<Element>,
    /// Elements handed out by `run_children` and done with, kept to be
    /// filled again: reading a long list one child at a time then
    /// allocates almost nothing.
    pool: Vec<Element>,
}

/// Most elements [`Parser::pool`] keeps.
const POOL_MAX: usize = 256;

impl<'s> Parser<'s> {
    fn new(source: &'s [u8], offset: usize, given: &[NsDecl]) -> Parser<'s> {
        // quick-xml skips a byte-order mark at the start of its input
        // without counting it in its positions; skipping every leading one
        // here keeps spans indexing `source`.
        let mut bom = 0;
        while source[bom..].starts_with(b"\xEF\xBB\xBF") {
            bom += 3;
        }
        let mut reader = Reader::from_reader(&source[bom..]);
        reader.config_mut().check_end_names = true;
        reader.config_mut().check_comments = true;
        Parser {
            reader,
            offset: offset + bom,
            scope: Scope::new(given),
            stack: Vec::new(),
            root: None,
            pool: Vec::new(),
        }
    }

    /// Parses one element and hands each of its children to `f` as it ends.
    fn run_children(mut self, f: &mut dyn FnMut(&Element) -> bool) -> Result<(), XmlError> {
        let mut done = |depth: usize, element: &Element| depth != 1 || f(element);
        self.run_inner(&[], Some(1), &mut done)
    }

    /// Parses the document. `done(depth, element)` sees every kept element
    /// that ends at depth 0 (the root, then kept in `root`) or at
    /// `emit_depth` (then not added to its parent, and recycled); parsing
    /// stops when it returns `false`.
    fn run_inner(
        &mut self,
        lazy_below: &[(&str, &str)],
        emit_depth: Option<usize>,
        done: &mut dyn FnMut(usize, &Element) -> bool,
    ) -> Result<(), XmlError> {
        let mut root_seen = false;
        // Index in `stack` of the lazy element being skipped, if any.
        let mut lazy_at: Option<usize> = None;
        loop {
            let start_pos = self.reader.buffer_position() as usize + self.offset;
            let event = self.reader.read_event().map_err(|e| XmlError {
                position: self.reader.error_position() + self.offset as u64,
                message: e.to_string(),
                kind: XmlErrorKind::Malformed,
            })?;
            let end_pos = self.reader.buffer_position() as usize + self.offset;
            let err = |message: String| XmlError {
                position: start_pos as u64,
                message,
                kind: XmlErrorKind::Malformed,
            };
            let refused = |(kind, message): (XmlErrorKind, String)| XmlError {
                position: start_pos as u64,
                message,
                kind,
            };
            match event {
                Event::Start(_) | Event::Empty(_) if root_seen && self.stack.is_empty() => {
                    return Err(err("content after the root element".into()));
                }
                Event::Start(ref start) | Event::Empty(ref start) => {
                    let is_empty = matches!(event, Event::Empty(_));
                    if self.stack.len() >= MAX_DEPTH {
                        return Err(refused((
                            XmlErrorKind::Limit,
                            format!("elements nested deeper than {MAX_DEPTH}"),
                        )));
                    }
                    root_seen = true;
                    let decl_mark = self.scope.len();
                    let keep = lazy_at.is_none();
                    let reuse = if keep { self.pool.pop() } else { None };
                    let (element, attrs) =
                        open_element(start, &mut self.scope, start_pos, end_pos, keep, reuse)
                            .map_err(refused)?;
                    if let Some(at) = lazy_at {
                        let direct = self.stack.len() == at + 1;
                        if let Some(Some(lazy)) =
                            self.stack[at].element.as_mut().map(|e| e.lazy.as_mut())
                        {
                            if direct {
                                lazy.children += 1;
                            }
                            lazy.attributes_below |= attrs > 0;
                        }
                    }
                    let mut element = element;
                    if let Some(e) = element.as_mut() {
                        if is_lazy(&self.stack, lazy_below) {
                            e.lazy = Some(Lazy::default());
                            if !is_empty {
                                lazy_at = Some(self.stack.len());
                            }
                        }
                    }
                    self.stack.push(Frame { element, decl_mark });
                    if is_empty && self.close(emit_depth, done, &mut lazy_at, end_pos) {
                        return Ok(());
                    }
                }
                Event::End(_) => {
                    if self.stack.is_empty() {
                        return Err(err("unexpected end tag".into()));
                    }
                    if self.close(emit_depth, done, &mut lazy_at, end_pos) {
                        return Ok(());
                    }
                }
                Event::Text(text) => {
                    let decoded = text.xml_content().map_err(|e| err(e.to_string()))?;
                    match self.stack.last_mut() {
                        Some(frame) => {
                            if let Some(e) = frame.element.as_mut().filter(|e| e.lazy.is_none()) {
                                e.text.push_str(&decoded);
                            }
                        }
                        None => {
                            if !decoded.trim().is_empty() {
                                return Err(err("text outside the root element".into()));
                            }
                        }
                    }
                }
                Event::CData(data) => {
                    let Some(frame) = self.stack.last_mut() else {
                        return Err(err("CDATA outside the root element".into()));
                    };
                    let decoded = data.decode().map_err(|e| err(e.to_string()))?;
                    if let Some(e) = frame.element.as_mut().filter(|e| e.lazy.is_none()) {
                        e.text.push_str(&decoded);
                    }
                }
                Event::GeneralRef(reference) => {
                    let Some(frame) = self.stack.last_mut() else {
                        return Err(err("entity reference outside the root element".into()));
                    };
                    let c = if reference.is_char_ref() {
                        match reference.resolve_char_ref() {
                            Ok(Some(c)) => c,
                            _ => return Err(err("invalid character reference".into())),
                        }
                    } else {
                        let name = reference.decode().map_err(|e| err(e.to_string()))?;
                        match name.as_ref() {
                            "lt" => '<',
                            "gt" => '>',
                            "amp" => '&',
                            "apos" => '\'',
                            "quot" => '"',
                            other => return Err(err(format!("undefined entity &{other};"))),
                        }
                    };
                    if let Some(e) = frame.element.as_mut().filter(|e| e.lazy.is_none()) {
                        e.text.push(c);
                    }
                }
                Event::DocType(_) => return Err(err("DOCTYPE is not allowed".into())),
                Event::Comment(_) | Event::PI(_) | Event::Decl(_) => {}
                Event::Eof => {
                    if !self.stack.is_empty() {
                        return Err(err("document ends inside an element".into()));
                    }
                    if !root_seen {
                        return Err(err("no root element".into()));
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Ends the innermost element. Returns true when the caller asked to
    /// stop.
    fn close(
        &mut self,
        emit_depth: Option<usize>,
        done: &mut dyn FnMut(usize, &Element) -> bool,
        lazy_at: &mut Option<usize>,
        end_pos: usize,
    ) -> bool {
        let Some(frame) = self.stack.pop() else {
            return false;
        };
        self.scope.truncate(frame.decl_mark);
        let depth = self.stack.len();
        if *lazy_at == Some(depth) {
            *lazy_at = None;
        }
        let Some(mut element) = frame.element else {
            return false;
        };
        element.span.end = end_pos;
        // A long list of children grew by doubling: give back the unused
        // half so a tree stays within a fixed multiple of its source.
        if element.children.capacity() - element.children.len() > 64 {
            element.children.shrink_to_fit();
        }
        if depth == 0 {
            let go = done(depth, &element);
            self.root = Some(element);
            return !go;
        }
        if Some(depth) == emit_depth {
            let go = done(depth, &element);
            self.recycle(element);
            return !go;
        }
        if let Some(Some(parent)) = self.stack.last_mut().map(|f| f.element.as_mut()) {
            parent.children.push(element);
        }
        false
    }
}

impl Parser<'_> {
    /// Keeps `element` and its descendants for reuse (see `pool`).
    fn recycle(&mut self, mut element: Element) {
        for child in element.children.drain(..) {
            self.recycle(child);
        }
        if self.pool.len() < POOL_MAX {
            self.pool.push(element);
        }
    }
}

/// Whether an element opened below the frames of `stack` is a child of the
/// element at path `lazy_below`.
fn is_lazy(stack: &[Frame], lazy_below: &[(&str, &str)]) -> bool {
    !lazy_below.is_empty()
        && stack.len() == lazy_below.len()
        && stack
            .iter()
            .zip(lazy_below)
            .all(|(f, (ns, name))| f.element.as_ref().is_some_and(|e| e.is(ns, name)))
}

/// Attribute names of one start tag, for the duplicate check: a list scan
/// while short, a set beyond, so a tag costs linear time in its size.
#[derive(Default)]
struct SeenNames<'a> {
    list: Vec<&'a [u8]>,
    set: HashSet<&'a [u8]>,
}

impl<'a> SeenNames<'a> {
    const SCAN_MAX: usize = 8;

    /// Adds `name`; false when it was there already.
    fn insert(&mut self, name: &'a [u8]) -> bool {
        if self.list.len() < Self::SCAN_MAX {
            count_name_comparisons(self.list.len());
            if self.list.contains(&name) {
                return false;
            }
            self.list.push(name);
            return true;
        }
        if self.set.is_empty() {
            self.set.extend(self.list.iter().copied());
        }
        count_name_comparisons(1);
        self.set.insert(name)
    }
}

#[cfg(test)]
thread_local! {
    /// Attribute-name comparisons (a set probe counts one) made by this
    /// thread's duplicate checks: the tests' measure of work.
    static NAME_COMPARISONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
fn count_name_comparisons(n: usize) {
    NAME_COMPARISONS.with(|c| c.set(c.get() + n));
}

#[cfg(not(test))]
fn count_name_comparisons(_: usize) {}

/// Why a start tag was refused.
type Refusal = (XmlErrorKind, String);

fn malformed(message: impl ToString) -> Refusal {
    (XmlErrorKind::Malformed, message.to_string())
}

/// Reads a start tag: pushes its namespace declarations onto `scope`,
/// resolves and checks every name; builds the element when `keep`.
/// Returns the element and its number of attributes (declarations aside).
fn open_element(
    start: &BytesStart<'_>,
    scope: &mut Scope,
    start_pos: usize,
    end_pos: usize,
    keep: bool,
    reuse: Option<Element>,
) -> Result<(Option<Element>, usize), Refusal> {
    let qname = start.name();
    let qname = std::str::from_utf8(qname.as_ref()).map_err(malformed)?;
    // quick-xml reads `< />` as an element without a name.
    if qname.is_empty() || qname.starts_with(':') || qname.ends_with(':') {
        return Err(malformed("element without a name"));
    }
    let mut ns_decls = Vec::new();
    let mut raw_attrs: Vec<(String, String)> = Vec::new();
    let mut seen = SeenNames::default();
    let mut attributes = start.attributes();
    // quick-xml's own duplicate check compares each name with every earlier
    // one (quadratic in the attribute count); `seen` replaces it.
    attributes.with_checks(false);
    for (i, attr) in attributes.enumerate() {
        if i == MAX_ATTRIBUTES {
            return Err((
                XmlErrorKind::Limit,
                format!("element <{qname}> has more than {MAX_ATTRIBUTES} attributes"),
            ));
        }
        let attr = attr.map_err(malformed)?;
        let key_bytes = attr.key.into_inner();
        let key = std::str::from_utf8(key_bytes).map_err(malformed)?;
        if !seen.insert(key_bytes) {
            return Err(malformed(format!("duplicated attribute '{key}'")));
        }
        let value = attr.unescape_value().map_err(malformed)?;
        if key == "xmlns" {
            ns_decls.push((None, scope.intern(&value)));
        } else if let Some(prefix) = key.strip_prefix("xmlns:") {
            if value.is_empty() {
                return Err(malformed(format!("empty namespace for prefix {prefix}")));
            }
            ns_decls.push((Some(scope.intern(prefix)), scope.intern(&value)));
        } else {
            raw_attrs.push((key.to_string(), value.into_owned()));
        }
    }
    for decl in &ns_decls {
        scope.push(decl.clone());
    }
    // (the xml prefix's built-in declaration is not counted)
    if scope.len() > MAX_NS_IN_SCOPE + 1 {
        return Err((
            XmlErrorKind::Limit,
            format!("more than {MAX_NS_IN_SCOPE} namespace declarations in scope"),
        ));
    }
    let resolve = |prefix: &str| -> Result<Arc<str>, Refusal> {
        scope
            .lookup(Some(prefix))
            .cloned()
            .ok_or_else(|| malformed(format!("undeclared namespace prefix '{prefix}'")))
    };
    let (ns, name) = match qname.split_once(':') {
        Some((prefix, local)) => (Some(resolve(prefix)?), local),
        None => (scope.lookup(None).cloned(), qname),
    };
    let mut attrs = Vec::with_capacity(if keep { raw_attrs.len() } else { 0 });
    let count = raw_attrs.len();
    for (key, value) in raw_attrs {
        let (ns, name) = match key.split_once(':') {
            Some((prefix, local)) => (Some(resolve(prefix)?), local.to_string()),
            // Unprefixed attributes are in no namespace.
            None => (None, key.clone()),
        };
        if keep {
            attrs.push(Attribute {
                ns,
                name,
                qname: key,
                value,
            });
        }
    }
    if !keep {
        return Ok((None, count));
    }
    let element = match reuse {
        // A recycled element: same content as a new one, its buffers kept.
        Some(mut e) => {
            e.ns = ns;
            e.name.clear();
            e.name.push_str(name);
            e.attrs = attrs;
            e.ns_decls = ns_decls;
            e.children.clear();
            e.text.clear();
            e.span = start_pos..end_pos;
            e.name_end = start_pos + 1 + qname.len();
            e.lazy = None;
            e
        }
        None => Element {
            ns,
            name: name.to_string(),
            attrs,
            ns_decls,
            children: Vec::new(),
            text: String::new(),
            span: start_pos..end_pos,
            name_end: start_pos + 1 + qname.len(),
            lazy: None,
        },
    };
    Ok((Some(element), count))
}

/// Escapes character data, copying only when something needs escaping.
pub fn escape_text_cow(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['<', '>', '&']) {
        std::borrow::Cow::Owned(escape_text(s))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
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
    fn byte_order_mark_keeps_spans_in_the_source() {
        // Found by fuzzing: after a BOM every span was 3 bytes early.
        let src = "\u{feff}<a xmlns=\"urn:x\"><b>t</b></a>".as_bytes();
        let root = parse(src).unwrap();
        assert_eq!(&src[root.span.clone()], br#"<a xmlns="urn:x"><b>t</b></a>"#);
        assert_eq!(&src[root.children[0].span.clone()], b"<b>t</b>");
        assert_eq!(
            root.children[0].standalone_xml(src, &[(None, "urn:x".into())]),
            r#"<b xmlns="urn:x">t</b>"#
        );
    }

    #[test]
    fn every_leading_byte_order_mark_is_skipped_and_names_are_required() {
        // Found by fuzzing: quick-xml skipped a second mark uncounted, and
        // took `< />` for an element.
        let src = "\u{feff}\u{feff}<a/>".as_bytes();
        assert_eq!(&src[parse(src).unwrap().span.clone()], b"<a/>");
        for bad in ["< />", "<a>< /></a>", "<a: />", "<:a/>"] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

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

    const LAZY_DOC: &[u8] = br#"<rpc xmlns="urn:b" xmlns:p="urn:p"><edit><config><p:top a="1"><p:x>1 &amp; 2</p:x><y xmlns="urn:y"><z p:q="v"/></y></p:top><p:other/>  </config></edit></rpc>"#;
    const LAZY_PATH: &[(&str, &str)] = &[("urn:b", "rpc"), ("urn:b", "edit"), ("urn:b", "config")];

    #[test]
    fn lazy_children_keep_their_tag_and_a_summary() {
        let full = parse(LAZY_DOC).unwrap();
        let lazy = parse_lazy(LAZY_DOC, LAZY_PATH).unwrap();
        let (fc, lc) = (&full.children[0].children[0], &lazy.children[0].children[0]);
        assert_eq!(fc.children.len(), 2);
        for (f, l) in fc.children.iter().zip(&lc.children) {
            assert_eq!(
                (&f.ns, &f.name, &f.attrs, &f.ns_decls, &f.span, f.name_end),
                (&l.ns, &l.name, &l.attrs, &l.ns_decls, &l.span, l.name_end)
            );
            assert!(l.children.is_empty() && l.text.is_empty());
        }
        assert_eq!(
            lc.children[0].lazy,
            Some(Lazy {
                children: 2,
                attributes_below: true
            })
        );
        assert_eq!(
            lc.children[1].lazy,
            Some(Lazy {
                children: 0,
                attributes_below: false
            })
        );
        assert_eq!(fc.children[0].lazy, None);
        // Reading a lazy element's children gives what the full parse had.
        let scope = full.scope_for_children(&[]);
        let scope = full.children[0].scope_for_children(&scope);
        let scope = fc.scope_for_children(&scope);
        let mut got = Vec::new();
        for_each_child(LAZY_DOC, &lc.children[0], &scope, |c| {
            got.push(c.clone());
            true
        })
        .unwrap();
        assert_eq!(got, fc.children[0].children);
        let mut n = 0;
        for_each_child(LAZY_DOC, &lc.children[0], &scope, |_| {
            n += 1;
            false
        })
        .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn lazy_parse_fails_exactly_like_a_full_parse() {
        let head = r#"<rpc xmlns="urn:b"><edit><config><top>"#;
        for inner in [
            "<q:x/>",
            "<x a='1' a='2'/>",
            "&bogus;",
            "&#0;",
            "<x a='&nope;'/>",
            "<x></y>",
            "<!DOCTYPE x>",
            "<x>",
        ] {
            let doc = format!("{head}{inner}</top></config></edit></rpc>");
            let full = parse(doc.as_bytes()).unwrap_err();
            let lazy = parse_lazy(doc.as_bytes(), LAZY_PATH).unwrap_err();
            assert_eq!(full, lazy, "{inner}");
        }
        let mut deep = head.to_string();
        for _ in 0..MAX_DEPTH {
            deep.push_str("<a>");
        }
        assert_eq!(
            parse(deep.as_bytes()).unwrap_err(),
            parse_lazy(deep.as_bytes(), LAZY_PATH).unwrap_err()
        );
    }

    fn attributes(n: usize) -> String {
        (0..n).map(|i| format!(" a{i}='{i}'")).collect()
    }

    fn comparisons_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
        NAME_COMPARISONS.with(|c| c.set(0));
        let out = f();
        (out, NAME_COMPARISONS.with(|c| c.get()))
    }

    #[test]
    fn attributes_up_to_the_cap_are_checked_in_linear_work() {
        // Namespace declarations count as attributes.
        let doc = format!(
            "<a xmlns='urn:a' xmlns:p='urn:p'{} p:x='1'/>",
            attributes(MAX_ATTRIBUTES - 3)
        );
        let (root, work) = comparisons_during(|| parse(doc.as_bytes()));
        let root = root.unwrap();
        assert_eq!(root.attrs.len(), MAX_ATTRIBUTES - 2);
        assert_eq!(root.attr(Some("urn:p"), "x"), Some("1"));
        // At most SCAN_MAX comparisons per attribute (a quadratic check
        // would make ~n²/2 = 32 640).
        assert!(work <= MAX_ATTRIBUTES * SeenNames::SCAN_MAX, "{work}");
    }

    #[test]
    fn too_many_attributes_are_refused_at_the_cap() {
        for n in [MAX_ATTRIBUTES + 1, 20_000, 200_000] {
            let doc = format!("<r><f><x{}/></f></r>", attributes(n));
            let (err, work) = comparisons_during(|| parse(doc.as_bytes()));
            let err = err.unwrap_err();
            assert_eq!(err.kind, XmlErrorKind::Limit, "{n}: {err}");
            assert!(err.message.contains("more than 256 attributes"), "{err}");
            assert_eq!(err.position, 6, "the element with too many");
            // The work stops at the cap, whatever the message holds.
            assert!(work <= MAX_ATTRIBUTES * SeenNames::SCAN_MAX, "{n}: {work}");
        }
        // The lazy parse refuses it the same way.
        let doc = format!(
            r#"<rpc xmlns="urn:b"><edit><config><top><x{}/></top></config></edit></rpc>"#,
            attributes(1000)
        );
        assert_eq!(
            parse(doc.as_bytes()).unwrap_err(),
            parse_lazy(doc.as_bytes(), LAZY_PATH).unwrap_err()
        );
    }

    #[test]
    fn duplicate_attributes_are_found_among_many() {
        for (n, dup) in [(3, 1), (8, 7), (9, 0), (200, 3), (200, 199)] {
            let doc = format!("<x{} a{dup}='again'/>", attributes(n));
            let err = parse(doc.as_bytes()).unwrap_err();
            assert_eq!(err.kind, XmlErrorKind::Malformed);
            assert!(
                err.message
                    .contains(&format!("duplicated attribute 'a{dup}'")),
                "{err}"
            );
        }
    }

    /// Bytes a tree holds on the heap (allocator overhead aside), each
    /// shared string counted once.
    fn tree_bytes(e: &Element, seen: &mut HashSet<*const u8>) -> usize {
        let mut shared = |s: &Arc<str>| {
            if seen.insert(s.as_ptr()) {
                s.len()
            } else {
                0
            }
        };
        let mut n = e.name.capacity() + e.text.capacity();
        n += e.children.capacity() * std::mem::size_of::<Element>();
        n += e.attrs.capacity() * std::mem::size_of::<Attribute>();
        n += e.ns_decls.capacity() * std::mem::size_of::<NsDecl>();
        n += e.ns.as_ref().map_or(0, &mut shared);
        for a in &e.attrs {
            n += a.name.capacity() + a.qname.capacity() + a.value.capacity();
            n += a.ns.as_ref().map_or(0, &mut shared);
        }
        for (p, uri) in &e.ns_decls {
            n += p.as_ref().map_or(0, &mut shared) + shared(uri);
        }
        n + e
            .children
            .iter()
            .map(|c| tree_bytes(c, seen))
            .sum::<usize>()
    }

    #[test]
    fn a_namespace_is_held_once_however_many_elements_use_it() {
        let ns = format!("urn:x:{}", "n".repeat(4090));
        let n = 200_000;
        let doc = format!("<top xmlns=\"{ns}\">{}</top>", "<a/>".repeat(n));
        let root = parse(doc.as_bytes()).unwrap();
        assert_eq!(root.children.len(), n);
        let top_ns = root.ns.clone().unwrap();
        assert!(root
            .children
            .iter()
            .all(|c| c.ns.as_ref().is_some_and(|ns| Arc::ptr_eq(ns, &top_ns))));
        // The tree, the declaration and this test's copy: no other holder.
        assert_eq!(Arc::strong_count(&top_ns), n + 3);
        // One element per 4 source bytes is the densest a document gets;
        // a tree of empty elements is the largest per source byte.
        let bytes = tree_bytes(&root, &mut HashSet::new());
        assert!(bytes <= 48 * doc.len(), "{bytes} for {}", doc.len());
        // Redeclaring the same namespace shares the string too.
        let doc = format!("<top>{}</top>", format!("<a xmlns='{ns}'/>").repeat(100));
        let root = parse(doc.as_bytes()).unwrap();
        let first = root.children[0].ns.clone().unwrap();
        assert!(root
            .children
            .iter()
            .all(|c| c.ns.as_ref().is_some_and(|ns| Arc::ptr_eq(ns, &first))));
    }

    #[test]
    fn namespace_declarations_in_scope_are_capped() {
        // Spread over nested elements, each under the attribute cap.
        let open = |k: usize| {
            format!(
                "<e{k}{}>",
                (0..64)
                    .map(|i| format!(" xmlns:p{k}x{i}='urn:{i}'"))
                    .collect::<String>()
            )
        };
        let mut ok = String::new();
        for k in 0..4 {
            ok.push_str(&open(k));
        }
        let close: String = (0..4).rev().map(|k| format!("</e{k}>")).collect();
        let root = parse(format!("{ok}<leaf/>{close}").as_bytes()).unwrap();
        let mut scope = Vec::new();
        let mut e = &root;
        loop {
            scope = e.scope_for_children(&scope);
            match e.children.first() {
                Some(c) => e = c,
                None => break,
            }
        }
        assert_eq!(scope.len(), MAX_NS_IN_SCOPE);
        let err = parse(format!("{ok}<leaf xmlns='urn:one-more'/>{close}").as_bytes()).unwrap_err();
        assert_eq!(err.kind, XmlErrorKind::Limit);
        assert!(
            err.message.contains("namespace declarations in scope"),
            "{err}"
        );
        // Declarations of siblings are out of scope again.
        let siblings = format!(
            "<r>{}</r>",
            "<s xmlns:a='urn:a' xmlns:b='urn:b'/>".repeat(1000)
        );
        parse(siblings.as_bytes()).unwrap();
    }

    #[test]
    fn scope_for_children_replaces_redeclared_prefixes() {
        let parent: Vec<NsDecl> = (0..20)
            .map(|i| {
                (
                    Some(Arc::from(format!("p{i}"))),
                    Arc::from(format!("urn:old{i}")),
                )
            })
            .chain([(None, Arc::from("urn:default"))])
            .collect();
        // Many redeclarations (the set path) and a few (the scan path).
        for count in [2, 10] {
            let decls: String = (0..count)
                .map(|i| format!(" xmlns:p{}='urn:new{i}'", i * 2))
                .collect();
            let doc = format!("<e xmlns='urn:d2'{decls}/>");
            let e = parse(doc.as_bytes()).unwrap();
            let scope = e.scope_for_children(&parent);
            let lookup = |p: Option<&str>| {
                scope
                    .iter()
                    .rev()
                    .find(|(q, _)| q.as_deref() == p)
                    .map(|(_, u)| u.to_string())
            };
            assert_eq!(scope.len(), 21);
            assert_eq!(lookup(None).as_deref(), Some("urn:d2"));
            assert_eq!(lookup(Some("p0")).as_deref(), Some("urn:new0"));
            assert_eq!(lookup(Some("p1")).as_deref(), Some("urn:old1"));
            let xml = e.standalone_xml(doc.as_bytes(), &parent);
            assert_eq!(xml.matches("xmlns").count(), 21, "{xml}");
            assert!(
                !xml.contains("urn:old0") && !xml.contains("urn:default"),
                "{xml}"
            );
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(escape_text("a<b&c>"), "a&lt;b&amp;c&gt;");
        assert_eq!(escape_attr("\"x\"&"), "&quot;x&quot;&amp;");
    }
}
