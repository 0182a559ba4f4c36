//! The SSH client under a NETCONF session: the handshake (on a connection
//! the NCO opens, or on one a device opened when it calls home), the
//! host-key check, public-key login and the `netconf` subsystem.

use std::sync::{Arc, Mutex};

use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::ChannelMsg;
use tracing::warn;

use super::error::NetconfError;
use super::options::{fingerprints_match, ConnectOptions, HostKeyPolicy};

/// An SSH connection to a device agent.
pub type SshHandle = russh::client::Handle<ClientHandler>;

pub struct ClientHandler {
    policy: HostKeyPolicy,
    seen: Arc<Mutex<Option<String>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl russh::client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let fingerprint = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.fingerprint(HashAlg::Sha256),
            PublicKeyOrCertificate::Certificate(cert) => {
                cert.public_key().fingerprint(HashAlg::Sha256)
            }
        }
        .to_string();
        let ok = match &self.policy {
            HostKeyPolicy::Pinned(expected) => fingerprints_match(expected, &fingerprint),
            HostKeyPolicy::TrustOnFirstUse => true,
        };
        *lock(&self.seen) = Some(fingerprint);
        Ok(ok)
    }
}

/// The SSH handshake: on `stream` when the device called (RFC 8071), else
/// on a new connection to `opts.addr`. The host key presented is put in
/// `seen`; one that does not match a pinned key fails the handshake.
pub async fn handshake(
    opts: &ConnectOptions,
    seen: Arc<Mutex<Option<String>>>,
    stream: Option<tokio::net::TcpStream>,
) -> Result<SshHandle, NetconfError> {
    let config = Arc::new(russh::client::Config {
        nodelay: true,
        keepalive_interval: opts.keepalive_interval,
        keepalive_max: 3,
        ..Default::default()
    });
    let handler = ClientHandler {
        policy: opts.host_key.clone(),
        seen: Arc::clone(&seen),
    };
    let connected = match stream {
        Some(s) => {
            if let Err(e) = s.set_nodelay(true) {
                tracing::debug!(error = %e, "set_nodelay failed");
            }
            russh::client::connect_stream(config, s, handler).await
        }
        None => russh::client::connect(config, opts.addr.as_str(), handler).await,
    };
    connected.map_err(|e| {
        if let (HostKeyPolicy::Pinned(expected), Some(got)) = (&opts.host_key, lock(&seen).clone())
        {
            if !fingerprints_match(expected, &got) {
                warn!(expected = %expected, got = %got, "host key mismatch; connection refused");
                return NetconfError::HostKeyMismatch {
                    expected: expected.clone(),
                    got,
                };
            }
        }
        NetconfError::Connect {
            addr: opts.addr.clone(),
            message: e.to_string(),
        }
    })
}

/// Public-key login, then a session channel with the `netconf` subsystem.
pub async fn login_and_open(
    handle: &mut SshHandle,
    user: &str,
    key: russh::keys::PrivateKey,
) -> Result<russh::Channel<russh::client::Msg>, NetconfError> {
    let hash_alg = if key.algorithm().is_rsa() {
        match handle.best_supported_rsa_hash().await {
            Ok(Some(h)) => h,
            _ => Some(HashAlg::Sha256),
        }
    } else {
        None
    };
    let auth = handle
        .authenticate_publickey(
            user.to_string(),
            PrivateKeyWithHashAlg::new(Arc::new(key), hash_alg),
        )
        .await
        .map_err(|e| NetconfError::Auth {
            user: user.to_string(),
            message: e.to_string(),
        })?;
    if !auth.success() {
        return Err(NetconfError::Auth {
            user: user.to_string(),
            message: "public key refused".into(),
        });
    }
    open_netconf(handle).await
}

/// A new session channel with the `netconf` subsystem on a logged-in
/// connection.
pub async fn open_netconf(
    handle: &SshHandle,
) -> Result<russh::Channel<russh::client::Msg>, NetconfError> {
    let mut channel = handle
        .channel_open_session()
        .await
        .map_err(|e| NetconfError::Subsystem(format!("session channel: {e}")))?;
    channel
        .request_subsystem(true, "netconf")
        .await
        .map_err(|e| NetconfError::Subsystem(e.to_string()))?;
    loop {
        match channel.wait().await {
            Some(ChannelMsg::Success) => break,
            Some(ChannelMsg::Failure) => {
                return Err(NetconfError::Subsystem(
                    "server refused the netconf subsystem".into(),
                ))
            }
            Some(ChannelMsg::Eof | ChannelMsg::Close) | None => {
                return Err(NetconfError::Subsystem(
                    "channel closed during subsystem request".into(),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(channel)
}
