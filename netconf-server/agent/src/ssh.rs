//! The SSH edge: russh server, public-key and password authentication, the
//! `netconf` subsystem (RFC 6242). Each subsystem channel runs one
//! [`crate::session::run`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::{Algorithm, PrivateKey, PublicKey};
use russh::server::{Auth, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, Disconnect};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, oneshot, Semaphore};
use tracing::{debug, info, warn};

use crate::agent::Agent;

/// Who may log in.
#[derive(Debug, Default, Clone)]
pub struct AuthConfig {
    /// Authorized keys, each bound to exactly one user name: a client
    /// logs in under that name only.
    pub keys: Vec<(String, PublicKey)>,
    /// Lab login: user name and password.
    pub password: Option<(String, String)>,
}

/// The authentication configuration in force, replaced whole on reload
/// (SIGHUP): a login checks one snapshot, sessions already logged in are
/// not affected.
#[derive(Debug, Default)]
pub struct SharedAuth(std::sync::RwLock<Arc<AuthConfig>>);

impl SharedAuth {
    pub fn new(auth: AuthConfig) -> Self {
        Self(std::sync::RwLock::new(Arc::new(auth)))
    }

    /// The configuration now in force.
    pub fn current(&self) -> Arc<AuthConfig> {
        // (a writer cannot panic half-way: the value is one Arc)
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts `auth` in force for every later login.
    pub fn replace(&self, auth: AuthConfig) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(auth);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{path} line {line}: not an OpenSSH public key: {message}")]
    BadKey {
        path: String,
        line: usize,
        message: String,
    },
}

impl AuthConfig {
    fn key_allowed(&self, user: &str, key: &PublicKey) -> bool {
        self.keys
            .iter()
            .any(|(u, k)| u == user && k.key_data() == key.key_data())
    }

    /// Reads an authorized_keys file whose keys log in as `user`.
    pub fn add_authorized_keys(&mut self, user: &str, path: &Path) -> Result<usize, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| KeyError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut n = 0;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = PublicKey::from_openssh(line).map_err(|e| KeyError::BadKey {
                path: path.display().to_string(),
                line: i + 1,
                message: e.to_string(),
            })?;
            self.keys.push((user.to_string(), key));
            n += 1;
        }
        Ok(n)
    }
}

/// Loads the host keys from the state directory, creating them on first
/// start: Ed25519, and RSA for clients built on older libssh2.
pub fn load_or_create_host_keys(dir: &Path) -> Result<Vec<PrivateKey>, KeyError> {
    load_or_create_host_keys_of(dir, true)
}

/// As [`load_or_create_host_keys`]; without `rsa` only the Ed25519 key
/// (emulated devices: an RSA key takes a while to generate).
pub fn load_or_create_host_keys_of(dir: &Path, rsa: bool) -> Result<Vec<PrivateKey>, KeyError> {
    let mut keys = Vec::new();
    let algorithms = [
        ("ssh_host_ed25519_key", Algorithm::Ed25519),
        ("ssh_host_rsa_key", Algorithm::Rsa { hash: None }),
    ];
    for (file, alg) in algorithms.into_iter().take(if rsa { 2 } else { 1 }) {
        let path = dir.join(file);
        let io = |e: &dyn std::fmt::Display| KeyError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let key = if path.exists() {
            PrivateKey::read_openssh_file(&path).map_err(|e| io(&e))?
        } else {
            let key = if alg == Algorithm::Ed25519 {
                PrivateKey::random(&mut rand::rng(), alg).map_err(|e| io(&e))?
            } else {
                let rsa = russh::keys::ssh_key::private::RsaKeypair::random(&mut rand::rng(), 3072)
                    .map_err(|e| io(&e))?;
                PrivateKey::from(rsa)
            };
            key.write_openssh_file(&path, russh::keys::ssh_key::LineEnding::LF)
                .map_err(|e| io(&e))?;
            let public = key.public_key().to_openssh().map_err(|e| io(&e))?;
            crate::datastore::write_atomically(
                &path.with_extension("pub"),
                format!("{public}\n").as_bytes(),
            )
            .map_err(|e| io(&e))?;
            key
        };
        keys.push(key);
    }
    Ok(keys)
}

