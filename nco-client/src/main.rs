//! `l45-nco`: the operator CLI and the scheduler service of the Layer 4.5
//! network-wide orchestrator.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use l45_cib::{
    Action, Attach, Cib, HistoryFilter, MatchRules, Module, NewDevice, NewModule, Protocol,
    Request, RequestState, Timestamp,
};
use l45_nco::nco::{RotationPlan, RotationStep};
use l45_nco::{Nco, NcoConfig};

mod json;
use json::Json;

/// Layer 4.5 network-wide orchestrator: constructs, deploys, monitors,
/// security-checks, deprecates, revokes and rotates customization modules
/// on device agents over NETCONF/SSH. Its state is the CIB, an SQLite file.
///
/// Commands that change devices queue requests in the CIB and carry them
/// out at once (unless --no-wait, or a time is given with --at); `serve`
/// runs the scheduler that carries out queued and scheduled requests,
/// monitors devices and runs security checks.
#[derive(Parser, Debug)]
#[command(name = "l45-nco", version)]
struct Cli {
    /// The CIB file (created if absent).
    #[arg(long, env = "L45_CIB", default_value = "l45-cib.sqlite", global = true)]
    cib: PathBuf,
    /// Machine-readable JSON output instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for devices before giving up on a command.
    #[arg(long, default_value_t = 120, global = true)]
    timeout: u64,
    /// Most devices worked on at once.
    #[arg(long, default_value_t = 256, global = true)]
    concurrency: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Device agents the NCO manages.
    #[command(subcommand)]
    Devices(DevicesCmd),
    /// Customization modules on devices.
    #[command(subcommand)]
    Modules(ModulesCmd),
    /// Rotate a customization to a new module on live traffic
    /// (dissertation figure 5.3): deploy below, raise on the receivers, then
    /// on the senders, then revoke the old one; each step verified.
    Rotate(RotateArgs),
    /// Per-device summary.
    Status,
    /// Alerts (unacknowledged first).
    Alerts {
        /// Include acknowledged alerts.
        #[arg(long)]
        all: bool,
        /// Acknowledge this alert.
        #[arg(long)]
        ack: Option<i64>,
    },
    /// The CIB's history.
    History {
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        module: Option<u32>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Middleboxes and the inverse modules they get.
    #[command(subcommand)]
    Middlebox(MiddleboxCmd),
    /// Answer a middlebox's question about a flow from the CIB: which
    /// modules customize it and their inverses; unknown flows are rejected
    /// and alerted (exit status 3).
    Flow {
        #[arg(long)]
        middlebox: String,
        #[arg(long, value_parser = ["tcp", "udp", "any"], default_value = "udp")]
        protocol: String,
        #[arg(long)]
        src: std::net::IpAddr,
        #[arg(long)]
        sport: u16,
        #[arg(long)]
        dst: std::net::IpAddr,
        #[arg(long)]
        dport: u16,
    },
    /// Ask every device for its state report now.
    Monitor,
    /// Challenge every module whose last check is older than the window.
    SecurityCheck {
        /// Seconds since the last check of a module (0: check all now).
        #[arg(long, default_value_t = 0)]
        window: u64,
    },
    /// Run the scheduler: carry out due and scheduled requests, monitor and
    /// security-check, until SIGINT/SIGTERM.
    Serve {
        /// Seconds between state reports from every device.
        #[arg(long, default_value_t = 30)]
        state_req_window: u64,
        /// Seconds between security checks of every module.
        #[arg(long, default_value_t = 300)]
        sec_check_window: u64,
    },
}

#[derive(Subcommand, Debug)]
enum DevicesCmd {
    /// Register a device agent.
    Add {
        name: String,
        /// NETCONF-over-SSH address of the agent, host:port.
        #[arg(long)]
        address: String,
        /// SSH user (an NACM admin on the device).
        #[arg(long, default_value = "admin")]
        user: String,
        /// The NCO's private key for this device.
        #[arg(long)]
        key: PathBuf,
        /// The agent's host key fingerprint (SHA256:…); without it the
        /// first connection pins what the device presents.
        #[arg(long)]
        host_key: Option<String>,
        /// `client` or `server`: which end of customizations it usually is.
        #[arg(long)]
        role: Option<String>,
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    List,
    Remove {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum MiddleboxCmd {
    /// Register a middlebox; type `wireshark` gets generated dissectors.
    Add {
        name: String,
        /// Where its inverse modules go: dir:PATH (a plugin directory).
        #[arg(long)]
        address: String,
        #[arg(long = "type", default_value = "wireshark")]
        mb_type: String,
    },
    List,
    /// Ship the inverse of every deployed module to a middlebox.
    Distribute {
        name: String,
    },
}

#[derive(Args, Debug)]
struct Target {
    /// Device name.
    #[arg(long)]
    device: String,
    /// Module id on that device.
    #[arg(long, conflicts_with = "name", required_unless_present = "name")]
    id: Option<u32>,
    /// Module name on that device.
    #[arg(long)]
    name: Option<String>,
    /// Only queue the request.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Subcommand, Debug)]
enum ModulesCmd {
    /// Construct a module instance per device and deploy it.
    Deploy(DeployArgs),
    List {
        #[arg(long)]
        device: Option<String>,
    },
    Revoke(Target),
    /// No new sockets; revoked automatically once idle.
    Deprecate(Target),
    Activate(Target),
    Deactivate(Target),
    Priority {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        priority: u16,
    },
}

#[derive(Args, Debug)]
struct DeployArgs {
    /// Devices to deploy to (repeat).
    #[arg(long = "device", required = true)]
    devices: Vec<String>,
    #[arg(long)]
    name: String,
    /// Module kind (YANG identity), e.g. dns-front-tag.
    #[arg(long)]
    kind: String,
    /// Kind parameter NAME=VALUE (repeat), e.g. tag=XTAGXdig.
    #[arg(long = "param", value_parser = parse_pair)]
    params: Vec<(String, String)>,
    #[arg(long, default_value_t = 100)]
    priority: u16,
    /// Deploy deactivated (attached, pass-through).
    #[arg(long)]
    deactivated: bool,
    /// Attach to live sockets at once.
    #[arg(long)]
    immediate: bool,
    #[arg(long, value_parser = ["tcp", "udp", "any"])]
    protocol: Option<String>,
    #[arg(long)]
    src_addr: Option<String>,
    #[arg(long)]
    src_port: Option<u16>,
    #[arg(long)]
    dst_addr: Option<String>,
    #[arg(long)]
    dst_port: Option<u16>,
    #[arg(long)]
    thread: Option<String>,
    #[arg(long)]
    process: Option<String>,
    /// Deploy at a time: +30s, +5m, +2h, unix seconds or YYYY-MM-DDTHH:MM:SSZ.
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

#[derive(Args, Debug)]
struct RotateArgs {
    /// Name of the module in use on every device.
    #[arg(long)]
    from: String,
    /// Name of the new module.
    #[arg(long)]
    to_name: String,
    #[arg(long)]
    to_kind: String,
    #[arg(long = "param", value_parser = parse_pair)]
    params: Vec<(String, String)>,
    /// Devices that undo the customization (e.g. the DNS server); comma
    /// separated. Default: devices with role `server`.
    #[arg(long, value_delimiter = ',')]
    receivers: Vec<String>,
    /// Devices that apply it (e.g. the DNS client). Default: role `client`.
    #[arg(long, value_delimiter = ',')]
    senders: Vec<String>,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

fn parse_time(s: &str) -> Result<Timestamp, String> {
    let bad =
        || format!("bad time {s:?}: use +30s, +5m, +2h, unix seconds or YYYY-MM-DDTHH:MM:SSZ");
    if let Some(rel) = s.strip_prefix('+') {
        let (n, unit) = rel.split_at(rel.len().saturating_sub(1));
        let n: i64 = n.parse().map_err(|_| bad())?;
        let ms = match unit {
            "s" => n * 1000,
            "m" => n * 60_000,
            "h" => n * 3_600_000,
            _ => return Err(bad()),
        };
        return Ok(Timestamp::now().plus_millis(ms));
    }
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(Timestamp::from_secs(secs));
    }
    // YYYY-MM-DDTHH:MM:SSZ (UTC)
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return Err(bad());
    }
    let num =
        |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<i64>().ok()).ok_or_else(bad);
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return Err(bad());
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(Timestamp::from_secs(
        days * 86_400 + h * 3600 + mi * 60 + se,
    ))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("L45_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("l45-nco: cannot start: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("l45-nco: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn open_nco(cli: &Cli, mut cfg: NcoConfig) -> anyhow::Result<Arc<Nco>> {
    cfg.concurrency = cli.concurrency.max(1);
    let cib =
        Cib::open(&cli.cib).with_context(|| format!("opening the CIB {}", cli.cib.display()))?;
    Ok(Nco::new(cib, cfg))
}

/// Progress on stderr for people (a line per change; one updating line on a
/// terminal).
fn progress_printer(json: bool) -> impl FnMut(&str, usize, usize) + Send {
    let tty = std::io::stderr().is_terminal();
    let mut last = (String::new(), usize::MAX);
    move |step: &str, done: usize, total: usize| {
        if json || (last.0 == step && last.1 == done) {
            return;
        }
        last = (step.to_string(), done);
        if tty {
            eprint!("\r{step}: {done}/{total} devices done   ");
            if done == total {
                eprintln!();
            }
        } else {
            eprintln!("{step}: {done}/{total} devices done");
        }
    }
}

async fn wait_for(
    nco: &Arc<Nco>,
    cli: &Cli,
    step: &str,
    ids: &[i64],
) -> anyhow::Result<Vec<Request>> {
    let mut p = progress_printer(cli.json);
    Ok(nco
        .drive(ids, Duration::from_secs(cli.timeout), |d, t| p(step, d, t))
        .await?)
}

fn exit_for(reqs: &[Request]) -> std::process::ExitCode {
    if reqs.iter().all(|r| r.state == RequestState::Confirmed) {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(2)
    }
}

async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let ok = std::process::ExitCode::SUCCESS;
    match &cli.command {
        Command::Devices(cmd) => {
            let nco = open_nco(&cli, NcoConfig::default())?;
            match cmd {
                DevicesCmd::Add {
                    name,
                    address,
                    user,
                    key,
                    host_key,
                    role,
                    labels,
                } => {
                    let d = nco.cib().add_device(&NewDevice {
                        name: name.clone(),
                        address: address.clone(),
                        username: user.clone(),
                        ssh_key_path: key.display().to_string(),
                        host_key_fingerprint: host_key.clone(),
                        role: role.clone(),
                        labels: labels.clone(),
                    })?;
                    print_devices(&cli, &[d]);
                }
                DevicesCmd::List => {
                    let ds = nco.cib().devices()?;
                    print_devices(&cli, &ds);
                }
                DevicesCmd::Remove { name } => {
                    nco.cib().remove_device(name)?;
                    if !cli.json {
                        println!("removed device {name}");
                    }
                }
            }
            Ok(ok)
        }
        Command::Modules(cmd) => modules(&cli, cmd).await,
        Command::Rotate(args) => rotate(&cli, args).await,
        Command::Status => {
            let nco = open_nco(&cli, NcoConfig::default())?;
            let st = nco.cib().status_summary()?;
            if cli.json {
                println!(
                    "{}",
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
                            (
                                "last_report_at",
                                s.last_report_at
                                    .map(|t| Json::num(t.0))
                                    .unwrap_or(Json::Null),
                            ),
                        ])
                    }))
                );
            } else {
                table(
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
                    ],
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
                                s.last_report_at
                                    .map(|t| t.to_string())
                                    .unwrap_or_else(|| "-".into()),
                            ]
                        })
                        .collect(),
                );
            }
            Ok(ok)
        }
        Command::Alerts { all, ack } => {
            let nco = open_nco(&cli, NcoConfig::default())?;
            if let Some(id) = ack {
                nco.cib().acknowledge_alert(*id)?;
            }
            let alerts = nco.cib().alerts(!all, 1000)?;
            if cli.json {
                println!(
                    "{}",
                    Json::arr(alerts.iter().map(|a| Json::obj([
                        ("id", Json::num(a.id)),
                        ("at", Json::num(a.at.0)),
                        ("severity", Json::str(a.severity.as_str())),
                        (
                            "device",
                            a.device.as_deref().map(Json::str).unwrap_or(Json::Null)
                        ),
                        ("module", a.module_id.map(Json::num).unwrap_or(Json::Null)),
                        ("kind", Json::str(&a.kind)),
                        ("message", Json::str(&a.message)),
                        ("acknowledged", Json::Bool(a.acknowledged)),
                    ])))
                );
            } else {
                table(
                    &[
                        "id", "at", "severity", "device", "module", "kind", "message",
                    ],
                    alerts
                        .iter()
                        .map(|a| {
                            vec![
                                a.id.to_string(),
                                a.at.to_string(),
                                a.severity.to_string(),
                                a.device.clone().unwrap_or_else(|| "-".into()),
                                a.module_id
                                    .map(|m| m.to_string())
                                    .unwrap_or_else(|| "-".into()),
                                a.kind.clone(),
                                a.message.clone(),
                            ]
                        })
                        .collect(),
                );
            }
            Ok(ok)
        }
        Command::History {
            device,
            module,
            limit,
        } => {
            let nco = open_nco(&cli, NcoConfig::default())?;
            let h = nco.cib().history(&HistoryFilter {
                device: device.clone(),
                module_id: *module,
                limit: Some(*limit),
            })?;
            if cli.json {
                println!(
                    "{}",
                    Json::arr(h.iter().map(|e| Json::obj([
                        ("id", Json::num(e.id)),
                        ("at", Json::num(e.at.0)),
                        (
                            "device",
                            e.device.as_deref().map(Json::str).unwrap_or(Json::Null)
                        ),
                        ("module", e.module_id.map(Json::num).unwrap_or(Json::Null)),
                        ("event", Json::str(&e.event)),
                        ("detail", Json::str(&e.detail)),
                    ])))
                );
            } else {
                table(
                    &["at", "device", "module", "event", "detail"],
                    h.iter()
                        .map(|e| {
                            vec![
                                e.at.to_string(),
                                e.device.clone().unwrap_or_else(|| "-".into()),
                                e.module_id
                                    .map(|m| m.to_string())
                                    .unwrap_or_else(|| "-".into()),
                                e.event.clone(),
                                e.detail.clone(),
                            ]
                        })
                        .collect(),
                );
            }
            Ok(ok)
        }
        Command::Middlebox(cmd) => {
            let nco = open_nco(&cli, NcoConfig::default())?;
            match cmd {
                MiddleboxCmd::Add {
                    name,
                    address,
                    mb_type,
                } => {
                    let mb = nco.cib().add_middlebox(&l45_cib::NewMiddlebox {
                        name: name.clone(),
                        address: address.clone(),
                        mb_type: mb_type.clone(),
                    })?;
                    let n = if mb.mb_type == l45_nco::middlebox::WIRESHARK {
                        l45_nco::middlebox::register_inverses(&nco, &mb.mb_type)?
                    } else {
                        0
                    };
                    if cli.json {
                        println!(
                            "{}",
                            Json::obj([
                                ("name", Json::str(&mb.name)),
                                ("type", Json::str(&mb.mb_type)),
                                ("inverses", Json::num(n))
                            ])
                        );
                    } else {
                        println!(
                            "middlebox {} ({}) added; inverse modules for {n} kinds",
                            mb.name, mb.mb_type
                        );
                    }
                }
                MiddleboxCmd::List => {
                    let mbs = nco.cib().middleboxes()?;
                    if cli.json {
                        println!(
                            "{}",
                            Json::arr(mbs.iter().map(|m| Json::obj([
                                ("name", Json::str(&m.name)),
                                ("address", Json::str(&m.address)),
                                ("type", Json::str(&m.mb_type)),
                            ])))
                        );
                    } else {
                        table(
                            &["name", "address", "type"],
                            mbs.iter()
                                .map(|m| vec![m.name.clone(), m.address.clone(), m.mb_type.clone()])
                                .collect(),
                        );
                    }
                }
                MiddleboxCmd::Distribute { name } => {
                    let ds = l45_nco::middlebox::distribute(&nco, name)?;
                    let failed = ds
                        .iter()
                        .any(|d| d.state != l45_cib::MiddleboxDeploymentState::Deployed);
                    if cli.json {
                        println!(
                            "{}",
                            Json::arr(ds.iter().map(|d| {
                                Json::obj([
                                    ("device", Json::str(&d.device)),
                                    ("module", Json::num(d.module_id)),
                                    ("kind", Json::str(&d.kind)),
                                    ("state", Json::str(d.state.as_str())),
                                    (
                                        "sha256",
                                        d.content_sha256
                                            .as_deref()
                                            .map(Json::str)
                                            .unwrap_or(Json::Null),
                                    ),
                                    (
                                        "error",
                                        d.last_error
                                            .as_deref()
                                            .map(Json::str)
                                            .unwrap_or(Json::Null),
                                    ),
                                ])
                            }))
                        );
                    } else {
                        table(
                            &["device", "module", "kind", "state", "sha256 / error"],
                            ds.iter()
                                .map(|d| {
                                    vec![
                                        d.device.clone(),
                                        d.module_id.to_string(),
                                        d.kind.clone(),
                                        d.state.to_string(),
                                        d.content_sha256
                                            .clone()
                                            .or_else(|| d.last_error.clone())
                                            .unwrap_or_default(),
                                    ]
                                })
                                .collect(),
                        );
                    }
                    if failed {
                        return Ok(std::process::ExitCode::from(2));
                    }
                }
            }
            Ok(ok)
        }
        Command::Flow {
            middlebox,
            protocol,
            src,
            sport,
            dst,
            dport,
        } => {
            let nco = open_nco(&cli, NcoConfig::default())?;
            let q = l45_cib::FlowQuery {
                middlebox: middlebox.clone(),
                protocol: Protocol::parse(protocol).unwrap_or(Protocol::Any),
                source: *src,
                source_port: *sport,
                destination: *dst,
                destination_port: *dport,
            };
            let ms = l45_nco::middlebox::flow_query(&nco, &q)?;
            if cli.json {
                println!(
                    "{}",
                    Json::arr(ms.iter().map(|m| {
                        Json::obj([
                            ("device", Json::str(&m.device)),
                            ("end", Json::str(&format!("{:?}", m.end).to_lowercase())),
                            ("module", Json::num(m.module_id)),
                            ("name", Json::str(&m.module_name)),
                            ("kind", Json::str(&m.kind)),
                            (
                                "inverse",
                                m.inverse
                                    .as_ref()
                                    .map(|i| Json::str(&i.artefact_name))
                                    .unwrap_or(Json::Null),
                            ),
                            ("inverse_deployed", Json::Bool(m.inverse_deployed)),
                        ])
                    }))
                );
            } else if ms.is_empty() {
                println!("flow rejected: no customization in the CIB explains it (alert raised)");
            } else {
                table(
                    &[
                        "device", "end", "module", "name", "kind", "inverse", "deployed",
                    ],
                    ms.iter()
                        .map(|m| {
                            vec![
                                m.device.clone(),
                                format!("{:?}", m.end).to_lowercase(),
                                m.module_id.to_string(),
                                m.module_name.clone(),
                                m.kind.clone(),
                                m.inverse
                                    .as_ref()
                                    .map(|i| i.artefact_name.clone())
                                    .unwrap_or_else(|| "-".into()),
                                m.inverse_deployed.to_string(),
                            ]
                        })
                        .collect(),
                );
            }
            Ok(if ms.is_empty() {
                std::process::ExitCode::from(3)
            } else {
                ok
            })
        }
        Command::Monitor => {
            let nco = open_nco(&cli, NcoConfig::default())?;
            let r = nco.monitor_round().await?;
            if cli.json {
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
                println!(
                    "{} devices reported, {} unreachable{}, {} new alerts",
                    r.devices_reported,
                    r.unreachable.len(),
                    if r.unreachable.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", r.unreachable.join(", "))
                    },
                    r.alerts_raised
                );
            }
            Ok(if r.unreachable.is_empty() {
                ok
            } else {
                std::process::ExitCode::from(2)
            })
        }
        Command::SecurityCheck { window } => {
            let cfg = NcoConfig {
                sec_check_window: Duration::from_secs(*window),
                ..NcoConfig::default()
            };
            let nco = open_nco(&cli, cfg)?;
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
                wait_for(&nco, &cli, "revoke modules that failed", &revokes).await?;
            }
            if cli.json {
                println!(
                    "{}",
                    Json::arr(results.iter().map(|r| Json::obj([
                        ("device", Json::str(&r.device)),
                        ("module", Json::num(r.module_id)),
                        ("passed", Json::Bool(r.passed)),
                        ("detail", Json::str(&r.detail)),
                    ])))
                );
            } else {
                table(
                    &["device", "module", "result", "detail"],
                    results
                        .iter()
                        .map(|r| {
                            vec![
                                r.device.clone(),
                                r.module_id.to_string(),
                                if r.passed {
                                    "passed".into()
                                } else {
                                    "FAILED (revoked)".into()
                                },
                                r.detail.clone(),
                            ]
                        })
                        .collect(),
                );
            }
            Ok(if results.iter().all(|r| r.passed) {
                ok
            } else {
                std::process::ExitCode::from(2)
            })
        }
        Command::Serve {
            state_req_window,
            sec_check_window,
        } => {
            let cfg = NcoConfig {
                state_req_window: Duration::from_secs((*state_req_window).max(1)),
                sec_check_window: Duration::from_secs((*sec_check_window).max(1)),
                ..NcoConfig::default()
            };
            let nco = open_nco(&cli, cfg)?;
            eprintln!("l45-nco serving (CIB {})", cli.cib.display());
            nco.serve(shutdown_signal()).await?;
            eprintln!("l45-nco stopped");
            Ok(ok)
        }
    }
}

