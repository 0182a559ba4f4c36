//! `images build`: a kind crate (a `no_std` crate against l45-modules' API
//! with crate-type `cdylib` and `[package.metadata.l45] kind = "…"`) built
//! with `cargo build --release`, checked (an ELF shared object exporting
//! `l45_kind_v1`), and written out as `KIND.so` with `KIND.so.manifest`
//! and `KIND.so.sig` (the Ed25519 signature over the manifest).

use std::path::{Path, PathBuf};
use std::process::Command;

use l45_images::{Manifest, SigningSecret, ABI_VERSION};

use super::{io_err, ImagesError, SignedImage};

/// The symbol a user-space kind library exports (the C ABI entry).
pub const KIND_SYMBOL: &str = "l45_kind_v1";

/// Which image to build.
#[derive(Debug, Clone)]
pub enum BuildTarget {
    /// A shared object for the user-space tap on this machine's
    /// architecture.
    Userspace,
    /// A kernel module against the kernel build tree at this path.
    Kernel(PathBuf),
}

/// What `Cargo.toml` says about the kind crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindCrate {
    /// The library's file stem (`[lib] name`, else the package name with
    /// `-` as `_`).
    pub lib_name: String,
    pub kind: String,
    pub cdylib: bool,
}

/// The value of a `key = "value"` line.
fn string_value(line: &str, key: &str) -> Option<String> {
    let rest = line.trim().strip_prefix(key)?.trim_start();
    let rest = rest.strip_prefix('=')?.trim();
    let rest = rest.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

/// Reads the few fields of `Cargo.toml` the build needs (package name,
/// `[lib] name` and `crate-type`, `[package.metadata.l45] kind`): plain
/// `key = "value"` lines in those tables, as `cargo new` writes them.
pub fn read_kind_crate(dir: &Path) -> Result<KindCrate, ImagesError> {
    let path = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let bad = |reason: &str| ImagesError::Crate {
        dir: dir.to_path_buf(),
        reason: reason.to_string(),
    };
    let mut table = String::new();
    let (mut package, mut lib, mut kind, mut cdylib) = (None, None, None, false);
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            table = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            continue;
        }
        match table.as_str() {
            "package" => {
                if let Some(v) = string_value(t, "name") {
                    package = Some(v);
                }
            }
            "lib" => {
                if let Some(v) = string_value(t, "name") {
                    lib = Some(v);
                }
                if t.starts_with("crate-type") && t.contains("\"cdylib\"") {
                    cdylib = true;
                }
            }
            "package.metadata.l45" => {
                if let Some(v) = string_value(t, "kind") {
                    kind = Some(v);
                }
            }
            _ => {}
        }
    }
    let package = package.ok_or_else(|| bad("Cargo.toml has no [package] name"))?;
    let kind = kind.ok_or_else(|| bad("Cargo.toml has no [package.metadata.l45] kind = \"…\""))?;
    if !l45_images::is_kind_name(&kind) {
        return Err(bad(&format!(
            "kind {kind:?} is not a kind name ([a-z][a-z0-9-]{{0,62}})"
        )));
    }
    if l45_modules::Kind::from_name(&kind).is_some() {
        return Err(bad(&format!(
            "kind {kind} is built in; choose another name"
        )));
    }
    Ok(KindCrate {
        lib_name: lib.unwrap_or_else(|| package.replace('-', "_")),
        kind,
        cdylib,
    })
}

/// The image target of an ELF shared object: `userspace-<arch>`, after
/// checking it is one and exports [`KIND_SYMBOL`].
pub fn check_library(path: &Path, data: &[u8]) -> Result<String, ImagesError> {
    use object::{Object as _, ObjectKind, ObjectSymbol as _};
    let bad = |reason: String| ImagesError::BadLibrary {
        path: path.to_path_buf(),
        reason,
    };
    let file = object::File::parse(data).map_err(|e| bad(format!("not an object file: {e}")))?;
    if file.format() != object::BinaryFormat::Elf || file.kind() != ObjectKind::Dynamic {
        return Err(bad("not an ELF shared object".into()));
    }
    // (an export: a defined, global symbol of the dynamic symbol table)
    let exported = file
        .dynamic_symbols()
        .any(|s| s.is_definition() && s.is_global() && s.name() == Ok(KIND_SYMBOL));
    if !exported {
        return Err(bad(format!(
            "does not export {KIND_SYMBOL} (the kind's C ABI entry)"
        )));
    }
    let arch = match file.architecture() {
        object::Architecture::X86_64 => "x86_64",
        object::Architecture::Aarch64 => "aarch64",
        object::Architecture::Riscv64 => "riscv64",
        object::Architecture::Arm => "arm",
        other => return Err(bad(format!("unsupported architecture {other:?}"))),
    };
    Ok(format!("userspace-{arch}"))
}

