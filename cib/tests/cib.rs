//! Behaviour of the CIB through its public API.

// Helpers outside #[test] fns are not covered by clippy.toml's allow-unwrap-in-tests.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use l45_cib::*;

// ===== helpers =====

fn new_device(name: &str, ip: &str) -> NewDevice {
    NewDevice {
        name: name.to_owned(),
        address: format!("{ip}:830"),
        username: "l45".to_owned(),
        ssh_key_path: "/etc/l45/nco_ed25519".to_owned(),
        ..NewDevice::default()
    }
}

fn cib_with_devices(names: &[&str]) -> Cib {
    let mut cib = Cib::open_in_memory().unwrap();
    for (i, name) in names.iter().enumerate() {
        cib.add_device(&new_device(name, &format!("192.0.2.{}", i + 1)))
            .unwrap();
    }
    cib
}

fn t(ms: i64) -> Timestamp {
    Timestamp(1_800_000_000_000 + ms)
}

/// Construct + deploy request + sent + confirmed.
fn deployed(cib: &mut Cib, m: NewModule) -> Module {
    let built = cib.construct_module(&m).unwrap();
    let r = cib
        .request(&built.device, built.module_id, Action::Deploy, Some(t(0)))
        .unwrap();
    cib.mark_sent(r.id, t(0)).unwrap();
    cib.mark_confirmed(r.id, t(0)).unwrap();
    cib.module(&built.device, built.module_id).unwrap()
}

/// Everything an operator could observe, to prove a refused call changed nothing.
fn snapshot(cib: &Cib) -> String {
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}",
        cib.devices().unwrap(),
        cib.status_summary().unwrap(),
        cib.open_requests(None).unwrap(),
        cib.history(&HistoryFilter::default()).unwrap(),
        cib.alerts(false, 1000).unwrap()
    )
}

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

// ===== request state machine =====

#[test]
fn failed_sends_back_off_exponentially_then_fail_with_an_alert() {
    let mut cib = cib_with_devices(&["dev1"]);
    cib.set_retry_policy(RetryPolicy {
        max_attempts: 3,
        base_backoff_ms: 1000,
        max_backoff_ms: 1500,
    });
    let m = cib
        .construct_module(&NewModule::new("dev1", "m", "dns-end-tag"))
        .unwrap();
    let r = cib
        .request("dev1", m.module_id, Action::Deploy, Some(t(0)))
        .unwrap();
    assert_eq!(
        (r.state, r.attempts, r.max_attempts),
        (RequestState::Pending, 0, 3)
    );
    assert_eq!(cib.due_requests(t(0), 10).unwrap(), vec![r.clone()]);

    let sent = cib.mark_sent(r.id, t(0)).unwrap();
    assert_eq!(
        (sent.state, sent.attempts, sent.sent_at),
        (RequestState::Sent, 1, Some(t(0)))
    );
    assert!(
        cib.due_requests(t(100_000), 10).unwrap().is_empty(),
        "sent is not due"
    );

    let back = cib
        .mark_failed(r.id, "connection refused", Failure::Transient, t(10))
        .unwrap();
    assert_eq!(back.state, RequestState::Pending);
    assert_eq!(back.next_attempt_at, t(1010));
    assert_eq!(back.last_error.as_deref(), Some("connection refused"));
    assert!(cib.due_requests(t(1009), 10).unwrap().is_empty());
    assert_eq!(cib.due_requests(t(1010), 10).unwrap().len(), 1);
    assert_eq!(cib.next_due_at().unwrap(), Some(t(1010)));

    cib.mark_sent(r.id, t(1010)).unwrap();
    let back = cib
        .mark_failed(r.id, "timeout", Failure::Transient, t(1020))
        .unwrap();
    assert_eq!(
        back.next_attempt_at,
        t(1020 + 1500),
        "capped at max_backoff"
    );

    cib.mark_sent(r.id, t(3000)).unwrap();
    let failed = cib
        .mark_failed(r.id, "timeout", Failure::Transient, t(3001))
        .unwrap();
    assert_eq!((failed.state, failed.attempts), (RequestState::Failed, 3));
    let alerts = cib.alerts(true, 10).unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].kind, alert_kind::RPC_ERROR);
    assert!(
        alerts[0].message.contains("gave up after 3 attempts"),
        "{}",
        alerts[0].message
    );
    assert_eq!(
        cib.module("dev1", m.module_id).unwrap().status,
        ModuleStatus::Built
    );

    // A failed deploy can be asked for again.
    cib.request("dev1", m.module_id, Action::Deploy, None)
        .unwrap();
}

