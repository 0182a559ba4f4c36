//! Durable running datastore: a snapshot (`running.xml`, the libyang XML of
//! the whole datastore) plus an append-only journal
//! (`running.journal`) of the commits since.
//!
//! A small commit appends one record and `fsync`s it before the reply; a
//! large one (or a journal grown past the snapshot's size) writes a new
//! snapshot. Every file is created mode 0600.
//!
//! Generations make compaction crash-safe. The snapshot's first line is
//! `<!-- l45-generation N -->`; every journal record names the generation
//! of the snapshot it follows, and replay applies only the records of the
//! snapshot's generation. Compaction to N+1: (1) write `running.tmp` with
//! generation N+1 and fsync it; (2) rename it over `running.xml`; (3) fsync
//! the directory; (4) remove the journal and fsync the directory. A crash
//! before (2) finds snapshot N and its journal: the state before. From (2)
//! on the file system holds snapshot N+1 (if the rename is lost with the
//! crash, it holds N and its journal, again the state before): the journal
//! left over holds only generation-N records, which replay ignores, so it
//! finds the state after. New records are appended only once (4) is done,
//! with generation N+1. A snapshot without the line (written before
//! generations) is generation 0, as are records without a number.
//!
//! Record: `B <generation>\n`, then per change `U <len>\n<entry>\n`
//! (upsert), `D <id>\n` (delete), `C\n` (clear every entry),
//! `R <len>\n<xml>\n` (the non-module data, whole), then `E\n`. A record
//! without its `E` line was never acknowledged and is ignored.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use yang3::data::{DataPrinterFlags, DataTree};

use std::collections::BTreeMap;

use super::entry::{Entry, ModuleMap};
use super::fault;
use super::{create_private, sync_parent, FILE_MODE, L45 as L45_NS};

/// Journal size below which a snapshot is never rewritten for its sake.
const COMPACT_MIN: u64 = 8 << 20;

const GENERATION_OPEN: &str = "<!-- l45-generation ";
const GENERATION_CLOSE: &str = " -->\n";

pub struct Journal {
    snapshot: PathBuf,
    journal: PathBuf,
    file: Option<File>,
    len: u64,
    snapshot_len: u64,
    /// Generation of the snapshot on disk; records carry it.
    generation: u64,
    /// A snapshot write failed after its rename: whether the file system
    /// holds the old or the new one is unknown, so the next commit writes a
    /// snapshot again rather than a record that might follow the wrong one.
    resync: bool,
}

/// One replayed change.
pub enum Replay {
    Upsert(Entry),
    Delete(u32),
    Clear,
    Rest(String),
}

/// The generation a snapshot's text declares (0 without the line) and the
/// XML after the line.
pub fn split_generation(text: &str) -> (u64, &str) {
    text.strip_prefix(GENERATION_OPEN)
        .and_then(|rest| rest.split_once(GENERATION_CLOSE))
        .and_then(|(n, xml)| Some((n.parse().ok()?, xml)))
        .unwrap_or((0, text))
}

impl Journal {
    pub fn new(state_dir: &Path) -> Journal {
        Journal {
            snapshot: state_dir.join("running.xml"),
            journal: state_dir.join("running.journal"),
            file: None,
            len: 0,
            snapshot_len: 0,
            generation: 0,
            resync: false,
        }
    }

    pub fn snapshot_path(&self) -> &Path {
        &self.snapshot
    }

    /// Reads the snapshot (`None`: there is none yet) and remembers its
    /// generation; returns the datastore XML without the generation line.
    pub fn read_snapshot(&mut self) -> std::io::Result<Option<String>> {
        let text = match std::fs::read_to_string(&self.snapshot) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        self.snapshot_len = text.len() as u64;
        let (generation, xml) = split_generation(&text);
        self.generation = generation;
        Ok(Some(xml.to_string()))
    }

    /// Whether a commit of `changes` entries on a store of `size` entries
    /// should rewrite the snapshot rather than append.
    pub fn wants_snapshot(&self, changes: usize, size: usize, clear: bool) -> bool {
        clear
            || self.resync
            || changes.saturating_mul(4) >= size.max(1)
            || (self.len > COMPACT_MIN && self.len > self.snapshot_len)
    }

