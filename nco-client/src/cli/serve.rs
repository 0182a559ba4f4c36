//! `serve`: the scheduler service.

use std::process::ExitCode;
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
    /// Take calls from devices that call home (RFC 8071) on HOST:PORT
    /// (port 0: any free port; the address is printed). Without this
    /// option serve tries 0.0.0.0:4334 and goes on without call home if
    /// that port is taken; `none` turns call home off.
    #[arg(long, value_name = "HOST:PORT|none")]
    call_home_listen: Option<String>,
    /// SSH user the NCO logs in as on a calling device it does not know
    /// yet (enrollment, pending).
    #[arg(long, default_value = "admin")]
    call_home_user: String,
    /// The NCO's private key for calling devices it does not know yet;
    /// known devices are logged in to with their own CIB key. Without it
    /// an unknown device is recorded as pending from its host key alone
    /// and enrollment tokens cannot be read.
    #[arg(long, value_name = "FILE")]
    call_home_key: Option<std::path::PathBuf>,
    /// Seconds between SSH keepalives on call-home sessions (a cut link is
    /// noticed after three unanswered ones).
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    call_home_keepalive: u64,
}

impl ServeArgs {
    pub async fn run(&self, g: &Global) -> anyhow::Result<ExitCode> {
        let cfg = NcoConfig {
            state_req_window: Duration::from_secs(self.state_req_window.max(1)),
            sec_check_window: Duration::from_secs(self.sec_check_window.max(1)),
            ..NcoConfig::default()
        };
        let nco = g.open_nco(cfg)?;
        nco.set_call_home_route(l45_nco::netconf::Route::Called);
        let call_home = self.start_call_home(g, &nco).await?;
        // One line scripts can wait for.
        eprintln!("l45-nco serving (CIB {}; {call_home})", g.cib.display());
        l45_service::notify::ready("serving");
        nco.serve(shutdown_signal()).await?;
        eprintln!("l45-nco stopped");
        Ok(ExitCode::SUCCESS)
    }
}

impl ServeArgs {
    /// The call-home listener and the relay other `l45-nco` commands reach
    /// calling devices through.
    async fn start_call_home(
        &self,
        g: &Global,
        nco: &std::sync::Arc<l45_nco::Nco>,
    ) -> anyhow::Result<String> {
        use anyhow::Context as _;
        let (addr, explicit) = match self.call_home_listen.as_deref() {
            Some("none") => return Ok("call home off".into()),
            Some(a) => (a, true),
            None => ("0.0.0.0:4334", false),
        };
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) if !explicit => {
                tracing::info!(%addr, error = %e, "call-home listener not started (said on the serving line)");
                return Ok(format!("call home off: cannot listen on {addr}: {e}"));
            }
            Err(e) => return Err(e).with_context(|| format!("call home: listening on {addr}")),
        };
        let local = listener.local_addr()?;
        let relay = l45_nco::netconf::relay::bind(&g.cib).with_context(|| {
            format!(
                "relay socket {}",
                l45_nco::netconf::relay::socket_path(&g.cib).display()
            )
        })?;
        let cfg = l45_nco::callhome::CallHomeConfig {
            user: self.call_home_user.clone(),
            key: self.call_home_key.clone(),
            keepalive: Duration::from_secs(self.call_home_keepalive.max(1)),
        };
        tokio::spawn(std::sync::Arc::clone(nco).serve_call_home(listener, cfg));
        let pool = nco.pool().clone();
        tokio::spawn(l45_nco::netconf::relay::serve(
            relay,
            move |device: &str| pool.live(device),
            Duration::from_secs(10),
        ));
        Ok(format!("call home on {local}"))
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
