//! One NETCONF session over SSH (RFC 6242): connect, host-key check,
//! public-key authentication, the `netconf` subsystem, hello exchange and
//! pipelined RPCs.
//!
//! Per session there are two small tokio tasks and no OS thread: a reader
//! that decodes frames and hands each reply to the RPC waiting for its
//! message-id, and a writer that serialises outgoing messages so that a
//! cancelled or timed-out RPC can never leave half a message on the wire.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use l45_netconf_proto::framing::{self, MAX_CHUNK_SIZE_RFC};
use l45_netconf_proto::message::{self, Hello, CAP_BASE_10, CAP_BASE_11};
use l45_netconf_proto::{xml, Decoder, Frame, Framing, Limits, BASE_NS};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};

use super::error::{NetconfError, Phase};
use super::reply::{parse_incoming, Incoming, Notification, RawReply, Reply};

/// Default largest reply accepted: 256 MiB.
pub const DEFAULT_MAX_REPLY_SIZE: usize = 256 * 1024 * 1024;

/// Smallest message limit used while reading the server's hello.
/// RFC 8639 subscribed notifications.
pub const SN_NS: &str = "urn:ietf:params:xml:ns:yang:ietf-subscribed-notifications";
/// RFC 8641 YANG-push (its module capability tells an agent offers it).
pub const YANG_PUSH_NS: &str = "urn:ietf:params:xml:ns:yang:ietf-yang-push";

const HELLO_MIN_LIMIT: usize = 16 * 1024 * 1024;

/// How the server's host key is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Only a key with this fingerprint (`SHA256:…`, as printed by
    /// `ssh-keygen -lf` and by the agent at start-up) is accepted.
    Pinned(String),
    /// Any key is accepted; [`Session::host_key_fingerprint`] tells which,
    /// so the caller can pin it for the next connections.
    TrustOnFirstUse,
}

/// Everything needed to open a session.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `host:port` (or a `SocketAddr` rendered as a string).
    pub addr: String,
    pub user: String,
    /// OpenSSH private key file (Ed25519 or RSA).
    pub key: PathBuf,
    /// Passphrase of an encrypted key file.
    pub key_passphrase: Option<String>,
    pub host_key: HostKeyPolicy,
    /// TCP connect, SSH handshake, authentication and subsystem request.
    pub connect_timeout: Duration,
    /// Hello exchange.
    pub hello_timeout: Duration,
    /// Default per-RPC timeout (see [`Session::rpc_with_timeout`]).
    pub rpc_timeout: Duration,
    /// Largest reply accepted; larger replies fail their RPC with
    /// [`NetconfError::ReplyTooLarge`] and the session goes on.
    pub max_reply_size: usize,
    /// SSH keepalive interval; a peer that vanished without closing the
    /// connection is detected after three unanswered keepalives.
    pub keepalive_interval: Option<Duration>,
    /// Notifications buffered for a slow consumer before they are dropped
    /// (with a warning); replies are never held up by notifications.
    pub notification_buffer: usize,
}

impl ConnectOptions {
    /// Options with the defaults: 10 s connect, 10 s hello, 60 s per RPC,
    /// 256 MiB replies, 30 s keepalive.
    pub fn new(
        addr: impl ToString,
        user: impl Into<String>,
        key: impl Into<PathBuf>,
        host_key: HostKeyPolicy,
    ) -> Self {
        ConnectOptions {
            addr: addr.to_string(),
            user: user.into(),
            key: key.into(),
            key_passphrase: None,
            host_key,
            connect_timeout: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(10),
            rpc_timeout: Duration::from_secs(60),
            max_reply_size: DEFAULT_MAX_REPLY_SIZE,
            keepalive_interval: Some(Duration::from_secs(30)),
            notification_buffer: 1024,
        }
    }
}

/// Compares fingerprints, tolerating base64 padding and a missing
/// `SHA256:` prefix on the expected value.
pub fn fingerprints_match(expected: &str, got: &str) -> bool {
    fn norm(s: &str) -> &str {
        let s = s.trim();
        let s = s.strip_prefix("SHA256:").unwrap_or(s);
        s.trim_end_matches('=')
    }
    !norm(expected).is_empty() && norm(expected) == norm(got)
}

