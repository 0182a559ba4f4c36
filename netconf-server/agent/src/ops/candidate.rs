//! The candidate: `commit` (with RFC 6241 8.4 confirmed commit: timeout,
//! persist, persist-id), `cancel-commit`, `discard-changes`, and the
//! rollback of a confirmed commit that was not confirmed.
//!
//! The pending confirmed commit is stored (`datastore::confirmed`) before
//! running changes and forgotten only once it is settled, so a crash
//! anywhere leaves either the stored state before the request or after it.
//! After a restart (`resume_confirmed`) the timer resumes with the time
//! left; one that ran out while the agent was down, or one without
//! `persist` (its session is gone, RFC 6241 8.4.1), is rolled back at once.
//! A rollback that fails (the tap refuses) keeps the commit pending, logs
//! an error and is retried with backoff until it succeeds.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use l45_netconf_proto::message::Rpc;
use l45_netconf_proto::BASE_NS;

use super::edit::replaced;
use super::{ok, Reply};
use crate::agent::{guard, Agent, ConfirmedCommit};
use crate::config::commit::Commit;
use crate::config::delta::Delta;
use crate::config::edit;
use crate::datastore::confirmed::{self, PendingRecord};
use crate::datastore::Datastore;
use crate::error::OpError;
use crate::sessions::{Actor, SessionInfo};

/// Seconds a confirmed commit waits without `confirm-timeout` (RFC 6241).
const DEFAULT_CONFIRM_TIMEOUT: u32 = 600;

/// First wait before a failed rollback is tried again; it doubles up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

