//! `l45-agent`: the Layer 4.5 device agent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Parser;
use l45_agent::agent::{Agent, AgentOptions};
use l45_agent::config::edit::Engine;
use l45_agent::ssh::{self, AuthConfig, SharedAuth, SshServer};
use l45_tap_control::{RecordingTap, TapControl};
use l45_tap_kernel::KernelTap;
use l45_tap_userspace::UserspaceTap;

/// Layer 4.5 device agent: serves the layer45-customization YANG model over
/// NETCONF (RFC 6241) on SSH (RFC 6242) and turns committed changes of
/// /l45:customizations into calls into the tap.
///
/// State (host keys, running.xml, startup.xml) lives in --state-dir and
/// survives restarts. On first start the running configuration gets a NACM
/// policy in which the --admin users may do everything and every other
/// user may read (without module keys) and run `report`.
#[derive(Parser, Debug)]
#[command(name = "l45-agent", version)]
struct Args {
    /// Address and port to listen on for NETCONF over SSH.
    #[arg(long, default_value = "127.0.0.1:8830")]
    listen: SocketAddr,
    /// Directory for host keys and persisted datastores (created if absent).
    #[arg(long)]
    state_dir: PathBuf,
    /// OpenSSH authorized_keys file whose keys log in as USER (repeatable).
    /// Without `USER:` the keys log in as the first --admin, and only as
    /// that user. SIGHUP reads the files again (sessions stay; a file that
    /// does not parse keeps the keys in force).
    #[arg(long = "authorized-keys", value_name = "[USER:]FILE")]
    authorized_keys: Vec<String>,
    /// User name for password login (labs only; with --password-file).
    #[arg(long, requires = "password_file")]
    user: Option<String>,
    /// File whose first line is the password for --user.
    #[arg(long, requires = "user")]
    password_file: Option<PathBuf>,
    /// User put in the NACM admin group on first start (repeatable;
    /// default: --user, or "admin").
    #[arg(long = "admin")]
    admins: Vec<String>,
    /// Module-image signer trusted on first start, as NAME=KEY with the
    /// key as `l45-nco images key` prints it (ed25519:BASE64) (repeatable;
    /// later changes go through /images/trusted-signer).
    #[arg(long = "trusted-signer", value_name = "NAME=KEY", value_parser = parse_signer)]
    trusted_signers: Vec<(String, String)>,
    /// Most concurrent NETCONF sessions; more are refused.
    #[arg(long, default_value_t = 64)]
    max_sessions: usize,
    /// Largest NETCONF message accepted, in bytes; larger ones get a
    /// `too-big` rpc-error and the session goes on.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    max_message_size: usize,
    /// Seconds a client has to send its hello.
    #[arg(long, default_value_t = 30)]
    hello_timeout: u64,
    /// Seconds a connection has to authenticate (SSH banner and key
    /// exchange included) before it is closed.
    #[arg(long, default_value_t = 30)]
    login_grace_time: u64,
    /// Most connections not yet authenticated; more are closed at once.
    #[arg(long, default_value_t = 64)]
    max_unauthenticated: usize,
    /// Most concurrent NETCONF sessions of one user; more are refused.
    #[arg(long, default_value_t = 16)]
    max_sessions_per_user: usize,
    /// Close a NETCONF session after this many seconds without an RPC
    /// (default: never; subscribed sessions count their notifications).
    #[arg(long, value_name = "SECONDS")]
    idle_timeout: Option<u64>,
    /// Tap backend. `userspace` drives the preload library
    /// (libl45tap.so) through the shared-memory file --tap-shm; `kernel`
    /// drives the l45 kernel module (kmod/) over generic netlink; `recording`
    /// keeps modules in memory with no data path (tests, benchmarks, dry
    /// runs).
    #[arg(long, default_value = "recording", value_parser = ["recording", "userspace", "kernel"])]
    tap: String,
    /// Control file of the user-space tap; tapped processes find it through
    /// the L45_TAP_SHM environment variable (same default).
    #[arg(long, default_value = l45_tap_shm::DEFAULT_PATH)]
    tap_shm: PathBuf,
    /// Most modules the recording tap accepts (default: unlimited).
    #[arg(long)]
    tap_capacity: Option<usize>,
    /// Log format: `text` or `json` lines on stderr, or `journal` (the
    /// systemd journal, every field kept as a journal field L45_*);
    /// `auto` is `journal` when stderr is the journal (a systemd service),
    /// else `text`.
    #[arg(long, default_value = "auto", value_parser = l45_service::logging::FORMATS)]
    log_format: String,
    /// Scale tests: run N emulated devices in this process, each with its
    /// own datastores (--state-dir/dev-NNNN), recording tap and listener
    /// (consecutive ports from --listen, or free ports with port 0), all
    /// sharing one host key. Prints one ready line per device.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=5000))]
    emulate: Option<u32>,
    /// Compute every edit and read with libyang, never with the native
    /// module store's engine (slower; for cross-checking its results).
    #[arg(long)]
    libyang_only: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (plain HTTP, GET
    /// only: bind it to a loopback or management address). Off by default.
    #[arg(long, value_name = "ADDR", env = "L45_METRICS")]
    metrics: Option<SocketAddr>,
    /// Most tap modules given per-module metric series (module_id, kind);
    /// with more modules only the totals are exposed. 0: totals only.
    #[arg(long, value_name = "N", default_value_t = l45_agent::metrics::DEFAULT_MODULE_LIMIT)]
    metrics_module_limit: usize,
    /// Call home (RFC 8071) to the NCO at HOST:PORT (repeatable): open the
    /// TCP connection to it and serve SSH on it, reconnecting with
    /// exponential backoff and jitter. Works alongside --listen.
    #[arg(long = "call-home", value_name = "HOST:PORT")]
    call_home: Vec<String>,
    /// Longest wait between call-home attempts, in seconds (the first
    /// retry waits 1 s, doubling up to this).
    #[arg(long, default_value_t = 60, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    call_home_max_backoff: u64,
    /// File (mode 0600) whose first line is the one-time enrollment token
    /// `l45-nco devices enroll NAME` printed: the NCO accepts this device
    /// at its first call and pins its host key. With --emulate, line N is
    /// device N's token.
    #[arg(long, value_name = "FILE")]
    enrollment_token_file: Option<PathBuf>,
    /// Seconds between SSH keepalives to clients (an NCO that vanished is
    /// noticed after three unanswered ones, and a call-home connection is
    /// then opened again).
    #[arg(long, default_value_t = 30, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    ssh_keepalive: u64,
    /// Most notifications the replay log (state-dir/notifications.log)
    /// keeps for create-subscription's startTime and
    /// establish-subscription's replay-start-time; the oldest go first.
    #[arg(long, default_value_t = 10_000)]
    notification_log_events: usize,
    /// Most bytes the replay log keeps (its file holds at most twice as
    /// much between compactions).
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    notification_log_bytes: usize,
    /// Do not offer YANG-push (RFC 8641): ietf-yang-push is neither in the
    /// hello nor in the YANG library, and datastore subscriptions are
    /// refused. For clients' fallback paths (the NCO then polls `report`).
    #[arg(long)]
    no_yang_push: bool,
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    if let Some(code) =
        l45_service::assets::run_if_requested(<Args as clap::CommandFactory>::command)
    {
        return Ok(code);
    }
    l45_agent::memtrim::configure();
    let args = Args::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    l45_service::logging::init(&args.log_format, filter, "l45-agent")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Reads every --authorized-keys file and the password file: who may log
/// in. Run at start and again on SIGHUP.
fn load_auth(args: &Args, admins: &[String]) -> anyhow::Result<AuthConfig> {
    let mut auth = AuthConfig::default();
    let first_admin = admins.first().map(String::as_str).unwrap_or("admin");
    for spec in &args.authorized_keys {
        // Every key logs in as exactly one user: the one given, or the
        // first admin (a client never picks the name a key is trusted as).
        let (user, file) = match spec.split_once(':') {
            Some((u, f)) if !u.is_empty() && !u.contains('/') => (u, f),
            _ => (first_admin, spec.as_str()),
        };
        let n = auth.add_authorized_keys(user, std::path::Path::new(file))?;
        tracing::info!(file, user, keys = n, "authorized keys loaded");
    }
    if let (Some(user), Some(file)) = (&args.user, &args.password_file) {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let password = text.lines().next().unwrap_or("").to_string();
        if password.is_empty() {
            bail!("{} holds an empty password", file.display());
        }
        auth.password = Some((user.clone(), password));
    }
    if auth.keys.is_empty() && auth.password.is_none() {
        bail!("nobody could log in: give --authorized-keys, or --user with --password-file");
    }
    Ok(auth)
}

/// On every SIGHUP: reads the authorized keys again and puts them in force
/// at once for new logins; sessions already open are not touched. A reload
/// that fails keeps the keys in force and logs an error.
fn reload_on_sighup(
    args: Arc<Args>,
    admins: Vec<String>,
    auth: Arc<SharedAuth>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Installed before the agent says it is ready, so an early SIGHUP
    // reloads instead of killing it.
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            l45_service::notify::reloading();
            let (a, adm) = (Arc::clone(&args), admins.clone());
            match tokio::task::spawn_blocking(move || load_auth(&a, &adm)).await {
                Ok(Ok(new)) => {
                    let keys = new.keys.len();
                    auth.replace(new);
                    tracing::info!(keys, "SIGHUP: authorized keys reloaded");
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %format!("{e:#}"), "SIGHUP: reload failed; the keys in force stay");
                }
                Err(e) => tracing::error!(error = %e, "SIGHUP: reload task failed"),
            }
            l45_service::notify::ready("reloaded");
        }
    });
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let admins = if args.admins.is_empty() {
        vec![args.user.clone().unwrap_or_else(|| "admin".into())]
    } else {
        args.admins.clone()
    };
    let args = Arc::new(args);
    let auth = Arc::new(SharedAuth::new(load_auth(&args, &admins)?));
    reload_on_sighup(Arc::clone(&args), admins.clone(), Arc::clone(&auth))?;
    l45_agent::datastore::prepare_state_dir(&args.state_dir)?;
    let host_keys = ssh::load_or_create_host_keys(&args.state_dir)?;
    let fingerprint = host_keys[0]
        .public_key()
        .fingerprint(russh::keys::HashAlg::Sha256);
    let config = Arc::new(russh::server::Config {
        keys: host_keys,
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::from_millis(0)),
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(args.ssh_keepalive)),
        // Request/response traffic: do not let Nagle hold back replies.
        nodelay: true,
        ..Default::default()
    });
    let mut servers = Vec::new();
    if let Some(n) = args.emulate {
        if args.tap != "recording" {
            bail!("--emulate works with --tap recording only");
        }
        if args.metrics.is_some() {
            bail!("--metrics serves one device's metrics: not with --emulate");
        }
        for i in 1..=n {
            let name = format!("dev-{i:04}");
            let listen = match args.listen.port() {
                0 => args.listen,
                p => SocketAddr::new(args.listen.ip(), p.saturating_add(i as u16 - 1)),
            };
            let tap: Arc<dyn TapControl> = Arc::new(RecordingTap::new(args.tap_capacity, false));
            let dir = args.state_dir.join(&name);
            let (device_config, fingerprint) = if args.call_home.is_empty() {
                (Arc::clone(&config), fingerprint.to_string())
            } else {
                // Calling home, a device is known by its host key: each
                // emulated device has its own.
                emulated_device_config(&dir, &config)?
            };
            let device = EmulatedDevice {
                name: &name,
                index: i as usize - 1,
                fingerprint: &fingerprint,
            };
            let (local, running, _) = start_device(
                &args,
                &dir,
                listen,
                tap,
                admins.clone(),
                &auth,
                &device_config,
                Some(device),
            )
            .await?;
            println!(
                "l45-agent listening on {local} host-key {fingerprint} tap recording device {name}"
            );
            servers.push(running);
        }
    } else {
        let tap: Arc<dyn TapControl> = match args.tap.as_str() {
            "userspace" => {
                let tap = UserspaceTap::new(&args.tap_shm)
                    .with_context(|| format!("user-space tap at {}", args.tap_shm.display()))?;
                tracing::info!(path = tap.path(), "user-space tap control area ready");
                Arc::new(tap)
            }
            "kernel" => {
                let tap = KernelTap::new().context("kernel tap (is the l45 module loaded?)")?;
                tracing::info!("kernel tap: generic netlink family l45");
                Arc::new(tap)
            }
            _ => Arc::new(RecordingTap::new(args.tap_capacity, false)),
        };
        let (local, running, agent) = start_device(
            &args,
            &args.state_dir,
            args.listen,
            tap,
            admins,
            &auth,
            &config,
            None,
        )
        .await?;
        if let Some(addr) = args.metrics {
            let listener = l45_service::metrics::bind(addr).await?;
            let at = listener.local_addr()?;
            let registry = l45_agent::metrics::registry(&agent, args.metrics_module_limit);
            l45_service::metrics::spawn(
                listener,
                Arc::new(move || l45_service::metrics::render(&registry)),
                l45_service::metrics::Limits::default(),
            );
            tracing::info!(%at, "metrics at http://{at}/metrics");
            println!("l45-agent metrics on {at}");
        }
        // One line on stdout that scripts can wait for.
        println!(
            "l45-agent listening on {local} host-key {fingerprint} tap {}",
            args.tap
        );
        servers.push(running);
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    l45_service::notify::ready("listening");
    let (handles, tasks): (Vec<_>, Vec<_>) = servers.into_iter().unzip();
    let all = futures_all(tasks);
    tokio::select! {
        r = all => r?,
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            for h in handles {
                h.shutdown("agent shutting down".into());
            }
        }
    }
    Ok(())
}