#[test]
fn a_permanent_failure_is_not_retried() {
    let mut cib = cib_with_devices(&["dev1"]);
    let m = cib
        .construct_module(&NewModule::new("dev1", "m", "dns-end-tag"))
        .unwrap();
    let r = cib
        .request("dev1", m.module_id, Action::Deploy, Some(t(0)))
        .unwrap();
    cib.mark_sent(r.id, t(0)).unwrap();
    let r = cib
        .mark_failed(r.id, "invalid-value", Failure::Permanent, t(1))
        .unwrap();
    assert_eq!((r.state, r.finished_at), (RequestState::Failed, Some(t(1))));
    assert!(cib.due_requests(t(i64::MAX / 2), 10).unwrap().is_empty());
}

#[test]
fn deploy_at_a_time_is_not_due_before_it() {
    let mut cib = cib_with_devices(&["dev1"]);
    let m = cib
        .construct_module(&NewModule::new("dev1", "m", "dns-end-tag"))
        .unwrap();
    let r = cib
        .request("dev1", m.module_id, Action::Deploy, Some(t(60_000)))
        .unwrap();
    assert_eq!(r.not_before, t(60_000));
    assert!(cib.due_requests(t(59_999), 10).unwrap().is_empty());
    assert_eq!(cib.due_requests(t(60_000), 10).unwrap()[0].id, r.id);
}

#[test]
fn requests_of_one_module_run_in_order_and_confirmation_updates_the_module() {
    let mut cib = cib_with_devices(&["dev1"]);
    let m = cib
        .construct_module(&NewModule::new("dev1", "m", "dns-front-tag"))
        .unwrap();
    let deploy = cib
        .request("dev1", m.module_id, Action::Deploy, Some(t(0)))
        .unwrap();
    let prio = cib
        .request("dev1", m.module_id, Action::SetPriority(5), Some(t(0)))
        .unwrap();
    let off = cib
        .request("dev1", m.module_id, Action::Deactivate, Some(t(0)))
        .unwrap();

    let due: Vec<i64> = cib
        .due_requests(t(0), 10)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        due,
        vec![deploy.id],
        "only the oldest open request of a module is due"
    );
    cib.mark_sent(deploy.id, t(0)).unwrap();
    assert!(
        cib.due_requests(t(0), 10).unwrap().is_empty(),
        "still waiting for the deploy"
    );
    cib.mark_confirmed(deploy.id, t(1)).unwrap();
    let m1 = cib.module("dev1", m.module_id).unwrap();
    assert_eq!(
        (m1.status, m1.deployed_at),
        (ModuleStatus::Deployed, Some(t(1)))
    );

    for (r, at) in [(prio.id, 2), (off.id, 3)] {
        assert_eq!(cib.due_requests(t(at), 10).unwrap()[0].id, r);
        cib.mark_sent(r, t(at)).unwrap();
        cib.mark_confirmed(r, t(at)).unwrap();
    }
    let m2 = cib.module("dev1", m.module_id).unwrap();
    assert_eq!((m2.priority, m2.activated), (5, false));

    let dep = cib
        .request("dev1", m.module_id, Action::Deprecate, Some(t(4)))
        .unwrap();
    cib.mark_sent(dep.id, t(4)).unwrap();
    cib.mark_confirmed(dep.id, t(4)).unwrap();
    assert!(cib.module("dev1", m.module_id).unwrap().deprecated);
    let e = cib
        .request("dev1", m.module_id, Action::Deprecate, None)
        .unwrap_err();
    assert!(e.to_string().contains("already deprecated"), "{e}");

    let events: Vec<String> = cib
        .history(&HistoryFilter {
            device: Some("dev1".into()),
            module_id: Some(m.module_id),
            limit: None,
        })
        .unwrap()
        .into_iter()
        .map(|h| h.event)
        .filter(|e| e.starts_with("module-") || e == "priority-set")
        .collect();
    assert_eq!(
        events,
        [
            "module-deprecated",
            "module-deactivated",
            "priority-set",
            "module-deployed",
            "module-built"
        ]
    );
}

