//! Durable running datastore: a snapshot (`running.xml`, the libyang XML of
//! the whole datastore) plus an append-only journal
//! (`running.journal`) of the commits since.
//!
//! A small commit appends one record and `fsync`s it before the reply; a
//! large one (or a journal grown past the snapshot's size) rewrites the
//! snapshot atomically (write, fsync, rename, fsync the directory) and then
//! empties the journal. Records hold whole entries, never merges, so
//! replaying a record twice (a crash between the rename and the truncation)
//! gives the same state.
//!
//! Record: `B\n`, then per change `U <len>\n<entry>\n` (upsert),
//! `D <id>\n` (delete), `C\n` (clear every entry), `R <len>\n<xml>\n` (the
//! non-module data, whole), then `E\n`. A record without its `E` line was
//! never acknowledged and is ignored.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use yang3::data::{DataPrinterFlags, DataTree};

use std::collections::BTreeMap;

use super::entry::{Entry, ModuleMap};
use super::L45 as L45_NS;

/// Journal size below which a snapshot is never rewritten for its sake.
const COMPACT_MIN: u64 = 8 << 20;

pub struct Journal {
    snapshot: PathBuf,
    journal: PathBuf,
    file: Option<File>,
    len: u64,
    snapshot_len: u64,
}

/// One replayed change.
pub enum Replay {
    Upsert(Entry),
    Delete(u32),
    Clear,
    Rest(String),
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Journal {
    pub fn new(state_dir: &Path) -> Journal {
        Journal {
            snapshot: state_dir.join("running.xml"),
            journal: state_dir.join("running.journal"),
            file: None,
            len: 0,
            snapshot_len: 0,
        }
    }

    pub fn snapshot_path(&self) -> &Path {
        &self.snapshot
    }

    /// Whether a commit of `changes` entries on a store of `size` entries
    /// should rewrite the snapshot rather than append.
    pub fn wants_snapshot(&self, changes: usize, size: usize, clear: bool) -> bool {
        clear
            || changes.saturating_mul(4) >= size.max(1)
            || (self.len > COMPACT_MIN && self.len > self.snapshot_len)
    }

    /// Writes the whole datastore as the new snapshot and empties the
    /// journal.
    pub fn write_snapshot<'a>(
        &mut self,
        rest: &DataTree<'static>,
        modules: impl Iterator<Item = &'a Entry>,
    ) -> std::io::Result<()> {
        let head = l45_yang::print_xml(
            rest,
            DataPrinterFlags::WD_EXPLICIT | DataPrinterFlags::SHRINK,
        )
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        let tmp = self.snapshot.with_extension("tmp");
        let mut len = 0u64;
        {
            let mut w = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
            w.write_all(head.as_bytes())?;
            len += head.len() as u64;
            let mut modules = modules.peekable();
            if modules.peek().is_some() {
                let open = format!("<customizations xmlns=\"{L45_NS}\">");
                w.write_all(open.as_bytes())?;
                len += open.len() as u64;
                for e in modules {
                    w.write_all(e.as_bytes())?;
                    len += e.len() as u64;
                }
                w.write_all(b"</customizations>")?;
                len += 17;
            }
            let f = w.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.snapshot)?;
        sync_dir(&self.snapshot)?;
        // Empty the journal only now: replaying it over the new snapshot
        // would be harmless (records are idempotent).
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.journal)?;
        f.sync_all()?;
        sync_dir(&self.journal)?;
        self.file = None;
        self.len = 0;
        self.snapshot_len = len;
        Ok(())
    }

    /// Appends one commit and makes it durable: `clear` drops every entry
    /// first, `changes` sets (`Some`) or deletes (`None`) entries, `rest`
    /// replaces the non-module data.
    pub fn append(
        &mut self,
        clear: bool,
        changes: &BTreeMap<u32, Option<Entry>>,
        rest: Option<&DataTree<'static>>,
    ) -> std::io::Result<()> {
        let mut rec: Vec<u8> = Vec::with_capacity(64 + changes.len() * 128);
        rec.extend_from_slice(b"B\n");
        if clear {
            rec.extend_from_slice(b"C\n");
        }
        for (id, change) in changes {
            match change {
                Some(e) => {
                    rec.extend_from_slice(format!("U {}\n", e.len()).as_bytes());
                    rec.extend_from_slice(e.as_bytes());
                    rec.push(b'\n');
                }
                None => rec.extend_from_slice(format!("D {id}\n").as_bytes()),
            }
        }
        if let Some(rest) = rest {
            let xml = l45_yang::print_xml(
                rest,
                DataPrinterFlags::WD_EXPLICIT | DataPrinterFlags::SHRINK,
            )
            .map_err(|e| std::io::Error::other(e.to_string()))?;
            rec.extend_from_slice(format!("R {}\n", xml.len()).as_bytes());
            rec.extend_from_slice(xml.as_bytes());
            rec.push(b'\n');
        }
        rec.extend_from_slice(b"E\n");
        if self.file.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.journal)?;
            self.len = f.metadata()?.len();
            self.file = Some(f);
            sync_dir(&self.journal)?;
        }
        let Some(f) = self.file.as_mut() else {
            return Err(std::io::Error::other("journal not open"));
        };
        let before = self.len;
        if let Err(e) = f.write_all(&rec).and_then(|_| f.sync_data()) {
            // Cut a partial record off so later appends stay parseable.
            let _ = f.set_len(before);
            self.file = None;
            return Err(e);
        }
        self.len += rec.len() as u64;
        Ok(())
    }

    /// Reads the journal's complete records, in order.
    pub fn replay(&mut self) -> std::io::Result<Vec<Vec<Replay>>> {
        let data = match std::fs::read(&self.journal) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        self.snapshot_len = std::fs::metadata(&self.snapshot)
            .map(|m| m.len())
            .unwrap_or(0);
        Ok(parse_records(&data))
    }
}

