//! Devices that call home (RFC 8071): check-ins (the data a device reports
//! about itself), calls from unknown host keys (pending, rejected, a
//! changed key), operator acceptance and one-time enrollment tokens.
//!
//! A calling device is recognised by its pinned host key. An unknown key
//! is accepted at once only when the device presents an enrollment token
//! the operator issued (`create_enrollment`): the token is stored as its
//! SHA-256 only, used once, and expires. Otherwise the device becomes
//! pending until `accept_pending`.

use std::io::Read as _;

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest as _, Sha256};

use crate::error::{CibError, Result};
use crate::rows::{device_data_from_row, device_data_of, insert_device, load_device};
use crate::types::{
    alert_kind, CheckIn, Device, DeviceData, Enrollment, NewAlert, NewDevice, PendingDevice,
    PendingState, Severity, Timestamp, UnknownCall,
};
use crate::{device_row, record_history, validate, Cib};

/// Enrollment tokens are valid this long unless the operator says.
pub const DEFAULT_ENROLLMENT_TTL_MS: i64 = 24 * 3600 * 1000;

/// An `enrollment` row: id, device name, role, labels, expiry, use.
type EnrollmentRow = (i64, String, Option<String>, String, i64, Option<i64>);

/// What a call with an enrollment token came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollOutcome {
    /// The device is added with the presented host key pinned.
    Enrolled(Device),
    /// Refused (unknown, used or expired token, name taken); an alert was
    /// raised.
    Refused(String),
}

const PENDING_COLUMNS: &str = "name, host_key_fingerprint, state, peer, username, ssh_key_path,
    host_name, machine_id, architecture, os_name, kernel_release, agent_version, tap_backend,
    userspace_abi_version, kernel_module_release, kinds, last_start,
    first_seen_at, last_seen_at, calls";

fn pending_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PendingDevice> {
    let state: String = r.get(2)?;
    let calls: i64 = r.get(19)?;
    Ok(PendingDevice {
        name: r.get(0)?,
        host_key_fingerprint: r.get(1)?,
        state: if state == "rejected" {
            PendingState::Rejected
        } else {
            PendingState::Pending
        },
        peer: r.get(3)?,
        username: r.get(4)?,
        ssh_key_path: r.get(5)?,
        data: device_data_from_row(r, 6)?,
        first_seen_at: Timestamp(r.get(17)?),
        last_seen_at: Timestamp(r.get(18)?),
        calls: u32::try_from(calls).unwrap_or(u32::MAX),
    })
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Device data as stored: free text from a device is kept, but bounded.
fn check_data(d: &DeviceData) -> Result<()> {
    for (field, v) in [
        ("host name", &d.host_name),
        ("machine id", &d.machine_id),
        ("architecture", &d.architecture),
        ("os name", &d.os_name),
        ("kernel release", &d.kernel_release),
        ("agent version", &d.agent_version),
        ("tap backend", &d.tap_backend),
    ] {
        if v.len() > 256 || v.chars().any(char::is_control) {
            return Err(CibError::invalid(
                format!("device {field}"),
                "longer than 256 characters or has control characters",
            ));
        }
    }
    if d.kinds
        .iter()
        .any(|k| validate::identifier("kind", k).is_err())
    {
        return Err(CibError::invalid("device kinds", "not identifiers"));
    }
    Ok(())
}

fn write_device_data(
    conn: &Connection,
    device_id: i64,
    d: &DeviceData,
    now: Timestamp,
) -> Result<()> {
    conn.execute(
        "INSERT INTO device_data (device_id, host_name, machine_id, architecture, os_name,
            kernel_release, agent_version, tap_backend, userspace_abi_version,
            kernel_module_release, kinds, last_start, checked_in_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (device_id) DO UPDATE SET host_name = excluded.host_name,
            machine_id = excluded.machine_id, architecture = excluded.architecture,
            os_name = excluded.os_name, kernel_release = excluded.kernel_release,
            agent_version = excluded.agent_version, tap_backend = excluded.tap_backend,
            userspace_abi_version = excluded.userspace_abi_version,
            kernel_module_release = excluded.kernel_module_release, kinds = excluded.kinds,
            last_start = excluded.last_start, checked_in_at = excluded.checked_in_at",
        params![
            device_id,
            d.host_name,
            d.machine_id,
            d.architecture,
            d.os_name,
            d.kernel_release,
            d.agent_version,
            d.tap_backend,
            d.userspace_abi_version,
            d.kernel_module_release,
            d.kinds.join(","),
            d.last_start,
            now.0
        ],
    )?;
    Ok(())
}

/// A short description of a device for alerts and history.
fn describe(d: &DeviceData, peer: &str) -> String {
    format!(
        "host {}, {} {}, {} tap, from {peer}",
        if d.host_name.is_empty() {
            "?"
        } else {
            &d.host_name
        },
        d.architecture,
        d.kernel_release,
        d.tap_backend
    )
}

/// A free name from `host_name`: identifier characters only, suffixed
/// `-2`, `-3`, … when a device or a pending device has it.
fn free_name(conn: &Connection, host_name: &str) -> Result<String> {
    let mut base: String = host_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    if !base.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        base = format!("device{base}");
    }
    let taken = |name: &str| -> rusqlite::Result<bool> {
        conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM device WHERE name = ?1)
                 OR EXISTS(SELECT 1 FROM pending_device WHERE name = ?1)",
            [name],
            |r| r.get(0),
        )
    };
    let mut name = base.clone();
    let mut n = 1;
    while taken(&name)? {
        n += 1;
        name = format!("{base}-{n}");
    }
    Ok(name)
}

