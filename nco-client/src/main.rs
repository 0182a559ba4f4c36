//! `l45-nco`: the operator CLI and the scheduler service of the Layer 4.5
//! network-wide orchestrator. This file parses the command line and hands
//! the command to its module under `cli/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;
mod json;

use cli::{
    alerts, devices, history, images, middlebox, modules, monitor, rotate, serve, status, Global,
};

/// Layer 4.5 network-wide orchestrator: constructs, deploys, monitors,
/// security-checks, deprecates, revokes and rotates customization modules
/// on device agents over NETCONF/SSH. Its state is the CIB, an SQLite file.
///
/// Commands that change devices queue requests in the CIB and carry them
/// out at once (unless --no-wait, or a time is given with --at); `serve`
/// runs the scheduler that carries out queued and scheduled requests,
/// monitors devices and runs security checks. Times are printed as RFC 3339
/// in UTC with milliseconds, e.g. 2026-12-05T18:30:00.250Z.
#[derive(Parser, Debug)]
#[command(name = "l45-nco", version)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Device agents the NCO manages.
    #[command(subcommand)]
    Devices(devices::DevicesCmd),
    /// Customization modules on devices.
    #[command(subcommand)]
    Modules(modules::ModulesCmd),
    /// Module images: kinds that are not built in (signing key, build,
    /// push to devices).
    #[command(subcommand)]
    Images(images::ImagesCmd),
    /// Rotate a customization to a new module on live traffic
    /// (dissertation figure 5.3): deploy below, raise on the receivers, then
    /// on the senders, then revoke the old one; each step verified.
    Rotate(rotate::RotateArgs),
    /// Per-device summary.
    Status,
    /// Alerts (unacknowledged first).
    Alerts(alerts::AlertsArgs),
    /// The CIB's history, newest first.
    History(history::HistoryArgs),
    /// Middleboxes and the inverse modules they get.
    #[command(subcommand)]
    Middlebox(middlebox::MiddleboxCmd),
    /// Answer a middlebox's question about a flow from the CIB: which
    /// modules customize it and their inverses; unknown flows are rejected
    /// and alerted (exit status 3).
    Flow(middlebox::FlowArgs),
    /// Ask every device for its state report now.
    Monitor,
    /// Challenge every module whose last check is older than the window.
    SecurityCheck(monitor::SecurityCheckArgs),
    /// Run the scheduler: carry out due and scheduled requests, monitor and
    /// security-check, until SIGINT/SIGTERM.
    Serve(serve::ServeArgs),
}

impl Command {
    async fn run(&self, g: &Global) -> anyhow::Result<ExitCode> {
        match self {
            Command::Devices(c) => c.run(g).await,
            Command::Modules(c) => c.run(g).await,
            Command::Images(c) => c.run(g).await,
            Command::Rotate(a) => a.run(g).await,
            Command::Status => status::run(g).await,
            Command::Alerts(a) => a.run(g).await,
            Command::History(a) => a.run(g).await,
            Command::Middlebox(c) => c.run(g).await,
            Command::Flow(a) => a.run(g).await,
            Command::Monitor => monitor::run(g).await,
            Command::SecurityCheck(a) => a.run(g).await,
            Command::Serve(a) => a.run(g).await,
        }
    }
}

fn main() -> ExitCode {
    if let Some(code) =
        l45_service::assets::run_if_requested(<Cli as clap::CommandFactory>::command)
    {
        return code;
    }
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("L45_LOG").unwrap_or_else(|_| "warn".into());
    if let Err(e) = l45_service::logging::init(&cli.global.log_format, filter, "l45-nco") {
        eprintln!("l45-nco: {e}");
        return ExitCode::from(1);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("l45-nco: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli.command.run(&cli.global)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("l45-nco: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Cli;

    /// Every option, positional argument and subcommand of every command
    /// says what it is for in `--help` (clap's own help/version aside).
    #[test]
    fn every_argument_and_subcommand_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_name() != "help" && sub.get_about().is_none() {
                    missing.push(format!("{sub_path} (subcommand)"));
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "l45-nco", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:#?}");
        // The walk sees the tree: deploy's options are in it.
        let deploy = cmd
            .find_subcommand("modules")
            .and_then(|m| m.find_subcommand("deploy"))
            .map(|d| d.get_arguments().count());
        assert!(deploy.is_some_and(|n| n > 15), "{deploy:?}");
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
