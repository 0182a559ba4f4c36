//! `devices`: the device agents the NCO manages.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use l45_cib::{CheckIn, Device, DeviceData, NewDevice, PendingDevice};
use l45_nco::NcoConfig;

use super::output::{cell, emit, json_opt_str, json_time};
use super::time::rfc3339;
use super::Global;
use crate::json::Json;

#[derive(Subcommand, Debug)]
pub enum DevicesCmd {
    /// Register a device agent.
    Add {
        /// Name of the device in the CIB and in every command.
        name: String,
        /// NETCONF-over-SSH address of the agent, host:port (with
        /// --call-home: replaced by where each call comes from).
        #[arg(long, required_unless_present = "call_home")]
        address: Option<String>,
        /// The device calls home (RFC 8071) to `serve`: it is recognised
        /// by its host key, which must be given (--host-key).
        #[arg(long, requires = "host_key")]
        call_home: bool,
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
        /// A free-form label (repeat).
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// List the registered devices with their last check-in.
    List,
    /// Devices that called home with an unknown host key and no
    /// enrollment token (and those rejected).
    Pending,
    /// Accept a pending device: it becomes a device that calls home, its
    /// host key pinned; its waiting connection is used at once.
    Accept {
        /// Its name in the pending list (or its host key fingerprint).
        name: String,
        /// Name to give it (default: the pending name).
        #[arg(long = "as")]
        new_name: Option<String>,
        /// `client` or `server`: which end of customizations it usually is.
        #[arg(long)]
        role: Option<String>,
        /// A free-form label (repeat).
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Reject a pending device: its calls are refused from now on.
    Reject {
        /// Its name in the pending list (or its host key fingerprint).
        name: String,
    },
    /// Issue a one-time enrollment token for a device to be called NAME:
    /// start its agent with the token in --enrollment-token-file and
    /// --call-home pointing at `serve`; its first call adds it with its
    /// host key pinned. Prints the token (stored only as its SHA-256).
    Enroll {
        /// Name the device will have.
        name: String,
        /// `client` or `server`.
        #[arg(long)]
        role: Option<String>,
        /// A free-form label (repeat).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Seconds the token is valid.
        #[arg(long, default_value_t = 86_400)]
        ttl: u64,
    },
    /// Forget a device and its never-deployed modules and requests (refused
    /// while a module is deployed or a request is in flight; history stays).
    Remove {
        /// Name of the device.
        name: String,
    },
}

impl DevicesCmd {
    pub async fn run(&self, g: &Global) -> anyhow::Result<ExitCode> {
        let nco = g.open_nco(NcoConfig::default())?;
        match self {
            DevicesCmd::Add {
                name,
                address,
                call_home,
                user,
                key,
                host_key,
                role,
                labels,
            } => {
                let new = NewDevice {
                    name: name.clone(),
                    // Not known before the first call (RFC 2606 name).
                    address: address
                        .clone()
                        .unwrap_or_else(|| "unknown.invalid:4334".into()),
                    username: user.clone(),
                    ssh_key_path: key.display().to_string(),
                    host_key_fingerprint: host_key.clone(),
                    role: role.clone(),
                    labels: labels.clone(),
                };
                let d = if *call_home {
                    nco.cib().add_call_home_device(&new)?
                } else {
                    nco.cib().add_device(&new)?
                };
                print_devices(g.json, &[d], &[]);
            }
            DevicesCmd::List => {
                let ds = nco.cib().devices()?;
                let check_ins = nco.cib().check_ins()?;
                print_devices(g.json, &ds, &check_ins);
            }
            DevicesCmd::Pending => {
                let ps = nco.cib().pending_devices()?;
                print_pending(g.json, &ps);
            }
            DevicesCmd::Accept {
                name,
                new_name,
                role,
                labels,
            } => {
                let d =
                    nco.cib()
                        .accept_pending(name, new_name.as_deref(), role.as_deref(), labels)?;
                let check_ins = nco.cib().check_ins()?;
                print_devices(g.json, &[d], &check_ins);
            }
            DevicesCmd::Reject { name } => {
                nco.cib().reject_pending(name)?;
                if !g.json {
                    println!("rejected {name}: its calls are refused");
                }
            }
            DevicesCmd::Enroll {
                name,
                role,
                labels,
                ttl,
            } => {
                let ttl_ms = i64::try_from(ttl.saturating_mul(1000)).unwrap_or(i64::MAX);
                let e = nco
                    .cib()
                    .create_enrollment(name, role.as_deref(), labels, ttl_ms)?;
                if g.json {
                    println!(
                        "{}",
                        Json::obj([
                            ("device", Json::str(&e.device)),
                            ("token", Json::str(&e.token)),
                            ("expires_at", json_time(e.expires_at)),
                        ])
                    );
                } else {
                    println!("{}", e.token);
                    eprintln!(
                        "one-time token for {} (valid until {}); give it to the agent in a 0600 file: \
                         l45-agent --enrollment-token-file FILE --call-home NCO:4334 ...",
                        e.device,
                        rfc3339(e.expires_at)
                    );
                }
            }
            DevicesCmd::Remove { name } => {
                nco.cib().remove_device(name)?;
                if !g.json {
                    println!("removed device {name}");
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn print_devices(json: bool, ds: &[Device], check_ins: &[CheckIn]) {
    let check_in = |d: &str| check_ins.iter().find(|c| c.device == d);
    emit(
        json,
        || {
            Json::arr(ds.iter().map(|d| {
                let c = check_in(&d.name);
                Json::obj([
                    ("name", Json::str(&d.name)),
                    ("address", Json::str(&d.address)),
                    ("user", Json::str(&d.username)),
                    ("host_key", json_opt_str(d.host_key_fingerprint.as_deref())),
                    ("role", json_opt_str(d.role.as_deref())),
                    ("added_at", json_time(d.added_at)),
                    ("call_home", Json::Bool(d.call_home)),
                    ("device_data", c.map_or(Json::Null, |c| data_json(&c.data))),
                    (
                        "checked_in_at",
                        c.map_or(Json::Null, |c| json_time(c.checked_in_at)),
                    ),
                ])
            }))
        },
        &[
            "name",
            "address",
            "user",
            "role",
            "added",
            "transport",
            "platform",
            "tap",
            "checked in",
            "host key",
        ],
        || {
            ds.iter()
                .map(|d| {
                    let c = check_in(&d.name);
                    vec![
                        d.name.clone(),
                        d.address.clone(),
                        d.username.clone(),
                        cell(d.role.as_deref()),
                        rfc3339(d.added_at),
                        if d.call_home { "call-home" } else { "dial" }.to_string(),
                        c.map_or("-".into(), |c| {
                            format!("{} {}", c.data.architecture, c.data.kernel_release)
                        }),
                        c.map_or("-".into(), |c| c.data.tap_backend.clone()),
                        c.map_or("-".into(), |c| rfc3339(c.checked_in_at)),
                        d.host_key_fingerprint
                            .clone()
                            .unwrap_or_else(|| "(pinned on first connect)".into()),
                    ]
                })
                .collect()
        },
    );
}

fn data_json(d: &DeviceData) -> Json {
    Json::obj([
        ("host_name", Json::str(&d.host_name)),
        ("machine_id", Json::str(&d.machine_id)),
        ("architecture", Json::str(&d.architecture)),
        ("os_name", Json::str(&d.os_name)),
        ("kernel_release", Json::str(&d.kernel_release)),
        ("agent_version", Json::str(&d.agent_version)),
        ("tap_backend", Json::str(&d.tap_backend)),
        (
            "userspace_abi_version",
            d.userspace_abi_version.map_or(Json::Null, Json::num),
        ),
        (
            "kernel_module_release",
            json_opt_str(d.kernel_module_release.as_deref()),
        ),
        ("kinds", Json::arr(d.kinds.iter().map(|k| Json::str(k)))),
        ("last_start", json_opt_str(d.last_start.as_deref())),
    ])
}

fn print_pending(json: bool, ps: &[PendingDevice]) {
    emit(
        json,
        || {
            Json::arr(ps.iter().map(|p| {
                Json::obj([
                    ("name", Json::str(&p.name)),
                    ("state", Json::str(p.state.as_str())),
                    ("host_key", Json::str(&p.host_key_fingerprint)),
                    ("peer", Json::str(&p.peer)),
                    ("device_data", data_json(&p.data)),
                    ("first_seen_at", json_time(p.first_seen_at)),
                    ("last_seen_at", json_time(p.last_seen_at)),
                    ("calls", Json::num(p.calls)),
                ])
            }))
        },
        &[
            "name",
            "state",
            "from",
            "host",
            "platform",
            "tap",
            "calls",
            "last call",
            "host key",
        ],
        || {
            ps.iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        p.state.as_str().to_string(),
                        p.peer.clone(),
                        p.data.host_name.clone(),
                        format!("{} {}", p.data.architecture, p.data.kernel_release),
                        p.data.tap_backend.clone(),
                        p.calls.to_string(),
                        rfc3339(p.last_seen_at),
                        p.host_key_fingerprint.clone(),
                    ]
                })
                .collect()
        },
    );
}