#[test]
fn revoke_supersedes_pending_requests_and_is_immediate_for_a_never_sent_module() {
    let mut cib = cib_with_devices(&["dev1"]);
    let m = cib
        .construct_module(&NewModule::new("dev1", "m", "dns-front-tag"))
        .unwrap();
    let deploy = cib
        .request("dev1", m.module_id, Action::Deploy, Some(t(0)))
        .unwrap();
    let revoke = cib
        .request("dev1", m.module_id, Action::Revoke, None)
        .unwrap();
    assert_eq!(
        revoke.state,
        RequestState::Confirmed,
        "nothing to take back from the device"
    );
    assert_eq!(
        cib.get_request(deploy.id).unwrap().state,
        RequestState::Cancelled
    );
    let m = cib.module("dev1", m.module_id).unwrap();
    assert_eq!(m.status, ModuleStatus::Revoked);
    assert!(cib.open_requests(None).unwrap().is_empty());
    // The name is free again; the id is not.
    let again = cib
        .construct_module(&NewModule::new("dev1", "m", "dns-front-tag"))
        .unwrap();
    assert_eq!(again.module_id, m.module_id + 1);

    // Once sent, a revoke must go to the device and waits for the deploy.
    let d = cib
        .request("dev1", again.module_id, Action::Deploy, Some(t(0)))
        .unwrap();
    cib.mark_sent(d.id, t(0)).unwrap();
    let revoke = cib
        .request("dev1", again.module_id, Action::Revoke, Some(t(0)))
        .unwrap();
    assert_eq!(revoke.state, RequestState::Pending);
    assert!(cib.due_requests(t(0), 10).unwrap().is_empty());
    cib.mark_confirmed(d.id, t(1)).unwrap();
    cib.mark_sent(revoke.id, t(2)).unwrap();
    cib.mark_confirmed(revoke.id, t(3)).unwrap();
    let gone = cib.module("dev1", again.module_id).unwrap();
    assert_eq!(
        (gone.status, gone.revoked_at),
        (ModuleStatus::Revoked, Some(t(3)))
    );
    let e = cib
        .request("dev1", again.module_id, Action::Activate, None)
        .unwrap_err();
    assert!(e.to_string().contains("is revoked"), "{e}");
}

#[test]
fn cancel_and_requeue_follow_the_state_machine() {
    let mut cib = cib_with_devices(&["dev1"]);
    let m = cib
        .construct_module(&NewModule::new("dev1", "m", "dns-front-tag"))
        .unwrap();
    let r = cib
        .request("dev1", m.module_id, Action::Deploy, Some(t(0)))
        .unwrap();
    let e = cib.requeue(r.id, t(0)).unwrap_err();
    assert!(matches!(e, CibError::InvalidState { .. }), "{e}");
    cib.mark_sent(r.id, t(0)).unwrap();
    let back = cib.requeue(r.id, t(5)).unwrap();
    assert_eq!(
        (back.state, back.attempts, back.next_attempt_at),
        (RequestState::Pending, 1, t(5))
    );
    let c = cib.cancel_request(r.id).unwrap();
    assert_eq!(c.state, RequestState::Cancelled);
    assert!(matches!(
        cib.cancel_request(r.id),
        Err(CibError::InvalidState { .. })
    ));
    assert!(matches!(
        cib.mark_sent(r.id, t(6)),
        Err(CibError::InvalidState { .. })
    ));
}

// ===== atomicity =====

#[test]
fn a_batch_with_one_bad_entry_leaves_no_partial_rows() {
    let mut cib = cib_with_devices(&["dev1", "dev2"]);
    let before = snapshot(&cib);
    let batch = [
        NewModule::new("dev1", "m", "dns-front-tag"),
        NewModule::new("dev2", "m", "dns-front-tag"),
        NewModule::new("ghost", "m", "dns-front-tag"), // fails inside the transaction
    ];
    let e = cib.construct_and_deploy(&batch, None).unwrap_err();
    assert!(
        matches!(e, CibError::UnknownDevice(ref d) if d == "ghost"),
        "{e}"
    );
    assert_eq!(snapshot(&cib), before);
    assert!(cib.modules_of_device("dev1").unwrap().is_empty());
    // The id counter rolled back too.
    let m = cib
        .construct_module(&NewModule::new("dev1", "m", "dns-front-tag"))
        .unwrap();
    assert_eq!(m.module_id, 1);
}

#[test]
fn history_is_append_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cib.sqlite");
    let mut cib = Cib::open(&path).unwrap();
    cib.add_device(&new_device("dev1", "192.0.2.1")).unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    assert!(raw.execute("UPDATE history SET event = 'x'", []).is_err());
    assert!(raw.execute("DELETE FROM history", []).is_err());
    assert_eq!(cib.history(&HistoryFilter::default()).unwrap().len(), 1);
}

// ===== concurrency =====