fn resolve(nco: &Nco, t: &Target) -> anyhow::Result<Module> {
    Ok(match (&t.id, &t.name) {
        (Some(id), _) => nco.cib().module(&t.device, *id)?,
        (None, Some(name)) => nco.cib().module_by_name(&t.device, name)?,
        (None, None) => bail!("give --id or --name"),
    })
}

async fn modules(cli: &Cli, cmd: &ModulesCmd) -> anyhow::Result<std::process::ExitCode> {
    let nco = open_nco(cli, NcoConfig::default())?;
    let single = |t: &Target, action: Action| -> anyhow::Result<(Request, bool)> {
        let m = resolve(&nco, t)?;
        Ok((
            nco.cib().request(&t.device, m.module_id, action, None)?,
            t.no_wait,
        ))
    };
    let (req, no_wait, step) = match cmd {
        ModulesCmd::Deploy(a) => return deploy(cli, &nco, a).await,
        ModulesCmd::List { device } => {
            let cib = nco.cib();
            let devices: Vec<String> = match device {
                Some(d) => vec![d.clone()],
                None => cib.devices()?.into_iter().map(|d| d.name).collect(),
            };
            let mut all = Vec::new();
            for d in devices {
                all.extend(cib.modules_of_device(&d)?);
            }
            drop(cib);
            print_modules(cli, &all);
            return Ok(std::process::ExitCode::SUCCESS);
        }
        ModulesCmd::Revoke(t) => {
            let (r, w) = single(t, Action::Revoke)?;
            (r, w, "revoke")
        }
        ModulesCmd::Deprecate(t) => {
            let (r, w) = single(t, Action::Deprecate)?;
            (r, w, "deprecate")
        }
        ModulesCmd::Activate(t) => {
            let (r, w) = single(t, Action::Activate)?;
            (r, w, "activate")
        }
        ModulesCmd::Deactivate(t) => {
            let (r, w) = single(t, Action::Deactivate)?;
            (r, w, "deactivate")
        }
        ModulesCmd::Priority { target, priority } => {
            let (r, w) = single(target, Action::SetPriority(*priority))?;
            (r, w, "priority")
        }
    };
    if no_wait {
        print_requests(cli, &[req]);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let done = wait_for(&nco, cli, step, &[req.id]).await?;
    print_requests(cli, &done);
    Ok(exit_for(&done))
}

async fn deploy(
    cli: &Cli,
    nco: &Arc<Nco>,
    a: &DeployArgs,
) -> anyhow::Result<std::process::ExitCode> {
    let protocol = a.protocol.as_deref().and_then(Protocol::parse);
    let news: Vec<NewModule> = a
        .devices
        .iter()
        .map(|d| NewModule {
            device: d.clone(),
            name: a.name.clone(),
            kind: a.kind.clone(),
            parameters: a.params.clone(),
            priority: a.priority,
            activated: !a.deactivated,
            attach: if a.immediate {
                Attach::Immediate
            } else {
                Attach::NewSockets
            },
            match_rules: MatchRules {
                protocol,
                source_address: a.src_addr.clone(),
                source_port: a.src_port,
                destination_address: a.dst_addr.clone(),
                destination_port: a.dst_port,
                thread_name: a.thread.clone(),
                process_name: a.process.clone(),
            },
        })
        .collect();
    let built = nco.cib().construct_and_deploy(&news, a.at)?;
    let ids: Vec<i64> = built.iter().map(|(_, r)| r.id).collect();
    if a.no_wait || a.at.is_some() {
        let reqs: Vec<Request> = built.into_iter().map(|(_, r)| r).collect();
        print_requests(cli, &reqs);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let done = wait_for(nco, cli, "deploy", &ids).await?;
    if a.report {
        let mut set = tokio::task::JoinSet::new();
        for d in a.devices.iter().cloned() {
            let nco = nco.clone();
            set.spawn(async move { (nco.report(&d).await, d) });
        }
        while let Some(joined) = set.join_next().await {
            if let Ok((Err(e), d)) = joined {
                eprintln!("l45-nco: no report from {d}: {e}");
            }
        }
    }
    print_requests(cli, &done);
    Ok(exit_for(&done))
}

async fn rotate(cli: &Cli, a: &RotateArgs) -> anyhow::Result<std::process::ExitCode> {
    let nco = open_nco(cli, NcoConfig::default())?;
    let by_role = |role: &str| -> anyhow::Result<Vec<String>> {
        Ok(nco
            .cib()
            .devices()?
            .into_iter()
            .filter(|d| d.role.as_deref() == Some(role))
            .map(|d| d.name)
            .collect())
    };
    let receivers = if a.receivers.is_empty() {
        by_role("server")?
    } else {
        a.receivers.clone()
    };
    let senders = if a.senders.is_empty() {
        by_role("client")?
    } else {
        a.senders.clone()
    };
    let plan = RotationPlan {
        from: a.from.clone(),
        to_name: a.to_name.clone(),
        to_kind: a.to_kind.clone(),
        to_parameters: a.params.clone(),
        receivers,
        senders,
        step_timeout: Duration::from_secs(cli.timeout),
    };
    let steps: Vec<RotationStep> = nco.rotate(&plan, progress_printer(cli.json)).await?;
    if cli.json {
        println!(
            "{}",
            Json::arr(steps.iter().map(|s| Json::obj([
                ("step", Json::str(&s.name)),
                ("devices", Json::arr(s.devices.iter().map(|d| Json::str(d)))),
                ("ms", Json::num(s.took.as_millis() as u64)),
            ])))
        );
    } else {
        table(
            &["step", "devices", "took"],
            steps
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.devices.join(","),
                        format!("{:.3} s", s.took.as_secs_f64()),
                    ]
                })
                .collect(),
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

// ===== output =====

fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect());
    for r in rows {
        line(r);
    }
}

