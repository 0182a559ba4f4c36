//! Sockets that escape the tap: a socket of the agent's network namespace
//! that an activated module's match selects, but that no tapped process
//! lists, belongs to a process that does not run the tap (a static binary,
//! a program started without the preload library); a socket of a process
//! that runs the tap but holds an io_uring instance may be driven by
//! submissions the tap never sees. Both are reported once per (module,
//! socket) and counted per module (`bypassed`).
//!
//! Run on the agent's one-second tick, only while some module is activated:
//! it reads /proc/net/{tcp,udp}[6], matches every established TCP and every
//! UDP socket with the engine's own `Rule::matches`, and looks for the
//! processes holding a socket (/proc/*/fd) only for sockets the tables do
//! not list, once per socket. What it cannot see: processes in another
//! network namespace, connections shorter than the tick, unconnected UDP
//! sockets under a rule that names the peer (their peer is per datagram),
//! and processes whose /proc entries the agent may not read.

use std::collections::{HashMap, HashSet, VecDeque};

use l45_modules::Role;
use l45_tap_control::{Bypass, BypassReason, Protocol};
use l45_tap_engine::{Rule, SocketView};
use l45_tap_shm::{flags, ModuleSlot, NAME_LEN, PROTO_TCP};

use crate::procfs::{NetSocket, ProcessFacts};

/// What the watch reads about processes (/proc; a fake in tests).
pub(crate) trait Processes {
    /// The processes holding each of `inodes` on a descriptor.
    fn holders(&self, inodes: &HashSet<u64>) -> HashMap<u64, Vec<u32>>;
    /// A process's name, threads' names (if `threads`), tap and io_uring.
    fn facts(&self, pid: u32, threads: bool) -> Option<ProcessFacts>;
}

/// The real /proc, skipping the agent's own process (never tapped, and its
/// sockets are no application's).
pub(crate) struct Proc {
    pub me: u32,
}

impl Processes for Proc {
    fn holders(&self, inodes: &HashSet<u64>) -> HashMap<u64, Vec<u32>> {
        crate::procfs::socket_holders(inodes, self.me)
    }

    fn facts(&self, pid: u32, threads: bool) -> Option<ProcessFacts> {
        crate::procfs::process_facts(pid, threads)
    }
}

/// A listed (tapped) socket: its process, inode and chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    pub pid: u32,
    pub inode: u64,
    pub chain: Vec<u32>,
}

/// Most (module, socket) pairs remembered as decided; beyond it new
/// sockets are not looked at until some go.
const DECIDED_MAX: usize = 1 << 18;
/// Most reports kept for the agent between two drains.
const EVENTS_MAX: usize = 1024;

/// An activated, not deprecated module of the published table.
struct Watched {
    id: u32,
    rule: Rule,
    /// The rule without its process and thread names: what /proc/net alone
    /// can decide.
    coarse: Rule,
    immediate: bool,
}

fn watched(table: &[ModuleSlot]) -> Vec<Watched> {
    table
        .iter()
        .filter(|s| s.used() && s.has(flags::ACTIVATED) && !s.has(flags::DEPRECATED))
        .map(|s| {
            let rule = Rule::from_slot(s);
            Watched {
                id: s.id,
                rule,
                coarse: Rule {
                    thread_name: [0; NAME_LEN],
                    process_name: [0; NAME_LEN],
                    ..rule
                },
                immediate: s.has(flags::IMMEDIATE),
            }
        })
        .collect()
}

fn view<'a>(s: &NetSocket, thread: &'a [u8], process: &'a [u8]) -> SocketView<'a> {
    SocketView {
        protocol: s.protocol,
        // Matching does not look at the role.
        role: Role::Client,
        local: Some(s.local),
        remote: s.remote,
        thread_name: thread,
        process_name: process,
    }
}

/// The bypass detector's memory, bounded by the sockets that exist.
#[derive(Default)]
pub(crate) struct Watch {
    /// (module, inode) pairs reported, or that can never be (the process's
    /// name does not match).
    decided: HashSet<(u32, u64)>,
    /// Unlisted socket inode → the processes found holding it (empty: none
    /// the agent can see).
    holders: HashMap<u64, Vec<u32>>,
    /// Module → (its revision, the sockets that existed when it was
    /// applied): a module that attaches to new sockets only would not have
    /// had them.
    baseline: HashMap<u32, (u32, HashSet<u64>)>,
    /// Module → sockets found escaping it since it was applied.
    counts: HashMap<u32, u64>,
    events: VecDeque<Bypass>,
    full_warned: bool,
}

