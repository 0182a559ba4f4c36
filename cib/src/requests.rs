//! Requests: the work the NCO does on devices, as a crash-safe state machine.
//!
//! pending --mark_sent--> sent --mark_confirmed--> confirmed
//!                         sent --mark_failed(transient, attempts left)--> pending (+backoff)
//!                         sent --mark_failed(permanent or no attempts left)--> failed
//!                         sent --requeue (after a crash, device lacks it)--> pending
//! pending|sent --cancel_request--> cancelled
//!
//! Requests of one module run one at a time, oldest first: only the oldest
//! open request of a module is ever due.
//!
//! Creating a request, with its checks against the module's state, is
//! `rows::insert_request`: building modules and device reports create
//! requests too.

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{CibError, Result};
use crate::rows::{
    insert_alert, insert_request, load_module, load_request, query_requests, set_module_revoked,
};
use crate::types::{alert_kind, Failure, NewAlert, Request, RequestState, Severity, Timestamp};
use crate::{opt_ts, record_history, Action, Cib};

fn module_row_of_request(conn: &Connection, id: i64) -> Result<i64> {
    conn.query_row("SELECT module_row FROM request WHERE id = ?1", [id], |r| {
        r.get(0)
    })
    .optional()?
    .ok_or(CibError::UnknownRequest(id))
}

fn describe(r: &Request) -> String {
    format!(
        "request {} ({} of module {} on {})",
        r.id, r.action, r.module_id, r.device
    )
}

/// Loads a request and checks it is in `expected`.
fn request_in_state(
    conn: &Connection,
    id: i64,
    expected: &[RequestState],
    doing: &str,
) -> Result<Request> {
    let request = load_request(conn, id)?;
    if !expected.contains(&request.state) {
        return Err(CibError::state(
            describe(&request),
            format!("is {}; cannot {doing}", request.state),
        ));
    }
    Ok(request)
}

impl Cib {
    /// Queues `action` on a module; due at `not_before` (`None` = now).
    ///
    /// Refused: unknown device/module, a revoked module, a second open
    /// request of the same action ([`CibError::Duplicate`]), deploy of a
    /// deployed module, anything but deploy/revoke on a module that is
    /// neither deployed nor being deployed. A revoke cancels the module's
    /// pending requests; a revoke of a module never sent to its device
    /// completes at once (state `confirmed`).
    pub fn request(
        &mut self,
        device: &str,
        module_id: u32,
        action: Action,
        not_before: Option<Timestamp>,
    ) -> Result<Request> {
        let now = Timestamp::now();
        let retry = self.retry;
        self.write(|tx| {
            insert_request(
                tx,
                device,
                module_id,
                action,
                not_before.unwrap_or(now),
                now,
                retry,
            )
        })
    }

    pub fn get_request(&self, id: i64) -> Result<Request> {
        load_request(&self.conn, id)
    }

    /// Pending requests due at `now`, the oldest open one per module only,
    /// soonest first. This is the NCO scheduler's work list.
    pub fn due_requests(&self, now: Timestamp, limit: u32) -> Result<Vec<Request>> {
        query_requests(
            &self.conn,
            "WHERE r.state = 'pending' AND r.next_attempt_at <= ?1
               AND NOT EXISTS (SELECT 1 FROM request o WHERE o.module_row = r.module_row
                               AND o.id < r.id AND o.state IN ('pending', 'sent'))
             ORDER BY r.next_attempt_at, r.id LIMIT ?2",
            params![now.0, limit],
        )
    }