    /// Writes the whole datastore as the new snapshot (the next generation)
    /// and removes the journal; the order is the module header's.
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
        let generation = self.generation + 1;
        let tmp = self.snapshot.with_extension("tmp");
        let mut len = 0u64;
        {
            let mut w = BufWriter::with_capacity(1 << 20, create_private(&tmp)?);
            let line = format!("{GENERATION_OPEN}{generation}{GENERATION_CLOSE}");
            w.write_all(line.as_bytes())?;
            len += line.len() as u64;
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
        fault::point("snapshot-written");
        // From the rename on, the snapshot on disk may be either
        // generation until the directory is synced.
        self.file = None;
        self.resync = true;
        std::fs::rename(&tmp, &self.snapshot)?;
        fault::point("snapshot-renamed");
        sync_parent(&self.snapshot)?;
        fault::point("snapshot-synced");
        self.generation = generation;
        self.snapshot_len = len;
        // Only space is at stake now: the records left hold the old
        // generation, which replay skips.
        match std::fs::remove_file(&self.journal) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        sync_parent(&self.journal)?;
        fault::point("journal-removed");
        self.len = 0;
        self.resync = false;
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
        rec.extend_from_slice(format!("B {}\n", self.generation).as_bytes());
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
                .mode(FILE_MODE)
                .open(&self.journal)?;
            self.len = f.metadata()?.len();
            self.file = Some(f);
            sync_parent(&self.journal)?;
        }
        let Some(f) = self.file.as_mut() else {
            return Err(std::io::Error::other("journal not open"));
        };
        let before = self.len;
        if fault::hit("append-partial") {
            // A torn record on disk, as a crash in the middle of the write
            // leaves it.
            let _ = f
                .write_all(&rec[..rec.len() / 2])
                .and_then(|_| f.sync_data());
            fault::crash("append-partial");
        }
        if let Err(e) = f.write_all(&rec).and_then(|_| f.sync_data()) {
            // Cut a partial record off so later appends stay parseable.
            let _ = f.set_len(before);
            self.file = None;
            return Err(e);
        }
        fault::point("append-synced");
        self.len += rec.len() as u64;
        Ok(())
    }

    /// Reads the journal's complete records of the snapshot's generation
    /// (read the snapshot first), in order.
    pub fn replay(&mut self) -> std::io::Result<Vec<Vec<Replay>>> {
        let data = match std::fs::read(&self.journal) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let records = parse_records(&data);
        let total = records.len();
        let current: Vec<Vec<Replay>> = records
            .into_iter()
            .filter(|(g, _)| *g == self.generation)
            .map(|(_, r)| r)
            .collect();
        if current.len() != total {
            tracing::info!(
                skipped = total - current.len(),
                generation = self.generation,
                "journal records of an older snapshot ignored"
            );
        }
        Ok(current)
    }
}

/// The complete records, each with its generation.
fn parse_records(data: &[u8]) -> Vec<(u64, Vec<Replay>)> {
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
        let Some(first) = line(&mut pos) else {
            break;
        };
        let generation = match first.as_str() {
            // Written before generations: follows a snapshot without one.
            "B" => 0,
            l => match l.strip_prefix("B ").and_then(|n| n.parse().ok()) {
                Some(n) => n,
                None => break,
            },
        };
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
        records.push((generation, rec));
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
        let full = b"B 1\nU 5\n<a/>x\nD 3\nE\nB 1\nC\nU 4\n<b/>\n";
        let recs = parse_records(full);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].1.len(), 2);
        let two = b"B 2\nC\nE\nB 2\nR 3\n<r>\nE\n";
        assert_eq!(parse_records(two).len(), 2);
    }

    #[test]
    fn records_carry_their_generation() {
        // Records written before generations follow generation 0.
        let data = b"B\nD 1\nE\nB 3\nD 2\nE\nB x\nE\n";
        let recs = parse_records(data);
        let gens: Vec<u64> = recs.iter().map(|(g, _)| *g).collect();
        assert_eq!(gens, [0, 3]);
    }

    #[test]
    fn snapshot_generation_line() {
        assert_eq!(
            split_generation("<!-- l45-generation 7 -->\n<a/>"),
            (7, "<a/>")
        );
        assert_eq!(split_generation("<a/>"), (0, "<a/>"));
        assert_eq!(
            split_generation("<!-- l45-generation x -->\n<a/>"),
            (0, "<!-- l45-generation x -->\n<a/>")
        );
    }

    #[test]
    fn replay_skips_records_of_another_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("running.xml"),
            "<!-- l45-generation 2 -->\n<x/>",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("running.journal"),
            "B 1\nD 1\nE\nB 2\nD 2\nE\n",
        )
        .unwrap();
        let mut j = Journal::new(dir.path());
        assert_eq!(j.read_snapshot().unwrap().as_deref(), Some("<x/>"));
        let recs = j.replay().unwrap();
        assert_eq!(recs.len(), 1);
        assert!(matches!(recs[0][..], [Replay::Delete(2)]));
    }
}
