//! `images`: module images (kinds that are not built in) — the signing
//! key, building and signing a kind crate, pushing images to devices, and
//! what the CIB recorded (docs/images.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use clap::Subcommand;
use l45_nco::images::{build, key, push, remove, SignedImage};
use l45_nco::NcoConfig;

use super::output::{emit, json_time, time_cell};
use super::Global;
use crate::json::Json;

#[derive(Subcommand, Debug)]
pub enum ImagesCmd {
    /// Print the image signing key's public key (as devices' trusted-signer
    /// list takes it) and its key id; the key is created on first use
    /// beside the CIB (<cib>.image-key, mode 0600).
    Key,
    /// Build the kind crate in DIR (cargo build --release; crate-type
    /// cdylib, [package.metadata.l45] kind = "…"), check the library
    /// exports l45_kind_v1, sign it and write KIND.so, KIND.so.manifest and
    /// KIND.so.sig.
    Build {
        /// The kind crate's directory (holding Cargo.toml).
        dir: PathBuf,
        /// Where the signed image goes.
        #[arg(long, default_value = "images")]
        out: PathBuf,
        /// Build a kernel module against this kernel build tree instead
        /// of a user-space shared object.
        #[arg(long, value_name = "PATH")]
        kernel_tree: Option<PathBuf>,
    },
    /// Install signed images on devices: each device gets the image built
    /// for its tap's target (from its check-in data), or an error naming
    /// what it lacks.
    Push {
        /// Image files (IMAGE.manifest and IMAGE.sig beside each), one per
        /// target.
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Device to install on (repeatable).
        #[arg(long = "device", required_unless_present = "all")]
        devices: Vec<String>,
        /// Every device in the CIB.
        #[arg(long, conflicts_with = "devices")]
        all: bool,
    },
    /// Images the CIB knows and the devices that installed them.
    List,
    /// Remove an image from devices (remove-image); a device refuses while
    /// a module uses it. The CIB forgets the install where it is gone.
    Remove {
        /// The image's SHA-256 (hex), or a kind: every recorded image of
        /// that kind.
        image: String,
        /// Device to remove it from (repeatable). Default: every device
        /// the CIB records as holding it.
        #[arg(long = "device")]
        devices: Vec<String>,
    },
}

