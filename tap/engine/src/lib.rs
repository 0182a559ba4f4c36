//! The tap engine: which modules a socket gets, and running its chain.
//!
//! No I/O and no libc: the preload library (and tests) hand it a view of the
//! socket and the bytes; it answers what to put on the wire or hand to the
//! application. Semantics (dissertation ch. 2–5):
//! - a socket is matched once, at first sight; wildcards everywhere;
//! - its chain is sorted by priority (lower first, then id); the first
//!   activated module that recognises the traffic customizes it, "not mine"
//!   tries the next; deactivated modules stay attached but pass through;
//! - deprecated modules attach to no new socket; live sockets keep them;
//! - modules with `attach = immediate` are matched against live sockets when
//!   they appear; a module that disappears from the table (revoke) leaves
//!   every chain at the next call.

use std::net::{IpAddr, SocketAddr};

use l45_modules::{
    Ctx, Directions, Instance, Kind, RecvVerdict, Role, SendVerdict, SocketState, Splice, Transport,
};
use l45_tap_shm::{
    flags, name_bytes, AddrMatch, ModuleSlot, MAX_CHAIN, NAME_LEN, PROTO_ANY, PROTO_TCP, PROTO_UDP,
};

/// What the tap knows about a socket when it matches it.
#[derive(Debug, Clone, Copy)]
pub struct SocketView<'a> {
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub protocol: u8,
    pub role: Role,
    /// Our end (the rule's "source").
    pub local: Option<SocketAddr>,
    /// The peer (the rule's "destination").
    pub remote: Option<SocketAddr>,
    pub thread_name: &'a [u8],
    pub process_name: &'a [u8],
}

impl SocketView<'_> {
    pub fn transport(&self) -> Transport {
        if self.protocol == PROTO_TCP {
            Transport::Stream
        } else {
            Transport::Datagram
        }
    }

    pub fn ctx(&self) -> Ctx<'_> {
        Ctx {
            role: self.role,
            transport: self.transport(),
            thread_name: self.thread_name,
            process_name: self.process_name,
        }
    }
}

/// Socket selection of one module; every part optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub protocol: u8,
    pub source: AddrMatch,
    pub destination: AddrMatch,
    pub source_port: Option<u16>,
    pub destination_port: Option<u16>,
    pub thread_name: [u8; NAME_LEN],
    pub process_name: [u8; NAME_LEN],
}

#[inline]
fn addr_matches(m: &AddrMatch, addr: Option<SocketAddr>, unspecified_matches: bool) -> bool {
    m.family == 0 || addr_matches_prefix(m, addr, unspecified_matches)
}

