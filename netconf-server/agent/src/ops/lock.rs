//! `lock`, `unlock` and `kill-session` (RFC 6241 7.5, 7.6, 7.9).

use std::sync::Arc;
use std::time::SystemTime;

use l45_netconf_proto::message::Rpc;
use l45_netconf_proto::BASE_NS;

use super::{ok, Reply};
use crate::agent::{guard, Agent, DatastoreLock};
use crate::datastore::Datastore;
use crate::error::OpError;
use crate::sessions::SessionInfo;

impl Agent {
    pub(super) fn op_lock(self: &Arc<Self>, s: &SessionInfo, rpc: &Rpc) -> Reply {
        let target = super::nmda::datastore_in(rpc, "target")?;
        let mut locks = guard(&self.locks);
        if let Some(lock) = locks.get(target.as_str()) {
            return Err(OpError::Locked {
                datastore: target,
                owner: lock.session,
                already: true,
            });
        }
        if target == Datastore::Candidate && self.stores().candidate_dirty {
            return Err(OpError::CandidateDirty);
        }
        locks.insert(
            target.as_str(),
            DatastoreLock {
                session: s.id,
                since: SystemTime::now(),
            },
        );
        ok()
    }

    pub(super) fn op_unlock(self: &Arc<Self>, s: &SessionInfo, rpc: &Rpc) -> Reply {
        let target = super::nmda::datastore_in(rpc, "target")?;
        let mut locks = guard(&self.locks);
        match locks.get(target.as_str()).map(|l| l.session) {
            Some(o) if o == s.id => {
                locks.remove(target.as_str());
                ok()
            }
            Some(o) => Err(OpError::Locked {
                datastore: target,
                owner: o,
                already: false,
            }),
            None => Err(OpError::NotLocked(target)),
        }
    }

    pub(super) fn op_kill_session(self: &Arc<Self>, s: &SessionInfo, rpc: &Rpc) -> Reply {
        let text = rpc
            .operation
            .child(BASE_NS, "session-id")
            .map(|e| e.trimmed_text().to_string());
        let Some(id) = text.as_deref().and_then(|t| t.parse::<u32>().ok()) else {
            return Err(OpError::MissingParameter {
                element: "session-id",
                message: "kill-session needs a session-id".into(),
            });
        };
        if id == s.id {
            return Err(OpError::Contradiction(
                "a session cannot kill itself; use close-session".into(),
            ));
        }
        let target = guard(&self.sessions).get(&id).cloned();
        match target {
            Some(info) => {
                // (the session may have ended on its own meanwhile)
                let _ = info.kill.send(true);
                // Release its locks now, so the caller can take them at once.
                self.close_session(id);
                ok()
            }
            None => Err(OpError::InvalidValue {
                message: format!("no session {id}"),
                element: Some("session-id"),
                path: None,
            }),
        }
    }
}
