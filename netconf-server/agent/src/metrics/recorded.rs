//! What the agent records as it works, for `--metrics` (`super`): RPCs by
//! operation and outcome with their durations (counted once, in the
//! session loop) and changes of running by source and outcome
//! (`Agent::commit`). Below `agent.rs`: it names nothing of the agent.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use yang3::context::Context;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RpcLabels {
    operation: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OperationLabel {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CommitLabels {
    source: &'static str,
    outcome: &'static str,
}

pub(super) type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn rpc_histogram() -> Histogram {
    // 100 µs … ≈ 26 s: a get-config of one module to a commit of 100k.
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

/// Counters and histograms recorded as RPCs and commits happen (cheap
/// enough to keep whether or not an endpoint is open).
pub struct AgentMetrics {
    pub(super) rpcs: Family<RpcLabels, Counter>,
    pub(super) rpc_seconds: HistogramFamily<OperationLabel>,
    pub(super) commits: Family<CommitLabels, Counter>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics {
            rpcs: Family::default(),
            rpc_seconds: Family::new_with_constructor(rpc_histogram),
            commits: Family::default(),
        }
    }
}

fn outcome(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "error"
    }
}

impl AgentMetrics {
    /// One RPC that reached dispatch: `ok` when its reply carries no
    /// `<rpc-error>`, `took` from the complete message to the reply text.
    pub fn rpc(&self, operation: String, ok: bool, took: Duration) {
        self.rpcs
            .get_or_create(&RpcLabels {
                operation: operation.clone(),
                outcome: outcome(ok),
            })
            .inc();
        self.rpc_seconds
            .get_or_create(&OperationLabel { operation })
            .observe(took.as_secs_f64());
    }

    /// One change of running (`Agent::commit`) from `source`.
    pub fn commit(&self, source: &'static str, ok: bool) {
        self.commits
            .get_or_create(&CommitLabels {
                source,
                outcome: outcome(ok),
            })
            .inc();
    }
}

/// The label for an RPC's operation: its name when the schema defines it
/// in that namespace (or it is RFC 5277's create-subscription), else
/// `other` — a peer's made-up names must not make new series.
pub fn operation_label(ctx: &Context, ns: Option<&str>, name: &str) -> String {
    let ns = ns.unwrap_or("");
    let known = (ns == l45_netconf_proto::message::NOTIFICATION_NS
        && name == "create-subscription")
        || ctx
            .get_module_latest_ns(ns)
            .is_some_and(|m| m.rpcs().any(|r| r.name() == name));
    if known {
        name.to_string()
    } else {
        "other".to_string()
    }
}
