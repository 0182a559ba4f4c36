//! The customization information base (CIB): the NCO's database, on SQLite.
//!
//! Devices, middleboxes, module kinds, built module instances (per-device
//! ids, keys, parameters), requests the NCO works through, the state devices
//! report, history, alerts, inverse modules and their middlebox deployments.
//! See `docs/cib.md` for the schema, the state machines and the invariants.
//!
//! Architecture invariants:
//! - only this crate contains SQL;
//! - every public method that changes anything runs in one IMMEDIATE
//!   transaction and appends its history row in that transaction; an error
//!   means nothing changed;
//! - ids (module ids per device, request ids, …) are never reused, also
//!   across restarts and deletions;
//! - times are Unix milliseconds ([`Timestamp`]).

mod addr;
mod callhome;
mod devices;
mod error;
mod images;
mod middlebox;
mod migrate;
mod modules;
mod monitor;
mod requests;
mod rows;
mod types;
mod validate;

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

pub use callhome::{EnrollOutcome, DEFAULT_ENROLLMENT_TTL_MS};
pub use error::{CibError, Result};
pub use types::*;

/// How long a writer waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// An open CIB. One per thread/task; several may share a file (WAL).
pub struct Cib {
    conn: Connection,
    retry: RetryPolicy,
}

// ===== opening =====

impl Cib {
    /// Opens (creating if needed) the CIB at `path` and brings its schema up
    /// to date.
    pub fn open(path: impl AsRef<Path>) -> Result<Cib> {
        let path = path.as_ref();
        if path != Path::new(":memory:") {
            create_private(path)?;
        }
        let conn = Connection::open(path)?;
        let cib = Cib::setup(conn)?;
        tracing::debug!(path = %path.display(), "CIB open");
        Ok(cib)
    }

    /// A private in-memory CIB, for tests.
    pub fn open_in_memory() -> Result<Cib> {
        Cib::setup(Connection::open_in_memory()?)
    }

    fn setup(mut conn: Connection) -> Result<Cib> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL: readers do not block the writer, and a killed process leaves
        // a consistent database. In-memory databases answer "memory".
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        // FULL: a committed transaction survives power loss too, not only a
        // killed process; one fsync per commit is cheap next to a NETCONF RPC.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        let fk: bool = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
        if !fk {
            return Err(CibError::corrupt(
                "SQLite build without foreign key support",
            ));
        }
        migrate::run(&mut conn)?;
        Ok(Cib {
            conn,
            retry: RetryPolicy::default(),
        })
    }

    /// Schema version (number of migrations applied).
    pub fn schema_version(&self) -> Result<u32> {
        migrate::current_version(&self.conn)
    }

    /// Retry policy for requests created from now on and for backoff.
    pub fn set_retry_policy(&mut self, policy: RetryPolicy) {
        self.retry = policy;
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Runs `f` in one IMMEDIATE transaction: all of it or nothing.
    /// IMMEDIATE takes the write lock up front, so two writers never both
    /// read and then fail to upgrade (SQLITE_BUSY mid-transaction).
    fn write<T>(&mut self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&tx)?; // dropping `tx` on error rolls back
        tx.commit()?;
        Ok(value)
    }
}

/// Mode of the database file: it holds every module's key.
const FILE_MODE: u32 = 0o600;

/// Creates the database file with mode 0600 before SQLite opens it (SQLite
/// gives its `-wal` and `-shm` files the database file's mode), or checks
/// an existing one: a database, `-wal` or `-shm` that group or others may
/// use is refused rather than chmod'ed, so the operator sees it.
fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let refuse = |file: &Path, reason: String| CibError::InvalidState {
        subject: file.display().to_string(),
        reason,
    };
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(|e| refuse(path, e.to_string()))?;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        match std::fs::metadata(file) {
            Ok(m) if m.mode() & 0o077 != 0 => {
                return Err(refuse(
                    file,
                    format!(
                        "mode {:04o} lets other users read the module keys in it; \
                         chmod 600 {}",
                        m.mode() & 0o7777,
                        file.display()
                    ),
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(refuse(file, e.to_string())),
        }
    }
    Ok(())
}

// ===== helpers shared by the parts =====

/// Appends one history row (inside the caller's transaction).
pub(crate) fn record_history(
    conn: &Connection,
    at: Timestamp,
    device: Option<&str>,
    module_id: Option<u32>,
    event: &str,
    detail: &str,
) -> Result<()> {
    conn.execute(
        "INSERT INTO history (at, device, module_id, event, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![at.0, device, module_id, event, detail],
    )?;
    tracing::info!(device, module_id, event, detail, "CIB change");
    Ok(())
}

/// Row id of a device by name.
pub(crate) fn device_row(conn: &Connection, name: &str) -> Result<i64> {
    conn.query_row("SELECT id FROM device WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .optional()?
    .ok_or_else(|| CibError::UnknownDevice(name.to_owned()))
}

/// u32 from a column that the schema's CHECK keeps in range.
pub(crate) fn to_u32(value: i64, what: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| CibError::corrupt(format!("{what} {value}")))
}

/// Counters are u64 on the device, i64 in SQLite: clamp the (theoretical)
/// top half rather than fail a whole report.
pub(crate) fn counter_to_db(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn counter_from_db(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

pub(crate) fn opt_ts(value: Option<i64>) -> Option<Timestamp> {
    value.map(Timestamp)
}
