//! RFC 8526 `get-data` and `edit-data` on the NMDA datastores (RFC 8342).
//!
//! The agent has no configuration templates or inactive configuration, so
//! `intended` is `running`; `operational` is running's configuration with
//! the state `get` returns (the tap's module state and sockets, RFC 6022,
//! the YANG library). A read goes the way `get`/`get-config` go
//! (`ops/get.rs`: the stored-entry shortcuts, else the tree narrowed to
//! what the filter can select, NACM, the filter); the NMDA parameters
//! (config-filter, origin filters, max-depth, with-origin) then work on the
//! selected tree. `edit-data` is `edit-config` on running or candidate.
//!
//! Origins (RFC 8342 `ietf-origin`): configuration in `operational` comes
//! from `intended` (`or:intended`; a default value in use is
//! `or:default`). RFC 8342 defines the annotation for configuration; the
//! agent also marks state, so a reader sees where it came from: what the tap
//! reports (module state, sockets) is `or:learned`, the agent's own state
//! (RFC 6022, the YANG library) `or:system`. The annotation is put on each
//! top-level node and wherever a node's origin differs from its parent's.

use std::collections::HashSet;
use std::sync::Arc;

use l45_netconf_proto::message::Rpc;
use l45_netconf_proto::xml::{Element, NsDecl};
use l45_netconf_proto::{ErrorTag, ErrorType, RpcError};
use yang3::data::{Data, DataNodeRef, DataPrinterFlags, DataTree};

use super::get::Read;
use super::{print_flags_in, After, Body, ReadReply, Reply};
use crate::agent::Agent;
use crate::config::edit::EditConfig;
use crate::datastore::Datastore;
use crate::error::OpError;
use crate::filter::{self, Filter};
use crate::nacm::Nacm;
use crate::sessions::SessionInfo;

pub const NMDA_NS: &str = "urn:ietf:params:xml:ns:yang:ietf-netconf-nmda";
const DATASTORES_NS: &str = "urn:ietf:params:xml:ns:yang:ietf-datastores";
const ORIGIN_NS: &str = "urn:ietf:params:xml:ns:yang:ietf-origin";
/// The metadata annotation, as libyang names it.
const ORIGIN_META: &str = "ietf-origin:origin";
/// The start tag of `get-data`'s output.
const DATA_OPEN: &str = "<data xmlns=\"urn:ietf:params:xml:ns:yang:ietf-netconf-nmda\">";

/// The datastores of RFC 8342 the agent has (`ietf-datastores` identities).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NmdaDatastore {
    Running,
    Candidate,
    Startup,
    Intended,
    Operational,
}

impl NmdaDatastore {
    /// The `<datastore>` parameter (an identityref with an XML prefix).
    fn parse(op: &Element, op_scope: &[NsDecl]) -> Result<NmdaDatastore, OpError> {
        let el = op
            .child(NMDA_NS, "datastore")
            .ok_or(OpError::MissingParameter {
                element: "datastore",
                message: "<datastore> is missing".into(),
            })?;
        let scope = el.scope_for_children(op_scope);
        let (ns, name) = identity(el.trimmed_text(), &scope);
        let unsupported = || OpError::BadParameter {
            element: "datastore".into(),
            message: format!("datastore {} is not supported", el.trimmed_text()),
        };
        if ns != Some(DATASTORES_NS) {
            return Err(unsupported());
        }
        Ok(match name {
            "running" => NmdaDatastore::Running,
            "candidate" => NmdaDatastore::Candidate,
            "startup" => NmdaDatastore::Startup,
            "intended" => NmdaDatastore::Intended,
            "operational" => NmdaDatastore::Operational,
            _ => return Err(unsupported()),
        })
    }

    fn name(self) -> &'static str {
        match self {
            NmdaDatastore::Running => "running",
            NmdaDatastore::Candidate => "candidate",
            NmdaDatastore::Startup => "startup",
            NmdaDatastore::Intended => "intended",
            NmdaDatastore::Operational => "operational",
        }
    }

    /// The conventional datastore holding its configuration.
    fn config_source(self) -> Datastore {
        match self {
            NmdaDatastore::Running | NmdaDatastore::Intended | NmdaDatastore::Operational => {
                Datastore::Running
            }
            NmdaDatastore::Candidate => Datastore::Candidate,
            NmdaDatastore::Startup => Datastore::Startup,
        }
    }
}

