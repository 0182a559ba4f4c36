//! Device-reported state, security checks, alerts, history, status.

use std::collections::{HashMap, HashSet};

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::{CibError, Result};
use crate::rows::{insert_alert, insert_request, load_module, query_modules};
use crate::types::{
    alert_kind, Alert, Deployment, DeviceStatus, HistoryEntry, HistoryFilter, Module, ModuleReport,
    ModuleStatus, NewAlert, ReportOutcome, ReportedState, RequestState, SecurityOutcome, Severity,
    Timestamp,
};
use crate::{
    counter_from_db, counter_to_db, device_row, opt_ts, record_history, to_u32, Action, Cib,
};

// ===== alerts =====

fn alert_from_row(r: &Row<'_>) -> rusqlite::Result<(Alert, String, Option<i64>)> {
    Ok((
        Alert {
            id: r.get(0)?,
            at: Timestamp(r.get(1)?),
            severity: Severity::Info,
            device: r.get(3)?,
            module_id: None,
            kind: r.get(5)?,
            message: r.get(6)?,
            acknowledged: r.get(7)?,
            acknowledged_at: opt_ts(r.get(8)?),
        },
        r.get(2)?,
        r.get(4)?,
    ))
}

fn finish_alert((mut alert, severity, module_id): (Alert, String, Option<i64>)) -> Result<Alert> {
    alert.severity = Severity::from_db(&severity)?;
    alert.module_id = module_id.map(|m| to_u32(m, "module id")).transpose()?;
    Ok(alert)
}

// ===== deployments =====

const DEPLOYMENT_SELECT: &str =
    "SELECT d.name, m.module_id, m.name, x.state, x.activated, x.active_ts,
        x.socket_count, x.bytes_sent, x.bytes_received, x.messages_sent, x.messages_received,
        x.errors, x.last_report_at, x.last_security_check, x.last_security_ok, x.security_failures
     FROM deployment x JOIN module m ON m.id = x.module_row JOIN device d ON d.id = m.device_id";

type RawDeployment = (Deployment, String, i64, i64, i64);

fn deployment_from_row(r: &Row<'_>) -> rusqlite::Result<RawDeployment> {
    Ok((
        Deployment {
            device: r.get(0)?,
            module_id: 0,
            module_name: r.get(2)?,
            state: ReportedState::Registered,
            activated: r.get(4)?,
            active_ts: r.get(5)?,
            socket_count: 0,
            bytes_sent: counter_from_db(r.get(7)?),
            bytes_received: counter_from_db(r.get(8)?),
            messages_sent: counter_from_db(r.get(9)?),
            messages_received: counter_from_db(r.get(10)?),
            errors: counter_from_db(r.get(11)?),
            last_report_at: Timestamp(r.get(12)?),
            last_security_check: opt_ts(r.get(13)?),
            last_security_ok: r.get(14)?,
            security_failures: 0,
        },
        r.get(3)?,
        r.get(1)?,
        r.get(6)?,
        r.get(15)?,
    ))
}

fn finish_deployment(
    (mut d, state, module_id, sockets, failures): RawDeployment,
) -> Result<Deployment> {
    d.state = ReportedState::from_db(&state)?;
    d.module_id = to_u32(module_id, "module id")?;
    d.socket_count = to_u32(sockets, "socket count")?;
    d.security_failures = to_u32(failures, "security failure count")?;
    Ok(d)
}

fn reported_state(conn: &Connection, module_row: i64) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT state FROM deployment WHERE module_row = ?1",
            [module_row],
            |r| r.get(0),
        )
        .optional()?)
}

fn open_revoke(conn: &Connection, module_row: i64) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT id FROM request WHERE module_row = ?1 AND action = 'revoke' AND state IN ('pending', 'sent')",
            [module_row],
            |r| r.get(0),
        )
        .optional()?)
}

fn revoke_sent(conn: &Connection, module_row: i64) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM request WHERE module_row = ?1 AND action = 'revoke' AND state = 'sent')",
        [module_row],
        |r| r.get(0),
    )?)
}

impl Cib {
    // ===== alerts =====

    /// Raises an alert (or returns the id of the identical one still open).
    pub fn raise_alert(&mut self, alert: &NewAlert) -> Result<i64> {
        if alert.kind.is_empty() || alert.message.is_empty() {
            return Err(CibError::invalid(
                "alert",
                "kind and message must not be empty",
            ));
        }
        let now = Timestamp::now();
        self.write(|tx| {
            if let Some(device) = &alert.device {
                device_row(tx, device)?;
            }
            insert_alert(tx, now, alert)
        })
    }

