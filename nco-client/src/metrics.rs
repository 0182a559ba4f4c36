//! What `l45-nco serve --metrics ADDR` exposes to Prometheus (names and
//! labels: `docs/service.md`). [`NcoMetrics`] is recorded as device
//! operations, rotations and security checks finish in this process;
//! [`NcoCollector`] reads the CIB and the connection pool at scrape time
//! (devices by state, requests by state, open alerts by kind).

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use l45_cib::{Action, RequestState};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::Nco;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    action: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    // 1 ms … ≈ 4.4 min: one edit on a LAN to a rotation across many devices.
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

fn outcome(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "error"
    }
}

/// Recorded as work finishes in this process.
pub struct NcoMetrics {
    requests: HistogramFamily<RequestLabels>,
    rotations: HistogramFamily<OutcomeLabel>,
    security_checks: Family<ResultLabel, Counter>,
}

impl Default for NcoMetrics {
    fn default() -> Self {
        NcoMetrics {
            requests: Family::new_with_constructor(seconds_histogram),
            rotations: Family::new_with_constructor(seconds_histogram),
            security_checks: Family::default(),
        }
    }
}

impl NcoMetrics {
    /// One request carried out on its device (a deploy, revoke, …), from
    /// taking the device's session (connecting if needed) to its answer.
    pub fn request(&self, action: Action, ok: bool, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                action: action.name(),
                outcome: outcome(ok),
            })
            .observe(took.as_secs_f64());
    }

    /// One whole rotation (`Nco::rotate`).
    pub fn rotation(&self, ok: bool, took: Duration) {
        self.rotations
            .get_or_create(&OutcomeLabel {
                outcome: outcome(ok),
            })
            .observe(took.as_secs_f64());
    }

    /// One challenge-response that got an answer to judge.
    pub fn security_check(&self, passed: bool) {
        let result = if passed { "passed" } else { "failed" };
        self.security_checks
            .get_or_create(&ResultLabel { result })
            .inc();
    }
}

/// The NCO's registry: [`NcoMetrics`] plus the scrape-time
/// [`NcoCollector`].
pub fn registry(nco: &Arc<Nco>) -> Registry {
    let mut r = Registry::with_prefix("l45_nco");
    let m = nco.metrics();
    // Both outcomes exist from the start, so a rate over them is defined
    // before the first check.
    for passed in [true, false] {
        let result = if passed { "passed" } else { "failed" };
        let _ = m.security_checks.get_or_create(&ResultLabel { result });
    }
    r.register(
        "request_duration_seconds",
        "Device operations carried out by this process (deploy, revoke, deprecate, activate, deactivate, set-priority), by action and outcome",
        m.requests.clone(),
    );
    r.register(
        "rotation_duration_seconds",
        "Whole rotations run by this process, by outcome",
        m.rotations.clone(),
    );
    r.register(
        "security_checks",
        "Challenge-responses with deployed modules, by result",
        m.security_checks.clone(),
    );
    r.register_collector(Box::new(NcoCollector {
        nco: Arc::downgrade(nco),
    }));
    r
}

/// Reads the CIB and the pool at scrape time.
#[derive(Debug)]
pub struct NcoCollector {
    nco: Weak<Nco>,
}