type Running = (
    ssh::ServerHandle,
    tokio::task::JoinHandle<std::io::Result<()>>,
);

/// Waits for every server; the first error ends the agent.
async fn futures_all(
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
) -> anyhow::Result<()> {
    for t in tasks {
        t.await.context("SSH server task")?.context("SSH server")?;
    }
    Ok(())
}

/// Which emulated device (--emulate) this is.
#[derive(Clone, Copy)]
struct EmulatedDevice<'a> {
    name: &'a str,
    index: usize,
    fingerprint: &'a str,
}

/// An emulated device's SSH configuration: the shared one with its own
/// Ed25519 host key (in its state directory).
fn emulated_device_config(
    dir: &std::path::Path,
    shared: &russh::server::Config,
) -> anyhow::Result<(Arc<russh::server::Config>, String)> {
    l45_agent::datastore::prepare_state_dir(dir)?;
    let keys = ssh::load_or_create_host_keys_of(dir, false)?;
    let fingerprint = keys[0]
        .public_key()
        .fingerprint(russh::keys::HashAlg::Sha256)
        .to_string();
    let config = russh::server::Config {
        keys,
        auth_rejection_time: shared.auth_rejection_time,
        auth_rejection_time_initial: shared.auth_rejection_time_initial,
        inactivity_timeout: shared.inactivity_timeout,
        keepalive_interval: shared.keepalive_interval,
        nodelay: shared.nodelay,
        ..Default::default()
    };
    Ok((Arc::new(config), fingerprint))
}

