//! `middlebox` (middleboxes and the inverse modules they get) and `flow`
//! (a middlebox's question about a flow).

use std::net::IpAddr;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use l45_cib::{FlowMatch, FlowQuery, MiddleboxDeployment, MiddleboxDeploymentState, Protocol};
use l45_nco::{middlebox, Nco, NcoConfig};

use super::output::{emit, json_opt_str, json_time, table};
use super::time::rfc3339;
use super::Global;
use crate::json::Json;

#[derive(Subcommand, Debug)]
pub enum MiddleboxCmd {
    /// Register a middlebox; type `wireshark` gets generated dissectors.
    Add {
        /// Name of the middlebox in the CIB.
        name: String,
        /// Where its inverse modules go: dir:PATH (a plugin directory).
        #[arg(long)]
        address: String,
        /// Middlebox type; `wireshark` gets Lua dissectors as inverses.
        #[arg(long = "type", default_value = "wireshark")]
        mb_type: String,
    },
    /// List the registered middleboxes.
    List,
    /// Ship the inverse of every deployed module to a middlebox.
    Distribute {
        /// Name of the middlebox.
        name: String,
    },
}

impl MiddleboxCmd {
    pub async fn run(&self, g: &Global) -> anyhow::Result<ExitCode> {
        let nco = g.open_nco(NcoConfig::default())?;
        match self {
            MiddleboxCmd::Add {
                name,
                address,
                mb_type,
            } => add(g, &nco, name, address, mb_type)?,
            MiddleboxCmd::List => list(g, &nco)?,
            MiddleboxCmd::Distribute { name } => {
                let ds = middlebox::distribute(&nco, name)?;
                print_deployments(g.json, &ds);
                if ds
                    .iter()
                    .any(|d| d.state != MiddleboxDeploymentState::Deployed)
                {
                    return Ok(ExitCode::from(2));
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn add(g: &Global, nco: &Nco, name: &str, address: &str, mb_type: &str) -> anyhow::Result<()> {
    let mb = nco.cib().add_middlebox(&l45_cib::NewMiddlebox {
        name: name.to_string(),
        address: address.to_string(),
        mb_type: mb_type.to_string(),
    })?;
    let n = if mb.mb_type == middlebox::WIRESHARK {
        middlebox::register_inverses(nco, &mb.mb_type)?
    } else {
        0
    };
    if g.json {
        println!(
            "{}",
            Json::obj([
                ("name", Json::str(&mb.name)),
                ("type", Json::str(&mb.mb_type)),
                ("inverses", Json::num(n)),
                ("added_at", json_time(mb.added_at)),
            ])
        );
    } else {
        println!(
            "middlebox {} ({}) added; inverse modules for {n} kinds",
            mb.name, mb.mb_type
        );
    }
    Ok(())
}

fn list(g: &Global, nco: &Nco) -> anyhow::Result<()> {
    let mbs = nco.cib().middleboxes()?;
    emit(
        g.json,
        || {
            Json::arr(mbs.iter().map(|m| {
                Json::obj([
                    ("name", Json::str(&m.name)),
                    ("address", Json::str(&m.address)),
                    ("type", Json::str(&m.mb_type)),
                    ("added_at", json_time(m.added_at)),
                ])
            }))
        },
        &["name", "address", "type", "added"],
        || {
            mbs.iter()
                .map(|m| {
                    vec![
                        m.name.clone(),
                        m.address.clone(),
                        m.mb_type.clone(),
                        rfc3339(m.added_at),
                    ]
                })
                .collect()
        },
    );
    Ok(())
}

fn print_deployments(json: bool, ds: &[MiddleboxDeployment]) {
    emit(
        json,
        || {
            Json::arr(ds.iter().map(|d| {
                Json::obj([
                    ("device", Json::str(&d.device)),
                    ("module", Json::num(d.module_id)),
                    ("kind", Json::str(&d.kind)),
                    ("state", Json::str(d.state.as_str())),
                    ("sha256", json_opt_str(d.content_sha256.as_deref())),
                    ("error", json_opt_str(d.last_error.as_deref())),
                    ("updated_at", json_time(d.updated_at)),
                ])
            }))
        },
        &["device", "module", "kind", "state", "sha256 / error"],
        || {
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
                .collect()
        },
    );
}

/// The flow a middlebox asks about.
#[derive(Args, Debug)]
pub struct FlowArgs {
    /// The middlebox asking (registered with `middlebox add`).
    #[arg(long)]
    middlebox: String,
    /// Transport protocol of the flow.
    #[arg(long, value_parser = ["tcp", "udp", "any"], default_value = "udp")]
    protocol: String,
    /// Source address of the flow.
    #[arg(long)]
    src: IpAddr,
    /// Source port of the flow.
    #[arg(long)]
    sport: u16,
    /// Destination address of the flow.
    #[arg(long)]
    dst: IpAddr,
    /// Destination port of the flow.
    #[arg(long)]
    dport: u16,
}

impl FlowArgs {
    pub async fn run(&self, g: &Global) -> anyhow::Result<ExitCode> {
        let nco = g.open_nco(NcoConfig::default())?;
        let q = FlowQuery {
            middlebox: self.middlebox.clone(),
            protocol: Protocol::parse(&self.protocol).unwrap_or(Protocol::Any),
            source: self.src,
            source_port: self.sport,
            destination: self.dst,
            destination_port: self.dport,
        };
        let ms = middlebox::flow_query(&nco, &q)?;
        if !g.json && ms.is_empty() {
            println!("flow rejected: no customization in the CIB explains it (alert raised)");
        } else {
            print_matches(g.json, &ms);
        }
        Ok(if ms.is_empty() {
            ExitCode::from(3)
        } else {
            ExitCode::SUCCESS
        })
    }
}

fn print_matches(json: bool, ms: &[FlowMatch]) {
    let end = |m: &FlowMatch| format!("{:?}", m.end).to_lowercase();
    if json {
        println!(
            "{}",
            Json::arr(ms.iter().map(|m| {
                Json::obj([
                    ("device", Json::str(&m.device)),
                    ("end", Json::str(&end(m))),
                    ("module", Json::num(m.module_id)),
                    ("name", Json::str(&m.module_name)),
                    ("kind", Json::str(&m.kind)),
                    (
                        "inverse",
                        json_opt_str(m.inverse.as_ref().map(|i| i.artefact_name.as_str())),
                    ),
                    ("inverse_deployed", Json::Bool(m.inverse_deployed)),
                ])
            }))
        );
        return;
    }
    table(
        &[
            "device", "end", "module", "name", "kind", "inverse", "deployed",
        ],
        ms.iter()
            .map(|m| {
                vec![
                    m.device.clone(),
                    end(m),
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
