//! Kinds from module images (`TapControl::load_kind`): the agent loads a
//! stored image into its own process — so `prepare` parses a module's
//! parameters with the kind's own parser and refuses bad ones at commit,
//! like a built-in kind's — and publishes a copy of its bytes next to the
//! control file, where tapped processes load it from
//! (`l45_tap_shm::image`).

use std::collections::HashMap;
use std::path::Path;

use l45_modules::abi::ExternalKind;
use l45_tap_control::{KindImage, TapError};
use l45_tap_shm::image;

use crate::UserspaceTap;

/// The image target this build loads: user-space shared objects of this
/// machine's architecture.
pub const IMAGE_TARGET: Option<&str> = if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
    Some("userspace-x86_64")
} else if cfg!(all(target_os = "linux", target_arch = "aarch64")) {
    Some("userspace-aarch64")
} else {
    None
};

/// A kind loaded from a module image (never unloaded from the process).
#[derive(Debug, Clone, Copy)]
pub struct LoadedKind {
    pub kind: ExternalKind,
    pub sha256: [u8; 32],
}

fn refused(kind: &str, why: impl std::fmt::Display) -> TapError {
    TapError::Backend(format!("module image of kind {kind}: {why}"))
}

impl UserspaceTap {
    pub(crate) fn kinds(&self) -> std::sync::MutexGuard<'_, HashMap<String, LoadedKind>> {
        self.kinds.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn load_image(&self, img: &KindImage) -> Result<(), TapError> {
        let kind = img.kind.as_str();
        if IMAGE_TARGET != Some(img.target.as_str()) {
            return Err(refused(
                kind,
                format_args!(
                    "built for {}, this tap loads {}",
                    img.target,
                    IMAGE_TARGET.unwrap_or("no images")
                ),
            ));
        }
        let sha256 = image::parse_sha256(&img.sha256_hex)
            .ok_or_else(|| refused(kind, "digest is not 64 hex digits"))?;
        let control = Path::new(self.shm.path());
        if let Some(loaded) = self.kinds().get(kind) {
            if loaded.sha256 != sha256 {
                return Err(refused(
                    kind,
                    "another image of this kind is loaded; unload it first",
                ));
            }
        }
        // Read once: the digest is checked on, and the library loaded from,
        // these bytes (`image::load`), whatever happens to the file.
        let bytes = image::read_trusted(&img.path).map_err(|e| refused(kind, e))?;
        let mut kinds = self.kinds();
        let loaded = match kinds.get(kind) {
            Some(l) if l.sha256 == sha256 => *l,
            _ => LoadedKind {
                kind: image::load(&bytes, &sha256, kind).map_err(|e| refused(kind, e))?,
                sha256,
            },
        };
        // Published again on every load: a restarted agent's runtime
        // directory may have been emptied.
        let published = image::publish(control, &bytes, &sha256).map_err(|e| refused(kind, e))?;
        kinds.insert(kind.to_string(), loaded);
        tracing::info!(
            kind,
            sha256 = img.sha256_hex,
            published = %published.display(),
            "module image loaded"
        );
        Ok(())
    }

    pub(crate) fn unload_image(&self, kind: &str) -> Result<(), TapError> {
        let inner = self.lock();
        let in_use = inner
            .modules
            .values()
            .chain(inner.prepared.iter().flat_map(|p| p.modules.values()))
            .find(|(_, m)| m.kind == kind);
        if let Some((_, m)) = in_use {
            return Err(TapError::Refused {
                id: m.id,
                reason: format!("module {} uses kind {kind}", m.name),
            });
        }
        let Some(loaded) = self.kinds().remove(kind) else {
            return Ok(());
        };
        // The code stays mapped (a process may still run it on a socket it
        // set up before); only the name goes, and the published copy, which
        // no table names any more.
        let path = image::published_path(Path::new(self.shm.path()), &loaded.sha256);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(kind, path = %path.display(), error = %e, "published image not removed");
            }
        }
        tracing::info!(kind, "module image unloaded");
        Ok(())
    }
}
