//! Kinds from module images in a tapped process: the module table names an
//! image by kind and SHA-256 (`l45_tap_shm::ImageRef`); the process reads
//! the copy the agent published next to the control file — only if it may
//! trust it as it trusts the control file — checks the digest of the bytes
//! it read and loads exactly those (`l45_tap_shm::image::load`). A module
//! whose image cannot be loaded is rejected like one of an unknown kind:
//! its sockets in this process stay uncustomized (nothing is lost), and the
//! process adds one to the module's `errors` counter (`process::config`).

use std::sync::Mutex;

use l45_modules::abi::ExternalKind;
use l45_modules::Kind;
use l45_tap_shm::{image, ImageRef};

/// Images loaded into this process, by digest (never unloaded).
static LOADED: Mutex<Vec<([u8; 32], ExternalKind)>> = Mutex::new(Vec::new());

/// The kind of `image`, loading it on first use; `None` if it cannot be.
pub fn kind(image: &ImageRef) -> Option<Kind> {
    let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    let name = image.kind_name();
    if let Some((_, k)) = loaded.iter().find(|(sha, _)| *sha == image.sha256) {
        return (k.name() == name).then_some(Kind::External(*k));
    }
    let control = l45_tap_shm::control_path_of_this_process();
    let path = image::published_path(&control, &image.sha256);
    let k = image::read_trusted(&path)
        .and_then(|bytes| image::load(&bytes, &image.sha256, name))
        .ok()?;
    loaded.push((image.sha256, k));
    Some(Kind::External(k))
}