fn addr_matches_prefix(m: &AddrMatch, addr: Option<SocketAddr>, unspecified_matches: bool) -> bool {
    let Some(addr) = addr else { return false };
    let ip = match addr.ip() {
        // An IPv4-mapped IPv6 address matches IPv4 rules.
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    if ip.is_unspecified() {
        // A socket bound to the wildcard address serves every local address.
        return unspecified_matches;
    }
    let (bytes, family): (&[u8], u8) = match &ip {
        IpAddr::V4(v4) => (&v4.octets()[..], 4),
        IpAddr::V6(v6) => (&v6.octets()[..], 6),
    };
    if family != m.family {
        return false;
    }
    prefix_equal(bytes, &m.addr[..bytes.len()], m.prefix as usize)
}

fn prefix_equal(a: &[u8], b: &[u8], bits: usize) -> bool {
    let bits = bits.min(a.len() * 8);
    let full = bits / 8;
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[full] & mask == b[full] & mask
}

impl Rule {
    pub fn from_slot(s: &ModuleSlot) -> Rule {
        Rule {
            protocol: s.protocol,
            source: s.source,
            destination: s.destination,
            source_port: s.has(flags::HAS_SRC_PORT).then_some(s.source_port),
            destination_port: s.has(flags::HAS_DST_PORT).then_some(s.destination_port),
            thread_name: s.thread_name,
            process_name: s.process_name,
        }
    }

    /// `None` if this rule cannot match a socket of `protocol` in the
    /// process `process_name` (both known for free); else the socket facts
    /// deciding it takes.
    pub fn needs(&self, protocol: u8, process_name: &[u8]) -> Option<Needs> {
        if self.protocol != PROTO_ANY && self.protocol != protocol {
            return None;
        }
        if self.process_name[0] != 0 && name_bytes(&self.process_name) != process_name {
            return None;
        }
        Some(Needs {
            local: self.source_port.is_some() || self.source.family != 0,
            remote: self.destination_port.is_some() || self.destination.family != 0,
            thread_name: self.thread_name[0] != 0,
        })
    }

    pub fn matches(&self, v: &SocketView<'_>) -> bool {
        self.needs(v.protocol, v.process_name).is_some() && self.matches_candidate(v)
    }

    /// `matches`, for a rule already known to fit the socket's protocol and
    /// process (a `Config::candidates` entry): only the socket's own facts
    /// are compared. First sight runs this once per candidate and socket.
    #[inline]
    pub fn matches_candidate(&self, v: &SocketView<'_>) -> bool {
        // An empty name (first byte NUL) matches every thread.
        if self.thread_name[0] != 0 && name_bytes(&self.thread_name) != v.thread_name {
            return false;
        }
        if let Some(p) = self.source_port {
            if v.local.map(|a| a.port()) != Some(p) {
                return false;
            }
        }
        if let Some(p) = self.destination_port {
            if v.remote.map(|a| a.port()) != Some(p) {
                return false;
            }
        }
        addr_matches(&self.source, v.local, true)
            && addr_matches(&self.destination, v.remote, false)
    }
}

/// Socket facts that cost a system call to learn (see `Config::needs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Our address (`getsockname`).
    pub local: bool,
    /// The peer's address (`getpeername`, unless connect/sendto told us).
    pub remote: bool,
    /// The calling thread's name (`prctl(PR_GET_NAME)`).
    pub thread_name: bool,
}

impl Needs {
    pub fn or(self, other: Needs) -> Needs {
        Needs {
            local: self.local || other.local,
            remote: self.remote || other.remote,
            thread_name: self.thread_name || other.thread_name,
        }
    }
}

/// One module of the current configuration.
#[derive(Debug, Clone, Copy)]
pub struct ModuleSpec {
    pub slot: usize,
    pub id: u32,
    pub revision: u32,
    pub priority: u16,
    pub activated: bool,
    pub deprecated: bool,
    pub immediate: bool,
    pub rule: Rule,
    pub instance: Instance,
}

/// A module of a kind from an image this process has not loaded yet. Its
/// rule takes part in matching; its kind (and so its parameters, which
/// only the kind can parse) is resolved the first time a socket's chain
/// would include it (`Config::resolve`), so a process whose sockets never
/// meet it loads nothing.
#[derive(Debug, Clone, Copy)]
pub struct DeferredSpec {
    pub slot: usize,
    pub id: u32,
    pub deprecated: bool,
    pub immediate: bool,
    pub rule: Rule,
}

/// A parsed snapshot of the module table.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub generation: u64,
    pub modules: Vec<ModuleSpec>,
    /// Table entries the engine could not use (unknown kind, bad parameters).
    pub rejected: Vec<u32>,
    /// Modules whose kind is not at hand yet (`from_used_deferring`).
    pub deferred: Vec<DeferredSpec>,
}

impl Config {
    pub fn from_slots(generation: u64, slots: &[ModuleSlot]) -> Config {
        Config::from_used(generation, slots.iter().enumerate())
    }

    /// As `from_slots`, from (slot index, slot) pairs; unused slots are
    /// skipped.
    pub fn from_used<'a>(
        generation: u64,
        slots: impl IntoIterator<Item = (usize, &'a ModuleSlot)>,
    ) -> Config {
        Config::from_used_with(generation, slots, |_| None)
    }

    /// As `from_used`; a slot of a kind that is not built in (kind code 0)
    /// gets its kind from `external(slot index)` (the process's loaded
    /// module images), or is rejected if that gives none.
    pub fn from_used_with<'a>(
        generation: u64,
        slots: impl IntoIterator<Item = (usize, &'a ModuleSlot)>,
        mut external: impl FnMut(usize) -> Option<Kind>,
    ) -> Config {
        Config::from_used_resolving(generation, slots, |slot| Some(external(slot)))
    }