#[test]
fn two_connections_share_the_file_and_never_hand_out_the_same_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cib.sqlite");
    let mut a = Cib::open(&path).unwrap();
    let b = Cib::open(&path).unwrap();
    a.add_device(&new_device("dev1", "192.0.2.1")).unwrap();
    assert_eq!(b.device("dev1").unwrap().name, "dev1", "B sees A's commit");

    let workers: Vec<_> = (0..2)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut cib = Cib::open(&path).unwrap();
                (0..40)
                    .map(|i| {
                        cib.construct_module(&NewModule::new(
                            "dev1",
                            &format!("w{w}-{i}"),
                            "rate-limit",
                        ))
                        .unwrap()
                        .module_id
                    })
                    .collect::<Vec<u32>>()
            })
        })
        .collect();
    let mut ids: Vec<u32> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=80).collect::<Vec<u32>>());
    assert_eq!(b.modules_of_device("dev1").unwrap().len(), 80);
}

// ===== crash and resume =====

#[test]
fn after_a_crash_mid_deploy_the_resume_queries_yield_exactly_the_unfinished_requests() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cib.sqlite");
    let names: Vec<String> = (0..50).map(|i| format!("dev{i:02}")).collect();
    {
        let mut cib = Cib::open(&path).unwrap();
        for (i, n) in names.iter().enumerate() {
            cib.add_device(&new_device(n, &format!("198.51.100.{}", i + 1)))
                .unwrap();
        }
        let batch: Vec<NewModule> = names
            .iter()
            .map(|n| NewModule::new(n, "front", "dns-front-tag"))
            .collect();
        cib.construct_and_deploy(&batch, Some(t(0))).unwrap();
        let due = cib.due_requests(t(0), 100).unwrap();
        assert_eq!(due.len(), 50);
        for r in &due[..20] {
            cib.mark_sent(r.id, t(1)).unwrap();
        }
        for r in &due[..10] {
            cib.mark_confirmed(r.id, t(2)).unwrap();
        }
        // Crash: no orderly close of the connection.
        std::mem::forget(cib);
    }
    let mut cib = Cib::open(&path).unwrap();
    let in_flight: Vec<String> = cib
        .in_flight_requests()
        .unwrap()
        .into_iter()
        .map(|r| r.device)
        .collect();
    assert_eq!(in_flight, names[10..20].to_vec(), "sent but not confirmed");
    assert_eq!(cib.open_requests(None).unwrap().len(), 40);
    assert_eq!(
        cib.due_requests(t(3), 100).unwrap().len(),
        30,
        "in-flight ones are not due until settled"
    );

    // Resume: settle the in-flight ones (here: the device lacked them), then drain.
    assert_eq!(cib.requeue_all_in_flight(t(3)).unwrap().len(), 10);
    loop {
        let due = cib.due_requests(t(4), 7).unwrap();
        if due.is_empty() {
            break;
        }
        for r in due {
            cib.mark_sent(r.id, t(4)).unwrap();
            cib.mark_confirmed(r.id, t(5)).unwrap();
        }
    }
    assert_exactly_one_deployment_per_device(&cib, &names);
}

fn assert_exactly_one_deployment_per_device(cib: &Cib, names: &[String]) {
    assert!(cib.open_requests(None).unwrap().is_empty());
    for n in names {
        let modules = cib.modules_of_device(n).unwrap();
        assert_eq!(modules.len(), 1, "{n}");
        assert_eq!(modules[0].status, ModuleStatus::Deployed, "{n}");
        let reqs = cib.requests_of_module(n, modules[0].module_id).unwrap();
        assert_eq!(reqs.len(), 1, "{n}");
        assert_eq!(reqs[0].state, RequestState::Confirmed, "{n}");
        let deployed_events = cib
            .history(&HistoryFilter {
                device: Some(n.clone()),
                module_id: None,
                limit: None,
            })
            .unwrap()
            .into_iter()
            .filter(|h| h.event == "module-deployed")
            .count();
        assert_eq!(deployed_events, 1, "{n}");
    }
}

const CHILD_DB: &str = "L45_CIB_TEST_CHILD_DB";

/// Run by `sigkill_mid_deploy_leaves_a_consistent_resumable_cib` in a child
/// process, which it kills. Works through the due requests slowly, forever.
#[test]
#[ignore = "helper process for the SIGKILL test"]
fn child_deploy_worker() {
    let Ok(path) = std::env::var(CHILD_DB) else {
        return;
    };
    let mut cib = Cib::open(&path).unwrap();
    // Never outlive a parent that failed before killing us.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < give_up {
        for r in cib.due_requests(Timestamp::now(), 1).unwrap() {
            cib.mark_sent(r.id, Timestamp::now()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(3)); // "the RPC"
            cib.mark_confirmed(r.id, Timestamp::now()).unwrap();
        }
    }
}

