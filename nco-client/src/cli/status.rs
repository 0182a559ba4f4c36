//! `status`: a summary per device.

use std::process::ExitCode;

use l45_cib::DeviceStatus;
use l45_nco::NcoConfig;

use super::output::{emit, json_opt_time, time_cell};
use super::Global;
use crate::json::Json;

pub async fn run(g: &Global) -> anyhow::Result<ExitCode> {
    let nco = g.open_nco(NcoConfig::default())?;
    let st = nco.cib().status_summary()?;
    let check_ins: std::collections::HashMap<String, l45_cib::CheckIn> = nco
        .cib()
        .check_ins()?
        .into_iter()
        .map(|c| (c.device.clone(), c))
        .collect();
    print_status(g.json, &st, &check_ins);
    Ok(ExitCode::SUCCESS)
}

fn print_status(
    json: bool,
    st: &[DeviceStatus],
    check_ins: &std::collections::HashMap<String, l45_cib::CheckIn>,
) {
    let checked_in = |d: &str| check_ins.get(d).map(|c| c.checked_in_at);
    emit(
        json,
        || {
            Json::arr(st.iter().map(|s| {
                Json::obj([
                    ("device", Json::str(&s.device)),
                    ("modules_deployed", Json::num(s.modules_deployed)),
                    ("modules_built", Json::num(s.modules_built)),
                    ("modules_revoked", Json::num(s.modules_revoked)),
                    ("requests_pending", Json::num(s.requests_pending)),
                    ("requests_sent", Json::num(s.requests_sent)),
                    ("requests_failed", Json::num(s.requests_failed)),
                    ("alerts_open", Json::num(s.alerts_open)),
                    ("last_report_at", json_opt_time(s.last_report_at)),
                    ("checked_in_at", json_opt_time(checked_in(&s.device))),
                ])
            }))
        },
        &[
            "device",
            "deployed",
            "built",
            "revoked",
            "pending",
            "in flight",
            "failed",
            "alerts",
            "last report",
            "checked in",
        ],
        || {
            st.iter()
                .map(|s| {
                    vec![
                        s.device.clone(),
                        s.modules_deployed.to_string(),
                        s.modules_built.to_string(),
                        s.modules_revoked.to_string(),
                        s.requests_pending.to_string(),
                        s.requests_sent.to_string(),
                        s.requests_failed.to_string(),
                        s.alerts_open.to_string(),
                        time_cell(s.last_report_at),
                        time_cell(checked_in(&s.device)),
                    ]
                })
                .collect()
        },
    );
}
