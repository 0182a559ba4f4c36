//! The module table as tapped processes read it: slots of arbitrary bytes
//! published by the writer, read back with `ShmReader::snapshot_used`,
//! parsed by the engine (`Config::from_used`: kinds, parameters, match
//! rules), matched against a socket and run on one send and one receive.
#![no_main]

use std::net::SocketAddr;
use std::path::PathBuf;

use l45_fuzz::Cursor;
use l45_modules::Role;
use l45_tap_engine::{Chain, Config, SocketView};
use l45_tap_shm::{AddrMatch, ModuleSlot, ShmReader, ShmWriter, MAX_MODULES, PARAMS_LEN};

struct Area {
    writer: ShmWriter,
    reader: ShmReader,
}

fn area() -> Area {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!("l45-fuzz-table-{}", std::process::id()));
    let writer = ShmWriter::create(&path).expect("control area");
    let reader = ShmReader::open(&path).expect("reader");
    // The mappings outlive the names.
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(l45_tap_shm::lock_path(&path));
    Area { writer, reader }
}

thread_local! {
    static AREA: Area = area();
}

fn addr(c: &mut Cursor) -> AddrMatch {
    AddrMatch {
        family: c.u8(),
        prefix: c.u8(),
        _pad: [0; 2],
        addr: c.array(),
    }
}

fn slot(c: &mut Cursor) -> ModuleSlot {
    let mut params = [0u8; PARAMS_LEN];
    let len = usize::from(c_len(c));
    let p = c.take(len);
    params[..p.len()].copy_from_slice(p);
    ModuleSlot {
        flags: c.u32(),
        id: c.u32(),
        kind: c.u16(),
        priority: c.u16(),
        protocol: c.u8(),
        _pad: [0; 3],
        source: addr(c),
        destination: addr(c),
        source_port: c.u16(),
        destination_port: c.u16(),
        thread_name: c.array(),
        process_name: c.array(),
        params,
        revision: c.u32(),
        _reserved: 0,
    }
}

/// Parameters are text: their length comes first so short inputs still
/// reach the fields after them.
fn c_len(c: &mut Cursor) -> u8 {
    c.u8() % (PARAMS_LEN as u8)
}

fn sockaddr(c: &mut Cursor) -> Option<SocketAddr> {
    match c.u8() % 3 {
        0 => None,
        1 => Some((std::net::Ipv4Addr::from(c.array::<4>()), c.u16()).into()),
        _ => Some((std::net::Ipv6Addr::from(c.array::<16>()), c.u16()).into()),
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let count = usize::from(c.u8()) % 8 + 1;
    let mut table = Box::new([ModuleSlot::default(); MAX_MODULES]);
    for _ in 0..count {
        let index = usize::from(c.u8()) % MAX_MODULES;
        table[index] = slot(&mut c);
    }
    let protocol = c.u8();
    let role = if c.bool() { Role::Client } else { Role::Server };
    let local = sockaddr(&mut c);
    let remote = sockaddr(&mut c);
    let names: [u8; 32] = c.array();
    let payload = c.rest();

    AREA.with(|a| {
        a.writer.publish(&table);
        // None: the agent kept the generation odd past the reader's bound.
        let Some((generation, used)) = a.reader.snapshot_used() else {
            return;
        };
        let config = Config::from_used(generation, used.iter().map(|(i, s)| (*i, s)));
        let view = SocketView {
            protocol,
            role,
            local,
            remote,
            thread_name: l45_tap_shm::name_bytes(&names[..16]),
            process_name: l45_tap_shm::name_bytes(&names[16..]),
        };
        let _ = config.needs(protocol, view.process_name);
        let candidates = config.candidates(protocol, view.process_name);
        let _ = config.any_attaches(&candidates, &view);
        let _ = config.peer_port_filter(&candidates);
        let mut chain = Chain::first_sight(&config, &view);
        let ctx = view.ctx();
        let mut out = Vec::new();
        let _ = chain.send(&ctx, payload, &mut out);
        let _ = chain.recv(&ctx, payload, &mut out);
        let _ = chain.recv_eof(&mut out);
        let _ = chain.refresh(&config, &view);
    });
});
