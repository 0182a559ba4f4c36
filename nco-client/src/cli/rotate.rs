//! `rotate`: replace a customization with a new module on live traffic.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use l45_nco::images::SignedImage;

use clap::Args;
use l45_nco::nco::{parse_duration, Overlap, RotationPlan, RotationStep};
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
    /// A signed image of the new kind (IMAGE.manifest and IMAGE.sig beside
    /// it): the new module's deploy installs it first on every device that
    /// does not hold it.
    #[arg(long, value_name = "IMAGE")]
    to_image: Option<PathBuf>,
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
    /// Keep the old module after the switch (dissertation §5.4): a
    /// duration (e.g. 2s) keeps it below the new one until its counters
    /// show no traffic for that long, so reordered or delayed datagrams in
    /// the old format are still undone; `until-idle` attaches the new
    /// module to new sockets only and deprecates the old one, so live
    /// connections (a long TCP transfer) keep it to their end; `none`
    /// revokes it at once.
    #[arg(long, default_value = "none", value_name = "DURATION|until-idle|none")]
    overlap: Overlap,
    /// Longest the overlap may last before the rotation stops with an
    /// error, leaving the old module in place.
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    overlap_max: Duration,
}

impl RotateArgs {
    pub async fn run(&self, g: &Global) -> anyhow::Result<ExitCode> {
        let nco = g.open_nco(NcoConfig::default())?;
        let to_image = match &self.to_image {
            Some(path) => {
                let image = SignedImage::read(path)?;
                if image.manifest.kind != self.to_kind {
                    bail!(
                        "{} is an image of kind {}, not {}",
                        path.display(),
                        image.manifest.kind,
                        self.to_kind
                    );
                }
                nco.cib()
                    .record_image(&image.record())
                    .with_context(|| format!("recording {}", path.display()))?;
                Some(image.manifest.sha256_hex)
            }
            None => None,
        };
        let plan = RotationPlan {
            from: self.from.clone(),
            to_name: self.to_name.clone(),
            to_kind: self.to_kind.clone(),
            to_parameters: self.params.clone(),
            to_image,
            receivers: or_role(&nco, &self.receivers, "server")?,
            senders: or_role(&nco, &self.senders, "client")?,
            step_timeout: Duration::from_secs(g.timeout),
            overlap: self.overlap,
            overlap_max: self.overlap_max,
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