impl Watch {
    /// Sockets found escaping module `id` since it was applied.
    pub fn count(&self, id: u32) -> u64 {
        self.counts.get(&id).copied().unwrap_or(0)
    }

    /// The reports since the last call.
    pub fn drain(&mut self) -> Vec<Bypass> {
        self.events.drain(..).collect()
    }

    /// Whether `table` has a module to watch (the caller then reads
    /// /proc/net).
    pub fn wanted(table: &[ModuleSlot]) -> bool {
        !watched(table).is_empty()
    }

    /// A new table was published: modules that attach to new sockets only
    /// remember the sockets that exist now (`net`, read only if `needs_net`
    /// said so) and never report them.
    pub fn applied(&mut self, table: &[ModuleSlot], net: &[NetSocket]) {
        let mods = watched(table);
        self.forget_gone(table, &mods);
        for m in mods.iter().filter(|m| !m.immediate) {
            let revision = revision_of(table, m.id);
            if self.baseline.get(&m.id).map(|b| b.0) == Some(revision) {
                continue;
            }
            let existing = net
                .iter()
                .filter(|s| m.coarse.matches(&view(s, b"", b"")))
                .map(|s| s.inode)
                .collect();
            self.baseline.insert(m.id, (revision, existing));
        }
    }

    /// Whether `applied` needs /proc/net for `table`: some module attaching
    /// to new sockets only is new or changed.
    pub fn needs_net(&self, table: &[ModuleSlot]) -> bool {
        watched(table).iter().any(|m| {
            !m.immediate && self.baseline.get(&m.id).map(|b| b.0) != Some(revision_of(table, m.id))
        })
    }

    fn forget_gone(&mut self, table: &[ModuleSlot], mods: &[Watched]) {
        let used: HashSet<u32> = table.iter().filter(|s| s.used()).map(|s| s.id).collect();
        self.counts.retain(|id, _| used.contains(id));
        let watched_ids: HashSet<u32> = mods.iter().map(|m| m.id).collect();
        let attach_new: HashSet<u32> = mods.iter().filter(|m| !m.immediate).map(|m| m.id).collect();
        self.baseline.retain(|id, _| attach_new.contains(id));
        self.decided.retain(|(id, _)| watched_ids.contains(id));
        self.events.retain(|b| used.contains(&b.module));
    }

