//! `monitor` (state reports from every device now) and `security-check`
//! (challenge modules now).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use l45_cib::{Action, Timestamp};
use l45_nco::nco::SecurityResult;
use l45_nco::NcoConfig;

use super::output::emit;
use super::Global;
use crate::json::Json;

/// `monitor`: asks every device for its state report and records it.
pub async fn run(g: &Global) -> anyhow::Result<ExitCode> {
    let nco = g.open_nco(NcoConfig::default())?;
    let r = nco.monitor_round().await?;
    if g.json {
        println!(
            "{}",
            Json::obj([
                ("reported", Json::num(r.devices_reported)),
                (
                    "unreachable",
                    Json::arr(r.unreachable.iter().map(|d| Json::str(d)))
                ),
                ("alerts_raised", Json::num(r.alerts_raised)),
            ])
        );
    } else {
        let names = if r.unreachable.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.unreachable.join(", "))
        };
        println!(
            "{} devices reported, {} unreachable{names}, {} new alerts",
            r.devices_reported,
            r.unreachable.len(),
            r.alerts_raised
        );
    }
    Ok(if r.unreachable.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

#[derive(Args, Debug)]
pub struct SecurityCheckArgs {
    /// Seconds since the last check of a module (0: check all now).
    #[arg(long, default_value_t = 0)]
    window: u64,
}

impl SecurityCheckArgs {
    pub async fn run(&self, g: &Global) -> anyhow::Result<ExitCode> {
        let cfg = NcoConfig {
            sec_check_window: Duration::from_secs(self.window),
            ..NcoConfig::default()
        };
        let nco = g.open_nco(cfg)?;
        let results = nco.security_round().await?;
        // Failed modules have a revoke queued: carry it out now.
        let revokes: Vec<i64> = nco
            .cib()
            .due_requests(Timestamp::now(), 10_000)?
            .iter()
            .filter(|r| r.action == Action::Revoke)
            .map(|r| r.id)
            .collect();
        if !revokes.is_empty() {
            g.wait_for(&nco, "revoke modules that failed", &revokes)
                .await?;
        }
        print_results(g.json, &results);
        Ok(if results.iter().all(|r| r.passed) {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        })
    }
}

fn print_results(json: bool, results: &[SecurityResult]) {
    emit(
        json,
        || {
            Json::arr(results.iter().map(|r| {
                Json::obj([
                    ("device", Json::str(&r.device)),
                    ("module", Json::num(r.module_id)),
                    ("passed", Json::Bool(r.passed)),
                    ("detail", Json::str(&r.detail)),
                ])
            }))
        },
        &["device", "module", "result", "detail"],
        || {
            results
                .iter()
                .map(|r| {
                    let result = if r.passed {
                        "passed"
                    } else {
                        "FAILED (revoked)"
                    };
                    vec![
                        r.device.clone(),
                        r.module_id.to_string(),
                        result.into(),
                        r.detail.clone(),
                    ]
                })
                .collect()
        },
    );
}
