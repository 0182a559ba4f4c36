//! The `layer45-customization` RPCs: `report` (module statistics),
//! `revoke-module` (a commit that removes the module from running),
//! `challenge` (AES-GCM challenge-response, answered by the tap) and
//! `install-module`.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use l45_netconf_proto::message::Rpc;
use yang3::data::{Data, DataTreeOwningRef};

use super::{ok, After, Reply};
use crate::agent::{guard, Agent};
use crate::config::commit::Commit;
use crate::config::delta::Delta;
use crate::config::edit::{EditOp, Touched};
use crate::datastore::{module_path, schema, Datastore, Slots};
use crate::error::OpError;
use crate::sessions::SessionInfo;
use crate::time::rfc3339;

impl Agent {
    pub(super) fn op_l45(self: &Arc<Self>, s: &SessionInfo, rpc: &Rpc) -> Reply {
        let tree = DataTreeOwningRef::parse_netconf_rpc_op(self.ctx, &rpc.source)
            .map_err(OpError::YangRequest)?;
        let name = rpc.operation.name.as_str();
        let leaf = |leaf: &str| -> Option<String> {
            tree.find_path(&format!("/layer45-customization:{name}/{leaf}"))
                .ok()
                .and_then(|n| n.value_canonical())
        };
        let id = || -> Result<u32, OpError> {
            leaf("id")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| OpError::MissingParameter {
                    element: "id",
                    message: "id is missing".into(),
                })
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        match name {
            "report" => Ok((self.report(), After::Continue)),
            "revoke-module" => self.revoke(s, id()?),
            "challenge" => {
                let id = id()?;
                let nonce = leaf("nonce")
                    .and_then(|v| b64.decode(v).ok())
                    .unwrap_or_default();
                let ct = leaf("ciphertext")
                    .and_then(|v| b64.decode(v).ok())
                    .unwrap_or_default();
                let answer = self.tap.challenge(id, &nonce, &ct).map_err(|e| {
                    self.notifier.security_check_failed(id, &e.to_string());
                    OpError::Tap(e)
                })?;
                let ns = l45_yang::L45_NAMESPACE;
                Ok((
                    format!(
                        "<nonce xmlns=\"{ns}\">{}</nonce><ciphertext xmlns=\"{ns}\">{}</ciphertext>",
                        b64.encode(&answer.nonce),
                        b64.encode(&answer.ciphertext)
                    ),
                    After::Continue,
                ))
            }
            "install-module" => {
                let id = id()?;
                let image = leaf("image")
                    .and_then(|v| b64.decode(v).ok())
                    .unwrap_or_default();
                let digest = leaf("sha256").unwrap_or_default();
                self.tap.install(id, &image, &digest)?;
                ok()
            }
            other => Err(OpError::NotSupported {
                element: None,
                message: format!("operation {other} is not supported"),
            }),
        }
    }

    /// Every module the tap holds: state, statistics and (from running)
    /// whether it is activated.
    fn report(&self) -> String {
        let ns = l45_yang::L45_NAMESPACE;
        let mut out = String::new();
        let stats = self.tap.module_stats();
        let activated: BTreeMap<u32, bool> = match schema() {
            Ok(schema) => {
                let stores = self.stores();
                stats
                    .iter()
                    .filter_map(|st| {
                        let e = stores.running.modules.get(&st.id)?;
                        let slots = Slots::parse(schema, e).ok()?;
                        Some((st.id, slots.module_config(schema).activated))
                    })
                    .collect()
            }
            Err(_) => BTreeMap::new(),
        };
        for st in stats {
            out.push_str(&format!(
                "<module xmlns=\"{ns}\"><id>{}</id><state>{}</state>",
                st.id,
                st.state.as_str()
            ));
            if let Some(a) = activated.get(&st.id) {
                out.push_str(&format!("<activated>{a}</activated>"));
            }
            if let Some(ts) = st.active_ts {
                out.push_str(&format!("<active-ts>{}</active-ts>", rfc3339(ts)));
            }
            out.push_str(&format!(
                "<socket-count>{}</socket-count><bytes-sent>{}</bytes-sent><bytes-received>{}</bytes-received><messages-sent>{}</messages-sent><messages-received>{}</messages-received><errors>{}</errors></module>",
                st.socket_count, st.bytes_sent, st.bytes_received, st.messages_sent, st.messages_received, st.errors
            ));
        }
        out
    }

    /// `revoke-module`: the module leaves running (and so every socket).
    fn revoke(&self, s: &SessionInfo, id: u32) -> Reply {
        let _w = guard(&self.write_lock);
        self.check_lock(Datastore::Running, s)?;
        let path = module_path(id);
        if !self.stores().running.modules.contains_key(&id) {
            return Err(OpError::DataMissing {
                message: format!("no module {id}"),
                path,
            });
        }
        let mut delta = Delta::default();
        delta.changes.insert(id, None);
        let touched = [Touched {
            path,
            op: EditOp::Delete,
        }];
        self.commit(Commit {
            actor: s.actor(),
            delta,
            rest: None,
            touched: &touched,
            source: "running",
        })?;
        ok()
    }
}
