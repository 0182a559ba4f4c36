//! Which `module` entries a read's filter can select, decided from the
//! filter alone, so that a filtered `get`/`get-config` builds its libyang
//! tree from those entries only instead of the whole store.
//!
//! The analysis is conservative: it understands absolute location paths of
//! child steps whose predicates compare a child leaf (or `.`) with a
//! literal — what subtree filters become (`filter.rs`) and the usual XPath
//! filters (`/l45:customizations/l45:module[l45:id='7']`). Anything else
//! ([`reach`] returns `None`) is read the general way. What it returns is a
//! superset: every entry a path could select on the whole store (plus
//! entries that merely might), never fewer. Since such a path decides on a
//! node from that node's own subtree only, and the model has no constraint
//! between entries, the filter selects the same nodes from the smaller tree
//! as from the whole one.

use std::collections::BTreeSet;

use crate::datastore::{ListSchema, ModuleMap};
use crate::filter::Filter;

/// The part of the module list a filter can reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Every entry may be selected.
    All,
    /// Only these entries may be selected (stored ids, in order).
    Entries(BTreeSet<u32>),
}

/// The libyang name of the model's module (the prefix of its top node in
/// the filter's JSON-style XPath).
const L45_MODULE: &str = l45_yang::L45_MODULE;

/// A literal compared with a node in a predicate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Literal {
    /// `'…'` or `"…"`: compared as a string.
    Quoted(String),
    /// Decimal digits: compared as a number.
    Number(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Predicate {
    /// `None`: `.`, the step's own node.
    leaf: Option<String>,
    value: Literal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    prefix: Option<String>,
    name: String,
    predicates: Vec<Predicate>,
}

/// A leaf of the entry that must hold one of these printed values.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Content {
    /// Containers between `module` and the leaf.
    parents: Vec<String>,
    leaf: String,
    values: Vec<String>,
}

/// What one path needs of the module list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Need {
    /// No entry (another top node, the socket list).
    Nothing,
    All,
    /// Entries with the key (`None`: any) holding every content value.
    Where {
        key: Option<Option<u32>>,
        content: Vec<Content>,
    },
}

/// What the reader may see of the module list (NACM): the analysis looks
/// at stored values, so it must not look at values hidden from the reader
/// — how long a read takes would tell whether some entry holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visible {
    /// The module list at all.
    pub modules: bool,
    /// The `default-deny-all` leaves (module keys, under `security`).
    pub keys: bool,
}

/// The entries `filter` can select from `modules`, or `None` when the
/// analysis cannot tell (then the whole store must be read).
pub fn reach(
    filter: &Filter,
    schema: &ListSchema,
    modules: &ModuleMap,
    visible: Visible,
) -> Option<Reach> {
    let Filter::XPaths(paths) = filter else {
        return Some(Reach::All);
    };
    let mut needs = Vec::with_capacity(paths.len());
    for path in paths {
        let need = need_of(&parse_path(path)?, schema)?;
        match &need {
            Need::All => return Some(Reach::All),
            Need::Where { .. } if !visible.modules => return None,
            Need::Where { content, .. }
                if !visible.keys
                    && content
                        .iter()
                        .any(|c| c.parents.first().is_some_and(|p| p == "security")) =>
            {
                return None
            }
            _ => {}
        }
        needs.push(need);
    }
    let mut out = BTreeSet::new();
    let mut scans: Vec<Vec<Matcher>> = Vec::new();
    for need in &needs {
        match need {
            Need::Nothing | Need::All => {}
            Need::Where {
                key: Some(id),
                content,
            } => {
                let matchers: Vec<Matcher> = content.iter().map(Matcher::new).collect();
                if let Some((id, e)) = id.and_then(|id| modules.get_key_value(&id)) {
                    if matchers.iter().all(|m| m.holds(e)) {
                        out.insert(*id);
                    }
                }
            }
            Need::Where { key: None, content } => {
                scans.push(content.iter().map(Matcher::new).collect())
            }
        }
    }
    if !scans.is_empty() {
        for (id, e) in modules {
            if scans.iter().any(|m| m.iter().all(|m| m.holds(e))) {
                out.insert(*id);
            }
        }
    }
    Some(Reach::Entries(out))
}

