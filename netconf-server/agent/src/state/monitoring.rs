//! RFC 6022 `netconf-state`: capabilities, datastores and their locks,
//! schemas, sessions and statistics.

use std::sync::atomic::Ordering;

use yang3::data::DataTree;

use crate::agent::{guard, Agent};
use crate::sessions::SessionInfo;
use crate::time::rfc3339;

impl Agent {
    pub(super) fn add_monitoring(&self, tree: &mut DataTree<'static>) -> Result<(), yang3::Error> {
        let base = "/ietf-netconf-monitoring:netconf-state";
        for cap in self.capabilities() {
            let quoted = if cap.contains('\'') {
                format!("\"{cap}\"")
            } else {
                format!("'{cap}'")
            };
            tree.new_path(
                &format!("{base}/capabilities/capability[.={quoted}]"),
                None,
                false,
            )?;
        }
        let locks = guard(&self.locks).clone();
        for ds in ["running", "candidate", "startup"] {
            let p = format!("{base}/datastores/datastore[name='{ds}']");
            tree.new_path(&p, None, false)?;
            if let Some(lock) = locks.get(ds) {
                tree.new_path(
                    &format!("{p}/locks/global-lock/locked-by-session"),
                    Some(&lock.session.to_string()),
                    false,
                )?;
                tree.new_path(
                    &format!("{p}/locks/global-lock/locked-time"),
                    Some(&rfc3339(lock.since)),
                    false,
                )?;
            }
        }
        for m in l45_yang::MODULES
            .iter()
            .filter(|m| !l45_yang::INTERNAL_MODULES.contains(&m.name))
        {
            let p = format!(
                "{base}/schemas/schema[identifier='{}'][version='{}'][format='yang']",
                m.name, m.revision
            );
            let namespace = self
                .ctx
                .get_module_latest(m.name)
                .map(|x| x.namespace().to_string())
                .unwrap_or_default();
            tree.new_path(&format!("{p}/namespace"), Some(&namespace), false)?;
            tree.new_path(&format!("{p}/location"), Some("NETCONF"), false)?;
        }
        let sessions: Vec<SessionInfo> = guard(&self.sessions).values().cloned().collect();
        for si in sessions {
            let p = format!("{base}/sessions/session[session-id='{}']", si.id);
            tree.new_path(
                &format!("{p}/transport"),
                Some("ietf-netconf-monitoring:netconf-ssh"),
                false,
            )?;
            tree.new_path(&format!("{p}/username"), Some(&si.username), false)?;
            if let Some(h) = &si.source_host {
                let _ = tree.new_path(&format!("{p}/source-host"), Some(h), false);
            }
            tree.new_path(
                &format!("{p}/login-time"),
                Some(&rfc3339(si.login_time)),
                false,
            )?;
            for (leaf, v) in [
                ("in-rpcs", &si.in_rpcs),
                ("in-bad-rpcs", &si.in_bad_rpcs),
                ("out-rpc-errors", &si.out_rpc_errors),
                ("out-notifications", &si.out_notifications),
            ] {
                tree.new_path(
                    &format!("{p}/{leaf}"),
                    Some(&v.load(Ordering::Relaxed).to_string()),
                    false,
                )?;
            }
        }
        let c = &self.counters;
        tree.new_path(
            &format!("{base}/statistics/netconf-start-time"),
            Some(&rfc3339(self.started)),
            false,
        )?;
        for (leaf, v) in [
            ("in-bad-hellos", &c.in_bad_hellos),
            ("in-sessions", &c.in_sessions),
            ("dropped-sessions", &c.dropped_sessions),
            ("in-rpcs", &c.in_rpcs),
            ("in-bad-rpcs", &c.in_bad_rpcs),
            ("out-rpc-errors", &c.out_rpc_errors),
            ("out-notifications", &c.out_notifications),
        ] {
            tree.new_path(
                &format!("{base}/statistics/{leaf}"),
                Some(&v.load(Ordering::Relaxed).to_string()),
                false,
            )?;
        }
        Ok(())
    }
}
