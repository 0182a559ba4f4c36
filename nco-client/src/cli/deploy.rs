//! `modules deploy`: construct one module instance per device and deploy
//! it, now or at a time; with `--image`, each device's deploy installs the
//! kind's image first.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use clap::Args;
use l45_cib::{Attach, MatchRules, NewModule, Protocol, Request, Timestamp};
use l45_nco::images::{push, SignedImage};
use l45_nco::{device_xml, Nco};

use super::output::print_requests;
use super::time::parse_time;
use super::{exit_for, parse_pair, Global};

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// Devices to deploy to (repeat).
    #[arg(long = "device", required = true)]
    devices: Vec<String>,
    /// Module name, the same on every device (unique per device among live
    /// modules).
    #[arg(long)]
    name: String,
    /// Module kind (YANG identity), e.g. dns-front-tag, or the kind of an
    /// image.
    #[arg(long)]
    kind: String,
    /// A signed image of the kind (IMAGE.manifest and IMAGE.sig beside
    /// it; repeat, one per target): each device's deploy installs the one
    /// built for its target first, unless the device already holds it.
    #[arg(long = "image", value_name = "IMAGE")]
    images: Vec<PathBuf>,
    /// Kind parameter NAME=VALUE (repeat), e.g. tag=XTAGXdig.
    #[arg(long = "param", value_parser = parse_pair)]
    params: Vec<(String, String)>,
    /// Order in a socket's chain: lower runs first.
    #[arg(long, default_value_t = 100)]
    priority: u16,
    /// Deploy deactivated (attached, pass-through).
    #[arg(long)]
    deactivated: bool,
    /// Attach to live sockets at once (default: new sockets only).
    #[arg(long)]
    immediate: bool,
    /// Match rule: transport protocol (default: any).
    #[arg(long, value_parser = ["tcp", "udp", "any"])]
    protocol: Option<String>,
    /// Match rule: local (source) address or prefix.
    #[arg(long)]
    src_addr: Option<String>,
    /// Match rule: local (source) port.
    #[arg(long)]
    src_port: Option<u16>,
    /// Match rule: remote (destination) address or prefix.
    #[arg(long)]
    dst_addr: Option<String>,
    /// Match rule: remote (destination) port.
    #[arg(long)]
    dst_port: Option<u16>,
    /// Match rule: name of the thread that first uses the socket (comm),
    /// e.g. isc-worker0000 for dig.
    #[arg(long)]
    thread: Option<String>,
    /// Match rule: name of the process (comm), e.g. dig.
    #[arg(long)]
    process: Option<String>,
    /// Deploy at a time: +30s, +5m, +2h, unix seconds or RFC 3339 UTC
    /// (YYYY-MM-DDTHH:MM:SS[.sss]Z); only queues the requests.
    #[arg(long, value_parser = parse_time)]
    at: Option<Timestamp>,
    /// Only queue the requests (a running `serve` carries them out).
    #[arg(long)]
    no_wait: bool,
    /// After deploying, ask every device for its state report and record
    /// it (the CIB then shows the module registered).
    #[arg(long)]
    report: bool,
}

impl DeployArgs {
    fn new_modules(&self, images: &BTreeMap<String, String>) -> Vec<NewModule> {
        let protocol = self.protocol.as_deref().and_then(Protocol::parse);
        self.devices
            .iter()
            .map(|d| NewModule {
                device: d.clone(),
                name: self.name.clone(),
                kind: self.kind.clone(),
                parameters: self.params.clone(),
                priority: self.priority,
                activated: !self.deactivated,
                attach: if self.immediate {
                    Attach::Immediate
                } else {
                    Attach::NewSockets
                },
                match_rules: MatchRules {
                    protocol,
                    source_address: self.src_addr.clone(),
                    source_port: self.src_port,
                    destination_address: self.dst_addr.clone(),
                    destination_port: self.dst_port,
                    thread_name: self.thread.clone(),
                    process_name: self.process.clone(),
                },
                image: images.get(d).cloned(),
            })
            .collect()
    }

    pub async fn run(&self, g: &Global, nco: &Arc<Nco>) -> anyhow::Result<ExitCode> {
        let images = self.image_per_device(nco).await?;
        let built = nco
            .cib()
            .construct_and_deploy(&self.new_modules(&images), self.at)?;
        let ids: Vec<i64> = built.iter().map(|(_, r)| r.id).collect();
        if self.no_wait || self.at.is_some() {
            let reqs: Vec<Request> = built.into_iter().map(|(_, r)| r).collect();
            print_requests(g.json, &reqs);
            return Ok(ExitCode::SUCCESS);
        }
        let done = g.wait_for(nco, "deploy", &ids).await?;
        if self.report {
            report_all(nco, &self.devices).await;
        }
        print_requests(g.json, &done);
        Ok(exit_for(&done))
    }
}

impl DeployArgs {
    /// The image each device's deploy installs (device → SHA-256), every
    /// image given recorded in the CIB. One image goes to every device (a
    /// device of another target refuses it with `target-mismatch`); of
    /// several, each device gets the one built for the target its check-in
    /// names, read from the device now.
    async fn image_per_device(&self, nco: &Arc<Nco>) -> anyhow::Result<BTreeMap<String, String>> {
        if self.images.is_empty() {
            return Ok(BTreeMap::new());
        }
        let read: Vec<SignedImage> = self
            .images
            .iter()
            .map(|p| SignedImage::read(p))
            .collect::<Result<_, _>>()?;
        for i in &read {
            if i.manifest.kind != self.kind {
                bail!(
                    "{} is an image of kind {}, not {}",
                    i.path.display(),
                    i.manifest.kind,
                    self.kind
                );
            }
            nco.cib()
                .record_image(&i.record())
                .with_context(|| format!("recording {}", i.path.display()))?;
        }
        let mut chosen = BTreeMap::new();
        for d in &self.devices {
            let image = match read.as_slice() {
                [only] => only,
                several => {
                    let session = nco.session(d).await?;
                    let data = session
                        .get(Some(&device_xml::device_filter()))
                        .await
                        .with_context(|| format!("{d}: reading its check-in data"))?;
                    let checkin = device_xml::parse_device(&data)
                        .with_context(|| format!("{d}: check-in data"))?;
                    push::choose(d, &checkin, several).map_err(anyhow::Error::msg)?
                }
            };
            chosen.insert(d.clone(), image.manifest.sha256_hex.clone());
        }
        Ok(chosen)
    }
}

/// Asks every device for its state report at once; a device that does not
/// answer is named on stderr.
async fn report_all(nco: &Arc<Nco>, devices: &[String]) {
    let mut set = tokio::task::JoinSet::new();
    for d in devices.iter().cloned() {
        let nco = nco.clone();
        set.spawn(async move { (nco.report(&d).await, d) });
    }
    while let Some(joined) = set.join_next().await {
        if let Ok((Err(e), d)) = joined {
            eprintln!("l45-nco: no report from {d}: {e}");
        }
    }
}
