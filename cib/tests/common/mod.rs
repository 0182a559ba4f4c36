//! Helpers shared by the CIB test files.

#![allow(dead_code, reason = "each test file uses some of the helpers")]
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use l45_cib::*;

pub fn new_device(name: &str, ip: &str) -> NewDevice {
    NewDevice {
        name: name.to_owned(),
        address: format!("{ip}:830"),
        username: "l45".to_owned(),
        ssh_key_path: "/etc/l45/nco_ed25519".to_owned(),
        ..NewDevice::default()
    }
}

pub fn cib_with_devices(names: &[&str]) -> Cib {
    let mut cib = Cib::open_in_memory().unwrap();
    for (i, name) in names.iter().enumerate() {
        cib.add_device(&new_device(name, &format!("192.0.2.{}", i + 1)))
            .unwrap();
    }
    cib
}

pub fn t(ms: i64) -> Timestamp {
    Timestamp(1_800_000_000_000 + ms)
}

/// Construct + deploy request + sent + confirmed.
pub fn deployed(cib: &mut Cib, m: NewModule) -> Module {
    let built = cib.construct_module(&m).unwrap();
    let r = cib
        .request(&built.device, built.module_id, Action::Deploy, Some(t(0)))
        .unwrap();
    cib.mark_sent(r.id, t(0)).unwrap();
    cib.mark_confirmed(r.id, t(0)).unwrap();
    cib.module(&built.device, built.module_id).unwrap()
}

/// Everything an operator could observe, to prove a refused call changed nothing.
pub fn snapshot(cib: &Cib) -> String {
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}",
        cib.devices().unwrap(),
        cib.status_summary().unwrap(),
        cib.open_requests(None).unwrap(),
        cib.history(&HistoryFilter::default()).unwrap(),
        cib.alerts(false, 1000).unwrap()
    )
}