/// An identityref's text split into the namespace its prefix is bound to
/// in `scope` (the default namespace without a prefix) and its name.
fn identity<'t>(text: &'t str, scope: &'t [NsDecl]) -> (Option<&'t str>, &'t str) {
    let (prefix, name) = match text.split_once(':') {
        Some((p, n)) => (Some(p), n),
        None => (None, text),
    };
    let ns = scope
        .iter()
        .rev()
        .find(|(p, _)| p.as_deref() == prefix)
        .map(|(_, uri)| &**uri);
    (ns, name)
}

/// Where a node of the operational datastore comes from (`ietf-origin`
/// identities the agent uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Intended,
    Default,
    Learned,
    System,
}

impl Origin {
    fn of(node: &DataNodeRef<'_>) -> Origin {
        let schema = node.schema();
        if schema.is_config() {
            if node.is_default() {
                Origin::Default
            } else {
                Origin::Intended
            }
        } else if schema.module().name() == l45_yang::L45_MODULE {
            Origin::Learned
        } else {
            Origin::System
        }
    }

    fn name(self) -> &'static str {
        match self {
            Origin::Intended => "intended",
            Origin::Default => "default",
            Origin::Learned => "learned",
            Origin::System => "system",
        }
    }

    /// Whether this origin is `base` or derived from it (all are derived
    /// from `origin`; none from another).
    fn derived_from_or_self(self, base: &str) -> bool {
        base == "origin" || base == self.name()
    }
}

/// `origin-filter` / `negated-origin-filter`: identity names of
/// ietf-origin.
struct OriginFilter {
    identities: Vec<String>,
    negated: bool,
}

impl OriginFilter {
    /// Whether a configuration node of `origin` passes.
    fn passes(&self, origin: Origin) -> bool {
        let hit = self
            .identities
            .iter()
            .any(|i| origin.derived_from_or_self(i));
        hit != self.negated
    }
}

/// A `get-data` request, parsed once.
struct GetData {
    datastore: NmdaDatastore,
    filter: Filter,
    config_filter: Option<bool>,
    origin_filter: Option<OriginFilter>,
    /// Levels per selected node; `None` is unbounded.
    max_depth: Option<u16>,
    with_origin: bool,
    flags: DataPrinterFlags,
}

fn bad(element: &str, message: String) -> OpError {
    OpError::BadParameter {
        element: element.into(),
        message,
    }
}

/// Refuses a child of `op` that is not one of `known` (RFC 6241: an
/// unknown parameter is an unknown-element error).
fn only_known(op: &Element, known: &[&str]) -> Result<(), OpError> {
    for child in &op.children {
        if child.ns.as_deref() != Some(NMDA_NS) || !known.contains(&child.name.as_str()) {
            return Err(OpError::Wire(vec![RpcError::new(
                ErrorType::Protocol,
                ErrorTag::UnknownElement,
            )
            .message(format!("{} takes no parameter {}", op.name, child.name))
            .info("bad-element", &child.name)]));
        }
    }
    Ok(())
}

