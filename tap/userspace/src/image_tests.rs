//! Module images through the backend: the example kind
//! (`modules/examples/udp-xor-mask`) built as a real image by cargo, loaded
//! with `load_kind`, its parameters checked at `prepare`, and the table a
//! tapped process reads naming an image it can load and run.
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::*;
use l45_modules::{Ctx, Role, SendVerdict, SocketState, Transport};
use l45_tap_control::MatchRules;
use l45_tap_engine::Config;
use l45_tap_shm::{image, ShmReader};

/// The example image, built once per test run with the same cargo.
fn example_image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let manifest = root.join("modules/examples/udp-xor-mask/Cargo.toml");
        // Beside this test's own build: target/<profile>/deps/<test> → target/kinds.
        let exe = std::env::current_exe().expect("test executable");
        let target = exe
            .ancestors()
            .nth(3)
            .expect("target directory")
            .join("kinds");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--quiet", "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the example image failed");
        target.join("release/libudp_xor_mask.so")
    })
}

/// The image stored as the agent stores it: owner-only, in its state dir.
fn stored(dir: &Path) -> KindImage {
    let bytes = std::fs::read(example_image()).expect("image built");
    let path = dir.join("udp-xor-mask.so");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .expect("store image");
    std::io::Write::write_all(&mut f, &bytes).expect("write image");
    KindImage {
        kind: "udp-xor-mask".into(),
        target: IMAGE_TARGET
            .expect("an image target on this machine")
            .into(),
        sha256_hex: image::hex(&image::sha256(&bytes)),
        path,
    }
}

fn xor_module(id: u32, key: &str) -> ModuleConfig {
    let mut parameters = BTreeMap::new();
    parameters.insert("key".to_string(), key.to_string());
    ModuleConfig {
        id,
        name: format!("x{id}"),
        kind: "udp-xor-mask".into(),
        priority: 10,
        activated: true,
        deprecated: false,
        attach: Attach::NewSockets,
        matching: MatchRules {
            protocol: Some(Protocol::Udp),
            ..MatchRules::default()
        },
        parameters,
        key: None,
    }
}

fn commit(tap: &UserspaceTap, changes: Vec<Change>) -> Result<(), TapError> {
    let txn = Transaction { changes };
    tap.prepare(&txn)?;
    tap.apply(&txn);
    Ok(())
}

