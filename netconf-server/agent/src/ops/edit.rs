//! `edit-config`, `copy-config`, `delete-config` and `validate`: each
//! parses its request, computes the change ([`edit::compute`]) and, for
//! running, commits it ([`Commit`]).

use std::sync::Arc;

use l45_netconf_proto::message::Rpc;
use l45_netconf_proto::xml::Element;
use l45_netconf_proto::BASE_NS;
use yang3::data::{Data, DataTree, DataValidationFlags};
use yang3::schema::SchemaNodeKind;

use super::{datastore_param, ok, Reply};
use crate::agent::{guard, Agent};
use crate::config::commit::Commit;
use crate::config::delta::Delta;
use crate::config::edit::apply::node_op;
use crate::config::edit::content::{config_xml, parse_config};
use crate::config::edit::{self, EditConfig, EditOp, TestOption, Touched, WriteAccess};
use crate::datastore::{Datastore, Ds, CUSTOMIZATIONS};
use crate::error::OpError;
use crate::nacm::{Access, Nacm};
use crate::sessions::SessionInfo;

/// A replacement of the whole module list, as notifications report it.
pub(super) fn replaced() -> [Touched; 1] {
    [Touched {
        path: CUSTOMIZATIONS.to_string(),
        op: EditOp::Replace,
    }]
}

/// The `<source>` of copy-config and validate.
fn source_element(op: &Element) -> Result<&Element, OpError> {
    op.child(BASE_NS, "source")
        .ok_or_else(|| OpError::MissingParameter {
            element: "source",
            message: "<source> is missing".into(),
        })
}

impl Agent {
    /// NACM write access to every top-level node of `edit`, and the
    /// explicit permit module keys need.
    fn check_write_access(
        &self,
        s: &SessionInfo,
        nacm: &Nacm,
        edit: &DataTree<'static>,
    ) -> Result<(), OpError> {
        let rule_paths = nacm.data_rules(&s.username, Access::Write);
        if !rule_paths.is_empty() {
            return self.check_write_access_nodes(s, nacm, edit, &rule_paths);
        }
        if let Some(first) = edit.reference() {
            for top in first.inclusive_siblings() {
                let module = top.schema().module().name().to_string();
                if !nacm.may(&s.username, &module, Access::Write, false) {
                    return Err(OpError::AccessDenied {
                        message: format!("user '{}' may not write {module} data", s.username),
                        path: Some(top.path()),
                    });
                }
            }
        }
        if edit
            .find_xpath("/layer45-customization:customizations/module/security/key")
            .map(|mut s| s.next().is_some())
            .unwrap_or(false)
            && !nacm.may(&s.username, l45_yang::L45_MODULE, Access::Write, true)
        {
            return Err(OpError::AccessDenied {
                message: "module keys need an explicit NACM permit".into(),
                path: None,
            });
        }
        Ok(())
    }

    /// Write access decided per node of the edit (RFC 8341 3.4.5), for
    /// users with `path` rules: every value the edit sets and every node
    /// it creates, replaces or deletes explicitly. A rule's path covers the
    /// node it selects and everything below it.
    fn check_write_access_nodes(
        &self,
        s: &SessionInfo,
        nacm: &Nacm,
        edit: &DataTree<'static>,
        rule_paths: &[String],
    ) -> Result<(), OpError> {
        let selected: Vec<(&str, Vec<String>)> = rule_paths
            .iter()
            .map(|p| {
                let nodes = edit
                    .find_xpath(p)
                    .map(|set| set.map(|n| n.path()).collect())
                    .unwrap_or_default();
                (p.as_str(), nodes)
            })
            .collect();
        for node in edit.traverse() {
            // What the edit changes: values (not keys, which only name an
            // entry) and nodes with an explicit operation.
            let schema = node.schema();
            let terminal = matches!(
                schema.kind(),
                SchemaNodeKind::Leaf | SchemaNodeKind::LeafList
            ) && !schema.is_list_key();
            if !terminal && node_op(&node).is_none() {
                continue;
            }
            let path = node.path();
            let under = |nodes: &[String]| {
                nodes.iter().any(|n| {
                    path.strip_prefix(n.as_str())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                })
            };
            let covers = |rule_path: &str| {
                selected
                    .iter()
                    .any(|(p, nodes)| *p == rule_path && under(nodes))
            };
            let module = node.schema().module().name().to_string();
            let sensitive = path.ends_with("/security/key")
                || path.starts_with("/layer45-customization:images/trusted-signer");
            if !nacm.may_node(&s.username, &module, Access::Write, sensitive, &covers) {
                return Err(OpError::AccessDenied {
                    message: format!("user '{}' may not write this node", s.username),
                    path: Some(path),
                });
            }
        }
        Ok(())
    }

    pub(super) fn op_edit_config(
        self: &Arc<Self>,
        s: &SessionInfo,
        rpc: &Rpc,
        nacm: &Nacm,
    ) -> Reply {
        let target = datastore_param(&rpc.operation, "target")?;
        if target == Datastore::Startup {
            return Err(OpError::NotSupported {
                element: None,
                message: "edit-config on startup is not supported; use copy-config".into(),
            });
        }
        let request = EditConfig::parse(rpc, target)?;
        self.edit(s, nacm, &request)
    }