    pub fn acknowledge_alert(&mut self, id: i64) -> Result<()> {
        let now = Timestamp::now();
        self.write(|tx| {
            let (device, module_id): (Option<String>, Option<u32>) = tx
                .query_row("SELECT device, module_id FROM alert WHERE id = ?1", [id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?
                .ok_or(CibError::UnknownAlert(id))?;
            tx.execute(
                "UPDATE alert SET acknowledged = 1, acknowledged_at = ?2 WHERE id = ?1 AND acknowledged = 0",
                params![id, now.0],
            )?;
            record_history(tx, now, device.as_deref(), module_id, "alert-acknowledged", &format!("alert {id}"))
        })
    }

    /// Alerts, unacknowledged first, newest first within each group.
    pub fn alerts(&self, unacknowledged_only: bool, limit: u32) -> Result<Vec<Alert>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, at, severity, device, module_id, kind, message, acknowledged, acknowledged_at
             FROM alert WHERE (?1 = 0 OR acknowledged = 0)
             ORDER BY acknowledged, id DESC LIMIT ?2",
        )?;
        let raws = stmt
            .query_map(params![unacknowledged_only, limit], alert_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        raws.into_iter().map(finish_alert).collect()
    }

    // ===== history =====

    /// History, newest first, optionally for one device and/or module id.
    pub fn history(&self, filter: &HistoryFilter) -> Result<Vec<HistoryEntry>> {
        let limit = filter.limit.map_or(-1, i64::from); // SQLite: negative = no limit
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, at, device, module_id, event, detail FROM history
             WHERE (?1 IS NULL OR device = ?1) AND (?2 IS NULL OR module_id = ?2)
             ORDER BY id DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![filter.device, filter.module_id, limit], |r| {
            Ok((
                HistoryEntry {
                    id: r.get(0)?,
                    at: Timestamp(r.get(1)?),
                    device: r.get(2)?,
                    module_id: None,
                    event: r.get(4)?,
                    detail: r.get(5)?,
                },
                r.get::<_, Option<i64>>(3)?,
            ))
        })?;
        rows.map(|row| {
            let (mut entry, module_id) = row?;
            entry.module_id = module_id.map(|m| to_u32(m, "module id")).transpose()?;
            Ok(entry)
        })
        .collect()
    }

    // ===== reports =====

