//! `--metrics`: the agent's page, rendered from its registry, after real
//! edits through `Agent::handle` with the recording tap: commits by source
//! and outcome, the tap's modules by state and kind, the per-module cap,
//! and which operation names become labels.

use std::sync::Arc;

use l45_agent::agent::{Agent, AgentOptions};
use l45_agent::metrics::recorded::operation_label;
use l45_agent::session::decode_rpc;
use l45_agent::sessions::SessionInfo;
use l45_netconf_proto::Decoder;
use l45_tap_control::RecordingTap;

const BASE: &str = "urn:ietf:params:xml:ns:netconf:base:1.0";
const L45: &str = "urn:layer45:params:xml:ns:yang:layer45-customization";

fn rpc(agent: &Arc<Agent>, s: &SessionInfo, body: &str) -> String {
    let mut d = Decoder::new(agent.opts.limits);
    d.push(format!("<rpc xmlns=\"{BASE}\" message-id=\"1\">{body}</rpc>]]>]]>").as_bytes());
    let frame = d.next_frame().expect("frame").expect("one frame");
    let rpc = decode_rpc(agent, s, frame).expect("rpc");
    agent.handle(s, &rpc).0
}

fn edit(modules: &str) -> String {
    format!(
        "<edit-config><target><running/></target><config><customizations xmlns=\"{L45}\" \
         xmlns:l45=\"{L45}\">{modules}</customizations></config></edit-config>"
    )
}

fn module(id: u32, kind: &str) -> String {
    format!("<module><id>{id}</id><name>m{id}</name><kind>l45:{kind}</kind></module>")
}

fn page(agent: &Arc<Agent>, limit: usize) -> String {
    l45_service::metrics::render(&l45_agent::metrics::registry(agent, limit))
}

#[test]
fn the_page_shows_commits_and_the_taps_modules() {
    let state = tempfile::tempdir().expect("state dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let tap = Arc::new(RecordingTap::new(None, false));
    let agent = Agent::new(
        AgentOptions::new(state.path()),
        tap,
        runtime.handle().clone(),
    )
    .expect("agent");
    let (s, _killed) = agent.open_session("admin", None).expect("session");
    let reply = rpc(
        &agent,
        &s,
        &edit(&format!(
            "{}{}{}",
            module(1, "dns-front-tag"),
            module(2, "dns-front-tag"),
            module(3, "dns-end-tag")
        )),
    );
    assert!(reply.contains("<ok/>"), "{reply}");
    // An entry without its mandatory name: refused before running changes.
    let reply = rpc(
        &agent,
        &s,
        &edit("<module><id>4</id><kind>l45:dns-front-tag</kind></module>"),
    );
    assert!(reply.contains("<rpc-error>"), "{reply}");

    let text = page(&agent, 3);
    for line in [
        "l45_agent_commits_total{source=\"startup\",outcome=\"ok\"} 1\n",
        "l45_agent_commits_total{source=\"running\",outcome=\"ok\"} 1\n",
        "l45_agent_sessions_open 1\n",
        "l45_agent_sessions_total 1\n",
        "l45_agent_tap_modules{state=\"registered\"} 3\n",
        "l45_agent_tap_bytes_total{direction=\"sent\"} 0\n",
        "l45_agent_tap_module_bytes_total{module_id=\"1\",kind=\"dns-front-tag\",direction=\"sent\"} 0\n",
        "l45_agent_tap_module_sockets{module_id=\"3\",kind=\"dns-end-tag\"} 0\n",
        "l45_agent_tap_module_series_limit 3\n",
    ] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }
    // Over the cap: totals only.
    let text = page(&agent, 2);
    assert!(
        text.contains("l45_agent_tap_modules{state=\"registered\"} 3\n"),
        "{text}"
    );
    assert!(!text.contains("module_id="), "{text}");

    agent.close_session(s.id);
    assert!(page(&agent, 3).contains("l45_agent_sessions_open 0\n"));
}

#[test]
fn only_operations_the_schema_knows_become_labels() {
    let state = tempfile::tempdir().expect("state dir");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let agent = Agent::new(
        AgentOptions::new(state.path()),
        Arc::new(RecordingTap::new(None, false)),
        runtime.handle().clone(),
    )
    .expect("agent");
    let label = |ns: &str, name: &str| operation_label(agent.ctx, Some(ns), name);
    assert_eq!(label(BASE, "get-config"), "get-config");
    assert_eq!(label(BASE, "commit"), "commit");
    assert_eq!(label(L45, "report"), "report");
    assert_eq!(
        label(
            "urn:ietf:params:xml:ns:netconf:notification:1.0",
            "create-subscription"
        ),
        "create-subscription"
    );
    assert_eq!(label(BASE, "made-up-op"), "other");
    assert_eq!(label("urn:example:nothing", "get-config"), "other");
    assert_eq!(operation_label(agent.ctx, None, "get"), "other");
}