/// Kills the child also when an assertion fails first.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigkill_mid_deploy_leaves_a_consistent_resumable_cib() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cib.sqlite");
    let names: Vec<String> = (0..50).map(|i| format!("dev{i:02}")).collect();
    {
        let mut cib = Cib::open(&path).unwrap();
        for (i, n) in names.iter().enumerate() {
            cib.add_device(&new_device(n, &format!("198.51.100.{}", i + 1)))
                .unwrap();
        }
        let batch: Vec<NewModule> = names
            .iter()
            .map(|n| NewModule::new(n, "front", "dns-front-tag"))
            .collect();
        cib.construct_and_deploy(&batch, None).unwrap();
    }
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_deploy_worker",
            "--ignored",
            "--test-threads=1",
        ])
        .env(CHILD_DB, &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let observer = Cib::open(&path).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let confirmed = observer
            .requests_in_state(RequestState::Confirmed, 100)
            .unwrap()
            .len();
        if confirmed >= 15 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "child made no progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.0.kill().unwrap(); // SIGKILL on Unix
    child.0.wait().unwrap();
    drop(observer);

    let mut cib = Cib::open(&path).unwrap();
    let confirmed = cib
        .requests_in_state(RequestState::Confirmed, 100)
        .unwrap()
        .len();
    let open = cib.open_requests(None).unwrap();
    assert!(confirmed < 50, "killed mid-way");
    assert_eq!(
        confirmed + open.len(),
        50,
        "every request is confirmed or still open"
    );
    assert!(
        cib.in_flight_requests().unwrap().len() <= 1,
        "one worker, one request in flight at most"
    );
    for d in cib.status_summary().unwrap() {
        assert_eq!(d.modules_built + d.modules_deployed, 1, "{d:?}");
        assert_eq!(
            d.modules_deployed + d.requests_pending + d.requests_sent,
            1,
            "{d:?}"
        );
    }
    let now = Timestamp::now();
    cib.requeue_all_in_flight(now).unwrap();
    while let Some(r) = cib.due_requests(now, 1).unwrap().pop() {
        cib.mark_sent(r.id, now).unwrap();
        cib.mark_confirmed(r.id, now).unwrap();
    }
    assert_exactly_one_deployment_per_device(&cib, &names);
}

// ===== reports, security, alerts =====

#[test]
fn reports_update_deployments_and_flag_unknown_missing_and_idle_deprecated_modules() {
    let mut cib = cib_with_devices(&["dev1"]);
    let a = deployed(&mut cib, NewModule::new("dev1", "a", "dns-front-tag"));
    let b = deployed(&mut cib, NewModule::new("dev1", "b", "rate-limit"));
    let dep = cib
        .request("dev1", b.module_id, Action::Deprecate, Some(t(0)))
        .unwrap();
    cib.mark_sent(dep.id, t(0)).unwrap();
    cib.mark_confirmed(dep.id, t(0)).unwrap();
    let c = deployed(&mut cib, NewModule::new("dev1", "c", "dns-end-tag"));

    let report = [
        ModuleReport {
            module_id: a.module_id,
            state: Some(ReportedState::Active),
            activated: Some(true),
            active_ts: Some("2027-01-01T00:00:00Z".into()),
            socket_count: 3,
            bytes_sent: u64::MAX,
            messages_sent: 12,
            ..ModuleReport::default()
        },
        ModuleReport {
            module_id: b.module_id,
            state: Some(ReportedState::Deprecated),
            socket_count: 0,
            ..ModuleReport::default()
        },
        ModuleReport {
            module_id: 77,
            state: Some(ReportedState::Active),
            ..ModuleReport::default()
        },
    ];
    let outcome = cib.record_report("dev1", &report, t(100)).unwrap();
    assert_eq!(outcome.unknown_on_device, vec![77]);
    assert_eq!(outcome.missing_on_device, vec![c.module_id]);
    assert_eq!(outcome.auto_revoke_requests.len(), 1);
    let revoke = cib.get_request(outcome.auto_revoke_requests[0]).unwrap();
    assert_eq!(
        (revoke.action, revoke.module_id),
        (Action::Revoke, b.module_id)
    );

    let deps = cib.deployments(Some("dev1")).unwrap();
    assert_eq!(deps.len(), 2);
    assert_eq!(
        (deps[0].state, deps[0].socket_count, deps[0].messages_sent),
        (ReportedState::Active, 3, 12)
    );
    assert_eq!(deps[0].bytes_sent, i64::MAX as u64, "clamped, not failed");
    assert_eq!(deps[0].last_report_at, t(100));

    // Same report again: no new alerts, no second revoke.
    let again = cib.record_report("dev1", &report, t(200)).unwrap();
    assert!(again.auto_revoke_requests.is_empty());
    let kinds: Vec<String> = cib
        .alerts(true, 10)
        .unwrap()
        .into_iter()
        .map(|a| a.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            alert_kind::MISSING_ON_DEVICE,
            alert_kind::UNKNOWN_MODULE_ON_DEVICE
        ]
    );
}

