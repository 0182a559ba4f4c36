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
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};

use super::error::{NetconfError, Phase};
use super::reply::{parse_incoming, Incoming, Notification, RawReply, Reply};
use super::ssh::{self, SshHandle};

/// Smallest message limit used while reading the server's hello.
/// RFC 8639 subscribed notifications.
pub const SN_NS: &str = "urn:ietf:params:xml:ns:yang:ietf-subscribed-notifications";
/// RFC 8641 YANG-push (its module capability tells an agent offers it).
pub const YANG_PUSH_NS: &str = "urn:ietf:params:xml:ns:yang:ietf-yang-push";

const HELLO_MIN_LIMIT: usize = 16 * 1024 * 1024;

pub use super::options::{
    fingerprints_match, ConnectOptions, HostKeyPolicy, DEFAULT_MAX_REPLY_SIZE,
};

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
    /// The SSH connection (none for a relayed session: the relay holds it).
    /// Shared with relays of a call-home connection, which open their own
    /// channels on it.
    ssh: Option<Arc<SshHandle>>,
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

    /// A session on a connection the device opened (call home, RFC 8071):
    /// the SSH handshake on `stream`, then `login(fingerprint)` names the
    /// user and key to log in with for the host key the device presented
    /// (`None` refuses the connection), then as [`Session::connect`].
    /// `opts.host_key` is checked as usual (trust on first use lets the
    /// caller decide from the fingerprint).
    pub async fn accept_call(
        opts: ConnectOptions,
        stream: tokio::net::TcpStream,
        login: impl FnOnce(&str) -> Option<(String, PathBuf)> + Send,
    ) -> Result<Session, NetconfError> {
        let span = tracing::info_span!("netconf_call_home", peer = %opts.addr);
        async move {
            let started = Instant::now();
            let seen = Arc::new(Mutex::new(None));
            let handle = within(
                opts.connect_timeout,
                Phase::Connect,
                ssh::handshake(&opts, Arc::clone(&seen), Some(stream)),
            )
            .await?;
            let fingerprint = lock(&seen).clone().unwrap_or_default();
            let (user, key_path) = login(&fingerprint).ok_or_else(|| NetconfError::Auth {
                user: String::new(),
                message: format!("no login for host key {fingerprint}"),
            })?;
            let opts = ConnectOptions {
                user,
                key: key_path,
                ..opts
            };
            let key = load_key(&opts)?;
            let mut handle = handle;
            let channel = within(
                opts.connect_timeout,
                Phase::Connect,
                ssh::login_and_open(&mut handle, &opts.user, key),
            )
            .await?;
            let handle = Arc::new(handle);
            finish(
                opts,
                Some(handle),
                fingerprint,
                channel.into_stream(),
                started,
            )
            .await
        }
        .instrument(span)
        .await
    }

    /// A session relayed by `serve` to a device that calls home: the NETCONF
    /// bytes of a channel `serve` opened on that device's connection, over
    /// a local stream (see `crate::relay`). `fingerprint` is the host key
    /// the device presented to `serve`.
    pub async fn over_stream<S>(
        opts: ConnectOptions,
        stream: S,
        fingerprint: String,
    ) -> Result<Session, NetconfError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        finish(opts, None, fingerprint, stream, Instant::now()).await
    }

    /// Opens another NETCONF channel on this session's SSH connection (for
    /// a relay); `None` for a relayed session.
    pub async fn open_netconf_channel(
        &self,
    ) -> Option<Result<russh::ChannelStream<russh::client::Msg>, NetconfError>> {
        let ssh = self.ssh.as_ref()?;
        Some(
            ssh::open_netconf(ssh)
                .await
                .map(russh::Channel::into_stream),
        )
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
        if let Some(ssh) = &self.ssh {
            let _ = ssh
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
        }
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

/// Runs `f` with a deadline; a timeout is `NetconfError::Timeout` in `phase`.
async fn within<T>(
    after: Duration,
    phase: Phase,
    f: impl std::future::Future<Output = Result<T, NetconfError>>,
) -> Result<T, NetconfError> {
    tokio::time::timeout(after, f)
        .await
        .map_err(|_| NetconfError::Timeout { phase, after })?
}

fn load_key(opts: &ConnectOptions) -> Result<russh::keys::PrivateKey, NetconfError> {
    russh::keys::load_secret_key(&opts.key, opts.key_passphrase.as_deref()).map_err(|e| {
        NetconfError::Key {
            path: opts.key.display().to_string(),
            message: e.to_string(),
        }
    })
}

async fn connect_inner(opts: ConnectOptions) -> Result<Session, NetconfError> {
    let started = Instant::now();
    let key = load_key(&opts)?;
    let seen = Arc::new(Mutex::new(None));
    let (handle, channel) = within(opts.connect_timeout, Phase::Connect, async {
        let mut handle = ssh::handshake(&opts, Arc::clone(&seen), None).await?;
        let channel = ssh::login_and_open(&mut handle, &opts.user, key).await?;
        Ok((Arc::new(handle), channel))
    })
    .await?;
    let fingerprint = lock(&seen).clone().unwrap_or_default();
    finish(
        opts,
        Some(handle),
        fingerprint,
        channel.into_stream(),
        started,
    )
    .await
}

/// The hello exchange on an open NETCONF byte stream, then the reader and
/// writer tasks.
async fn finish<S>(
    opts: ConnectOptions,
    ssh: Option<Arc<SshHandle>>,
    fingerprint: String,
    stream: S,
    started: Instant,
) -> Result<Session, NetconfError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut read, mut write) = tokio::io::split(stream);
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
    let hello = within(
        opts.hello_timeout,
        Phase::Hello,
        exchange_hello(&mut read, &mut write, &mut decoder),
    )
    .await?;
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
        ssh,
    })
}

