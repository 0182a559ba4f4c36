//! Module images for the kernel tap: a kind that is not built in is a
//! kernel module, `l45_kind_<name>.ko` (built by `kmod/kind/build.sh` or
//! `l45-nco images build --kernel-tree`), which registers its kind with
//! l45.ko when it is loaded. Loading is `finit_module(2)` of the stored
//! file, unloading `delete_module(2)`: both need `CAP_SYS_MODULE`.
#![allow(unsafe_code)] // the two module syscalls

use std::ffi::CString;
use std::os::fd::AsRawFd;

use l45_tap_control::{KindImage, TapError};

/// The image target of the running kernel: `kernel-<release>-x86_64`
/// (`uname -r`), what an image built for it declares.
pub fn image_target() -> Result<String, TapError> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_err(|e| TapError::Backend(format!("kernel release: {e}")))?;
    Ok(format!(
        "kernel-{}-{}",
        release.trim(),
        std::env::consts::ARCH
    ))
}

/// The kernel module that carries kind `kind` (the kernel turns `-` into `_`
/// in module names; kmod/kind/build.sh names it so).
pub fn module_name(kind: &str) -> String {
    format!("l45_kind_{}", kind.replace('-', "_"))
}

/// Loads the kernel module of `image`; a module of that name already
/// loaded is not an error (the agent loads every stored image at start).
pub fn load(image: &KindImage) -> Result<(), TapError> {
    if !l45_modules::abi::valid_name(image.kind.as_bytes()) {
        return Err(TapError::Backend(format!(
            "{:?} is not a kind name",
            image.kind
        )));
    }
    let target = image_target()?;
    if image.target != target {
        return Err(TapError::Backend(format!(
            "image of kind {} is built for {}, this kernel is {target}",
            image.kind, image.target
        )));
    }
    let file = std::fs::File::open(&image.path)
        .map_err(|e| TapError::Backend(format!("opening image {}: {e}", image.path.display())))?;
    let params = c"";
    // SAFETY: a valid descriptor and a NUL-terminated parameter string,
    // both alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            0 as libc::c_int,
        )
    };
    if r == 0 {
        tracing::info!(kind = %image.kind, module = %module_name(&image.kind), "kind module loaded");
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EEXIST) => {
            tracing::debug!(kind = %image.kind, "kind module already loaded");
            Ok(())
        }
        Some(libc::EPERM) => Err(TapError::Backend(format!(
            "loading kind {}: the agent needs CAP_SYS_MODULE ({err})",
            image.kind
        ))),
        _ => Err(TapError::Backend(format!(
            "loading kind {} ({}): {err} (the kernel log says why)",
            image.kind,
            image.path.display()
        ))),
    }
}

/// Unloads the kernel module of `kind`; not loaded is not an error. Fails
/// (without waiting) while a configured module still uses the kind.
pub fn unload(kind: &str) -> Result<(), TapError> {
    let name = CString::new(module_name(kind))
        .map_err(|_| TapError::Backend(format!("{kind:?} is not a kind name")))?;
    // SAFETY: a NUL-terminated name alive for the call.
    let r = unsafe { libc::syscall(libc::SYS_delete_module, name.as_ptr(), libc::O_NONBLOCK) };
    if r == 0 {
        tracing::info!(kind, "kind module unloaded");
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENOENT) => Ok(()),
        Some(libc::EWOULDBLOCK) => Err(TapError::Backend(format!(
            "kind {kind} is still in use by a configured module"
        ))),
        _ => Err(TapError::Backend(format!("unloading kind {kind}: {err}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_target() {
        assert_eq!(module_name("udp-xor-mask"), "l45_kind_udp_xor_mask");
        let t = image_target().expect("/proc is mounted");
        assert!(t.starts_with("kernel-") && t.ends_with("-x86_64"), "{t}");
    }

    #[test]
    fn refuses_before_the_kernel() {
        let image = |kind: &str, target: &str| KindImage {
            kind: kind.into(),
            target: target.into(),
            sha256_hex: String::new(),
            path: "/nonexistent/l45_kind_x.ko".into(),
        };
        let e = load(&image("Bad Name", "kernel-1-x86_64")).expect_err("bad name");
        assert!(e.to_string().contains("not a kind name"), "{e}");
        let e = load(&image("udp-xor-test", "kernel-0.0.0-x86_64")).expect_err("other kernel");
        assert!(
            e.to_string().contains("built for kernel-0.0.0-x86_64"),
            "{e}"
        );
        let here = image_target().expect("target");
        let e = load(&image("udp-xor-test", &here)).expect_err("no file");
        assert!(e.to_string().contains("opening image"), "{e}");
    }
}
