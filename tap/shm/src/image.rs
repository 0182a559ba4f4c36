//! Module images in user space: how the agent publishes an image's bytes
//! to the tapped processes, and how any process (the agent, a tapped one)
//! loads an image it has checked.
//!
//! The agent stores a verified image owner-only in its state directory;
//! tapped processes run as other users and cannot read it. So the agent
//! publishes a copy next to the control file, with the control file's mode
//! (0644: everyone reads, only the agent's user writes), named by the
//! image's SHA-256 (`published_path`). The module table names the kind and
//! the digest (`ImageRef`). A process reads the copy only if the control
//! file's trust rule holds for it too (`trusted_control`: owner root, the
//! process's user or the directory's owner; not writable by group or
//! others), checks the digest of the file it opened and loads that same
//! open file (`load_published`: `dlopen` of `/proc/self/fd/N`): what runs
//! is what was checked, whoever renames files meanwhile, and the image's
//! pages are the page cache's, shared by the processes that load it. Bytes
//! already in memory (the agent's own copy) load from an anonymous memory
//! file (`load`: `memfd_create`, sealed). An image is never unloaded
//! (`dlclose`): a table or a socket's chain may still point into it.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use l45_modules::abi::{ExternalKind, KindV1, SYMBOL};
use sha2::{Digest, Sha256};

use crate::{euid, name_bytes, trusted_control, CONTROL_MODE};

/// Longest kind name of a module image (`l45_modules::abi::NAME_MAX`).
pub const IMAGE_NAME_LEN: usize = 64;

/// Which module image runs a slot's kind: the kind's name and the SHA-256
/// of the image the agent published next to the control file
/// (`published_path`). Plain bytes: processes copy it out.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ImageRef {
    /// NUL-padded.
    pub kind: [u8; IMAGE_NAME_LEN],
    pub sha256: [u8; 32],
}

impl Default for ImageRef {
    fn default() -> Self {
        ImageRef {
            kind: [0; IMAGE_NAME_LEN],
            sha256: [0; 32],
        }
    }
}

impl std::fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ImageRef({}, {})",
            String::from_utf8_lossy(name_bytes(&self.kind)),
            hex(&self.sha256)
        )
    }
}

impl ImageRef {
    /// `None` if the name is empty or longer than `IMAGE_NAME_LEN`.
    pub fn new(kind: &str, sha256: [u8; 32]) -> Option<ImageRef> {
        let mut r = ImageRef {
            sha256,
            ..ImageRef::default()
        };
        let b = kind.as_bytes();
        if b.is_empty() || b.len() > IMAGE_NAME_LEN || b.contains(&0) {
            return None;
        }
        r.kind[..b.len()].copy_from_slice(b);
        Some(r)
    }

    pub fn is_set(&self) -> bool {
        self.kind[0] != 0
    }

    /// The kind's name (empty if it is not UTF-8).
    pub fn kind_name(&self) -> &str {
        std::str::from_utf8(name_bytes(&self.kind)).unwrap_or("")
    }
}

/// Handles of the images this process loaded (as numbers: only compared).
static LOADED: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// Largest image read (a kind is a few tens of KB).
pub const IMAGE_MAX: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read image {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("image {path} is not trusted: {reason}")]
    Untrusted { path: String, reason: String },
    #[error("image of {0} bytes is larger than {IMAGE_MAX}")]
    TooLarge(u64),
    #[error("image digest is {found}, expected {expected}")]
    Digest { expected: String, found: String },
    #[error("cannot publish image {path}: {source}")]
    Publish {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot load image: {0}")]
    Load(String),
    #[error("image exports no {SYMBOL}")]
    NoTable,
    #[error("image kind table refused: {0}")]
    Table(l45_modules::abi::AbiError),
    #[error("image holds kind {found}, expected {expected}")]
    Name { expected: String, found: String },
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A SHA-256 from 64 hex digits.
pub fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let t = text.as_bytes();
    if t.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(t.chunks_exact(2)) {
        let s = std::str::from_utf8(pair).ok()?;
        *o = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Where the agent publishes the image of digest `sha256` for the control
/// file at `control`: beside it, `NAME.kind-HEX`.
pub fn published_path(control: &Path, sha256: &[u8; 32]) -> PathBuf {
    let mut name = control
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".kind-{}", hex(sha256)));
    control.with_file_name(name)
}

