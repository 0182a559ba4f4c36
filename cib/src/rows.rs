//! Row access the feature files share: modules, requests and alerts as
//! stored, read and written inside the caller's transaction (and devices
//! with their check-in data). It sits below
//! `modules`, `requests`, `monitor`, `middlebox` and `devices`, and uses
//! only `types`, `error` and the crate root's helpers.

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::{CibError, Result};
use crate::types::{
    Action, Attach, Device, DeviceData, MatchRules, Module, ModuleStatus, NewAlert, NewDevice,
    Protocol, Request, RequestState, RetryPolicy, Timestamp,
};
use crate::{device_row, opt_ts, record_history, to_u32};

// ===== devices =====

pub(crate) const DEVICE_COLUMNS: &str =
    "name, address, username, ssh_key_path, host_key_fingerprint, role, labels, added_at, call_home";

pub(crate) fn device_from_row(r: &Row<'_>) -> rusqlite::Result<Device> {
    let labels: String = r.get(6)?;
    Ok(Device {
        name: r.get(0)?,
        address: r.get(1)?,
        username: r.get(2)?,
        ssh_key_path: r.get(3)?,
        host_key_fingerprint: r.get(4)?,
        role: r.get(5)?,
        labels: labels
            .split(',')
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        added_at: Timestamp(r.get(7)?),
        call_home: r.get(8)?,
    })
}

pub(crate) fn load_device(conn: &Connection, name: &str) -> Result<Device> {
    conn.query_row(
        &format!("SELECT {DEVICE_COLUMNS} FROM device WHERE name = ?1"),
        [name],
        device_from_row,
    )
    .optional()?
    .ok_or_else(|| CibError::UnknownDevice(name.to_owned()))
}

/// Inserts a device (validated by the caller) and its module-id counter,
/// in the caller's transaction; refuses a name in use.
pub(crate) fn insert_device(
    conn: &Connection,
    device: &NewDevice,
    call_home: bool,
    now: Timestamp,
) -> Result<()> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM device WHERE name = ?1)",
        [&device.name],
        |r| r.get(0),
    )?;
    if exists {
        return Err(CibError::Duplicate {
            what: "a device named",
            key: device.name.clone(),
        });
    }
    conn.execute(
        "INSERT INTO device (name, address, username, ssh_key_path, host_key_fingerprint, role, labels, added_at, call_home)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            device.name,
            device.address,
            device.username,
            device.ssh_key_path,
            device.host_key_fingerprint,
            device.role,
            device.labels.join(","),
            now.0,
            call_home
        ],
    )?;
    // The counter row may survive from an earlier device of this name.
    conn.execute(
        "INSERT OR IGNORE INTO module_id_counter (device_name, next_id) VALUES (?1, 1)",
        [&device.name],
    )?;
    Ok(())
}

/// The device's last check-in data, if it ever checked in.
pub(crate) fn device_data_of(
    conn: &Connection,
    device_id: i64,
) -> Result<Option<(DeviceData, Timestamp)>> {
    Ok(conn
        .query_row(
            "SELECT host_name, machine_id, architecture, os_name, kernel_release, agent_version,
                    tap_backend, userspace_abi_version, kernel_module_release, kinds, last_start,
                    checked_in_at
             FROM device_data WHERE device_id = ?1",
            [device_id],
            |r| Ok((device_data_from_row(r, 0)?, Timestamp(r.get(11)?))),
        )
        .optional()?)
}

/// `DeviceData` from 11 columns starting at `at` (the order of
/// `device_data`'s columns).
pub(crate) fn device_data_from_row(r: &Row<'_>, at: usize) -> rusqlite::Result<DeviceData> {
    let kinds: String = r.get(at + 9)?;
    let abi: Option<i64> = r.get(at + 7)?;
    Ok(DeviceData {
        host_name: r.get(at)?,
        machine_id: r.get(at + 1)?,
        architecture: r.get(at + 2)?,
        os_name: r.get(at + 3)?,
        kernel_release: r.get(at + 4)?,
        agent_version: r.get(at + 5)?,
        tap_backend: r.get(at + 6)?,
        userspace_abi_version: abi.and_then(|v| u32::try_from(v).ok()),
        kernel_module_release: r.get(at + 8)?,
        kinds: kinds
            .split(',')
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect(),
        last_start: r.get(at + 10)?,
    })
}

/// Why a module of `kind` cannot be built for the device, from its last
/// check-in; `None` when it can (or it never checked in: nothing is known
/// against it).
pub(crate) fn device_lacks(conn: &Connection, device: &str, kind: &str) -> Result<Option<String>> {
    if l45_modules::Kind::from_name(kind).is_none() {
        // A kind from an image: the device must have accepted one.
        return Ok(
            (!crate::images::installed_on(conn, device, kind)?).then(|| {
                format!("no image of kind {kind} is installed on it (l45-nco images push first)")
            }),
        );
    }
    let row = device_row(conn, device)?;
    Ok(device_data_of(conn, row)?.and_then(|(d, _)| d.lacks(kind)))
}

// ===== modules =====