fn print_devices(cli: &Cli, ds: &[l45_cib::Device]) {
    if cli.json {
        println!(
            "{}",
            Json::arr(ds.iter().map(|d| {
                Json::obj([
                    ("name", Json::str(&d.name)),
                    ("address", Json::str(&d.address)),
                    ("user", Json::str(&d.username)),
                    (
                        "host_key",
                        d.host_key_fingerprint
                            .as_deref()
                            .map(Json::str)
                            .unwrap_or(Json::Null),
                    ),
                    (
                        "role",
                        d.role.as_deref().map(Json::str).unwrap_or(Json::Null),
                    ),
                ])
            }))
        );
    } else {
        table(
            &["name", "address", "user", "role", "host key"],
            ds.iter()
                .map(|d| {
                    vec![
                        d.name.clone(),
                        d.address.clone(),
                        d.username.clone(),
                        d.role.clone().unwrap_or_else(|| "-".into()),
                        d.host_key_fingerprint
                            .clone()
                            .unwrap_or_else(|| "(pinned on first connect)".into()),
                    ]
                })
                .collect(),
        );
    }
}

fn print_modules(cli: &Cli, ms: &[Module]) {
    if cli.json {
        println!(
            "{}",
            Json::arr(ms.iter().map(|m| Json::obj([
                ("device", Json::str(&m.device)),
                ("id", Json::num(m.module_id)),
                ("name", Json::str(&m.name)),
                ("kind", Json::str(&m.kind)),
                ("priority", Json::num(m.priority)),
                ("activated", Json::Bool(m.activated)),
                ("deprecated", Json::Bool(m.deprecated)),
                ("status", Json::str(m.status.as_str())),
            ])))
        );
    } else {
        table(
            &[
                "device",
                "id",
                "name",
                "kind",
                "priority",
                "activated",
                "deprecated",
                "status",
            ],
            ms.iter()
                .map(|m| {
                    vec![
                        m.device.clone(),
                        m.module_id.to_string(),
                        m.name.clone(),
                        m.kind.clone(),
                        m.priority.to_string(),
                        m.activated.to_string(),
                        m.deprecated.to_string(),
                        m.status.to_string(),
                    ]
                })
                .collect(),
        );
    }
}

