//! Module kinds and built instances: id allocation, keys, parameters.

use std::io::Read;

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{CibError, Result};
use crate::rows::{insert_request, load_module, query_modules};
use crate::types::{Module, ModuleStatus, NewModule, Protocol, Request, Timestamp};
use crate::{device_row, record_history, validate, Action, Cib};

/// A 256-bit key from the kernel's CSPRNG (no extra dependency).
fn random_key() -> Result<[u8; 32]> {
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(CibError::Random)?;
    Ok(key)
}

/// Takes the next id of `device` from its persistent counter. Inside the
/// caller's transaction, so an id is used iff the transaction commits.
fn allocate_module_id(conn: &Connection, device: &str) -> Result<u32> {
    let next: i64 = conn
        .query_row(
            "SELECT next_id FROM module_id_counter WHERE device_name = ?1",
            [device],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(1);
    let id = u32::try_from(next).map_err(|_| CibError::ModuleIdsExhausted(device.to_owned()))?;
    conn.execute(
        "INSERT INTO module_id_counter (device_name, next_id) VALUES (?1, ?2)
         ON CONFLICT (device_name) DO UPDATE SET next_id = excluded.next_id",
        params![device, next + 1],
    )?;
    Ok(id)
}

/// Inserts one module (validated by the caller) in the caller's transaction.
fn insert_module(conn: &Connection, m: &NewModule, now: Timestamp) -> Result<Module> {
    let device = device_row(conn, &m.device)?;
    match &m.image {
        // Its deploy installs the image first: the image must be one of
        // this kind that the CIB recorded.
        Some(sha256) => crate::images::check_module_image(conn, sha256, &m.kind)?,
        // Built for what the device said it can run at its last check-in.
        None => {
            if let Some(reason) = crate::rows::device_lacks(conn, &m.device, &m.kind)? {
                return Err(CibError::DeviceCannot {
                    device: m.device.clone(),
                    reason,
                });
            }
        }
    }
    let name_taken: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM module WHERE device_id = ?1 AND name = ?2 AND status <> 'revoked')",
        params![device, m.name],
        |r| r.get(0),
    )?;
    if name_taken {
        return Err(CibError::Duplicate {
            what: "a live module named",
            key: format!("{}\" on device \"{}", m.name, m.device),
        });
    }
    let module_id = allocate_module_id(conn, &m.device)?;
    let key = random_key()?;
    let r = &m.match_rules;
    conn.execute(
        "INSERT INTO module (device_id, module_id, name, kind, priority, activated, attach,
            match_protocol, match_source_address, match_source_port, match_destination_address,
            match_destination_port, match_thread_name, match_process_name, security_key, created_at,
            image_sha256)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        params![
            device,
            module_id,
            m.name,
            m.kind,
            m.priority,
            m.activated,
            m.attach.as_str(),
            r.protocol.map(Protocol::as_str),
            r.source_address,
            r.source_port,
            r.destination_address,
            r.destination_port,
            r.thread_name,
            r.process_name,
            key.as_slice(),
            now.0,
            m.image
        ],
    )?;
    let row = conn.last_insert_rowid();
    for (position, (name, value)) in m.parameters.iter().enumerate() {
        conn.execute(
            "INSERT INTO module_parameter (module_row, position, name, value) VALUES (?1, ?2, ?3, ?4)",
            params![row, i64::try_from(position).unwrap_or(i64::MAX), name, value],
        )?;
    }
    let detail = format!("{} ({}), priority {}", m.name, m.kind, m.priority);
    record_history(
        conn,
        now,
        Some(&m.device),
        Some(module_id),
        "module-built",
        &detail,
    )?;
    Ok(load_module(conn, &m.device, module_id)?.1)
}

impl Cib {
    /// Kinds the CIB knows (seeded by migration), by name.
    pub fn module_kinds(&self) -> Result<Vec<(String, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, description FROM module_kind ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Builds one instance: allocates the device's next module id, draws a
    /// fresh 256-bit key, stores parameters and match rules. Not deployed.
    pub fn construct_module(&mut self, module: &NewModule) -> Result<Module> {
        validate::new_module(module, &crate::images::image_kinds(&self.conn)?)?;
        let now = Timestamp::now();
        self.write(|tx| insert_module(tx, module, now))
    }

    /// Builds one instance per entry and queues a deploy request for each,
    /// all in one transaction: after a crash either every device has its
    /// module and request or none has. `not_before: None` = now.
    pub fn construct_and_deploy(
        &mut self,
        modules: &[NewModule],
        not_before: Option<Timestamp>,
    ) -> Result<Vec<(Module, Request)>> {
        let image_kinds = crate::images::image_kinds(&self.conn)?;
        for m in modules {
            validate::new_module(m, &image_kinds)?;
        }
        let now = Timestamp::now();
        let retry = self.retry;
        self.write(|tx| {
            modules
                .iter()
                .map(|m| {
                    let built = insert_module(tx, m, now)?;
                    let request = insert_request(
                        tx,
                        &built.device,
                        built.module_id,
                        Action::Deploy,
                        not_before.unwrap_or(now),
                        now,
                        retry,
                    )?;
                    Ok((built, request))
                })
                .collect()
        })
    }

    pub fn module(&self, device: &str, module_id: u32) -> Result<Module> {
        Ok(load_module(&self.conn, device, module_id)?.1)
    }

    /// The live (not revoked) module of `device` called `name`.
    pub fn module_by_name(&self, device: &str, name: &str) -> Result<Module> {
        device_row(&self.conn, device)?;
        query_modules(
            &self.conn,
            "d.name = ?1 AND m.name = ?2 AND m.status <> 'revoked'",
            params![device, name],
        )?
        .pop()
        .map(|(_, m)| m)
        .ok_or_else(|| CibError::UnknownModule {
            device: device.to_owned(),
            module: format!("named \"{name}\""),
        })
    }

    /// Modules of a device (revoked ones too, for the record), by id.
    pub fn modules_of_device(&self, device: &str) -> Result<Vec<Module>> {
        device_row(&self.conn, device)?;
        Ok(query_modules(&self.conn, "d.name = ?1", [device])?
            .into_iter()
            .map(|(_, m)| m)
            .collect())
    }

    /// Every module in a status, across devices.
    pub fn modules_with_status(&self, status: ModuleStatus) -> Result<Vec<Module>> {
        Ok(
            query_modules(&self.conn, "m.status = ?1", [status.as_str()])?
                .into_iter()
                .map(|(_, m)| m)
                .collect(),
        )
    }
}
