//! Middleboxes, inverse modules, their deployments, and flow lookup.

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::addr::prefix_contains;
use crate::error::{CibError, Result};
use crate::rows::{load_module, query_modules};
use crate::types::{
    FlowEnd, FlowMatch, FlowQuery, InverseModule, Middlebox, MiddleboxDeployment,
    MiddleboxDeploymentState, NewMiddlebox, Protocol, Timestamp,
};
use crate::validate;
use crate::{record_history, to_u32, Cib};

fn middlebox_from_row(r: &Row<'_>) -> rusqlite::Result<Middlebox> {
    Ok(Middlebox {
        name: r.get(0)?,
        address: r.get(1)?,
        mb_type: r.get(2)?,
        added_at: Timestamp(r.get(3)?),
    })
}

fn load_middlebox(conn: &Connection, name: &str) -> Result<(i64, Middlebox)> {
    conn.query_row(
        "SELECT name, address, mb_type, added_at, id FROM middlebox WHERE name = ?1",
        [name],
        |r| Ok((r.get(4)?, middlebox_from_row(r)?)),
    )
    .optional()?
    .ok_or_else(|| CibError::UnknownMiddlebox(name.to_owned()))
}

fn inverse_from_row(r: &Row<'_>) -> rusqlite::Result<InverseModule> {
    Ok(InverseModule {
        kind: r.get(0)?,
        mb_type: r.get(1)?,
        artefact_name: r.get(2)?,
        content_sha256: r.get(3)?,
        updated_at: Timestamp(r.get(4)?),
    })
}

fn load_inverse(
    conn: &Connection,
    kind: &str,
    mb_type: &str,
) -> Result<Option<(i64, InverseModule)>> {
    Ok(conn
        .query_row(
            "SELECT kind, mb_type, artefact_name, content_sha256, updated_at, id FROM inverse_module
             WHERE kind = ?1 AND mb_type = ?2",
            params![kind, mb_type],
            |r| Ok((r.get(5)?, inverse_from_row(r)?)),
        )
        .optional()?)
}

const MB_DEPLOYMENT_SELECT: &str =
    "SELECT x.id, b.name, d.name, m.module_id, m.kind, i.artefact_name, x.state,
        x.content_sha256, x.last_error, x.created_at, x.updated_at
     FROM middlebox_deployment x JOIN middlebox b ON b.id = x.middlebox_id
       JOIN module m ON m.id = x.module_row JOIN device d ON d.id = m.device_id
       JOIN inverse_module i ON i.id = x.inverse_id";

