//! The CIB as a store: migrations, file modes, module ids and keys, refused input.

// Helpers outside #[test] fns are not covered by clippy.toml's allow-unwrap-in-tests.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

mod common;

use common::*;
use l45_cib::*;

// ===== migrations =====

#[test]
fn migrations_run_from_empty_and_reopening_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cib.sqlite");
    {
        let cib = Cib::open(&path).unwrap();
        assert_eq!(cib.schema_version().unwrap(), 4);
    }
    let cib = Cib::open(&path).unwrap();
    assert_eq!(cib.schema_version().unwrap(), 4);
    let kinds: Vec<String> = cib
        .module_kinds()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let mut expected: Vec<String> = l45_modules::Kind::ALL
        .iter()
        .map(|k| k.name().to_owned())
        .collect();
    expected.sort();
    assert_eq!(kinds, expected, "seeded kinds are the catalogue's, once");
}

#[test]
fn database_from_a_newer_program_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cib.sqlite");
    drop(Cib::open(&path).unwrap());
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.pragma_update(None, "user_version", 99).unwrap();
    drop(raw);
    let err = Cib::open(&path).err().unwrap();
    assert!(
        matches!(err, CibError::Migration { version: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("newer than this program"), "{err}");
}

#[test]
fn database_and_its_wal_and_shm_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cib.sqlite");
    let mut cib = Cib::open(&path).unwrap();
    cib.add_device(&new_device("d1", "192.0.2.1")).unwrap();
    let mode = |suffix: &str| {
        let p = dir.path().join(format!("cib.sqlite{suffix}"));
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777
    };
    // (open connection: the WAL and shared-memory index exist)
    assert_eq!(mode(""), 0o600);
    assert_eq!(mode("-wal"), 0o600);
    assert_eq!(mode("-shm"), 0o600);
    drop(cib);
}

#[test]
fn database_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cib.sqlite");
    drop(Cib::open(&path).unwrap());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Cib::open(&path).err().unwrap();
    assert!(err.to_string().contains("mode 0644"), "{err}");
}

#[test]
fn file_database_is_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cib.sqlite");
    drop(Cib::open(&path).unwrap());
    let raw = rusqlite::Connection::open(&path).unwrap();
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

// ===== module ids and keys =====

#[test]
fn module_ids_never_collide_across_reopen_or_after_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cib.sqlite");
    {
        let mut cib = Cib::open(&path).unwrap();
        cib.add_device(&new_device("dev1", "192.0.2.1")).unwrap();
        cib.add_device(&new_device("dev2", "192.0.2.2")).unwrap();
        for name in ["a", "b", "c"] {
            cib.construct_module(&NewModule::new("dev1", name, "dns-front-tag"))
                .unwrap();
        }
        let other = cib
            .construct_module(&NewModule::new("dev2", "a", "dns-front-tag"))
            .unwrap();
        assert_eq!(other.module_id, 1, "ids are per device");
    }
    let mut cib = Cib::open(&path).unwrap();
    let m = cib
        .construct_module(&NewModule::new("dev1", "d", "rate-limit"))
        .unwrap();
    assert_eq!(m.module_id, 4, "restart continues the counter");

    // Revoke the newest (never sent: CIB-only revoke), then build again: no reuse.
    cib.request("dev1", 4, Action::Revoke, None).unwrap();
    let m = cib
        .construct_module(&NewModule::new("dev1", "d", "rate-limit"))
        .unwrap();
    assert_eq!(m.module_id, 5);

    // Remove the device and add it again: its ids still are not reused.
    cib.remove_device("dev1").unwrap();
    cib.add_device(&new_device("dev1", "192.0.2.1")).unwrap();
    let m = cib
        .construct_module(&NewModule::new("dev1", "a", "dns-front-tag"))
        .unwrap();
    assert_eq!(m.module_id, 6);
}

#[test]
fn every_module_gets_its_own_random_256_bit_key_which_debug_hides() {
    let mut cib = cib_with_devices(&["dev1"]);
    let a = cib
        .construct_module(&NewModule::new("dev1", "a", "dns-end-tag"))
        .unwrap();
    let b = cib
        .construct_module(&NewModule::new("dev1", "b", "dns-end-tag"))
        .unwrap();
    assert_ne!(a.key, b.key);
    assert_ne!(a.key, [0; 32]);
    assert_eq!(
        cib.module("dev1", a.module_id).unwrap().key,
        a.key,
        "key is stored"
    );
    let printed = format!("{a:?}");
    assert!(printed.contains("<redacted>"));
    assert!(!printed.contains(&format!("{:?}", a.key)));
}

