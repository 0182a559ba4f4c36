//! `get` and `get-config`: with-defaults modes, subtree and XPath filters,
//! NACM read rules. An unfiltered (or `<customizations/>`) explicit-mode
//! `get-config` copies the stored entries out as they are; an unfiltered
//! explicit-mode `get` adds their state as text (`state::entry_xml`); a
//! filtered read builds its libyang tree from only the entries the filter
//! can select ([`narrow`]). Each shortcut gives the reply the general path
//! gives (the conformance suite compares them with `--libyang-only`).

use std::sync::Arc;

use l45_netconf_proto::message::Rpc;
use l45_netconf_proto::BASE_NS;
use yang3::data::{Data, DataPrinterFlags, DataTree};

use super::{datastore_param, print_flags, After, Body, ReadReply, ReplySink};
use crate::agent::Agent;
use crate::config::edit::Engine;
use crate::datastore::{schema, Datastore, Ds, ModuleMap, Slots, CUSTOMIZATIONS};
use crate::error::OpError;
use crate::filter;
use crate::nacm::{Access, Nacm};
use crate::narrow::{self, Reach, Visible};
use crate::sessions::SessionInfo;
use crate::state::entry_xml::{renders_as_libyang, StateRender, StatsById};

/// Top nodes (libyang module name, node) whose state a narrowed `get`
/// adds when the filter selects from nothing else: the module list's.
const NARROW_STATE_TOPS: &[(&str, &str)] = &[
    (l45_yang::L45_MODULE, "customizations"),
    ("ietf-netconf-acm", "nacm"),
];

fn print_xml(tree: &DataTree<'static>, flags: DataPrinterFlags) -> Result<String, yang3::Error> {
    l45_yang::print_xml(tree, flags | DataPrinterFlags::SHRINK)
}

