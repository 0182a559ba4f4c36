//! Module images on the device: the store of verified images under
//! `--state-dir/images/`, one owner-only directory per image named by its
//! SHA-256 (`image`, `manifest`, `signature`, and `meta` written last, so
//! an image without `meta` was never fully installed and is ignored).
//!
//! `install-module` checks everything before it writes anything
//! ([`l45_images::verify`]); at start-up every stored image is read back,
//! its digest checked again and loaded into the tap before the stored
//! configuration is committed, so modules using it come back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use l45_images::{ImageError, Manifest, TrustedSigner};
use l45_tap_control::{KindImage, TapControl, TapError};

use crate::datastore::{write_atomically, DIR_MODE};
use crate::time::{parse_date_and_time, rfc3339};

/// Default of `/images/max-image-size`.
pub const DEFAULT_MAX_IMAGE_SIZE: u64 = 16 * 1024 * 1024;

/// One stored, verified image.
#[derive(Debug, Clone)]
pub struct StoredImage {
    pub manifest: Manifest,
    /// Name of the trusted signer that vouched for it at install.
    pub signer: String,
    pub installed_at: SystemTime,
    pub path: PathBuf,
}

impl StoredImage {
    pub fn kind_image(&self) -> KindImage {
        KindImage {
            kind: self.manifest.kind.clone(),
            target: self.manifest.target.clone(),
            sha256_hex: self.manifest.sha256_hex.clone(),
            path: self.path.clone(),
        }
    }
}