    /// One look: `net` is the namespace's sockets (read before `listed`,
    /// the tapped sockets with their inodes, so a socket a tapped process
    /// just made is listed by then).
    pub fn tick(
        &mut self,
        table: &[ModuleSlot],
        net: &[NetSocket],
        listed: &[Listed],
        procs: &impl Processes,
    ) {
        let mods = watched(table);
        self.forget_gone(table, &mods);
        if mods.is_empty() {
            self.decided.clear();
            self.holders.clear();
            return;
        }
        let present: HashSet<u64> = net.iter().map(|s| s.inode).collect();
        self.decided.retain(|(_, inode)| present.contains(inode));
        self.holders.retain(|inode, _| present.contains(inode));
        for (_, existing) in self.baseline.values_mut() {
            existing.retain(|inode| present.contains(inode));
        }
        let listed: HashMap<u64, &Listed> = listed.iter().map(|l| (l.inode, l)).collect();

        // Sockets a module's match may select, by what /proc/net shows.
        let mut candidates = Vec::new();
        for s in net {
            for m in &mods {
                if self.decided.contains(&(m.id, s.inode)) {
                    continue;
                }
                match listed.get(&s.inode) {
                    // The tap saw it: only io_uring can take it past.
                    Some(l) if l.chain.contains(&m.id) => candidates.push((m, s)),
                    Some(_) => {}
                    None => {
                        let old = self
                            .baseline
                            .get(&m.id)
                            .is_some_and(|(_, existing)| existing.contains(&s.inode));
                        if !old && m.coarse.matches(&view(s, b"", b"")) {
                            candidates.push((m, s));
                        }
                    }
                }
            }
        }
        if candidates.is_empty() {
            return;
        }
        if self.decided.len() >= DECIDED_MAX {
            if !self.full_warned {
                tracing::warn!(
                    remembered = self.decided.len(),
                    "bypass detection remembers too many sockets; new ones are not looked at"
                );
                self.full_warned = true;
            }
            return;
        }
        self.full_warned = false;

        // Who holds the sockets no table lists: one pass over /proc for all
        // of them, remembered while the socket exists.
        let unknown: HashSet<u64> = candidates
            .iter()
            .map(|(_, s)| s.inode)
            .filter(|i| !listed.contains_key(i) && !self.holders.contains_key(i))
            .collect();
        if !unknown.is_empty() {
            let mut found = procs.holders(&unknown);
            for inode in unknown {
                let pids = found.remove(&inode).unwrap_or_default();
                self.holders.insert(inode, pids);
            }
        }

        let mut facts: HashMap<(u32, bool), Option<ProcessFacts>> = HashMap::new();
        let mut fact = |pid: u32, threads: bool| -> Option<ProcessFacts> {
            facts
                .entry((pid, threads))
                .or_insert_with(|| procs.facts(pid, threads))
                .clone()
        };
        for (m, s) in candidates {
            let verdict = if let Some(l) = listed.get(&s.inode) {
                // Listed with this module: the process runs the tap.
                match fact(l.pid, false) {
                    Some(f) if f.io_uring => Verdict::Report(BypassReason::IoUring, l.pid, f.name),
                    _ => Verdict::Undecided,
                }
            } else {
                let pids = self.holders.get(&s.inode).cloned().unwrap_or_default();
                judge(m, s, &pids, &mut fact)
            };
            match verdict {
                Verdict::Undecided => {}
                Verdict::Never => {
                    self.decided.insert((m.id, s.inode));
                }
                Verdict::Report(reason, pid, process_name) => {
                    self.decided.insert((m.id, s.inode));
                    *self.counts.entry(m.id).or_insert(0) += 1;
                    let bypass = Bypass {
                        module: m.id,
                        reason,
                        pid,
                        process_name,
                        protocol: if s.protocol == PROTO_TCP {
                            Protocol::Tcp
                        } else {
                            Protocol::Udp
                        },
                        source: Some(s.local),
                        destination: s.remote,
                    };
                    tracing::warn!(
                        module = m.id,
                        reason = reason.as_str(),
                        pid,
                        process = %bypass.process_name,
                        source = %s.local,
                        destination = ?s.remote,
                        "a socket escapes the tap"
                    );
                    if self.events.len() < EVENTS_MAX {
                        self.events.push_back(bypass);
                    }
                }
            }
        }
    }
}

enum Verdict {
    /// Reported now.
    Report(BypassReason, u32, String),
    /// Never reportable (no holder's name matches).
    Never,
    /// Nothing to say now; looked at again next time (a tapped process
    /// that has not used the socket yet, a process gone or unreadable).
    Undecided,
}

/// An unlisted socket that module `m`'s match selects by address: which of
/// `pids` (its holders) the whole rule selects, and whether they run the
/// tap.
fn judge(
    m: &Watched,
    s: &NetSocket,
    pids: &[u32],
    fact: &mut impl FnMut(u32, bool) -> Option<ProcessFacts>,
) -> Verdict {
    let threads = m.rule.thread_name[0] != 0;
    let mut matching = Vec::new();
    let mut unknown = false;
    for &pid in pids {
        let Some(f) = fact(pid, threads) else {
            unknown = true;
            continue;
        };
        let selects = if threads {
            f.threads
                .iter()
                .any(|t| m.rule.matches(&view(s, t.as_bytes(), f.name.as_bytes())))
        } else {
            m.rule.matches(&view(s, b"", f.name.as_bytes()))
        };
        if selects {
            matching.push((pid, f));
        }
    }
    if matching.is_empty() {
        return if unknown || pids.is_empty() {
            Verdict::Undecided
        } else {
            Verdict::Never
        };
    }
    if matching.iter().any(|(_, f)| f.tapped) {
        return match matching.into_iter().find(|(_, f)| f.tapped && f.io_uring) {
            Some((pid, f)) => Verdict::Report(BypassReason::IoUring, pid, f.name),
            None => Verdict::Undecided,
        };
    }
    match matching.into_iter().next() {
        Some((pid, f)) => Verdict::Report(BypassReason::NotTapped, pid, f.name),
        None => Verdict::Undecided,
    }
}

