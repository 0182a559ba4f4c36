//! What `l45-agent --metrics ADDR` exposes to Prometheus (names and labels:
//! `docs/service.md`). Two sources:
//! - [`recorded::AgentMetrics`], recorded as things happen: RPCs by
//!   operation and outcome with their durations (counted once, in the
//!   session loop), and changes of running by source and outcome
//!   (`Agent::commit`);
//! - [`AgentCollector`], read at scrape time from what the agent keeps
//!   anyway: sessions and the RFC 6022 counters, and the tap's per-module
//!   statistics from `TapControl::module_stats` — the call `get` uses for
//!   the modules' operational state — named by the running entries.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::agent::{guard, Agent};
use crate::datastore::{schema, Slots};

pub mod recorded;

/// Per-module series are written for at most this many modules by default
/// (`--metrics-module-limit`); above it only the totals are.
pub const DEFAULT_MODULE_LIMIT: usize = 1000;

/// The agent's registry: [`recorded::AgentMetrics`] plus the scrape-time
/// [`AgentCollector`]. Per-module tap series for at most `module_limit`
/// modules (see `docs/service.md`, "Label cardinality").
pub fn registry(agent: &Arc<Agent>, module_limit: usize) -> Registry {
    let mut r = Registry::with_prefix("l45_agent");
    let m = &agent.metrics;
    r.register(
        "rpcs",
        "RPCs that reached dispatch, by operation and outcome (error: the reply carries rpc-errors)",
        m.rpcs.clone(),
    );
    r.register(
        "rpc_duration_seconds",
        "Time from a complete RPC message to its reply text, by operation",
        m.rpc_seconds.clone(),
    );
    r.register(
        "commits",
        "Changes of running (edits of running, commits, confirmed-commit restores, start-up) by source and outcome",
        m.commits.clone(),
    );
    r.register_collector(Box::new(AgentCollector {
        agent: Arc::downgrade(agent),
        module_limit,
    }));
    r
}

/// Reads the agent's state at scrape time.
#[derive(Debug)]
pub struct AgentCollector {
    agent: Weak<Agent>,
    module_limit: usize,
}

// Help texts end with a full stop, as `Registry::register` writes them.

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let help = format!("{help}.");
    ConstCounter::new(v).encode(e.encode_descriptor(name, &help, None, MetricType::Counter)?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let help = format!("{help}.");
    ConstGauge::new(v).encode(e.encode_descriptor(name, &help, None, MetricType::Gauge)?)
}

/// A metric with one series per label set.
fn family<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    series: impl IntoIterator<Item = (L, u64)>,
) -> std::fmt::Result {
    let help = format!("{help}.");
    let mut m = e.encode_descriptor(name, &help, None, ty)?;
    for (labels, v) in series {
        match ty {
            MetricType::Gauge => ConstGauge::new(v as i64).encode(m.encode_family(&labels)?)?,
            _ => ConstCounter::new(v).encode(m.encode_family(&labels)?)?,
        }
    }
    Ok(())
}

impl Collector for AgentCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let Some(agent) = self.agent.upgrade() else {
            return Ok(());
        };
        let c = &agent.counters;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let open = guard(&agent.sessions).len() as i64;
        gauge(&mut e, "sessions_open", "NETCONF sessions open now", open)?;
        counter(
            &mut e,
            "sessions",
            "NETCONF sessions opened since start (RFC 6022 in-sessions)",
            load(&c.in_sessions),
        )?;
        counter(
            &mut e,
            "sessions_refused",
            "Sessions refused by the session limits (RFC 6022 dropped-sessions)",
            load(&c.dropped_sessions),
        )?;
        counter(
            &mut e,
            "bad_hellos",
            "Sessions closed for a missing or bad hello (RFC 6022 in-bad-hellos)",
            load(&c.in_bad_hellos),
        )?;
        counter(
            &mut e,
            "bad_rpcs",
            "RPCs that were malformed or named no known operation (RFC 6022 in-bad-rpcs)",
            load(&c.in_bad_rpcs),
        )?;
        counter(
            &mut e,
            "notifications",
            "Notifications sent to sessions (RFC 6022 out-notifications)",
            load(&c.out_notifications),
        )?;
        self.encode_tap(&agent, &mut e)
    }
}

