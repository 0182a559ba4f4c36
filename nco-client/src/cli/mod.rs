//! The operator CLI's commands, one module per command group, and what
//! they share: the global options, opening the NCO, progress and waiting
//! for requests.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use l45_cib::{Cib, Request, RequestState};
use l45_nco::{Nco, NcoConfig};

pub mod alerts;
pub mod deploy;
pub mod devices;
pub mod history;
pub mod images;
pub mod middlebox;
pub mod modules;
pub mod monitor;
pub mod output;
pub mod rotate;
pub mod serve;
pub mod status;
pub mod time;

/// Options every command takes.
#[derive(Args, Debug)]
pub struct Global {
    /// The CIB file (created if absent).
    #[arg(long, env = "L45_CIB", default_value = "l45-cib.sqlite", global = true)]
    pub cib: PathBuf,
    /// Machine-readable JSON output instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for devices before giving up on a command.
    #[arg(long, default_value_t = 120, global = true)]
    pub timeout: u64,
    /// Most devices worked on at once.
    #[arg(long, default_value_t = 256, global = true)]
    pub concurrency: usize,
    /// Log format: `text` or `json` lines on stderr, `journal` (fields kept
    /// as journal fields L45_*), or `auto`: `journal` when stderr is the
    /// journal (a systemd service), else `text`. Level: L45_LOG.
    #[arg(long, default_value = "auto", value_parser = l45_service::logging::FORMATS, global = true)]
    pub log_format: String,
}

impl Global {
    /// The NCO on the CIB file, with `cfg` and the `--concurrency` limit.
    pub fn open_nco(&self, mut cfg: NcoConfig) -> anyhow::Result<Arc<Nco>> {
        cfg.concurrency = self.concurrency.max(1);
        let cib = Cib::open(&self.cib)
            .with_context(|| format!("opening the CIB {}", self.cib.display()))?;
        let nco = Nco::new(cib, cfg);
        // Devices that call home are reached through `serve`.
        nco.set_call_home_route(l45_nco::netconf::Route::Relay(
            l45_nco::netconf::relay::socket_path(&self.cib),
        ));
        Ok(nco)
    }

    /// Carries out the requests `ids` now, showing progress as `step`.
    pub async fn wait_for(
        &self,
        nco: &Arc<Nco>,
        step: &str,
        ids: &[i64],
    ) -> anyhow::Result<Vec<Request>> {
        let mut p = progress_printer(self.json);
        Ok(nco
            .drive(ids, Duration::from_secs(self.timeout), |d, t| p(step, d, t))
            .await?)
    }
}

/// Progress on stderr for people (a line per change; one updating line on a
/// terminal); nothing with `--json`.
pub fn progress_printer(json: bool) -> impl FnMut(&str, usize, usize) + Send {
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

/// Exit status 0 if every request was confirmed, else 2.
pub fn exit_for(reqs: &[Request]) -> ExitCode {
    if reqs.iter().all(|r| r.state == RequestState::Confirmed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// Parses `NAME=VALUE` (a kind parameter).
pub fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::parse_pair;

    #[test]
    fn pairs_parse() {
        assert_eq!(parse_pair("tag=X=Y").unwrap(), ("tag".into(), "X=Y".into()));
        assert_eq!(parse_pair("tag=").unwrap(), ("tag".into(), String::new()));
        assert!(parse_pair("=x").is_err());
        assert!(parse_pair("novalue").is_err());
    }
}
