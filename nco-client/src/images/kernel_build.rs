//! Builds a kind crate into a kernel module for the kernel tap,
//! `l45_kind_<name>.ko`, against a kernel tree built by
//! `kmod/build-kernel.sh` (`l45-nco images build DIR --kernel-tree KDIR`).
//! The same build as `kmod/kind/build.sh` (which documents the layout): a
//! scratch kbuild directory where the kind's `src/lib.rs` is the root of one
//! kernel crate, with the modules crate (the ABI the kernel tap speaks,
//! embedded in this binary) and, if the kind uses it, the SDK as modules
//! of it, plus `glue.c` registering the kind's table with l45.ko; then
//! `make -C KDIR M=…` as `kmod/Makefile` runs it.
//!
//! The kind's name is the crate's package name without a `l45-kind-`
//! prefix; the module carries it (`-` becomes `_`, as the kernel names
//! modules) and refuses to load if the kind's table names another kind.

use std::path::{Path, PathBuf};
use std::process::Command;

const KBUILD: &str = include_str!("../../../kmod/kind/Kbuild");
const GLUE_C: &str = include_str!("../../../kmod/kind/glue.c");
const TAIL: &str = include_str!("../../../kmod/kind/tail.rs");
const TAIL_SDK: &str = include_str!("../../../kmod/kind/tail-sdk.rs");
/// The modules crate (`modules/src`): the kind ABI and the types it uses.
const MODULES_SRC: &[(&str, &str)] = &[
    ("lib.rs", include_str!("../../../modules/src/lib.rs")),
    ("abi.rs", include_str!("../../../modules/src/abi.rs")),
    ("appid.rs", include_str!("../../../modules/src/appid.rs")),
    ("dns.rs", include_str!("../../../modules/src/dns.rs")),
    ("rate.rs", include_str!("../../../modules/src/rate.rs")),
    (
        "security.rs",
        include_str!("../../../modules/src/security.rs"),
    ),
    ("stream.rs", include_str!("../../../modules/src/stream.rs")),
];
/// l45.ko's exports the kind module links against (kmod/kinds.c). Kernels
/// with Rust have MODVERSIONS off, so a CRC of 0 is what l45.ko's own
/// Module.symvers holds.
const L45_SYMVERS: &str = "0x00000000\tl45_register_kind\tl45\tEXPORT_SYMBOL_GPL\t\n\
                           0x00000000\tl45_unregister_kind\tl45\tEXPORT_SYMBOL_GPL\t\n";
const SDK_PACKAGE: &str = "l45-kind-sdk";

#[derive(Debug, thiserror::Error)]
pub enum KernelBuildError {
    #[error("{0}: no Cargo.toml with a package name")]
    NoManifest(PathBuf),
    #[error("kind name {0:?} is not 1-64 characters of [a-z0-9-] starting with a letter")]
    BadName(String),
    #[error("{0}: the kind crate has no src/lib.rs")]
    NoSource(PathBuf),
    #[error("{0}: the kind uses {SDK_PACKAGE} but names no path to it")]
    NoSdk(PathBuf),
    #[error("{0} is not a built kernel tree (no Module.symvers; see kmod/build-kernel.sh)")]
    NoKernelTree(PathBuf),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("make failed ({status}):\n{output}")]
    Make { status: String, output: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> KernelBuildError {
    let what = what.into();
    move |source| KernelBuildError::Io { what, source }
}

/// What the build needs from the kind crate's manifest.
#[derive(Debug, PartialEq, Eq)]
struct Manifest {
    /// The kind's name.
    kind: String,
    /// The SDK's crate directory, when the kind depends on it.
    sdk: Option<PathBuf>,
}

/// The `key = "value"` of `key` on `line`, if any.
fn string_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(key)?;
    let rest = line[at + key.len()..].trim_start().strip_prefix('=')?;
    let rest = rest.trim_start().strip_prefix('"')?;
    rest.split('"').next()
}

