//! The candidate: `commit` (with RFC 6241 8.4 confirmed commit: timeout,
//! persist, persist-id), `cancel-commit`, `discard-changes`, and the
//! rollback of a confirmed commit that was not confirmed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use l45_netconf_proto::message::Rpc;
use l45_netconf_proto::BASE_NS;

use super::edit::replaced;
use super::{ok, Reply};
use crate::agent::{guard, Agent, ConfirmedCommit};
use crate::config::commit::Commit;
use crate::config::delta::Delta;
use crate::datastore::Datastore;
use crate::error::OpError;
use crate::sessions::{Actor, SessionInfo};

/// Seconds a confirmed commit waits without `confirm-timeout` (RFC 6241).
const DEFAULT_CONFIRM_TIMEOUT: u32 = 600;

/// The parameters of `<commit>`.
struct CommitRequest {
    confirmed: bool,
    timeout: u32,
    persist: Option<String>,
    persist_id: Option<String>,
}

impl CommitRequest {
    fn parse(rpc: &Rpc) -> Result<CommitRequest, OpError> {
        let op = &rpc.operation;
        let text = |name: &str| {
            op.child(BASE_NS, name)
                .map(|e| e.trimmed_text().to_string())
        };
        let timeout = match op.child(BASE_NS, "confirm-timeout") {
            Some(t) => t
                .trimmed_text()
                .parse::<u32>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| OpError::BadParameter {
                    element: "confirm-timeout".into(),
                    message: "confirm-timeout must be a positive number of seconds".into(),
                })?,
            None => DEFAULT_CONFIRM_TIMEOUT,
        };
        Ok(CommitRequest {
            confirmed: op.child(BASE_NS, "confirmed").is_some(),
            timeout,
            persist: text("persist"),
            persist_id: text("persist-id"),
        })
    }
}

impl Agent {
    pub(super) fn op_commit(self: &Arc<Self>, s: &SessionInfo, rpc: &Rpc) -> Reply {
        let req = CommitRequest::parse(rpc)?;
        let _w = guard(&self.write_lock);
        self.check_lock(Datastore::Running, s)?;
        // A pending confirmed commit may only be confirmed by its session or
        // by the holder of its persist id.
        match guard(&self.confirmed).as_ref() {
            Some(p) => {
                let allowed = match (&p.persist, &req.persist_id) {
                    (Some(expected), Some(given)) => expected == given,
                    (Some(_), None) => false,
                    (None, _) => p.session_id == s.id,
                };
                if !allowed {
                    return Err(OpError::InUse(
                        "a confirmed commit of another session is pending".into(),
                    ));
                }
            }
            None if req.persist_id.is_some() => {
                return Err(OpError::InvalidValue {
                    message: "no confirmed commit with that persist-id is pending".into(),
                    element: Some("persist-id"),
                    path: None,
                })
            }
            None => {}
        }
        let (delta, rest, backup) = {
            let stores = self.stores();
            let c = stores.get(Datastore::Candidate);
            if stores.candidate_unvalidated {
                c.to_tree(self.ctx)?;
            }
            (
                Delta::between(&stores.running.modules, &c.modules),
                c.rest.duplicate()?,
                stores.running.share()?,
            )
        };
        self.commit(Commit {
            actor: s.actor(),
            delta,
            rest: Some(rest),
            touched: &replaced(),
            source: "candidate",
        })?;
        self.stores_mut().reset_candidate();
        let mut pending = guard(&self.confirmed);
        if req.confirmed {
            let generation = self.confirmed_generation.fetch_add(1, Ordering::Relaxed) + 1;
            match pending.as_mut() {
                Some(p) => {
                    p.generation = generation;
                    if req.persist.is_some() {
                        p.persist = req.persist;
                    }
                }
                None => {
                    *pending = Some(ConfirmedCommit {
                        backup,
                        session_id: s.id,
                        persist: req.persist,
                        generation,
                    })
                }
            }
            let agent = Arc::clone(self);
            let timeout = req.timeout;
            self.runtime.spawn(async move {
                tokio::time::sleep(Duration::from_secs(u64::from(timeout))).await;
                let rolled =
                    tokio::task::spawn_blocking(move || agent.rollback_confirmed(Some(generation)))
                        .await;
                if let Ok(Err(e)) = rolled {
                    tracing::error!(error = %e, "rolling back the confirmed commit failed");
                }
            });
            tracing::info!(session_id = s.id, timeout, "confirmed commit pending");
        } else if pending.take().is_some() {
            tracing::info!(session_id = s.id, "confirmed commit confirmed");
        }
        ok()
    }

    /// Restores running from before a confirmed commit. `generation` None
    /// rolls back unconditionally; otherwise only if the timer is current.
    pub fn rollback_confirmed(&self, generation: Option<u64>) -> Result<(), OpError> {
        let _w = guard(&self.write_lock);
        let backup = {
            let mut pending = guard(&self.confirmed);
            match (pending.as_ref(), generation) {
                (None, _) => return Ok(()),
                (Some(p), Some(g)) if p.generation != g => return Ok(()),
                _ => {}
            }
            match pending.take() {
                Some(p) => p.backup,
                None => return Ok(()),
            }
        };
        tracing::warn!(
            "confirmed commit not confirmed; restoring the previous running configuration"
        );
        let delta = Delta::between(&self.stores().running.modules, &backup.modules);
        self.commit(Commit {
            actor: Actor::SYSTEM,
            delta,
            rest: Some(backup.rest),
            touched: &replaced(),
            source: "running",
        })?;
        self.stores_mut().reset_candidate();
        Ok(())
    }

    pub(super) fn op_cancel_commit(self: &Arc<Self>, s: &SessionInfo, rpc: &Rpc) -> Reply {
        let persist_id = rpc
            .operation
            .child(BASE_NS, "persist-id")
            .map(|e| e.trimmed_text().to_string());
        {
            let pending = guard(&self.confirmed);
            let Some(p) = pending.as_ref() else {
                return Err(OpError::Failed("no confirmed commit is pending".into()));
            };
            let allowed = match (&p.persist, &persist_id) {
                (Some(e), Some(g)) => e == g,
                (None, None) => p.session_id == s.id,
                _ => false,
            };
            if !allowed {
                return Err(OpError::invalid(
                    "this session may not cancel the pending confirmed commit",
                ));
            }
        }
        self.rollback_confirmed(None)?;
        ok()
    }

    pub(super) fn op_discard(self: &Arc<Self>, s: &SessionInfo) -> Reply {
        let _w = guard(&self.write_lock);
        self.check_lock(Datastore::Candidate, s)?;
        self.stores_mut().reset_candidate();
        ok()
    }
}
