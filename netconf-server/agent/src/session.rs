//! One NETCONF session over any byte stream (the SSH channel in production,
//! an in-memory pipe in tests): hello exchange, framing, RPCs in order,
//! notifications, kill-session.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use l45_netconf_proto::message::{self, Hello, Incoming, Rpc};
use l45_netconf_proto::{framing, Decoder, ErrorTag, ErrorType, Frame, Framing, RpcError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::sync::mpsc;
use tracing::{debug, info, warn, Instrument};

use crate::agent::Agent;
use crate::metrics::recorded::operation_label;
use crate::ops::After;
use crate::sessions::SessionInfo;

async fn send<W: AsyncWrite + Unpin>(
    w: &mut W,
    framing: Framing,
    msg: &str,
) -> std::io::Result<()> {
    // In parts: a large reply is neither copied whole for framing nor sent
    // as one chunk the peer must buffer before decoding.
    for part in framing::encode_parts(msg.as_bytes(), framing, framing::SEND_PART) {
        w.write_all(&part).await?;
    }
    w.flush().await
}

/// A complete message as an `<rpc>`, or the error reply to send instead
/// (an oversized message, one that is not a usable `<rpc>`). No I/O: the
/// session loop and the conformance suite share it.
pub fn decode_rpc(agent: &Agent, info: &SessionInfo, frame: Frame) -> Result<Rpc, String> {
    let bytes = match frame {
        Frame::Oversized { head, size } => {
            let echo = message::message_id_from_head(&head)
                .map(|m| vec![("message-id".to_string(), m)])
                .unwrap_or_default();
            let err = RpcError::new(ErrorType::Rpc, ErrorTag::TooBig).message(format!(
                "message of {size} bytes exceeds the limit of {} bytes",
                agent.opts.limits.max_message
            ));
            agent.count_bad_rpc(info);
            warn!(size, "oversized message discarded");
            return Err(message::error_reply(&echo, &[err]));
        }
        Frame::Message(m) => m,
    };
    match message::parse_rpc(bytes) {
        Incoming::Rpc(rpc) => Ok(rpc),
        Incoming::Invalid { echo_attrs, error } => {
            agent.count_bad_rpc(info);
            debug!(error = %error, "invalid rpc");
            Err(message::error_reply(&echo_attrs, &[error]))
        }
    }
}

/// Largest message parsed on an async worker; larger ones go to a blocking
/// thread.
const INLINE_PARSE_MAX: usize = 64 * 1024;

/// An rpc done on a blocking thread.
struct Handled {
    op: String,
    reply: String,
    after: After,
    /// When parsing ended and the operation began.
    parsed: Instant,
}

/// Whether the session goes on after a message.
enum Flow {
    Continue,
    End,
}

/// A session's state between messages.
struct Conn<S> {
    agent: Arc<Agent>,
    info: SessionInfo,
    writer: WriteHalf<S>,
    decoder: Decoder,
    got_hello: bool,
    /// Whole `<notification>` messages of the session's subscriptions.
    outbox: Option<mpsc::Receiver<String>>,
    /// When the first byte of the message being received arrived (for the
    /// debug timings of each rpc).
    msg_started: Option<Instant>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Conn<S> {
    /// Sends `msg`; a failed write ends the session.
    async fn reply(&mut self, msg: &str) -> Flow {
        match send(&mut self.writer, self.decoder.framing(), msg).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::End,
        }
    }

    /// Bytes from the peer: every complete frame in them, in order.
    async fn on_bytes(&mut self, bytes: &[u8]) -> Flow {
        self.msg_started.get_or_insert_with(Instant::now);
        self.decoder.push(bytes);
        loop {
            let frame = match self.decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return Flow::Continue,
                Err(e) => {
                    warn!(error = %e, "framing error; closing session");
                    let err = RpcError::new(ErrorType::Rpc, ErrorTag::MalformedMessage)
                        .message(e.to_string());
                    self.reply(&message::error_reply(&[], &[err])).await;
                    return Flow::End;
                }
            };
            let received = Instant::now();
            let recv_ms = self
                .msg_started
                .map(|t| received.duration_since(t).as_secs_f64() * 1e3)
                .unwrap_or(0.0);
            self.msg_started = (self.decoder.buffered() > 0).then_some(received);
            let flow = if self.got_hello {
                self.on_rpc(frame, received, recv_ms).await
            } else {
                self.on_hello(frame).await
            };
            if let Flow::End = flow {
                return Flow::End;
            }
        }
    }

    async fn on_hello(&mut self, frame: Frame) -> Flow {
        let bytes = match frame {
            Frame::Message(m) => m,
            Frame::Oversized { head, .. } => head,
        };
        // A hello may be as large as any message: parse a large one off the
        // async workers (see `on_rpc`).
        let parsed = if bytes.len() <= INLINE_PARSE_MAX {
            Hello::parse(&bytes)
        } else {
            match tokio::task::spawn_blocking(move || Hello::parse(&bytes)).await {
                Ok(parsed) => parsed,
                Err(_) => return Flow::End,
            }
        };
        match parsed {
            Ok(h) if h.session_id.is_none() => {
                self.got_hello = true;
                if h.supports_base_11() {
                    self.decoder.set_framing(Framing::Chunked);
                }
                debug!(base11 = h.supports_base_11(), "hello received");
                Flow::Continue
            }
            Ok(_) => {
                warn!("client hello carries a session-id; closing");
                self.agent.count_bad_hello();
                Flow::End
            }
            Err(e) => {
                warn!(error = %e, "bad hello; closing");
                self.agent.count_bad_hello();
                Flow::End
            }
        }
    }

    async fn on_rpc(&mut self, frame: Frame, received: Instant, recv_ms: f64) -> Flow {
        let bytes_in = match &frame {
            Frame::Message(m) => m.len(),
            Frame::Oversized { size, .. } => *size,
        };
        let (a, s) = (Arc::clone(&self.agent), self.info.clone());
        // Parsing is linear in the message, yet a message may be 64 MiB: it
        // runs, with the operation, on a blocking thread, so the async
        // workers go on serving other sessions meanwhile. The parsed tree is
        // dropped there too.
        let blocking = tokio::task::spawn_blocking(move || -> Result<Handled, String> {
            let rpc = decode_rpc(&a, &s, frame)?;
            let parsed = Instant::now();
            let errors_before = s.out_rpc_errors.load(Ordering::Relaxed);
            let (reply, after) = a.handle(&s, &rpc);
            let op = operation_label(a.ctx, rpc.operation.ns.as_deref(), &rpc.operation.name);
            let ok = s.out_rpc_errors.load(Ordering::Relaxed) == errors_before;
            a.metrics.rpc(op, ok, received.elapsed());
            Ok(Handled {
                op: rpc.operation.name.clone(),
                reply,
                after,
                parsed,
            })
        });
        let Handled {
            op,
            reply,
            after,
            parsed: started,
        } = match blocking.await {
            Ok(Ok(handled)) => handled,
            Ok(Err(reply)) => return self.reply(&reply).await,
            // The runtime is shutting down (the agent is stopping): end the
            // session, not an rpc-error claiming the operation failed.
            Err(e) if e.is_cancelled() => return Flow::End,
            Err(e) => {
                warn!(error = %e, "operation panicked");
                let err = RpcError::new(ErrorType::Application, ErrorTag::OperationFailed)
                    .message("internal error");
                return self.reply(&message::error_reply(&[], &[err])).await;
            }
        };
        let parse_ms = started.duration_since(received).as_secs_f64() * 1e3;
        let handled = Instant::now();
        let handle_ms = handled.duration_since(started).as_secs_f64() * 1e3;
        if let Flow::End = self.reply(&reply).await {
            return Flow::End;
        }
        let send_ms = handled.elapsed().as_secs_f64() * 1e3;
        // recv: first byte to complete frame (mostly the client sending);
        // parse: XML envelope; handle: the operation with its reply text;
        // send: framing and writing into the SSH channel (flow control
        // included).
        debug!(op = %op, bytes_in, bytes_out = reply.len(), recv_ms, parse_ms, handle_ms, send_ms, "rpc handled");
        match after {
            After::Continue => Flow::Continue,
            After::Close => Flow::End,
            After::Subscribe => {
                if self.outbox.is_none() {
                    self.outbox = self.agent.take_outbox(self.info.id);
                }
                Flow::Continue
            }
        }
    }

    async fn on_notification(&mut self, msg: Option<String>) -> Flow {
        let Some(msg) = msg else {
            self.outbox = None;
            return Flow::Continue;
        };
        self.agent.count_notification();
        self.info
            .out_notifications
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.reply(&msg).await
    }
}