fn retry_delay(attempt: u32) -> Duration {
    RETRY_FIRST
        .saturating_mul(1u32 << attempt.min(16))
        .min(RETRY_MAX)
}

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
        let prior = match guard(&self.confirmed).as_ref() {
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
                if p.owed {
                    return Err(OpError::InUse(
                        "the confirmed commit has ended; restoring the configuration \
                         before it failed and is being retried"
                            .into(),
                    ));
                }
                Some(record_of(p)?)
            }
            None if req.persist_id.is_some() => {
                return Err(OpError::InvalidValue {
                    message: "no confirmed commit with that persist-id is pending".into(),
                    element: Some("persist-id"),
                    path: None,
                })
            }
            None => None,
        };
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
        let deadline = SystemTime::now() + Duration::from_secs(u64::from(req.timeout));
        // What is stored after this commit, stored before running changes:
        // a crash in between then restores the configuration before this
        // (unacknowledged) commit, or keeps it confirmed.
        let next = match (&prior, req.confirmed) {
            (_, false) => None,
            (Some(p), true) => Some(PendingRecord {
                deadline,
                persist: req.persist.clone().or_else(|| p.persist.clone()),
                ..p.clone()
            }),
            (None, true) => Some(PendingRecord {
                deadline,
                session_id: s.id,
                persist: req.persist.clone(),
                backup: backup.to_xml()?,
            }),
        };
        if prior.is_some() || next.is_some() {
            self.store_pending(next.as_ref())?;
        }
        let committed = self.commit(Commit {
            actor: s.actor(),
            delta,
            rest: Some(rest),
            touched: &replaced(),
            source: "candidate",
        });
        if let Err(e) = committed {
            if prior.is_some() || next.is_some() {
                if let Err(undo) = self.store_pending(prior.as_ref()) {
                    tracing::error!(error = %undo, "restoring the stored confirmed commit failed");
                }
            }
            return Err(e);
        }
        self.stores_mut().reset_candidate();
        let mut pending = guard(&self.confirmed);
        if req.confirmed {
            let generation = self.confirmed_generation.fetch_add(1, Ordering::Relaxed) + 1;
            let event = if pending.is_some() { "extend" } else { "start" };
            self.notifier
                .confirmed_commit(&s.actor(), event, Some(req.timeout));
            match pending.as_mut() {
                Some(p) => {
                    p.generation = generation;
                    p.deadline = deadline;
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
                        deadline,
                        owed: false,
                    })
                }
            }
            self.schedule_rollback(
                generation,
                Duration::from_secs(u64::from(req.timeout)),
                0,
                "timeout",
            );
            tracing::info!(
                session_id = s.id,
                timeout = req.timeout,
                "confirmed commit pending"
            );
        } else if pending.take().is_some() {
            tracing::info!(session_id = s.id, "confirmed commit confirmed");
            self.notifier.confirmed_commit(&s.actor(), "complete", None);
        }
        ok()
    }

    /// Stores the pending confirmed commit, or forgets it (`None`).
    fn store_pending(&self, record: Option<&PendingRecord>) -> Result<(), OpError> {
        let dir = &self.opts.state_dir;
        match record {
            Some(r) => confirmed::save(dir, r),
            None => confirmed::remove(dir),
        }
        .map_err(|source| OpError::Persist {
            what: "the pending confirmed commit",
            source,
        })
    }

    /// Takes up a confirmed commit stored before the agent stopped: its
    /// timer goes on with the time left; one whose time ran out, or one
    /// without persist (its session ended with the agent), is rolled back
    /// now.
    pub(crate) fn resume_confirmed(self: &Arc<Self>, record: PendingRecord) -> Result<(), OpError> {
        let backup =
            edit::load(self.ctx, self.opts.engine, &record.backup).map_err(OpError::Failed)?;
        let generation = self.confirmed_generation.fetch_add(1, Ordering::Relaxed) + 1;
        let left = record
            .deadline
            .duration_since(SystemTime::now())
            .ok()
            .filter(|_| record.persist.is_some());
        *guard(&self.confirmed) = Some(ConfirmedCommit {
            backup,
            session_id: record.session_id,
            persist: record.persist,
            generation,
            deadline: record.deadline,
            owed: false,
        });
        match left {
            Some(left) => {
                tracing::info!(
                    remaining_s = left.as_secs(),
                    "confirmed commit still pending after the restart"
                );
                self.schedule_rollback(generation, left, 0, "timeout");
            }
            None => {
                tracing::info!(
                    "confirmed commit not confirmed before the restart (timed out, or its \
                     session ended); rolling back"
                );
                self.rollback_or_retry(generation, 0, "timeout");
            }
        }
        Ok(())
    }

    /// After `delay`, rolls back the confirmed commit armed as `generation`
    /// (nothing if it was confirmed or re-armed since); `event` is the RFC
    /// 6470 confirm-event announced when it is done.
    fn schedule_rollback(
        self: &Arc<Self>,
        generation: u64,
        delay: Duration,
        attempt: u32,
        event: &'static str,
    ) {
        let agent = Arc::clone(self);
        self.runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tokio::task::spawn_blocking(move || {
                agent.rollback_or_retry(generation, attempt, event)
            })
            .await;
        });
    }

    /// Rolls back the confirmed commit armed as `generation`; when that
    /// fails it stays pending (and stored), and is tried again with
    /// backoff.
    pub(crate) fn rollback_or_retry(
        self: &Arc<Self>,
        generation: u64,
        attempt: u32,
        event: &'static str,
    ) {
        let current = guard(&self.confirmed)
            .as_ref()
            .is_some_and(|p| p.generation == generation);
        match self.rollback_confirmed(Some(generation)) {
            Ok(()) if current => self.notifier.confirmed_commit(&Actor::SYSTEM, event, None),
            Ok(()) => {}
            Err(e) => {
                let delay = retry_delay(attempt);
                tracing::error!(
                    error = %e,
                    attempt = attempt + 1,
                    retry_in_s = delay.as_secs(),
                    "restoring the configuration before the confirmed commit failed; will retry"
                );
                self.notifier
                    .rollback_failed(attempt + 1, delay.as_secs(), &e.to_string());
                self.schedule_rollback(generation, delay, attempt + 1, event);
            }
        }
    }

    /// Restores running from before a confirmed commit. `generation` None
    /// rolls back unconditionally; otherwise only if the timer is current.
    /// On failure the commit stays pending, marked owed.
    pub fn rollback_confirmed(&self, generation: Option<u64>) -> Result<(), OpError> {
        let _w = guard(&self.write_lock);
        let backup = {
            let pending = guard(&self.confirmed);
            match (pending.as_ref(), generation) {
                (None, _) => return Ok(()),
                (Some(p), Some(g)) if p.generation != g => return Ok(()),
                (Some(p), _) => p.backup.share(),
            }
        };
        let result = backup.map_err(OpError::from).and_then(|backup| {
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
            self.store_pending(None)
        });
        let mut pending = guard(&self.confirmed);
        match result {
            Ok(()) => {
                *pending = None;
                drop(pending);
                self.stores_mut().reset_candidate();
                Ok(())
            }
            Err(e) => {
                if let Some(p) = pending.as_mut() {
                    p.owed = true;
                }
                Err(e)
            }
        }
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
        if let Err(e) = self.rollback_confirmed(None) {
            // The cancel stands: the rollback is owed and retried.
            if let Some(generation) = guard(&self.confirmed).as_ref().map(|p| p.generation) {
                self.schedule_rollback(generation, retry_delay(0), 1, "cancel");
            }
            return Err(e);
        }
        self.notifier.confirmed_commit(&s.actor(), "cancel", None);
        ok()
    }

    pub(super) fn op_discard(self: &Arc<Self>, s: &SessionInfo) -> Reply {
        let _w = guard(&self.write_lock);
        self.check_lock(Datastore::Candidate, s)?;
        self.stores_mut().reset_candidate();
        ok()
    }
}

/// The stored form of a pending confirmed commit.
fn record_of(p: &ConfirmedCommit) -> Result<PendingRecord, OpError> {
    Ok(PendingRecord {
        deadline: p.deadline,
        session_id: p.session_id,
        persist: p.persist.clone(),
        backup: p.backup.to_xml()?,
    })
}