impl ImagesCmd {
    pub async fn run(&self, g: &Global) -> anyhow::Result<ExitCode> {
        match self {
            ImagesCmd::Key => {
                let secret = key::load_or_create(&key::key_path(&g.cib))?;
                let public = l45_images::format_public_key(&secret.public_key());
                let id = secret.key_id();
                if g.json {
                    println!(
                        "{}",
                        Json::obj([
                            ("public_key", Json::str(&public)),
                            ("key_id", Json::str(&id)),
                        ])
                    );
                } else {
                    println!("public key: {public}\nkey id:     {id}");
                }
                Ok(ExitCode::SUCCESS)
            }
            ImagesCmd::Build {
                dir,
                out,
                kernel_tree,
            } => {
                let secret = key::load_or_create(&key::key_path(&g.cib))?;
                let target = match kernel_tree {
                    Some(tree) => build::BuildTarget::Kernel(tree.clone()),
                    None => build::BuildTarget::Userspace,
                };
                let image = build::build(dir, out, &target, &secret)?;
                let nco = g.open_nco(NcoConfig::default())?;
                nco.cib().record_image(&image.record())?;
                print_images(g.json, &[image]);
                Ok(ExitCode::SUCCESS)
            }
            ImagesCmd::Push {
                images,
                devices,
                all,
            } => {
                let read: Vec<SignedImage> = images
                    .iter()
                    .map(|p| SignedImage::read(p))
                    .collect::<Result<_, _>>()?;
                let nco = g.open_nco(NcoConfig::default())?;
                for i in &read {
                    nco.cib()
                        .record_image(&i.record())
                        .with_context(|| format!("recording {}", i.path.display()))?;
                }
                let devices = if *all {
                    nco.cib().devices()?.into_iter().map(|d| d.name).collect()
                } else {
                    devices.clone()
                };
                let t0 = Instant::now();
                let outcomes =
                    push::push(&nco, Arc::new(read), devices, g.concurrency.max(1)).await;
                let elapsed = t0.elapsed();
                let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
                print_outcomes(g.json, &outcomes);
                if !g.json {
                    eprintln!(
                        "pushed to {} device(s) in {:.3} s, {failed} failed",
                        outcomes.len(),
                        elapsed.as_secs_f64()
                    );
                }
                Ok(if failed == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(2)
                })
            }
            ImagesCmd::Remove { image, devices } => {
                let nco = g.open_nco(NcoConfig::default())?;
                let digests = resolve_images(&nco, image)?;
                let devices = if devices.is_empty() {
                    let mut holders: Vec<String> = nco
                        .cib()
                        .image_installs()?
                        .into_iter()
                        .filter(|i| digests.contains(&i.sha256))
                        .map(|i| i.device)
                        .collect();
                    holders.dedup();
                    holders
                } else {
                    devices.clone()
                };
                if devices.is_empty() {
                    eprintln!("l45-nco: no device is recorded as holding {image}; name devices with --device");
                }
                let outcomes = remove::remove(&nco, digests, devices, g.concurrency.max(1)).await;
                let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
                print_removals(g.json, &outcomes);
                Ok(if failed == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(2)
                })
            }
            ImagesCmd::List => {
                let nco = g.open_nco(NcoConfig::default())?;
                let images = nco.cib().images()?;
                let installs = nco.cib().image_installs()?;
                emit(
                    g.json,
                    || {
                        Json::arr(images.iter().map(|i| {
                            Json::obj([
                                ("sha256", Json::str(&i.sha256)),
                                ("kind", Json::str(&i.kind)),
                                ("target", Json::str(&i.target)),
                                ("size", Json::num(i.size)),
                                ("signer", Json::str(&i.signer)),
                                ("built_at", Json::str(&i.built_at)),
                                ("path", Json::str(&i.path)),
                                (
                                    "signature",
                                    i.signature.as_deref().map_or(Json::Null, Json::str),
                                ),
                                (
                                    "devices",
                                    Json::arr(
                                        installs
                                            .iter()
                                            .filter(|n| n.sha256 == i.sha256)
                                            .map(|n| Json::str(&n.device)),
                                    ),
                                ),
                                ("recorded_at", json_time(i.recorded_at)),
                            ])
                        }))
                    },
                    &["sha256", "kind", "target", "size", "devices", "recorded"],
                    || {
                        images
                            .iter()
                            .map(|i| {
                                vec![
                                    i.sha256[..16].to_string(),
                                    i.kind.clone(),
                                    i.target.clone(),
                                    i.size.to_string(),
                                    installs
                                        .iter()
                                        .filter(|n| n.sha256 == i.sha256)
                                        .count()
                                        .to_string(),
                                    time_cell(Some(i.recorded_at)),
                                ]
                            })
                            .collect()
                    },
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

/// The digests `image` names: itself when it is a SHA-256, else every
/// recorded image of that kind.
fn resolve_images(nco: &l45_nco::Nco, image: &str) -> anyhow::Result<Vec<String>> {
    if image.len() == 64 && image.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(vec![image.to_ascii_lowercase()]);
    }
    let of_kind: Vec<String> = nco
        .cib()
        .images_of_kind(image)?
        .into_iter()
        .map(|i| i.sha256)
        .collect();
    if of_kind.is_empty() {
        anyhow::bail!(
            "{image:?} is neither a SHA-256 nor the kind of a recorded image (see images list)"
        );
    }
    Ok(of_kind)
}

fn print_removals(json: bool, outcomes: &[remove::RemoveOutcome]) {
    emit(
        json,
        || {
            Json::arr(outcomes.iter().map(|o| {
                Json::obj([
                    ("device", Json::str(&o.device)),
                    ("sha256", Json::str(&o.sha256)),
                    ("ok", Json::Bool(o.result.is_ok())),
                    (
                        "removed",
                        o.result.as_ref().map_or(Json::Null, |r| Json::Bool(*r)),
                    ),
                    (
                        "error",
                        o.result.as_ref().err().map_or(Json::Null, |e| Json::str(e)),
                    ),
                ])
            }))
        },
        &["device", "sha256", "result"],
        || {
            outcomes
                .iter()
                .map(|o| {
                    vec![
                        o.device.clone(),
                        o.sha256[..16.min(o.sha256.len())].to_string(),
                        match &o.result {
                            Ok(true) => "removed".to_string(),
                            Ok(false) => "was not on the device".to_string(),
                            Err(e) => format!("FAILED: {e}"),
                        },
                    ]
                })
                .collect()
        },
    );
}

fn print_images(json: bool, images: &[SignedImage]) {
    emit(
        json,
        || {
            Json::arr(images.iter().map(|i| {
                Json::obj([
                    ("path", Json::str(&i.path.display().to_string())),
                    ("kind", Json::str(&i.manifest.kind)),
                    ("target", Json::str(&i.manifest.target)),
                    ("sha256", Json::str(&i.manifest.sha256_hex)),
                    ("size", Json::num(i.manifest.size)),
                    ("signer", Json::str(&i.manifest.signer)),
                ])
            }))
        },
        &["path", "kind", "target", "sha256", "size"],
        || {
            images
                .iter()
                .map(|i| {
                    vec![
                        i.path.display().to_string(),
                        i.manifest.kind.clone(),
                        i.manifest.target.clone(),
                        i.manifest.sha256_hex.clone(),
                        i.manifest.size.to_string(),
                    ]
                })
                .collect()
        },
    );
}

fn print_outcomes(json: bool, outcomes: &[push::PushOutcome]) {
    emit(
        json,
        || {
            Json::arr(outcomes.iter().map(|o| {
                Json::obj([
                    ("device", Json::str(&o.device)),
                    ("ok", Json::Bool(o.result.is_ok())),
                    (
                        "sha256",
                        o.result.as_ref().map_or(Json::Null, |s| Json::str(s)),
                    ),
                    (
                        "error",
                        o.result.as_ref().err().map_or(Json::Null, |e| Json::str(e)),
                    ),
                ])
            }))
        },
        &["device", "result"],
        || {
            outcomes
                .iter()
                .map(|o| {
                    vec![
                        o.device.clone(),
                        match &o.result {
                            Ok(sha) => format!("installed {}", &sha[..16.min(sha.len())]),
                            Err(e) => format!("FAILED: {e}"),
                        },
                    ]
                })
                .collect()
        },
    );
}