/// Reads the package name and the SDK's path dependency (a line of the
/// form `l45-kind-sdk = { path = "…" }`); no TOML parser needed for that.
fn manifest(crate_dir: &Path, text: &str) -> Result<Manifest, KernelBuildError> {
    let mut in_package = false;
    let mut name = None;
    let mut sdk = None;
    let mut uses_sdk = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
            continue;
        }
        if in_package && name.is_none() && line.starts_with("name") {
            name = string_value(line, "name");
        }
        if line.starts_with(SDK_PACKAGE) {
            uses_sdk = true;
            sdk = string_value(line, "path").map(|p| crate_dir.join(p));
        }
    }
    let name = name.ok_or_else(|| KernelBuildError::NoManifest(crate_dir.to_path_buf()))?;
    let kind = name.strip_prefix("l45-kind-").unwrap_or(name).to_string();
    if !l45_modules::abi::valid_name(kind.as_bytes()) {
        return Err(KernelBuildError::BadName(kind));
    }
    if uses_sdk && sdk.is_none() {
        return Err(KernelBuildError::NoSdk(crate_dir.to_path_buf()));
    }
    Ok(Manifest { kind, sdk })
}

/// The kernel module's name for kind `kind`.
pub fn module_name(kind: &str) -> String {
    format!("l45_kind_{}", kind.replace('-', "_"))
}

fn write(path: &Path, text: &str) -> Result<(), KernelBuildError> {
    std::fs::write(path, text).map_err(io(format!("writing {}", path.display())))
}

/// `crate::` paths of the modules crate, as a module `l45_modules` of the
/// kind's crate (`$crate::` left alone).
fn modules_paths(text: &str) -> String {
    rewrite(text, "crate::", "crate::l45_modules::", |before| {
        before != Some('$') && !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// The SDK's paths, as a module `l45_kind_sdk` of the kind's crate; its
/// `lib.rs` also re-exports the SDK's macros.
fn sdk_paths(text: &str, lib: bool) -> String {
    let text = rewrite(text, "l45_modules", "crate::l45_modules", |before| {
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
    });
    let mut text = text.replace("$crate::", "$crate::l45_kind_sdk::");
    // `#[macro_export]` macros live at the crate root: re-exported from the
    // SDK module, `l45_kind_sdk::export_kind!` resolves as in cargo builds.
    let macros: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("macro_rules!"))
        .filter_map(|rest| {
            rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .find(|w| !w.is_empty())
        })
        .collect();
    if lib && !macros.is_empty() {
        let list = macros.join(",");
        text.push_str(&format!(
            "\n#[allow(unused_imports)]\npub use crate::{{{list}}};\n"
        ));
    }
    text
}

/// Replaces `from` with `to` where the character before it passes `keep`.
fn rewrite(text: &str, from: &str, to: &str, keep: impl Fn(Option<char>) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(from) {
        let before = rest[..at]
            .chars()
            .next_back()
            .or_else(|| out.chars().next_back());
        out.push_str(&rest[..at]);
        out.push_str(if keep(before) { to } else { from });
        rest = &rest[at + from.len()..];
    }
    out.push_str(rest);
    out
}

/// The kind's lib.rs as the crate root: a crate-level `forbid` becomes
/// `deny` (the ABI and SDK modules allow unsafe code inside the one crate).
fn kind_root(lib: &str, sdk: bool) -> String {
    let mut root: String = lib
        .lines()
        .map(|l| match l.strip_prefix("#![forbid(") {
            Some(rest) => format!("#![deny({rest}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    root.push_str(TAIL);
    if sdk {
        root.push_str(TAIL_SDK);
    }
    root
}

/// The bindgen kbuild runs: `$BINDGEN`, else the one `kmod/build-kernel.sh`
/// installs into the kernel cache, else `bindgen` on the PATH.
fn bindgen() -> String {
    if let Ok(b) = std::env::var("BINDGEN") {
        return b;
    }
    let cache = std::env::var_os("L45_KERNEL_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/l45-kernel")));
    match cache.map(|c| c.join("tools/bin/bindgen")) {
        Some(b) if b.exists() => b.to_string_lossy().into_owned(),
        _ => "bindgen".into(),
    }
}

/// Builds the kind crate in `crate_dir` for the kernel tree `kernel_tree`
/// into `out_dir/l45_kind_<name>.ko` and returns that path.
pub fn build(
    crate_dir: &Path,
    kernel_tree: &Path,
    out_dir: &Path,
) -> Result<PathBuf, KernelBuildError> {
    let manifest_path = crate_dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest_path)
        .map_err(|_| KernelBuildError::NoManifest(crate_dir.to_path_buf()))?;
    let m = manifest(crate_dir, &text)?;
    let src = crate_dir.join("src");
    if !src.join("lib.rs").is_file() {
        return Err(KernelBuildError::NoSource(crate_dir.to_path_buf()));
    }
    if !kernel_tree.join("Module.symvers").is_file() {
        return Err(KernelBuildError::NoKernelTree(kernel_tree.to_path_buf()));
    }
    let kernel_tree = std::fs::canonicalize(kernel_tree)
        .map_err(io(format!("resolving {}", kernel_tree.display())))?;
    let module = module_name(&m.kind);
    std::fs::create_dir_all(out_dir).map_err(io(format!("creating {}", out_dir.display())))?;
    let out_dir =
        std::fs::canonicalize(out_dir).map_err(io(format!("resolving {}", out_dir.display())))?;
    let scratch = out_dir.join(format!(".build-{module}"));
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).map_err(io(format!("clearing {}", scratch.display())))?;
    }
    let result = build_in(&scratch, &src, &m, &module, &kernel_tree, &out_dir);
    // (the scratch directory is kept when make failed: its log names files there)
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    result
}

