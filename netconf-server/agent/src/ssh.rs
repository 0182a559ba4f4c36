//! The SSH edge: russh server, public-key and password authentication, the
//! `netconf` subsystem (RFC 6242). Each subsystem channel runs one
//! [`crate::session::run`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use russh::keys::{Algorithm, PrivateKey, PublicKey};
use russh::server::{Auth, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId};
use tracing::{info, warn};

use crate::agent::Agent;

/// Who may log in.
#[derive(Debug, Default, Clone)]
pub struct AuthConfig {
    /// Authorized keys; `Some(user)` restricts a key to that user name.
    pub keys: Vec<(Option<String>, PublicKey)>,
    /// Lab login: user name and password.
    pub password: Option<(String, String)>,
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
            .any(|(u, k)| u.as_deref().is_none_or(|u| u == user) && k.key_data() == key.key_data())
    }

    /// Reads an authorized_keys file; `user` restricts its keys.
    pub fn add_authorized_keys(
        &mut self,
        user: Option<String>,
        path: &Path,
    ) -> Result<usize, KeyError> {
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
            self.keys.push((user.clone(), key));
            n += 1;
        }
        Ok(n)
    }
}

/// Loads the host keys from the state directory, creating them on first
/// start: Ed25519, and RSA for clients built on older libssh2.
pub fn load_or_create_host_keys(dir: &Path) -> Result<Vec<PrivateKey>, KeyError> {
    let mut keys = Vec::new();
    for (file, alg) in [
        ("ssh_host_ed25519_key", Algorithm::Ed25519),
        ("ssh_host_rsa_key", Algorithm::Rsa { hash: None }),
    ] {
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
    pub auth: Arc<AuthConfig>,
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
        }
    }
}

pub struct SshHandler {
    agent: Arc<Agent>,
    auth: Arc<AuthConfig>,
    peer: Option<SocketAddr>,
    user: Option<String>,
    channels: HashMap<ChannelId, Channel<Msg>>,
}

impl russh::server::Handler for SshHandler {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(if self.auth.key_allowed(user, offer.public_key) {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.auth.key_allowed(user, key.public_key) {
            info!(user, peer = ?self.peer, method = "publickey", "authenticated");
            self.user = Some(user.to_string());
            Ok(Auth::Accept)
        } else {
            warn!(user, peer = ?self.peer, "public key refused");
            Ok(Auth::reject())
        }
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        match &self.auth.password {
            Some((u, p)) if u == user && constant_time_eq(p.as_bytes(), password.as_bytes()) => {
                info!(user, peer = ?self.peer, method = "password", "authenticated");
                self.user = Some(user.to_string());
                Ok(Auth::Accept)
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
