//! `devices`: the device agents the NCO manages.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use l45_cib::{Device, NewDevice};
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
        /// A free-form label (repeat).
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// List the registered devices.
    List,
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
                print_devices(g.json, &[d]);
            }
            DevicesCmd::List => {
                let ds = nco.cib().devices()?;
                print_devices(g.json, &ds);
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

fn print_devices(json: bool, ds: &[Device]) {
    emit(
        json,
        || {
            Json::arr(ds.iter().map(|d| {
                Json::obj([
                    ("name", Json::str(&d.name)),
                    ("address", Json::str(&d.address)),
                    ("user", Json::str(&d.username)),
                    ("host_key", json_opt_str(d.host_key_fingerprint.as_deref())),
                    ("role", json_opt_str(d.role.as_deref())),
                    ("added_at", json_time(d.added_at)),
                ])
            }))
        },
        &["name", "address", "user", "role", "added", "host key"],
        || {
            ds.iter()
                .map(|d| {
                    vec![
                        d.name.clone(),
                        d.address.clone(),
                        d.username.clone(),
                        cell(d.role.as_deref()),
                        rfc3339(d.added_at),
                        d.host_key_fingerprint
                            .clone()
                            .unwrap_or_else(|| "(pinned on first connect)".into()),
                    ]
                })
                .collect()
        },
    );
}