fn build_in(
    scratch: &Path,
    src: &Path,
    m: &Manifest,
    module: &str,
    kernel_tree: &Path,
    out_dir: &Path,
) -> Result<PathBuf, KernelBuildError> {
    let modules = scratch.join("l45_modules");
    std::fs::create_dir_all(&modules).map_err(io(format!("creating {}", modules.display())))?;
    for (name, text) in MODULES_SRC {
        write(&modules.join(name), &modules_paths(text))?;
    }
    let lib = src.join("lib.rs");
    let lib = std::fs::read_to_string(&lib).map_err(io(format!("reading {}", lib.display())))?;
    write(&scratch.join("kind.rs"), &kind_root(&lib, m.sdk.is_some()))?;
    if let Some(sdk) = &m.sdk {
        let sdk_src = sdk.join("src");
        let dest = scratch.join("l45_kind_sdk");
        std::fs::create_dir_all(&dest).map_err(io(format!("creating {}", dest.display())))?;
        let entries =
            std::fs::read_dir(&sdk_src).map_err(io(format!("reading {}", sdk_src.display())))?;
        for entry in entries {
            let path = entry
                .map_err(io(format!("reading {}", sdk_src.display())))?
                .path();
            if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path)
                    .map_err(io(format!("reading {}", path.display())))?;
                let text = sdk_paths(&text, path.file_name().is_some_and(|n| n == "lib.rs"));
                if let Some(name) = path.file_name() {
                    write(&dest.join(name), &text)?;
                }
            }
        }
    }
    let glue = GLUE_C
        .replace("@KIND@", &m.kind)
        .replace("@MODULE@", module);
    write(&scratch.join("glue.c"), &glue)?;
    write(&scratch.join("Kbuild"), KBUILD)?;
    let symvers = scratch.join("l45.symvers");
    write(&symvers, L45_SYMVERS)?;
    tracing::info!(kind = %m.kind, module, tree = %kernel_tree.display(), "building kind module");
    let output = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(kernel_tree)
        .arg(format!("M={}", scratch.display()))
        .arg("RUSTC=/usr/bin/rustc")
        .arg(format!("BINDGEN={}", bindgen()))
        .arg("LIBCLANG_PATH=/usr/lib/llvm-19/lib")
        .arg(format!("L45_KIND_MODULE={module}"))
        .arg(format!("KBUILD_EXTRA_SYMBOLS={}", symvers.display()))
        .arg("modules")
        .output()
        .map_err(io("running make"))?;
    if !output.status.success() {
        let mut log = String::from_utf8_lossy(&output.stdout).into_owned();
        log.push_str(&String::from_utf8_lossy(&output.stderr));
        return Err(KernelBuildError::Make {
            status: output.status.to_string(),
            output: log,
        });
    }
    let built = scratch.join(format!("{module}.ko"));
    let dest = out_dir.join(format!("{module}.ko"));
    std::fs::copy(&built, &dest).map_err(io(format!("copying {}", built.display())))?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn the_manifest_names_the_kind_and_the_sdk() {
        let dir = Path::new("/k");
        let m = manifest(
            dir,
            "[package]\nname = \"l45-kind-udp-xor-mask\"\n\n[dependencies]\n\
             l45-kind-sdk = { path = \"../../sdk\" }\n",
        )
        .expect("valid");
        assert_eq!(m.kind, "udp-xor-mask");
        assert_eq!(m.sdk, Some(dir.join("../../sdk")));
        assert_eq!(module_name(&m.kind), "l45_kind_udp_xor_mask");
        let m = manifest(dir, "[package]\nname = \"udp-xor-test\"\n").expect("valid");
        assert_eq!((m.kind.as_str(), m.sdk), ("udp-xor-test", None));
        assert!(matches!(
            manifest(dir, "[package]\nname = \"Bad_Name\"\n"),
            Err(KernelBuildError::BadName(_))
        ));
        assert!(matches!(
            manifest(dir, "[dependencies]\nname = \"x\"\n"),
            Err(KernelBuildError::NoManifest(_))
        ));
        assert!(matches!(
            manifest(
                dir,
                "[package]\nname = \"k\"\n[dependencies]\nl45-kind-sdk = \"1\"\n"
            ),
            Err(KernelBuildError::NoSdk(_))
        ));
    }

    #[test]
    fn bad_inputs_fail_before_make() {
        let out = std::env::temp_dir().join(format!("l45-kbuild-test-{}", std::process::id()));
        let kind = repo().join("kmod/test-kind");
        let e = build(&repo().join("nonexistent"), Path::new("/"), &out).expect_err("no crate");
        assert!(matches!(e, KernelBuildError::NoManifest(_)), "{e}");
        let e = build(&kind, &repo().join("nonexistent"), &out).expect_err("no tree");
        assert!(matches!(e, KernelBuildError::NoKernelTree(_)), "{e}");
        let _ = std::fs::remove_dir_all(&out);
    }

    /// With `L45_KERNEL_TREE` set to a kernel tree built by
    /// kmod/build-kernel.sh: the test kind builds into a module that
    /// depends on l45.ko.
    #[test]
    fn builds_the_test_kind_against_a_kernel_tree() {
        let Some(tree) = std::env::var_os("L45_KERNEL_TREE") else {
            eprintln!("L45_KERNEL_TREE not set: the kernel build is checked by kmod/vm-test.sh");
            return;
        };
        let out = std::env::temp_dir().join(format!("l45-kbuild-{}", std::process::id()));
        let ko = build(&repo().join("kmod/test-kind"), Path::new(&tree), &out).expect("builds");
        assert_eq!(
            ko.file_name().and_then(|n| n.to_str()),
            Some("l45_kind_udp_xor_test.ko")
        );
        let info = Command::new("modinfo").arg(&ko).output().expect("modinfo");
        let info = String::from_utf8_lossy(&info.stdout);
        assert!(info.contains("depends:        l45"), "{info}");
        assert!(!out.join(".build-l45_kind_udp_xor_test").exists());
        let _ = std::fs::remove_dir_all(&out);
    }
}
