//! RFC 8525 YANG library (and the RFC 7895 `modules-state` older clients
//! read), and the capabilities of the server's hello (RFC 6241 8, RFC 7950
//! 5.6.4 module capabilities).

use yang3::data::DataTree;

use crate::agent::Agent;

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
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
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
        let set = format!("{lib}/module-set[name='complete']");
        let legacy = "/ietf-yang-library:modules-state";
        for m in self.ctx.modules(false) {
            if l45_yang::INTERNAL_MODULES.contains(&m.name()) || self.hides(m.name()) {
                continue;
            }
            let rev = m.revision().unwrap_or("");
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
        }
        let content_id = self.ctx.get_module_set_id().to_string();
        tree.new_path(&format!("{legacy}/module-set-id"), Some(&content_id), false)?;
        tree.new_path(
            &format!("{lib}/schema[name='complete']/module-set[.='complete']"),
            None,
            false,
        )?;
        for ds in ["running", "candidate", "startup", "operational"] {
            tree.new_path(
                &format!("{lib}/datastore[name='ietf-datastores:{ds}']/schema"),
                Some("complete"),
                false,
            )?;
        }
        tree.new_path(&format!("{lib}/content-id"), Some(&content_id), false)?;
        Ok(())
    }

    // ===== edit-config and friends =====
}
