//! `history`: the CIB's record of what happened, newest first.

use std::process::ExitCode;

use clap::Args;
use l45_cib::{HistoryEntry, HistoryFilter};
use l45_nco::NcoConfig;

use super::output::{cell, emit, json_opt_str, json_time};
use super::time::rfc3339;
use super::Global;
use crate::json::Json;

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Only entries about this device.
    #[arg(long)]
    device: Option<String>,
    /// Only entries about this module id (with --device: on that device).
    #[arg(long)]
    module: Option<u32>,
    /// Most entries shown.
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

impl HistoryArgs {
    pub async fn run(&self, g: &Global) -> anyhow::Result<ExitCode> {
        let nco = g.open_nco(NcoConfig::default())?;
        let h = nco.cib().history(&HistoryFilter {
            device: self.device.clone(),
            module_id: self.module,
            limit: Some(self.limit),
        })?;
        print_history(g.json, &h);
        Ok(ExitCode::SUCCESS)
    }
}

fn print_history(json: bool, h: &[HistoryEntry]) {
    emit(
        json,
        || {
            Json::arr(h.iter().map(|e| {
                Json::obj([
                    ("id", Json::num(e.id)),
                    ("at", json_time(e.at)),
                    ("device", json_opt_str(e.device.as_deref())),
                    ("module", e.module_id.map(Json::num).unwrap_or(Json::Null)),
                    ("event", Json::str(&e.event)),
                    ("detail", Json::str(&e.detail)),
                ])
            }))
        },
        &["at", "device", "module", "event", "detail"],
        || {
            h.iter()
                .map(|e| {
                    vec![
                        rfc3339(e.at),
                        cell(e.device.as_deref()),
                        cell(e.module_id),
                        e.event.clone(),
                        e.detail.clone(),
                    ]
                })
                .collect()
        },
    );
}
