//! The cost of running a kind from a module image rather than built in:
//! the example kind `udp-xor-mask`, once loaded from its image (`dlopen`,
//! its `l45_kind_v1` table checked by `ExternalKind::new`, then run as
//! `Kind::External` through `Instance`: the taps' path) and once linked in
//! and called directly (the same source, inlined). Each round masks
//! (client send) and unmasks (server recv) `N` DNS-query-sized datagrams;
//! prints the median ns per datagram of each and their ratio.
//!
//! `cargo run --release --features std --example bench_image -- IMAGE [ROUNDS] [N]`
//! (IMAGE: the built `libudp_xor_mask.so`)
use std::ffi::{c_char, c_int, c_void, CString};
use std::hint::black_box;
use std::time::Instant;

use l45_kind_sdk::modules::abi::{ExternalKind, KindV1};
use l45_kind_sdk::modules::{Instance, Kind, SocketState};
use l45_kind_sdk::{Ctx, ModuleKind, RecvVerdict, Role, SendVerdict, Transport};
use udp_xor_mask::UdpXorMask;

extern "C" {
    fn dlopen(path: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, name: *const c_char) -> *mut c_void;
}
const RTLD_NOW: c_int = 2;

/// The image's kind, loaded for the rest of the process.
fn load(path: &str) -> Result<ExternalKind, Box<dyn std::error::Error>> {
    let path = CString::new(path)?;
    // SAFETY: a NUL-terminated path; the image is the one this crate built.
    let handle = unsafe { dlopen(path.as_ptr(), RTLD_NOW) };
    if handle.is_null() {
        return Err("dlopen failed".into());
    }
    // SAFETY: a live handle (never closed) and a NUL-terminated name.
    let table = unsafe { dlsym(handle, c"l45_kind_v1".as_ptr()) }.cast::<KindV1>();
    // SAFETY: the table of an image that stays loaded, built by the SDK.
    Ok(unsafe { ExternalKind::new(table) }.map_err(|e| e.to_string())?)
}

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
    let path = args
        .first()
        .ok_or("usage: bench_image IMAGE [ROUNDS] [N]")?;
    let rounds: usize = args.get(1).map_or(Ok(21), |s| s.parse())?;
    let n: usize = args.get(2).map_or(Ok(2_000_000), |s| s.parse())?;
    let external = load(path)?;
    let module =
        Instance::new(1, Kind::External(external), [("key", KEY)]).map_err(|e| e.to_string())?;
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
