//! `modules`: customization modules on devices — deploy (in `deploy`),
//! list, and the single-module actions (revoke, deprecate, activate,
//! deactivate, priority).

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use l45_cib::{Action, Module};
use l45_nco::{Nco, NcoConfig};

use super::deploy::DeployArgs;
use super::output::{emit, json_opt_time, json_time, print_requests, time_cell};
use super::{exit_for, Global};
use crate::json::Json;

#[derive(Subcommand, Debug)]
pub enum ModulesCmd {
    /// Construct a module instance per device and deploy it.
    Deploy(Box<DeployArgs>),
    /// List modules in the CIB (every state, revoked included).
    List {
        /// Only this device's modules.
        #[arg(long)]
        device: Option<String>,
    },
    /// Remove a module from its device.
    Revoke(Target),
    /// No new sockets; revoked automatically once idle.
    Deprecate(Target),
    /// Let a deactivated module customize traffic again.
    Activate(Target),
    /// Keep a module attached but pass traffic through unchanged.
    Deactivate(Target),
    /// Change a module's priority on its device.
    Priority {
        #[command(flatten)]
        target: Target,
        /// The new priority: order in a socket's chain, lower runs first.
        #[arg(long)]
        priority: u16,
    },
}

/// One module on one device, by id or name.
#[derive(Args, Debug)]
pub struct Target {
    /// Device name.
    #[arg(long)]
    device: String,
    /// Module id on that device.
    #[arg(long, conflicts_with = "name", required_unless_present = "name")]
    id: Option<u32>,
    /// Module name on that device.
    #[arg(long)]
    name: Option<String>,
    /// Only queue the request (a running `serve` carries it out).
    #[arg(long)]
    no_wait: bool,
}

impl ModulesCmd {
    pub async fn run(&self, g: &Global) -> anyhow::Result<ExitCode> {
        let nco = g.open_nco(NcoConfig::default())?;
        let (target, action, step) = match self {
            ModulesCmd::Deploy(a) => return a.run(g, &nco).await,
            ModulesCmd::List { device } => return list(g, &nco, device.as_deref()),
            ModulesCmd::Revoke(t) => (t, Action::Revoke, "revoke"),
            ModulesCmd::Deprecate(t) => (t, Action::Deprecate, "deprecate"),
            ModulesCmd::Activate(t) => (t, Action::Activate, "activate"),
            ModulesCmd::Deactivate(t) => (t, Action::Deactivate, "deactivate"),
            ModulesCmd::Priority { target, priority } => {
                (target, Action::SetPriority(*priority), "priority")
            }
        };
        let m = resolve(&nco, target)?;
        let req = nco
            .cib()
            .request(&target.device, m.module_id, action, None)?;
        if target.no_wait {
            print_requests(g.json, &[req]);
            return Ok(ExitCode::SUCCESS);
        }
        let done = g.wait_for(&nco, step, &[req.id]).await?;
        print_requests(g.json, &done);
        Ok(exit_for(&done))
    }
}

fn resolve(nco: &Nco, t: &Target) -> anyhow::Result<Module> {
    Ok(match (&t.id, &t.name) {
        (Some(id), _) => nco.cib().module(&t.device, *id)?,
        (None, Some(name)) => nco.cib().module_by_name(&t.device, name)?,
        (None, None) => bail!("give --id or --name"),
    })
}

fn list(g: &Global, nco: &Nco, device: Option<&str>) -> anyhow::Result<ExitCode> {
    let cib = nco.cib();
    let devices: Vec<String> = match device {
        Some(d) => vec![d.to_string()],
        None => cib.devices()?.into_iter().map(|d| d.name).collect(),
    };
    let mut all = Vec::new();
    for d in devices {
        all.extend(cib.modules_of_device(&d)?);
    }
    drop(cib);
    print_modules(g.json, &all);
    Ok(ExitCode::SUCCESS)
}

fn print_modules(json: bool, ms: &[Module]) {
    emit(
        json,
        || {
            Json::arr(ms.iter().map(|m| {
                Json::obj([
                    ("device", Json::str(&m.device)),
                    ("id", Json::num(m.module_id)),
                    ("name", Json::str(&m.name)),
                    ("kind", Json::str(&m.kind)),
                    ("priority", Json::num(m.priority)),
                    ("activated", Json::Bool(m.activated)),
                    ("deprecated", Json::Bool(m.deprecated)),
                    ("status", Json::str(m.status.as_str())),
                    ("created_at", json_time(m.created_at)),
                    ("deployed_at", json_opt_time(m.deployed_at)),
                    ("revoked_at", json_opt_time(m.revoked_at)),
                    ("image", m.image.as_deref().map_or(Json::Null, Json::str)),
                ])
            }))
        },
        &[
            "device",
            "id",
            "name",
            "kind",
            "priority",
            "activated",
            "deprecated",
            "status",
            "deployed",
        ],
        || {
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
                        time_cell(m.deployed_at),
                    ]
                })
                .collect()
        },
    );
}
