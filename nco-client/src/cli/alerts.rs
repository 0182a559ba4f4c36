//! `alerts`: what the NCO found wrong, unacknowledged first.

use std::process::ExitCode;

use clap::Args;
use l45_cib::Alert;
use l45_nco::NcoConfig;

use super::output::{cell, emit, json_opt_str, json_opt_time, json_time};
use super::time::rfc3339;
use super::Global;
use crate::json::Json;

#[derive(Args, Debug)]
pub struct AlertsArgs {
    /// Include acknowledged alerts.
    #[arg(long)]
    all: bool,
    /// Acknowledge the alert with this id (before listing).
    #[arg(long)]
    ack: Option<i64>,
}

impl AlertsArgs {
    pub async fn run(&self, g: &Global) -> anyhow::Result<ExitCode> {
        let nco = g.open_nco(NcoConfig::default())?;
        if let Some(id) = self.ack {
            nco.cib().acknowledge_alert(id)?;
        }
        let alerts = nco.cib().alerts(!self.all, 1000)?;
        print_alerts(g.json, &alerts);
        Ok(ExitCode::SUCCESS)
    }
}

fn print_alerts(json: bool, alerts: &[Alert]) {
    emit(
        json,
        || {
            Json::arr(alerts.iter().map(|a| {
                Json::obj([
                    ("id", Json::num(a.id)),
                    ("at", json_time(a.at)),
                    ("severity", Json::str(a.severity.as_str())),
                    ("device", json_opt_str(a.device.as_deref())),
                    ("module", a.module_id.map(Json::num).unwrap_or(Json::Null)),
                    ("kind", Json::str(&a.kind)),
                    ("message", Json::str(&a.message)),
                    ("acknowledged", Json::Bool(a.acknowledged)),
                    ("acknowledged_at", json_opt_time(a.acknowledged_at)),
                ])
            }))
        },
        &[
            "id", "at", "severity", "device", "module", "kind", "message",
        ],
        || {
            alerts
                .iter()
                .map(|a| {
                    vec![
                        a.id.to_string(),
                        rfc3339(a.at),
                        a.severity.to_string(),
                        cell(a.device.as_deref()),
                        cell(a.module_id),
                        a.kind.clone(),
                        a.message.clone(),
                    ]
                })
                .collect()
        },
    );
}
