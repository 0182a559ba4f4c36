//! Versioned schema migrations, tracked in SQLite's `user_version`.
//!
//! Migration N (1-based) is `MIGRATIONS[N - 1]`. A migration is never edited
//! once released: changes go into a new file appended to the list.

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{CibError, Result};

struct Migration {
    name: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "0001_initial",
        sql: include_str!("../migrations/0001_initial.sql"),
    },
    Migration {
        name: "0002_call_home",
        sql: include_str!("../migrations/0002_call_home.sql"),
    },
    Migration {
        name: "0003_images",
        sql: include_str!("../migrations/0003_images.sql"),
    },
    Migration {
        name: "0004_module_image",
        sql: include_str!("../migrations/0004_module_image.sql"),
    },
];

/// The schema version this program writes.
pub(crate) const LATEST: u32 = MIGRATIONS.len() as u32;

pub(crate) fn current_version(conn: &Connection) -> Result<u32> {
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    u32::try_from(v).map_err(|_| CibError::Migration {
        version: 0,
        reason: format!("database reports schema version {v}"),
    })
}

/// Applies every migration newer than the database, each in its own
/// transaction together with its `user_version` bump, so a crash leaves the
/// database at a whole version.
pub(crate) fn run(conn: &mut Connection) -> Result<()> {
    let found = current_version(conn)?;
    if found > LATEST {
        return Err(CibError::Migration {
            version: found,
            reason: format!(
                "the database has schema version {found}, newer than this program knows ({LATEST}); \
                 upgrade the NCO"
            ),
        });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as u32 + 1;
        let fail = |e: rusqlite::Error| CibError::Migration {
            version,
            reason: format!("{}: {e}", migration.name),
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        // Another process may have migrated while we waited for the lock.
        if current_version(&tx)? >= version {
            continue;
        }
        tx.execute_batch(migration.sql).map_err(fail)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
        tracing::info!(version, name = migration.name, "CIB schema migrated");
    }
    Ok(())
}