#[test]
fn alerts_list_unacknowledged_first_and_acknowledging_keeps_them() {
    let mut cib = cib_with_devices(&["dev1"]);
    let alert = |kind: &str| NewAlert {
        severity: Severity::Warning,
        device: Some("dev1".into()),
        module_id: None,
        kind: kind.into(),
        message: format!("{kind} happened"),
    };
    let first = cib
        .raise_alert(&alert(alert_kind::DEVICE_UNREACHABLE))
        .unwrap();
    let second = cib
        .raise_alert(&alert(alert_kind::ACTIVE_ON_ONE_END_ONLY))
        .unwrap();
    assert_eq!(
        cib.raise_alert(&alert(alert_kind::DEVICE_UNREACHABLE))
            .unwrap(),
        first,
        "deduplicated"
    );
    cib.acknowledge_alert(second).unwrap();
    let third = cib
        .raise_alert(&alert(alert_kind::ACTIVE_ON_ONE_END_ONLY))
        .unwrap();
    assert_ne!(
        third, second,
        "a new occurrence after acknowledging is a new alert"
    );
    let ids: Vec<(i64, bool)> = cib
        .alerts(false, 10)
        .unwrap()
        .into_iter()
        .map(|a| (a.id, a.acknowledged))
        .collect();
    assert_eq!(ids, [(third, false), (first, false), (second, true)]);
    assert_eq!(cib.alerts(true, 10).unwrap().len(), 2);
    let mut bad = alert("x");
    bad.device = Some("ghost".into());
    assert!(matches!(
        cib.raise_alert(&bad),
        Err(CibError::UnknownDevice(_))
    ));
}

#[test]
fn security_checks_are_due_per_window_and_a_failure_queues_a_revoke() {
    let mut cib = cib_with_devices(&["dev1"]);
    let a = deployed(&mut cib, NewModule::new("dev1", "a", "dns-front-tag"));
    let b = deployed(&mut cib, NewModule::new("dev1", "b", "dns-front-tag"));
    cib.construct_module(&NewModule::new("dev1", "not-deployed", "dns-front-tag"))
        .unwrap();
    let due = |cib: &Cib, at| -> Vec<u32> {
        cib.security_checks_due(t(at), 5000)
            .unwrap()
            .into_iter()
            .map(|m| m.module_id)
            .collect()
    };
    assert_eq!(due(&cib, 0), [a.module_id, b.module_id]);
    assert_eq!(
        cib.security_checks_due(t(0), 5000).unwrap()[0].key,
        a.key,
        "keys come along"
    );

    assert_eq!(
        cib.record_security_check("dev1", a.module_id, true, "ok", t(0))
            .unwrap(),
        SecurityOutcome::Passed
    );
    assert_eq!(due(&cib, 4999), [b.module_id]);
    assert_eq!(due(&cib, 5000), [a.module_id, b.module_id]);

    let out = cib
        .record_security_check("dev1", b.module_id, false, "tag mismatch", t(10))
        .unwrap();
    let SecurityOutcome::FailedRevokeRequested { request_id } = out else {
        panic!("{out:?}");
    };
    assert_eq!(cib.get_request(request_id).unwrap().action, Action::Revoke);
    assert_eq!(
        due(&cib, 100_000),
        [a.module_id],
        "no checks while a revoke is under way"
    );
    let alerts = cib.alerts(true, 10).unwrap();
    assert_eq!(
        (alerts[0].kind.as_str(), alerts[0].severity),
        (alert_kind::SECURITY_CHECK_FAILED, Severity::Critical)
    );
    let d = cib.deployments(Some("dev1")).unwrap();
    let db = d.iter().find(|d| d.module_id == b.module_id).unwrap();
    assert_eq!(
        (
            db.last_security_ok,
            db.security_failures,
            db.last_security_check
        ),
        (Some(false), 1, Some(t(10)))
    );
    // A second failure reuses the open revoke.
    let again = cib
        .record_security_check("dev1", b.module_id, false, "again", t(11))
        .unwrap();
    assert_eq!(again, SecurityOutcome::FailedRevokeRequested { request_id });
}

// ===== devices, host keys =====