    /// When the next pending request falls due (to size the scheduler's
    /// sleep); `None` when nothing is pending.
    pub fn next_due_at(&self) -> Result<Option<Timestamp>> {
        let at: Option<i64> = self.conn.query_row(
            "SELECT MIN(next_attempt_at) FROM request WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?;
        Ok(opt_ts(at))
    }

    /// Requests marked sent and not yet settled. After a crash these are the
    /// ones whose outcome is unknown: check the device, then
    /// [`Cib::mark_confirmed`] or [`Cib::requeue`].
    pub fn in_flight_requests(&self) -> Result<Vec<Request>> {
        query_requests(&self.conn, "WHERE r.state = 'sent' ORDER BY r.id", [])
    }

    /// Pending and sent requests (optionally of one device), oldest first.
    pub fn open_requests(&self, device: Option<&str>) -> Result<Vec<Request>> {
        match device {
            Some(name) => {
                crate::device_row(&self.conn, name)?;
                query_requests(
                    &self.conn,
                    "WHERE r.state IN ('pending', 'sent') AND d.name = ?1 ORDER BY r.id",
                    [name],
                )
            }
            None => query_requests(
                &self.conn,
                "WHERE r.state IN ('pending', 'sent') ORDER BY r.id",
                [],
            ),
        }
    }

    /// Every request of a module, oldest first.
    pub fn requests_of_module(&self, device: &str, module_id: u32) -> Result<Vec<Request>> {
        let (row, _) = load_module(&self.conn, device, module_id)?;
        query_requests(&self.conn, "WHERE r.module_row = ?1 ORDER BY r.id", [row])
    }

    /// Requests in `state` (e.g. failed ones for the operator), newest first.
    pub fn requests_in_state(&self, state: RequestState, limit: u32) -> Result<Vec<Request>> {
        query_requests(
            &self.conn,
            "WHERE r.state = ?1 ORDER BY r.id DESC LIMIT ?2",
            params![state.as_str(), limit],
        )
    }

    /// pending → sent, counting an attempt. Call it *before* the RPC goes
    /// out, so a crash after sending is seen as "in flight", never as "not
    /// tried".
    pub fn mark_sent(&mut self, id: i64, now: Timestamp) -> Result<Request> {
        self.write(|tx| mark_sent_tx(tx, id, now))
    }

    /// [`Cib::mark_sent`] for many requests in one transaction (one fsync
    /// for a whole wave of a multi-device deploy). All or nothing: if one
    /// is not pending, none is marked.
    pub fn mark_sent_many(&mut self, ids: &[i64], now: Timestamp) -> Result<Vec<Request>> {
        self.write(|tx| ids.iter().map(|&id| mark_sent_tx(tx, id, now)).collect())
    }

    /// sent → confirmed, and the module takes the requested change.
    pub fn mark_confirmed(&mut self, id: i64, now: Timestamp) -> Result<Request> {
        self.write(|tx| mark_confirmed_tx(tx, id, now))
    }

    /// [`Cib::mark_confirmed`] for many requests in one transaction.
    pub fn mark_confirmed_many(&mut self, ids: &[i64], now: Timestamp) -> Result<Vec<Request>> {
        self.write(|tx| {
            ids.iter()
                .map(|&id| mark_confirmed_tx(tx, id, now))
                .collect()
        })
    }

    /// sent → pending after backoff (transient error, attempts left), or
    /// sent → failed with a warning alert.
    pub fn mark_failed(
        &mut self,
        id: i64,
        error: &str,
        failure: Failure,
        now: Timestamp,
    ) -> Result<Request> {
        let retry = self.retry;
        self.write(|tx| {
            let r = request_in_state(tx, id, &[RequestState::Sent], "mark it failed")?;
            if failure == Failure::Transient && r.attempts < r.max_attempts {
                let next = now.plus_millis(retry.backoff_ms(r.attempts));
                tx.execute(
                    "UPDATE request SET state = 'pending', next_attempt_at = ?2, last_error = ?3 WHERE id = ?1",
                    params![id, next.0, error],
                )?;
                let detail = format!(
                    "{} (request {id}) attempt {} of {} failed, retry at {next}: {error}",
                    r.action, r.attempts, r.max_attempts
                );
                record_history(tx, now, Some(&r.device), Some(r.module_id), "request-retry", &detail)?;
            } else {
                tx.execute(
                    "UPDATE request SET state = 'failed', finished_at = ?2, last_error = ?3 WHERE id = ?1",
                    params![id, now.0, error],
                )?;
                let why = match failure {
                    Failure::Permanent => "refused".to_owned(),
                    Failure::Transient => format!("gave up after {} attempts", r.attempts),
                };
                let message = format!("{} of module {} failed ({why}): {error}", r.action, r.module_id);
                record_history(tx, now, Some(&r.device), Some(r.module_id), "request-failed", &message)?;
                let alert = NewAlert {
                    severity: Severity::Warning,
                    device: Some(r.device.clone()),
                    module_id: Some(r.module_id),
                    kind: alert_kind::RPC_ERROR.to_owned(),
                    message,
                };
                insert_alert(tx, now, &alert)?;
            }
            load_request(tx, id)
        })
    }

    /// sent → pending, due at `now`: after a crash, when the device turned
    /// out not to have the change. The attempt still counts.
    pub fn requeue(&mut self, id: i64, now: Timestamp) -> Result<Request> {
        self.write(|tx| {
            let r = request_in_state(tx, id, &[RequestState::Sent], "requeue it")?;
            let detail = format!("{} (request {id}) back to pending", r.action);
            transition(
                tx,
                &r,
                id,
                "UPDATE request SET state = 'pending', next_attempt_at = ?2 WHERE id = ?1",
                now,
                "request-requeued",
                &detail,
            )?;
            load_request(tx, id)
        })
    }

    /// Every in-flight request back to pending, in one transaction. Safe
    /// when resending is idempotent (the NCO's deploy is an edit-config
    /// merge keyed by the fixed module id; revoke of an absent id is
    /// treated as done). Returns the requeued requests.
    pub fn requeue_all_in_flight(&mut self, now: Timestamp) -> Result<Vec<Request>> {
        self.write(|tx| {
            let in_flight = query_requests(tx, "WHERE r.state = 'sent' ORDER BY r.id", [])?;
            for r in &in_flight {
                let detail = format!(
                    "{} (request {}) back to pending after restart",
                    r.action, r.id
                );
                transition(
                    tx,
                    r,
                    r.id,
                    "UPDATE request SET state = 'pending', next_attempt_at = ?2 WHERE id = ?1",
                    now,
                    "request-requeued",
                    &detail,
                )?;
            }
            in_flight.iter().map(|r| load_request(tx, r.id)).collect()
        })
    }

    /// pending|sent → cancelled (the operator changed their mind).
    pub fn cancel_request(&mut self, id: i64) -> Result<Request> {
        let now = Timestamp::now();
        self.write(|tx| {
            let r = request_in_state(
                tx,
                id,
                &[RequestState::Pending, RequestState::Sent],
                "cancel it",
            )?;
            let detail = format!("{} (request {id}) cancelled", r.action);
            transition(
                tx,
                &r,
                id,
                "UPDATE request SET state = 'cancelled', finished_at = ?2 WHERE id = ?1",
                now,
                "request-cancelled",
                &detail,
            )?;
            load_request(tx, id)
        })
    }
}

/// One state change of request `id` (`sql` takes the id as ?1 and `now`
/// as ?2) with its history row.
fn transition(
    tx: &Connection,
    r: &Request,
    id: i64,
    sql: &str,
    now: Timestamp,
    event: &str,
    detail: &str,
) -> Result<()> {
    tx.execute(sql, params![id, now.0])?;
    record_history(tx, now, Some(&r.device), Some(r.module_id), event, detail)
}

fn mark_sent_tx(tx: &Connection, id: i64, now: Timestamp) -> Result<Request> {
    let r = request_in_state(tx, id, &[RequestState::Pending], "mark it sent")?;
    let detail = format!("{} (request {id}), attempt {}", r.action, r.attempts + 1);
    transition(
        tx,
        &r,
        id,
        "UPDATE request SET state = 'sent', attempts = attempts + 1, sent_at = ?2 WHERE id = ?1",
        now,
        "request-sent",
        &detail,
    )?;
    load_request(tx, id)
}

fn mark_confirmed_tx(tx: &Connection, id: i64, now: Timestamp) -> Result<Request> {
    let r = request_in_state(tx, id, &[RequestState::Sent], "confirm it")?;
    let row = module_row_of_request(tx, id)?;
    let event = match r.action {
        Action::Deploy => {
            tx.execute(
                "UPDATE module SET status = 'deployed', deployed_at = ?2 WHERE id = ?1",
                params![row, now.0],
            )?;
            "module-deployed"
        }
        Action::Revoke => {
            set_module_revoked(tx, row, now)?;
            "module-revoked"
        }
        Action::Deprecate => {
            tx.execute("UPDATE module SET deprecated = 1 WHERE id = ?1", [row])?;
            "module-deprecated"
        }
        Action::Activate => {
            tx.execute("UPDATE module SET activated = 1 WHERE id = ?1", [row])?;
            "module-activated"
        }
        Action::Deactivate => {
            tx.execute("UPDATE module SET activated = 0 WHERE id = ?1", [row])?;
            "module-deactivated"
        }
        Action::SetPriority(p) => {
            tx.execute(
                "UPDATE module SET priority = ?2 WHERE id = ?1",
                params![row, p],
            )?;
            "priority-set"
        }
    };
    tx.execute(
        "UPDATE request SET state = 'confirmed', finished_at = ?2 WHERE id = ?1",
        params![id, now.0],
    )?;
    let detail = format!("{} confirmed by the device (request {id})", r.action);
    record_history(tx, now, Some(&r.device), Some(r.module_id), event, &detail)?;
    load_request(tx, id)
}