impl GetData {
    fn parse(ctx: &'static yang3::context::Context, rpc: &Rpc) -> Result<GetData, OpError> {
        let op = &rpc.operation;
        only_known(
            op,
            &[
                "datastore",
                "subtree-filter",
                "xpath-filter",
                "config-filter",
                "origin-filter",
                "negated-origin-filter",
                "max-depth",
                "with-origin",
                "with-defaults",
            ],
        )?;
        let op_scope = rpc.op_child_scope();
        let datastore = NmdaDatastore::parse(op, &op_scope)?;
        let operational = datastore == NmdaDatastore::Operational;
        let filter = match (
            op.child(NMDA_NS, "subtree-filter"),
            op.child(NMDA_NS, "xpath-filter"),
        ) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "xpath-filter",
                    "subtree-filter and xpath-filter exclude each other".into(),
                ))
            }
            (Some(subtree), None) => filter::subtree_filter(ctx, subtree, &op_scope),
            (None, Some(xpath)) => {
                let scope = xpath.scope_for_children(&op_scope);
                let translated = filter::translate_xpath(ctx, xpath.trimmed_text(), &scope)
                    .map_err(|e| names_element(e, "xpath-filter"))?;
                Filter::XPaths(vec![translated])
            }
            (None, None) => Filter::All,
        };
        let config_filter = match op.child(NMDA_NS, "config-filter") {
            None => None,
            Some(el) => Some(match el.trimmed_text() {
                "true" => true,
                "false" => false,
                other => return Err(bad("config-filter", format!("bad config-filter {other}"))),
            }),
        };
        let origin_filter = {
            let positive: Vec<&Element> = children(op, "origin-filter");
            let negative: Vec<&Element> = children(op, "negated-origin-filter");
            if !positive.is_empty() && !negative.is_empty() {
                return Err(bad(
                    "negated-origin-filter",
                    "origin-filter and negated-origin-filter exclude each other".into(),
                ));
            }
            let negated = positive.is_empty();
            let given = if negated { negative } else { positive };
            if given.is_empty() {
                None
            } else {
                let element = if negated {
                    "negated-origin-filter"
                } else {
                    "origin-filter"
                };
                if !operational {
                    return Err(bad(
                        element,
                        format!("{element} applies to the operational datastore only"),
                    ));
                }
                let mut identities = Vec::with_capacity(given.len());
                for el in given {
                    let scope = el.scope_for_children(&op_scope);
                    let (ns, name) = identity(el.trimmed_text(), &scope);
                    if ns != Some(ORIGIN_NS) || !ORIGIN_IDENTITIES.contains(&name) {
                        return Err(bad(
                            element,
                            format!("{} is not an origin", el.trimmed_text()),
                        ));
                    }
                    identities.push(name.to_string());
                }
                Some(OriginFilter {
                    identities,
                    negated,
                })
            }
        };
        let max_depth = match op.child(NMDA_NS, "max-depth").map(|e| e.trimmed_text()) {
            None | Some("unbounded") => None,
            Some(t) => match t.parse::<u16>() {
                Ok(d) if d >= 1 => Some(d),
                _ => return Err(bad("max-depth", format!("bad max-depth {t}"))),
            },
        };
        let with_origin = op.child(NMDA_NS, "with-origin").is_some();
        if with_origin && !operational {
            return Err(bad(
                "with-origin",
                "with-origin applies to the operational datastore only".into(),
            ));
        }
        let flags = print_flags_in(op.child(NMDA_NS, "with-defaults"))?;
        Ok(GetData {
            datastore,
            filter,
            config_filter,
            origin_filter,
            max_depth,
            with_origin,
            flags,
        })
    }

    /// Whether only what `get`/`get-config` take was asked for.
    fn plain(&self) -> bool {
        self.config_filter.is_none()
            && self.origin_filter.is_none()
            && self.max_depth.is_none()
            && !self.with_origin
    }
}

/// A filter error (which names `<filter>`) naming get-data's parameter.
fn names_element(mut error: RpcError, element: &str) -> RpcError {
    for (name, text) in &mut error.info {
        if name == "bad-element" && text == "filter" {
            *text = element.to_string();
        }
    }
    error
}

/// The identities of ietf-origin.
const ORIGIN_IDENTITIES: &[&str] = &[
    "origin", "intended", "dynamic", "system", "learned", "default", "unknown",
];

fn children<'e>(op: &'e Element, name: &str) -> Vec<&'e Element> {
    op.children.iter().filter(|c| c.is(NMDA_NS, name)).collect()
}

// ===== selecting nodes in a reply tree =====

