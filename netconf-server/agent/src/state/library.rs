//! RFC 8525 YANG library (and the RFC 7895 `modules-state` older clients
//! read), and the capabilities of the server's hello (RFC 6241 8, RFC 7950
//! 5.6.4 module capabilities).

use yang3::data::DataTree;
use yang3::schema::SchemaModule;

use crate::agent::Agent;

// RFC 8525 module sets and schemas, as in its Appendix B example: the
// conventional datastores (and intended) hold the modules with
// configuration; operational adds those with only state, RPCs,
// notifications or annotations (RFC 8342 6: they belong to operational).
const CONFIG_MODULES: &str = "config-modules";
const STATE_MODULES: &str = "state-modules";
const CONFIG_SCHEMA: &str = "config-schema";
const STATE_SCHEMA: &str = "state-schema";

/// Whether a module defines configuration (a config true top-level node).
/// ietf-netconf defines none: libyang compiles a `rpc-error` container into
/// it (to parse replies), which no datastore holds.
fn has_config(m: &SchemaModule<'_>) -> bool {
    m.name() != "ietf-netconf" && m.data().any(|n| n.is_config())
}

impl Agent {
    pub fn capabilities(&self) -> Vec<String> {
        let mut caps: Vec<String> = [
            "urn:ietf:params:netconf:base:1.0",
            "urn:ietf:params:netconf:base:1.1",
            "urn:ietf:params:netconf:capability:writable-running:1.0",
            "urn:ietf:params:netconf:capability:candidate:1.0",
            "urn:ietf:params:netconf:capability:confirmed-commit:1.1",
            "urn:ietf:params:netconf:capability:rollback-on-error:1.0",
            "urn:ietf:params:netconf:capability:validate:1.1",
            "urn:ietf:params:netconf:capability:startup:1.0",
            "urn:ietf:params:netconf:capability:xpath:1.0",
            "urn:ietf:params:netconf:capability:with-defaults:1.0?basic-mode=explicit&also-supported=report-all,report-all-tagged,trim",
            "urn:ietf:params:netconf:capability:notification:1.0",
            "urn:ietf:params:netconf:capability:interleave:1.0",
            // RFC 8526 3.1.1.2: with-defaults also applies to get-data on
            // the operational datastore.
            "urn:ietf:params:netconf:capability:with-operational-defaults:1.0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // RFC 8526 2: an NMDA server advertises the RFC 8525 YANG library.
        // The module capabilities below stay for clients that read only
        // the hello (RFC 7950 5.6.4 asks them for YANG 1.0 modules).
        let revision = self
            .ctx
            .get_module_latest("ietf-yang-library")
            .and_then(|m| m.revision().map(str::to_string))
            .unwrap_or_default();
        caps.push(format!(
            "urn:ietf:params:netconf:capability:yang-library:1.1?revision={revision}&content-id={}",
            self.ctx.get_module_set_id()
        ));
        for m in self.ctx.modules(false) {
            if l45_yang::INTERNAL_MODULES.contains(&m.name())
                || !m.is_implemented()
                || self.hides(m.name())
            {
                continue;
            }
            let mut cap = format!("{}?module={}", m.namespace(), m.name());
            if let Some(rev) = m.revision() {
                cap.push_str(&format!("&revision={rev}"));
            }
            if let Some(em) = l45_yang::find_module(m.name(), m.revision()) {
                if !em.features.is_empty() {
                    cap.push_str(&format!("&features={}", em.features.join(",")));
                }
            }
            caps.push(cap);
        }
        caps
    }

    /// A loaded module the agent does not offer (`--no-yang-push`).
    fn hides(&self, module: &str) -> bool {
        !self.opts.yang_push && module == crate::subscriptions::YP_MODULE
    }

    pub(super) fn add_yang_library(
        &self,
        tree: &mut DataTree<'static>,
    ) -> Result<(), yang3::Error> {
        let lib = "/ietf-yang-library:yang-library";
        let legacy = "/ietf-yang-library:modules-state";
        for m in self.ctx.modules(false) {
            if l45_yang::INTERNAL_MODULES.contains(&m.name()) || self.hides(m.name()) {
                continue;
            }
            let rev = m.revision().unwrap_or("");
            let set = format!(
                "{lib}/module-set[name='{}']",
                if !m.is_implemented() || has_config(&m) {
                    CONFIG_MODULES
                } else {
                    STATE_MODULES
                }
            );
            if m.is_implemented() {
                let p = format!("{set}/module[name='{}']", m.name());
                if !rev.is_empty() {
                    tree.new_path(&format!("{p}/revision"), Some(rev), false)?;
                }
                tree.new_path(&format!("{p}/namespace"), Some(m.namespace()), false)?;
                if let Some(em) = l45_yang::find_module(m.name(), m.revision()) {
                    for f in em.features {
                        tree.new_path(&format!("{p}/feature[.='{f}']"), None, false)?;
                    }
                }
            } else {
                let p = format!(
                    "{set}/import-only-module[name='{}'][revision='{rev}']",
                    m.name()
                );
                tree.new_path(&format!("{p}/namespace"), Some(m.namespace()), false)?;
            }
            let lp = format!("{legacy}/module[name='{}'][revision='{rev}']", m.name());
            tree.new_path(&format!("{lp}/namespace"), Some(m.namespace()), false)?;
            tree.new_path(
                &format!("{lp}/conformance-type"),
                Some(if m.is_implemented() {
                    "implement"
                } else {
                    "import"
                }),
                false,
            )?;
            // libnetconf2 clients (netopeer2-cli) build their schema
            // context from this list: without the features, nodes under an
            // if-feature (yang-push's datastore-xpath-filter) do not exist
            // for them.
            if m.is_implemented() {
                if let Some(em) = l45_yang::find_module(m.name(), m.revision()) {
                    for f in em.features {
                        tree.new_path(&format!("{lp}/feature[.='{f}']"), None, false)?;
                    }
                }
            }
        }
        let content_id = self.ctx.get_module_set_id().to_string();
        tree.new_path(&format!("{legacy}/module-set-id"), Some(&content_id), false)?;
        for (schema, sets) in [
            (CONFIG_SCHEMA, &[CONFIG_MODULES][..]),
            (STATE_SCHEMA, &[CONFIG_MODULES, STATE_MODULES][..]),
        ] {
            for set in sets {
                tree.new_path(
                    &format!("{lib}/schema[name='{schema}']/module-set[.='{set}']"),
                    None,
                    false,
                )?;
            }
        }
        for (ds, schema) in [
            ("running", CONFIG_SCHEMA),
            ("candidate", CONFIG_SCHEMA),
            ("startup", CONFIG_SCHEMA),
            ("intended", CONFIG_SCHEMA),
            ("operational", STATE_SCHEMA),
        ] {
            tree.new_path(
                &format!("{lib}/datastore[name='ietf-datastores:{ds}']/schema"),
                Some(schema),
                false,
            )?;
        }
        tree.new_path(&format!("{lib}/content-id"), Some(&content_id), false)?;
        Ok(())
    }

    // ===== edit-config and friends =====
}