impl Cib {
    /// Adds a device that calls home, with its host key pinned (the key
    /// is how its calls are recognised). `address` is replaced by where
    /// each call comes from.
    pub fn add_call_home_device(&mut self, device: &NewDevice) -> Result<Device> {
        let Some(fp) = &device.host_key_fingerprint else {
            return Err(CibError::invalid(
                "host key fingerprint",
                "a device that calls home is recognised by its host key: give it",
            ));
        };
        validate::new_device(device)?;
        let now = Timestamp::now();
        self.write(|tx| {
            if let Some(other) = device_named_by_key(tx, fp)? {
                return Err(CibError::Duplicate {
                    what: "a device with host key",
                    key: format!("{fp}\" (\"{other}\")"),
                });
            }
            insert_device(tx, device, true, now)?;
            tx.execute(
                "DELETE FROM pending_device WHERE host_key_fingerprint = ?1",
                [fp],
            )?;
            record_history(
                tx,
                now,
                Some(&device.name),
                None,
                "device-added",
                "calls home",
            )?;
            load_device(tx, &device.name)
        })
    }

    /// The device whose pinned host key this is.
    pub fn device_by_host_key(&self, fingerprint: &str) -> Result<Option<Device>> {
        match device_named_by_key(&self.conn, fingerprint)? {
            Some(name) => load_device(&self.conn, &name).map(Some),
            None => Ok(None),
        }
    }

    /// Records a device's check-in: its data, and for a device that calls
    /// home where the call came from. History only when the data changed.
    pub fn record_check_in(&mut self, device: &str, data: &DeviceData, peer: &str) -> Result<()> {
        check_data(data)?;
        let now = Timestamp::now();
        self.write(|tx| {
            let row = device_row(tx, device)?;
            let before = device_data_of(tx, row)?.map(|(d, _)| d);
            write_device_data(tx, row, data, now)?;
            tx.execute(
                "UPDATE device SET address = ?1 WHERE id = ?2 AND call_home = 1 AND address <> ?1",
                params![peer, row],
            )?;
            if before.as_ref() != Some(data) {
                record_history(
                    tx,
                    now,
                    Some(device),
                    None,
                    "device-data",
                    &describe(data, peer),
                )?;
            }
            Ok(())
        })
    }

    /// The device's last check-in.
    pub fn check_in(&self, device: &str) -> Result<Option<CheckIn>> {
        let row = device_row(&self.conn, device)?;
        Ok(device_data_of(&self.conn, row)?.map(|(data, at)| CheckIn {
            device: device.to_owned(),
            data,
            checked_in_at: at,
        }))
    }