/// Whether every path of `filter` starts at one of `tops` (module name,
/// node name); `false` for anything the analysis does not understand.
pub fn tops_within(filter: &Filter, tops: &[(&str, &str)]) -> bool {
    let Filter::XPaths(paths) = filter else {
        return false;
    };
    paths.iter().all(|path| {
        parse_path(path).is_some_and(|steps| {
            steps.first().is_some_and(|top| {
                tops.iter()
                    .any(|(m, n)| top.prefix.as_deref() == Some(*m) && top.name == *n)
            })
        })
    })
}

/// The entries a one-path filter selects as whole entries, decided from
/// their stored text without libyang: the path is
/// `/l45:customizations/l45:module` with predicates on leaves directly
/// under `module` only (what a subtree content match on such leaves
/// becomes), each such leaf's name is one the entry's schema has nowhere
/// else (so a `<leaf>` element in the stored text is that leaf), and every
/// entry's text decides every predicate. The comparisons are those of
/// [`reach`] (the literal and its canonical form against the stored,
/// canonical text; a leaf whose default matches is not decided), so on
/// such a path the superset it returns is exact. `None` when any of this
/// does not hold: the caller reads the general way. `visible` as for
/// [`reach`] (and the caller shows whole entries only to a reader who may
/// read all of them).
pub fn whole_entries(
    filter: &Filter,
    schema: &ListSchema,
    modules: &ModuleMap,
    visible: Visible,
) -> Option<BTreeSet<u32>> {
    let Filter::XPaths(paths) = filter else {
        return None;
    };
    let [path] = paths.as_slice() else {
        return None;
    };
    if !visible.modules || !visible.keys {
        return None;
    }
    let steps = parse_path(path)?;
    let [_, list] = steps.as_slice() else {
        return None;
    };
    let Need::Where { key, content } = need_of(&steps, schema)? else {
        return None;
    };
    if list.name != "module" {
        return None;
    }
    let named_once = |leaf: &str| {
        schema.leaves.iter().filter(|l| l.name == leaf).count() == 1
            && !schema
                .containers
                .iter()
                .any(|c| c.iter().any(|name| name == leaf))
            && !schema
                .cases
                .iter()
                .any(|(_, _, c)| c.as_deref() == Some(leaf))
    };
    if !content
        .iter()
        .all(|c| c.parents.is_empty() && named_once(&c.leaf))
    {
        return None;
    }
    let matchers: Vec<Matcher> = content.iter().map(Matcher::new).collect();
    let selects = |e: &str| -> Option<bool> {
        for m in &matchers {
            if !m.decides(e)? {
                return Some(false);
            }
        }
        Some(true)
    };
    let mut out = BTreeSet::new();
    match key {
        Some(id) => {
            if let Some((id, e)) = id.and_then(|id| modules.get_key_value(&id)) {
                if selects(e)? {
                    out.insert(*id);
                }
            }
        }
        None => {
            for (id, e) in modules {
                if selects(e)? {
                    out.insert(*id);
                }
            }
        }
    }
    Some(out)
}

/// What a parsed path needs of the module list; `None`: not understood.
fn need_of(steps: &[Step], schema: &ListSchema) -> Option<Need> {
    let (top, rest) = steps.split_first()?;
    // The top step needs its module's name (libyang's JSON form).
    let prefix = top.prefix.as_deref()?;
    if !(prefix == L45_MODULE && top.name == "customizations") {
        // Another top node: predicates there see only that node's children.
        return Some(Need::Nothing);
    }
    if !top.predicates.is_empty() {
        return None;
    }
    let Some((list, below)) = rest.split_first() else {
        return Some(Need::All);
    };
    let ours = |s: &Step| s.prefix.as_deref().is_none_or(|p| p == L45_MODULE);
    if !rest.iter().all(ours) {
        return None;
    }
    if list.name != "module" {
        // The socket list (state), or a name the model does not have.
        return Some(Need::Nothing);
    }
    let mut key = None;
    let mut content = Vec::new();
    let mut parents: Vec<String> = Vec::new();
    let mut add = |parents: &[String], p: &Predicate, step_name: &str| -> Option<()> {
        let (parents, leaf) = match &p.leaf {
            Some(leaf) => (parents, leaf.as_str()),
            // `.` compares the step's own node: a leaf under its parents.
            None => (parents.split_last().map(|(_, ps)| ps)?, step_name),
        };
        if parents.is_empty() && leaf == "id" {
            let text = match &p.value {
                Literal::Quoted(t) | Literal::Number(t) => t,
            };
            let id = Some(schema.key_of(text)?);
            if key.is_some_and(|k| k != id) {
                // Two different keys: no entry has both.
                key = Some(None);
            } else {
                key = Some(id);
            }
            return Some(());
        }
        // A number compares by value with any text: only strings here.
        let Literal::Quoted(text) = &p.value else {
            return None;
        };
        content.push(content_of(schema, parents, leaf, text)?);
        Some(())
    };
    for p in &list.predicates {
        // (`.` of a list entry: not a leaf)
        p.leaf.as_ref()?;
        add(&parents, p, &list.name)?;
    }
    for step in below {
        parents.push(step.name.clone());
        for p in &step.predicates {
            add(&parents, p, &step.name)?;
        }
    }
    if key.is_none() && content.is_empty() {
        return Some(Need::All);
    }
    Some(Need::Where { key, content })
}