/// Removes every node `selects` does not select and that has no kept
/// descendant; the keys of a kept list entry stay, and a non-presence
/// container stays only for a kept descendant (alone it says nothing).
fn keep_only(
    tree: &mut DataTree<'static>,
    selects: &dyn Fn(&DataNodeRef<'_>) -> bool,
) -> Result<(), yang3::Error> {
    let mut drop = Vec::new();
    if let Some(first) = tree.reference() {
        for top in first.inclusive_siblings() {
            if !mark_kept(&top, selects, &mut drop) {
                drop.push(top.path());
            }
        }
    }
    for path in drop {
        l45_yang::remove_path(tree, &path)?;
    }
    Ok(())
}

/// Whether `node` is kept; the paths of its children that are not (and
/// are not keys) go to `drop` when it is.
fn mark_kept(
    node: &DataNodeRef<'_>,
    selects: &dyn Fn(&DataNodeRef<'_>) -> bool,
    drop: &mut Vec<String>,
) -> bool {
    let mut left_out = Vec::new();
    let mut any_child = false;
    for child in node.children() {
        if mark_kept(&child, selects, drop) {
            any_child = true;
        } else if !child.schema().is_list_key() {
            left_out.push(child);
        }
    }
    let schema = node.schema();
    let kept = any_child || (selects(node) && !schema.is_np_container());
    if kept {
        drop.extend(left_out.iter().map(|c| c.path()));
    }
    kept
}

/// Cuts every subtree deeper than `max` levels below a selected node
/// (`selected`: data paths); list keys stay with their entry, and the
/// ancestors of a selected node stay.
fn limit_depth(
    tree: &mut DataTree<'static>,
    selected: &[String],
    max: u16,
) -> Result<(), yang3::Error> {
    let selected_set: HashSet<&str> = selected.iter().map(String::as_str).collect();
    // Every proper ancestor of a selected node, as a data path.
    let mut ancestors: HashSet<String> = HashSet::new();
    if let Some(first) = tree.reference() {
        for top in first.inclusive_siblings() {
            for node in top.traverse() {
                if selected_set.contains(node.path().as_str()) {
                    for a in node.ancestors() {
                        ancestors.insert(a.path());
                    }
                }
            }
        }
    }
    let mut cuts = Cuts::default();
    if let Some(first) = tree.reference() {
        for top in first.inclusive_siblings() {
            cut(&top, &selected_set, &ancestors, None, max, &mut cuts);
        }
    }
    for path in cuts.drop {
        l45_yang::remove_path(tree, &path)?;
    }
    // A container whose content was cut is still there, empty: without
    // this libyang would take it for a default node and print nothing.
    for path in cuts.emptied {
        if let Ok(node) = tree.find_path(&path) {
            l45_yang::mark_explicit(&node);
        }
    }
    Ok(())
}

/// What [`cut`] found: subtrees to remove and non-presence containers
/// they leave empty.
#[derive(Default)]
struct Cuts {
    drop: Vec<String>,
    emptied: Vec<String>,
}

/// `levels`: how many levels `node` and its subtree may still use (`None`:
/// not below a selected node). Whether `node` itself is cut.
fn cut(
    node: &DataNodeRef<'_>,
    selected: &HashSet<&str>,
    ancestors: &HashSet<String>,
    levels: Option<u16>,
    max: u16,
    cuts: &mut Cuts,
) -> bool {
    let path = node.path();
    let levels = if selected.contains(path.as_str()) {
        Some(levels.map_or(max, |l| l.max(max)))
    } else {
        levels
    };
    if levels == Some(0) && !node.schema().is_list_key() && !ancestors.contains(&path) {
        cuts.drop.push(path);
        return true;
    }
    let below = levels.map(|l| l.saturating_sub(1));
    let mut cut_content = false;
    for child in node.children() {
        let default = child.is_default();
        if cut(&child, selected, ancestors, below, max, cuts) && !default {
            cut_content = true;
        }
    }
    if cut_content && node.schema().is_np_container() {
        cuts.emptied.push(path);
    }
    false
}

/// Puts the origin annotation on each top-level node and each node whose
/// origin differs from its parent's.
fn annotate_origin(tree: &DataTree<'static>) -> Result<(), yang3::Error> {
    let Some(first) = tree.reference() else {
        return Ok(());
    };
    for top in first.inclusive_siblings() {
        for node in top.traverse() {
            let origin = Origin::of(&node);
            let inherited = node.ancestors().next().map(|p| Origin::of(&p));
            if inherited != Some(origin) {
                l45_yang::add_meta(
                    &node,
                    ORIGIN_META,
                    &format!("ietf-origin:{}", origin.name()),
                )?;
            }
        }
    }
    Ok(())
}

/// The `<target>`/`<source>` of lock, unlock and validate, which RFC 8526
/// augments with `<datastore>`: running, candidate and startup there are
/// the conventional ones; the others cannot be locked or validated
/// (invalid-value).
pub(super) fn datastore_in(rpc: &Rpc, which: &'static str) -> Result<Datastore, OpError> {
    let op = &rpc.operation;
    let Some(el) = op.child(l45_netconf_proto::BASE_NS, which) else {
        return super::datastore_param(op, which);
    };
    if el.child(NMDA_NS, "datastore").is_none() {
        return super::datastore_param(op, which);
    }
    let scope = el.scope_for_children(&rpc.op_child_scope());
    match NmdaDatastore::parse(el, &scope)? {
        NmdaDatastore::Running => Ok(Datastore::Running),
        NmdaDatastore::Candidate => Ok(Datastore::Candidate),
        NmdaDatastore::Startup => Ok(Datastore::Startup),
        other => Err(bad(
            "datastore",
            format!("{} is not supported on datastore {}", op.name, other.name()),
        )),
    }
}

impl Agent {
    pub(super) fn op_get_data(
        self: &Arc<Self>,
        s: &SessionInfo,
        rpc: &Rpc,
        nacm: &Nacm,
    ) -> ReadReply {
        let request = GetData::parse(self.ctx, rpc)?;
        let read = Read {
            ds: request.datastore.config_source(),
            with_state: request.datastore == NmdaDatastore::Operational,
            flags: DataPrinterFlags::from_bits_retain(request.flags.bits()),
            filter: &request.filter,
        };
        if request.plain() {
            if let Some(body) = self.read_stored(s, nacm, &read, DATA_OPEN)? {
                return Ok((body, After::Continue));
            }
        }
        let filter_element = match request.filter {
            Filter::All => "subtree-filter",
            Filter::XPaths(_) if rpc.operation.child(NMDA_NS, "xpath-filter").is_some() => {
                "xpath-filter"
            }
            Filter::XPaths(_) => "subtree-filter",
        };
        let mut selected = self
            .read_selected(s, nacm, &read, request.max_depth.is_some())
            .map_err(|e| match e {
                OpError::Wire(errors) => OpError::Wire(
                    errors
                        .into_iter()
                        .map(|e| names_element(e, filter_element))
                        .collect(),
                ),
                other => other,
            })?;
        let tree = &mut selected.tree;
        if let Some(config) = request.config_filter {
            keep_only(tree, &|n| n.schema().is_config() == config)?;
        }
        if let Some(origins) = &request.origin_filter {
            // State is not filtered by origin (RFC 8526 3.1.1).
            keep_only(tree, &|n| {
                !n.schema().is_config() || origins.passes(Origin::of(n))
            })?;
        }
        if let Some(max) = request.max_depth {
            limit_depth(tree, &selected.selected, max)?;
        }
        if request.with_origin {
            annotate_origin(tree)?;
        }
        let body = l45_yang::print_xml(tree, request.flags | DataPrinterFlags::SHRINK)?;
        Ok((
            Body::Text(format!("{DATA_OPEN}{body}</data>")),
            After::Continue,
        ))
    }

    pub(super) fn op_edit_data(self: &Arc<Self>, s: &SessionInfo, rpc: &Rpc, nacm: &Nacm) -> Reply {
        let op = &rpc.operation;
        only_known(op, &["datastore", "default-operation", "config", "url"])?;
        let target = match NmdaDatastore::parse(op, &rpc.op_child_scope())? {
            NmdaDatastore::Running => Datastore::Running,
            NmdaDatastore::Candidate => Datastore::Candidate,
            // (RFC 8526 3.2: a datastore that is not writable is an
            // invalid-value; startup changes by copy-config only, as with
            // edit-config)
            other => {
                return Err(bad(
                    "datastore",
                    format!("datastore {} is not writable with edit-data", other.name()),
                ))
            }
        };
        let request = EditConfig::parse(rpc, target)?;
        self.edit(s, nacm, &request)
    }
}
