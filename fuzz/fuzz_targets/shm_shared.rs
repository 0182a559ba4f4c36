//! What tapped processes (possibly hostile, of other users) write into the
//! shared part — socket records and statistics — read back by the agent's
//! user-space tap (`sockets`, `module_stats`, `housekeeping`). Writes go
//! through the process-side API, with forged pids, indices and records and
//! arbitrary counters.
#![no_main]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use l45_fuzz::Cursor;
use l45_tap_control::{Attach, Change, MatchRules, ModuleConfig, TapControl, Transaction};
use l45_tap_shm::{ShmReader, SockAddr, SocketRecord, MAX_CHAIN, MAX_SOCKETS};
use l45_tap_userspace::UserspaceTap;

fn module(id: u32) -> ModuleConfig {
    ModuleConfig {
        id,
        name: format!("m{id}"),
        kind: "stream-tag".into(),
        priority: 100,
        activated: true,
        deprecated: false,
        attach: Attach::Immediate,
        matching: MatchRules::default(),
        parameters: BTreeMap::from([("tag".to_string(), "TT".to_string())]),
        key: None,
    }
}

fn sockaddr(c: &mut Cursor) -> SockAddr {
    SockAddr {
        family: c.u8(),
        _pad: 0,
        port: c.u16(),
        addr: c.array(),
    }
}

fn record(c: &mut Cursor) -> SocketRecord {
    let mut modules = [0u32; MAX_CHAIN];
    for m in &mut modules {
        // Mostly the registered ids, so counts land on real modules.
        *m = match c.u8() {
            0 => 0,
            b @ 1..=3 => u32::from(b),
            _ => c.u32(),
        };
    }
    SocketRecord {
        fd: c.u32() as i32,
        protocol: c.u8(),
        role: c.u8(),
        _pad: [0; 2],
        tid: c.u32(),
        local: sockaddr(c),
        remote: sockaddr(c),
        thread_name: c.array(),
        process_name: c.array(),
        modules,
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    // A fresh area per input: the fuzzer needs runs that do not depend on
    // the ones before.
    let path = dir.join(format!("l45-fuzz-shared-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let tap = UserspaceTap::new(&path).expect("control area");
    let process = ShmReader::open(&path).expect("reader");
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(l45_tap_shm::lock_path(&path));
    let txn = Transaction {
        changes: (1..=3).map(|id| Change::Register(module(id))).collect(),
    };
    tap.prepare(&txn).expect("prepare");
    tap.apply(&txn);
    let before = tap.module_stats().len();

    let mut c = Cursor::new(data);
    while !c.is_empty() {
        match c.u8() % 7 {
            0 => {
                let _ = process.claim_socket(c.u32());
            }
            1 | 2 => {
                let index = usize::from(c.u16()) % (MAX_SOCKETS + 1);
                let pid = c.u32();
                let r = record(&mut c);
                process.write_socket(index, pid, &r);
            }
            3 => {
                let index = usize::from(c.u16()) % (MAX_SOCKETS + 1);
                let pid = c.u32();
                match c.u8() % 3 {
                    0 => process.withdraw_socket(index, pid),
                    1 => process.restore_socket(index, pid),
                    _ => process.release_socket(index, pid),
                }
            }
            4 => {
                if let Some(s) = process.stats(usize::from(c.u8())) {
                    s.id.store(c.u32(), Ordering::Relaxed);
                    s.bytes_sent.store(c.u64(), Ordering::Relaxed);
                    s.messages_received.store(c.u64(), Ordering::Relaxed);
                    s.errors.fetch_add(c.u64(), Ordering::Relaxed);
                    s.active_ts_ns.store(c.u64(), Ordering::Relaxed);
                }
            }
            5 => {
                let _ = tap.sockets();
            }
            _ => tap.housekeeping(),
        }
    }
    let _ = tap.sockets();
    let stats = tap.module_stats();
    assert_eq!(
        stats.len(),
        before,
        "forged records changed the module list"
    );
    tap.housekeeping();
    // Nothing a process writes reaches the table the agent publishes.
    let used = process.snapshot_used().map(|(_, u)| u.len());
    assert_eq!(used, Some(3), "the module table changed under the agent");
});
