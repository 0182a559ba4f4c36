//! Kinds from module images in a tapped process: the module table names an
//! image by kind and SHA-256 (`l45_tap_shm::ImageRef`). Parsing the table
//! loads nothing (`loaded` only looks); the first time a socket's chain
//! would include such a module (`process::resolve`), outside any signal
//! handler, the process opens the copy the agent published next to the
//! control file — only if it may trust it as it trusts the control file —
//! checks the digest of the open file and loads that same file
//! (`l45_tap_shm::image::load_published`). A process whose sockets never
//! meet the kind maps nothing of it. A module whose image cannot be loaded is
//! rejected like one of an unknown kind: its sockets in this process stay
//! uncustomized (nothing is lost), and the process adds one to the
//! module's `errors` counter.

use std::sync::Mutex;

use l45_modules::abi::ExternalKind;
use l45_modules::Kind;
use l45_tap_shm::{image, ImageRef};

/// Images loaded into this process, by digest (never unloaded).
static LOADED: Mutex<Vec<([u8; 32], ExternalKind)>> = Mutex::new(Vec::new());

/// The kind of `image` if this process has loaded it already (no I/O).
pub fn loaded(image: &ImageRef) -> Option<Kind> {
    if let Some(k) = twin::kind(image) {
        return Some(k);
    }
    let loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    let (_, k) = loaded.iter().find(|(sha, _)| *sha == image.sha256)?;
    (k.name() == image.kind_name()).then_some(Kind::External(*k))
}

/// The kind of `image`, loading it on first use; `None` if it cannot be.
/// Reads a file, allocates and calls `dlopen`: never from a signal
/// handler (`process::may_load`).
pub fn kind(image: &ImageRef) -> Option<Kind> {
    if let Some(k) = twin::kind(image) {
        return Some(k);
    }
    let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    let name = image.kind_name();
    if let Some((_, k)) = loaded.iter().find(|(sha, _)| *sha == image.sha256) {
        return (k.name() == name).then_some(Kind::External(*k));
    }
    let control = l45_tap_shm::control_path_of_this_process();
    let path = image::published_path(&control, &image.sha256);
    let k = image::load_published(&path, &image.sha256, name).ok()?;
    loaded.push((image.sha256, k));
    Some(Kind::External(k))
}

/// The example kind's own source, compiled into this library for the
/// benchmark (its own crate cannot be a dependency: it is a workspace of
/// its own, as an image must be).
#[cfg(feature = "bench-builtin-xor")]
#[path = "../../../modules/examples/udp-xor-mask/src/lib.rs"]
#[allow(unused_attributes, clippy::all)]
mod udp_xor_mask;

/// The benchmark's "same code built in" (`tools/bench_image.py`): with the
/// feature `bench-builtin-xor` — off by default, never in a package — the
/// example kind `udp-xor-mask` is compiled into this library and every
/// module naming that kind uses its table directly: no file, no digest,
/// no `dlopen`. Without the feature there is no such kind here.
#[cfg(feature = "bench-builtin-xor")]
mod twin {
    use super::{ExternalKind, ImageRef, Kind};

    pub fn kind(image: &ImageRef) -> Option<Kind> {
        if image.kind_name() != "udp-xor-mask" {
            return None;
        }
        // The same checks as a loaded image's table (`ExternalKind::new`).
        let k: ExternalKind = super::udp_xor_mask::KIND_TABLE.check().ok()?;
        Some(Kind::External(k))
    }
}

#[cfg(not(feature = "bench-builtin-xor"))]
mod twin {
    use super::{ImageRef, Kind};

    #[inline]
    pub fn kind(_: &ImageRef) -> Option<Kind> {
        None
    }
}