#[test]
fn host_keys_are_trusted_on_first_use_and_mismatches_alert() {
    let mut cib = cib_with_devices(&["dev1"]);
    let k1 = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
    let k2 = "SHA256:AAAAztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
    assert_eq!(
        cib.check_host_key("dev1", k1).unwrap(),
        HostKeyCheck::PinnedNow
    );
    assert_eq!(
        cib.device("dev1").unwrap().host_key_fingerprint.as_deref(),
        Some(k1)
    );
    assert_eq!(
        cib.check_host_key("dev1", k1).unwrap(),
        HostKeyCheck::Matches
    );
    assert_eq!(
        cib.check_host_key("dev1", k2).unwrap(),
        HostKeyCheck::Mismatch { pinned: k1.into() }
    );
    assert_eq!(
        cib.alerts(true, 10).unwrap()[0].kind,
        alert_kind::HOST_KEY_MISMATCH
    );
    assert_eq!(
        cib.device("dev1").unwrap().host_key_fingerprint.as_deref(),
        Some(k1),
        "pin unchanged"
    );
    cib.set_host_key("dev1", Some(k2)).unwrap();
    assert_eq!(
        cib.check_host_key("dev1", k2).unwrap(),
        HostKeyCheck::Matches
    );
}

#[test]
fn devices_round_trip_and_removal_is_refused_while_modules_are_deployed() {
    let mut cib = Cib::open_in_memory().unwrap();
    let mut d = new_device("edge-1", "[2001:db8::1]");
    d.role = Some("dns-server".into());
    d.labels = vec!["site=lab".into(), "dns".into()];
    let added = cib.add_device(&d).unwrap();
    assert_eq!(
        (added.address.as_str(), added.host()),
        ("[2001:db8::1]:830", "2001:db8::1")
    );
    assert_eq!(added.labels, d.labels);
    assert_eq!(cib.devices_with_label("site=lab").unwrap().len(), 1);
    let mut bad = new_device("edge-2", "192.0.2.1");
    bad.labels = vec!["a,b".into()];
    assert!(matches!(
        cib.add_device(&bad),
        Err(CibError::InvalidParameter { .. })
    ));

    deployed(&mut cib, NewModule::new("edge-1", "m", "dns-front-tag"));
    let e = cib.remove_device("edge-1").unwrap_err();
    assert!(matches!(e, CibError::DeviceInUse { live: 1, .. }), "{e}");
}

#[test]
fn status_summary_counts_per_device() {
    let mut cib = cib_with_devices(&["a", "b"]);
    deployed(&mut cib, NewModule::new("a", "m1", "dns-front-tag"));
    let m2 = cib
        .construct_module(&NewModule::new("a", "m2", "dns-front-tag"))
        .unwrap();
    cib.request("a", m2.module_id, Action::Deploy, None)
        .unwrap();
    let s = cib.status_summary().unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(
        (
            s[0].device.as_str(),
            s[0].modules_built,
            s[0].modules_deployed,
            s[0].requests_pending
        ),
        ("a", 1, 1, 1)
    );
    assert_eq!(
        s[1],
        DeviceStatus {
            device: "b".into(),
            ..DeviceStatus::default()
        }
    );
}

#[test]
fn counts_by_request_state_and_open_alert_kind() {
    let mut cib = cib_with_devices(&["a"]);
    assert_eq!(cib.request_counts().unwrap(), vec![]);
    deployed(&mut cib, NewModule::new("a", "m1", "dns-front-tag"));
    let m2 = cib
        .construct_module(&NewModule::new("a", "m2", "dns-front-tag"))
        .unwrap();
    cib.request("a", m2.module_id, Action::Deploy, None)
        .unwrap();
    assert_eq!(
        cib.request_counts().unwrap(),
        vec![(RequestState::Confirmed, 1), (RequestState::Pending, 1)]
    );
    let alert = |kind: &str| NewAlert {
        severity: Severity::Warning,
        device: Some("a".into()),
        module_id: None,
        kind: kind.into(),
        message: "x".into(),
    };
    let first = cib.raise_alert(&alert("module-bypassed")).unwrap();
    cib.raise_alert(&alert("device-unreachable")).unwrap();
    cib.acknowledge_alert(first).unwrap();
    assert_eq!(
        cib.open_alert_counts().unwrap(),
        vec![("device-unreachable".to_string(), 1)]
    );
}

// ===== middleboxes =====