    /// As `from_used_with`, except that a slot of a kind that is not built
    /// in and that `loaded(slot index)` does not have at hand is deferred,
    /// not rejected: its rule is matched, and `resolve` gives it a kind the
    /// first time a socket's chain would include it.
    pub fn from_used_deferring<'a>(
        generation: u64,
        slots: impl IntoIterator<Item = (usize, &'a ModuleSlot)>,
        mut loaded: impl FnMut(usize) -> Option<Kind>,
    ) -> Config {
        Config::from_used_resolving(generation, slots, |slot| loaded(slot).map(Some))
    }

    /// The used slots as modules; a slot of a kind that is not built in
    /// gets `external(slot index)`: `Some(kind)` (`Some(None)`: rejected),
    /// or `None`: deferred.
    fn from_used_resolving<'a>(
        generation: u64,
        slots: impl IntoIterator<Item = (usize, &'a ModuleSlot)>,
        mut external: impl FnMut(usize) -> Option<Option<Kind>>,
    ) -> Config {
        let mut c = Config {
            generation,
            ..Config::default()
        };
        for (slot, s) in slots {
            if !s.used() {
                continue;
            }
            let kind = match s.kind {
                0 => match external(slot) {
                    Some(kind) => kind,
                    None => {
                        c.deferred.push(DeferredSpec {
                            slot,
                            id: s.id,
                            deprecated: s.has(flags::DEPRECATED),
                            immediate: s.has(flags::IMMEDIATE),
                            rule: Rule::from_slot(s),
                        });
                        continue;
                    }
                },
                code => Kind::from_code(code),
            };
            c.add(slot, s, kind);
        }
        c
    }

    /// This configuration with the deferred module of `s` (its slot as
    /// the table had it) given `kind` — `None`: its image could not be
    /// loaded — and its parameters parsed by that kind: a module, or
    /// rejected like an unknown kind.
    pub fn resolve(&self, slot: usize, s: &ModuleSlot, kind: Option<Kind>) -> Config {
        let mut c = self.clone();
        c.deferred.retain(|d| !(d.slot == slot && d.id == s.id));
        c.add(slot, s, kind);
        c
    }

