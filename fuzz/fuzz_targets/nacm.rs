//! NACM rules (RFC 8341): a `<nacm>` configuration as libyang accepts it
//! into running, `Nacm::from_running`, then `may`/`may_exec` queries.
//! Input: the XML, then after a NUL byte the query bytes.
#![no_main]

use l45_agent::nacm::{Access, Nacm};
use l45_fuzz::Cursor;
use yang3::data::DataValidationFlags;

const USERS: &[&str] = &["admin", "alice", "bob", "", "nobody"];
const MODULES: &[&str] = &[
    "layer45-customization",
    "ietf-netconf",
    "ietf-netconf-acm",
    "ietf-netconf-monitoring",
    "*",
];
const RPCS: &[&str] = &[
    "get",
    "edit-config",
    "lock",
    "kill-session",
    "delete-config",
    "close-session",
    "report",
    "*",
];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (xml, query) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(xml) = std::str::from_utf8(xml) else {
        return;
    };
    // The agent hands libyang only what its own XML parser accepted
    // (libyang's parser takes SIGSEGV on some malformed documents).
    if l45_netconf_proto::xml::parse(xml.as_bytes()).is_err() {
        return;
    }
    // As the agent parses a peer's <config>: its check for repeated
    // containers and leaves keeps trees libyang cannot validate (it loops
    // or crashes on them) away from validation.
    let Ok(mut tree) = l45_agent::config::edit::content::parse_config(l45_fuzz::ctx(), xml) else {
        return;
    };
    // Running is always valid: the agent never holds an invalid tree.
    if tree.validate(DataValidationFlags::NO_STATE).is_err() {
        return;
    }
    let nacm = Nacm::from_running(&tree);
    let mut q = Cursor::new(query);
    let pick = |q: &mut Cursor, list: &[&'static str]| list[usize::from(q.u8()) % list.len()];
    for _ in 0..4 {
        let user = pick(&mut q, USERS);
        let module = pick(&mut q, MODULES);
        let rpc = pick(&mut q, RPCS);
        let flags = q.u8();
        let access = [Access::Read, Access::Write, Access::Exec][usize::from(flags % 3)];
        let _ = nacm.may_exec(user, module, rpc, flags & 4 != 0);
        let _ = nacm.may(user, module, access, flags & 8 != 0);
        if q.is_empty() {
            break;
        }
    }
});
