//! A socket as the shared socket table shows it, from which the agent
//! counts each module's sockets.

use l45_modules::Role;
use l45_tap_engine::protocol_of;
use l45_tap_shm::{SockAddr, SocketRecord, NAME_LEN};
use libc::c_int;

use super::addr::name_of;
use super::record::Sock;
use crate::process;

/// Publishes (or withdraws) the socket in the shared socket table.
pub(super) fn publish(fd: c_int, s: &mut Sock) {
    let Some(shm) = process::shm() else { return };
    let me = process::pid();
    if s.chain.is_empty() {
        if let Some(i) = s.table_slot.take() {
            shm.release_socket(i, me);
        }
        return;
    }
    if s.table_slot.is_none() {
        s.table_slot = shm.claim_socket(me);
        if s.remote.is_none() && !s.known.remote {
            // Sighted without a record (or no rule needed the peer): the
            // table shows it, so look it up once, now that a module is on.
            s.known.remote = true;
            s.remote = name_of(fd, true);
        }
    }
    let Some(i) = s.table_slot else { return };
    if s.tid == 0 {
        s.tid = process::tid();
    }
    let record = SocketRecord {
        fd,
        protocol: protocol_of(s.stream),
        role: match s.role {
            Some(Role::Client) => 1,
            Some(Role::Server) => 2,
            None => 0,
        },
        _pad: [0; 2],
        tid: s.tid,
        local: s.local.as_ref().map(SockAddr::from_std).unwrap_or_default(),
        remote: s
            .remote
            .as_ref()
            .map(SockAddr::from_std)
            .unwrap_or_default(),
        // Known only if a rule needed it; else the agent reads it, as it
        // reads the process's name (/proc/PID/comm).
        thread_name: s.thread_name,
        process_name: [0; NAME_LEN],
        modules: s.chain.ids(),
    };
    shm.write_socket(i, me, &record);
    s.record = record;
    s.record_remote = s.remote;
}