    fn add(&mut self, slot: usize, s: &ModuleSlot, kind: Option<Kind>) {
        let instance = kind
            .ok_or(())
            .and_then(|k| Instance::new(s.id, k, s.param_pairs()).map_err(|_| ()));
        match instance {
            Ok(instance) => self.modules.push(ModuleSpec {
                slot,
                id: s.id,
                revision: s.revision,
                priority: s.priority,
                activated: s.has(flags::ACTIVATED),
                deprecated: s.has(flags::DEPRECATED),
                immediate: s.has(flags::IMMEDIATE),
                rule: Rule::from_slot(s),
                instance,
            }),
            Err(()) => self.rejected.push(s.id),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// What matching a new socket of `protocol` in the process named
    /// `process_name` against this configuration takes: `None` when no
    /// module could attach to it (the tap then skips matching altogether),
    /// else the socket facts some rule looks at. The tap looks up only those
    /// (each is a system call), so a process no rule names pays nothing per
    /// socket.
    /// Deferred modules count: whether one attaches is decided on the
    /// same facts.
    pub fn needs(&self, protocol: u8, process_name: &[u8]) -> Option<Needs> {
        let deferred = self
            .deferred
            .iter()
            .filter(|d| !d.deprecated)
            .map(|d| &d.rule);
        self.modules
            .iter()
            .filter(|m| !m.deprecated)
            .map(|m| &m.rule)
            .chain(deferred)
            .filter_map(|r| r.needs(protocol, process_name))
            .reduce(Needs::or)
    }

    /// As `candidates`, among the deferred modules (indices in `deferred`).
    pub fn deferred_candidates(&self, protocol: u8, process_name: &[u8]) -> Vec<usize> {
        self.deferred
            .iter()
            .enumerate()
            .filter(|(_, d)| !d.deprecated && d.rule.needs(protocol, process_name).is_some())
            .map(|(i, _)| i)
            .collect()
    }

    /// The first of `deferred_candidates` a socket seen as `view` would
    /// attach at first sight: its kind must be resolved before the chain
    /// is built.
    pub fn deferred_at_first_sight(
        &self,
        deferred_candidates: &[usize],
        view: &SocketView<'_>,
    ) -> Option<&DeferredSpec> {
        deferred_candidates
            .iter()
            .filter_map(|&i| self.deferred.get(i))
            .find(|d| d.rule.matches_candidate(view))
    }

    /// A deferred module that `Chain::refresh` of `chain` (seen as `view`)
    /// would need: one of its entries (the module's kind changed to one not
    /// at hand), or an immediate module that would join it.
    pub fn deferred_at_refresh(
        &self,
        chain: &Chain,
        view: &SocketView<'_>,
    ) -> Option<&DeferredSpec> {
        self.deferred.iter().find(|d| {
            chain.entries.iter().any(|a| a.id == d.id)
                || (d.immediate && !d.deprecated && d.rule.matches(view))
        })
    }

    /// Indices in `modules` of the modules a new socket of `protocol` in
    /// the process `process_name` could attach at first sight (not
    /// deprecated; protocol and process name fit). A tap computes this once
    /// per process and generation; `Chain::first_sight_among` then looks at
    /// these alone.
    pub fn candidates(&self, protocol: u8, process_name: &[u8]) -> Vec<usize> {
        self.modules
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.deprecated && m.rule.needs(protocol, process_name).is_some())
            .map(|(i, _)| i)
            .collect()
    }

    /// Whether a socket seen as `view` would attach any of `candidates` at
    /// first sight (what `Chain::first_sight_among` would find non-empty),
    /// without building the chain.
    pub fn any_attaches(&self, candidates: &[usize], view: &SocketView<'_>) -> bool {
        self.any_attaches_with(candidates, &[], view)
    }

    /// `any_attaches`, counting `deferred_candidates` too.
    pub fn any_attaches_with(
        &self,
        candidates: &[usize],
        deferred_candidates: &[usize],
        view: &SocketView<'_>,
    ) -> bool {
        candidates
            .iter()
            .filter_map(|&i| self.modules.get(i))
            .any(|m| m.rule.matches_candidate(view))
            || self
                .deferred_at_first_sight(deferred_candidates, view)
                .is_some()
    }

    /// For `candidates` (of client sockets of one protocol and process): a
    /// filter deciding first sight from the peer's port alone, when every
    /// candidate's rule looks at nothing but the peer's port (no addresses,
    /// no source port, no thread name). `None` otherwise, or if there are
    /// more candidates than a filter holds. A tap keeps it where a connect
    /// can read it without locks.
    pub fn peer_port_filter(&self, candidates: &[usize]) -> Option<PeerPortFilter> {
        self.peer_port_filter_with(candidates, &[])
    }

    /// `peer_port_filter` over `candidates` and `deferred_candidates`.
    pub fn peer_port_filter_with(
        &self,
        candidates: &[usize],
        deferred_candidates: &[usize],
    ) -> Option<PeerPortFilter> {
        let mut f = PeerPortFilter::default();
        let rules = candidates
            .iter()
            .map(|&i| self.modules.get(i).map(|m| &m.rule))
            .chain(
                deferred_candidates
                    .iter()
                    .map(|&i| self.deferred.get(i).map(|d| &d.rule)),
            );
        for r in rules {
            let r = r?;
            if f.len == PEER_FILTER_MAX
                || r.source.family != 0
                || r.destination.family != 0
                || r.source_port.is_some()
                || r.thread_name[0] != 0
            {
                return None;
            }
            f.ports[f.len] = r.destination_port;
            f.len += 1;
        }
        Some(f)
    }

    fn get(&self, id: u32) -> Option<&ModuleSpec> {
        self.modules.iter().find(|m| m.id == id)
    }
}

/// Most candidates a [`PeerPortFilter`] holds.
pub const PEER_FILTER_MAX: usize = 8;

/// First sight of a client socket decided from its peer's port: a module
/// attaches if its port is `None` (any) or the peer's (see
/// `Config::peer_port_filter`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerPortFilter {
    pub ports: [Option<u16>; PEER_FILTER_MAX],
    pub len: usize,
}

