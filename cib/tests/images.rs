//! Module images in the CIB: an image's kind becomes deployable on a
//! device only once the device has installed it; its parameters are free
//! name=value pairs the device's `arguments` leaf takes.

use l45_cib::{Cib, CibError, Image, NewDevice, NewModule, Timestamp};

fn cib_with(name: &str) -> Cib {
    let mut cib = Cib::open(":memory:").expect("in-memory CIB");
    cib.add_device(&NewDevice {
        name: name.into(),
        address: "192.0.2.1:830".into(),
        username: "admin".into(),
        ssh_key_path: "/dev/null".into(),
        ..NewDevice::default()
    })
    .expect("device added");
    cib
}

fn image() -> Image {
    Image {
        sha256: "ab".repeat(32),
        kind: "udp-xor-mask".into(),
        target: "userspace-x86_64".into(),
        size: 600 * 1024,
        signer: "fe812c12f3ab4ce6".into(),
        built_at: "2026-12-06T03:40:00Z".into(),
        path: "images/udp-xor-mask.so".into(),
        recorded_at: Timestamp(1),
        signature: Some("5e".repeat(64)),
    }
}

#[test]
fn an_image_kind_needs_an_install_on_the_device() {
    let mut cib = cib_with("d1");
    let mut m = NewModule::new("d1", "xor", "udp-xor-mask");
    m.parameters = vec![("mask".into(), "5a".into())];
    // Unknown before any image of the kind is recorded.
    assert!(matches!(
        cib.construct_module(&m),
        Err(CibError::UnknownKind(ref k)) if k == "udp-xor-mask"
    ));
    cib.record_image(&image()).unwrap();
    let e = cib.construct_module(&m).unwrap_err();
    assert!(
        e.to_string()
            .contains("no image of kind udp-xor-mask is installed"),
        "{e}"
    );
    cib.record_image_install("d1", &image().sha256).unwrap();
    let built = cib.construct_module(&m).unwrap();
    assert_eq!(built.kind, "udp-xor-mask");
    assert_eq!(cib.images().unwrap(), vec![image()]);
    let installs = cib.image_installs().unwrap();
    assert_eq!(installs.len(), 1);
    assert_eq!(installs[0].device, "d1");
    // A value the arguments leaf cannot carry is refused.
    m.name = "xor2".into();
    m.parameters = vec![("mask".into(), "5a;b=1".into())];
    assert!(matches!(
        cib.construct_module(&m),
        Err(CibError::InvalidParameter { .. })
    ));
}

#[test]
fn a_module_naming_its_image_is_built_before_any_install_and_remembers_it() {
    let mut cib = cib_with("d1");
    cib.record_image(&image()).unwrap();
    let sha = image().sha256;
    let mut m = NewModule::new("d1", "xor", "udp-xor-mask");
    m.parameters = vec![("mask".into(), "5a".into())];
    // An image the CIB does not know, or of another kind, is refused and
    // builds nothing.
    m.image = Some("cd".repeat(32));
    let e = cib.construct_and_deploy(&[m.clone()], None).unwrap_err();
    assert!(e.to_string().contains("is not a recorded image"), "{e}");
    let mut other = image();
    other.sha256 = "ef".repeat(32);
    other.kind = "dns-0x20".into();
    cib.record_image(&other).unwrap();
    m.image = Some(other.sha256.clone());
    let e = cib.construct_and_deploy(&[m.clone()], None).unwrap_err();
    assert!(
        e.to_string()
            .contains("is an image of kind dns-0x20, not udp-xor-mask"),
        "{e}"
    );
    assert!(cib.modules_of_device("d1").unwrap().is_empty());
    // Its own image: built without an install (the deploy installs it).
    m.image = Some(sha.clone());
    let built = cib.construct_and_deploy(&[m], None).unwrap();
    assert_eq!(built[0].0.image.as_deref(), Some(sha.as_str()));
    assert_eq!(
        cib.module("d1", built[0].0.module_id).unwrap().image,
        Some(sha.clone())
    );
    // Installs are recorded, looked up and removed.
    assert!(!cib.has_image_install("d1", &sha).unwrap());
    cib.record_image_install("d1", &sha).unwrap();
    assert!(cib.has_image_install("d1", &sha).unwrap());
    assert_eq!(cib.images_of_kind("udp-xor-mask").unwrap(), vec![image()]);
    assert!(cib.remove_image_install("d1", &sha).unwrap());
    assert!(!cib.remove_image_install("d1", &sha).unwrap());
    assert!(cib.image_installs().unwrap().is_empty());
}

#[test]
fn a_version_3_cib_is_upgraded_and_its_images_gain_a_signature_when_recorded_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cib.sqlite");
    {
        // The schema as version 3 left it, with one image recorded.
        let raw = rusqlite::Connection::open(&path).unwrap();
        for sql in [
            include_str!("../migrations/0001_initial.sql"),
            include_str!("../migrations/0002_call_home.sql"),
            include_str!("../migrations/0003_images.sql"),
        ] {
            raw.execute_batch(sql).unwrap();
        }
        raw.pragma_update(None, "user_version", 3).unwrap();
        let i = image();
        raw.execute(
            "INSERT INTO image (sha256, kind, target, size, signer, built_at, path, recorded_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            rusqlite::params![i.sha256, i.kind, i.target, 1, i.signer, i.built_at, i.path, 1],
        )
        .unwrap();
    }
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut cib = Cib::open(&path).unwrap();
    assert_eq!(cib.schema_version().unwrap(), 4);
    let old = cib.images().unwrap();
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].signature, None);
    // Recording it again adds the signature; recording it without one
    // keeps it.
    cib.record_image(&image()).unwrap();
    assert_eq!(cib.images().unwrap()[0].signature, image().signature);
    let mut unsigned = image();
    unsigned.signature = None;
    cib.record_image(&unsigned).unwrap();
    assert_eq!(cib.images().unwrap()[0].signature, image().signature);
}
