//! The NCO's NETCONF client against a scripted fake SSH server, for what the
//! real agent never does: broken framing, a hello without a session-id,
//! prefixed replies.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use l45_nco::netconf::{ConnectOptions, HostKeyPolicy, NetconfError, Reply, Session};
use russh::server::Server as _;

use common::*;

// ===== a scripted fake server, for what the real agent never does =====

#[derive(Clone, Copy, PartialEq)]
enum Fake {
    /// Breaks the chunked framing on the first RPC.
    BadFraming,
    /// Hello without a session-id.
    NoSessionId,
    /// Answers every RPC with a prefixed `<nc:rpc-reply>` holding data.
    Prefixed,
}

struct FakeServer(Fake);

struct FakeHandler {
    mode: Fake,
    channels: Vec<russh::Channel<russh::server::Msg>>,
    decoder: l45_netconf_proto::Decoder,
    got_hello: bool,
}

impl russh::server::Server for FakeServer {
    type Handler = FakeHandler;
    fn new_client(&mut self, _: Option<SocketAddr>) -> FakeHandler {
        FakeHandler {
            mode: self.0,
            channels: Vec::new(),
            decoder: l45_netconf_proto::Decoder::new(l45_netconf_proto::Limits::default()),
            got_hello: false,
        }
    }
}

impl russh::server::Handler for FakeHandler {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _: &str,
        _: russh::server::PublicKeyOffer<'_>,
    ) -> Result<russh::server::Auth, Self::Error> {
        Ok(russh::server::Auth::Accept)
    }

    async fn auth_publickey(
        &mut self,
        _: &str,
        _: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<russh::server::Auth, Self::Error> {
        Ok(russh::server::Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: russh::Channel<russh::server::Msg>,
        reply: russh::server::ChannelOpenHandle,
        _: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        self.channels.push(channel);
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        id: russh::ChannelId,
        _: &str,
        session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        use l45_netconf_proto::message::{Hello, CAP_BASE_10, CAP_BASE_11};
        session.channel_success(id)?;
        let hello = Hello {
            capabilities: vec![CAP_BASE_10.into(), CAP_BASE_11.into()],
            session_id: (self.mode != Fake::NoSessionId).then_some(42),
        };
        session.data(
            id,
            l45_netconf_proto::framing::encode(
                hello.to_xml().as_bytes(),
                l45_netconf_proto::Framing::EndOfMessage,
            ),
        )?;
        Ok(())
    }

    async fn data(
        &mut self,
        id: russh::ChannelId,
        data: &[u8],
        session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        use l45_netconf_proto::message::{parse_rpc, Incoming};
        use l45_netconf_proto::{Frame, Framing, BASE_NS};
        self.decoder.push(data);
        while let Ok(Some(Frame::Message(m))) = self.decoder.next_frame() {
            if !self.got_hello {
                self.got_hello = true;
                self.decoder.set_framing(Framing::Chunked);
                continue;
            }
            match self.mode {
                Fake::BadFraming => session.data(id, b"\n#zz\n<x/>".to_vec())?,
                Fake::Prefixed => {
                    let Incoming::Rpc(rpc) = parse_rpc(m) else {
                        continue;
                    };
                    let mid = rpc.message_id.unwrap_or_default();
                    let reply = format!(
                        r#"<?xml version="1.0"?><nc:rpc-reply xmlns:nc="{BASE_NS}" message-id="{mid}"><nc:data><x:a xmlns:x="urn:x">1</x:a></nc:data></nc:rpc-reply>"#
                    );
                    session.data(
                        id,
                        l45_netconf_proto::framing::encode(reply.as_bytes(), Framing::Chunked),
                    )?;
                }
                Fake::NoSessionId => {}
            }
        }
        Ok(())
    }
}

async fn fake_server(mode: Fake) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = Arc::new(russh::server::Config {
        keys: vec![host_key()],
        nodelay: true,
        ..Default::default()
    });
    let task = tokio::spawn(async move {
        let _ = FakeServer(mode).run_on_socket(config, &listener).await;
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_server_framing_hello_and_prefixed_replies() {
    let key = client_key();
    let opts = |addr: SocketAddr| {
        let mut o = ConnectOptions::new(addr, "x", &key.path, HostKeyPolicy::TrustOnFirstUse);
        o.rpc_timeout = Duration::from_secs(10);
        o
    };

    // Broken chunk header: a typed framing error, the session is over.
    let (addr, task) = fake_server(Fake::BadFraming).await;
    let s = within(20, Session::connect(opts(addr)))
        .await
        .expect("connect");
    assert_eq!(s.session_id(), 42);
    let r = within(5, s.rpc("<get/>")).await;
    assert!(matches!(r, Err(NetconfError::Framing(_))), "{r:?}");
    assert!(s.is_closed());
    assert!(matches!(
        s.rpc("<get/>").await,
        Err(NetconfError::Framing(_))
    ));
    task.abort();

    // Hello without session-id.
    let (addr, task) = fake_server(Fake::NoSessionId).await;
    let r = within(20, Session::connect(opts(addr))).await;
    assert!(matches!(r, Err(NetconfError::Hello(_))), "{r:?}");
    task.abort();

    // Prefixed replies are parsed by namespace.
    let (addr, task) = fake_server(Fake::Prefixed).await;
    let s = within(20, Session::connect(opts(addr)))
        .await
        .expect("connect");
    let data = s.get(None).await.expect("get");
    assert!(
        data.starts_with("<x:a") && data.contains(">1</x:a>"),
        "{data}"
    );
    assert!(matches!(s.rpc("<get/>").await, Ok(Reply::Data(d)) if d.starts_with("<nc:data")));
    task.abort();
}