impl PeerPortFilter {
    /// Whether a module attaches to a client socket whose peer has `port`
    /// (what `Config::any_attaches` says for it).
    pub fn attaches(&self, port: u16) -> bool {
        self.ports[..self.len]
            .iter()
            .any(|p| p.is_none_or(|p| p == port))
    }
}

/// A module attached to one socket, with its per-socket state.
#[derive(Debug, Clone)]
pub struct Attached {
    pub slot: usize,
    pub id: u32,
    pub revision: u32,
    pub priority: u16,
    pub activated: bool,
    pub instance: Instance,
    pub state: SocketState,
}

impl Attached {
    fn new(m: &ModuleSpec) -> Attached {
        Attached {
            slot: m.slot,
            id: m.id,
            revision: m.revision,
            priority: m.priority,
            activated: m.activated,
            instance: m.instance,
            state: SocketState::default(),
        }
    }
}

/// Modules that joined or left a chain (for socket counts).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ChainChange {
    pub added: Vec<(usize, u32)>,
    pub removed: Vec<(usize, u32)>,
}

impl ChainChange {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// Result of running the send chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Send the application's bytes.
    Original,
    /// Send the first `len` bytes of the output buffer; `by` is the chain
    /// index of the module that customized.
    Customized { len: usize, by: usize },
    /// Tell the application it was sent; send nothing.
    Drop { by: usize },
}

/// Result of running the receive chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvOutcome {
    Original,
    Customized { len: usize, by: usize },
    Drop { by: usize },
}

/// The ordered modules of one socket.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    pub entries: Vec<Attached>,
    pub generation: u64,
    /// Some entry is a rate limit (else `send_delay` need not look): set
    /// whenever entries join or change, as are the two growths below.
    pub has_delay: bool,
    /// Most bytes any module of the chain adds to a datagram on send
    /// (`send_capacity(n) ≤ n + datagram_send_growth` for the kinds that act
    /// on datagrams).
    datagram_send_growth: usize,
    /// Most bytes any module may add on receive (see `recv_growth`).
    recv_growth: usize,
}

impl Chain {
    /// Matching at first sight: every non-deprecated module whose rule fits.
    pub fn first_sight(config: &Config, view: &SocketView<'_>) -> Chain {
        let candidates = config.candidates(view.protocol, view.process_name);
        Chain::first_sight_among(config, &candidates, view)
    }

    /// `first_sight` over `candidates` (from `Config::candidates` for this
    /// socket's protocol and process) only: the same chain, without
    /// re-checking what the candidates already fit.
    pub fn first_sight_among(
        config: &Config,
        candidates: &[usize],
        view: &SocketView<'_>,
    ) -> Chain {
        let mut chain = Chain::default();
        chain.attach_first_sight(config, candidates, view);
        chain
    }

    /// `first_sight_among` into this chain, reusing its storage (a tap
    /// keeps one chain per descriptor number: attaching then allocates
    /// nothing). Every entry of the result is newly attached.
    pub fn attach_first_sight(
        &mut self,
        config: &Config,
        candidates: &[usize],
        view: &SocketView<'_>,
    ) {
        self.clear();
        self.generation = config.generation;
        for m in candidates.iter().filter_map(|&i| config.modules.get(i)) {
            if m.rule.matches_candidate(view) {
                self.entries.push(Attached::new(m));
            }
        }
        if self.entries.len() > 1 {
            self.sort_and_cap();
        }
        self.note_entries();
    }

