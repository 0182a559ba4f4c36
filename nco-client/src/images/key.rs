//! The NCO's image signing key: 32 secret bytes (an Ed25519 seed) in a
//! file beside the CIB, created on first use owner-only (mode 0600 at
//! creation, never chmod'ed), and refused when it is not the NCO user's or
//! others may read or write it.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use l45_images::SigningSecret;

use super::ImagesError;

/// The signing key's file for the CIB at `cib`: `<cib>.image-key`.
pub fn key_path(cib: &Path) -> PathBuf {
    let mut name = cib.as_os_str().to_owned();
    name.push(".image-key");
    PathBuf::from(name)
}

/// The effective uid of this process (from `/proc`, without `unsafe`).
fn effective_uid() -> std::io::Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .ok_or_else(|| std::io::Error::other("no effective uid in /proc/self/status"))
}

/// Loads the key at `path`, creating it when there is none.
pub fn load_or_create(path: &Path) -> Result<SigningSecret, ImagesError> {
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let refuse = |reason: String| ImagesError::Key {
        path: path.to_path_buf(),
        reason,
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            let mut seed = [0u8; 32];
            crate::nco::random(&mut seed).map_err(|e| refuse(format!("no randomness: {e}")))?;
            if let Err(e) = f.write_all(&seed).and_then(|()| f.sync_all()) {
                // (no half-written key left for the next run to trip on)
                let _ = std::fs::remove_file(path);
                return Err(refuse(format!("cannot write the new key: {e}")));
            }
            let secret = SigningSecret::from_bytes(&seed);
            tracing::info!(path = %path.display(), key_id = %secret.key_id(), "image signing key created");
            return Ok(secret);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(refuse(format!("cannot create it: {e}"))),
    }
    let mut f = std::fs::File::open(path).map_err(|e| refuse(e.to_string()))?;
    let meta = f.metadata().map_err(|e| refuse(e.to_string()))?;
    let euid = effective_uid().map_err(|e| refuse(e.to_string()))?;
    if meta.uid() != euid {
        return Err(refuse(format!(
            "owned by uid {}, not by this user (uid {euid})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(refuse(format!(
            "mode {:04o} lets other users use the key; it must be 0600 (chmod 600 {})",
            meta.mode() & 0o7777,
            path.display()
        )));
    }
    let mut seed = [0u8; 32];
    let mut extra = [0u8; 1];
    f.read_exact(&mut seed)
        .map_err(|e| refuse(format!("not a 32-byte key: {e}")))?;
    if f.read(&mut extra).map_err(|e| refuse(e.to_string()))? != 0 {
        return Err(refuse("longer than 32 bytes: not a key file".into()));
    }
    Ok(SigningSecret::from_bytes(&seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_owner_only_then_loaded_and_refused_when_open() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = key_path(&dir.path().join("cib.sqlite"));
        let first = load_or_create(&path).expect("created");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create(&path).expect("loaded");
        assert_eq!(first.public_key(), again.public_key());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = load_or_create(&path).err().expect("refused");
        assert!(err.to_string().contains("mode 0644"), "{err}");
    }
}
