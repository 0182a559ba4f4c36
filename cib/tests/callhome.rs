//! Devices that call home: pending, accept, reject, enrollment tokens, a
//! changed host key, check-ins and what construct does with them.

// Helpers outside #[test] fns are not covered by clippy.toml's allow-unwrap-in-tests.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use l45_cib::*;

const FP_A: &str = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const FP_B: &str = "SHA256:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

fn data(host: &str, machine: &str) -> DeviceData {
    DeviceData {
        host_name: host.into(),
        machine_id: machine.into(),
        architecture: "x86_64".into(),
        os_name: "Debian GNU/Linux 13 (trixie)".into(),
        kernel_release: "6.12.0".into(),
        agent_version: "0.1.0".into(),
        tap_backend: "userspace".into(),
        userspace_abi_version: Some(4),
        kernel_module_release: None,
        kinds: vec!["dns-front-tag".into(), "stream-tag".into()],
        last_start: Some("2026-12-06T00:00:00Z".into()),
    }
}

fn alerts_of(cib: &Cib, kind: &str) -> usize {
    cib.alerts(false, 100)
        .unwrap()
        .iter()
        .filter(|a| a.kind == kind)
        .count()
}

#[test]
fn unknown_device_is_pending_until_accepted() {
    let mut cib = Cib::open_in_memory().unwrap();
    let d = data("edge 7", "m1");
    let got = cib
        .record_unknown_call(FP_A, &d, "192.0.2.7:40000", "admin", "/k")
        .unwrap();
    assert_eq!(
        got,
        UnknownCall::Pending {
            name: "edge-7".into()
        }
    );
    // A second call refreshes, no second alert.
    cib.record_unknown_call(FP_A, &d, "192.0.2.7:40001", "admin", "/k")
        .unwrap();
    assert_eq!(alerts_of(&cib, alert_kind::DEVICE_PENDING), 1);
    let pending = cib.pending_devices().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].calls, 2);
    assert_eq!(pending[0].peer, "192.0.2.7:40001");
    assert!(cib.device_by_host_key(FP_A).unwrap().is_none());
    // Nothing can be built for a device that is not accepted.
    assert!(matches!(
        cib.construct_module(&NewModule::new("edge-7", "m", "dns-front-tag")),
        Err(CibError::UnknownDevice(_))
    ));
    let dev = cib
        .accept_pending("edge-7", None, Some("server"), &[])
        .unwrap();
    assert!(dev.call_home);
    assert_eq!(dev.host_key_fingerprint.as_deref(), Some(FP_A));
    assert_eq!(dev.role.as_deref(), Some("server"));
    assert!(cib.pending_devices().unwrap().is_empty());
    assert_eq!(
        cib.device_by_host_key(FP_A).unwrap().unwrap().name,
        "edge-7"
    );
    assert_eq!(cib.check_in("edge-7").unwrap().unwrap().data, d);
}

#[test]
fn rejected_device_stays_rejected() {
    let mut cib = Cib::open_in_memory().unwrap();
    cib.record_unknown_call(FP_A, &data("h", "m"), "192.0.2.1:1", "admin", "/k")
        .unwrap();
    cib.reject_pending("h").unwrap();
    let again = cib
        .record_unknown_call(FP_A, &data("h", "m"), "192.0.2.1:2", "admin", "/k")
        .unwrap();
    assert_eq!(again, UnknownCall::Rejected { name: "h".into() });
    assert!(matches!(
        cib.reject_pending("nope"),
        Err(CibError::UnknownPending(_))
    ));
}

