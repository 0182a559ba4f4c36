//! One NETCONF session over any byte stream (the SSH channel in production,
//! an in-memory pipe in tests): hello exchange, framing, RPCs in order,
//! notifications, kill-session.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use l45_netconf_proto::framing::{self, Part, PartEncoder};
use l45_netconf_proto::message::{self, Hello, Incoming, Rpc};
use l45_netconf_proto::{Decoder, ErrorTag, ErrorType, Frame, Framing, RpcError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::sync::mpsc;
use tracing::{debug, info, warn, Instrument};

use crate::agent::Agent;
use crate::metrics::recorded::operation_label;
use crate::ops::{After, ReplySink};
use crate::sessions::SessionInfo;

async fn send<W: AsyncWrite + Unpin>(
    w: &mut W,
    framing: Framing,
    msg: &str,
) -> std::io::Result<()> {
    // In parts: a large message is not sent as one chunk the peer must
    // buffer before decoding.
    for part in framing::encode_parts(msg, framing, framing::SEND_PART) {
        w.write_all(part.as_bytes()).await?;
    }
    w.flush().await
}

/// Framed parts of a reply waiting for the session's writer: the
/// operation runs at most this far ahead of the peer reading its reply
/// (a large reply is never held whole).
const PARTS_IN_FLIGHT: usize = 4;

/// A reply as the operation produces it (on its blocking thread), framed
/// into parts and handed to the session's writer.
struct PartSink {
    encoder: PartEncoder,
    tx: mpsc::Sender<Part>,
    /// Message bytes pushed.
    bytes: usize,
    /// The writer is gone (the peer left or a write failed): the rest of
    /// the reply is dropped.
    closed: bool,
}

impl PartSink {
    fn new(framing: Framing, tx: mpsc::Sender<Part>) -> PartSink {
        PartSink {
            encoder: PartEncoder::new(framing, framing::SEND_PART),
            tx,
            bytes: 0,
            closed: false,
        }
    }

    /// Sends the last part with the end-of-message marker.
    fn finish(self) {
        let (tx, mut closed) = (self.tx, self.closed);
        self.encoder.finish(&mut |part| {
            closed = closed || tx.blocking_send(part).is_err();
        });
    }
}

impl ReplySink for PartSink {
    fn push(&mut self, text: &str) {
        self.bytes += text.len();
        if self.closed {
            return;
        }
        let (tx, closed) = (&self.tx, &mut self.closed);
        self.encoder.push(text, &mut |part| {
            *closed = *closed || tx.blocking_send(part).is_err();
        });
    }
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

/// An rpc done on a blocking thread, its reply sent through a
/// [`PartSink`].
struct Handled {
    op: String,
    /// Bytes of the reply.
    bytes_out: usize,
    after: After,
    /// When parsing ended and the operation began.
    parsed: Instant,
    /// When the operation had produced its whole reply.
    rendered: Instant,
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
        let (tx, mut rx) = mpsc::channel::<Part>(PARTS_IN_FLIGHT);
        let framing = self.decoder.framing();
        // Parsing is linear in the message, yet a message may be 64 MiB: it
        // runs, with the operation, on a blocking thread, so the async
        // workers go on serving other sessions meanwhile. The parsed tree is
        // dropped there too. The reply comes back in parts as it is
        // produced, so sending overlaps producing it.
        let blocking = tokio::task::spawn_blocking(move || -> Result<Handled, String> {
            let rpc = decode_rpc(&a, &s, frame)?;
            let parsed = Instant::now();
            let errors_before = s.out_rpc_errors.load(Ordering::Relaxed);
            let mut sink = PartSink::new(framing, tx);
            let after = a.handle_into(&s, &rpc, &mut sink);
            let bytes_out = sink.bytes;
            sink.finish();
            let rendered = Instant::now();
            let op = operation_label(a.ctx, rpc.operation.ns.as_deref(), &rpc.operation.name);
            let ok = s.out_rpc_errors.load(Ordering::Relaxed) == errors_before;
            a.metrics.rpc(op, ok, received.elapsed());
            Ok(Handled {
                op: rpc.operation.name.clone(),
                bytes_out,
                after,
                parsed,
                rendered,
            })
        });
        // Until the operation drops its sender: done, failed before its
        // reply, or panicked.
        let mut sent_any = false;
        let mut write_failed = false;
        while let Some(part) = rx.recv().await {
            sent_any = true;
            if self.writer.write_all(part.as_bytes()).await.is_err() {
                write_failed = true;
                break;
            }
        }
        // (after a failed write the operation's further parts are dropped)
        drop(rx);
        let flushed = !write_failed && self.writer.flush().await.is_ok();
        let Handled {
            op,
            bytes_out,
            after,
            parsed: started,
            rendered,
        } = match blocking.await {
            Ok(Ok(handled)) => handled,
            Ok(Err(reply)) => return self.reply(&reply).await,
            // The runtime is shutting down (the agent is stopping): end the
            // session, not an rpc-error claiming the operation failed.
            Err(e) if e.is_cancelled() => return Flow::End,
            Err(e) => {
                warn!(error = %e, "operation panicked");
                if sent_any {
                    // Part of its reply is out: no well-formed reply can
                    // follow.
                    return Flow::End;
                }
                let err = RpcError::new(ErrorType::Application, ErrorTag::OperationFailed)
                    .message("internal error");
                return self.reply(&message::error_reply(&[], &[err])).await;
            }
        };
        if !flushed {
            return Flow::End;
        }
        let parse_ms = started.duration_since(received).as_secs_f64() * 1e3;
        let handle_ms = rendered.duration_since(started).as_secs_f64() * 1e3;
        let send_ms = rendered.elapsed().as_secs_f64() * 1e3;
        // recv: first byte to complete frame (mostly the client sending);
        // parse: XML envelope; handle: the operation producing its reply,
        // which is written into the SSH channel meanwhile (so it includes
        // waiting for a slow reader); send: what was left to write after
        // that (flow control included).
        debug!(op = %op, bytes_in, bytes_out, recv_ms, parse_ms, handle_ms, send_ms, "rpc handled");
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