// ===== SSH client handler =====

pub(crate) struct ClientHandler {
    policy: HostKeyPolicy,
    seen: Arc<Mutex<Option<String>>>,
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ===== shared state between the session handle, reader and writer =====

type Waiter = oneshot::Sender<Result<RawReply, NetconfError>>;

#[derive(Default)]
struct State {
    pending: HashMap<u64, Waiter>,
    /// Set once the session is over: the error every later call gets.
    closed: Option<NetconfError>,
    notifications: Option<mpsc::Sender<Notification>>,
    dropped_notifications: u64,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    closed_notify: tokio::sync::Notify,
}

impl Shared {
    /// Ends the session: every outstanding RPC gets `error` now.
    fn close(&self, error: NetconfError) {
        let pending = {
            let mut st = lock(&self.state);
            if st.closed.is_none() {
                st.closed = Some(error.clone());
            }
            st.notifications = None;
            std::mem::take(&mut st.pending)
        };
        if !pending.is_empty() {
            debug!(outstanding = pending.len(), error = %error, "failing outstanding rpcs");
        }
        for (_, waiter) in pending {
            let _ = waiter.send(Err(error.clone()));
        }
        self.closed_notify.notify_waiters();
    }

    fn take_waiter(&self, id: &str) -> Option<Waiter> {
        let id: u64 = id.trim().parse().ok()?;
        lock(&self.state).pending.remove(&id)
    }

    /// A reply without a usable message-id can only be matched when exactly
    /// one RPC is outstanding.
    fn take_only_waiter(&self) -> Option<Waiter> {
        let mut st = lock(&self.state);
        if st.pending.len() == 1 {
            let id = *st.pending.keys().next()?;
            st.pending.remove(&id)
        } else {
            None
        }
    }

    fn dispatch(&self, frame: Frame, limit: usize) {
        match frame {
            Frame::Oversized { head, size } => {
                let waiter = match message::message_id_from_head(&head) {
                    Some(id) => self.take_waiter(&id),
                    None => self.take_only_waiter(),
                };
                warn!(
                    size,
                    limit,
                    matched = waiter.is_some(),
                    "oversized reply discarded"
                );
                if let Some(w) = waiter {
                    let _ = w.send(Err(NetconfError::ReplyTooLarge { size, limit }));
                }
            }
            Frame::Message(bytes) => match parse_incoming(bytes) {
                Ok(Incoming::Reply(reply)) => {
                    let waiter = match reply.message_id.as_deref() {
                        Some(id) => self.take_waiter(id),
                        None => self.take_only_waiter(),
                    };
                    match waiter {
                        Some(w) => {
                            let _ = w.send(Ok(reply));
                        }
                        None => debug!(
                            message_id = reply.message_id.as_deref().unwrap_or("-"),
                            "reply for no outstanding rpc (timed out or cancelled); dropped"
                        ),
                    }
                }
                Ok(Incoming::Notification(n)) => self.notify(n),
                Err((e, bytes)) => {
                    let waiter =
                        message::message_id_from_head(&bytes).and_then(|id| self.take_waiter(&id));
                    warn!(error = %e, matched = waiter.is_some(), "malformed message from server");
                    if let Some(w) = waiter {
                        let _ = w.send(Err(NetconfError::MalformedReply(e)));
                    }
                }
            },
        }
    }

    fn notify(&self, n: Notification) {
        let mut st = lock(&self.state);
        let Some(tx) = st.notifications.as_ref() else {
            debug!("notification without subscriber dropped");
            return;
        };
        match tx.try_send(n) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                st.dropped_notifications += 1;
                warn!(
                    dropped = st.dropped_notifications,
                    "notification consumer too slow; notification dropped"
                );
            }
            Err(mpsc::error::TrySendError::Closed(_)) => st.notifications = None,
        }
    }
}