async fn exchange_hello<R, W>(
    read: &mut R,
    write: &mut W,
    decoder: &mut Decoder,
) -> Result<Hello, NetconfError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let ours = Hello {
        capabilities: vec![CAP_BASE_10.to_string(), CAP_BASE_11.to_string()],
        session_id: None,
    };
    let bytes = framing::encode(ours.to_xml().as_bytes(), Framing::EndOfMessage);
    write
        .write_all(&bytes)
        .await
        .and(write.flush().await)
        .map_err(|e| NetconfError::Hello(format!("sending hello: {e}")))?;
    let mut buf = vec![0u8; 64 * 1024];
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
        match read.read(&mut buf).await {
            Ok(0) | Err(_) => {
                return Err(NetconfError::Hello(
                    "server closed the session before its hello (session limit?)".into(),
                ))
            }
            Ok(n) => decoder.push(&buf[..n]),
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut read: R,
    mut decoder: Decoder,
    shared: Arc<Shared>,
    limit: usize,
) {
    let mut buf = vec![0u8; 64 * 1024];
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
        match read.read(&mut buf).await {
            Ok(0) => {
                info!("server ended the session");
                break NetconfError::Disconnected;
            }
            Ok(n) => decoder.push(&buf[..n]),
            Err(e) => {
                info!(error = %e, "connection to server lost");
                break NetconfError::Disconnected;
            }
        }
    };
    shared.close(end);
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut write: W,
    mut rx: mpsc::Receiver<Vec<u8>>,
    shared: Arc<Shared>,
) {
    while let Some(bytes) = rx.recv().await {
        let sent = async {
            write.write_all(&bytes).await?;
            // Pipelined requests queued meanwhile go out in one flush.
            if rx.is_empty() {
                write.flush().await?;
            }
            std::io::Result::Ok(())
        };
        if let Err(e) = sent.await {
            warn!(error = %e, "write to server failed; session closed");
            shared.close(NetconfError::Disconnected);
            return;
        }
    }
}
