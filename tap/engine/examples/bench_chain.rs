//! The built-in kinds' per-datagram path through the engine, for comparing
//! builds (e.g. before and after a change of `Params`/`Instance`): a chain
//! of one DNS module — the end tag (a module call with a copy) or the
//! front tag — runs the client's send and the server's receive of a DNS
//! query `N` times a round; also first sight (matching a new socket, which
//! copies the module's `Instance` into the socket's chain). Prints the
//! median ns of each over the rounds.
//!
//! `cargo run --release -p l45-tap-engine --example bench_chain -- [ROUNDS] [N]`
use std::hint::black_box;
use std::time::Instant;

use l45_modules::{Kind, Role};
use l45_tap_engine::{Chain, Config, SocketView};
use l45_tap_shm::{flags, ModuleSlot, MAX_MODULES, PROTO_UDP};

const QUERY: &[u8] =
    b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x04test\x00\x00\x01\x00\x01";

fn config(kind: Kind) -> Config {
    let mut table = [ModuleSlot::default(); MAX_MODULES];
    table[0] = ModuleSlot {
        flags: flags::USED | flags::ACTIVATED,
        id: 1,
        kind: kind.code(),
        priority: 10,
        revision: 1,
        ..ModuleSlot::default()
    };
    Config::from_slots(2, &table)
}

fn view(role: Role) -> SocketView<'static> {
    SocketView {
        protocol: PROTO_UDP,
        role,
        local: "127.0.0.1:5353".parse().ok(),
        remote: "127.0.0.1:53".parse().ok(),
        thread_name: b"dig",
        process_name: b"dig",
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rounds = args.first().copied().unwrap_or(21);
    let n = args.get(1).copied().unwrap_or(2_000_000);
    println!(
        "Instance {} bytes, SocketState {} bytes",
        std::mem::size_of::<l45_modules::Instance>(),
        std::mem::size_of::<l45_modules::SocketState>()
    );
    for kind in [Kind::DnsEndTag, Kind::DnsFrontTag] {
        let config = config(kind);
        let (client, server) = (view(Role::Client), view(Role::Server));
        let mut send_chain = Chain::first_sight(&config, &client);
        let mut recv_chain = Chain::first_sight(&config, &server);
        let (cctx, sctx) = (client.ctx(), server.ctx());
        let mut wire = [0u8; 256];
        let mut back = [0u8; 256];
        let mut datagram = Vec::new();
        let mut sight = Vec::new();
        for _ in 0..rounds {
            let start = Instant::now();
            for _ in 0..n {
                let len = match send_chain.send_slice(&cctx, black_box(QUERY), &mut wire) {
                    l45_tap_engine::SendOutcome::Customized { len, .. } => len,
                    other => panic!("{other:?}"),
                };
                let got = recv_chain.recv_slice(&sctx, &wire[..len], &mut back);
                black_box(got);
            }
            datagram.push(start.elapsed().as_nanos() as f64 / n as f64);
            let start = Instant::now();
            let mut chain = Chain::default();
            let candidates = config.candidates(PROTO_UDP, b"dig");
            for _ in 0..n / 10 {
                chain.attach_first_sight(&config, black_box(&candidates), &client);
                black_box(&chain);
            }
            sight.push(start.elapsed().as_nanos() as f64 / (n / 10) as f64);
        }
        println!(
            "{}: send+recv {:.1} ns per datagram, first sight {:.1} ns ({rounds} rounds of {n})",
            kind.name(),
            median(datagram),
            median(sight)
        );
    }
}