#[test]
fn flow_lookup_finds_the_module_and_its_inverse_for_a_device_pair() {
    let mut cib = Cib::open_in_memory().unwrap();
    cib.add_device(&new_device("client", "10.0.0.1")).unwrap();
    cib.add_device(&new_device("server", "10.0.0.2")).unwrap();
    cib.add_middlebox(&NewMiddlebox {
        name: "tap1".into(),
        address: "10.0.0.254:22".into(),
        mb_type: "wireshark".into(),
    })
    .unwrap();
    let mut m = NewModule::new("client", "front", "dns-front-tag");
    m.match_rules.protocol = Some(Protocol::Udp);
    m.match_rules.destination_port = Some(53);
    let client_mod = deployed(&mut cib, m);
    let mut s = NewModule::new("server", "front", "dns-front-tag");
    s.match_rules.source_port = Some(53);
    s.priority = 10;
    deployed(&mut cib, s);
    deployed(&mut cib, NewModule::new("server", "rate", "rate-limit")); // matches anything

    let sha = "a".repeat(64);
    let e = cib
        .request_middlebox_deployment("tap1", "client", client_mod.module_id)
        .unwrap_err();
    assert!(matches!(e, CibError::NoInverse { .. }), "{e}");
    cib.register_inverse(
        "dns-front-tag",
        "wireshark",
        "l45-dissector dns-front-tag",
        &sha,
    )
    .unwrap();
    let dep = cib
        .request_middlebox_deployment("tap1", "client", client_mod.module_id)
        .unwrap();
    assert_eq!(dep.state, MiddleboxDeploymentState::Pending);
    assert!(matches!(
        cib.request_middlebox_deployment("tap1", "client", client_mod.module_id),
        Err(CibError::Duplicate { .. })
    ));
    assert!(matches!(
        cib.set_middlebox_deployment_state(dep.id, MiddleboxDeploymentState::Deployed, None, None),
        Err(CibError::InvalidParameter { .. })
    ));
    let done = cib
        .set_middlebox_deployment_state(
            dep.id,
            MiddleboxDeploymentState::Deployed,
            Some(&"b".repeat(64)),
            None,
        )
        .unwrap();
    assert_eq!(done.state, MiddleboxDeploymentState::Deployed);
    assert_eq!(cib.middlebox_deployments(Some("tap1")).unwrap(), vec![done]);

    let q = FlowQuery {
        middlebox: "tap1".into(),
        protocol: Protocol::Udp,
        source: "10.0.0.1".parse().unwrap(),
        source_port: 40000,
        destination: "10.0.0.2".parse().unwrap(),
        destination_port: 53,
    };
    let found = cib.flow_lookup(&q).unwrap();
    let summary: Vec<(&str, &str, FlowEnd, bool, bool)> = found
        .iter()
        .map(|f| {
            (
                f.device.as_str(),
                f.module_name.as_str(),
                f.end,
                f.inverse.is_some(),
                f.inverse_deployed,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("server", "front", FlowEnd::Destination, true, false),
            ("client", "front", FlowEnd::Source, true, true),
            ("server", "rate", FlowEnd::Destination, false, false),
        ]
    );
    let other_port = FlowQuery {
        destination_port: 80,
        ..q.clone()
    };
    let names: Vec<String> = cib
        .flow_lookup(&other_port)
        .unwrap()
        .into_iter()
        .map(|f| f.module_name)
        .collect();
    assert_eq!(names, ["rate"]);
    let stranger = FlowQuery {
        source: "10.9.9.9".parse().unwrap(),
        destination: "10.9.9.8".parse().unwrap(),
        ..q
    };
    assert!(cib.flow_lookup(&stranger).unwrap().is_empty());
    assert!(matches!(
        cib.flow_lookup(&FlowQuery {
            middlebox: "nope".into(),
            ..stranger
        }),
        Err(CibError::UnknownMiddlebox(_))
    ));
}

// ===== batches =====

#[test]
fn batch_marks_are_all_or_nothing() {
    let mut cib = cib_with_devices(&["a", "b", "c"]);
    let mut ids = Vec::new();
    for d in ["a", "b", "c"] {
        let m = cib
            .construct_module(&NewModule::new(d, "tag", "dns-front-tag"))
            .unwrap();
        ids.push(
            cib.request(d, m.module_id, Action::Deploy, Some(t(0)))
                .unwrap()
                .id,
        );
    }
    // One already sent: the batch is refused as a whole, nothing changes.
    cib.mark_sent(ids[1], t(1)).unwrap();
    let before = snapshot(&cib);
    assert!(matches!(
        cib.mark_sent_many(&ids, t(2)),
        Err(CibError::InvalidState { .. })
    ));
    assert_eq!(snapshot(&cib), before);
    let rest = [ids[0], ids[2]];
    let sent = cib.mark_sent_many(&rest, t(2)).unwrap();
    assert!(sent
        .iter()
        .all(|r| r.state == RequestState::Sent && r.attempts == 1));
    let done = cib.mark_confirmed_many(&ids, t(3)).unwrap();
    assert!(done.iter().all(|r| r.state == RequestState::Confirmed));
    for d in ["a", "b", "c"] {
        assert!(cib
            .modules_of_device(d)
            .unwrap()
            .iter()
            .all(|m| m.status == ModuleStatus::Deployed));
    }
}
