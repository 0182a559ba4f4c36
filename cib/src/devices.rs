//! Devices: inventory, host-key pinning.

use rusqlite::params;

use crate::error::{CibError, Result};
use crate::rows::{insert_device, load_device, DEVICE_COLUMNS};
use crate::types::{alert_kind, Device, HostKeyCheck, NewAlert, NewDevice, Severity, Timestamp};
use crate::{device_row, record_history, validate, Cib};

impl Cib {
    /// Adds a device. Refuses a name already in use.
    pub fn add_device(&mut self, device: &NewDevice) -> Result<Device> {
        validate::new_device(device)?;
        let now = Timestamp::now();
        self.write(|tx| {
            insert_device(tx, device, false, now)?;
            record_history(
                tx,
                now,
                Some(&device.name),
                None,
                "device-added",
                &device.address,
            )?;
            load_device(tx, &device.name)
        })
    }

    /// Removes a device and its never-deployed modules and requests. Refused
    /// while a module is deployed or a request is in flight: the device may
    /// run it, and the CIB must not forget that. History stays; module ids
    /// used for this name are never reused if it is added again.
    pub fn remove_device(&mut self, name: &str) -> Result<()> {
        let now = Timestamp::now();
        self.write(|tx| {
            let row = device_row(tx, name)?;
            let live: i64 = tx.query_row(
                "SELECT COUNT(*) FROM module m
                 WHERE m.device_id = ?1
                   AND (m.status = 'deployed'
                        OR EXISTS (SELECT 1 FROM request r WHERE r.module_row = m.id AND r.state = 'sent'))",
                [row],
                |r| r.get(0),
            )?;
            if live > 0 {
                return Err(CibError::DeviceInUse {
                    device: name.to_owned(),
                    live: usize::try_from(live).unwrap_or(usize::MAX),
                });
            }
            tx.execute("DELETE FROM device WHERE id = ?1", [row])?;
            record_history(tx, now, Some(name), None, "device-removed", "")
        })
    }

    pub fn device(&self, name: &str) -> Result<Device> {
        load_device(&self.conn, name)
    }

    /// All devices, by name.
    pub fn devices(&self) -> Result<Vec<Device>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {DEVICE_COLUMNS} FROM device ORDER BY name"
        ))?;
        let rows = stmt.query_map([], crate::rows::device_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Devices carrying `label` (exact `key` or `key=value`).
    pub fn devices_with_label(&self, label: &str) -> Result<Vec<Device>> {
        Ok(self
            .devices()?
            .into_iter()
            .filter(|d| d.labels.iter().any(|l| l == label))
            .collect())
    }

    /// Trust on first use: pins `presented` if the device has no key yet;
    /// otherwise compares. A mismatch raises a critical alert (committed)
    /// and is reported, not an error, so the NCO refuses the connection.
    pub fn check_host_key(&mut self, device: &str, presented: &str) -> Result<HostKeyCheck> {
        validate::fingerprint(presented)?;
        let now = Timestamp::now();
        self.write(|tx| {
            let pinned = load_device(tx, device)?.host_key_fingerprint;
            match pinned {
                None => {
                    tx.execute(
                        "UPDATE device SET host_key_fingerprint = ?1 WHERE name = ?2",
                        params![presented, device],
                    )?;
                    record_history(tx, now, Some(device), None, "host-key-pinned", presented)?;
                    Ok(HostKeyCheck::PinnedNow)
                }
                Some(pinned) if pinned == presented => Ok(HostKeyCheck::Matches),
                Some(pinned) => {
                    let alert = NewAlert {
                        severity: Severity::Critical,
                        device: Some(device.to_owned()),
                        module_id: None,
                        kind: alert_kind::HOST_KEY_MISMATCH.to_owned(),
                        message: format!(
                            "device presented host key {presented}, but {pinned} is pinned; \
                             not connecting (re-pin with the CLI if the device was reinstalled)"
                        ),
                    };
                    crate::rows::insert_alert(tx, now, &alert)?;
                    Ok(HostKeyCheck::Mismatch { pinned })
                }
            }
        })
    }

    /// Operator override: pins `fingerprint` (or clears the pin with `None`,
    /// so the next connection pins again).
    pub fn set_host_key(&mut self, device: &str, fingerprint: Option<&str>) -> Result<()> {
        if let Some(fp) = fingerprint {
            validate::fingerprint(fp)?;
        }
        let now = Timestamp::now();
        self.write(|tx| {
            device_row(tx, device)?;
            tx.execute(
                "UPDATE device SET host_key_fingerprint = ?1 WHERE name = ?2",
                params![fingerprint, device],
            )?;
            record_history(
                tx,
                now,
                Some(device),
                None,
                "host-key-set",
                fingerprint.unwrap_or("(cleared)"),
            )
        })
    }
}