    /// Every device's last check-in, by device name.
    pub fn check_ins(&self) -> Result<Vec<CheckIn>> {
        let mut stmt = self.conn.prepare(
            "SELECT d.name, x.host_name, x.machine_id, x.architecture, x.os_name,
                    x.kernel_release, x.agent_version, x.tap_backend, x.userspace_abi_version,
                    x.kernel_module_release, x.kinds, x.last_start, x.checked_in_at
             FROM device_data x JOIN device d ON d.id = x.device_id ORDER BY d.name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(CheckIn {
                device: r.get(0)?,
                data: device_data_from_row(r, 1)?,
                checked_in_at: Timestamp(r.get(12)?),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A call from a host key no device has: a machine the CIB knows under
    /// another key is refused with a critical alert; a rejected key stays
    /// rejected; anything else is (still) pending, with a warning alert the
    /// first time.
    pub fn record_unknown_call(
        &mut self,
        fingerprint: &str,
        data: &DeviceData,
        peer: &str,
        username: &str,
        ssh_key_path: &str,
    ) -> Result<UnknownCall> {
        validate::fingerprint(fingerprint)?;
        check_data(data)?;
        let now = Timestamp::now();
        self.write(|tx| {
            if let Some(changed) = changed_host_key(tx, fingerprint, data, now)? {
                return Ok(changed);
            }
            let existing: Option<(String, String)> = tx
                .query_row(
                    "SELECT name, state FROM pending_device WHERE host_key_fingerprint = ?1",
                    [fingerprint],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((name, state)) = existing {
                tx.execute(
                    "UPDATE pending_device SET last_seen_at = ?1, calls = calls + 1, peer = ?2,
                        host_name = ?3, machine_id = ?4, architecture = ?5, os_name = ?6,
                        kernel_release = ?7, agent_version = ?8, tap_backend = ?9,
                        userspace_abi_version = ?10, kernel_module_release = ?11, kinds = ?12,
                        last_start = ?13
                     WHERE host_key_fingerprint = ?14",
                    params![
                        now.0,
                        peer,
                        data.host_name,
                        data.machine_id,
                        data.architecture,
                        data.os_name,
                        data.kernel_release,
                        data.agent_version,
                        data.tap_backend,
                        data.userspace_abi_version,
                        data.kernel_module_release,
                        data.kinds.join(","),
                        data.last_start,
                        fingerprint
                    ],
                )?;
                return Ok(if state == "rejected" {
                    UnknownCall::Rejected { name }
                } else {
                    UnknownCall::Pending { name }
                });
            }
            let name = free_name(tx, &data.host_name)?;
            tx.execute(
                "INSERT INTO pending_device (host_key_fingerprint, name, state, peer, username,
                    ssh_key_path, host_name, machine_id, architecture, os_name, kernel_release,
                    agent_version, tap_backend, userspace_abi_version, kernel_module_release, kinds,
                    last_start, first_seen_at, last_seen_at, calls)
                 VALUES (?1, ?2, 'pending', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
                    ?15, ?16, ?17, ?17, 1)",
                params![
                    fingerprint,
                    name,
                    peer,
                    username,
                    ssh_key_path,
                    data.host_name,
                    data.machine_id,
                    data.architecture,
                    data.os_name,
                    data.kernel_release,
                    data.agent_version,
                    data.tap_backend,
                    data.userspace_abi_version,
                    data.kernel_module_release,
                    data.kinds.join(","),
                    data.last_start,
                    now.0
                ],
            )?;
            let detail = format!("{fingerprint}; {}", describe(data, peer));
            record_history(
                tx,
                now,
                None,
                None,
                "device-pending",
                &format!("{name}: {detail}"),
            )?;
            crate::rows::insert_alert(
                tx,
                now,
                &NewAlert {
                    severity: Severity::Warning,
                    device: None,
                    module_id: None,
                    kind: alert_kind::DEVICE_PENDING.to_owned(),
                    message: format!(
                        "unknown device {name} called home ({detail}); nothing is deployed to it \
                         until `l45-nco devices accept {name}`"
                    ),
                },
            )?;
            Ok(UnknownCall::Pending { name })
        })
    }

    /// Pending and rejected devices, oldest first.
    pub fn pending_devices(&self) -> Result<Vec<PendingDevice>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {PENDING_COLUMNS} FROM pending_device ORDER BY id"
        ))?;
        let rows = stmt.query_map([], pending_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Accepts a pending (or rejected) device: it becomes a device that
    /// calls home, named `new_name` (default: its proposed name), with its
    /// host key pinned and its data as its first check-in.
    pub fn accept_pending(
        &mut self,
        pending: &str,
        new_name: Option<&str>,
        role: Option<&str>,
        labels: &[String],
    ) -> Result<Device> {
        let now = Timestamp::now();
        self.write(|tx| {
            let p = tx
                .query_row(
                    &format!("SELECT {PENDING_COLUMNS} FROM pending_device WHERE name = ?1 OR host_key_fingerprint = ?1"),
                    [pending],
                    pending_from_row,
                )
                .optional()?
                .ok_or_else(|| CibError::UnknownPending(pending.to_owned()))?;
            let device = NewDevice {
                name: new_name.unwrap_or(&p.name).to_owned(),
                address: p.peer.clone(),
                username: p.username.clone(),
                ssh_key_path: p.ssh_key_path.clone(),
                host_key_fingerprint: Some(p.host_key_fingerprint.clone()),
                role: role.map(str::to_owned),
                labels: labels.to_vec(),
            };
            validate::new_device(&device)?;
            insert_device(tx, &device, true, now)?;
            let row = device_row(tx, &device.name)?;
            write_device_data(tx, row, &p.data, now)?;
            tx.execute(
                "DELETE FROM pending_device WHERE host_key_fingerprint = ?1",
                [&p.host_key_fingerprint],
            )?;
            record_history(
                tx,
                now,
                Some(&device.name),
                None,
                "device-accepted",
                &format!("{}; {}", p.host_key_fingerprint, describe(&p.data, &p.peer)),
            )?;
            load_device(tx, &device.name)
        })
    }

    /// Rejects a pending device: its later calls are refused (until it is
    /// accepted after all).
    pub fn reject_pending(&mut self, pending: &str) -> Result<()> {
        let now = Timestamp::now();
        self.write(|tx| {
            let (name, fp): (String, String) = tx
                .query_row(
                    "SELECT name, host_key_fingerprint FROM pending_device
                     WHERE name = ?1 OR host_key_fingerprint = ?1",
                    [pending],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?
                .ok_or_else(|| CibError::UnknownPending(pending.to_owned()))?;
            tx.execute(
                "UPDATE pending_device SET state = 'rejected' WHERE host_key_fingerprint = ?1",
                [&fp],
            )?;
            record_history(
                tx,
                now,
                None,
                None,
                "device-rejected",
                &format!("{name}: {fp}"),
            )
        })
    }

    /// Issues a one-time enrollment token for a device to be called
    /// `device`; only its SHA-256 is stored. The token is returned once.
    pub fn create_enrollment(
        &mut self,
        device: &str,
        role: Option<&str>,
        labels: &[String],
        ttl_ms: i64,
    ) -> Result<Enrollment> {
        validate::identifier("device name", device)?;
        if let Some(r) = role {
            validate::identifier("device role", r)?;
        }
        for l in labels {
            validate::identifier("device label", l.split('=').next().unwrap_or(""))?;
        }
        if ttl_ms <= 0 {
            return Err(CibError::invalid("token lifetime", "must be positive"));
        }
        let mut raw = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut raw))
            .map_err(CibError::Random)?;
        let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let token = format!("l45e-{token}");
        let now = Timestamp::now();
        let expires_at = Timestamp(now.0.saturating_add(ttl_ms));
        self.write(|tx| {
            let exists: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM device WHERE name = ?1)",
                [device],
                |r| r.get(0),
            )?;
            if exists {
                return Err(CibError::Duplicate {
                    what: "a device named",
                    key: device.to_owned(),
                });
            }
            tx.execute(
                "INSERT INTO enrollment (device_name, token_sha256, role, labels, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![device, sha256_hex(&token), role, labels.join(","), now.0, expires_at.0],
            )?;
            record_history(
                tx,
                now,
                Some(device),
                None,
                "enrollment-issued",
                &format!("expires {}", expires_at.0),
            )
        })?;
        Ok(Enrollment {
            device: device.to_owned(),
            token,
            expires_at,
        })
    }