#[test]
fn a_loaded_image_kind_is_checked_at_prepare_and_reaches_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tap");
    let tap = UserspaceTap::new(&path).expect("tap");
    assert_eq!(tap.image_target().as_deref(), Some("userspace-x86_64"));
    let img = stored(state.path());

    // Unknown before it is loaded.
    let e = commit(&tap, vec![Change::Register(xor_module(1, "a5"))]).expect_err("not loaded");
    assert!(e.to_string().contains("neither built into"), "{e}");

    tap.load_kind(&img).expect("load");
    tap.load_kind(&img)
        .expect("loading the same image again is no error");

    // The published copy: the control file's mode, the agent's user, the
    // same bytes.
    let sha = image::parse_sha256(&img.sha256_hex).expect("hex");
    let published = image::published_path(&path, &sha);
    let meta = std::fs::metadata(&published).expect("published");
    assert_eq!(meta.mode() & 0o7777, l45_tap_shm::CONTROL_MODE);
    assert_eq!(
        std::fs::read(&published).expect("read"),
        std::fs::read(&img.path).expect("read")
    );

    // The kind's own parser refuses bad parameters at prepare.
    let reader = ShmReader::open(&path).expect("reader");
    let before = reader.generation();
    for (key, why) in [
        ("zz", "key must be hex digits only"),
        ("abc", "key must be 2-64 hex digits"),
    ] {
        let e = commit(&tap, vec![Change::Register(xor_module(1, key))]).expect_err("bad key");
        assert!(e.to_string().contains(why), "{e}");
    }
    assert_eq!(
        reader.generation(),
        before,
        "refused prepares publish nothing"
    );

    commit(&tap, vec![Change::Register(xor_module(1, "a55a"))]).expect("valid key");
    let (g, used, images) = reader.snapshot_with_images().expect("snapshot");
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].1.kind, 0, "an image's kind travels by name");
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].1.kind_name(), "udp-xor-mask");
    assert_eq!(images[0].1.sha256, sha);

    // What a tapped process does (tap/preload/src/images.rs): open the
    // published copy it trusts, check the open file's digest, load it, run.
    let config = Config::from_used_with(g, used.iter().map(|(i, s)| (*i, s)), |slot| {
        let (_, r) = images.iter().find(|(i, _)| *i == slot)?;
        image::load_published(
            &image::published_path(&path, &r.sha256),
            &r.sha256,
            r.kind_name(),
        )
        .ok()
        .map(l45_modules::Kind::External)
    });
    assert!(config.rejected.is_empty(), "{:?}", config.rejected);
    let m = &config.modules[0].instance;
    let ctx = Ctx {
        role: Role::Client,
        transport: Transport::Datagram,
        thread_name: b"t",
        process_name: b"p",
    };
    let mut out = [0u8; 16];
    assert_eq!(
        m.send(&mut SocketState::default(), &ctx, b"\x00\x00\x01", &mut out),
        SendVerdict::Customized(7)
    );
    assert_eq!(&out[..7], b"L45x\xa5\x5a\xa4");

    // The same file with one byte flipped is refused by its digest (a
    // trusted copy: mode 0644, this user's, in this user's directory).
    let published_bytes = std::fs::read(&published).expect("published copy");
    let mut flipped = published_bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let other = dir.path().join("flipped.kind");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&other)
        .expect("copy");
    std::io::Write::write_all(&mut f, &flipped).expect("write copy");
    let e = image::load_published(&other, &sha, "udp-xor-mask").expect_err("flipped byte");
    assert!(matches!(e, image::ImageError::Digest { .. }), "{e}");

    // Not unloaded while a module uses it; then unloaded, and its copy gone.
    let e = tap.unload_kind("udp-xor-mask").expect_err("in use");
    assert!(e.to_string().contains("uses kind udp-xor-mask"), "{e}");
    commit(&tap, vec![Change::Unregister(1)]).expect("unregister");
    tap.unload_kind("udp-xor-mask").expect("unload");
    assert!(!published.exists());
    let e = commit(&tap, vec![Change::Register(xor_module(2, "a5"))]).expect_err("unloaded");
    assert!(e.to_string().contains("neither built into"), "{e}");
}

#[test]
fn images_that_do_not_match_what_the_agent_verified_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("tempdir");
    let tap = UserspaceTap::new(&dir.path().join("tap")).expect("tap");
    let img = stored(state.path());
    let other_target = KindImage {
        target: "kernel-6.12.118-x86_64".into(),
        ..img.clone()
    };
    let e = tap.load_kind(&other_target).expect_err("target");
    assert!(
        e.to_string().contains("built for kernel-6.12.118-x86_64"),
        "{e}"
    );
    let wrong_digest = KindImage {
        sha256_hex: "00".repeat(32),
        ..img.clone()
    };
    let e = tap.load_kind(&wrong_digest).expect_err("digest");
    assert!(e.to_string().contains("digest is"), "{e}");
    let wrong_name = KindImage {
        kind: "udp-other".into(),
        ..img.clone()
    };
    let e = tap.load_kind(&wrong_name).expect_err("name");
    assert!(e.to_string().contains("holds kind udp-xor-mask"), "{e}");
    let not_hex = KindImage {
        sha256_hex: "xyz".into(),
        ..img.clone()
    };
    assert!(tap.load_kind(&not_hex).is_err());
    // A file others may write is not trusted.
    let loose = state.path().join("loose.so");
    std::fs::copy(&img.path, &loose).expect("copy");
    std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .expect("chmod");
    let e = tap
        .load_kind(&KindImage {
            path: loose,
            ..img.clone()
        })
        .expect_err("loose");
    assert!(e.to_string().contains("not trusted"), "{e}");
    // None of these left a kind behind.
    let e = commit(&tap, vec![Change::Register(xor_module(1, "a5"))]).expect_err("none loaded");
    assert!(e.to_string().contains("neither built into"), "{e}");
    tap.load_kind(&img).expect("the real image loads");
}
