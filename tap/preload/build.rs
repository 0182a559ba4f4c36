//! Link-time tweaks that keep libl45tap.so cheap for the dynamic linker.
//!
//! A preloaded object's DT_NEEDED entries are placed in the global lookup
//! scope right after the executable's direct dependencies (breadth-first),
//! and ld.so walks that scope for every symbol any object imports. Two of the
//! entries the default link adds cost every traced process at start-up:
//!
//! * `ld-linux-x86-64.so.2`, pulled in by the `AS_NEEDED` clause of glibc's
//!   `libc.so` linker script because the thread-locals (ours and std's) use
//!   `__tls_get_addr`. It moves ld.so from the end of the scope into the
//!   middle, so thousands of lookups of the program's other libraries visit
//!   it first (`dig -v`: +6,100 visits, +0.30 M instructions). ld.so is
//!   always loaded, so an unversioned `__tls_get_addr` resolves without the
//!   entry.
//! * `libgcc_s.so.1`, the unwinder std links against: it also lands early
//!   in the scope (+0.09 M). libgcc_eh.a is linked in statically instead
//!   (like `-static-libgcc`); the export list stays the interposed symbols.
//!
//! Both work by putting linker scripts named `libc.so` and `libgcc_s.so` in
//! a directory searched before the system ones, for the cdylib link only.
//! Each is skipped (normal link) if the system files do not look as expected.
//!
//! The library's ~700 relative relocations are packed (`DT_RELR`, glibc ≥
//! 2.36) when the linker can: ld.so then reads a few hundred bytes at
//! start-up instead of 17 KB of `Elf64_Rela` entries, which every tapped
//! process fetches cold.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=L45_PLAIN_LINK");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os != "linux" || env != "gnu" || std::env::var_os("L45_PLAIN_LINK").is_some() {
        return;
    }
    let Some(out) = std::env::var_os("OUT_DIR") else {
        return;
    };
    let dir = PathBuf::from(out).join("link");
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let libc = libc_script(&dir);
    let gcc_s = libgcc_s_script(&dir);
    if libc || gcc_s {
        println!("cargo:rustc-cdylib-link-arg=-L{}", dir.display());
    }
    if links_with(&dir, "-Wl,-z,pack-relative-relocs") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the C compiler rustc links with accepts `flag` for a shared
/// library (and the C library it links against supports the result).
fn links_with(dir: &Path, flag: &str) -> bool {
    let src = dir.join("probe.c");
    if std::fs::write(&src, "int l45_probe(void) { return 0; }\n").is_err() {
        return false;
    }
    Command::new(cc())
        .args(["-shared", "-fPIC", flag, "-o"])
        .arg(dir.join("probe.so"))
        .arg(&src)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The C compiler rustc links with.
fn cc() -> String {
    std::env::var("RUSTC_LINKER").unwrap_or_else(|_| "cc".into())
}

/// The C compiler rustc links with, asked where it finds a library file.
fn print_file_name(name: &str) -> Option<PathBuf> {
    let out = Command::new(cc())
        .arg(format!("-print-file-name={name}"))
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    // Not found: the compiler echoes the bare name.
    (out.status.success() && path.is_absolute() && path.is_file()).then_some(path)
}

/// glibc's `libc.so` without its `AS_NEEDED ( .../ld-linux-... )` clause.
fn libc_script(dir: &Path) -> bool {
    let Some(path) = print_file_name("libc.so") else {
        return false;
    };
    println!("cargo:rerun-if-changed={}", path.display());
    let Ok(text) = std::fs::read_to_string(&path) else {
        return false;
    };
    let Some(start) = text.find("AS_NEEDED") else {
        return false;
    };
    let Some(len) = text[start..].find(')') else {
        return false;
    };
    let clause = &text[start..=start + len];
    if !clause.contains("ld-linux") || !text.contains("GROUP") {
        return false;
    }
    let script = text.replacen(clause, "", 1);
    std::fs::write(dir.join("libc.so"), script).is_ok()
}

/// `-lgcc_s` (from std's unwind crate and the compiler driver) resolved to
/// the static unwinder.
fn libgcc_s_script(dir: &Path) -> bool {
    let Some(eh) = print_file_name("libgcc_eh.a") else {
        return false;
    };
    let script = match print_file_name("libgcc.a") {
        Some(gcc) => format!("GROUP ( {} {} )\n", eh.display(), gcc.display()),
        None => format!("GROUP ( {} )\n", eh.display()),
    };
    std::fs::write(dir.join("libgcc_s.so"), script).is_ok()
}
