//! A confirmed commit whose rollback the tap refuses stays pending (and
//! stored), cannot be confirmed any more, and is retried until the tap
//! accepts it; then running is the configuration before the commit.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use l45_agent::agent::{Agent, AgentOptions};
use l45_agent::session::decode_rpc;
use l45_agent::sessions::SessionInfo;
use l45_netconf_proto::Decoder;
use l45_tap_control::{
    ChallengeAnswer, ModuleStats, RecordingTap, SocketInfo, TapControl, TapError, Transaction,
};

const BASE: &str = "urn:ietf:params:xml:ns:netconf:base:1.0";
const L45: &str = "urn:layer45:params:xml:ns:yang:layer45-customization";

/// The recording tap, refusing every transaction while `refuse` is set.
struct Refusing {
    inner: RecordingTap,
    refuse: AtomicBool,
    refused: AtomicU32,
}

impl TapControl for Refusing {
    fn name(&self) -> &'static str {
        "refusing"
    }
    fn prepare(&self, txn: &Transaction) -> Result<(), TapError> {
        if self.refuse.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(TapError::Backend("refused by the test".into()));
        }
        self.inner.prepare(txn)
    }
    fn apply(&self, txn: &Transaction) {
        self.inner.apply(txn)
    }
    fn abort(&self, txn: &Transaction) {
        self.inner.abort(txn)
    }
    fn module_stats(&self) -> Vec<ModuleStats> {
        self.inner.module_stats()
    }
    fn sockets(&self) -> Vec<SocketInfo> {
        self.inner.sockets()
    }
    fn challenge(
        &self,
        id: u32,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<ChallengeAnswer, TapError> {
        self.inner.challenge(id, nonce, ciphertext)
    }
}

fn rpc(agent: &Arc<Agent>, s: &SessionInfo, body: &str) -> String {
    let mut d = Decoder::new(agent.opts.limits);
    d.push(format!("<rpc xmlns=\"{BASE}\" message-id=\"1\">{body}</rpc>]]>]]>").as_bytes());
    let frame = d.next_frame().expect("frame").expect("one frame");
    let rpc = decode_rpc(agent, s, frame).expect("rpc");
    agent.handle(s, &rpc).0
}

fn module(id: u32) -> String {
    format!("<module><id>{id}</id><name>m{id}</name><kind>l45:dns-front-tag</kind></module>")
}

fn edit(target: &str, modules: &str) -> String {
    format!(
        "<edit-config><target><{target}/></target><config><customizations xmlns=\"{L45}\" \
         xmlns:l45=\"{L45}\" xmlns:nc=\"{BASE}\">{modules}</customizations></config></edit-config>"
    )
}

fn ids(agent: &Arc<Agent>, s: &SessionInfo) -> Vec<u32> {
    let reply = rpc(
        agent,
        s,
        "<get-config><source><running/></source></get-config>",
    );
    reply
        .split("<id>")
        .skip(1)
        .filter_map(|p| p.split("</id>").next()?.parse().ok())
        .collect()
}

/// Polls `done` with a deadline (the retries run on the agent's timers).
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn refused_rollback_is_retried_until_it_succeeds() {
    let state = tempfile::tempdir().expect("state dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tap = Arc::new(Refusing {
        inner: RecordingTap::new(None, false),
        refuse: AtomicBool::new(false),
        refused: AtomicU32::new(0),
    });
    let opts = AgentOptions {
        max_sessions: 8,
        limits: l45_netconf_proto::Limits {
            max_message: 1 << 20,
            max_chunk: 1 << 20,
        },
        ..AgentOptions::new(state.path())
    };
    let agent = Agent::new(opts, tap.clone(), runtime.handle().clone()).expect("agent");
    let (s, _killed) = agent.open_session("admin", None).expect("session");
    let ok = |reply: String| assert!(reply.contains("<ok/>"), "{reply}");
    ok(rpc(&agent, &s, &edit("running", &module(1))));
    ok(rpc(
        &agent,
        &s,
        &edit(
            "candidate",
            &format!(
                "{}<module nc:operation=\"delete\"><id>1</id></module>",
                module(2)
            ),
        ),
    ));
    tap.refuse.store(true, Ordering::SeqCst);
    let stored = state.path().join("confirmed-commit");
    // The commit itself is refused: nothing is left pending or stored.
    let reply = rpc(
        &agent,
        &s,
        "<commit><confirmed/><confirm-timeout>1</confirm-timeout><persist>p</persist></commit>",
    );
    assert!(reply.contains("tap-refused"), "{reply}");
    assert!(!stored.exists());
    tap.refuse.store(false, Ordering::SeqCst);
    ok(rpc(
        &agent,
        &s,
        "<commit><confirmed/><confirm-timeout>1</confirm-timeout><persist>p</persist></commit>",
    ));
    assert_eq!(ids(&agent, &s), [2]);
    assert!(stored.exists());
    let mut events = agent.subscribe_events();
    tap.refuse.store(true, Ordering::SeqCst);
    // The timeout's rollback and at least one retry are refused.
    wait_for("two refused rollbacks", || {
        tap.refused.load(Ordering::SeqCst) >= 3
    });
    assert_eq!(ids(&agent, &s), [2]);
    assert!(stored.exists(), "a failed rollback is not forgotten");
    // Each failure is reported to subscribers, not only logged.
    let mut failures = Vec::new();
    while let Ok(ev) = events.try_recv() {
        if ev.name == "confirmed-commit-rollback-failed" {
            failures.push(ev.xml);
        }
    }
    assert!(failures.len() >= 2, "{failures:?}");
    assert!(
        failures[0].contains("<attempt>1</attempt>"),
        "{}",
        failures[0]
    );
    let reply = rpc(&agent, &s, "<commit><persist-id>p</persist-id></commit>");
    assert!(reply.contains("<error-tag>in-use</error-tag>"), "{reply}");
    tap.refuse.store(false, Ordering::SeqCst);
    wait_for("the rollback", || ids(&agent, &s) == [1]);
    wait_for("the stored commit to go", || !stored.exists());
    agent.close_session(s.id);
}