    /// Stores a device's `report` in one transaction: upserts each module's
    /// reported state, raises alerts for modules the device runs but the CIB
    /// does not know (or has revoked) and for deployed modules missing from
    /// the report, and queues a revoke for each deprecated module that has
    /// become idle (no sockets).
    ///
    /// History gets a row only when something changes (a reported state,
    /// an alert, an auto-revoke): reports arrive every few seconds per
    /// device, and a row per report would drown everything else.
    pub fn record_report(
        &mut self,
        device: &str,
        reports: &[ModuleReport],
        now: Timestamp,
    ) -> Result<ReportOutcome> {
        let retry = self.retry;
        self.write(|tx| {
            device_row(tx, device)?;
            let modules: HashMap<u32, (i64, Module)> = query_modules(tx, "d.name = ?1", [device])?
                .into_iter()
                .map(|(row, m)| (m.module_id, (row, m)))
                .collect();
            let mut outcome = ReportOutcome::default();
            let mut seen = HashSet::new();
            for report in reports {
                seen.insert(report.module_id);
                let reported = report.state.unwrap_or(if report.socket_count > 0 {
                    ReportedState::Active
                } else {
                    ReportedState::Registered
                });
                let known = modules
                    .get(&report.module_id)
                    .filter(|(_, m)| m.status != ModuleStatus::Revoked || reported == ReportedState::Revoked);
                let Some((row, module)) = known else {
                    outcome.unknown_on_device.push(report.module_id);
                    let why = match modules.get(&report.module_id) {
                        Some(_) => "is revoked in the CIB but the device still runs it",
                        None => "is not known to the CIB for this device",
                    };
                    let alert = NewAlert {
                        severity: Severity::Critical,
                        device: Some(device.to_owned()),
                        module_id: Some(report.module_id),
                        kind: alert_kind::UNKNOWN_MODULE_ON_DEVICE.to_owned(),
                        message: format!("module {} ({reported}) {why}", report.module_id),
                    };
                    insert_alert(tx, now, &alert)?;
                    continue;
                };
                let before = reported_state(tx, *row)?;
                tx.execute(
                    "INSERT INTO deployment (module_row, state, activated, active_ts, socket_count, bytes_sent,
                         bytes_received, messages_sent, messages_received, errors, last_report_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT (module_row) DO UPDATE SET state = excluded.state,
                         activated = excluded.activated, active_ts = excluded.active_ts,
                         socket_count = excluded.socket_count, bytes_sent = excluded.bytes_sent,
                         bytes_received = excluded.bytes_received, messages_sent = excluded.messages_sent,
                         messages_received = excluded.messages_received, errors = excluded.errors,
                         last_report_at = excluded.last_report_at",
                    params![
                        row,
                        reported.as_str(),
                        report.activated,
                        report.active_ts,
                        report.socket_count,
                        counter_to_db(report.bytes_sent),
                        counter_to_db(report.bytes_received),
                        counter_to_db(report.messages_sent),
                        counter_to_db(report.messages_received),
                        counter_to_db(report.errors),
                        now.0
                    ],
                )?;
                if before.as_deref() != Some(reported.as_str()) {
                    let detail = format!("{} -> {reported}", before.as_deref().unwrap_or("(none)"));
                    record_history(tx, now, Some(device), Some(report.module_id), "reported-state", &detail)?;
                }
                let idle_deprecated = module.deprecated
                    && module.status == ModuleStatus::Deployed
                    && report.socket_count == 0
                    && reported != ReportedState::Revoked;
                if idle_deprecated && open_revoke(tx, *row)?.is_none() {
                    let request =
                        insert_request(tx, device, report.module_id, Action::Revoke, now, now, retry)?;
                    record_history(
                        tx,
                        now,
                        Some(device),
                        Some(report.module_id),
                        "auto-revoke",
                        &format!("deprecated and idle; revoke queued (request {})", request.id),
                    )?;
                    outcome.auto_revoke_requests.push(request.id);
                }
            }
            let mut missing = Vec::new();
            for (row, m) in modules.values() {
                // A revoke already sent explains the absence.
                let expected = m.status == ModuleStatus::Deployed && !seen.contains(&m.module_id);
                if expected && !revoke_sent(tx, *row)? {
                    missing.push(m.module_id);
                }
            }
            missing.sort_unstable();
            for module_id in &missing {
                let alert = NewAlert {
                    severity: Severity::Warning,
                    device: Some(device.to_owned()),
                    module_id: Some(*module_id),
                    kind: alert_kind::MISSING_ON_DEVICE.to_owned(),
                    message: format!("module {module_id} is deployed in the CIB but the device does not report it"),
                };
                insert_alert(tx, now, &alert)?;
            }
            outcome.missing_on_device = missing;
            outcome.unknown_on_device.sort_unstable();
            Ok(outcome)
        })
    }