    /// Detaches every module (the storage stays for the next socket).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.note_entries();
    }

    /// Recomputes what the data path reads instead of walking the chain
    /// (called whenever entries join, leave or change).
    fn note_entries(&mut self) {
        self.has_delay = self
            .entries
            .iter()
            .any(|a| matches!(a.instance.params, l45_modules::Params::RateLimit { .. }));
        self.datagram_send_growth = self
            .entries
            .iter()
            .filter(|a| a.instance.acts_on_datagrams())
            .map(|a| a.instance.send_capacity(0))
            .max()
            .unwrap_or(0);
        self.recv_growth = self
            .entries
            .iter()
            .map(|a| a.instance.recv_capacity(0))
            .max()
            .unwrap_or(0);
    }

    /// Output space that surely holds what the send chain makes of a
    /// datagram of `input_len` bytes (modules that do not act on
    /// datagrams never write one).
    #[inline]
    pub fn datagram_send_capacity(&self, input_len: usize) -> usize {
        input_len + self.datagram_send_growth
    }

    fn sort_and_cap(&mut self) -> Vec<(usize, u32)> {
        self.entries.sort_by_key(|a| (a.priority, a.id));
        if self.entries.len() > MAX_CHAIN {
            return self
                .entries
                .drain(MAX_CHAIN..)
                .map(|a| (a.slot, a.id))
                .collect();
        }
        Vec::new()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Brings the chain up to a new configuration: revoked modules leave,
    /// priority/activation/parameter changes apply, immediate modules join.
    pub fn refresh(&mut self, config: &Config, view: &SocketView<'_>) -> ChainChange {
        let mut change = ChainChange::default();
        self.entries.retain_mut(|a| match config.get(a.id) {
            Some(m) if m.slot == a.slot => {
                a.priority = m.priority;
                a.activated = m.activated;
                if m.revision != a.revision {
                    if m.instance.kind != a.instance.kind {
                        a.state = SocketState::default();
                    }
                    a.instance = m.instance;
                    a.revision = m.revision;
                }
                true
            }
            _ => {
                change.removed.push((a.slot, a.id));
                false
            }
        });
        for m in &config.modules {
            if m.immediate
                && !m.deprecated
                && !self.entries.iter().any(|a| a.id == m.id)
                && m.rule.matches(view)
            {
                self.entries.push(Attached::new(m));
                change.added.push((m.slot, m.id));
            }
        }
        let dropped = self.sort_and_cap();
        change.added.retain(|x| !dropped.contains(x));
        self.generation = config.generation;
        self.note_entries();
        change
    }

    /// The delay a send waits for (the first activated rate limit) and the
    /// chain index of that module. The caller sleeps outside any lock.
    #[inline]
    pub fn send_delay(&self) -> Option<(u32, usize)> {
        if !self.has_delay {
            return None;
        }
        self.entries
            .iter()
            .enumerate()
            .find_map(|(i, a)| match a.instance.params {
                l45_modules::Params::RateLimit { delay_ms } if a.activated && delay_ms > 0 => {
                    Some((delay_ms, i))
                }
                _ => None,
            })
    }

    /// The directions some activated module of the chain acts on for this
    /// socket: calls in the other direction need no tap work at all.
    pub fn directions(&self, role: Role, transport: Transport) -> Directions {
        self.entries
            .iter()
            .filter(|a| a.activated)
            .fold(Directions::default(), |d, a| {
                d.or(a.instance.acts_on(role, transport))
            })
    }

    /// The chain as one splice (`Instance::splice`) in the direction its
    /// socket's `role` customizes (a client's sends, a server's receives):
    /// exactly one activated module, which is an insertion. With it, the
    /// chain's outcome for any datagram in that direction is the splice's
    /// (tried-next modules need a second one). The entry index is the
    /// deciding module's.
    pub fn splice(&self, role: Role) -> Option<(Splice<'_>, usize)> {
        let mut active = self.entries.iter().enumerate().filter(|(_, a)| a.activated);
        let (by, only) = active.next()?;
        if active.next().is_some() {
            return None;
        }
        let acts = only.instance.acts_on(role, Transport::Datagram);
        let acting = match role {
            Role::Client => acts.send && !acts.recv,
            Role::Server => acts.recv && !acts.send,
        };
        acting.then_some(())?;
        Some((only.instance.splice()?, by))
    }

    /// Output space the send chain needs for `input_len` input bytes (the
    /// most any activated module of it needs).
    #[inline]
    pub fn send_capacity(&self, input_len: usize) -> usize {
        self.entries
            .iter()
            .filter(|a| a.activated)
            .map(|a| a.instance.send_capacity(input_len))
            .max()
            .unwrap_or(0)
    }

    /// Runs the send chain over `input`; customized bytes land in `out`.
    pub fn send(&mut self, ctx: &Ctx<'_>, input: &[u8], out: &mut Vec<u8>) -> SendOutcome {
        let cap = self.send_capacity(input.len());
        if out.len() < cap {
            out.resize(cap, 0);
        }
        self.send_slice(ctx, input, &mut out[..cap])
    }

    /// As [`Chain::send`], into a caller's buffer of at least
    /// `send_capacity(input.len())` bytes (or `datagram_send_capacity` for
    /// a datagram; e.g. one on the stack). With less, a module that does
    /// not fit passes the message through.
    #[inline]
    pub fn send_slice(&mut self, ctx: &Ctx<'_>, input: &[u8], out: &mut [u8]) -> SendOutcome {
        for (i, a) in self.entries.iter_mut().enumerate() {
            if !a.activated {
                continue;
            }
            // Every module checks its writes against `out` itself: no
            // per-module capacity to compute here (a match on the kind,
            // per message).
            match a.instance.send(&mut a.state, ctx, input, out) {
                SendVerdict::NotMine | SendVerdict::Delay(_) => continue,
                SendVerdict::PassThrough => return SendOutcome::Original,
                SendVerdict::Drop => return SendOutcome::Drop { by: i },
                SendVerdict::Customized(len) => return SendOutcome::Customized { len, by: i },
            }
        }
        SendOutcome::Original
    }

    /// Most bytes any module of the chain may add on receive (its output
    /// for `n` input bytes fits in `n + recv_growth()`).
    #[inline]
    pub fn recv_growth(&self) -> usize {
        self.recv_growth
    }

    /// Runs the receive chain over `input`; customized bytes land in `out`.
    pub fn recv(&mut self, ctx: &Ctx<'_>, input: &[u8], out: &mut Vec<u8>) -> RecvOutcome {
        let cap = input.len() + self.recv_growth();
        if out.len() < cap {
            out.resize(cap, 0);
        }
        self.recv_slice(ctx, input, &mut out[..cap])
    }

    /// As [`Chain::recv`], into a caller's buffer of at least
    /// `input.len() + recv_growth()` bytes (e.g. the application's own, which
    /// saves a copy).
    #[inline]
    pub fn recv_slice(&mut self, ctx: &Ctx<'_>, input: &[u8], out: &mut [u8]) -> RecvOutcome {
        for (i, a) in self.entries.iter_mut().enumerate() {
            if !a.activated {
                continue;
            }
            // As in `send_slice`: modules bound their writes by `out`.
            match a.instance.recv(&mut a.state, ctx, input, out) {
                RecvVerdict::NotMine => continue,
                RecvVerdict::PassThrough => return RecvOutcome::Original,
                RecvVerdict::Drop => return RecvOutcome::Drop { by: i },
                RecvVerdict::Customized(len) => return RecvOutcome::Customized { len, by: i },
            }
        }
        // Nobody recognised it: a server whose module insists drops it.
        match self
            .entries
            .iter()
            .position(|a| a.activated && a.instance.required_on_recv(ctx))
        {
            Some(by) => RecvOutcome::Drop { by },
            None => RecvOutcome::Original,
        }
    }

    /// End of stream: bytes modules held while recognising are data.
    pub fn recv_eof(&mut self, out: &mut Vec<u8>) -> usize {
        let mut total = 0;
        for a in self.entries.iter_mut() {
            if out.len() < total + 80 {
                out.resize(total + 80, 0);
            }
            total += a.instance.recv_eof(&mut a.state, &mut out[total..]);
        }
        total
    }

    /// Attached ids in chain order, 0-terminated, for the socket table.
    pub fn ids(&self) -> [u32; MAX_CHAIN] {
        let mut ids = [0; MAX_CHAIN];
        for (i, a) in self.entries.iter().take(MAX_CHAIN).enumerate() {
            ids[i] = a.id;
        }
        ids
    }
}

/// Protocol number of a socket type, for views.
pub fn protocol_of(stream: bool) -> u8 {
    if stream {
        PROTO_TCP
    } else {
        PROTO_UDP
    }
}

#[cfg(test)]
mod tests;