/// The device data this agent reports, and its call-home endpoints.
fn device_info(
    args: &Args,
    config: &russh::server::Config,
    emulated: Option<EmulatedDevice<'_>>,
) -> anyhow::Result<l45_agent::device_info::DeviceInfo> {
    use l45_agent::device_info::{read_enrollment_token, CallHomeStatus, DeviceInfo};
    let fingerprint = match (emulated, config.keys.first()) {
        (Some(e), _) => e.fingerprint.to_string(),
        (None, Some(k)) => k
            .public_key()
            .fingerprint(russh::keys::HashAlg::Sha256)
            .to_string(),
        (None, None) => String::new(),
    };
    let mut info = DeviceInfo::collect(fingerprint, &args.tap);
    if let Some(e) = emulated {
        info.host_name = e.name.to_string();
        info.machine_id = format!("emulated-{}-{}", e.name, info.machine_id);
    }
    info.call_home = args
        .call_home
        .iter()
        .map(|a| Arc::new(CallHomeStatus::new(a.clone())))
        .collect();
    if let Some(path) = &args.enrollment_token_file {
        let line = emulated.map_or(0, |e| e.index);
        let text = read_enrollment_token(path).map_err(anyhow::Error::msg)?;
        if line == 0 {
            info.enrollment_token = Some(text);
        } else {
            // (read_enrollment_token checked the mode and the first line)
            let all = std::fs::read_to_string(path)?;
            info.enrollment_token = all
                .lines()
                .nth(line)
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string);
        }
    }
    Ok(info)
}

