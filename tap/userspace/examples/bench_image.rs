//! The cost of running a kind from a module image rather than built in:
//! the example kind `udp-xor-mask`, once loaded from its image (as a
//! tapped process loads it: `l45_tap_shm::image::load`, then
//! `Kind::External` through `Instance`, the tap's path) and once linked
//! in and called directly (the same source, inlined). Each round masks
//! (client send) and unmasks (server recv) `N` DNS-query-sized datagrams;
//! prints the median ns per datagram of each and their ratio.
//!
//! `bench_image IMAGE [ROUNDS] [N]` (IMAGE: the built libudp_xor_mask.so)
use std::hint::black_box;
use std::time::Instant;

use l45_kind_sdk::ModuleKind;
use l45_modules::{Ctx, Instance, Kind, RecvVerdict, Role, SendVerdict, SocketState, Transport};
use l45_tap_shm::image;
use udp_xor_mask::UdpXorMask;

/// A DNS query for `example.test`, type A (what the DNS benchmark sends).
const QUERY: &[u8] =
    b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x04test\x00\x00\x01\x00\x01";
const KEY: &str = "a55a01";

fn ctx(role: Role) -> Ctx<'static> {
    Ctx {
        role,
        transport: Transport::Datagram,
        thread_name: b"bench",
        process_name: b"bench",
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().ok_or("usage: bench_image IMAGE [ROUNDS] [N]")?;
    let rounds: usize = args.get(1).map_or(Ok(21), |s| s.parse())?;
    let n: usize = args.get(2).map_or(Ok(2_000_000), |s| s.parse())?;
    let bytes = std::fs::read(path)?;
    let sha = image::sha256(&bytes);
    let external = image::load(&bytes, &sha, "udp-xor-mask")?;
    let module = Instance::new(1, Kind::External(external), [("key", KEY)])?;
    let params = UdpXorMask::parse(&[("key", KEY)]).map_err(|e| e.to_string())?;
    let (client, server) = (ctx(Role::Client), ctx(Role::Server));
    let mut wire = [0u8; 128];
    let mut back = [0u8; 128];

    let image_round = |wire: &mut [u8], back: &mut [u8]| {
        let mut st = SocketState::default();
        let start = Instant::now();
        for _ in 0..n {
            let SendVerdict::Customized(w) = module.send(&mut st, &client, black_box(QUERY), wire)
            else {
                panic!("not customized")
            };
            let RecvVerdict::Customized(r) = module.recv(&mut st, &server, &wire[..w], back) else {
                panic!("not recognised")
            };
            black_box(&back[..r]);
        }
        start.elapsed().as_nanos() as f64 / n as f64
    };
    let builtin_round = |wire: &mut [u8], back: &mut [u8]| {
        let start = Instant::now();
        for _ in 0..n {
            let SendVerdict::Customized(w) =
                UdpXorMask::send(&params, &mut (), &client, black_box(QUERY), wire)
            else {
                panic!("not customized")
            };
            let RecvVerdict::Customized(r) =
                UdpXorMask::recv(&params, &mut (), &server, &wire[..w], back)
            else {
                panic!("not recognised")
            };
            black_box(&back[..r]);
        }
        start.elapsed().as_nanos() as f64 / n as f64
    };
    let (mut img, mut built) = (Vec::new(), Vec::new());
    // Alternating rounds: drift in the machine's load hits both alike.
    for _ in 0..rounds {
        img.push(image_round(&mut wire, &mut back));
        built.push(builtin_round(&mut wire, &mut back));
    }
    let (i, b) = (median(img), median(built));
    println!(
        "udp-xor-mask, {} B query, send+recv per datagram: image {i:.1} ns, built in {b:.1} ns, ratio {:.3} ({rounds} rounds of {n})",
        QUERY.len(),
        i / b
    );
    Ok(())
}
