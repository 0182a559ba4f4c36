//! `rotate`: replace a customization with a new module on live traffic.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use l45_nco::rotation::{RotationPlan, RotationStep};
use l45_nco::{Nco, NcoConfig};

use super::output::emit;
use super::{parse_pair, progress_printer, Global};
use crate::json::Json;

#[derive(Args, Debug)]
pub struct RotateArgs {
    /// Name of the module in use on every device.
    #[arg(long)]
    from: String,
    /// Name of the new module.
    #[arg(long)]
    to_name: String,
    /// Kind (YANG identity) of the new module, e.g. dns-compression.
    #[arg(long)]
    to_kind: String,
    /// Kind parameter of the new module, NAME=VALUE (repeat).
    #[arg(long = "param", value_parser = parse_pair)]
    params: Vec<(String, String)>,
    /// Devices that undo the customization (e.g. the DNS server); comma
    /// separated. Default: devices with role `server`.
    #[arg(long, value_delimiter = ',')]
    receivers: Vec<String>,
    /// Devices that apply it (e.g. the DNS client); comma separated.
    /// Default: devices with role `client`.
    #[arg(long, value_delimiter = ',')]
    senders: Vec<String>,
}

impl RotateArgs {
    pub async fn run(&self, g: &Global) -> anyhow::Result<ExitCode> {
        let nco = g.open_nco(NcoConfig::default())?;
        let plan = RotationPlan {
            from: self.from.clone(),
            to_name: self.to_name.clone(),
            to_kind: self.to_kind.clone(),
            to_parameters: self.params.clone(),
            receivers: or_role(&nco, &self.receivers, "server")?,
            senders: or_role(&nco, &self.senders, "client")?,
            step_timeout: Duration::from_secs(g.timeout),
        };
        let steps = nco.rotate(&plan, progress_printer(g.json)).await?;
        print_steps(g.json, &steps);
        Ok(ExitCode::SUCCESS)
    }
}

/// `given`, or if empty the devices with `role`.
fn or_role(nco: &Nco, given: &[String], role: &str) -> anyhow::Result<Vec<String>> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    Ok(nco
        .cib()
        .devices()?
        .into_iter()
        .filter(|d| d.role.as_deref() == Some(role))
        .map(|d| d.name)
        .collect())
}

fn print_steps(json: bool, steps: &[RotationStep]) {
    emit(
        json,
        || {
            Json::arr(steps.iter().map(|s| {
                Json::obj([
                    ("step", Json::str(&s.name)),
                    ("devices", Json::arr(s.devices.iter().map(|d| Json::str(d)))),
                    ("ms", Json::num(s.took.as_millis())),
                ])
            }))
        },
        &["step", "devices", "took"],
        || {
            steps
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.devices.join(","),
                        format!("{:.3} s", s.took.as_secs_f64()),
                    ]
                })
                .collect()
        },
    );
}