    /// A call that presented `token` with host key `fingerprint`: adds the
    /// device the token was issued for, with this key pinned, if the token
    /// is known, unused and unexpired and the name is free; otherwise
    /// refuses with an alert. Either way the token can never be used again.
    pub fn enroll(
        &mut self,
        token: &str,
        fingerprint: &str,
        data: &DeviceData,
        peer: &str,
        username: &str,
        ssh_key_path: &str,
    ) -> Result<EnrollOutcome> {
        validate::fingerprint(fingerprint)?;
        check_data(data)?;
        let now = Timestamp::now();
        let hash = sha256_hex(token.trim());
        self.write(|tx| {
            let row: Option<EnrollmentRow> = tx
                .query_row(
                    "SELECT id, device_name, role, labels, expires_at, used_at FROM enrollment
                     WHERE token_sha256 = ?1",
                    [&hash],
                    |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                        ))
                    },
                )
                .optional()?;
            let refuse = |reason: String| -> Result<EnrollOutcome> {
                crate::rows::insert_alert(
                    tx,
                    now,
                    &NewAlert {
                        severity: Severity::Warning,
                        device: None,
                        module_id: None,
                        kind: alert_kind::ENROLLMENT_REFUSED.to_owned(),
                        message: format!(
                            "enrollment refused for host key {fingerprint} ({}): {reason}",
                            describe(data, peer)
                        ),
                    },
                )?;
                record_history(
                    tx,
                    now,
                    None,
                    None,
                    "enrollment-refused",
                    &format!("{fingerprint}: {reason}"),
                )?;
                Ok(EnrollOutcome::Refused(reason))
            };
            // A known machine with another key: refused whatever it holds.
            if let Some(UnknownCall::HostKeyChanged { device, pinned }) =
                changed_host_key(tx, fingerprint, data, now)?
            {
                return Ok(EnrollOutcome::Refused(format!(
                    "machine of device {device} presents a new host key ({pinned} is pinned)"
                )));
            }
            let Some((id, name, role, labels, expires_at, used_at)) = row else {
                return refuse("unknown token".into());
            };
            if let Some(at) = used_at {
                return refuse(format!("the token for {name} was already used (at {at})"));
            }
            if expires_at <= now.0 {
                return refuse(format!("the token for {name} expired"));
            }
            if device_named_by_key(tx, fingerprint)?.is_some()
                || tx.query_row(
                    "SELECT EXISTS(SELECT 1 FROM device WHERE name = ?1)",
                    [&name],
                    |r| r.get::<_, bool>(0),
                )?
            {
                return refuse(format!(
                    "a device named {name} or with this host key exists"
                ));
            }
            let device = NewDevice {
                name: name.clone(),
                address: peer.to_owned(),
                username: username.to_owned(),
                ssh_key_path: ssh_key_path.to_owned(),
                host_key_fingerprint: Some(fingerprint.to_owned()),
                role,
                labels: labels
                    .split(',')
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect(),
            };
            validate::new_device(&device)?;
            insert_device(tx, &device, true, now)?;
            let row = device_row(tx, &name)?;
            write_device_data(tx, row, data, now)?;
            tx.execute(
                "UPDATE enrollment SET used_at = ?1, used_by_fingerprint = ?2 WHERE id = ?3",
                params![now.0, fingerprint, id],
            )?;
            tx.execute(
                "DELETE FROM pending_device WHERE host_key_fingerprint = ?1",
                [fingerprint],
            )?;
            record_history(
                tx,
                now,
                Some(&name),
                None,
                "device-enrolled",
                &format!("{fingerprint}; {}", describe(data, peer)),
            )?;
            Ok(EnrollOutcome::Enrolled(load_device(tx, &name)?))
        })
    }
}

