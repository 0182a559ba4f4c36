//! A test stand-in for the agent's module-image path: it creates the
//! user-space tap's control area, loads a stored module image with
//! `TapControl::load_kind` — what the agent does after `install-module`
//! verified it — and commits one UDP module of that kind, so the image
//! runs in real tapped processes (`tests/images/`). It holds the control
//! area until its standard input closes.
//!
//! `image_tap CONTROL STORED-IMAGE KIND SHA256 KEY`
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use l45_tap_control::{
    Attach, Change, KindImage, MatchRules, ModuleConfig, Protocol, TapControl, Transaction,
};
use l45_tap_userspace::UserspaceTap;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [control, image, kind, sha256, key] = args.as_slice() else {
        return Err("usage: image_tap CONTROL STORED-IMAGE KIND SHA256 KEY".into());
    };
    let tap = UserspaceTap::new(Path::new(control))?;
    let target = tap
        .image_target()
        .ok_or("this tap loads no module images")?;
    tap.load_kind(&KindImage {
        kind: kind.clone(),
        target,
        sha256_hex: sha256.clone(),
        path: PathBuf::from(image),
    })?;
    let txn = Transaction {
        changes: vec![Change::Register(ModuleConfig {
            id: 1,
            name: "masked".into(),
            kind: kind.clone(),
            priority: 10,
            activated: true,
            deprecated: false,
            attach: Attach::NewSockets,
            matching: MatchRules {
                protocol: Some(Protocol::Udp),
                ..MatchRules::default()
            },
            parameters: BTreeMap::from([("key".to_string(), key.clone())]),
            key: None,
        })],
    };
    tap.prepare(&txn)?;
    tap.apply(&txn);
    println!("ready");
    let mut rest = Vec::new();
    std::io::stdin().read_to_end(&mut rest)?;
    Ok(())
}
