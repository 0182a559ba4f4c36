//! One NETCONF session over any byte stream (the SSH channel in production,
//! an in-memory pipe in tests): hello exchange, framing, RPCs in order,
//! notifications, kill-session.

use std::sync::Arc;

use l45_netconf_proto::message::{self, Hello, Incoming};
use l45_netconf_proto::{framing, Decoder, ErrorTag, ErrorType, Frame, Framing, RpcError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, info, warn, Instrument};

use crate::agent::Agent;
use crate::ops::After;

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
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut decoder = Decoder::new(agent.opts.limits);
        let hello = Hello { capabilities: agent.capabilities(), session_id: Some(info.id) };
        if send(&mut writer, Framing::EndOfMessage, &hello.to_xml()).await.is_err() {
            agent.close_session(id);
            return;
        }
        let mut got_hello = false;
        let mut events: Option<tokio::sync::broadcast::Receiver<crate::notify::Event>> = None;
        let mut buf = vec![0u8; 64 * 1024];
        // When the first byte of the message being received arrived (for the
        // debug timings of each rpc).
        let mut msg_started: Option<std::time::Instant> = None;
        let hello_deadline = tokio::time::Instant::now() + agent.opts.hello_timeout;
        'outer: loop {
            tokio::select! {
                read = reader.read(&mut buf) => {
                    let n = match read {
                        Ok(0) | Err(_) => break 'outer,
                        Ok(n) => n,
                    };
                    msg_started.get_or_insert_with(std::time::Instant::now);
                    decoder.push(&buf[..n]);
                    loop {
                        let frame = match decoder.next_frame() {
                            Ok(Some(f)) => f,
                            Ok(None) => break,
                            Err(e) => {
                                warn!(error = %e, "framing error; closing session");
                                let err = RpcError::new(ErrorType::Rpc, ErrorTag::MalformedMessage).message(e.to_string());
                                let _ = send(&mut writer, decoder.framing(), &message::error_reply(&[], &[err])).await;
                                break 'outer;
                            }
                        };
                        let received = std::time::Instant::now();
                        let recv_ms = msg_started.map(|t| received.duration_since(t).as_secs_f64() * 1e3).unwrap_or(0.0);
                        msg_started = (decoder.buffered() > 0).then_some(received);
                        if !got_hello {
                            let bytes = match &frame { Frame::Message(m) => m.as_slice(), Frame::Oversized { head, .. } => head.as_slice() };
                            match Hello::parse(bytes) {
                                Ok(h) if h.session_id.is_none() => {
                                    got_hello = true;
                                    if h.supports_base_11() {
                                        decoder.set_framing(Framing::Chunked);
                                    }
                                    debug!(base11 = h.supports_base_11(), "hello received");
                                    continue;
                                }
                                Ok(_) => {
                                    warn!("client hello carries a session-id; closing");
                                    agent.count_bad_hello();
                                    break 'outer;
                                }
                                Err(e) => {
                                    warn!(error = %e, "bad hello; closing");
                                    agent.count_bad_hello();
                                    break 'outer;
                                }
                            }
                        }
                        let framing = decoder.framing();
                        let rpc = match frame {
                            Frame::Oversized { head, size } => {
                                let echo = message::message_id_from_head(&head).map(|m| vec![("message-id".to_string(), m)]).unwrap_or_default();
                                let err = RpcError::new(ErrorType::Rpc, ErrorTag::TooBig)
                                    .message(format!("message of {size} bytes exceeds the limit of {} bytes", agent.opts.limits.max_message));
                                agent.count_bad_rpc(&info);
                                warn!(size, "oversized message discarded");
                                if send(&mut writer, framing, &message::error_reply(&echo, &[err])).await.is_err() { break 'outer; }
                                continue;
                            }
                            Frame::Message(m) => m,
                        };
                        let bytes_in = rpc.len();
                        let rpc = match message::parse_rpc(rpc) {
                            Incoming::Rpc(rpc) => rpc,
                            Incoming::Invalid { echo_attrs, error } => {
                                agent.count_bad_rpc(&info);
                                debug!(error = %error, "invalid rpc");
                                if send(&mut writer, framing, &message::error_reply(&echo_attrs, &[error])).await.is_err() { break 'outer; }
                                continue;
                            }
                        };
                        let op = rpc.operation.name.clone();
                        let started = std::time::Instant::now();
                        let parse_ms = started.duration_since(received).as_secs_f64() * 1e3;
                        let (a, s) = (Arc::clone(&agent), info.clone());
                        let result = tokio::task::spawn_blocking(move || a.handle(&s, &rpc)).await;
                        let (reply, after) = match result {
                            Ok(r) => r,
                            // The runtime is shutting down (the agent is
                            // stopping): end the session, not an rpc-error
                            // claiming the operation failed.
                            Err(e) if e.is_cancelled() => break 'outer,
                            Err(e) => {
                                warn!(error = %e, "operation panicked");
                                let err = RpcError::new(ErrorType::Application, ErrorTag::OperationFailed).message("internal error");
                                (message::error_reply(&[], &[err]), After::Continue)
                            }
                        };
                        let handled = std::time::Instant::now();
                        let handle_ms = handled.duration_since(started).as_secs_f64() * 1e3;
                        if send(&mut writer, framing, &reply).await.is_err() { break 'outer; }
                        let send_ms = handled.elapsed().as_secs_f64() * 1e3;
                        // recv: first byte to complete frame (mostly the client
                        // sending); parse: XML envelope; handle: the operation
                        // with its reply text; send: framing and writing into
                        // the SSH channel (flow control included).
                        debug!(op = %op, bytes_in, bytes_out = reply.len(), recv_ms, parse_ms, handle_ms, send_ms, "rpc handled");
                        match after {
                            After::Continue => {}
                            After::Close => break 'outer,
                            After::Subscribe => {
                                if events.is_none() {
                                    events = Some(agent.subscribe_events());
                                }
                            }
                        }
                    }
                }
                event = async { match events.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                    match event {
                        Ok(ev) => {
                            let xml = message::notification(&crate::time::rfc3339(ev.time), &ev.xml);
                            agent.count_notification();
                            info.out_notifications.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if send(&mut writer, decoder.framing(), &xml).await.is_err() { break 'outer; }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => warn!(missed = n, "subscriber fell behind; notifications lost"),
                        Err(_) => events = None,
                    }
                }
                _ = killed.changed() => {
                    info!("session killed");
                    break 'outer;
                }
                _ = tokio::time::sleep_until(hello_deadline), if !got_hello => {
                    warn!("no hello in time; closing");
                    agent.count_bad_hello();
                    break 'outer;
                }
            }
        }
        let _ = writer.shutdown().await;
        agent.close_session(id);
        info!("session closed");
    }
    .instrument(span)
    .await
}
