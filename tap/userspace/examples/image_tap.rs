//! A stand-in for the agent's module-image path, for tests and benchmarks:
//! it creates the user-space tap's control area, loads a stored module
//! image with `TapControl::load_kind` — what the agent does after
//! `install-module` verified it — and commits one module, so the image runs
//! in real tapped processes (`tests/images/`, `tools/bench_image.py`). It
//! holds the control area until its standard input closes, and answers a
//! line `stats` with the module's counters.
//!
//! ```text
//! image_tap CONTROL [--image STORED-IMAGE KIND SHA256] [--match KEY=VALUE]... MODULE-KIND [NAME=VALUE]...
//! ```
//! `--image` loads a kind first; the module is of MODULE-KIND (an image's
//! kind or a built-in one) with the parameters given. `--match` keys:
//! `process-name`, `destination-port`, `source-port` (protocol is UDP).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use l45_tap_control::{
    Attach, Change, KindImage, MatchRules, ModuleConfig, Protocol, TapControl, Transaction,
};
use l45_tap_userspace::UserspaceTap;

const USAGE: &str = "usage: image_tap CONTROL [--image STORED-IMAGE KIND SHA256] \
                     [--match KEY=VALUE]... MODULE-KIND [NAME=VALUE]...";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let control = args.next().ok_or(USAGE)?;
    let tap = UserspaceTap::new(Path::new(&control))?;
    let mut matching = MatchRules {
        protocol: Some(Protocol::Udp),
        ..MatchRules::default()
    };
    let kind = loop {
        match args.next().ok_or(USAGE)?.as_str() {
            "--image" => {
                let (Some(path), Some(kind), Some(sha256_hex)) =
                    (args.next(), args.next(), args.next())
                else {
                    return Err(USAGE.into());
                };
                let target = tap
                    .image_target()
                    .ok_or("this tap loads no module images")?;
                tap.load_kind(&KindImage {
                    kind,
                    target,
                    sha256_hex,
                    path: PathBuf::from(path),
                })?;
            }
            "--match" => {
                let rule = args.next().ok_or(USAGE)?;
                let (key, value) = rule.split_once('=').ok_or(USAGE)?;
                match key {
                    "process-name" => matching.process_name = Some(value.to_string()),
                    "destination-port" => matching.destination_port = Some(value.parse()?),
                    "source-port" => matching.source_port = Some(value.parse()?),
                    _ => return Err(format!("unknown match key {key}").into()),
                }
            }
            kind => break kind.to_string(),
        }
    };
    let parameters = args
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or(USAGE)
        })
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    let txn = Transaction {
        changes: vec![Change::Register(ModuleConfig {
            id: 1,
            name: "m1".into(),
            kind,
            priority: 10,
            activated: true,
            deprecated: false,
            attach: Attach::NewSockets,
            matching,
            parameters,
            key: None,
        })],
    };
    tap.prepare(&txn)?;
    tap.apply(&txn);
    println!("ready");
    // One line per "stats" read on standard input: the module's counters.
    for line in std::io::stdin().lines() {
        if line?.trim() == "stats" {
            let st = tap.module_stats();
            let m = st.iter().find(|m| m.id == 1).ok_or("module 1 is gone")?;
            println!(
                "errors={} messages_sent={} messages_received={}",
                m.errors, m.messages_sent, m.messages_received
            );
        }
    }
    Ok(())
}
