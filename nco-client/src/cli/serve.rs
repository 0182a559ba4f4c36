//! `serve`: the scheduler service.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use l45_nco::NcoConfig;

use super::Global;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Seconds between state reports from every device.
    #[arg(long, default_value_t = 30)]
    state_req_window: u64,
    /// Seconds between security checks of every module.
    #[arg(long, default_value_t = 300)]
    sec_check_window: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (plain HTTP, GET
    /// only: bind it to a loopback or management address). Off by default.
    #[arg(long, value_name = "ADDR", env = "L45_METRICS")]
    metrics: Option<std::net::SocketAddr>,
}

impl ServeArgs {
    pub async fn run(&self, g: &Global) -> anyhow::Result<ExitCode> {
        let cfg = NcoConfig {
            state_req_window: Duration::from_secs(self.state_req_window.max(1)),
            sec_check_window: Duration::from_secs(self.sec_check_window.max(1)),
            ..NcoConfig::default()
        };
        let nco = g.open_nco(cfg)?;
        if let Some(addr) = self.metrics {
            let listener = l45_service::metrics::bind(addr).await?;
            let at = listener.local_addr()?;
            let registry = l45_nco::metrics::registry(&nco);
            l45_service::metrics::spawn(
                listener,
                Arc::new(move || l45_service::metrics::render(&registry)),
                l45_service::metrics::Limits::default(),
            );
            eprintln!("l45-nco metrics on {at}");
        }
        eprintln!("l45-nco serving (CIB {})", g.cib.display());
        l45_service::notify::ready("serving");
        nco.serve(shutdown_signal()).await?;
        eprintln!("l45-nco stopped");
        Ok(ExitCode::SUCCESS)
    }
}

/// Resolves on SIGINT or SIGTERM.
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