    /// Reported state of every module (of one device, or all), by device and id.
    pub fn deployments(&self, device: Option<&str>) -> Result<Vec<Deployment>> {
        if let Some(name) = device {
            device_row(&self.conn, name)?;
        }
        let mut stmt = self.conn.prepare_cached(&format!(
            "{DEPLOYMENT_SELECT} WHERE (?1 IS NULL OR d.name = ?1) ORDER BY d.name, m.module_id"
        ))?;
        let raws = stmt
            .query_map([device], deployment_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        raws.into_iter().map(finish_deployment).collect()
    }

    // ===== security =====

    /// Deployed modules whose last challenge is older than `window_ms` (or
    /// that never had one), without a revoke under way. Carries the keys.
    pub fn security_checks_due(&self, now: Timestamp, window_ms: i64) -> Result<Vec<Module>> {
        let rows = query_modules(
            &self.conn,
            "m.status = 'deployed'
             AND NOT EXISTS (SELECT 1 FROM request r WHERE r.module_row = m.id AND r.action = 'revoke'
                             AND r.state IN ('pending', 'sent'))
             AND COALESCE((SELECT x.last_security_check FROM deployment x WHERE x.module_row = m.id), -1) < ?1",
            [now.0.saturating_sub(window_ms).saturating_add(1)],
        )?;
        Ok(rows.into_iter().map(|(_, m)| m).collect())
    }

    /// Records a challenge-response result. A failure raises a critical
    /// alert and queues a revoke (in the same transaction).
    pub fn record_security_check(
        &mut self,
        device: &str,
        module_id: u32,
        passed: bool,
        detail: &str,
        now: Timestamp,
    ) -> Result<SecurityOutcome> {
        let retry = self.retry;
        self.write(|tx| {
            let (row, module) = load_module(tx, device, module_id)?;
            if module.status == ModuleStatus::Revoked {
                let subject = format!("module {module_id} on device \"{device}\"");
                return Err(CibError::state(subject, "is revoked; it cannot be challenged"));
            }
            let previous_ok: Option<bool> = tx
                .query_row("SELECT last_security_ok FROM deployment WHERE module_row = ?1", [row], |r| r.get(0))
                .optional()?
                .flatten();
            tx.execute(
                "INSERT INTO deployment (module_row, state, last_report_at, last_security_check, last_security_ok,
                     security_failures)
                 VALUES (?1, 'registered', ?2, ?2, ?3, ?4)
                 ON CONFLICT (module_row) DO UPDATE SET last_security_check = excluded.last_security_check,
                     last_security_ok = excluded.last_security_ok,
                     security_failures = security_failures + excluded.security_failures",
                params![row, now.0, passed, i64::from(!passed)],
            )?;
            if passed {
                if previous_ok != Some(true) {
                    record_history(tx, now, Some(device), Some(module_id), "security-check-passed", detail)?;
                }
                return Ok(SecurityOutcome::Passed);
            }
            record_history(tx, now, Some(device), Some(module_id), "security-check-failed", detail)?;
            let alert = NewAlert {
                severity: Severity::Critical,
                device: Some(device.to_owned()),
                module_id: Some(module_id),
                kind: alert_kind::SECURITY_CHECK_FAILED.to_owned(),
                message: format!("module {module_id} (\"{}\") failed its security check: {detail}", module.name),
            };
            insert_alert(tx, now, &alert)?;
            let request_id = match open_revoke(tx, row)? {
                Some(id) => id,
                None => insert_request(tx, device, module_id, Action::Revoke, now, now, retry)?.id,
            };
            Ok(SecurityOutcome::FailedRevokeRequested { request_id })
        })
    }

    // ===== status =====

    /// How many requests are in each state (states without any left out).
    pub fn request_counts(&self) -> Result<Vec<(RequestState, u64)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT state, COUNT(*) FROM request GROUP BY state ORDER BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        rows.map(|row| {
            let (state, n) = row?;
            Ok((RequestState::from_db(&state)?, n.max(0) as u64))
        })
        .collect()
    }

    /// How many unacknowledged alerts there are of each kind.
    pub fn open_alert_counts(&self) -> Result<Vec<(String, u64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT kind, COUNT(*) FROM alert WHERE acknowledged = 0 GROUP BY kind ORDER BY kind",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        rows.map(|row| {
            let (kind, n) = row?;
            Ok((kind, n.max(0) as u64))
        })
        .collect()
    }

    /// One line per device: module, request and alert counts, last report.
    pub fn status_summary(&self) -> Result<Vec<DeviceStatus>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT d.name,
                (SELECT COUNT(*) FROM module m WHERE m.device_id = d.id AND m.status = 'built'),
                (SELECT COUNT(*) FROM module m WHERE m.device_id = d.id AND m.status = 'deployed'),
                (SELECT COUNT(*) FROM module m WHERE m.device_id = d.id AND m.status = 'revoked'),
                (SELECT COUNT(*) FROM request r JOIN module m ON m.id = r.module_row
                   WHERE m.device_id = d.id AND r.state = 'pending'),
                (SELECT COUNT(*) FROM request r JOIN module m ON m.id = r.module_row
                   WHERE m.device_id = d.id AND r.state = 'sent'),
                (SELECT COUNT(*) FROM request r JOIN module m ON m.id = r.module_row
                   WHERE m.device_id = d.id AND r.state = 'failed'),
                (SELECT COUNT(*) FROM alert a WHERE a.device = d.name AND a.acknowledged = 0),
                (SELECT MAX(x.last_report_at) FROM deployment x JOIN module m ON m.id = x.module_row
                   WHERE m.device_id = d.id)
             FROM device d ORDER BY d.name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                [
                    r.get::<_, i64>(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ],
                r.get::<_, Option<i64>>(8)?,
            ))
        })?;
        rows.map(|row| {
            let (device, counts, last_report) = row?;
            let c = |i: usize| to_u32(counts[i], "count");
            Ok(DeviceStatus {
                device,
                modules_built: c(0)?,
                modules_deployed: c(1)?,
                modules_revoked: c(2)?,
                requests_pending: c(3)?,
                requests_sent: c(4)?,
                requests_failed: c(5)?,
                alerts_open: c(6)?,
                last_report_at: opt_ts(last_report),
            })
        })
        .collect()
    }
}