/// Signs `image` as `kind` for `target` and writes it into `out` as
/// `KIND.so` (or `.ko`), with its manifest and signature beside it.
pub fn sign_and_write(
    image: &[u8],
    kind: &str,
    target: &str,
    out: &Path,
    secret: &SigningSecret,
) -> Result<SignedImage, ImagesError> {
    let now_ms = l45_cib::Timestamp::now().0;
    let manifest = Manifest {
        kind: kind.to_string(),
        abi_version: ABI_VERSION,
        target: target.to_string(),
        sha256_hex: l45_images::sha256_hex(image),
        size: image.len() as u64,
        built_at: l45_netconf_proto::time::date_and_time(now_ms, false),
        signer: secret.key_id(),
    };
    let text = manifest.render();
    let signature = secret.sign(text.as_bytes());
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let ext = if target.starts_with("kernel-") {
        "ko"
    } else {
        "so"
    };
    let path = out.join(format!("{kind}.{ext}"));
    let (mpath, spath) = super::companion_paths(&path);
    std::fs::write(&path, image).map_err(io_err(&path))?;
    std::fs::write(&mpath, &text).map_err(io_err(&mpath))?;
    std::fs::write(&spath, signature).map_err(io_err(&spath))?;
    Ok(SignedImage {
        path,
        image: image.to_vec(),
        manifest_text: text,
        manifest,
        signature,
    })
}

/// Builds the kind crate in `dir` for `target` and writes the signed
/// image into `out`. Cargo's output goes to this process's stderr.
pub fn build(
    dir: &Path,
    out: &Path,
    target: &BuildTarget,
    secret: &SigningSecret,
) -> Result<SignedImage, ImagesError> {
    let krate = read_kind_crate(dir)?;
    if let BuildTarget::Kernel(tree) = target {
        return build_kernel(dir, tree, &krate, out, secret);
    }
    if !krate.cdylib {
        return Err(ImagesError::Crate {
            dir: dir.to_path_buf(),
            reason: "[lib] crate-type must include \"cdylib\" (a shared object the tap loads)"
                .into(),
        });
    }
    let target_dir = dir.join("target");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .stdout(std::process::Stdio::inherit())
        .status()
        .map_err(io_err(dir))?;
    if !status.success() {
        return Err(ImagesError::CargoFailed {
            dir: dir.to_path_buf(),
            status: status.to_string(),
        });
    }
    let lib = target_dir
        .join("release")
        .join(format!("lib{}.so", krate.lib_name));
    let data = std::fs::read(&lib).map_err(io_err(&lib))?;
    let image_target = check_library(&lib, &data)?;
    sign_and_write(&data, &krate.kind, &image_target, out, secret)
}

/// The kind as a kernel module for the kernel in `tree` (built by
/// `kmod/build-kernel.sh`): target `kernel-<its release>-<arch>`, what the
/// kernel tap of a device running that kernel loads.
fn build_kernel(
    dir: &Path,
    tree: &Path,
    krate: &KindCrate,
    out: &Path,
    secret: &SigningSecret,
) -> Result<SignedImage, ImagesError> {
    // The .ko lands beside the signed image's files, then is read back.
    let scratch = out.join(format!(".{}-kernel", krate.kind));
    std::fs::create_dir_all(&scratch).map_err(io_err(&scratch))?;
    let built = super::kernel_build::build(dir, tree, &scratch)
        .map_err(ImagesError::from)
        .and_then(|ko| std::fs::read(&ko).map_err(io_err(&ko)));
    let _ = std::fs::remove_dir_all(&scratch);
    let data = built?;
    let release_file = tree.join("include/config/kernel.release");
    let release = std::fs::read_to_string(&release_file).map_err(io_err(&release_file))?;
    let image_target = format!("kernel-{}-{}", release.trim(), std::env::consts::ARCH);
    sign_and_write(&data, &krate.kind, &image_target, out, secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_toml_fields_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"udp-xor\"\nversion = \"0.1.0\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[package.metadata.l45]\nkind = \"udp-xor-mask\"\n",
        )
        .expect("write");
        let k = read_kind_crate(dir.path()).expect("read");
        assert_eq!(
            k,
            KindCrate {
                lib_name: "udp_xor".into(),
                kind: "udp-xor-mask".into(),
                cdylib: true
            }
        );
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"x\"\n[package.metadata.l45]\nkind = \"dns-front-tag\"\n",
        )
        .expect("write");
        assert!(read_kind_crate(dir.path()).is_err());
    }

    #[test]
    fn a_library_without_the_symbol_is_refused() {
        // This test binary is an ELF executable, not a shared object.
        let exe = std::env::current_exe().expect("exe");
        let data = std::fs::read(&exe).expect("read");
        let err = check_library(&exe, &data).expect_err("refused");
        assert!(matches!(err, ImagesError::BadLibrary { .. }), "{err}");
    }
}