/// The printed values a config leaf may hold for a predicate's literal to
/// match it: the literal itself (string comparison) and its canonical form
/// (libyang canonizes a literal compared with a typed node). `None` for
/// leaves the store does not hold as they print (identities) or cannot
/// check, and when the default matches.
fn content_of(schema: &ListSchema, parents: &[String], leaf: &str, text: &str) -> Option<Content> {
    let idx = schema.leaf_index(parents, leaf)?;
    let l = schema.leaves.get(idx)?;
    if l.identity || text.is_empty() {
        return None;
    }
    let printed = schema.check(idx, text)?;
    if printed.is_empty() {
        return None;
    }
    let mut values = vec![text.to_string()];
    if printed != text {
        values.push(printed);
    }
    // An entry without the leaf holds its default (libyang adds it), which
    // the stored text does not show.
    if l.default.as_ref().is_some_and(|d| values.contains(d)) {
        return None;
    }
    Some(Content {
        parents: parents.to_vec(),
        leaf: leaf.to_string(),
        values,
    })
}

/// What an entry's stored text says of a [`Content`].
enum Scan {
    /// A `<leaf>` element holds one of the values.
    Yes,
    /// No `<leaf>` element does.
    No,
    /// No `<leaf>` element does, but an element of that name is not a
    /// leaf (a container): which one the path means is not told by the
    /// text.
    NoLeafButContainer,
    /// The text cannot tell (an entity this does not know, no end tag).
    Unknown,
}

/// A [`Content`] test with its searchers built once (a scan runs it on
/// every stored entry).
struct Matcher<'c> {
    content: &'c Content,
    open: memchr::memmem::Finder<'static>,
    close: memchr::memmem::Finder<'static>,
}