/// Opens the file at `path` if a process of this user may trust it (the
/// control file's rule): a regular file of at most `IMAGE_MAX` bytes; no
/// symlinks.
fn open_trusted(path: &Path) -> Result<std::fs::File, ImageError> {
    let shown = || path.display().to_string();
    let read_err = |source| ImageError::Read {
        path: shown(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.file_type().is_file() {
        return Err(ImageError::Untrusted {
            path: shown(),
            reason: "not a regular file".into(),
        });
    }
    let dir_owner = path
        .parent()
        .and_then(|d| std::fs::metadata(d).ok())
        .map(|m| m.uid());
    trusted_control(meta.uid(), meta.mode(), euid(), dir_owner).map_err(|reason| {
        ImageError::Untrusted {
            path: shown(),
            reason,
        }
    })?;
    if meta.len() > IMAGE_MAX {
        return Err(ImageError::TooLarge(meta.len()));
    }
    Ok(file)
}

/// Reads the file at `path` if a process of this user may trust it (the
/// control file's rule), at most `IMAGE_MAX` bytes; no symlinks.
pub fn read_trusted(path: &Path) -> Result<Vec<u8>, ImageError> {
    let mut file = open_trusted(path)?;
    let read_err = |source| ImageError::Read {
        path: path.display().to_string(),
        source,
    };
    let len = file.metadata().map_err(read_err)?.len();
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // Bounded even if the owner grows the file meanwhile.
    (&mut file)
        .take(IMAGE_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > IMAGE_MAX {
        return Err(ImageError::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Loads the image the agent published at `path` into this process, if
/// the process may trust the file (`read_trusted`'s rule) and its bytes
/// have digest `sha256`. The digest is taken over the opened file, a page
/// at a time, and the loader maps that same file through its descriptor
/// (`/proc/self/fd/N`): no copy of the image in this process, and the
/// pages are the page cache's, shared by every process that loads it.
/// What runs is what was checked: renames do not reach an open file, only
/// its owner could write it (the control file's rule), and the agent
/// never does (it publishes under a new name and renames).
pub fn load_published(
    path: &Path,
    sha256: &[u8; 32],
    kind: &str,
) -> Result<ExternalKind, ImageError> {
    let mut file = open_trusted(path)?;
    let mut hasher = Sha256::new();
    let mut page = [0u8; 4096];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut page) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(ImageError::Read {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        total += n as u64;
        if total > IMAGE_MAX {
            return Err(ImageError::TooLarge(total));
        }
        hasher.update(&page[..n]);
    }
    let found: [u8; 32] = hasher.finalize().into();
    if &found != sha256 {
        return Err(ImageError::Digest {
            expected: hex(sha256),
            found: hex(&found),
        });
    }
    load_fd(OwnedFd::from(file), kind)
}

/// Checks that `bytes` have digest `expected`.
pub fn verify(bytes: &[u8], expected: &[u8; 32]) -> Result<(), ImageError> {
    let found = sha256(bytes);
    if &found != expected {
        return Err(ImageError::Digest {
            expected: hex(expected),
            found: hex(&found),
        });
    }
    Ok(())
}

/// Publishes `bytes` (of digest `sha256`) for the tapped processes of the
/// control file at `control` (`published_path`), unless the agent's user
/// already published it. Written under a temporary name, created with the
/// control file's mode, then renamed into place: a reader sees the whole
/// image or none.
pub fn publish(control: &Path, bytes: &[u8], sha256: &[u8; 32]) -> Result<PathBuf, ImageError> {
    verify(bytes, sha256)?;
    let path = published_path(control, sha256);
    if let Ok(existing) = read_trusted(&path) {
        let ours = std::fs::symlink_metadata(&path)
            .is_ok_and(|m| m.uid() == euid() && m.mode() & 0o7777 == CONTROL_MODE);
        if ours && verify(&existing, sha256).is_ok() {
            return Ok(path);
        }
    }
    let shown = path.display().to_string();
    let err = |source| ImageError::Publish {
        path: shown.clone(),
        source,
    };
    let mut tmp = path.clone().into_os_string();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(CONTROL_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(err)?;
    let written = (|| {
        file.write_all(bytes)?;
        // A umask may have taken bits the tapped processes need to read it
        // (the file is ours and not yet visible under its name).
        if file.metadata()?.mode() & 0o7777 != CONTROL_MODE {
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(CONTROL_MODE))?;
        }
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(path)
}

/// Loads checked image bytes into this process and checks its kind table
/// (`ExternalKind::new`) and name. The image stays loaded for the rest of
/// the process's life.
pub fn load(bytes: &[u8], sha256: &[u8; 32], kind: &str) -> Result<ExternalKind, ImageError> {
    verify(bytes, sha256)?;
    load_fd(memfd(bytes)?, kind)
}

/// Loads the image open at `fd` (its bytes checked by the caller) and
/// checks its kind table and name; `fd` stays open for ever.
fn load_fd(fd: OwnedFd, kind: &str) -> Result<ExternalKind, ImageError> {
    let path = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| ImageError::Load(e.to_string()))?;
    // The loader knows an object by the name it was opened under: were the
    // descriptor closed, its number — and so the name — could come back
    // for another image, and dlopen would answer with this one. So the
    // descriptor stays open as long as the image stays loaded (for ever),
    // and a handle seen before is refused (a program that closed it).
    let mut handles = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: a NUL-terminated path. Loading runs the image's initialisers:
    // the bytes are the ones whose digest the agent verified (signature,
    // target) and this process checked just now.
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(ImageError::Load(dl_error()));
    }
    if handles.contains(&(handle as usize)) {
        return Err(ImageError::Load(
            "the loader answered with an image loaded before".into(),
        ));
    }
    handles.push(handle as usize);
    let _kept_open = fd.into_raw_fd();
    let symbol = CString::new(SYMBOL).map_err(|e| ImageError::Load(e.to_string()))?;
    // SAFETY: a live handle and a NUL-terminated name.
    let table = unsafe { libc::dlsym(handle, symbol.as_ptr()) }.cast::<KindV1>();
    if table.is_null() {
        return Err(ImageError::NoTable);
    }
    // SAFETY: the symbol of a loaded image that is never unloaded, so the
    // table, its name and code stay valid for the rest of the process; an
    // image built with l45-kind-sdk keeps the KindV1 contract (the agent
    // installs only images whose signature it verified).
    let external = unsafe { ExternalKind::new(table) }.map_err(ImageError::Table)?;
    if external.name() != kind {
        return Err(ImageError::Name {
            expected: kind.to_string(),
            found: external.name().to_string(),
        });
    }
    Ok(external)
}

/// An anonymous, sealed memory file holding `bytes`.
fn memfd(bytes: &[u8]) -> Result<OwnedFd, ImageError> {
    let name = c"l45-kind";
    // SAFETY: a NUL-terminated name and valid flags.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(ImageError::Load(format!(
            "memfd_create: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: a descriptor we just made and nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)
        .map_err(|e| ImageError::Load(format!("memfd write: {e}")))?;
    // Sealed: nothing can change the bytes between the check and the load.
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(ImageError::Load(format!(
            "memfd seals: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(OwnedFd::from(file))
}

fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated message owned by
    // the loader, valid until the next dl call on this thread.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        return "dlopen failed".into();
    }
    // SAFETY: as above.
    unsafe { std::ffi::CStr::from_ptr(e) }
        .to_string_lossy()
        .into_owned()
}
