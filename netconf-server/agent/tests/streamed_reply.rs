//! A large reply goes out in parts while the operation renders it
//! (`session.rs`, `ops::Body::Render`): through a real session over an
//! in-memory pipe, the full `get` and `get-config` of a few thousand
//! entries arrive as many chunks, each whole UTF-8, that decode to exactly
//! the reply `Agent::handle` gives for the same request; a request after
//! them is answered in order; both framings.

use std::sync::Arc;
use std::time::Duration;

use l45_agent::agent::{Agent, AgentOptions};
use l45_agent::session::decode_rpc;
use l45_netconf_proto::framing::SEND_PART;
use l45_netconf_proto::{Decoder, Frame, Framing};
use l45_tap_control::RecordingTap;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const BASE: &str = "urn:ietf:params:xml:ns:netconf:base:1.0";
const L45: &str = "urn:layer45:params:xml:ns:yang:layer45-customization";
const ENTRIES: u32 = 3000;

fn rpc(id: u32, body: &str) -> String {
    format!("<rpc xmlns=\"{BASE}\" message-id=\"{id}\">{body}</rpc>")
}

fn load() -> String {
    // (a non-ASCII name: parts must not split a character)
    let modules: String = (1..=ENTRIES)
        .map(|i| {
            format!(
                "<module><id>{i}</id><name>m{i}-é€</name><kind>l45:dns-front-tag</kind></module>"
            )
        })
        .collect();
    rpc(
        1,
        &format!(
            "<edit-config><target><running/></target><config><customizations xmlns=\"{L45}\" \
             xmlns:l45=\"{L45}\">{modules}</customizations></config></edit-config>"
        ),
    )
}

/// Reads until the decoder has a whole message; the chunk sizes of a
/// chunked message as they came.
async fn next_message(
    io: &mut DuplexStream,
    dec: &mut Decoder,
    raw: &mut Vec<u8>,
) -> (Vec<u8>, usize) {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        if let Some(frame) = dec.next_frame().expect("framing") {
            let Frame::Message(m) = frame else {
                panic!("oversized reply")
            };
            return (m, 0);
        }
        let n = tokio::time::timeout(Duration::from_secs(60), io.read(&mut buf))
            .await
            .expect("a reply in time")
            .expect("read");
        assert!(n > 0, "session ended");
        raw.extend_from_slice(&buf[..n]);
        dec.push(&buf[..n]);
    }
}

/// The chunks (`\n#len\n…`) of one chunked message in `wire`, whole UTF-8
/// each; returns how many.
fn chunks(wire: &[u8]) -> usize {
    let mut at = 0;
    let mut count = 0;
    while wire[at..].starts_with(b"\n#") && !wire[at..].starts_with(b"\n##\n") {
        let nl = wire[at + 2..]
            .iter()
            .position(|&c| c == b'\n')
            .expect("header")
            + at
            + 2;
        let len: usize = std::str::from_utf8(&wire[at + 2..nl])
            .expect("digits")
            .parse()
            .expect("length");
        let body = &wire[nl + 1..nl + 1 + len];
        std::str::from_utf8(body).expect("a chunk of whole characters");
        assert!(len <= SEND_PART + 3, "chunk of {len} bytes");
        at = nl + 1 + len;
        count += 1;
    }
    assert!(wire[at..].starts_with(b"\n##\n"), "end of chunks");
    count
}

fn run(framing: Framing) {
    let state = tempfile::tempdir().expect("state dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tap = Arc::new(RecordingTap::new(None, false));
    let agent = Agent::new(
        AgentOptions::new(state.path()),
        tap,
        runtime.handle().clone(),
    )
    .expect("agent");
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let session = runtime.spawn(l45_agent::session::run(
        Arc::clone(&agent),
        server,
        "admin".into(),
        None,
    ));
    let requests = [
        load(),
        rpc(2, "<get/>"),
        rpc(3, "<get-config><source><running/></source></get-config>"),
        rpc(4, "<get-config><source><running/></source><filter type=\"subtree\"><nacm xmlns=\"urn:ietf:params:xml:ns:yang:ietf-netconf-acm\"/></filter></get-config>"),
    ];
    runtime.block_on(async {
        let mut dec = Decoder::new(agent.opts.limits);
        let mut raw = Vec::new();
        let (hello, _) = next_message(&mut client, &mut dec, &mut raw).await;
        assert!(String::from_utf8_lossy(&hello).contains("<session-id>"));
        let caps = match framing {
            Framing::Chunked => "urn:ietf:params:netconf:base:1.1",
            Framing::EndOfMessage => "urn:ietf:params:netconf:base:1.0",
        };
        let hello = format!(
            "<hello xmlns=\"{BASE}\"><capabilities><capability>{caps}</capability></capabilities></hello>]]>]]>"
        );
        client.write_all(hello.as_bytes()).await.expect("hello");
        dec.set_framing(framing);
        // A second session's view of the same requests, through `handle`.
        let (info, _killed) = agent.open_session("admin", None).expect("session");
        for request in &requests {
            let framed = l45_netconf_proto::framing::encode(request.as_bytes(), framing);
            client.write_all(&framed).await.expect("request");
            raw.clear();
            let (reply, _) = next_message(&mut client, &mut dec, &mut raw).await;
            let mut d = Decoder::new(agent.opts.limits);
            d.set_framing(framing);
            d.push(&framed);
            let frame = d.next_frame().expect("frame").expect("one frame");
            let parsed = decode_rpc(&agent, &info, frame).expect("rpc");
            let whole = agent.handle(&info, &parsed).0;
            // (the session id differs only in state: none is in these replies
            // but the monitoring data of `get`, compared without it below)
            let reply = String::from_utf8(reply).expect("UTF-8 reply");
            if request.contains("<get/>") {
                let strip = |s: &str| {
                    let a = s.find("<netconf-state").expect("monitoring");
                    let b = s.find("</netconf-state>").expect("monitoring end");
                    format!("{}{}", &s[..a], &s[b..])
                };
                assert_eq!(strip(&reply), strip(&whole));
                assert_eq!(reply.matches("<socket-count>").count(), ENTRIES as usize);
            } else {
                assert_eq!(reply, whole);
            }
            if framing == Framing::Chunked && reply.len() > 4 * SEND_PART {
                assert!(chunks(&raw) >= reply.len() / SEND_PART, "{}", chunks(&raw));
            }
        }
        drop(client);
    });
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), session).await })
        .expect("session ends with its peer")
        .expect("session task");
}

#[test]
fn large_replies_stream_in_whole_chunks_chunked() {
    run(Framing::Chunked);
}

#[test]
fn large_replies_stream_end_of_message() {
    run(Framing::EndOfMessage);
}