fn revision_of(table: &[ModuleSlot], id: u32) -> u32 {
    table
        .iter()
        .find(|s| s.used() && s.id == id)
        .map_or(0, |s| s.revision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use l45_tap_control::{Attach, MatchRules, ModuleConfig};
    use l45_tap_shm::{MAX_MODULES, PROTO_UDP};
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    /// Processes by pid, sockets by inode; counts the /proc scans.
    #[derive(Default)]
    struct Fake {
        procs: HashMap<u32, ProcessFacts>,
        holders: HashMap<u64, Vec<u32>>,
        scans: RefCell<usize>,
    }

    impl Processes for Fake {
        fn holders(&self, inodes: &HashSet<u64>) -> HashMap<u64, Vec<u32>> {
            *self.scans.borrow_mut() += 1;
            inodes
                .iter()
                .filter_map(|i| Some((*i, self.holders.get(i)?.clone())))
                .collect()
        }

        fn facts(&self, pid: u32, _threads: bool) -> Option<ProcessFacts> {
            self.procs.get(&pid).cloned()
        }
    }

    fn process(name: &str, tapped: bool, io_uring: bool) -> ProcessFacts {
        ProcessFacts {
            name: name.into(),
            threads: vec![name.into(), "worker".into()],
            tapped,
            io_uring,
        }
    }

    fn table(modules: &[(u32, MatchRules, Attach)]) -> Vec<ModuleSlot> {
        let mut t = vec![ModuleSlot::default(); MAX_MODULES];
        for (i, (id, matching, attach)) in modules.iter().enumerate() {
            let m = ModuleConfig {
                id: *id,
                name: format!("m{id}"),
                kind: "rate-limit".into(),
                priority: 10,
                activated: true,
                deprecated: false,
                attach: *attach,
                matching: matching.clone(),
                parameters: BTreeMap::from([("delay".into(), "1".into())]),
                key: None,
            };
            t[i] = crate::module_slot(&m, *id, &Default::default()).unwrap().0;
        }
        t
    }

    fn port(p: u16) -> MatchRules {
        MatchRules {
            destination_port: Some(p),
            ..MatchRules::default()
        }
    }

    fn tcp(inode: u64, local: &str, remote: &str) -> NetSocket {
        NetSocket {
            protocol: PROTO_TCP,
            local: local.parse().unwrap(),
            remote: Some(remote.parse().unwrap()),
            inode,
        }
    }

    #[test]
    fn an_untapped_process_on_a_matching_socket_is_reported_once() {
        let t = table(&[(1, port(8080), Attach::NewSockets)]);
        let mut w = Watch::default();
        w.applied(&t, &[]);
        let net = [
            tcp(10, "127.0.0.1:40000", "127.0.0.1:8080"), // static client
            tcp(11, "127.0.0.1:8080", "127.0.0.1:40000"), // its server end: peer port differs
            tcp(12, "127.0.0.1:40001", "127.0.0.1:9090"), // another port
        ];
        let fake = Fake {
            procs: HashMap::from([(100, process("client", false, false))]),
            holders: HashMap::from([(10, vec![100]), (11, vec![101]), (12, vec![100])]),
            ..Fake::default()
        };
        w.tick(&t, &net, &[], &fake);
        let got = w.drain();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            (
                got[0].module,
                got[0].reason,
                got[0].pid,
                got[0].process_name.as_str()
            ),
            (1, BypassReason::NotTapped, 100, "client")
        );
        assert_eq!(got[0].protocol, Protocol::Tcp);
        assert_eq!(got[0].destination, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(w.count(1), 1);
        // Once per socket, and /proc/*/fd is scanned once for it.
        w.tick(&t, &net, &[], &fake);
        assert!(w.drain().is_empty());
        assert_eq!(w.count(1), 1);
        assert_eq!(*fake.scans.borrow(), 1);
        // Forgotten when it goes; a new socket counts again.
        let net2 = [tcp(13, "127.0.0.1:40002", "127.0.0.1:8080")];
        let fake2 = Fake {
            holders: HashMap::from([(13, vec![100])]),
            ..fake
        };
        w.tick(&t, &net2, &[], &fake2);
        assert_eq!(w.drain().len(), 1);
        assert_eq!(w.count(1), 2);
        assert!(w.decided.iter().all(|(_, i)| *i == 13) && w.holders.len() == 1);
        // The module goes: its count goes with it.
        w.tick(&table(&[]), &net2, &[], &fake2);
        assert_eq!(w.count(1), 0);
        assert!(w.decided.is_empty() && w.holders.is_empty());
    }

    #[test]
    fn tapped_processes_are_quiet_unless_they_hold_an_io_uring() {
        let t = table(&[(1, port(8080), Attach::NewSockets)]);
        let mut w = Watch::default();
        w.applied(&t, &[]);
        let net = [
            tcp(20, "127.0.0.1:40000", "127.0.0.1:8080"), // listed, plain tapped process
            tcp(21, "127.0.0.1:40001", "127.0.0.1:8080"), // not listed yet, tapped process
            tcp(22, "127.0.0.1:40002", "127.0.0.1:8080"), // listed, process with io_uring
            tcp(23, "127.0.0.1:40003", "127.0.0.1:8080"), // not listed, tapped, io_uring
            tcp(24, "127.0.0.1:40004", "127.0.0.1:8080"), // listed without module 1
        ];
        let fake = Fake {
            procs: HashMap::from([
                (200, process("curl", true, false)),
                (201, process("uring", true, true)),
            ]),
            holders: HashMap::from([(21, vec![200]), (23, vec![201])]),
            ..Fake::default()
        };
        let listed = [
            Listed {
                pid: 200,
                inode: 20,
                chain: vec![1],
            },
            Listed {
                pid: 201,
                inode: 22,
                chain: vec![1],
            },
            Listed {
                pid: 201,
                inode: 24,
                chain: vec![7],
            },
        ];
        w.tick(&t, &net, &listed, &fake);
        let mut got: Vec<(u64, BypassReason, u32)> = w
            .drain()
            .into_iter()
            .map(|b| (u64::from(b.source.unwrap().port()), b.reason, b.pid))
            .collect();
        got.sort_unstable();
        assert_eq!(
            got,
            vec![
                (40002, BypassReason::IoUring, 201),
                (40003, BypassReason::IoUring, 201)
            ]
        );
        // The holder scan looked only for the unlisted sockets.
        assert_eq!(*fake.scans.borrow(), 1);
        assert_eq!(
            w.holders.keys().copied().collect::<HashSet<_>>(),
            HashSet::from([21, 23])
        );
        assert_eq!(w.count(1), 2);
    }

    #[test]
    fn names_baselines_and_udp_peers() {
        let by_name = MatchRules {
            protocol: Some(l45_tap_control::Protocol::Udp),
            source_port: Some(53),
            process_name: Some("dnsd".into()),
            ..MatchRules::default()
        };
        let by_thread = MatchRules {
            destination_port: Some(53),
            thread_name: Some("worker".into()),
            ..MatchRules::default()
        };
        let t = table(&[
            (1, by_name, Attach::NewSockets),
            (2, by_thread, Attach::NewSockets),
            (3, port(8080), Attach::NewSockets),
            (4, port(8081), Attach::Immediate),
        ]);
        let udp = |inode, local: &str, remote: Option<&str>| NetSocket {
            protocol: PROTO_UDP,
            local: local.parse().unwrap(),
            remote: remote.map(|r| r.parse().unwrap()),
            inode,
        };
        // Sockets that exist when the modules are applied: a module that
        // attaches to new sockets only would not have had them.
        let old = [
            tcp(30, "127.0.0.1:40000", "127.0.0.1:8080"),
            tcp(31, "127.0.0.1:40001", "127.0.0.1:8081"),
        ];
        let mut w = Watch::default();
        assert!(w.needs_net(&t));
        w.applied(&t, &old);
        assert!(!w.needs_net(&t));
        let net = [
            old[0],
            old[1],
            udp(32, "0.0.0.0:53", None),      // dnsd's server socket
            udp(33, "0.0.0.0:53", None),      // another program's
            udp(34, "127.0.0.1:40005", None), // unconnected client: no peer to match
            udp(35, "127.0.0.1:40006", Some("127.0.0.1:53")), // connected, thread "worker"
        ];
        let fake = Fake {
            procs: HashMap::from([
                (300, process("dnsd", false, false)),
                (301, process("other", false, false)),
                (302, process("resolver", false, false)),
            ]),
            holders: HashMap::from([
                (30, vec![300]),
                (31, vec![300]),
                (32, vec![300]),
                (33, vec![301]),
                (34, vec![302]),
                (35, vec![302]),
            ]),
            ..Fake::default()
        };
        w.tick(&t, &net, &[], &fake);
        let mut got: Vec<(u32, u64)> = w
            .drain()
            .into_iter()
            .map(|b| (b.module, u64::from(b.pid)))
            .collect();
        got.sort_unstable();
        // 1: dnsd's socket, not the other program's; 2: the connected
        // socket of a process with a "worker" thread; 3: nothing (the old
        // socket); 4: the old socket too (immediate attach).
        assert_eq!(got, vec![(1, 300), (2, 302), (4, 300)]);
        // The other program's socket is decided for good: not looked at again.
        assert!(w.decided.contains(&(1, 33)));
    }
}