impl AgentCollector {
    fn encode_tap(&self, agent: &Agent, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let mut stats = agent.tap.module_stats();
        stats.sort_by_key(|s| s.id);
        let mut by_state = std::collections::BTreeMap::new();
        for s in &stats {
            *by_state.entry(s.state.as_str()).or_insert(0u64) += 1;
        }
        family(
            e,
            "tap_modules",
            "Modules the tap holds, by state",
            MetricType::Gauge,
            by_state
                .into_iter()
                .map(|(state, n)| ([("state", state)], n)),
        )?;
        let sum = |f: fn(&l45_tap_control::ModuleStats) -> u64| stats.iter().map(f).sum::<u64>();
        family(
            e,
            "tap_bytes",
            "Bytes customized by all modules, by direction",
            MetricType::Counter,
            [
                ([("direction", "sent")], sum(|s| s.bytes_sent)),
                ([("direction", "received")], sum(|s| s.bytes_received)),
            ],
        )?;
        family(
            e,
            "tap_messages",
            "Messages customized by all modules, by direction",
            MetricType::Counter,
            [
                ([("direction", "sent")], sum(|s| s.messages_sent)),
                ([("direction", "received")], sum(|s| s.messages_received)),
            ],
        )?;
        counter(e, "tap_errors", "Errors of all modules", sum(|s| s.errors))?;
        family(
            e,
            "tap_backend_errors",
            "Failures of the tap backend's own channel (shared memory, netlink), by what failed",
            MetricType::Counter,
            agent
                .tap
                .backend_errors()
                .into_iter()
                .map(|(what, n)| ([("backend", agent.tap.name()), ("error", what)], n)),
        )?;
        gauge(
            e,
            "tap_module_series_limit",
            "Most modules written with per-module series (--metrics-module-limit)",
            self.module_limit as i64,
        )?;
        if stats.is_empty() || stats.len() > self.module_limit {
            return Ok(());
        }
        // Named as `get` names them: by the running entry of the same id.
        let kinds: Vec<String> = {
            let stores = agent.stores();
            let schema = schema().ok();
            stats
                .iter()
                .map(|s| {
                    let entry = stores.running.modules.get(&s.id);
                    entry
                        .zip(schema)
                        .and_then(|(x, sch)| {
                            let slots = Slots::parse(sch, x).ok()?;
                            // An identity: the label is its name, without the prefix.
                            let kind = slots.effective(sch, "kind")?;
                            Some(kind.rsplit(':').next().unwrap_or(kind).to_string())
                        })
                        .unwrap_or_default()
                })
                .collect()
        };
        let (stats, kinds) = (&stats, &kinds);
        let labels = move |i: usize, extra: Option<(&'static str, &'static str)>| {
            let mut l = vec![
                ("module_id", stats[i].id.to_string()),
                ("kind", kinds[i].clone()),
            ];
            if let Some((k, v)) = extra {
                l.push((k, v.to_string()));
            }
            l
        };
        let per_module =
            move |f: fn(&l45_tap_control::ModuleStats) -> u64,
                  extra: Option<(&'static str, &'static str)>| {
                (0..stats.len()).map(move |i| (labels(i, extra), f(&stats[i])))
            };
        let (sent, received) = (Some(("direction", "sent")), Some(("direction", "received")));
        family(
            e,
            "tap_module_bytes",
            "Bytes a module customized, by direction",
            MetricType::Counter,
            per_module(|s| s.bytes_sent, sent).chain(per_module(|s| s.bytes_received, received)),
        )?;
        family(
            e,
            "tap_module_messages",
            "Messages a module customized, by direction",
            MetricType::Counter,
            per_module(|s| s.messages_sent, sent)
                .chain(per_module(|s| s.messages_received, received)),
        )?;
        family(
            e,
            "tap_module_errors",
            "Errors of a module",
            MetricType::Counter,
            per_module(|s| s.errors, None),
        )?;
        family(
            e,
            "tap_module_bypassed",
            "Sockets found escaping a module",
            MetricType::Counter,
            per_module(|s| s.bypassed, None),
        )?;
        family(
            e,
            "tap_module_sockets",
            "Sockets a module is attached to now",
            MetricType::Gauge,
            per_module(|s| u64::from(s.socket_count), None),
        )
    }
}
