//! edit-config as the agent runs it: the `<rpc>` envelope, `EditConfig`'s
//! parameters and `config::edit::compute` on an empty datastore, with the
//! native engine first or libyang only (the input's first byte picks).
#![no_main]

use l45_agent::config::edit::{self, EditConfig, Engine, WriteAccess};
use l45_agent::datastore::{Datastore, Ds};
use l45_netconf_proto::message::{parse_rpc, Incoming, BASE_NS};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, message)) = data.split_first() else {
        return;
    };
    let ctx = l45_fuzz::ctx();
    let Incoming::Rpc(rpc) = parse_rpc(message.to_vec()) else {
        return;
    };
    let target = match rpc
        .operation
        .child(BASE_NS, "target")
        .and_then(|t| t.child(BASE_NS, "candidate"))
    {
        Some(_) => Datastore::Candidate,
        None => Datastore::Running,
    };
    let Ok(request) = EditConfig::parse(&rpc, target) else {
        return;
    };
    let engine = if pick & 1 == 0 {
        Engine::Auto
    } else {
        Engine::LibyangOnly
    };
    let access = WriteAccess {
        module: true,
        keys: pick & 2 == 0,
    };
    let current = Ds::new(ctx);
    let _ = edit::compute(ctx, engine, &request, &current, access, &|_| Ok(()));
});