/// Runs a session to its end. Returns when the peer leaves, closes, is
/// killed, or breaks the framing.
pub async fn run<S>(agent: Arc<Agent>, stream: S, username: String, peer: Option<String>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let Some((info, mut killed)) = agent.open_session(&username, peer.clone()) else {
        warn!(user = %username, "session limit reached; refusing session");
        return;
    };
    let span = tracing::info_span!("session", session_id = info.id, user = %username, peer = peer.as_deref().unwrap_or("-"));
    let id = info.id;
    async move {
        info!("session opened");
        let (mut reader, writer) = tokio::io::split(stream);
        let hello = Hello {
            capabilities: agent.capabilities(),
            session_id: Some(info.id),
        };
        let hello_deadline = tokio::time::Instant::now() + agent.opts.hello_timeout;
        let mut conn = Conn {
            decoder: Decoder::new(agent.opts.limits),
            agent: Arc::clone(&agent),
            info,
            writer,
            got_hello: false,
            outbox: None,
            msg_started: None,
        };
        let mut buf = vec![0u8; 64 * 1024];
        // Traffic from the client or a notification to it resets the idle
        // timer (`--idle-timeout`).
        let idle_timeout = agent.opts.idle_timeout;
        let mut idle_since = tokio::time::Instant::now();
        if let Flow::Continue = conn.reply(&hello.to_xml()).await {
            loop {
                let flow = tokio::select! {
                    read = reader.read(&mut buf) => match read {
                        Ok(0) | Err(_) => Flow::End,
                        Ok(n) => {
                            idle_since = tokio::time::Instant::now();
                            conn.on_bytes(&buf[..n]).await
                        }
                    },
                    msg = async {
                        match conn.outbox.as_mut() {
                            Some(rx) => rx.recv().await,
                            None => std::future::pending().await,
                        }
                    } => {
                        idle_since = tokio::time::Instant::now();
                        conn.on_notification(msg).await
                    }
                    _ = killed.changed() => {
                        info!("session killed");
                        Flow::End
                    }
                    _ = tokio::time::sleep_until(idle_since + idle_timeout.unwrap_or_default()), if idle_timeout.is_some() => {
                        info!("idle timeout; closing");
                        Flow::End
                    }
                    _ = tokio::time::sleep_until(hello_deadline), if !conn.got_hello => {
                        warn!("no hello in time; closing");
                        agent.count_bad_hello();
                        Flow::End
                    }
                };
                if let Flow::End = flow {
                    break;
                }
            }
        }
        let _ = conn.writer.shutdown().await;
        agent.close_session(id);
        info!("session closed");
    }
    .instrument(span)
    .await
}
