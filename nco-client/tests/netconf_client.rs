//! The NCO's NETCONF client against the real device agent, in process, over
//! real SSH on loopback.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use l45_nco::netconf::{
    BackoffConfig, ConnectOptions, Datastore, EditOptions, HostKeyPolicy, NetconfError, Pool,
    Reply, Session, L45_NS,
};
use russh::keys::PublicKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_capabilities_and_connect_time() {
    let agent = TestAgent::start(64);
    let mut times = Vec::new();
    for _ in 0..5 {
        let s = within(20, agent.connect()).await;
        times.push(s.connect_time());
        s.close_session().await.expect("close-session");
    }
    let s = within(20, agent.connect()).await;
    assert!(s.session_id() > 0);
    assert!(s.has_capability("urn:ietf:params:netconf:base:1.1"));
    assert!(s.has_capability("urn:ietf:params:netconf:capability:notification:1.0"));
    assert!(s
        .server_capabilities()
        .iter()
        .any(|c| c.starts_with(L45_NS) && c.contains("module=layer45-customization")));
    assert_eq!(s.framing(), l45_netconf_proto::Framing::Chunked);
    assert_eq!(s.host_key_fingerprint(), agent.fingerprint);
    let avg = times.iter().sum::<Duration>() / times.len() as u32;
    eprintln!("connect+auth+hello, sequential: {times:?} (avg {avg:?})");

    // A second session gets another id; close-session ends it cleanly.
    let s2 = within(20, agent.connect()).await;
    assert_ne!(s2.session_id(), s.session_id());
    s2.close_session().await.expect("close-session");
    assert!(s2.is_closed());
    assert!(matches!(
        s2.rpc("<get/>").await,
        Err(NetconfError::Disconnected)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_client_key_authenticates() {
    let agent = TestAgent::start(8);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("id_rsa");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
        .arg(&path)
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("ssh-keygen not available; skipping RSA client key test");
        return;
    }
    // Restart the agent with the RSA key authorized too.
    let rsa_pub = PublicKey::read_openssh_file(path.with_extension("pub")).expect("pub");
    let rt = server_runtime(1);
    let state = tempfile::tempdir().expect("tempdir");
    let addr = spawn_agent(rt.handle(), state.path(), 0, 8, &agent.host, &[rsa_pub]);
    let opts = ConnectOptions::new(addr, USER, &path, HostKeyPolicy::TrustOnFirstUse);
    let s = within(20, Session::connect(opts))
        .await
        .expect("rsa connect");
    assert!(s.get_config(Datastore::Running, None).await.is_ok());
    drop(s);
    rt.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_key_pinning_and_auth_failures() {
    let agent = TestAgent::start(8);
    // TOFU reports the key actually presented.
    let s = within(
        20,
        Session::connect(agent.opts(HostKeyPolicy::TrustOnFirstUse)),
    )
    .await
    .expect("tofu connect");
    assert_eq!(s.host_key_fingerprint(), agent.fingerprint);
    drop(s);

    // Pinning without the SHA256: prefix or with padding also works.
    let bare = agent.fingerprint.trim_start_matches("SHA256:").to_string() + "=";
    within(
        20,
        Session::connect(agent.opts(HostKeyPolicy::Pinned(bare))),
    )
    .await
    .expect("pinned connect");

    // A wrong pin is refused with a typed error naming both keys.
    let other = fingerprint(&host_key());
    let err = within(
        20,
        Session::connect(agent.opts(HostKeyPolicy::Pinned(other.clone()))),
    )
    .await
    .expect_err("must refuse");
    match err {
        NetconfError::HostKeyMismatch { expected, got } => {
            assert_eq!(expected, other);
            assert_eq!(got, agent.fingerprint);
        }
        e => panic!("expected HostKeyMismatch, got {e:?}"),
    }

    // An unknown client key is refused.
    let stranger = client_key();
    let mut opts = agent.pinned();
    opts.key = stranger.path.clone();
    let err = within(20, Session::connect(opts)).await.expect_err("auth");
    assert!(matches!(err, NetconfError::Auth { .. }), "{err:?}");

    // A missing key file is a key error, nothing is connected.
    let mut opts = agent.pinned();
    opts.key = PathBuf::from("/nonexistent/key");
    assert!(matches!(
        Session::connect(opts).await,
        Err(NetconfError::Key { .. })
    ));

    // Nobody listening: connect error.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let mut opts = agent.pinned();
    opts.addr = closed_port.to_string();
    assert!(matches!(
        within(20, Session::connect(opts)).await,
        Err(NetconfError::Connect { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_config_edit_config_and_errors() {
    let agent = TestAgent::start(8);
    let s = within(20, agent.connect()).await;

    s.lock(Datastore::Running).await.expect("lock");
    s.edit_config(
        Datastore::Running,
        &module_xml(1, "a", ""),
        EditOptions::default(),
    )
    .await
    .expect("edit-config");
    s.unlock(Datastore::Running).await.expect("unlock");

    let data = s
        .get_config(Datastore::Running, Some(&module_filter(1)))
        .await
        .expect("get-config");
    assert!(data.contains("<name>a</name>"), "{data}");
    assert!(data.contains("dns-front-tag"), "{data}");
    assert!(data.starts_with("<customizations"), "{data}");

    // The generic rpc returns the <data> element itself.
    let reply = s
        .rpc(&format!(
            r#"<get-config><source><running/></source><filter type="subtree">{}</filter></get-config>"#,
            module_filter(1)
        ))
        .await
        .expect("rpc");
    assert!(matches!(&reply, Reply::Data(d) if d.starts_with("<data")));

    // A prefixed request works like an unprefixed one.
    let reply = s
        .rpc(r#"<nc:get-config xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0"><nc:source><nc:running/></nc:source></nc:get-config>"#)
        .await
        .expect("prefixed rpc");
    assert!(matches!(&reply, Reply::Data(d) if d.contains("<name>a</name>")));

    // Out-of-range value: invalid-value with an error-path.
    let bad = module_xml(1, "a", "<priority>70000</priority>");
    let reply = s
        .rpc(&format!(
            "<edit-config><target><running/></target><config>{bad}</config></edit-config>"
        ))
        .await
        .expect("rpc");
    let Reply::Errors(errors) = reply else {
        panic!("expected errors, got {reply:?}")
    };
    let e = &errors[0];
    assert_eq!(e.error_tag, "invalid-value", "{e:?}");
    assert_eq!(e.error_severity, "error");
    let path = e.error_path.as_deref().expect("error-path");
    assert!(path.contains("priority"), "{path}");
    // Its prefixes resolve through the recorded declarations.
    let prefix = path
        .trim_start_matches('/')
        .split(':')
        .next()
        .expect("prefix");
    assert!(e
        .error_path_namespaces
        .iter()
        .any(|(p, uri)| p.as_deref() == Some(prefix) && uri == L45_NS));
    // The typed helper reports the same as RpcFailed.
    match s
        .edit_config(Datastore::Running, &bad, EditOptions::default())
        .await
    {
        Err(NetconfError::RpcFailed(errs)) => assert_eq!(errs[0].error_tag, "invalid-value"),
        other => panic!("expected RpcFailed, got {other:?}"),
    }

    // Candidate + commit.
    s.edit_config(
        Datastore::Candidate,
        &module_xml(2, "b", ""),
        EditOptions {
            default_operation: Some(l45_nco::netconf::DefaultOperation::Merge),
            test_option: Some(l45_nco::netconf::TestOption::TestThenSet),
            error_option: Some(l45_nco::netconf::ErrorOption::RollbackOnError),
        },
    )
    .await
    .expect("edit candidate");
    assert!(!s
        .get_config(Datastore::Running, Some(&module_filter(2)))
        .await
        .expect("get")
        .contains("<name>b</name>"));
    s.commit().await.expect("commit");
    assert!(s
        .get_config(Datastore::Running, Some(&module_filter(2)))
        .await
        .expect("get")
        .contains("<name>b</name>"));

    // Our own RPCs.
    let report = s.report().await.expect("report");
    assert!(
        report.contains("<id>1</id>") && report.contains("<id>2</id>"),
        "{report}"
    );
    s.revoke_module(2).await.expect("revoke-module");
    let unknown = s.revoke_module(99).await;
    assert!(
        matches!(&unknown, Err(NetconfError::RpcFailed(e)) if e[0].error_tag == "data-missing"),
        "{unknown:?}"
    );

    // Malformed request bodies never reach the wire.
    assert!(matches!(
        s.rpc("<get>").await,
        Err(NetconfError::InvalidRequest(_))
    ));
    // Unknown operation: the server's rpc-error comes back.
    let reply = s
        .rpc(r#"<frobnicate xmlns="urn:nope"/>"#)
        .await
        .expect("rpc");
    assert!(matches!(reply, Reply::Errors(_)));
    assert!(!s.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_rpcs_on_one_session() {
    let agent = TestAgent::start(8);
    let s = Arc::new(within(20, agent.connect()).await);
    s.edit_config(
        Datastore::Running,
        &module_xml(7, "seven", ""),
        EditOptions::default(),
    )
    .await
    .expect("edit");
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..50u32 {
        let s = Arc::clone(&s);
        set.spawn(async move {
            if i % 2 == 0 {
                let d = s
                    .get_config(Datastore::Running, Some(&module_filter(7)))
                    .await?;
                Ok::<_, NetconfError>(d.contains("<name>seven</name>"))
            } else {
                // Distinct bodies so that mixed-up replies would show.
                let name = format!("m{i}");
                s.edit_config(
                    Datastore::Running,
                    &module_xml(100 + i, &name, ""),
                    EditOptions::default(),
                )
                .await?;
                let d = s
                    .get_config(Datastore::Running, Some(&module_filter(100 + i)))
                    .await?;
                Ok(d.contains(&format!("<name>{name}</name>")))
            }
        });
    }
    let mut ok = 0;
    while let Some(r) = within(30, set.join_next()).await {
        assert!(r.expect("task").expect("rpc"), "wrong reply content");
        ok += 1;
    }
    assert_eq!(ok, 50);
    assert_eq!(s.outstanding(), 0);
    eprintln!(
        "50 concurrent rpcs (75 requests) in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_size_limit() {
    let agent = TestAgent::start(8);
    let mut opts = agent.pinned();
    opts.max_reply_size = 512;
    let s = within(20, Session::connect(opts)).await.expect("connect");
    // <get> returns state data far above 512 bytes.
    match s.get(None).await {
        Err(NetconfError::ReplyTooLarge { size, limit }) => {
            assert_eq!(limit, 512);
            assert!(size > 512);
        }
        other => panic!("expected ReplyTooLarge, got {other:?}"),
    }
    // The session goes on.
    s.lock(Datastore::Running)
        .await
        .expect("lock after oversized");
    s.unlock(Datastore::Running).await.expect("unlock");
}

/// A TCP relay whose server-to-client direction can be held and whose
/// connections can be cut, to make a peer vanish with RPCs outstanding.
struct Relay {
    addr: SocketAddr,
    hold: tokio::sync::watch::Sender<bool>,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (hold, hold_rx) = tokio::sync::watch::channel(false);
        let tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let t = Arc::clone(&tasks);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let mut hold_rx = hold_rx.clone();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let down = tokio::spawn(async move {
                    let mut buf = vec![0u8; 16384];
                    loop {
                        if hold_rx.wait_for(|h| !*h).await.is_err() {
                            return;
                        }
                        match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                // Also hold what was read just before.
                                if hold_rx.wait_for(|h| !*h).await.is_err() {
                                    return;
                                }
                                if cw.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
                let mut g = t.lock().unwrap_or_else(|p| p.into_inner());
                g.push(up);
                g.push(down);
            }
        });
        Relay {
            addr,
            hold,
            tasks,
            accept,
        }
    }

    /// Closes every relayed connection at once (the peer vanishes).
    fn cut(&self) {
        self.accept.abort();
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_vanishing_fails_outstanding_rpcs_promptly() {
    let agent = TestAgent::start(8);
    let relay = Relay::start(agent.addr).await;
    let mut opts = agent.pinned();
    opts.addr = relay.addr.to_string();
    opts.rpc_timeout = Duration::from_secs(60);
    let s = Arc::new(within(20, Session::connect(opts)).await.expect("connect"));
    s.get_config(Datastore::Running, None).await.expect("works");

    // Replies are held back: an RPC times out, the session stays usable
    // and the late reply is dropped.
    relay.hold.send_replace(true);
    let r = s
        .rpc_with_timeout(
            "<get-config><source><running/></source></get-config>",
            Duration::from_millis(200),
        )
        .await;
    assert!(matches!(r, Err(NetconfError::Timeout { .. })), "{r:?}");
    assert_eq!(s.outstanding(), 0);
    relay.hold.send_replace(false);
    s.lock(Datastore::Running)
        .await
        .expect("lock after timeout");
    s.unlock(Datastore::Running).await.expect("unlock");

    // Held again: these RPCs stay outstanding.
    relay.hold.send_replace(true);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let s = Arc::clone(&s);
        set.spawn(async move {
            s.rpc("<get-config><source><running/></source></get-config>")
                .await
        });
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.outstanding() < 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.outstanding(), 10);

    let cut_at = Instant::now();
    relay.cut();
    while let Some(r) = within(5, set.join_next()).await {
        let r = r.expect("task");
        assert!(matches!(r, Err(NetconfError::Disconnected)), "{r:?}");
    }
    let took = cut_at.elapsed();
    eprintln!("10 outstanding rpcs failed {took:?} after the peer vanished");
    assert!(took < Duration::from_secs(2));
    assert!(s.is_closed());
    assert!(matches!(
        s.rpc("<get/>").await,
        Err(NetconfError::Disconnected)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_session_is_disconnected() {
    let mut agent = TestAgent::start(8);
    let s = Arc::new(within(20, agent.connect()).await);
    s.get_config(Datastore::Running, None).await.expect("works");
    let s2 = Arc::clone(&s);
    let busy = tokio::spawn(async move {
        let mut results = Vec::new();
        for _ in 0..200 {
            let r = s2.get_config(Datastore::Running, None).await;
            let end = r.is_err();
            results.push(r);
            if end {
                break;
            }
        }
        results
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    agent.kill();
    within(5, s.closed()).await;
    let results = within(5, busy).await.expect("task");
    if let Some(Err(e)) = results.last() {
        assert!(matches!(e, NetconfError::Disconnected), "{e:?}");
    }
    assert!(matches!(
        within(5, s.rpc("<get/>")).await,
        Err(NetconfError::Disconnected)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_from_another_sessions_edit() {
    let agent = TestAgent::start(8);
    let listener = within(20, agent.connect()).await;
    let mut rx = listener
        .create_subscription(None)
        .await
        .expect("create-subscription");
    let editor = within(20, agent.connect()).await;
    // An unknown stream is refused.
    assert!(matches!(
        editor.create_subscription(Some("nope")).await,
        Err(NetconfError::RpcFailed(_))
    ));
    editor
        .edit_config(
            Datastore::Running,
            &module_xml(5, "notified", ""),
            EditOptions::default(),
        )
        .await
        .expect("edit");
    let n = loop {
        let n = within(10, rx.recv()).await.expect("notification");
        if n.kind.as_ref().map(|k| k.1.as_str()) == Some("netconf-config-change") {
            break n;
        }
    };
    assert!(!n.event_time.is_empty());
    assert!(
        n.body.contains("<datastore>running</datastore>"),
        "{}",
        n.body
    );
    assert!(
        n.body
            .contains(&format!("<session-id>{}</session-id>", editor.session_id())),
        "{}",
        n.body
    );
    // RPCs still work on the subscribed session.
    listener
        .get_config(Datastore::Running, Some(&module_filter(5)))
        .await
        .expect("get-config while subscribed");
    // The receiver ends with the session.
    listener.close_session().await.expect("close");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(_) => panic!("notification receiver did not end"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_reconnects_with_backoff_after_restart() {
    let mut agent = TestAgent::start(64);
    let pool = Pool::new(BackoffConfig {
        base: Duration::from_millis(200),
        max: Duration::from_secs(2),
        jitter: 0.1,
    });
    // TOFU: the pool pins the first key it sees.
    pool.add_device("dev1", agent.opts(HostKeyPolicy::TrustOnFirstUse));
    assert!(matches!(
        pool.rpc("nope", "<get/>").await,
        Err(NetconfError::UnknownDevice(_))
    ));
    let reply = within(
        20,
        pool.rpc(
            "dev1",
            "<get-config><source><running/></source></get-config>",
        ),
    )
    .await
    .expect("rpc");
    assert!(matches!(reply, Reply::Data(_)));
    let first = pool.session("dev1").await.expect("session");
    let st = pool.state("dev1").expect("state");
    assert!(st.connected && st.consecutive_failures == 0 && st.session_id.is_some());

    agent.kill();
    within(5, first.closed()).await;
    drop(first);
    // The dead session is noticed and the reconnect fails: backoff starts.
    let err = within(20, pool.rpc("dev1", "<get/>"))
        .await
        .expect_err("down");
    assert!(matches!(err, NetconfError::Connect { .. }), "{err:?}");
    let st = pool.state("dev1").expect("state");
    assert!(!st.connected);
    assert!(st.is_unreachable());
    assert_eq!(st.consecutive_failures, 1);
    assert!(st.retry_in().is_some());
    // Within the backoff: refused at once, no attempt.
    let t = Instant::now();
    let err = pool.session("dev1").await.expect_err("backing off");
    assert!(
        matches!(err, NetconfError::Unreachable { failures: 1, .. }),
        "{err:?}"
    );
    assert!(t.elapsed() < Duration::from_millis(50));
    // Second failure doubles the delay.
    tokio::time::sleep(st.retry_in().unwrap_or_default()).await;
    let _ = pool.session("dev1").await.expect_err("still down");
    let st = pool.state("dev1").expect("state");
    assert_eq!(st.consecutive_failures, 2);
    assert!(st.retry_in().unwrap_or_default() > Duration::from_millis(250));

    agent.restart();
    let started = Instant::now();
    let session = loop {
        match pool.session("dev1").await {
            Ok(s) => break s,
            Err(NetconfError::Unreachable { retry_in, .. }) => {
                tokio::time::sleep(retry_in).await;
            }
            Err(e) => {
                assert!(
                    started.elapsed() < Duration::from_secs(15),
                    "never came back: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // Same host key as pinned on first use.
    assert_eq!(session.host_key_fingerprint(), agent.fingerprint);
    let st = pool.state("dev1").expect("state");
    assert!(st.connected && st.consecutive_failures == 0 && st.retry_at.is_none());
    pool.rpc(
        "dev1",
        "<get-config><source><running/></source></get-config>",
    )
    .await
    .expect("rpc after reconnect");
    eprintln!("pool reconnected {:?} after restart", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_200_devices_concurrently() {
    // NCO_SCALE_SESSIONS raises the count for manual runs (e.g. 1000).
    let n: usize = std::env::var("NCO_SCALE_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    const AGENTS: usize = 20;
    let rss_before = rss_kib();
    // 20 in-process agents (each a full agent with its own datastore) on one
    // 2-thread server runtime; 10 devices per agent, each device its own
    // SSH connection and NETCONF session.
    let rt = server_runtime(2);
    let key = client_key();
    let host = host_key();
    let fp = fingerprint(&host);
    let dirs: Vec<tempfile::TempDir> = (0..AGENTS)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let t = Instant::now();
    let addrs: Vec<SocketAddr> = dirs
        .iter()
        .map(|d| {
            spawn_agent(
                rt.handle(),
                d.path(),
                0,
                n,
                &host,
                std::slice::from_ref(&key.public),
            )
        })
        .collect();
    eprintln!("{AGENTS} agents started in {:?}", t.elapsed());
    let pool = Pool::new(BackoffConfig::default());
    for i in 0..n {
        let mut o = ConnectOptions::new(
            addrs[i % AGENTS],
            USER,
            &key.path,
            HostKeyPolicy::Pinned(fp.clone()),
        );
        o.connect_timeout = Duration::from_secs(40);
        o.hello_timeout = Duration::from_secs(40);
        pool.add_device(format!("dev{i:03}"), o);
    }
    let t = Instant::now();
    let results = within(60, pool.connect_all()).await;
    let connect_all = t.elapsed();
    let failed: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(failed.is_empty(), "failed: {failed:?}");
    let states = pool.states();
    assert_eq!(states.iter().filter(|s| s.connected).count(), n);
    let mut times: Vec<Duration> = states.iter().filter_map(|s| s.last_connect_time).collect();
    times.sort();
    eprintln!(
        "{n} sessions connected concurrently in {connect_all:?}; per-session connect+hello median {:?}, max {:?}; process RSS +{} KiB (client and agents together)",
        times[n / 2],
        times[n - 1],
        rss_kib().saturating_sub(rss_before)
    );
    // Every device answers, all at once.
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for name in pool.device_names() {
        let pool = pool.clone();
        set.spawn(async move {
            pool.rpc(
                &name,
                "<get-config><source><running/></source></get-config>",
            )
            .await
        });
    }
    let mut answered = 0;
    while let Some(r) = within(60, set.join_next()).await {
        assert!(matches!(r.expect("task"), Ok(Reply::Data(_))));
        answered += 1;
    }
    assert_eq!(answered, n);
    eprintln!("{n} concurrent get-config answered in {:?}", t.elapsed());
    drop(pool);
    rt.shutdown_background();
}
