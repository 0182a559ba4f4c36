//! What the NCO learns and decides: reports, security checks, alerts, devices and host keys, middlebox flows.

// Helpers outside #[test] fns are not covered by clippy.toml's allow-unwrap-in-tests.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

mod common;

use common::*;
use l45_cib::*;

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
