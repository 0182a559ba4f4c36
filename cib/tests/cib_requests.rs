//! The request state machine: retries, ordering, atomicity, concurrency, crash and resume, batches.

// Helpers outside #[test] fns are not covered by clippy.toml's allow-unwrap-in-tests.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

mod common;

use common::*;
use l45_cib::*;

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

fn fifty_device_names() -> Vec<String> {
    (0..50).map(|i| format!("dev{i:02}")).collect()
}

/// A CIB file holding `names` as devices and one deploy request per device.
fn fifty_devices_with_a_deploy_each(
    path: &std::path::Path,
    names: &[String],
    at: Option<Timestamp>,
) -> Cib {
    let mut cib = Cib::open(path).unwrap();
    for (i, n) in names.iter().enumerate() {
        cib.add_device(&new_device(n, &format!("198.51.100.{}", i + 1)))
            .unwrap();
    }
    let batch: Vec<NewModule> = names
        .iter()
        .map(|n| NewModule::new(n, "front", "dns-front-tag"))
        .collect();
    cib.construct_and_deploy(&batch, at).unwrap();
    cib
}

#[test]
fn after_a_crash_mid_deploy_the_resume_queries_yield_exactly_the_unfinished_requests() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cib.sqlite");
    let names = fifty_device_names();
    {
        let mut cib = fifty_devices_with_a_deploy_each(&path, &names, Some(t(0)));
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
    let names = fifty_device_names();
    {
        fifty_devices_with_a_deploy_each(&path, &names, None);
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