#[derive(Clone)]
pub struct SshServer {
    pub agent: Arc<Agent>,
    pub auth: Arc<SharedAuth>,
}

impl russh::server::Server for SshServer {
    type Handler = SshHandler;

    fn new_client(&mut self, peer: Option<SocketAddr>) -> SshHandler {
        SshHandler {
            agent: Arc::clone(&self.agent),
            auth: Arc::clone(&self.auth),
            peer,
            user: None,
            channels: HashMap::new(),
            authenticated: None,
        }
    }
}

pub struct SshHandler {
    agent: Arc<Agent>,
    auth: Arc<SharedAuth>,
    peer: Option<SocketAddr>,
    user: Option<String>,
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// Told once the client has authenticated (ends its pre-auth limits).
    authenticated: Option<oneshot::Sender<()>>,
}

impl SshHandler {
    fn accept(&mut self, user: &str, method: &str) -> Auth {
        info!(user, peer = ?self.peer, method, "authenticated");
        self.user = Some(user.to_string());
        if let Some(tx) = self.authenticated.take() {
            // (the connection task may already be gone)
            let _ = tx.send(());
        }
        Auth::Accept
    }
}

impl russh::server::Handler for SshHandler {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(if self.auth.current().key_allowed(user, offer.public_key) {
            Auth::Accept
        } else {
            warn!(user, peer = ?self.peer, "public key refused");
            Auth::reject()
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.auth.current().key_allowed(user, key.public_key) {
            Ok(self.accept(user, "publickey"))
        } else {
            warn!(user, peer = ?self.peer, "public key refused");
            Ok(Auth::reject())
        }
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        match &self.auth.current().password {
            Some((u, p)) if u == user && constant_time_eq(p.as_bytes(), password.as_bytes()) => {
                Ok(self.accept(user, "password"))
            }
            _ => {
                warn!(user, peer = ?self.peer, "password refused");
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel_id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(channel), Some(user), true) = (
            self.channels.remove(&channel_id),
            self.user.clone(),
            name == "netconf",
        ) else {
            session.channel_failure(channel_id)?;
            return Ok(());
        };
        session.channel_success(channel_id)?;
        let agent = Arc::clone(&self.agent);
        let peer = self.peer.map(|p| p.ip().to_string());
        tokio::spawn(async move {
            crate::session::run(agent, channel.into_stream(), user, peer).await;
        });
        Ok(())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Limits on connections that have not authenticated yet (OpenSSH's
/// `LoginGraceTime` and `MaxStartups`).
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    /// Time from accept to authentication (banner and key exchange
    /// included); then the connection is closed.
    pub preauth_timeout: Duration,
    /// Connections not yet authenticated; more are closed at accept.
    pub max_unauthenticated: usize,
}

/// Stops a running [`serve`] loop and every connection it accepted.
#[derive(Clone)]
pub struct ServerHandle {
    shutdown: broadcast::Sender<String>,
}

impl ServerHandle {
    /// Told the reason when the server shuts down (for connections this
    /// agent opens itself: call home).
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.shutdown.subscribe()
    }

    pub fn shutdown(&self, reason: String) {
        // (no connection left is not an error)
        let _ = self.shutdown.send(reason);
    }
}

/// Accepts SSH connections on `listener` until shut down.
pub fn serve(
    server: SshServer,
    config: Arc<russh::server::Config>,
    listener: TcpListener,
    limits: EdgeLimits,
) -> (ServerHandle, tokio::task::JoinHandle<std::io::Result<()>>) {
    let (shutdown, _) = broadcast::channel(1);
    let handle = ServerHandle {
        shutdown: shutdown.clone(),
    };
    let unauthenticated = Arc::new(Semaphore::new(limits.max_unauthenticated));
    let task = tokio::spawn(async move {
        let mut stop = shutdown.subscribe();
        loop {
            let (socket, peer) = tokio::select! {
                _ = stop.recv() => return Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    // Out of descriptors and the like: the listener stays.
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        continue;
                    }
                },
            };
            let Ok(permit) = Arc::clone(&unauthenticated).try_acquire_owned() else {
                warn!(peer = %peer, limit = limits.max_unauthenticated, "too many unauthenticated connections; closing");
                continue;
            };
            if config.nodelay {
                if let Err(e) = socket.set_nodelay(true) {
                    debug!(error = %e, "set_nodelay failed");
                }
            }
            let (tx, authenticated) = oneshot::channel();
            let mut handler = russh::server::Server::new_client(&mut server.clone(), Some(peer));
            handler.authenticated = Some(tx);
            let config = Arc::clone(&config);
            let stop = shutdown.subscribe();
            tokio::spawn(connection(
                config,
                socket,
                peer,
                handler,
                authenticated,
                permit,
                stop,
                limits.preauth_timeout,
            ));
        }
    });
    (handle, task)
}

/// Runs the SSH server on a connection this agent opened (call home, RFC
/// 8071: the device connects, then is the SSH server, so the NCO still
/// authenticates to it and it still proves its host key). Same
/// authentication, deadline and shutdown as an accepted connection;
/// returns when the connection ends.
pub async fn serve_outbound(
    server: SshServer,
    config: Arc<russh::server::Config>,
    socket: tokio::net::TcpStream,
    preauth_timeout: Duration,
    stop: broadcast::Receiver<String>,
) -> std::io::Result<()> {
    let peer = socket.peer_addr()?;
    if config.nodelay {
        if let Err(e) = socket.set_nodelay(true) {
            debug!(error = %e, "set_nodelay failed");
        }
    }
    let (tx, authenticated) = oneshot::channel();
    let mut handler = russh::server::Server::new_client(&mut server.clone(), Some(peer));
    handler.authenticated = Some(tx);
    // One outbound connection at a time per endpoint: its own permit.
    let permit = Arc::new(Semaphore::new(1))
        .try_acquire_owned()
        .map_err(std::io::Error::other)?;
    connection(
        config,
        socket,
        peer,
        handler,
        authenticated,
        permit,
        stop,
        preauth_timeout,
    )
    .await;
    Ok(())
}

/// One connection: the pre-authentication deadline, then the session until
/// it ends or the server shuts down.
#[allow(clippy::too_many_arguments)]
async fn connection(
    config: Arc<russh::server::Config>,
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    handler: SshHandler,
    authenticated: oneshot::Receiver<()>,
    permit: tokio::sync::OwnedSemaphorePermit,
    mut stop: broadcast::Receiver<String>,
    preauth_timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + preauth_timeout;
    let session =
        match tokio::time::timeout_at(deadline, russh::server::run_stream(config, socket, handler))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                debug!(peer = %peer, error = %e, "SSH connection setup failed");
                return;
            }
            Err(_) => {
                warn!(peer = %peer, "no SSH identification in time; closing");
                return;
            }
        };
    let handle = session.handle();
    tokio::pin!(session);
    let disconnect = |reason: String| async {
        if handle
            .disconnect(Disconnect::ByApplication, reason, String::new())
            .await
            .is_err()
        {
            debug!(peer = %peer, "disconnect not sent");
        }
    };
    tokio::select! {
        r = authenticated => {
            drop(permit);
            if r.is_err() {
                // The handler is gone: the session ended before auth.
                return;
            }
        }
        _ = tokio::time::sleep_until(deadline) => {
            warn!(peer = %peer, "not authenticated in time; closing");
            disconnect("authentication timeout".into()).await;
            return;
        }
        _ = &mut session => return,
        reason = stop.recv() => {
            disconnect(reason.unwrap_or_default()).await;
            return;
        }
    }
    tokio::select! {
        r = &mut session => {
            if let Err(e) = r {
                debug!(peer = %peer, error = %e, "SSH connection closed with an error");
            }
        }
        reason = stop.recv() => disconnect(reason.unwrap_or_default()).await,
    }
}
