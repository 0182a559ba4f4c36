//! The agent's datastores (RFC 6241 running, candidate, startup).
//!
//! A datastore ([`Ds`]) is a small libyang tree for everything but the
//! module list (NACM) plus a `BTreeMap` from module id to the entry's
//! canonical XML ([`entry`]), ≈100 bytes instead of ≈6 KB of libyang
//! nodes. Entries are immutable and shared (`Arc<str>`) between running,
//! candidate, startup and backups. The entry layout comes from the schema
//! ([`schema`]); running is made durable by [`journal`].

pub mod confirmed;
pub mod entry;
pub mod fault;
pub mod journal;
pub mod schema;

use std::path::{Path, PathBuf};

use yang3::context::Context;
use yang3::data::{Data, DataPrinterFlags, DataTree};

pub use entry::{entries_of, entry_of, ids_in, module_path, Entry, ModuleMap, Slots};
pub use schema::{schema, ListSchema};

/// The data path of the module list's container.
pub const CUSTOMIZATIONS: &str = "/layer45-customization:customizations";
pub(crate) const L45: &str = l45_yang::L45_NAMESPACE;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("schema node {0} cannot be held by the native store")]
    UnsupportedSchema(String),
    #[error("stored entry is not valid XML: {0}")]
    BadEntry(String),
}

pub use l45_netconf_proto::params::Datastore;

/// The three datastores and the candidate's state.
pub struct Stores {
    pub running: Ds,
    /// `None`: candidate is running (shared, nothing copied). Becomes its
    /// own datastore (entries still shared) on its first edit.
    pub candidate: Option<Ds>,
    pub startup: Ds,
    /// Candidate differs from running by edits not yet committed.
    pub candidate_dirty: bool,
    /// An edit with test-option `set` put unvalidated data in candidate.
    pub candidate_unvalidated: bool,
}

impl Stores {
    pub fn get(&self, ds: Datastore) -> &Ds {
        match ds {
            Datastore::Running => &self.running,
            Datastore::Candidate => self.candidate.as_ref().unwrap_or(&self.running),
            Datastore::Startup => &self.startup,
        }
    }

    /// Candidate becomes running again (commit, discard, unlock).
    pub fn reset_candidate(&mut self) {
        self.candidate = None;
        self.candidate_dirty = false;
        self.candidate_unvalidated = false;
    }

    /// Candidate as its own datastore, ready for an edit.
    pub fn candidate_mut(&mut self) -> Result<&mut Ds, yang3::Error> {
        if self.candidate.is_none() {
            self.candidate = Some(self.running.share()?);
        }
        match self.candidate.as_mut() {
            Some(c) => Ok(c),
            None => unreachable!("candidate was just set"),
        }
    }
}

/// One datastore: the libyang tree of everything but the module list, and
/// the module entries.
pub struct Ds {
    pub rest: DataTree<'static>,
    pub modules: ModuleMap,
}

impl Ds {
    pub fn new(ctx: &'static Context) -> Ds {
        Ds {
            rest: DataTree::new(ctx),
            modules: ModuleMap::new(),
        }
    }

    /// A copy sharing every entry (O(n) pointer copies, no entry copies).
    pub fn share(&self) -> Result<Ds, yang3::Error> {
        Ok(Ds {
            rest: self.rest.duplicate()?,
            modules: self.modules.clone(),
        })
    }

    /// `<customizations>…</customizations>` of `modules`, or nothing when
    /// there is no entry (libyang prints no empty non-presence container).
    pub fn write_customizations(
        modules: &ModuleMap,
        with_keys: bool,
        out: &mut impl std::fmt::Write,
    ) -> std::fmt::Result {
        if modules.is_empty() {
            return Ok(());
        }
        write!(out, "<customizations xmlns=\"{L45}\">")?;
        for e in modules.values() {
            if !with_keys && Slots::has_security(e) {
                if let Ok(schema) = schema() {
                    if let Ok(s) = Slots::parse(schema, e) {
                        out.write_str(&s.to_xml(schema, false))?;
                        continue;
                    }
                }
            }
            out.write_str(e)?;
        }
        out.write_str("</customizations>")
    }

    /// The datastore as libyang XML (explicit mode), as running.xml holds it.
    pub fn to_xml(&self) -> Result<String, yang3::Error> {
        let mut text = l45_yang::print_xml(
            &self.rest,
            DataPrinterFlags::WD_EXPLICIT | DataPrinterFlags::SHRINK,
        )?;
        text.reserve(self.modules.values().map(|e| e.len()).sum::<usize>() + 128);
        let _ = Self::write_customizations(&self.modules, true, &mut text);
        Ok(text)
    }

