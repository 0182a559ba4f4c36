//! The harness shared by the NCO client's test files: the real agent in
//! process over real SSH on loopback, keys, helpers.

#![allow(
    dead_code,
    unused_imports,
    reason = "each test file uses some of the harness"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use l45_agent::agent::{Agent, AgentOptions};
use l45_agent::ssh::{AuthConfig, SharedAuth, SshServer};
use l45_nco::netconf::{
    BackoffConfig, ConnectOptions, Datastore, EditOptions, HostKeyPolicy, NetconfError, Pool,
    Reply, Session, L45_NS,
};
use l45_tap_control::RecordingTap;
use russh::keys::{Algorithm, HashAlg, PrivateKey, PublicKey};
use russh::server::Server as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const USER: &str = "admin";

/// A client key pair on disk.
pub struct ClientKey {
    pub _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub public: PublicKey,
}

pub fn client_key() -> ClientKey {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).expect("keygen");
    let path = dir.path().join("id_ed25519");
    key.write_openssh_file(&path, russh::keys::ssh_key::LineEnding::LF)
        .expect("write key");
    ClientKey {
        _dir: dir,
        path,
        public: key.public_key().clone(),
    }
}

pub fn host_key() -> PrivateKey {
    PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).expect("keygen")
}

pub fn fingerprint(key: &PrivateKey) -> String {
    key.public_key().fingerprint(HashAlg::Sha256).to_string()
}

/// Binds 127.0.0.1:port, retrying while a just-killed server still holds it.
pub fn bind(port: u16) -> std::net::TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => {
                l.set_nonblocking(true).expect("nonblocking");
                return l;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("bind 127.0.0.1:{port}: {e}"),
        }
    }
}

/// Starts one agent on `rt` (its SSH server and sessions run there).
pub fn spawn_agent(
    rt: &tokio::runtime::Handle,
    state_dir: &Path,
    port: u16,
    max_sessions: usize,
    host: &PrivateKey,
    authorized: &[PublicKey],
) -> SocketAddr {
    let opts = AgentOptions {
        max_sessions,
        admins: vec![USER.to_string()],
        ..AgentOptions::new(state_dir)
    };
    let tap = Arc::new(RecordingTap::new(None, false));
    let agent = Agent::new(opts, tap, rt.clone()).expect("agent starts");
    let auth = AuthConfig {
        keys: authorized
            .iter()
            .map(|k| (USER.to_string(), k.clone()))
            .collect(),
        password: None,
    };
    let config = Arc::new(russh::server::Config {
        keys: vec![host.clone()],
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::from_millis(0)),
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        nodelay: true,
        ..Default::default()
    });
    let std_listener = bind(port);
    let addr = std_listener.local_addr().expect("local addr");
    let mut server = SshServer {
        agent,
        auth: Arc::new(SharedAuth::new(auth)),
    };
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
        let _ = server.run_on_socket(config, &listener).await;
    });
    addr
}

/// One agent with its own runtime, so that killing it (dropping the
/// runtime) closes every socket like a crashed process would.
pub struct TestAgent {
    pub addr: SocketAddr,
    pub fingerprint: String,
    pub rt: Option<tokio::runtime::Runtime>,
    pub state: tempfile::TempDir,
    pub host: PrivateKey,
    pub key: ClientKey,
}

impl TestAgent {
    pub fn start(max_sessions: usize) -> TestAgent {
        let state = tempfile::tempdir().expect("tempdir");
        let host = host_key();
        let key = client_key();
        let rt = server_runtime(1);
        let addr = spawn_agent(
            rt.handle(),
            state.path(),
            0,
            max_sessions,
            &host,
            std::slice::from_ref(&key.public),
        );
        TestAgent {
            addr,
            fingerprint: fingerprint(&host),
            rt: Some(rt),
            state,
            host,
            key,
        }
    }

    pub fn opts(&self, policy: HostKeyPolicy) -> ConnectOptions {
        let mut o = ConnectOptions::new(self.addr, USER, &self.key.path, policy);
        o.connect_timeout = Duration::from_secs(10);
        o.rpc_timeout = Duration::from_secs(20);
        o
    }

    pub fn pinned(&self) -> ConnectOptions {
        self.opts(HostKeyPolicy::Pinned(self.fingerprint.clone()))
    }

    pub async fn connect(&self) -> Session {
        Session::connect(self.pinned()).await.expect("connect")
    }

    /// Kills the agent: every task and socket of its runtime goes at once.
    pub fn kill(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    /// Starts the agent again on the same port, state and host key.
    pub fn restart(&mut self) {
        self.kill();
        let rt = server_runtime(1);
        let addr = spawn_agent(
            rt.handle(),
            self.state.path(),
            self.addr.port(),
            64,
            &self.host,
            std::slice::from_ref(&self.key.public),
        );
        assert_eq!(addr, self.addr);
        self.rt = Some(rt);
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn server_runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn module_xml(id: u32, name: &str, extra: &str) -> String {
    format!(
        r#"<customizations xmlns="{L45_NS}"><module><id>{id}</id><name>{name}</name><kind xmlns:l45="{L45_NS}">l45:dns-front-tag</kind>{extra}</module></customizations>"#
    )
}

pub fn module_filter(id: u32) -> String {
    format!(r#"<customizations xmlns="{L45_NS}"><module><id>{id}</id></module></customizations>"#)
}

/// Resident set size of this process (client and in-process agents).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

pub async fn within<T>(secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("did not finish in time (hang)")
}
