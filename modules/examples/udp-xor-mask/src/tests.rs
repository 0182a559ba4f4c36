//! The kind through its exported table, as a tap runs it.
use super::*;
use l45_kind_sdk::modules::{Instance, Kind, SocketState};

const CLIENT: Ctx<'static> = Ctx {
    role: Role::Client,
    transport: Transport::Datagram,
    thread_name: b"t",
    process_name: b"p",
};
const SERVER: Ctx<'static> = Ctx {
    role: Role::Server,
    ..CLIENT
};

fn kind() -> Kind {
    Kind::External(KIND_TABLE.check().expect("the exported table is valid"))
}

fn module(key: &str) -> Instance {
    Instance::new(7, kind(), [("key", key)]).expect("valid key")
}

#[test]
fn masked_on_the_wire_and_delivered_intact() {
    let m = module("a55a01");
    let payload = b"\x12\x34 any bytes at all \x00\xff";
    let mut st = SocketState::default();
    let mut wire = vec![0u8; m.send_capacity(payload.len())];
    let n = match m.send(&mut st, &CLIENT, payload, &mut wire) {
        SendVerdict::Customized(n) => n,
        v => panic!("{v:?}"),
    };
    assert_eq!(n, MARKER.len() + payload.len());
    assert_eq!(&wire[..4], &MARKER);
    let key = [0xa5, 0x5a, 0x01];
    for (i, (w, p)) in wire[4..n].iter().zip(payload).enumerate() {
        assert_eq!(*w, p ^ key[i % 3], "byte {i}");
    }
    let mut back = vec![0u8; m.recv_capacity(n)];
    assert_eq!(
        m.recv(&mut st, &SERVER, &wire[..n], &mut back),
        RecvVerdict::Customized(payload.len())
    );
    assert_eq!(&back[..payload.len()], payload);
    // It keeps no socket state: the state is as it was.
    assert_eq!(st, SocketState::default());
    assert!(!m.keeps_socket_state());
}

#[test]
fn every_key_length_round_trips() {
    for len in 1..=KEY_MAX {
        let hex: String = (0..len).map(|i| format!("{:02x}", i * 7 + 1)).collect();
        let m = module(&hex);
        let payload: Vec<u8> = (0..100u8).collect();
        let mut st = SocketState::default();
        let mut wire = [0u8; 128];
        let SendVerdict::Customized(n) = m.send(&mut st, &CLIENT, &payload, &mut wire) else {
            panic!("not customized")
        };
        let mut back = [0u8; 128];
        assert_eq!(
            m.recv(&mut st, &SERVER, &wire[..n], &mut back),
            RecvVerdict::Customized(100)
        );
        assert_eq!(&back[..100], &payload[..], "key of {len} bytes");
    }
}

#[test]
fn bad_parameters_are_refused_with_a_reason() {
    let refused = |pairs: &[(&str, &str)]| {
        Instance::new(1, kind(), pairs.iter().copied())
            .expect_err("refused")
            .to_string()
    };
    assert_eq!(refused(&[]), "key is required (1-32 bytes as hex)");
    assert_eq!(
        refused(&[("key", "")]),
        "key must be 2-64 hex digits (1-32 bytes)"
    );
    assert_eq!(
        refused(&[("key", "abc")]),
        "key must be 2-64 hex digits (1-32 bytes)"
    );
    assert_eq!(
        refused(&[("key", &"00".repeat(33))]),
        "key must be 2-64 hex digits (1-32 bytes)"
    );
    assert_eq!(refused(&[("key", "zz")]), "key must be hex digits only");
    assert_eq!(
        refused(&[("key", "00"), ("colour", "red")]),
        "udp-xor-mask has no parameter colour (only key)"
    );
    assert!(Instance::new(1, kind(), [("key", &*"fF".repeat(32))]).is_ok());
}

#[test]
fn tiny_buffers_and_foreign_traffic_are_not_mine() {
    let m = module("ff");
    let mut st = SocketState::default();
    for cap in 0..6 {
        let mut out = vec![0u8; cap];
        let v = m.send(&mut st, &CLIENT, b"ab", &mut out);
        if cap >= 6 {
            assert_eq!(v, SendVerdict::Customized(6));
        } else {
            assert_eq!(v, SendVerdict::NotMine, "output of {cap} bytes");
        }
    }
    let mut out = [0u8; 64];
    // No marker, a cut marker, an empty datagram: someone else's.
    for wire in [&b"plain dns query"[..], b"L45", b""] {
        assert_eq!(
            m.recv(&mut st, &SERVER, wire, &mut out),
            RecvVerdict::NotMine
        );
    }
    // A bare marker is an empty masked datagram.
    assert_eq!(
        m.recv(&mut st, &SERVER, &MARKER, &mut out),
        RecvVerdict::Customized(0)
    );
    // Too small an output for the unmasked bytes.
    assert_eq!(
        m.recv(&mut st, &SERVER, b"L45xabc", &mut out[..2]),
        RecvVerdict::NotMine
    );
}

#[test]
fn it_acts_only_where_it_says() {
    let m = module("01");
    let mut st = SocketState::default();
    let mut out = [0u8; 64];
    for role in [Role::Client, Role::Server] {
        for transport in [Transport::Stream, Transport::Datagram] {
            let ctx = Ctx {
                role,
                transport,
                ..CLIENT
            };
            let d = m.acts_on(role, transport);
            assert_eq!(
                d.send,
                role == Role::Client && transport == Transport::Datagram
            );
            assert_eq!(
                d.recv,
                role == Role::Server && transport == Transport::Datagram
            );
            if !d.send {
                assert_eq!(
                    m.send(&mut st, &ctx, b"L45xab", &mut out),
                    SendVerdict::NotMine
                );
            }
            if !d.recv {
                assert_eq!(
                    m.recv(&mut st, &ctx, b"L45xab", &mut out),
                    RecvVerdict::NotMine
                );
            }
        }
    }
    assert_eq!(m.splice(), None);
    assert!(!m.required_on_recv(&SERVER));
}