/// A gauge with one series per label set.
fn gauges<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, u64)>,
) -> std::fmt::Result {
    // A full stop, as `Registry::register` writes help texts.
    let help = format!("{help}.");
    let mut m = e.encode_descriptor(name, &help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A device's connection state: `connected` (a live session),
/// `unreachable` (the last attempt failed), `idle` (no session and no
/// failure: not needed yet, or closed).
pub const DEVICE_STATES: [&str; 3] = ["connected", "unreachable", "idle"];

impl Collector for NcoCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let Some(nco) = self.nco.upgrade() else {
            return Ok(());
        };
        let pool: BTreeMap<String, &'static str> = nco
            .pool()
            .states()
            .into_iter()
            .map(|s| {
                let state = if s.connected {
                    "connected"
                } else if s.is_unreachable() {
                    "unreachable"
                } else {
                    "idle"
                };
                (s.name, state)
            })
            .collect();
        let (devices, requests, alerts) = {
            let cib = nco.cib();
            (cib.devices(), cib.request_counts(), cib.open_alert_counts())
        };
        let mut cib_ok = 1;
        let mut by_state: BTreeMap<&str, u64> = DEVICE_STATES.iter().map(|s| (*s, 0)).collect();
        match devices {
            Ok(devices) => {
                for d in devices {
                    let state = pool.get(&d.name).copied().unwrap_or("idle");
                    *by_state.entry(state).or_default() += 1;
                }
            }
            Err(e) => {
                cib_ok = 0;
                tracing::warn!(error = %e, "metrics: reading the devices");
            }
        }
        gauges(
            &mut e,
            "devices",
            "Devices in the CIB by connection state",
            by_state.into_iter().map(|(s, n)| ([("state", s)], n)),
        )?;
        let mut by_request: BTreeMap<&str, u64> =
            RequestState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        match requests {
            Ok(counts) => {
                for (state, n) in counts {
                    by_request.insert(state.as_str(), n);
                }
            }
            Err(e) => {
                cib_ok = 0;
                tracing::warn!(error = %e, "metrics: counting the requests");
            }
        }
        gauges(
            &mut e,
            "requests",
            "Requests in the CIB by state",
            by_request.into_iter().map(|(s, n)| ([("state", s)], n)),
        )?;
        let alerts = alerts.unwrap_or_else(|e| {
            cib_ok = 0;
            tracing::warn!(error = %e, "metrics: counting the alerts");
            Vec::new()
        });
        gauges(
            &mut e,
            "alerts_open",
            "Unacknowledged alerts by kind",
            alerts
                .into_iter()
                .map(|(kind, n)| (vec![("kind", kind)], n)),
        )?;
        ConstGauge::new(cib_ok).encode(e.encode_descriptor(
            "cib_up",
            "1 when this scrape read the CIB, 0 when a query failed.",
            None,
            MetricType::Gauge,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use l45_cib::{Cib, NewAlert, NewDevice, Severity};

    use super::*;
    use crate::NcoConfig;

    #[test]
    fn the_page_counts_from_the_cib_and_what_this_process_did() {
        let mut cib = Cib::open_in_memory().unwrap();
        cib.add_device(&NewDevice {
            name: "d1".into(),
            address: "192.0.2.1:830".into(),
            username: "admin".into(),
            ssh_key_path: "/etc/l45/nco/key".into(),
            ..NewDevice::default()
        })
        .unwrap();
        cib.raise_alert(&NewAlert {
            severity: Severity::Warning,
            device: Some("d1".into()),
            module_id: None,
            kind: "module-bypassed".into(),
            message: "m".into(),
        })
        .unwrap();
        let nco = Nco::new(cib, NcoConfig::default());
        nco.metrics()
            .request(Action::Deploy, true, Duration::from_millis(3));
        nco.metrics().security_check(false);
        let text = l45_service::metrics::render(&registry(&nco));
        for line in [
            "l45_nco_devices{state=\"idle\"} 1\n",
            "l45_nco_devices{state=\"connected\"} 0\n",
            "l45_nco_requests{state=\"pending\"} 0\n",
            "l45_nco_alerts_open{kind=\"module-bypassed\"} 1\n",
            "l45_nco_request_duration_seconds_count{action=\"deploy\",outcome=\"ok\"} 1\n",
            "l45_nco_security_checks_total{result=\"failed\"} 1\n",
            "l45_nco_security_checks_total{result=\"passed\"} 0\n",
            "l45_nco_cib_up 1\n",
        ] {
            assert!(text.contains(line), "{line:?} not in:\n{text}");
        }
    }
}