/// Why an install or a removal was refused.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Verify(#[from] ImageError),
    #[error("kind {0} is built in; an image cannot replace it")]
    BuiltInKind(String),
    #[error("kind {kind} is already installed from image {sha256}; remove that image first")]
    KindTaken { kind: String, sha256: String },
    #[error("no installed image has SHA-256 {0}")]
    NoSuchImage(String),
    #[error("image {sha256} (kind {kind}) is used by module(s) {modules}")]
    InUse {
        sha256: String,
        kind: String,
        modules: String,
    },
    #[error("could not store image {sha256}: {source}")]
    Store {
        sha256: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tap(#[from] TapError),
}

/// The verified images of this device, by SHA-256.
#[derive(Debug)]
pub struct ImageStore {
    dir: PathBuf,
    images: BTreeMap<String, StoredImage>,
}

fn private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn meta_text(signer: &str, installed_at: SystemTime) -> String {
    format!("signer {signer}\ninstalled-at {}\n", rfc3339(installed_at))
}

impl ImageStore {
    /// Opens `state_dir/images` (created 0700 by the first install) and
    /// loads every stored image into `tap` after checking its digest
    /// again. An image that fails the check is left on disk, logged and
    /// not loaded.
    pub fn open(state_dir: &Path, tap: &dyn TapControl) -> std::io::Result<ImageStore> {
        let dir = state_dir.join("images");
        let mut store = ImageStore {
            dir,
            images: BTreeMap::new(),
        };
        let entries = match std::fs::read_dir(&store.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(store),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            match store.read_back(&entry.path(), &name) {
                Ok(img) => {
                    let kind_image = img.kind_image();
                    match tap.load_kind(&kind_image) {
                        Ok(()) => {
                            tracing::info!(
                                sha256 = %name,
                                kind = %img.manifest.kind,
                                "stored module image loaded"
                            );
                            store.images.insert(name, img);
                        }
                        Err(error) => tracing::error!(
                            sha256 = %name,
                            kind = %img.manifest.kind,
                            %error,
                            "the tap refused a stored module image; not loaded"
                        ),
                    }
                }
                Err(reason) => tracing::error!(
                    path = %entry.path().display(),
                    %reason,
                    "stored module image skipped"
                ),
            }
        }
        Ok(store)
    }

    /// One stored image, its digest checked against its name and manifest.
    fn read_back(&self, dir: &Path, name: &str) -> Result<StoredImage, String> {
        let meta = match std::fs::read_to_string(dir.join("meta")) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err("incomplete install (no meta file)".into())
            }
            Err(e) => return Err(e.to_string()),
        };
        let manifest_bytes = std::fs::read(dir.join("manifest")).map_err(|e| e.to_string())?;
        let manifest = Manifest::parse(&manifest_bytes).map_err(|e| e.to_string())?;
        let path = dir.join("image");
        let image = std::fs::read(&path).map_err(|e| e.to_string())?;
        let digest = l45_images::sha256_hex(&image);
        if digest != name || digest != manifest.sha256_hex {
            return Err(format!(
                "image digest {digest} does not match its name or manifest"
            ));
        }
        let mut signer = String::new();
        let mut installed_at = SystemTime::UNIX_EPOCH;
        for line in meta.lines() {
            if let Some(v) = line.strip_prefix("signer ") {
                signer = v.to_string();
            } else if let Some(v) = line.strip_prefix("installed-at ") {
                installed_at = parse_date_and_time(v).unwrap_or(SystemTime::UNIX_EPOCH);
            }
        }
        Ok(StoredImage {
            manifest,
            signer,
            installed_at,
            path,
        })
    }

    pub fn images(&self) -> impl Iterator<Item = &StoredImage> {
        self.images.values()
    }

    /// The installed image providing `kind`.
    pub fn by_kind(&self, kind: &str) -> Option<&StoredImage> {
        self.images.values().find(|i| i.manifest.kind == kind)
    }

    pub fn get(&self, sha256: &str) -> Option<&StoredImage> {
        self.images.get(sha256)
    }

    /// Verifies, stores (owner-only, each file written to a temporary
    /// file and renamed; `meta` last) and loads an image. Nothing is
    /// written before every check passed; a tap refusal removes what was
    /// written. Installing an installed image again returns it.
    pub fn install(
        &mut self,
        tap: &dyn TapControl,
        image: &[u8],
        manifest: &[u8],
        signature: &[u8],
        trusted: &[TrustedSigner],
        size_limit: u64,
    ) -> Result<StoredImage, InstallError> {
        let target = tap.image_target();
        let (m, signer) = l45_images::verify(
            image,
            manifest,
            signature,
            trusted,
            size_limit,
            target.as_deref(),
        )?;
        if l45_modules::Kind::from_name(&m.kind).is_some() || m.kind == "installed-binary" {
            return Err(InstallError::BuiltInKind(m.kind));
        }
        if let Some(same) = self.images.get(&m.sha256_hex) {
            return Ok(same.clone());
        }
        if let Some(other) = self.by_kind(&m.kind) {
            return Err(InstallError::KindTaken {
                kind: m.kind,
                sha256: other.manifest.sha256_hex.clone(),
            });
        }
        let sha = m.sha256_hex.clone();
        let dir = self.dir.join(&sha);
        let stored = StoredImage {
            path: dir.join("image"),
            manifest: m,
            signer,
            installed_at: SystemTime::now(),
        };
        let store_err = |source| InstallError::Store {
            sha256: sha.clone(),
            source,
        };
        let write = || -> std::io::Result<()> {
            private_dir(&self.dir)?;
            private_dir(&dir)?;
            write_atomically(&dir.join("image"), image)?;
            write_atomically(&dir.join("manifest"), manifest)?;
            write_atomically(&dir.join("signature"), signature)?;
            write_atomically(
                &dir.join("meta"),
                meta_text(&stored.signer, stored.installed_at).as_bytes(),
            )
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(store_err(e));
        }
        if let Err(e) = tap.load_kind(&stored.kind_image()) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(InstallError::Tap(e));
        }
        tracing::info!(
            sha256 = %sha,
            kind = %stored.manifest.kind,
            signer = %stored.signer,
            size = stored.manifest.size,
            "module image installed"
        );
        self.images.insert(sha, stored.clone());
        Ok(stored)
    }

    /// Unloads and deletes an image; the caller checked nothing uses it.
    pub fn remove(&mut self, tap: &dyn TapControl, sha256: &str) -> Result<(), InstallError> {
        let Some(img) = self.images.get(sha256) else {
            return Err(InstallError::NoSuchImage(sha256.to_string()));
        };
        tap.unload_kind(&img.manifest.kind)?;
        let dir = self.dir.join(sha256);
        // `meta` first: a crash half-way leaves an incomplete install,
        // which start-up ignores.
        let removed =
            std::fs::remove_file(dir.join("meta")).and_then(|()| std::fs::remove_dir_all(&dir));
        if let Err(source) = removed {
            return Err(InstallError::Store {
                sha256: sha256.to_string(),
                source,
            });
        }
        tracing::info!(sha256, kind = %img.manifest.kind, "module image removed");
        self.images.remove(sha256);
        Ok(())
    }
}