#[test]
fn a_module_round_trips_with_parameters_match_rules_and_attach() {
    let mut cib = cib_with_devices(&["dev1"]);
    let mut m = NewModule::new("dev1", "tagger", "stream-tag");
    m.parameters = vec![
        ("interval".into(), "32000".into()),
        ("tag".into(), "XTAGX".into()),
    ];
    m.priority = 7;
    m.activated = false;
    m.attach = Attach::Immediate;
    m.match_rules = MatchRules {
        protocol: Some(Protocol::Tcp),
        source_address: Some("10.0.0.0/8".into()),
        source_port: Some(8000),
        destination_address: Some("2001:db8::/32".into()),
        destination_port: None,
        thread_name: Some("isc-worker0000".into()),
        process_name: Some("python3".into()),
    };
    let built = cib.construct_module(&m).unwrap();
    let read = cib.module_by_name("dev1", "tagger").unwrap();
    assert_eq!(read, built);
    assert_eq!(read.parameters, m.parameters);
    assert_eq!(read.match_rules, m.match_rules);
    assert_eq!(
        (read.priority, read.activated, read.attach),
        (7, false, Attach::Immediate)
    );
    assert_eq!(read.status, ModuleStatus::Built);
}

// ===== bad input =====

#[test]
fn bad_input_gets_the_right_error_and_changes_nothing() {
    let mut cib = cib_with_devices(&["dev1"]);
    cib.construct_module(&NewModule::new("dev1", "taken", "dns-front-tag"))
        .unwrap();
    cib.request("dev1", 1, Action::Deploy, None).unwrap();
    let before = snapshot(&cib);

    let with_params = |kind: &str, pairs: &[(&str, &str)]| {
        let mut m = NewModule::new("dev1", "x", kind);
        m.parameters = pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        m
    };

    // devices
    let e = cib
        .add_device(&new_device("dev1", "192.0.2.9"))
        .unwrap_err();
    assert!(matches!(e, CibError::Duplicate { .. }), "{e}");
    assert!(e.to_string().contains("dev1"), "{e}");
    for bad in [
        new_device("", "192.0.2.9"),
        new_device("bad name", "192.0.2.9"),
        new_device("-x", "192.0.2.9"),
    ] {
        let e = cib.add_device(&bad).unwrap_err();
        assert!(
            matches!(e, CibError::InvalidParameter { ref field, .. } if field == "device name"),
            "{e}"
        );
    }
    let mut d = new_device("dev9", "192.0.2.9");
    d.address = "192.0.2.9".into();
    let e = cib.add_device(&d).unwrap_err();
    assert!(
        matches!(e, CibError::InvalidParameter { ref field, .. } if field == "device address"),
        "{e}"
    );
    d.address = "192.0.2.9:99999".into();
    assert!(matches!(
        cib.add_device(&d),
        Err(CibError::InvalidParameter { .. })
    ));
    let mut d = new_device("dev9", "192.0.2.9");
    d.host_key_fingerprint = Some("MD5:00:11".into());
    assert!(matches!(
        cib.add_device(&d),
        Err(CibError::InvalidParameter { .. })
    ));

    // unknown device everywhere
    let e = cib
        .construct_module(&NewModule::new("nope", "x", "dns-front-tag"))
        .unwrap_err();
    assert!(
        matches!(e, CibError::UnknownDevice(ref n) if n == "nope"),
        "{e}"
    );
    assert_eq!(
        e.to_string().split(" (").next(),
        Some("unknown device \"nope\"")
    );
    assert!(matches!(
        cib.device("nope"),
        Err(CibError::UnknownDevice(_))
    ));
    assert!(matches!(
        cib.request("nope", 1, Action::Deploy, None),
        Err(CibError::UnknownDevice(_))
    ));
    assert!(matches!(
        cib.record_report("nope", &[], t(0)),
        Err(CibError::UnknownDevice(_))
    ));
    assert!(matches!(
        cib.remove_device("nope"),
        Err(CibError::UnknownDevice(_))
    ));

    // unknown module, request, alert
    let e = cib.request("dev1", 42, Action::Revoke, None).unwrap_err();
    assert!(matches!(e, CibError::UnknownModule { .. }), "{e}");
    assert_eq!(e.to_string(), "device \"dev1\" has no module with id 42");
    assert!(matches!(
        cib.mark_sent(999, t(0)),
        Err(CibError::UnknownRequest(999))
    ));
    assert!(matches!(
        cib.acknowledge_alert(5),
        Err(CibError::UnknownAlert(5))
    ));

    // modules: kind, parameters, names, match rules
    let e = cib
        .construct_module(&NewModule::new("dev1", "x", "dns-tag"))
        .unwrap_err();
    assert!(
        matches!(e, CibError::UnknownKind(ref k) if k == "dns-tag"),
        "{e}"
    );
    let e = cib
        .construct_module(&with_params("stream-tag", &[("interval", "5")]))
        .unwrap_err();
    assert_eq!(e.to_string(), "invalid parameter interval: \"5\" is not valid for stream-tag (a whole number of bytes, at least 16)");
    let e = cib
        .construct_module(&with_params(
            "rate-limit",
            &[("delay", "100"), ("colour", "red")],
        ))
        .unwrap_err();
    assert!(
        e.to_string().contains("parameter colour") && e.to_string().contains("allowed: delay"),
        "{e}"
    );
    let e = cib
        .construct_module(&with_params("dns-clearance-filter", &[]))
        .unwrap_err();
    assert!(
        e.to_string().contains("code") && e.to_string().contains("required"),
        "{e}"
    );
    let e = cib
        .construct_module(&with_params("dns-front-tag", &[("tag", "A"), ("tag", "B")]))
        .unwrap_err();
    assert!(e.to_string().contains("more than once"), "{e}");
    let e = cib
        .construct_module(&with_params(
            "dns-compression",
            &[("recursion-desired", "yes")],
        ))
        .unwrap_err();
    assert!(matches!(e, CibError::InvalidParameter { .. }), "{e}");
    let e = cib
        .construct_module(&NewModule::new("dev1", "taken", "dns-front-tag"))
        .unwrap_err();
    assert!(matches!(e, CibError::Duplicate { .. }), "{e}");
    let e = cib
        .construct_module(&NewModule::new("dev1", "", "dns-front-tag"))
        .unwrap_err();
    assert!(matches!(e, CibError::InvalidParameter { .. }), "{e}");
    let mut m = NewModule::new("dev1", "x", "dns-front-tag");
    m.match_rules.source_address = Some("10.0.0.0/40".into());
    assert!(matches!(
        cib.construct_module(&m),
        Err(CibError::InvalidParameter { .. })
    ));
    m.match_rules.source_address = None;
    m.match_rules.thread_name = Some("a-name-longer-than-15".into());
    assert!(matches!(
        cib.construct_module(&m),
        Err(CibError::InvalidParameter { .. })
    ));

    // requests
    let e = cib.request("dev1", 1, Action::Deploy, None).unwrap_err();
    assert!(matches!(e, CibError::Duplicate { .. }), "{e}");
    let e = cib.request("dev1", 1, Action::Deprecate, None);
    assert!(e.is_ok(), "deprecate may queue behind an open deploy");
    let before = {
        // (that one changed things; take a fresh snapshot)
        let _ = before;
        snapshot(&cib)
    };
    let r = cib.open_requests(Some("dev1")).unwrap();
    let e = cib.mark_confirmed(r[0].id, t(0)).unwrap_err();
    assert!(matches!(e, CibError::InvalidState { .. }), "{e}");
    assert!(
        e.to_string().contains("is pending; cannot confirm it"),
        "{e}"
    );
    let e = cib.check_host_key("dev1", "not-a-fingerprint").unwrap_err();
    assert!(matches!(e, CibError::InvalidParameter { .. }), "{e}");

    assert_eq!(snapshot(&cib), before, "refused calls left no trace");
}

#[test]
fn requests_that_make_no_sense_for_the_module_state_are_refused() {
    let mut cib = cib_with_devices(&["dev1"]);
    let built = cib
        .construct_module(&NewModule::new("dev1", "m", "rate-limit"))
        .unwrap();
    let e = cib
        .request("dev1", built.module_id, Action::SetPriority(5), None)
        .unwrap_err();
    assert!(e.to_string().contains("is not deployed"), "{e}");

    let m = deployed(&mut cib, NewModule::new("dev1", "d", "rate-limit"));
    let e = cib
        .request("dev1", m.module_id, Action::Deploy, None)
        .unwrap_err();
    assert!(e.to_string().contains("already deployed"), "{e}");
    cib.request("dev1", m.module_id, Action::Revoke, None)
        .unwrap();
    let e = cib
        .request("dev1", m.module_id, Action::Activate, None)
        .unwrap_err();
    assert!(e.to_string().contains("revoke pending"), "{e}");
}