fn query_mb_deployments(
    conn: &Connection,
    tail: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<MiddleboxDeployment>> {
    let mut stmt = conn.prepare_cached(&format!("{MB_DEPLOYMENT_SELECT} {tail}"))?;
    let rows = stmt.query_map(args, |r| {
        Ok((
            MiddleboxDeployment {
                id: r.get(0)?,
                middlebox: r.get(1)?,
                device: r.get(2)?,
                module_id: 0,
                kind: r.get(4)?,
                artefact_name: r.get(5)?,
                state: MiddleboxDeploymentState::Pending,
                content_sha256: r.get(7)?,
                last_error: r.get(8)?,
                created_at: Timestamp(r.get(9)?),
                updated_at: Timestamp(r.get(10)?),
            },
            r.get::<_, i64>(3)?,
            r.get::<_, String>(6)?,
        ))
    })?;
    rows.map(|row| {
        let (mut d, module_id, state) = row?;
        d.module_id = to_u32(module_id, "module id")?;
        d.state = MiddleboxDeploymentState::from_db(&state)?;
        Ok(d)
    })
    .collect()
}

fn load_mb_deployment(conn: &Connection, id: i64) -> Result<MiddleboxDeployment> {
    query_mb_deployments(conn, "WHERE x.id = ?1", [id])?
        .pop()
        .ok_or(CibError::UnknownMiddleboxDeployment(id))
}

/// Whether a module's match rules cover the flow, seen from `end`.
fn rules_cover(m: &crate::Module, q: &FlowQuery, end: FlowEnd) -> bool {
    let r = &m.match_rules;
    let protocol_ok = match r.protocol {
        None | Some(Protocol::Any) => true,
        Some(p) => p == q.protocol || q.protocol == Protocol::Any,
    };
    // "source" in the match rules is the device's own end of the socket.
    let (local, local_port, remote, remote_port) = match end {
        FlowEnd::Source => (q.source, q.source_port, q.destination, q.destination_port),
        FlowEnd::Destination => (q.destination, q.destination_port, q.source, q.source_port),
    };
    protocol_ok
        && r.source_address
            .as_deref()
            .is_none_or(|p| prefix_contains(p, local))
        && r.source_port.is_none_or(|p| p == local_port)
        && r.destination_address
            .as_deref()
            .is_none_or(|p| prefix_contains(p, remote))
        && r.destination_port.is_none_or(|p| p == remote_port)
}

impl Cib {
    // ===== middleboxes =====

    pub fn add_middlebox(&mut self, middlebox: &NewMiddlebox) -> Result<Middlebox> {
        validate::new_middlebox(middlebox)?;
        let now = Timestamp::now();
        self.write(|tx| {
            let exists: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM middlebox WHERE name = ?1)",
                [&middlebox.name],
                |r| r.get(0),
            )?;
            if exists {
                return Err(CibError::Duplicate {
                    what: "a middlebox named",
                    key: middlebox.name.clone(),
                });
            }
            tx.execute(
                "INSERT INTO middlebox (name, address, mb_type, added_at) VALUES (?1, ?2, ?3, ?4)",
                params![middlebox.name, middlebox.address, middlebox.mb_type, now.0],
            )?;
            let detail = format!(
                "middlebox {} ({}) at {}",
                middlebox.name, middlebox.mb_type, middlebox.address
            );
            record_history(tx, now, None, None, "middlebox-added", &detail)?;
            Ok(load_middlebox(tx, &middlebox.name)?.1)
        })
    }

    pub fn middlebox(&self, name: &str) -> Result<Middlebox> {
        Ok(load_middlebox(&self.conn, name)?.1)
    }

    pub fn middleboxes(&self) -> Result<Vec<Middlebox>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, address, mb_type, added_at FROM middlebox ORDER BY name")?;
        let rows = stmt.query_map([], middlebox_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    // ===== inverse modules =====

    /// Registers (or replaces) the inverse artefact of `kind` for middleboxes
    /// of `mb_type`, e.g. the `l45-dissector` generator for `wireshark`.
    pub fn register_inverse(
        &mut self,
        kind: &str,
        mb_type: &str,
        artefact_name: &str,
        content_sha256: &str,
    ) -> Result<InverseModule> {
        validate::kind(kind)?;
        validate::identifier("middlebox type", mb_type)?;
        if artefact_name.is_empty() || artefact_name.chars().any(char::is_control) {
            return Err(CibError::invalid(
                "inverse artefact name",
                "must be non-empty printable text",
            ));
        }
        validate::sha256_hex("inverse content hash", content_sha256)?;
        let now = Timestamp::now();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO inverse_module (kind, mb_type, artefact_name, content_sha256, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (kind, mb_type) DO UPDATE SET artefact_name = excluded.artefact_name,
                     content_sha256 = excluded.content_sha256, updated_at = excluded.updated_at",
                params![kind, mb_type, artefact_name, content_sha256, now.0],
            )?;
            let detail = format!("{kind} on {mb_type}: {artefact_name} sha256 {content_sha256}");
            record_history(tx, now, None, None, "inverse-registered", &detail)?;
            load_inverse(tx, kind, mb_type)?
                .map(|(_, i)| i)
                .ok_or_else(|| CibError::corrupt("inverse module vanished inside its transaction"))
        })
    }

    pub fn inverse_modules(&self) -> Result<Vec<InverseModule>> {
        let mut stmt = self.conn.prepare(
            "SELECT kind, mb_type, artefact_name, content_sha256, updated_at FROM inverse_module
             ORDER BY kind, mb_type",
        )?;
        let rows = stmt.query_map([], inverse_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    // ===== middlebox deployments =====

    /// Queues the inverse of a module instance for a middlebox (state
    /// `pending`). Requires an inverse registered for the module's kind and
    /// the middlebox's type. Asking again for a failed or removed one
    /// resets it to pending; for a pending or deployed one it is a duplicate.
    pub fn request_middlebox_deployment(
        &mut self,
        middlebox: &str,
        device: &str,
        module_id: u32,
    ) -> Result<MiddleboxDeployment> {
        let now = Timestamp::now();
        self.write(|tx| {
            let (mb_row, mb) = load_middlebox(tx, middlebox)?;
            let (module_row, module) = load_module(tx, device, module_id)?;
            let (inverse_row, _) = load_inverse(tx, &module.kind, &mb.mb_type)?.ok_or_else(|| CibError::NoInverse {
                kind: module.kind.clone(),
                mb_type: mb.mb_type.clone(),
            })?;
            let existing: Option<(i64, String)> = tx
                .query_row(
                    "SELECT id, state FROM middlebox_deployment WHERE middlebox_id = ?1 AND module_row = ?2",
                    params![mb_row, module_row],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let id = match existing {
                Some((_, state)) if state == "pending" || state == "deployed" => {
                    return Err(CibError::Duplicate {
                        what: "a middlebox deployment of",
                        key: format!("module {module_id} of device {device}\" on middlebox \"{middlebox}"),
                    });
                }
                Some((id, _)) => {
                    tx.execute(
                        "UPDATE middlebox_deployment SET state = 'pending', inverse_id = ?2, last_error = NULL,
                             updated_at = ?3 WHERE id = ?1",
                        params![id, inverse_row, now.0],
                    )?;
                    id
                }
                None => {
                    tx.execute(
                        "INSERT INTO middlebox_deployment (middlebox_id, module_row, inverse_id, created_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?4)",
                        params![mb_row, module_row, inverse_row, now.0],
                    )?;
                    tx.last_insert_rowid()
                }
            };
            let detail = format!("inverse of {} queued for middlebox {middlebox}", module.kind);
            record_history(tx, now, Some(device), Some(module_id), "inverse-requested", &detail)?;
            load_mb_deployment(tx, id)
        })
    }

    /// Records what happened to a middlebox deployment: `Deployed` with the
    /// artefact's hash, `Failed` with an error, `Removed`, or back to `Pending`.
    pub fn set_middlebox_deployment_state(
        &mut self,
        id: i64,
        state: MiddleboxDeploymentState,
        content_sha256: Option<&str>,
        error: Option<&str>,
    ) -> Result<MiddleboxDeployment> {
        if let Some(hash) = content_sha256 {
            validate::sha256_hex("artefact hash", hash)?;
        }
        if state == MiddleboxDeploymentState::Deployed && content_sha256.is_none() {
            return Err(CibError::invalid(
                "artefact hash",
                "required when marking an inverse deployed",
            ));
        }
        let now = Timestamp::now();
        self.write(|tx| {
            let before = load_mb_deployment(tx, id)?;
            tx.execute(
                "UPDATE middlebox_deployment SET state = ?2, content_sha256 = COALESCE(?3, content_sha256),
                     last_error = ?4, updated_at = ?5 WHERE id = ?1",
                params![id, state.as_str(), content_sha256, error, now.0],
            )?;
            let detail = format!(
                "inverse on middlebox {}: {} -> {state}{}",
                before.middlebox,
                before.state,
                error.map(|e| format!(": {e}")).unwrap_or_default()
            );
            record_history(tx, now, Some(&before.device), Some(before.module_id), "inverse-state", &detail)?;
            load_mb_deployment(tx, id)
        })
    }

    /// Middlebox deployments (of one middlebox, or all), by id.
    pub fn middlebox_deployments(
        &self,
        middlebox: Option<&str>,
    ) -> Result<Vec<MiddleboxDeployment>> {
        if let Some(name) = middlebox {
            load_middlebox(&self.conn, name)?;
        }
        query_mb_deployments(
            &self.conn,
            "WHERE (?1 IS NULL OR b.name = ?1) ORDER BY x.id",
            [middlebox],
        )
    }

    // ===== flow lookup =====

    /// Which deployed modules customize a flow a middlebox saw, and whether
    /// the middlebox has their inverses. Devices are found by the host part
    /// of their address (so give devices their data-plane IP as address
    /// when they have several). Lowest priority first. Empty ⇒ the flow is
    /// not one of ours: the NCO rejects it and raises an alert.
    pub fn flow_lookup(&self, query: &FlowQuery) -> Result<Vec<FlowMatch>> {
        let (mb_row, mb) = load_middlebox(&self.conn, &query.middlebox)?;
        let mut matches = Vec::new();
        for device in self.devices()? {
            let Ok(host) = device.host().parse::<std::net::IpAddr>() else {
                continue;
            };
            let ends = [
                (FlowEnd::Source, query.source),
                (FlowEnd::Destination, query.destination),
            ];
            for (end, addr) in ends {
                if host != addr {
                    continue;
                }
                let modules = query_modules(
                    &self.conn,
                    "d.name = ?1 AND m.status = 'deployed'",
                    [&device.name],
                )?;
                for (module_row, module) in modules {
                    if !rules_cover(&module, query, end) {
                        continue;
                    }
                    let inverse =
                        load_inverse(&self.conn, &module.kind, &mb.mb_type)?.map(|(_, i)| i);
                    let inverse_deployed: bool = self.conn.query_row(
                        "SELECT EXISTS(SELECT 1 FROM middlebox_deployment
                           WHERE middlebox_id = ?1 AND module_row = ?2 AND state = 'deployed')",
                        params![mb_row, module_row],
                        |r| r.get(0),
                    )?;
                    matches.push(FlowMatch {
                        device: device.name.clone(),
                        end,
                        module_id: module.module_id,
                        module_name: module.name,
                        kind: module.kind,
                        priority: module.priority,
                        inverse,
                        inverse_deployed,
                    });
                }
            }
        }
        matches.sort_by(|a, b| {
            (a.priority, &a.device, a.module_id).cmp(&(b.priority, &b.device, b.module_id))
        });
        Ok(matches)
    }
}