    /// Carries out a parsed edit (`edit-config`, `edit-data`) on running or
    /// candidate.
    pub(super) fn edit(
        self: &Arc<Self>,
        s: &SessionInfo,
        nacm: &Nacm,
        request: &EditConfig<'_>,
    ) -> Reply {
        let target = request.target;
        let _w = guard(&self.write_lock);
        self.check_lock(target, s)?;
        // Path rules are decided per node, by the libyang engine's check.
        let per_node = !nacm.data_rules(&s.username, Access::Write).is_empty();
        let access = WriteAccess {
            module: !per_node && nacm.may(&s.username, l45_yang::L45_MODULE, Access::Write, false),
            keys: nacm.may(&s.username, l45_yang::L45_MODULE, Access::Write, true),
        };
        let authorize = |tree: &DataTree<'static>| self.check_write_access(s, nacm, tree);
        let computed = {
            let stores = self.stores();
            edit::compute(
                self.ctx,
                self.opts.engine,
                request,
                stores.get(target),
                access,
                &authorize,
            )?
        };
        let errors = computed.errors;
        if request.test_option == TestOption::TestOnly {
            return if errors.is_empty() {
                ok()
            } else {
                Err(OpError::Wire(errors))
            };
        }
        match target {
            Datastore::Running => self.commit(Commit {
                actor: s.actor(),
                delta: computed.delta,
                rest: computed.rest,
                touched: &computed.touched,
                source: "running",
            })?,
            Datastore::Candidate => {
                let mut stores = self.stores_mut();
                let candidate = stores.candidate_mut()?;
                if let Some(rest) = computed.rest {
                    candidate.rest = rest;
                }
                computed.delta.apply_to(&mut candidate.modules);
                stores.candidate_dirty = true;
                stores.candidate_unvalidated |= request.test_option == TestOption::Set;
            }
            Datastore::Startup => {}
        }
        if errors.is_empty() {
            ok()
        } else {
            Err(OpError::Wire(errors))
        }
    }

    pub(super) fn op_copy_config(
        self: &Arc<Self>,
        s: &SessionInfo,
        rpc: &Rpc,
        nacm: &Nacm,
    ) -> Reply {
        let op = &rpc.operation;
        let target = datastore_param(op, "target")?;
        let source_el = source_element(op)?;
        let new_ds = match source_el.child(BASE_NS, "config") {
            Some(config) => {
                let scope = source_el.scope_for_children(&rpc.op_child_scope());
                let xml = config_xml(config, &rpc.source, &scope)?;
                if xml.contains("l45nc:operation") {
                    return Err(OpError::BadAttribute(
                        "copy-config content may not carry operation attributes".into(),
                    ));
                }
                let mut t = parse_config(self.ctx, &xml)?;
                self.check_write_access(s, nacm, &t)?;
                t.validate(DataValidationFlags::NO_STATE)?;
                Ds::from_tree(&t)?
            }
            None => {
                let source = datastore_param(op, "source")?;
                if source == target {
                    return Err(OpError::Contradiction(
                        "source and target are the same datastore".into(),
                    ));
                }
                self.stores().get(source).share()?
            }
        };
        if !nacm.may(&s.username, "*", Access::Write, false) && target != Datastore::Startup {
            let tree = new_ds.to_tree(self.ctx)?;
            self.check_write_access(s, nacm, &tree)?;
        }
        let _w = guard(&self.write_lock);
        self.check_lock(target, s)?;
        match target {
            Datastore::Running => {
                let delta = Delta::between(&self.stores().running.modules, &new_ds.modules);
                self.commit(Commit {
                    actor: s.actor(),
                    delta,
                    rest: Some(new_ds.rest),
                    touched: &replaced(),
                    source: "running",
                })?;
            }
            Datastore::Candidate => {
                let mut stores = self.stores_mut();
                stores.candidate = Some(new_ds);
                stores.candidate_dirty = true;
            }
            Datastore::Startup => {
                self.stores_mut().startup = new_ds;
                self.save(Datastore::Startup)?;
            }
        }
        ok()
    }

    pub(super) fn op_delete_config(self: &Arc<Self>, s: &SessionInfo, rpc: &Rpc) -> Reply {
        let target = datastore_param(&rpc.operation, "target")?;
        let _w = guard(&self.write_lock);
        self.check_lock(target, s)?;
        match target {
            Datastore::Running => Err(OpError::NotSupported {
                element: None,
                message: "running cannot be deleted".into(),
            }),
            Datastore::Candidate => {
                self.stores_mut().reset_candidate();
                ok()
            }
            Datastore::Startup => {
                self.stores_mut().startup = Ds::new(self.ctx);
                self.save(Datastore::Startup)?;
                ok()
            }
        }
    }

    pub(super) fn op_validate(self: &Arc<Self>, rpc: &Rpc) -> Reply {
        let op = &rpc.operation;
        let source_el = source_element(op)?;
        let mut tree = match source_el.child(BASE_NS, "config") {
            Some(config) => {
                let scope = source_el.scope_for_children(&rpc.op_child_scope());
                let xml = config_xml(config, &rpc.source, &scope)?;
                parse_config(self.ctx, &xml)?
            }
            None => self
                .stores()
                .get(super::nmda::datastore_in(rpc, "source")?)
                .to_tree(self.ctx)?,
        };
        tree.validate(DataValidationFlags::NO_STATE)?;
        ok()
    }
}