#[test]
fn enrollment_token_is_single_use_and_stored_hashed() {
    let mut cib = Cib::open_in_memory().unwrap();
    let e = cib
        .create_enrollment("host9", Some("client"), &[], DEFAULT_ENROLLMENT_TTL_MS)
        .unwrap();
    assert!(e.token.starts_with("l45e-") && e.token.len() == 69);
    let d = data("host9", "m9");
    match cib
        .enroll(&e.token, FP_A, &d, "192.0.2.9:5000", "admin", "/k")
        .unwrap()
    {
        EnrollOutcome::Enrolled(dev) => {
            assert_eq!(dev.name, "host9");
            assert_eq!(dev.role.as_deref(), Some("client"));
            assert_eq!(dev.host_key_fingerprint.as_deref(), Some(FP_A));
            assert_eq!(dev.address, "192.0.2.9:5000");
        }
        other => panic!("{other:?}"),
    }
    // Reused (by another key): refused with an alert.
    let again = cib
        .enroll(
            &e.token,
            FP_B,
            &data("x", "mx"),
            "192.0.2.10:5000",
            "admin",
            "/k",
        )
        .unwrap();
    assert!(
        matches!(&again, EnrollOutcome::Refused(r) if r.contains("already used")),
        "{again:?}"
    );
    assert_eq!(alerts_of(&cib, alert_kind::ENROLLMENT_REFUSED), 1);
    assert!(cib.device_by_host_key(FP_B).unwrap().is_none());
    // Unknown token.
    let unknown = cib
        .enroll(
            "l45e-00",
            FP_B,
            &data("x", "mx"),
            "192.0.2.10:5000",
            "admin",
            "/k",
        )
        .unwrap();
    assert!(matches!(unknown, EnrollOutcome::Refused(_)));
}

#[test]
fn expired_token_is_refused() {
    let mut cib = Cib::open_in_memory().unwrap();
    let e = cib.create_enrollment("late", None, &[], 1).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let got = cib
        .enroll(
            &e.token,
            FP_A,
            &data("late", "m"),
            "192.0.2.1:1",
            "admin",
            "/k",
        )
        .unwrap();
    assert!(
        matches!(&got, EnrollOutcome::Refused(r) if r.contains("expired")),
        "{got:?}"
    );
}

#[test]
fn changed_host_key_of_known_machine_is_refused_with_critical_alert() {
    let mut cib = Cib::open_in_memory().unwrap();
    cib.record_unknown_call(FP_A, &data("h", "machine-1"), "192.0.2.1:1", "admin", "/k")
        .unwrap();
    cib.accept_pending("h", Some("dev1"), None, &[]).unwrap();
    let got = cib
        .record_unknown_call(FP_B, &data("h", "machine-1"), "192.0.2.1:2", "admin", "/k")
        .unwrap();
    assert_eq!(
        got,
        UnknownCall::HostKeyChanged {
            device: "dev1".into(),
            pinned: FP_A.into()
        }
    );
    let crit = cib.alerts(false, 100).unwrap();
    assert!(crit
        .iter()
        .any(|a| a.kind == alert_kind::HOST_KEY_MISMATCH && a.severity == Severity::Critical));
    assert!(cib.pending_devices().unwrap().is_empty());
}

#[test]
fn construct_refuses_a_kind_the_device_cannot_run() {
    let mut cib = Cib::open_in_memory().unwrap();
    cib.add_call_home_device(&NewDevice {
        name: "d1".into(),
        address: "192.0.2.1:4334".into(),
        username: "admin".into(),
        ssh_key_path: "/k".into(),
        host_key_fingerprint: Some(FP_A.into()),
        ..NewDevice::default()
    })
    .unwrap();
    cib.record_check_in("d1", &data("d1", "m"), "192.0.2.1:5555")
        .unwrap();
    assert_eq!(cib.device("d1").unwrap().address, "192.0.2.1:5555");
    let err = cib
        .construct_module(&NewModule::new("d1", "m", "rate-limit"))
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("d1") && text.contains("rate-limit"), "{text}");
    cib.construct_module(&NewModule::new("d1", "m", "stream-tag"))
        .unwrap();
    // A call-home device needs its host key.
    assert!(cib
        .add_call_home_device(&NewDevice {
            name: "d2".into(),
            address: "192.0.2.2:4334".into(),
            username: "admin".into(),
            ssh_key_path: "/k".into(),
            ..NewDevice::default()
        })
        .is_err());
}