/// A call from `fingerprint` by the machine of a known device whose pinned
/// key is another: raises the critical `host-key-mismatch` alert.
fn changed_host_key(
    conn: &Connection,
    fingerprint: &str,
    data: &DeviceData,
    now: Timestamp,
) -> Result<Option<UnknownCall>> {
    if data.machine_id.is_empty() {
        return Ok(None);
    }
    let known: Option<(String, Option<String>)> = conn
        .query_row(
            "SELECT d.name, d.host_key_fingerprint FROM device_data x
             JOIN device d ON d.id = x.device_id WHERE x.machine_id = ?1",
            [&data.machine_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((device, Some(pinned))) = known else {
        return Ok(None);
    };
    if pinned == fingerprint {
        return Ok(None);
    }
    let alert = NewAlert {
        severity: Severity::Critical,
        device: Some(device.clone()),
        module_id: None,
        kind: alert_kind::HOST_KEY_MISMATCH.to_owned(),
        message: format!(
            "machine {} called home with host key {fingerprint}, but {pinned} is pinned; \
             refused (re-pin with the CLI if the device was reinstalled)",
            data.machine_id
        ),
    };
    crate::rows::insert_alert(conn, now, &alert)?;
    Ok(Some(UnknownCall::HostKeyChanged { device, pinned }))
}

fn device_named_by_key(conn: &Connection, fingerprint: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT name FROM device WHERE host_key_fingerprint = ?1",
            [fingerprint],
            |r| r.get(0),
        )
        .optional()?)
}