fn print_requests(cli: &Cli, rs: &[Request]) {
    if cli.json {
        println!(
            "{}",
            Json::arr(rs.iter().map(|r| Json::obj([
                ("request", Json::num(r.id)),
                ("device", Json::str(&r.device)),
                ("module", Json::num(r.module_id)),
                ("action", Json::str(&r.action.to_string())),
                ("state", Json::str(r.state.as_str())),
                ("attempts", Json::num(r.attempts)),
                (
                    "error",
                    r.last_error.as_deref().map(Json::str).unwrap_or(Json::Null)
                ),
            ])))
        );
    } else {
        table(
            &[
                "request", "device", "module", "action", "state", "attempts", "error",
            ],
            rs.iter()
                .map(|r| {
                    vec![
                        r.id.to_string(),
                        r.device.clone(),
                        r.module_id.to_string(),
                        r.action.to_string(),
                        r.state.to_string(),
                        r.attempts.to_string(),
                        r.last_error.clone().unwrap_or_default(),
                    ]
                })
                .collect(),
        );
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        assert_eq!(
            parse_time("1800000000").unwrap(),
            Timestamp::from_secs(1_800_000_000)
        );
        assert_eq!(
            parse_time("2026-11-22T00:00:00Z").unwrap(),
            Timestamp::from_secs(1_795_305_600)
        );
        assert_eq!(
            parse_time("1970-01-01T00:00:00Z").unwrap(),
            Timestamp::from_secs(0)
        );
        let rel = parse_time("+2m").unwrap().0 - Timestamp::now().0;
        assert!((119_000..=120_000).contains(&rel), "{rel}");
        for bad in [
            "",
            "+",
            "+5x",
            "2026-13-01T00:00:00Z",
            "2026-11-22 00:00:00",
            "soon",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_pair("tag=X=Y").unwrap(), ("tag".into(), "X=Y".into()));
        assert!(parse_pair("=x").is_err());
        assert!(parse_pair("novalue").is_err());
    }
}