    /// The whole datastore as one validated libyang tree (for the general
    /// paths: filters, `get` with state, `validate`).
    pub fn to_tree(&self, ctx: &'static Context) -> Result<DataTree<'static>, yang3::Error> {
        self.tree_of(ctx, self.modules.values())
    }

    /// The rest tree plus the given entries, validated.
    pub fn tree_of<'a>(
        &self,
        ctx: &'static Context,
        entries: impl Iterator<Item = &'a Entry>,
    ) -> Result<DataTree<'static>, yang3::Error> {
        let mut entries = entries.peekable();
        if entries.peek().is_none() {
            let mut tree = self.rest.duplicate()?;
            tree.validate(yang3::data::DataValidationFlags::NO_STATE)?;
            return Ok(tree);
        }
        // One parse of the rest (as stored, explicit mode) and the entries:
        // merging parsed entries into a copy of the rest would copy them
        // all once more.
        let mut xml = l45_yang::print_xml(
            &self.rest,
            DataPrinterFlags::WD_EXPLICIT | DataPrinterFlags::SHRINK,
        )?;
        xml.push_str("<customizations xmlns=\"");
        xml.push_str(L45);
        xml.push_str("\">");
        for e in entries {
            xml.push_str(e);
        }
        xml.push_str("</customizations>");
        let mut tree = DataTree::parse_string(
            ctx,
            &xml,
            yang3::data::DataFormat::XML,
            yang3::data::DataParserFlags::STRICT
                | yang3::data::DataParserFlags::NO_STATE
                | yang3::data::DataParserFlags::NO_VALIDATION,
            yang3::data::DataValidationFlags::empty(),
        )?;
        tree.validate(yang3::data::DataValidationFlags::NO_STATE)?;
        Ok(tree)
    }

    /// Splits a libyang tree into the native form.
    pub fn from_tree(tree: &DataTree<'static>) -> Result<Ds, yang3::Error> {
        let mut rest = tree.duplicate()?;
        let modules = entries_of(tree)?;
        if rest.find_path(CUSTOMIZATIONS).is_ok() {
            rest.remove(CUSTOMIZATIONS)?;
        }
        Ok(Ds { rest, modules })
    }
}

/// Mode of every file the agent writes in its state directory: they hold
/// module keys and host keys.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the state directory (and of any parent the agent creates).
pub const DIR_MODE: u32 = 0o700;

/// A state directory the agent will not use.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("state directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state directory {path} is not a directory")]
    NotDirectory { path: PathBuf },
    #[error(
        "state directory {path} has mode {mode:04o}: other users could replace the datastores \
         and keys in it; make it 0700 (chmod 700 {path})"
    )]
    OpenToOthers { path: PathBuf, mode: u32 },
    #[error(
        "state directory {path} is owned by uid {owner}, not by the agent's user (uid {euid})"
    )]
    NotOwned {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
}

/// The effective uid of this process (from `/proc`, so no `unsafe` call is
/// needed for it).
pub fn effective_uid() -> std::io::Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .ok_or_else(|| std::io::Error::other("no effective uid in /proc/self/status"))
}

/// Creates the state directory (and missing parents) with mode 0700, or
/// checks an existing one: it must be a directory owned by the agent's
/// user that group and others cannot write. An existing directory is never
/// chmod'ed: a writable one is refused (so the operator sees it), one that
/// others may only list is accepted with a warning.
pub fn prepare_state_dir(path: &Path) -> Result<(), StateDirError> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    let io = |source| StateDirError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .map_err(io)?;
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_dir() {
        return Err(StateDirError::NotDirectory {
            path: path.to_path_buf(),
        });
    }
    let euid = effective_uid().map_err(io)?;
    if meta.uid() != euid {
        return Err(StateDirError::NotOwned {
            path: path.to_path_buf(),
            owner: meta.uid(),
            euid,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(StateDirError::OpenToOthers {
            path: path.to_path_buf(),
            mode,
        });
    }
    if mode & 0o055 != 0 {
        // Not refused: the files in it are 0600, so others see names only.
        tracing::warn!(
            path = %path.display(),
            mode = format!("{mode:04o}"),
            "state directory lets other users list it; 0700 is recommended"
        );
    }
    Ok(())
}

/// Creates `path` anew with mode 0600 for writing. A leftover file of that
/// name (a temporary file of a crashed write, perhaps with another mode) is
/// removed first, so the mode is always the one given at creation.
pub fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Syncs the directory holding `path`, so a rename or creation in it is
/// durable.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Writes a file whole or not at all, mode 0600: a temporary file beside
/// it, synced, renamed over it, the directory synced.
pub fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    {
        let mut f = create_private(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_parent(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{ctx, L45, RICH};

    #[test]
    fn to_tree_round_trips() {
        let src =
            format!("<customizations xmlns=\"{L45}\" xmlns:l45=\"{L45}\">{RICH}</customizations>");
        let ds = Ds::from_tree(&crate::testutil::tree(&src)).unwrap();
        let back = ds.to_tree(ctx()).unwrap();
        assert_eq!(
            l45_yang::print_xml(&back, DataPrinterFlags::WD_ALL).unwrap(),
            l45_yang::print_xml(&crate::testutil::tree(&src), DataPrinterFlags::WD_ALL).unwrap()
        );
    }
}
