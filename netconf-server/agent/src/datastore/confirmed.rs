//! The pending confirmed commit on disk (`confirmed-commit` in the state
//! directory, mode 0600), so that a restart still restores the previous
//! configuration (RFC 6241 8.4.1). Written (atomically) when a confirmed
//! commit is armed or extended, removed when it is confirmed, cancelled or
//! rolled back.
//!
//! Format: `l45-confirmed-commit 1\n`, `deadline <Unix ms>\n`,
//! `session <id>\n`, optionally `persist <len>\n<persist-id>\n`, then
//! `backup <len>\n<xml>\n` — the running configuration to restore, as
//! running.xml holds it. Lengths are in bytes.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{sync_parent, write_atomically};

const MAGIC: &str = "l45-confirmed-commit 1";

/// A confirmed commit waiting for its confirmation, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRecord {
    /// When the confirm-timeout runs out (wall clock, so it survives a
    /// restart).
    pub deadline: SystemTime,
    pub session_id: u32,
    pub persist: Option<String>,
    /// The running configuration before the confirmed commit.
    pub backup: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PendingError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a pending confirmed commit: {reason}")]
    Malformed { path: PathBuf, reason: &'static str },
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("confirmed-commit")
}

impl PendingRecord {
    pub fn to_bytes(&self) -> Vec<u8> {
        let ms = self
            .deadline
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let mut out = format!("{MAGIC}\ndeadline {ms}\nsession {}\n", self.session_id);
        if let Some(p) = &self.persist {
            out.push_str(&format!("persist {}\n{p}\n", p.len()));
        }
        out.push_str(&format!("backup {}\n", self.backup.len()));
        out.push_str(&self.backup);
        out.push('\n');
        out.into_bytes()
    }

    pub fn parse(text: &str) -> Result<PendingRecord, &'static str> {
        fn next_line<'t>(rest: &mut &'t str) -> Result<&'t str, &'static str> {
            let (l, r) = rest.split_once('\n').ok_or("truncated")?;
            *rest = r;
            Ok(l)
        }
        let mut rest = text;
        let mut line = || next_line(&mut rest);
        if line()? != MAGIC {
            return Err("unknown format");
        }
        let deadline = line()?
            .strip_prefix("deadline ")
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or("bad deadline")?;
        let session_id = line()?
            .strip_prefix("session ")
            .and_then(|n| n.parse().ok())
            .ok_or("bad session")?;
        let mut persist = None;
        let mut backup = None;
        while !rest.is_empty() {
            let l = next_line(&mut rest)?;
            let (name, len) = l.split_once(' ').ok_or("bad field")?;
            let len: usize = len.parse().map_err(|_| "bad length")?;
            let value = rest.get(..len).ok_or("truncated value")?;
            rest = rest[len..].strip_prefix('\n').ok_or("bad value end")?;
            match name {
                "persist" => persist = Some(value.to_string()),
                "backup" => backup = Some(value.to_string()),
                _ => return Err("unknown field"),
            }
        }
        Ok(PendingRecord {
            deadline: UNIX_EPOCH + Duration::from_millis(deadline),
            session_id,
            persist,
            backup: backup.ok_or("no backup")?,
        })
    }
}

/// Stores `record` durably (the previous one, if any, is replaced whole).
pub fn save(state_dir: &Path, record: &PendingRecord) -> std::io::Result<()> {
    write_atomically(&path(state_dir), &record.to_bytes())
}

/// The stored pending confirmed commit, if there is one.
pub fn load(state_dir: &Path) -> Result<Option<PendingRecord>, PendingError> {
    let path = path(state_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PendingError::Io { path, source }),
    };
    PendingRecord::parse(&text)
        .map(Some)
        .map_err(|reason| PendingError::Malformed { path, reason })
}

/// Forgets the stored pending confirmed commit (durably).
pub fn remove(state_dir: &Path) -> std::io::Result<()> {
    let path = path(state_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => sync_parent(&path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let r = PendingRecord {
            deadline: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            session_id: 7,
            persist: Some("id with\nnewline".into()),
            backup: "<a/>\n<b/>".into(),
        };
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert_eq!(PendingRecord::parse(&text), Ok(r.clone()));
        let plain = PendingRecord { persist: None, ..r };
        let text = String::from_utf8(plain.to_bytes()).unwrap();
        assert_eq!(PendingRecord::parse(&text), Ok(plain));
    }

    #[test]
    fn rejects_damage() {
        assert!(PendingRecord::parse("").is_err());
        assert!(PendingRecord::parse("l45-confirmed-commit 1\ndeadline 5\nsession 1\n").is_err());
        assert!(PendingRecord::parse(
            "l45-confirmed-commit 1\ndeadline 5\nsession 1\nbackup 99\n<a/>\n"
        )
        .is_err());
    }

    #[test]
    fn saved_file_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let r = PendingRecord {
            deadline: UNIX_EPOCH + Duration::from_millis(1_800_000_000_000),
            session_id: 1,
            persist: None,
            backup: String::new(),
        };
        save(dir.path(), &r).unwrap();
        let mode = std::fs::metadata(path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load(dir.path()).unwrap(), Some(r));
        remove(dir.path()).unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
    }
}
