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

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::{CibError, Result};
use crate::modules::load_module;
use crate::monitor::insert_alert;
use crate::types::{
    alert_kind, Failure, ModuleStatus, NewAlert, Request, RequestState, RetryPolicy, Severity,
    Timestamp,
};
use crate::{opt_ts, record_history, to_u32, Action, Cib};

const REQUEST_SELECT: &str =
    "SELECT r.id, d.name, m.module_id, m.name, r.action, r.priority_value, r.state,
        r.attempts, r.max_attempts, r.not_before, r.next_attempt_at, r.last_error, r.created_at,
        r.sent_at, r.finished_at
     FROM request r JOIN module m ON m.id = r.module_row JOIN device d ON d.id = m.device_id";

struct RawRequest {
    id: i64,
    device: String,
    module_id: i64,
    module_name: String,
    action: String,
    priority: Option<i64>,
    state: String,
    attempts: i64,
    max_attempts: i64,
    not_before: i64,
    next_attempt_at: i64,
    last_error: Option<String>,
    created_at: i64,
    sent_at: Option<i64>,
    finished_at: Option<i64>,
}

fn raw_request(r: &Row<'_>) -> rusqlite::Result<RawRequest> {
    Ok(RawRequest {
        id: r.get(0)?,
        device: r.get(1)?,
        module_id: r.get(2)?,
        module_name: r.get(3)?,
        action: r.get(4)?,
        priority: r.get(5)?,
        state: r.get(6)?,
        attempts: r.get(7)?,
        max_attempts: r.get(8)?,
        not_before: r.get(9)?,
        next_attempt_at: r.get(10)?,
        last_error: r.get(11)?,
        created_at: r.get(12)?,
        sent_at: r.get(13)?,
        finished_at: r.get(14)?,
    })
}

impl RawRequest {
    fn finish(self) -> Result<Request> {
        Ok(Request {
            id: self.id,
            device: self.device,
            module_id: to_u32(self.module_id, "module id")?,
            module_name: self.module_name,
            action: Action::from_db(&self.action, self.priority)?,
            state: RequestState::from_db(&self.state)?,
            attempts: to_u32(self.attempts, "attempt count")?,
            max_attempts: to_u32(self.max_attempts, "attempt limit")?,
            not_before: Timestamp(self.not_before),
            next_attempt_at: Timestamp(self.next_attempt_at),
            last_error: self.last_error,
            created_at: Timestamp(self.created_at),
            sent_at: opt_ts(self.sent_at),
            finished_at: opt_ts(self.finished_at),
        })
    }
}

fn query_requests(
    conn: &Connection,
    tail: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<Request>> {
    let mut stmt = conn.prepare_cached(&format!("{REQUEST_SELECT} {tail}"))?;
    let raws = stmt
        .query_map(args, raw_request)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    raws.into_iter().map(RawRequest::finish).collect()
}

pub(crate) fn load_request(conn: &Connection, id: i64) -> Result<Request> {
    query_requests(conn, "WHERE r.id = ?1", [id])?
        .pop()
        .ok_or(CibError::UnknownRequest(id))
}

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

/// The open request of `action` on a module, if any.
fn open_request(conn: &Connection, module_row: i64, action: &str) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT id FROM request WHERE module_row = ?1 AND action = ?2 AND state IN ('pending', 'sent')",
            params![module_row, action],
            |r| r.get(0),
        )
        .optional()?)
}

/// Creates a request after checking it makes sense for the module's state.
/// Runs inside the caller's transaction.
pub(crate) fn insert_request(
    conn: &Connection,
    device: &str,
    module_id: u32,
    action: Action,
    not_before: Timestamp,
    now: Timestamp,
    retry: RetryPolicy,
) -> Result<Request> {
    let (row, module) = load_module(conn, device, module_id)?;
    let subject = format!(
        "module {module_id} (\"{}\") on device \"{device}\"",
        module.name
    );
    if module.status == ModuleStatus::Revoked {
        return Err(CibError::state(
            subject,
            "is revoked; build a new module instead",
        ));
    }
    if open_request(conn, row, action.name())?.is_some() {
        return Err(CibError::Duplicate {
            what: "an open request to",
            key: format!(
                "{}\" module {module_id} on device \"{device}",
                action.name()
            ),
        });
    }
    if action != Action::Revoke && open_request(conn, row, "revoke")?.is_some() {
        return Err(CibError::state(subject, "has a revoke pending"));
    }
    let deploy_open = open_request(conn, row, "deploy")?.is_some();
    match action {
        Action::Deploy if module.status != ModuleStatus::Built => {
            return Err(CibError::state(subject, "is already deployed"));
        }
        Action::Deploy | Action::Revoke => {}
        _ if module.status != ModuleStatus::Deployed && !deploy_open => {
            return Err(CibError::state(
                subject,
                "is not deployed (request a deploy first)",
            ));
        }
        Action::Deprecate if module.deprecated => {
            return Err(CibError::state(subject, "is already deprecated"));
        }
        _ => {}
    }

    let mut revoke_in_cib_only = false;
    if action == Action::Revoke {
        // A revoke supersedes everything still waiting for this module.
        let cancelled = conn.execute(
            "UPDATE request SET state = 'cancelled', finished_at = ?2,
                 last_error = 'superseded by a revoke'
             WHERE module_row = ?1 AND state = 'pending'",
            params![row, now.0],
        )?;
        if cancelled > 0 {
            let detail = format!("{cancelled} pending request(s) superseded by a revoke");
            record_history(
                conn,
                now,
                Some(device),
                Some(module_id),
                "requests-cancelled",
                &detail,
            )?;
        }
        // Never sent anywhere: nothing to take back from the device.
        let ever_sent: bool = conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM request WHERE module_row = ?1 AND (attempts > 0 OR state = 'sent'))",
            [row],
            |r| r.get(0),
        )?;
        revoke_in_cib_only = module.status == ModuleStatus::Built && !ever_sent;
    }

    let (state, finished) = if revoke_in_cib_only {
        (RequestState::Confirmed, Some(now.0))
    } else {
        (RequestState::Pending, None)
    };
    conn.execute(
        "INSERT INTO request (module_row, action, priority_value, state, max_attempts, not_before,
             next_attempt_at, created_at, finished_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8)",
        params![
            row,
            action.name(),
            action.priority_value(),
            state.as_str(),
            retry.max_attempts.max(1),
            not_before.0,
            now.0,
            finished
        ],
    )?;
    let request = load_request(conn, conn.last_insert_rowid())?;
    if revoke_in_cib_only {
        set_module_revoked(conn, row, now)?;
        record_history(
            conn,
            now,
            Some(device),
            Some(module_id),
            "module-revoked",
            "never sent to the device; revoked in the CIB only",
        )?;
    } else {
        let detail = if not_before > now {
            format!(
                "{} requested (request {}), not before {not_before}",
                action, request.id
            )
        } else {
            format!("{} requested (request {})", action, request.id)
        };
        record_history(
            conn,
            now,
            Some(device),
            Some(module_id),
            "request-created",
            &detail,
        )?;
    }
    Ok(request)
}

fn set_module_revoked(conn: &Connection, module_row: i64, now: Timestamp) -> Result<()> {
    conn.execute(
        "UPDATE module SET status = 'revoked', revoked_at = ?2 WHERE id = ?1",
        params![module_row, now.0],
    )?;
    conn.execute(
        "UPDATE deployment SET state = 'revoked' WHERE module_row = ?1",
        [module_row],
    )?;
    Ok(())
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
