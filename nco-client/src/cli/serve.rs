//! `serve`: the scheduler service.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use l45_nco::nco::{parse_duration, MovingTarget, Overlap};
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
    /// Moving target (dissertation §6.2.7): rotate the customization NAME
    /// (the name of its first module) every `--every`, each time to a new
    /// module (NAME-r2, NAME-r3, …) of the same kind with a fresh random
    /// tag or code; OVERLAP as `rotate --overlap` (default 2s). Devices
    /// with role `server` undo it, role `client` apply it. Repeatable.
    #[arg(long = "rotate", value_name = "NAME[:OVERLAP]", value_parser = parse_moving_target)]
    rotate: Vec<(String, Overlap)>,
    /// Period of `--rotate`.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    every: Duration,
    /// Serve Prometheus metrics at http://ADDR/metrics (plain HTTP, GET
    /// only: bind it to a loopback or management address). Off by default.
    #[arg(long, value_name = "ADDR", env = "L45_METRICS")]
    metrics: Option<std::net::SocketAddr>,
}

fn parse_moving_target(s: &str) -> Result<(String, Overlap), String> {
    let (name, overlap) = s.split_once(':').unwrap_or((s, "2s"));
    if name.is_empty() {
        return Err("a customization name is needed".into());
    }
    Ok((name.to_string(), overlap.parse()?))
}

impl ServeArgs {
    pub async fn run(&self, g: &Global) -> anyhow::Result<ExitCode> {
        let cfg = NcoConfig {
            state_req_window: Duration::from_secs(self.state_req_window.max(1)),
            sec_check_window: Duration::from_secs(self.sec_check_window.max(1)),
            ..NcoConfig::default()
        };
        let nco = g.open_nco(cfg)?;
        let targets: Vec<MovingTarget> = self
            .rotate
            .iter()
            .map(|(name, overlap)| MovingTarget {
                name: name.clone(),
                every: self.every,
                overlap: *overlap,
                overlap_max: self.every.max(Duration::from_secs(60)),
                step_timeout: Duration::from_secs(g.timeout),
            })
            .collect();
        let (stop_rotations, rotations_stopped) = tokio::sync::watch::channel(false);
        let mut rotations =
            tokio::spawn(nco.clone().run_moving_targets(targets, rotations_stopped));
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
        nco.set_call_home_route(l45_nco::netconf::Route::Called);
        let call_home = self.start_call_home(g, &nco).await?;
        // One line scripts can wait for.
        eprintln!("l45-nco serving (CIB {}; {call_home})", g.cib.display());
        l45_service::notify::ready("serving");
        let served = nco.serve(shutdown_signal()).await;
        // A rotation cut off mid-way would leave two generations live:
        // let the one in progress finish, unless told again to stop.
        let _ = stop_rotations.send(true);
        let quick = tokio::time::timeout(Duration::from_millis(200), &mut rotations).await;
        if quick.is_err() {
            eprintln!("l45-nco: finishing the rotation in progress (signal again to stop at once)");
            tokio::select! {
                _ = &mut rotations => {}
                _ = shutdown_signal() => {
                    rotations.abort();
                    tracing::warn!("rotation in progress abandoned: the customization may have two live generations");
                }
            }
        }
        served?;
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