/// Whether the data node at `node` is one of `selected` or below one.
fn under(node: &str, selected: &[String]) -> bool {
    selected.iter().any(|s| {
        node.strip_prefix(s.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// Removes what NACM hides from `user` in a reply tree. With `path` rules
/// for the user every node is decided (RFC 8341 3.4.5), else per top-level
/// module plus the module keys.
pub(crate) fn nacm_read_filter(tree: &mut DataTree<'static>, user: &str, nacm: &Nacm) {
    let rule_paths = nacm.data_rules(user, Access::Read);
    if !rule_paths.is_empty() {
        nacm_read_filter_nodes(tree, user, nacm, &rule_paths);
        return;
    }
    let tops: Vec<(String, String)> = match tree.reference() {
        Some(first) => first
            .inclusive_siblings()
            .map(|n| (n.path(), n.schema().module().name().to_string()))
            .collect(),
        None => return,
    };
    // (a node that is already gone needs no removing)
    for (path, module) in tops {
        if !nacm.may(user, &module, Access::Read, false) {
            let _ = l45_yang::remove_path(tree, &path);
        }
    }
    if !nacm.may(user, l45_yang::L45_MODULE, Access::Read, true) {
        for k in key_paths(tree) {
            let _ = l45_yang::remove_path(tree, &k);
        }
    }
}

/// The nodes marked `nacm:default-deny-all` in our model: module keys,
/// the device's enrollment token and the trusted image signers.
fn key_paths(tree: &DataTree<'static>) -> Vec<String> {
    tree.find_xpath(
        "/layer45-customization:customizations/module/security/key\
         | /layer45-customization:device/enrollment-token\
         | /layer45-customization:images/trusted-signer",
    )
    .map(|set| set.map(|n| n.path()).collect())
    .unwrap_or_default()
}

/// Every node decided on its own: the nodes each rule's path selects are
/// found once, then a node is covered by a rule when it is one of them or
/// below one.
fn nacm_read_filter_nodes(
    tree: &mut DataTree<'static>,
    user: &str,
    nacm: &Nacm,
    rule_paths: &[String],
) {
    let selected: std::collections::HashMap<&str, Vec<String>> = rule_paths
        .iter()
        .map(|p| {
            let nodes = tree
                .find_xpath(p)
                .map(|set| set.map(|n| n.path()).collect())
                .unwrap_or_default();
            (p.as_str(), nodes)
        })
        .collect();
    let keys = key_paths(tree);
    let mut removed: Vec<String> = Vec::new();
    for node in tree.traverse() {
        let path = node.path();
        if under(&path, &removed) {
            continue;
        }
        let module = node.schema().module().name().to_string();
        let covers = |rule_path: &str| selected.get(rule_path).is_some_and(|s| under(&path, s));
        let sensitive = keys.contains(&path);
        if !nacm.may_node(user, &module, Access::Read, sensitive, &covers) {
            removed.push(path);
        }
    }
    for p in removed {
        let _ = l45_yang::remove_path(tree, &p);
    }
}

/// A read of one datastore, as `get`/`get-config` and RFC 8526 `get-data`
/// ask for it.
pub(super) struct Read<'a> {
    pub ds: Datastore,
    /// Config and state (`get`, the operational datastore), else config.
    pub with_state: bool,
    pub flags: DataPrinterFlags,
    pub filter: &'a filter::Filter,
}

/// A filtered read's tree and, when asked for, the paths of the nodes the
/// filter selected (the top-level nodes for no filter).
pub(super) struct Selected {
    pub tree: DataTree<'static>,
    pub selected: Vec<String>,
}

impl Agent {
    pub(super) fn op_get(
        self: &Arc<Self>,
        s: &SessionInfo,
        rpc: &Rpc,
        nacm: &Nacm,
        with_state: bool,
    ) -> ReadReply {
        let op = &rpc.operation;
        let ds = if with_state {
            Datastore::Running
        } else {
            datastore_param(op, "source")?
        };
        let flags = print_flags(op)?;
        let filter =
            filter::parse_filter(self.ctx, op.child(BASE_NS, "filter"), &rpc.op_child_scope())?;
        let read = Read {
            ds,
            with_state,
            flags,
            filter: &filter,
        };
        if let Some(body) = self.read_stored(s, nacm, &read, "<data>")? {
            return Ok((body, After::Continue));
        }
        if let Some(body) = self.entries_matched(s, nacm, &read)? {
            return Ok((Body::Text(body), After::Continue));
        }
        let (full, narrowed) = self.read_visible(s, nacm, &read)?;
        if let Some(body) = entries_as_stored(s, nacm, &read, &full, narrowed.as_ref())? {
            return Ok((Body::Text(body), After::Continue));
        }
        let tree = filter::select(self.ctx, &full, read.filter)?;
        let body = print_xml(&tree, read.flags)?;
        Ok((Body::Text(format!("<data>{body}</data>")), After::Continue))
    }

    /// The shortcuts from the stored entries: an unfiltered (or
    /// `<customizations/>`) explicit-mode config read copies them out, an
    /// unfiltered explicit-mode read with state renders their state as
    /// text. `Some` is the whole reply body, `data_open` its start tag.
    pub(super) fn read_stored(
        &self,
        s: &SessionInfo,
        nacm: &Nacm,
        read: &Read<'_>,
        data_open: &'static str,
    ) -> Result<Option<Body>, OpError> {
        let whole = *read.filter == filter::Filter::All;
        let only_customizations =
            *read.filter == filter::Filter::XPaths(vec![CUSTOMIZATIONS.to_string()]);
        let plain = self.opts.engine == Engine::Auto
            && nacm.data_rules(&s.username, Access::Read).is_empty()
            && read.flags.bits() == DataPrinterFlags::WD_EXPLICIT.bits();
        if plain && !read.with_state && (whole || only_customizations) {
            return Ok(Some(
                self.get_config_stored(s, read.ds, nacm, whole, data_open)?,
            ));
        }
        if plain && read.with_state && whole && read.ds == Datastore::Running {
            return self.get_stored_with_state(s, nacm, data_open);
        }
        Ok(None)
    }

    /// A config read whose one path selects whole module entries by the
    /// values of leaves directly under `module`, decided from the stored
    /// text ([`narrow::whole_entries`]): those entries' stored text, as
    /// [`entries_as_stored`] answers the same read from a narrowed libyang
    /// tree, without building one (at 100k entries, a content match on
    /// 1 000 of them spent most of its time parsing and validating them).
    /// The same conditions as there (explicit mode, module-level NACM with
    /// the keys readable) and as for narrowing (a validated datastore);
    /// `None` when they do not hold or nothing is selected (the general
    /// read then answers).
    fn entries_matched(
        &self,
        s: &SessionInfo,
        nacm: &Nacm,
        read: &Read<'_>,
    ) -> Result<Option<String>, OpError> {
        if self.opts.engine != Engine::Auto
            || read.with_state
            || read.flags.bits() != DataPrinterFlags::WD_EXPLICIT.bits()
            || !nacm.data_rules(&s.username, Access::Read).is_empty()
        {
            return Ok(None);
        }
        let visible = Visible {
            modules: nacm.may(&s.username, l45_yang::L45_MODULE, Access::Read, false),
            keys: nacm.may(&s.username, l45_yang::L45_MODULE, Access::Read, true),
        };
        let stores = self.stores();
        if read.ds == Datastore::Candidate && stores.candidate_unvalidated {
            return Ok(None);
        }
        let store = stores.get(read.ds);
        let Ok(schema) = schema() else {
            return Ok(None);
        };
        let Some(ids) = narrow::whole_entries(read.filter, schema, &store.modules, visible) else {
            return Ok(None);
        };
        let entries: Vec<&str> = ids
            .iter()
            .filter_map(|id| store.modules.get(id).map(|e| &**e))
            .collect();
        if entries.is_empty() {
            return Ok(None);
        }
        tracing::debug!(
            datastore = ?read.ds,
            entries = entries.len(),
            stored = store.modules.len(),
            "read answered with the stored entries its filter selects"
        );
        Ok(Some(stored_entries_body(entries.into_iter())))
    }

    /// The general read: the datastore's tree (narrowed to what the filter
    /// can select), its state, NACM, then the filter. With `want_selected`
    /// the paths of the nodes the filter selects are returned too.
    pub(super) fn read_selected(
        &self,
        s: &SessionInfo,
        nacm: &Nacm,
        read: &Read<'_>,
        want_selected: bool,
    ) -> Result<Selected, OpError> {
        let filter = read.filter;
        let (full, _) = self.read_visible(s, nacm, read)?;
        let selected = if want_selected {
            filter::selected_paths(&full, filter)?
        } else {
            Vec::new()
        };
        let tree = filter::select(self.ctx, &full, filter)?;
        Ok(Selected { tree, selected })
    }

    /// What the filter of a read runs on: the datastore's tree (narrowed to
    /// what the filter can select: then also the entries it was built
    /// from), its state, NACM.
    fn read_visible(
        &self,
        s: &SessionInfo,
        nacm: &Nacm,
        read: &Read<'_>,
    ) -> Result<(DataTree<'static>, Option<ModuleMap>), OpError> {
        let filter = read.filter;
        // The filter sees only what the user may read: nothing hidden can
        // be probed by a predicate.
        let (mut full, narrowed) = self.read_tree(s, read.ds, nacm, filter)?;
        if read.with_state && narrowed.is_some() && narrow::tops_within(filter, NARROW_STATE_TOPS) {
            // The filter selects nothing from the other state's top
            // nodes (RFC 6022, the YANG library).
            self.add_module_state(&mut full)?;
        } else if read.with_state {
            self.add_state(&mut full)?;
        }
        nacm_read_filter(&mut full, &s.username, nacm);
        Ok((full, narrowed))
    }

    /// What a `get` of `user` with `filter` returns (state included,
    /// explicit defaults), printed: the content of a periodic YANG-push
    /// update (RFC 8641 3.5).
    pub(crate) fn operational_snapshot(
        &self,
        s: &SessionInfo,
        filter: &filter::Filter,
    ) -> Result<String, OpError> {
        let nacm = Nacm::from_running(&self.stores().running.rest);
        let (mut full, narrowed) = self.read_tree(s, Datastore::Running, &nacm, filter)?;
        if narrowed.is_some() && narrow::tops_within(filter, NARROW_STATE_TOPS) {
            self.add_module_state(&mut full)?;
        } else {
            self.add_state(&mut full)?;
        }
        nacm_read_filter(&mut full, &s.username, &nacm);
        let tree = filter::select(self.ctx, &full, filter)?;
        Ok(print_xml(&tree, DataPrinterFlags::WD_EXPLICIT)?)
    }

    /// The datastore as a libyang tree for `filter`: only the entries the
    /// filter can select when [`narrow::reach`] proves which (and NACM
    /// decides per module, as with the default rules; the analysis looks
    /// only at values the user may read), else all of them.
    /// Either way the same NACM pass and filter then run on it, so the
    /// reply is the same; the narrowed tree keeps every top node the whole
    /// one has (one entry at least when the store has any), so an
    /// expression fails or succeeds alike. A narrowed tree comes with the
    /// entries it was built from.
    fn read_tree(
        &self,
        s: &SessionInfo,
        ds: Datastore,
        nacm: &Nacm,
        filter: &filter::Filter,
    ) -> Result<(DataTree<'static>, Option<ModuleMap>), yang3::Error> {
        let stores = self.stores();
        let store = stores.get(ds);
        // An unvalidated candidate (test-option set) may hold an entry that
        // fails validation: the whole store's tree then fails to build, and
        // so must this read.
        let unvalidated = ds == Datastore::Candidate && stores.candidate_unvalidated;
        let reach = (self.opts.engine == Engine::Auto
            && !unvalidated
            && *filter != filter::Filter::All
            && nacm.data_rules(&s.username, Access::Read).is_empty())
        .then(|| schema().ok())
        .flatten()
        .and_then(|schema| {
            let visible = Visible {
                modules: nacm.may(&s.username, l45_yang::L45_MODULE, Access::Read, false),
                keys: nacm.may(&s.username, l45_yang::L45_MODULE, Access::Read, true),
            };
            narrow::reach(filter, schema, &store.modules, visible)
        });
        match reach {
            Some(Reach::Entries(ids)) => {
                let stand_in = ids
                    .is_empty()
                    .then(|| store.modules.iter().next())
                    .flatten();
                let entries: ModuleMap = ids
                    .iter()
                    .filter_map(|id| store.modules.get_key_value(id))
                    .chain(stand_in)
                    .map(|(id, e)| (*id, Arc::clone(e)))
                    .collect();
                tracing::debug!(
                    datastore = ?ds,
                    entries = ids.len(),
                    stored = store.modules.len(),
                    "read narrowed to the entries the filter can select"
                );
                Ok((store.tree_of(self.ctx, entries.values())?, Some(entries)))
            }
            Some(Reach::All) | None => {
                tracing::debug!(
                    datastore = ?ds,
                    stored = store.modules.len(),
                    narrowable = reach.is_some(),
                    "read of the whole datastore"
                );
                Ok((store.to_tree(self.ctx)?, None))
            }
        }
    }

    /// An unfiltered `get` (explicit mode, module-level NACM) from the
    /// stored entries: libyang builds and prints the datastore with only
    /// its first entry (the rest of the tree, all other state, NACM), and
    /// that entry's printed text is replaced by every entry with its state
    /// (`state::entry_xml`, from one snapshot of the tap's statistics). The
    /// renderer is checked against libyang on the first entry with its
    /// state each time; `None` when they differ (or the text is not as
    /// expected): the caller then reads the libyang way.
    /// Returns the whole `<data>…</data>`, rendered into the reply as it is
    /// sent: everything that can fail is done first.
    fn get_stored_with_state(
        &self,
        s: &SessionInfo,
        nacm: &Nacm,
        data_open: &'static str,
    ) -> Result<Option<Body>, OpError> {
        // One consistent snapshot (entries are shared, not copied); the
        // state below is added without holding the datastores' lock.
        let store = self.stores().running.share()?;
        let stats: StatsById = self
            .tap
            .module_stats()
            .into_iter()
            .map(|st| (st.id, st))
            .collect();
        let first = store.modules.iter().next();
        let mut tree = store.tree_of(self.ctx, first.map(|(_, e)| e).into_iter())?;
        self.add_state(&mut tree)?;
        nacm_read_filter(&mut tree, &s.username, nacm);
        let text = print_xml(&tree, DataPrinterFlags::WD_EXPLICIT)?;
        drop(tree);
        let Some((first_id, first_entry)) = first else {
            // No entry: the tree was the whole datastore.
            return Ok(Some(Body::Text(format!("{data_open}{text}</data>"))));
        };
        let open = format!("<customizations xmlns=\"{}\">", l45_yang::L45_NAMESPACE);
        let Some(at) = text.find(&open).map(|at| at + open.len()) else {
            // The module list is hidden from the user (NACM).
            return Ok(Some(Body::Text(format!("{data_open}{text}</data>"))));
        };
        let end = "</module>";
        let printed_end = match text[at..].find(end) {
            Some(e) if text[at..].starts_with("<module>") => at + e + end.len(),
            _ => return Ok(None),
        };
        if !renders_as_libyang(self.ctx, *first_id, first_entry, stats.get(first_id))? {
            tracing::warn!(
                id = first_id,
                "native module state differs from libyang's; reading the libyang way"
            );
            return Ok(None);
        }
        // Module keys hidden from the user: those entries without them,
        // taken apart now (it can fail), not while the reply is sent.
        let keys = nacm.may(&s.username, l45_yang::L45_MODULE, Access::Read, true);
        let mut stripped = std::collections::HashMap::new();
        if !keys {
            let schema = schema().map_err(OpError::Failed)?;
            for (id, e) in &store.modules {
                if Slots::has_security(e) {
                    let Ok(slots) = Slots::parse(schema, e) else {
                        return Ok(None);
                    };
                    stripped.insert(*id, slots.to_xml(schema, false));
                }
            }
        }
        let entries = || {
            store
                .modules
                .iter()
                .map(|(id, e)| (id, stripped.get(id).map_or(&**e, String::as_str)))
        };
        let Some(mut render) = StateRender::prepare(entries().map(|(_, e)| e), stats.values())
        else {
            return Ok(None);
        };
        tracing::debug!(
            entries = store.modules.len(),
            "get answered from the stored entries"
        );
        Ok(Some(Body::Render(Box::new(
            move |out: &mut dyn ReplySink| {
                out.push(data_open);
                out.push(&text[..at]);
                for (id, e) in store
                    .modules
                    .iter()
                    .map(|(id, e)| (id, stripped.get(id).map_or(&**e, String::as_str)))
                {
                    out.push(render.render(e, stats.get(id)));
                }
                out.push(&text[printed_end..]);
                out.push("</data>");
            },
        ))))
    }

    /// The entries copied out as stored (explicit mode), with the rest of
    /// the datastore when `whole`: the whole reply body.
    fn get_config_stored(
        &self,
        s: &SessionInfo,
        ds: Datastore,
        nacm: &Nacm,
        whole: bool,
        data_open: &'static str,
    ) -> Result<Body, OpError> {
        let stores = self.stores();
        let store = stores.get(ds);
        let mut rest_xml = String::new();
        if whole {
            let mut rest = store.rest.duplicate()?;
            nacm_read_filter(&mut rest, &s.username, nacm);
            rest_xml = print_xml(&rest, DataPrinterFlags::WD_EXPLICIT)?;
        }
        // A snapshot (the entries are shared, not copied): the reply is
        // rendered while it is sent, without holding the datastores' lock.
        let modules = nacm
            .may(&s.username, l45_yang::L45_MODULE, Access::Read, false)
            .then(|| store.modules.clone());
        let keys = nacm.may(&s.username, l45_yang::L45_MODULE, Access::Read, true);
        drop(stores);
        Ok(Body::Render(Box::new(move |out: &mut dyn ReplySink| {
            out.push(data_open);
            out.push(&rest_xml);
            if let Some(modules) = modules {
                // (a sink cannot fail)
                let _ = Ds::write_customizations(&modules, keys, &mut SinkWriter(out));
            }
            out.push("</data>");
        })))
    }
}

/// A narrowed config read (explicit mode, module-level NACM with the keys
/// readable) whose one expression selects only whole module entries: the
/// reply is their stored text (as `get-config` copies it out), not a copy
/// of them into a result tree printed again. `full` is the narrowed tree
/// after NACM, `narrowed` the entries it was built from. `None` when this
/// does not apply: the caller selects and prints the libyang way.
fn entries_as_stored(
    s: &SessionInfo,
    nacm: &Nacm,
    read: &Read<'_>,
    full: &DataTree<'static>,
    narrowed: Option<&ModuleMap>,
) -> Result<Option<String>, OpError> {
    let (Some(entries), filter::Filter::XPaths(paths)) = (narrowed, read.filter) else {
        return Ok(None);
    };
    let [xpath] = paths.as_slice() else {
        return Ok(None);
    };
    if read.with_state
        || read.flags.bits() != DataPrinterFlags::WD_EXPLICIT.bits()
        || !nacm.may(&s.username, l45_yang::L45_MODULE, Access::Read, true)
    {
        return Ok(None);
    }
    let set = full
        .find_xpath(xpath)
        .map_err(|e| filter::bad_expression(xpath, &e))?;
    let mut selected = Vec::new();
    for node in set {
        let whole_entry = node.schema().name() == "module"
            && node.schema().module().name() == l45_yang::L45_MODULE
            && node.ancestors().count() == 1
            && node
                .ancestors()
                .all(|p| p.schema().name() == "customizations");
        let id: Option<u32> = node
            .list_keys()
            .next()
            .and_then(|k| k.value_canonical())
            .and_then(|v| v.parse().ok());
        let (true, Some(entry)) = (whole_entry, id.and_then(|id| entries.get(&id))) else {
            return Ok(None);
        };
        selected.push(&**entry);
    }
    if selected.is_empty() {
        return Ok(None);
    }
    Ok(Some(stored_entries_body(selected.into_iter())))
}

/// `<data>` with the module list of these stored entries (in the order
/// given: the list's, by id).
fn stored_entries_body<'e>(entries: impl Iterator<Item = &'e str> + Clone) -> String {
    let size: usize = entries.clone().map(str::len).sum();
    let mut body = String::with_capacity(size + 128);
    body.push_str("<data><customizations xmlns=\"");
    body.push_str(l45_yang::L45_NAMESPACE);
    body.push_str("\">");
    for entry in entries {
        body.push_str(entry);
    }
    body.push_str("</customizations></data>");
    body
}

/// A [`ReplySink`] as a `fmt::Write`.
struct SinkWriter<'a>(&'a mut dyn ReplySink);

impl std::fmt::Write for SinkWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.push(s);
        Ok(())
    }
}
