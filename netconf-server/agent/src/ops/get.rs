//! `get` and `get-config`: with-defaults modes, subtree and XPath filters,
//! NACM read rules. An unfiltered (or `<customizations/>`) explicit-mode
//! `get-config` copies the stored entries out as they are.

use std::sync::Arc;

use l45_netconf_proto::message::Rpc;
use l45_netconf_proto::BASE_NS;
use yang3::data::{Data, DataPrinterFlags, DataTree};

use super::{datastore_param, print_flags, After, Reply};
use crate::agent::Agent;
use crate::config::edit::Engine;
use crate::datastore::{Datastore, Ds, CUSTOMIZATIONS};
use crate::filter;
use crate::nacm::{Access, Nacm};
use crate::sessions::SessionInfo;

fn print_xml(tree: &DataTree<'static>, flags: DataPrinterFlags) -> Result<String, yang3::Error> {
    l45_yang::print_xml(tree, flags | DataPrinterFlags::SHRINK)
}

/// Removes what NACM hides from `user` in a reply tree.
fn nacm_read_filter(tree: &mut DataTree<'static>, user: &str, nacm: &Nacm) {
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
            let _ = tree.remove(&path);
        }
    }
    if !nacm.may(user, l45_yang::L45_MODULE, Access::Read, true) {
        let keys: Vec<String> = tree
            .find_xpath("/layer45-customization:customizations/module/security/key")
            .map(|set| set.map(|n| n.path()).collect())
            .unwrap_or_default();
        for k in keys {
            let _ = tree.remove(&k);
        }
    }
}

impl Agent {
    pub(super) fn op_get(
        self: &Arc<Self>,
        s: &SessionInfo,
        rpc: &Rpc,
        nacm: &Nacm,
        with_state: bool,
    ) -> Reply {
        let op = &rpc.operation;
        let ds = if with_state {
            Datastore::Running
        } else {
            datastore_param(op, "source")?
        };
        let flags = print_flags(op)?;
        let filter =
            filter::parse_filter(self.ctx, op.child(BASE_NS, "filter"), &rpc.op_child_scope())?;
        let whole = filter == filter::Filter::All;
        let only_customizations =
            filter == filter::Filter::XPaths(vec![CUSTOMIZATIONS.to_string()]);
        if self.opts.engine == Engine::Auto
            && !with_state
            && flags.bits() == DataPrinterFlags::WD_EXPLICIT.bits()
            && (whole || only_customizations)
        {
            return self.get_config_stored(s, ds, nacm, whole);
        }
        let mut tree = {
            let mut full = self.stores().get(ds).to_tree(self.ctx)?;
            if with_state {
                self.add_state(&mut full)?;
            }
            filter::select(self.ctx, &full, &filter)?
        };
        nacm_read_filter(&mut tree, &s.username, nacm);
        let body = print_xml(&tree, flags)?;
        Ok((format!("<data>{body}</data>"), After::Continue))
    }

    /// The entries copied out as stored (explicit mode), with the rest of
    /// the datastore when `whole`.
    fn get_config_stored(&self, s: &SessionInfo, ds: Datastore, nacm: &Nacm, whole: bool) -> Reply {
        let stores = self.stores();
        let store = stores.get(ds);
        let mut rest_xml = String::new();
        if whole {
            let mut rest = store.rest.duplicate()?;
            nacm_read_filter(&mut rest, &s.username, nacm);
            rest_xml = print_xml(&rest, DataPrinterFlags::WD_EXPLICIT)?;
        }
        let size: usize = store.modules.values().map(|e| e.len()).sum();
        let mut body = String::with_capacity(size + rest_xml.len() + 128);
        body.push_str("<data>");
        body.push_str(&rest_xml);
        if nacm.may(&s.username, l45_yang::L45_MODULE, Access::Read, false) {
            let keys = nacm.may(&s.username, l45_yang::L45_MODULE, Access::Read, true);
            // (writing into a String cannot fail)
            let _ = Ds::write_customizations(&store.modules, keys, &mut body);
        }
        body.push_str("</data>");
        Ok((body, After::Continue))
    }
}