/// Removes the pending entry when the RPC future is dropped or times out.
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.shared.state).pending.remove(&self.id);
    }
}

// ===== the session =====

/// An open NETCONF session. Cheap to share behind an `Arc`: all methods take
/// `&self` and any number of RPCs may be outstanding at once.
pub struct Session {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Vec<u8>>,
    framing: Framing,
    next_id: AtomicU64,
    session_id: u32,
    capabilities: Vec<String>,
    fingerprint: String,
    addr: String,
    rpc_timeout: Duration,
    notification_buffer: usize,
    connect_time: Duration,
    reader: JoinHandle<()>,
    handle: russh::client::Handle<ClientHandler>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("addr", &self.addr)
            .field("session_id", &self.session_id)
            .field("framing", &self.framing)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Session {
    /// Connects, authenticates, opens the `netconf` subsystem and exchanges
    /// hellos.
    pub async fn connect(opts: ConnectOptions) -> Result<Session, NetconfError> {
        let span = tracing::info_span!("netconf_connect", addr = %opts.addr, user = %opts.user);
        connect_inner(opts).instrument(span).await
    }

    /// Session-id the server assigned.
    pub fn session_id(&self) -> u32 {
        self.session_id
    }

    /// Capabilities from the server's hello.
    pub fn server_capabilities(&self) -> &[String] {
        &self.capabilities
    }

    /// True if the server announced this capability (exact, or as the URI
    /// before `?`).
    pub fn has_capability(&self, uri: &str) -> bool {
        self.capabilities
            .iter()
            .any(|c| c == uri || c.split('?').next() == Some(uri))
    }

    /// Framing in force after the hello (chunked when both sides do 1.1).
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// SHA256 fingerprint of the server's host key, `SHA256:…`.
    pub fn host_key_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Time taken by connect + authentication + subsystem + hello.
    pub fn connect_time(&self) -> Duration {
        self.connect_time
    }

    /// True once the session is over (peer gone, framing error, closed).
    pub fn is_closed(&self) -> bool {
        lock(&self.shared.state).closed.is_some()
    }

    /// Resolves when the session is over.
    pub async fn closed(&self) {
        loop {
            let notified = self.shared.closed_notify.notified();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// Number of RPCs waiting for their reply.
    pub fn outstanding(&self) -> usize {
        lock(&self.shared.state).pending.len()
    }

    /// Sends one RPC and waits for its reply, with the default timeout.
    /// `body` is the operation element (`<get-config>…</get-config>`);
    /// unprefixed elements without their own `xmlns` are in the NETCONF base
    /// namespace. Many calls may run at once on one session.
    pub async fn rpc(&self, body: &str) -> Result<Reply, NetconfError> {
        self.rpc_with_timeout(body, self.rpc_timeout).await
    }

    pub async fn rpc_with_timeout(
        &self,
        body: &str,
        timeout: Duration,
    ) -> Result<Reply, NetconfError> {
        Ok(self.rpc_raw(body, timeout).await?.to_reply())
    }

    pub(crate) fn default_rpc_timeout(&self) -> Duration {
        self.rpc_timeout
    }

    pub(crate) async fn rpc_raw(
        &self,
        body: &str,
        timeout: Duration,
    ) -> Result<RawReply, NetconfError> {
        check_body(body)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let msg = format!(r#"<rpc xmlns="{BASE_NS}" message-id="{id}">{body}</rpc>"#);
        let bytes = framing::encode(msg.as_bytes(), self.framing);
        let (tx, rx) = oneshot::channel();
        {
            let mut st = lock(&self.shared.state);
            if let Some(e) = &st.closed {
                return Err(e.clone());
            }
            st.pending.insert(id, tx);
        }
        let _guard = PendingGuard {
            shared: &self.shared,
            id,
        };
        let started = Instant::now();
        let exchange = async {
            self.tx
                .send(bytes)
                .await
                .map_err(|_| NetconfError::Disconnected)?;
            rx.await.map_err(|_| NetconfError::Disconnected)?
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(NetconfError::Timeout {
                phase: Phase::Rpc,
                after: timeout,
            }),
        };
        debug!(
            addr = %self.addr,
            session_id = self.session_id,
            message_id = id,
            elapsed_us = started.elapsed().as_micros() as u64,
            ok = result.is_ok(),
            "rpc"
        );
        result
    }

    /// Subscribes to a notification stream (RFC 5277 `create-subscription`;
    /// `None` is the default `NETCONF` stream). Notifications arrive on the
    /// returned receiver until the session ends (then it yields `None`).
    pub async fn create_subscription(
        &self,
        stream: Option<&str>,
    ) -> Result<mpsc::Receiver<Notification>, NetconfError> {
        let (tx, rx) = mpsc::channel(self.notification_buffer.max(1));
        let previous = {
            let mut st = lock(&self.shared.state);
            if let Some(e) = &st.closed {
                return Err(e.clone());
            }
            // Installed before the request so that nothing sent right after
            // the reply is lost.
            st.notifications.replace(tx)
        };
        let stream_xml = stream
            .map(|s| format!("<stream>{}</stream>", xml::escape_text(s)))
            .unwrap_or_default();
        let body = format!(
            r#"<create-subscription xmlns="{}">{stream_xml}</create-subscription>"#,
            message::NOTIFICATION_NS
        );
        match self.rpc(&body).await.and_then(Reply::into_ok) {
            Ok(()) => Ok(rx),
            Err(e) => {
                let mut st = lock(&self.shared.state);
                if st.closed.is_none() {
                    st.notifications = previous;
                }
                Err(e)
            }
        }
    }

    /// Establishes RFC 8639 dynamic subscriptions, one per element of
    /// `inputs` (the content of `<establish-subscription>`: a stream or,
    /// with RFC 8641, a datastore with its trigger), and returns their ids
    /// in order. The notifications of all of them arrive on the returned
    /// receiver until the session ends; if one is refused, the error is
    /// returned (those established before it end with the session).
    pub async fn establish_subscriptions(
        &self,
        inputs: &[String],
    ) -> Result<(Vec<u32>, mpsc::Receiver<Notification>), NetconfError> {
        let (tx, rx) = mpsc::channel(self.notification_buffer.max(1));
        let previous = {
            let mut st = lock(&self.shared.state);
            if let Some(e) = &st.closed {
                return Err(e.clone());
            }
            st.notifications.replace(tx)
        };
        let mut ids = Vec::with_capacity(inputs.len());
        for input in inputs {
            let body = format!(
                r#"<establish-subscription xmlns="{SN_NS}">{input}</establish-subscription>"#
            );
            let reply = self.rpc(&body).await.and_then(Reply::into_data);
            let id = reply.and_then(|data| {
                let root = xml::parse(data.as_bytes())
                    .map_err(|e| NetconfError::UnexpectedReply(e.to_string()))?;
                root.trimmed_text().parse::<u32>().map_err(|_| {
                    NetconfError::UnexpectedReply(format!("establish-subscription replied {data}"))
                })
            });
            match id {
                Ok(id) => ids.push(id),
                Err(e) => {
                    let mut st = lock(&self.shared.state);
                    if st.closed.is_none() && ids.is_empty() {
                        st.notifications = previous;
                    }
                    return Err(e);
                }
            }
        }
        Ok((ids, rx))
    }

    /// Notifications dropped because the receiver was full.
    pub fn dropped_notifications(&self) -> u64 {
        lock(&self.shared.state).dropped_notifications
    }

    /// Sends `<close-session/>` (best effort, bounded by the RPC timeout)
    /// and tears the connection down. Outstanding RPCs fail with
    /// [`NetconfError::Disconnected`].
    pub async fn close_session(&self) -> Result<(), NetconfError> {
        let result = if self.is_closed() {
            Ok(())
        } else {
            self.rpc("<close-session/>").await.and_then(Reply::into_ok)
        };
        self.shutdown().await;
        result
    }

    /// Ends the session locally without a `<close-session>`.
    pub async fn shutdown(&self) {
        self.shared.close(NetconfError::Disconnected);
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shared.close(NetconfError::Disconnected);
        self.reader.abort();
        // The writer ends when `tx` goes; with it and `handle` gone the SSH
        // connection task ends and closes the socket.
    }
}

/// The body must be a single well-formed element.
fn check_body(body: &str) -> Result<(), NetconfError> {
    xml::parse(body.as_bytes())
        .map(|_| ())
        .map_err(|e| NetconfError::InvalidRequest(e.to_string()))
}

async fn connect_inner(opts: ConnectOptions) -> Result<Session, NetconfError> {
    let started = Instant::now();
    let key =
        russh::keys::load_secret_key(&opts.key, opts.key_passphrase.as_deref()).map_err(|e| {
            NetconfError::Key {
                path: opts.key.display().to_string(),
                message: e.to_string(),
            }
        })?;
    let seen = Arc::new(Mutex::new(None));
    let (handle, channel) = match tokio::time::timeout(
        opts.connect_timeout,
        ssh_connect(&opts, key, Arc::clone(&seen)),
    )
    .await
    {
        Ok(r) => r?,
        Err(_) => {
            return Err(NetconfError::Timeout {
                phase: Phase::Connect,
                after: opts.connect_timeout,
            })
        }
    };
    let fingerprint = lock(&seen).clone().unwrap_or_default();
    let (mut read, write) = channel.split();
    let limits = Limits {
        max_message: opts.max_reply_size,
        // Chunk sizes are not limited separately: an oversized reply is
        // discarded as it streams in, the session goes on.
        max_chunk: MAX_CHUNK_SIZE_RFC,
    };
    // The hello is read with a generous limit (capability lists can be
    // long) so that a small reply limit does not break the handshake.
    let mut decoder = Decoder::new(Limits {
        max_message: limits.max_message.max(HELLO_MIN_LIMIT),
        ..limits
    });
    let hello = match tokio::time::timeout(
        opts.hello_timeout,
        exchange_hello(&mut read, &write, &mut decoder),
    )
    .await
    {
        Ok(r) => r?,
        Err(_) => {
            return Err(NetconfError::Timeout {
                phase: Phase::Hello,
                after: opts.hello_timeout,
            })
        }
    };
    let session_id = hello
        .session_id
        .ok_or_else(|| NetconfError::Hello("server hello has no session-id".into()))?;
    let framing = if hello.supports_base_11() {
        Framing::Chunked
    } else {
        Framing::EndOfMessage
    };
    if decoder.buffered() == 0 {
        decoder = Decoder::new(limits);
    } else {
        // Bytes already followed the hello; keep them (and the hello limit).
        debug!(
            buffered = decoder.buffered(),
            "data right after the server hello"
        );
    }
    decoder.set_framing(framing);
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        closed_notify: tokio::sync::Notify::new(),
    });
    let span = tracing::info_span!("netconf_session", addr = %opts.addr, session_id);
    let reader = tokio::spawn(
        read_loop(read, decoder, Arc::clone(&shared), opts.max_reply_size).instrument(span.clone()),
    );
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(write_loop(write, rx, Arc::clone(&shared)).instrument(span));
    let connect_time = started.elapsed();
    info!(
        session_id,
        framing = ?framing,
        host_key = %fingerprint,
        elapsed_ms = connect_time.as_millis() as u64,
        "netconf session established"
    );
    Ok(Session {
        shared,
        tx,
        framing,
        next_id: AtomicU64::new(1),
        session_id,
        capabilities: hello.capabilities,
        fingerprint,
        addr: opts.addr,
        rpc_timeout: opts.rpc_timeout,
        notification_buffer: opts.notification_buffer,
        connect_time,
        reader,
        handle,
    })
}

async fn ssh_connect(
    opts: &ConnectOptions,
    key: russh::keys::PrivateKey,
    seen: Arc<Mutex<Option<String>>>,
) -> Result<
    (
        russh::client::Handle<ClientHandler>,
        russh::Channel<russh::client::Msg>,
    ),
    NetconfError,
> {
    let config = russh::client::Config {
        nodelay: true,
        keepalive_interval: opts.keepalive_interval,
        keepalive_max: 3,
        ..Default::default()
    };
    let handler = ClientHandler {
        policy: opts.host_key.clone(),
        seen: Arc::clone(&seen),
    };
    let connect_err = |message: String| NetconfError::Connect {
        addr: opts.addr.clone(),
        message,
    };
    let mut handle = match russh::client::connect(Arc::new(config), opts.addr.as_str(), handler)
        .await
    {
        Ok(h) => h,
        Err(e) => {
            if let (HostKeyPolicy::Pinned(expected), Some(got)) =
                (&opts.host_key, lock(&seen).clone())
            {
                if !fingerprints_match(expected, &got) {
                    warn!(expected = %expected, got = %got, "host key mismatch; connection refused");
                    return Err(NetconfError::HostKeyMismatch {
                        expected: expected.clone(),
                        got,
                    });
                }
            }
            return Err(connect_err(e.to_string()));
        }
    };
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
            opts.user.clone(),
            PrivateKeyWithHashAlg::new(Arc::new(key), hash_alg),
        )
        .await
        .map_err(|e| NetconfError::Auth {
            user: opts.user.clone(),
            message: e.to_string(),
        })?;
    if !auth.success() {
        return Err(NetconfError::Auth {
            user: opts.user.clone(),
            message: "public key refused".into(),
        });
    }
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
    Ok((handle, channel))
}

async fn exchange_hello(
    read: &mut ChannelReadHalf,
    write: &ChannelWriteHalf<russh::client::Msg>,
    decoder: &mut Decoder,
) -> Result<Hello, NetconfError> {
    let ours = Hello {
        capabilities: vec![CAP_BASE_10.to_string(), CAP_BASE_11.to_string()],
        session_id: None,
    };
    write
        .data_bytes(framing::encode(
            ours.to_xml().as_bytes(),
            Framing::EndOfMessage,
        ))
        .await
        .map_err(|e| NetconfError::Hello(format!("sending hello: {e}")))?;
    loop {
        match decoder.next_frame() {
            Ok(Some(Frame::Message(m))) => {
                return Hello::parse(&m).map_err(|e| NetconfError::Hello(e.to_string()))
            }
            Ok(Some(Frame::Oversized { size, .. })) => {
                return Err(NetconfError::Hello(format!(
                    "server hello of {size} bytes is too large"
                )))
            }
            Ok(None) => {}
            Err(e) => return Err(NetconfError::Framing(e.to_string())),
        }
        match read.wait().await {
            Some(ChannelMsg::Data { data }) => decoder.push(&data),
            Some(ChannelMsg::Eof | ChannelMsg::Close) | None => {
                return Err(NetconfError::Hello(
                    "server closed the session before its hello (session limit?)".into(),
                ))
            }
            Some(_) => {}
        }
    }
}

async fn read_loop(
    mut read: ChannelReadHalf,
    mut decoder: Decoder,
    shared: Arc<Shared>,
    limit: usize,
) {
    let end = 'outer: loop {
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => shared.dispatch(frame, limit),
                Ok(None) => break,
                Err(e) => {
                    warn!(error = %e, "framing error; session closed");
                    break 'outer NetconfError::Framing(e.to_string());
                }
            }
        }
        match read.wait().await {
            Some(ChannelMsg::Data { data }) => decoder.push(&data),
            Some(ChannelMsg::Eof) => {
                info!("server ended the session (eof)");
                break NetconfError::Disconnected;
            }
            Some(ChannelMsg::Close) | None => {
                info!("connection to server lost");
                break NetconfError::Disconnected;
            }
            Some(_) => {}
        }
    };
    shared.close(end);
}

async fn write_loop(
    write: ChannelWriteHalf<russh::client::Msg>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    shared: Arc<Shared>,
) {
    while let Some(bytes) = rx.recv().await {
        if let Err(e) = write.data_bytes(bytes).await {
            warn!(error = %e, "write to server failed; session closed");
            shared.close(NetconfError::Disconnected);
            return;
        }
    }
}
