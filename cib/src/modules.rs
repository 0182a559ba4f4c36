//! Module kinds and built instances: id allocation, keys, parameters.

use std::io::Read;

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::{CibError, Result};
use crate::types::{
    Attach, MatchRules, Module, ModuleStatus, NewModule, Protocol, Request, Timestamp,
};
use crate::{device_row, opt_ts, record_history, to_u32, validate, Action, Cib};

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

const MODULE_COLUMNS: &str =
    "m.id, d.name, m.module_id, m.name, m.kind, m.priority, m.activated, m.deprecated,
     m.attach, m.match_protocol, m.match_source_address, m.match_source_port,
     m.match_destination_address, m.match_destination_port, m.match_thread_name,
     m.match_process_name, m.security_key, m.status, m.created_at, m.deployed_at, m.revoked_at";

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

/// Inserts one module (validated by the caller) in the caller's transaction.
fn insert_module(conn: &Connection, m: &NewModule, now: Timestamp) -> Result<Module> {
    let device = device_row(conn, &m.device)?;
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
            match_destination_port, match_thread_name, match_process_name, security_key, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
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
            now.0
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
        validate::new_module(module)?;
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
        for m in modules {
            validate::new_module(m)?;
        }
        let now = Timestamp::now();
        let retry = self.retry;
        self.write(|tx| {
            modules
                .iter()
                .map(|m| {
                    let built = insert_module(tx, m, now)?;
                    let request = crate::requests::insert_request(
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