/// The `arguments` leaf of an installed module (`a=1;b=x`) as a map.
pub fn parse_arguments(text: &str) -> BTreeMap<String, String> {
    text.split(';')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use l45_images::{SigningSecret, ABI_VERSION};
    use l45_tap_control::RecordingTap;

    fn signed(image: &[u8], kind: &str, target: &str) -> (Vec<u8>, [u8; 64], SigningSecret) {
        let secret = SigningSecret::from_bytes(&[3; 32]);
        let m = Manifest {
            kind: kind.into(),
            abi_version: ABI_VERSION,
            target: target.into(),
            sha256_hex: l45_images::sha256_hex(image),
            size: image.len() as u64,
            built_at: "2026-12-06T03:40:00Z".into(),
            signer: secret.key_id(),
        };
        let text = m.render().into_bytes();
        let sig = secret.sign(&text);
        (text, sig, secret)
    }

    #[test]
    fn install_stores_owner_only_and_survives_a_reopen() {
        use std::os::unix::fs::PermissionsExt as _;
        let state = tempfile::tempdir().expect("tempdir");
        let tap = RecordingTap::new(None, true);
        let target = tap.image_target().expect("target");
        let (text, sig, secret) = signed(b"\x7fELF image", "udp-xor-mask", &target);
        let trusted = [TrustedSigner {
            name: "nco".into(),
            public_key: secret.public_key(),
        }];
        let mut store = ImageStore::open(state.path(), &tap).expect("open");
        let img = store
            .install(&tap, b"\x7fELF image", &text, &sig, &trusted, 1024)
            .expect("install");
        let mode = std::fs::metadata(&img.path)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(img.path.parent().expect("dir"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700);
        let tap2 = RecordingTap::new(None, true);
        let again = ImageStore::open(state.path(), &tap2).expect("reopen");
        assert_eq!(again.images().count(), 1);
        assert_eq!(tap2.loaded_kinds(), vec!["udp-xor-mask".to_string()]);
        // A stored image whose bytes changed is not loaded again.
        std::fs::write(&img.path, b"tampered").expect("tamper");
        let tap3 = RecordingTap::new(None, true);
        let third = ImageStore::open(state.path(), &tap3).expect("reopen");
        assert_eq!(third.images().count(), 0);
        assert!(tap3.loaded_kinds().is_empty());
    }

    #[test]
    fn a_refused_image_writes_nothing() {
        let state = tempfile::tempdir().expect("tempdir");
        let tap = RecordingTap::new(None, true);
        let (text, sig, secret) = signed(b"image", "udp-xor-mask", "kernel-1.0-x86_64");
        let trusted = [TrustedSigner {
            name: "nco".into(),
            public_key: secret.public_key(),
        }];
        let mut store = ImageStore::open(state.path(), &tap).expect("open");
        let e = store
            .install(&tap, b"image", &text, &sig, &trusted, 1024)
            .expect_err("wrong target");
        assert!(matches!(
            e,
            InstallError::Verify(ImageError::WrongTarget { .. })
        ));
        assert!(!state.path().join("images").exists());
        let (text, sig, _) = signed(b"image", "dns-front-tag", &tap.image_target().expect("t"));
        assert!(matches!(
            store.install(&tap, b"image", &text, &sig, &trusted, 1024),
            Err(InstallError::BuiltInKind(_))
        ));
    }

    #[test]
    fn arguments_split_into_pairs() {
        let m = parse_arguments("mask=5a;offset=0");
        assert_eq!(m.get("mask").map(String::as_str), Some("5a"));
        assert_eq!(m.len(), 2);
        assert!(parse_arguments("").is_empty());
    }
}