impl<'c> Matcher<'c> {
    fn new(content: &'c Content) -> Matcher<'c> {
        let open = format!("<{}>", content.leaf);
        let close = format!("</{}>", content.leaf);
        Matcher {
            content,
            open: memchr::memmem::Finder::new(open.as_bytes()).into_owned(),
            close: memchr::memmem::Finder::new(close.as_bytes()).into_owned(),
        }
    }

    /// Whether the entry may hold the content: some `<leaf>` element whose
    /// text is one of the values. Errs on the side of yes (an entity it
    /// does not know).
    fn holds(&self, entry: &str) -> bool {
        !matches!(self.scan(entry), Scan::No | Scan::NoLeafButContainer)
    }

    /// Whether the entry holds the content, when its stored text decides
    /// it: `Some(true)` for a `<leaf>` element whose text is one of the
    /// values, `Some(false)` when no `<leaf>` element holds one, `None`
    /// when the text alone cannot tell (an entity this does not know, an
    /// element of that name that is not a leaf). A `<leaf>` anywhere in
    /// the entry counts: exact only for a name the entry's schema has
    /// once (see [`whole_entries`]).
    fn decides(&self, entry: &str) -> Option<bool> {
        match self.scan(entry) {
            Scan::Yes => Some(true),
            Scan::No => Some(false),
            Scan::NoLeafButContainer | Scan::Unknown => None,
        }
    }

    /// The `<leaf>` elements of the entry against the values.
    fn scan(&self, entry: &str) -> Scan {
        let mut rest = entry.as_bytes();
        let open_len = self.open.needle().len();
        let close = self.close.needle();
        let mut container = false;
        while let Some(at) = self.open.find(rest) {
            rest = &rest[at + open_len..];
            // The text ends at the first `<`: the end tag for a leaf, else
            // (a container of that name) look further. (No memmem for the
            // end tag: on entries of a few hundred bytes each search's
            // set-up costs more than the scan.)
            let Some(end) = memchr::memchr(b'<', rest) else {
                return Scan::Unknown;
            };
            if !rest[end..].starts_with(close) {
                if memchr::memmem::find(&rest[end..], close).is_none() {
                    return Scan::Unknown;
                }
                container = true;
                continue;
            }
            let text = &rest[..end];
            let Ok(text) = std::str::from_utf8(text) else {
                return Scan::Unknown;
            };
            if !text.contains('&') {
                if self.content.values.iter().any(|v| v == text) {
                    return Scan::Yes;
                }
                continue;
            }
            match unescape(text) {
                Some(t) if self.content.values.contains(&t) => return Scan::Yes,
                Some(_) => {}
                None => return Scan::Unknown,
            }
        }
        // A leaf printed empty (`<leaf/>`) cannot hold a non-empty value.
        if container {
            Scan::NoLeafButContainer
        } else {
            Scan::No
        }
    }
}

/// XML character data with its entities replaced; `None` for an entity
/// this does not know.
fn unescape(text: &str) -> Option<String> {
    if !text.contains('&') {
        return Some(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 1..];
        let end = tail.find(';')?;
        let c = match &tail[..end] {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            num => {
                let code = if let Some(hex) = num.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()?
                } else {
                    num.strip_prefix('#')?.parse().ok()?
                };
                char::from_u32(code)?
            }
        };
        out.push(c);
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// Parses `/step/step…` where a step is `[prefix:]name` followed by
/// predicates `[[prefix:]name = literal]` or `[. = literal]`; `None` for
/// anything else.
fn parse_path(path: &str) -> Option<Vec<Step>> {
    let mut p = Parser {
        s: path.as_bytes(),
        i: 0,
    };
    let mut steps = Vec::new();
    p.ws();
    while p.i < p.s.len() {
        p.eat(b'/')?;
        let (prefix, name) = p.qname()?;
        let mut predicates = Vec::new();
        while p.peek() == Some(b'[') {
            p.i += 1;
            p.ws();
            let leaf = if p.peek() == Some(b'.') {
                p.i += 1;
                None
            } else {
                let (lp, ln) = p.qname()?;
                if lp.is_some_and(|lp| lp != L45_MODULE) {
                    return None;
                }
                Some(ln)
            };
            p.ws();
            p.eat(b'=')?;
            p.ws();
            let value = p.literal()?;
            p.ws();
            p.eat(b']')?;
            predicates.push(Predicate { leaf, value });
        }
        p.ws();
        steps.push(Step {
            prefix,
            name,
            predicates,
        });
    }
    if steps.is_empty() {
        return None;
    }
    Some(steps)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek() == Some(c)).then(|| self.i += 1)
    }

    /// A YANG identifier (ASCII; anything else is left to libyang).
    fn ident(&mut self) -> Option<String> {
        let start = self.i;
        match self.peek() {
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => self.i += 1,
            _ => return None,
        }
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
        {
            self.i += 1;
        }
        let word = std::str::from_utf8(&self.s[start..self.i]).ok()?;
        // An axis (`child::`), a node test (`node()`) or a function: not a
        // plain name step.
        if matches!(self.peek(), Some(b'(')) || self.s[self.i..].starts_with(b"::") {
            return None;
        }
        Some(word.to_string())
    }

    fn qname(&mut self) -> Option<(Option<String>, String)> {
        let first = self.ident()?;
        if self.peek() == Some(b':') {
            self.i += 1;
            let name = self.ident()?;
            Some((Some(first), name))
        } else {
            Some((None, first))
        }
    }

    fn literal(&mut self) -> Option<Literal> {
        match self.peek()? {
            q @ (b'\'' | b'"') => {
                self.i += 1;
                let start = self.i;
                let len = self.s[start..].iter().position(|&c| c == q)?;
                self.i = start + len + 1;
                let text = std::str::from_utf8(&self.s[start..start + len]).ok()?;
                Some(Literal::Quoted(text.to_string()))
            }
            c if c.is_ascii_digit() => {
                let start = self.i;
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.i += 1;
                }
                // `5.0`, `5e1`…: not a plain integer.
                if self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'.')
                {
                    return None;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).ok()?;
                Some(Literal::Number(text.to_string()))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