const MODULE_COLUMNS: &str =
    "m.id, d.name, m.module_id, m.name, m.kind, m.priority, m.activated, m.deprecated,
     m.attach, m.match_protocol, m.match_source_address, m.match_source_port,
     m.match_destination_address, m.match_destination_port, m.match_thread_name,
     m.match_process_name, m.security_key, m.status, m.created_at, m.deployed_at, m.revoked_at,
     m.image_sha256";

/// A module row as read, before its parameters are attached.
struct RawModule {
    row: i64,
    module: Module,
    attach: String,
    protocol: Option<String>,
    status: String,
    key: Vec<u8>,
    module_id: i64,
    priority: i64,
}

fn raw_module(r: &Row<'_>) -> rusqlite::Result<RawModule> {
    Ok(RawModule {
        row: r.get(0)?,
        module_id: r.get(2)?,
        priority: r.get(5)?,
        attach: r.get(8)?,
        protocol: r.get(9)?,
        key: r.get(16)?,
        status: r.get(17)?,
        module: Module {
            device: r.get(1)?,
            module_id: 0,
            name: r.get(3)?,
            kind: r.get(4)?,
            parameters: Vec::new(),
            priority: 0,
            activated: r.get(6)?,
            deprecated: r.get(7)?,
            attach: Attach::NewSockets,
            match_rules: MatchRules {
                protocol: None,
                source_address: r.get(10)?,
                source_port: r.get(11)?,
                destination_address: r.get(12)?,
                destination_port: r.get(13)?,
                thread_name: r.get(14)?,
                process_name: r.get(15)?,
            },
            key: [0; 32],
            status: ModuleStatus::Built,
            created_at: Timestamp(r.get(18)?),
            deployed_at: opt_ts(r.get(19)?),
            revoked_at: opt_ts(r.get(20)?),
            image: r.get(21)?,
        },
    })
}

fn finish_module(conn: &Connection, raw: RawModule) -> Result<(i64, Module)> {
    let mut m = raw.module;
    m.module_id = to_u32(raw.module_id, "module id")?;
    m.priority = u16::try_from(raw.priority)
        .map_err(|_| CibError::corrupt(format!("priority {}", raw.priority)))?;
    m.attach = Attach::from_db(&raw.attach)?;
    m.match_rules.protocol = raw.protocol.as_deref().map(Protocol::from_db).transpose()?;
    m.status = ModuleStatus::from_db(&raw.status)?;
    m.key = raw
        .key
        .try_into()
        .map_err(|_| CibError::corrupt("module key that is not 32 bytes"))?;
    let mut stmt = conn.prepare_cached(
        "SELECT name, value FROM module_parameter WHERE module_row = ?1 ORDER BY position",
    )?;
    m.parameters = stmt
        .query_map([raw.row], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok((raw.row, m))
}

/// Modules matching `where_clause` (over `m` = module, `d` = device).
pub(crate) fn query_modules(
    conn: &Connection,
    where_clause: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<(i64, Module)>> {
    let sql = format!(
        "SELECT {MODULE_COLUMNS} FROM module m JOIN device d ON d.id = m.device_id
         WHERE {where_clause} ORDER BY d.name, m.module_id"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let raws = stmt
        .query_map(args, raw_module)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    raws.into_iter()
        .map(|raw| finish_module(conn, raw))
        .collect()
}

/// The module row and value of (device, module id), or the right error.
pub(crate) fn load_module(
    conn: &Connection,
    device: &str,
    module_id: u32,
) -> Result<(i64, Module)> {
    device_row(conn, device)?;
    query_modules(
        conn,
        "d.name = ?1 AND m.module_id = ?2",
        params![device, module_id],
    )?
    .pop()
    .ok_or_else(|| CibError::UnknownModule {
        device: device.to_owned(),
        module: format!("with id {module_id}"),
    })
}

// ===== requests =====

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

pub(crate) fn query_requests(
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

pub(crate) fn set_module_revoked(conn: &Connection, module_row: i64, now: Timestamp) -> Result<()> {
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

// ===== alerts =====

/// Inserts an alert unless an identical one (kind, device, module) is still
/// unacknowledged; returns the id of the new or the existing alert.
pub(crate) fn insert_alert(conn: &Connection, now: Timestamp, alert: &NewAlert) -> Result<i64> {
    let open: Option<i64> = conn
        .query_row(
            "SELECT id FROM alert WHERE acknowledged = 0 AND kind = ?1
               AND device IS ?2 AND module_id IS ?3 ORDER BY id LIMIT 1",
            params![alert.kind, alert.device, alert.module_id],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = open {
        return Ok(id);
    }
    conn.execute(
        "INSERT INTO alert (at, severity, device, module_id, kind, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![now.0, alert.severity.as_str(), alert.device, alert.module_id, alert.kind, alert.message],
    )?;
    let id = conn.last_insert_rowid();
    let detail = format!(
        "alert {id} [{}] {}: {}",
        alert.severity, alert.kind, alert.message
    );
    record_history(
        conn,
        now,
        alert.device.as_deref(),
        alert.module_id,
        "alert-raised",
        &detail,
    )?;
    tracing::warn!(
        alert = id,
        severity = %alert.severity,
        kind = %alert.kind,
        device = alert.device.as_deref(),
        module_id = alert.module_id,
        "{}",
        alert.message
    );
    Ok(id)
}