fn parse_records(data: &[u8]) -> Vec<Vec<Replay>> {
    let mut records = Vec::new();
    let mut pos = 0;
    let line = |pos: &mut usize| -> Option<String> {
        let end = data[*pos..].iter().position(|&b| b == b'\n')? + *pos;
        let l = String::from_utf8_lossy(&data[*pos..end]).into_owned();
        *pos = end + 1;
        Some(l)
    };
    let blob = |pos: &mut usize, len: usize| -> Option<String> {
        let end = pos.checked_add(len)?;
        if end >= data.len() || data[end] != b'\n' {
            return None;
        }
        let s = std::str::from_utf8(&data[*pos..end]).ok()?.to_string();
        *pos = end + 1;
        Some(s)
    };
    'records: while pos < data.len() {
        if line(&mut pos).as_deref() != Some("B") {
            break;
        }
        let mut rec = Vec::new();
        loop {
            let Some(l) = line(&mut pos) else {
                break 'records;
            };
            let (op, arg) = l.split_once(' ').unwrap_or((l.as_str(), ""));
            match op {
                "E" => break,
                "C" => rec.push(Replay::Clear),
                "D" => match arg.parse() {
                    Ok(id) => rec.push(Replay::Delete(id)),
                    Err(_) => break 'records,
                },
                "U" | "R" => {
                    let Some(text) = arg.parse().ok().and_then(|n| blob(&mut pos, n)) else {
                        break 'records;
                    };
                    rec.push(if op == "U" {
                        Replay::Upsert(Arc::from(text))
                    } else {
                        Replay::Rest(text)
                    });
                }
                _ => break 'records,
            }
        }
        records.push(rec);
    }
    records
}

/// Applies replayed changes to a module map (entries are checked by the
/// caller).
pub fn apply_replay(
    map: &mut ModuleMap,
    id_of: impl Fn(&Entry) -> Option<u32>,
    rec: Vec<Replay>,
) -> Option<String> {
    let mut rest = None;
    for r in rec {
        match r {
            Replay::Clear => map.clear(),
            Replay::Delete(id) => {
                map.remove(&id);
            }
            Replay::Upsert(e) => {
                if let Some(id) = id_of(&e) {
                    map.insert(id, e);
                }
            }
            Replay::Rest(x) => rest = Some(x),
        }
    }
    rest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_record_is_ignored() {
        let full = b"B\nU 5\n<a/>x\nD 3\nE\nB\nC\nU 4\n<b/>\n";
        let recs = parse_records(full);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].len(), 2);
        let two = b"B\nC\nE\nB\nR 3\n<r>\nE\n";
        assert_eq!(parse_records(two).len(), 2);
    }
}