/// `NAME=ed25519:BASE64` (or `NAME=BASE64`): a trusted image signer,
/// the key checked here so a typo stops the start.
fn parse_signer(s: &str) -> Result<(String, String), String> {
    use base64::Engine as _;
    let (name, key) = s
        .split_once('=')
        .filter(|(n, _)| !n.is_empty() && n.len() <= 64)
        .ok_or_else(|| format!("expected NAME=ed25519:KEY, got {s:?}"))?;
    let bytes = l45_images::parse_public_key(key).map_err(|e| e.to_string())?;
    Ok((
        name.to_string(),
        base64::engine::general_purpose::STANDARD.encode(bytes),
    ))
}

/// One device: its agent (datastores in `state_dir`, tap), SSH listener
/// and call-home connections.
#[allow(clippy::too_many_arguments)]
async fn start_device(
    args: &Args,
    state_dir: &std::path::Path,
    listen: SocketAddr,
    tap: Arc<dyn TapControl>,
    admins: Vec<String>,
    auth: &Arc<SharedAuth>,
    config: &Arc<russh::server::Config>,
    emulated: Option<EmulatedDevice<'_>>,
) -> anyhow::Result<(SocketAddr, Running, Arc<Agent>)> {
    l45_agent::datastore::prepare_state_dir(state_dir)?;
    let opts = AgentOptions {
        state_dir: state_dir.to_path_buf(),
        max_sessions: args.max_sessions,
        limits: l45_netconf_proto::Limits {
            max_message: args.max_message_size,
            max_chunk: args.max_message_size as u64,
        },
        admins,
        trusted_signers: args.trusted_signers.clone(),
        hello_timeout: Duration::from_secs(args.hello_timeout),
        max_sessions_per_user: args.max_sessions_per_user,
        idle_timeout: args.idle_timeout.map(Duration::from_secs),
        engine: if args.libyang_only {
            Engine::LibyangOnly
        } else {
            Engine::Auto
        },
        notification_log: l45_agent::subscriptions::log::LogLimits {
            max_events: args.notification_log_events,
            max_bytes: args.notification_log_bytes,
        },
        yang_push: !args.no_yang_push,
    };
    let agent = Agent::new(opts, tap, tokio::runtime::Handle::current())?;
    let info = device_info(args, config, emulated)?;
    let call_home = info.call_home.clone();
    agent.set_device_info(info);
    {
        // Deprecated modules going idle are announced within a second; the
        // tap's upkeep runs on the same tick.
        let agent = agent.clone();
        tokio::spawn(async move {
            let mut announced = std::collections::BTreeSet::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let agent = agent.clone();
                let mut set = std::mem::take(&mut announced);
                announced = tokio::task::spawn_blocking(move || {
                    agent.tap_housekeeping();
                    agent.announce_bypasses();
                    agent.announce_idle_deprecated(&mut set);
                    set
                })
                .await
                .unwrap_or_default();
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let local = listener.local_addr()?;
    let server = SshServer {
        agent: agent.clone(),
        auth: auth.clone(),
    };
    let limits = ssh::EdgeLimits {
        preauth_timeout: Duration::from_secs(args.login_grace_time),
        max_unauthenticated: args.max_unauthenticated,
    };
    let (handle, task) = ssh::serve(server.clone(), config.clone(), listener, limits);
    let call_home_opts = l45_agent::callhome::CallHomeOptions {
        backoff_max: Duration::from_secs(args.call_home_max_backoff),
        preauth_timeout: limits.preauth_timeout,
        ..Default::default()
    };
    for status in call_home {
        l45_agent::callhome::spawn(
            server.clone(),
            config.clone(),
            &handle,
            status,
            call_home_opts,
        );
    }
    Ok((local, (handle, task), agent))
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
