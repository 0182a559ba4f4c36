//! The agent's backend for the kernel tap (`kmod/`): every committed
//! transaction becomes generic netlink requests to the `l45` family
//! (register, revoke, activate, deprecate, priority); statistics, sockets
//! and challenges are read back over the same family. Wire format:
//! `docs/kernel-tap.md`.

pub mod images;
pub mod nl;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use l45_modules::{Instance, Kind};
use l45_tap_control::{
    Attach, ChallengeAnswer, Change, KindImage, ModuleConfig, ModuleState, ModuleStats, Protocol,
    SocketInfo, TapControl, TapError, Transaction,
};
use nl::{attr, cmd, flag, matching, Attrs, Genl, NlError};

/// Modules the kernel table holds (`L45_MAX_MODULES` in kmod/l45.h).
pub const MAX_MODULES: usize = 64;
/// Longest thread or process name (Linux `comm`).
pub const NAME_MAX: usize = 15;

/// Why a module cannot be expressed as a register request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("kind {0} is not built into the kernel tap")]
    UnknownKind(String),
    #[error("parameters: {0}")]
    Parameters(String),
    #[error("{0} is not an IP address or prefix")]
    Address(String),
    #[error("name {0:?} is longer than 15 bytes or holds a NUL")]
    Name(String),
    #[error("security key must be 32 bytes")]
    Key,
    #[error("more than 16 parameters")]
    TooManyParameters,
}

fn addr_prefix(text: &str) -> Result<(Vec<u8>, u8), EncodeError> {
    let bad = || EncodeError::Address(text.to_string());
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
        None => (text, None),
    };
    let addr = addr.split('%').next().unwrap_or(addr);
    let ip: IpAddr = addr.parse().map_err(|_| bad())?;
    let (bytes, max) = match ip {
        IpAddr::V4(v4) => (v4.octets().to_vec(), 32),
        IpAddr::V6(v6) => (v6.octets().to_vec(), 128),
    };
    let prefix = prefix.unwrap_or(max);
    if prefix > max {
        return Err(bad());
    }
    Ok((bytes, prefix))
}

fn name_ok(n: &str) -> Result<(), EncodeError> {
    if n.len() > NAME_MAX || n.as_bytes().contains(&0) {
        return Err(EncodeError::Name(n.to_string()));
    }
    Ok(())
}

/// The attributes of a register request for `m`; validates everything the
/// kernel would (so that `apply` does not fail).
pub fn register_attrs(m: &ModuleConfig) -> Result<Attrs, EncodeError> {
    // A kind that is not built in goes by name: the kernel builds it from
    // the kind module that registered it and runs its parameter parser.
    let kind = match Kind::from_name(&m.kind) {
        Some(kind) => {
            let pairs = || m.parameters.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            Instance::new(m.id, kind, pairs())
                .map_err(|e| EncodeError::Parameters(e.to_string()))?;
            Some(kind)
        }
        None if l45_modules::abi::valid_name(m.kind.as_bytes()) => None,
        None => return Err(EncodeError::UnknownKind(m.kind.clone())),
    };
    if m.parameters.len() > 16 {
        return Err(EncodeError::TooManyParameters);
    }
    let mut mt = Attrs::new();
    match m.matching.protocol {
        Some(Protocol::Tcp) => mt = mt.u8(matching::PROTO, 6),
        Some(Protocol::Udp) => mt = mt.u8(matching::PROTO, 17),
        Some(Protocol::Any) | None => {}
    }
    if let Some(a) = &m.matching.source_address {
        let (b, p) = addr_prefix(a)?;
        mt = mt.bytes(matching::SRC_ADDR, &b).u8(matching::SRC_PREFIX, p);
    }
    if let Some(a) = &m.matching.destination_address {
        let (b, p) = addr_prefix(a)?;
        mt = mt.bytes(matching::DST_ADDR, &b).u8(matching::DST_PREFIX, p);
    }
    if let Some(p) = m.matching.source_port {
        mt = mt.u16(matching::SRC_PORT, p);
    }
    if let Some(p) = m.matching.destination_port {
        mt = mt.u16(matching::DST_PORT, p);
    }
    if let Some(n) = &m.matching.thread_name {
        name_ok(n)?;
        mt = mt.string(matching::THREAD, n);
    }
    if let Some(n) = &m.matching.process_name {
        name_ok(n)?;
        mt = mt.string(matching::PROCESS, n);
    }
    let mut params = Attrs::new();
    for (i, (k, v)) in m.parameters.iter().enumerate() {
        params = params.nested(
            i as u16 + 1,
            Attrs::new()
                .string(nl::param::NAME, k)
                .string(nl::param::VALUE, v),
        );
    }
    let mut a = Attrs::new()
        .u32(attr::ID, m.id)
        .u16(attr::KIND, kind.map_or(0, |k| k.code()))
        .u16(attr::PRIORITY, m.priority)
        .u8(attr::FLAGS, flags_of(m));
    if kind.is_none() {
        a = a.string(attr::KIND_NAME, &m.kind);
    }
    if !mt.is_empty() {
        a = a.nested(attr::MATCH, mt);
    }
    if !params.is_empty() {
        a = a.nested(attr::PARAMS, params);
    }
    if let Some(k) = &m.key {
        if k.len() != 32 {
            return Err(EncodeError::Key);
        }
        a = a.bytes(attr::KEY, k);
    }
    Ok(a)
}

fn flags_of(m: &ModuleConfig) -> u8 {
    let mut f = 0;
    if m.activated {
        f |= flag::ACTIVATED;
    }
    if m.deprecated {
        f |= flag::DEPRECATED;
    }
    if m.attach == Attach::Immediate {
        f |= flag::IMMEDIATE;
    }
    f
}

/// One netlink request of a prepared transaction.
#[derive(Debug, Clone)]
enum Op {
    Register {
        id: u32,
        attrs: Attrs,
        replace: bool,
    },
    Revoke(u32),
    Set {
        id: u32,
        cmd: u8,
        attrs: Attrs,
    },
}

/// Statistics of one module as the kernel reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelStats {
    pub id: u32,
    pub kind: u16,
    pub priority: u16,
    pub flags: u8,
    pub sockets: u32,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub drops: u64,
    pub errors: u64,
    pub active_ts_ns: u64,
    pub bypassed: u64,
}

/// A client of the `l45` family, usable without the agent (tests, tools).
pub struct Client {
    genl: Genl,
}

impl Client {
    pub fn open() -> Result<Client, NlError> {
        Ok(Client {
            genl: Genl::open(nl::FAMILY_NAME)?,
        })
    }

    pub fn genl(&self) -> &Genl {
        &self.genl
    }

    pub fn register(&self, m: &ModuleConfig, replace: bool) -> Result<(), TapError> {
        let attrs = register_attrs(m).map_err(|e| TapError::Refused {
            id: m.id,
            reason: e.to_string(),
        })?;
        self.register_attrs(m.id, &attrs, replace)
    }

    fn register_attrs(&self, id: u32, attrs: &Attrs, replace: bool) -> Result<(), TapError> {
        self.register_nl(attrs, replace)
            .map_err(|e| tap_error(id, e))
    }

    /// Asks the kernel whether it would take the register request `attrs`
    /// (`CHECK`): a kind that is not built in has its parameters parsed
    /// by its own parser in the kernel, and nothing changes.
    pub fn check_register(&self, id: u32, attrs: &Attrs) -> Result<(), TapError> {
        let mut a = attrs.clone();
        a.put(attr::CHECK, &[]);
        self.genl
            .request(cmd::REGISTER, 0, a.as_bytes())
            .map(drop)
            .map_err(|e| tap_error(id, e))
    }

    fn register_nl(&self, attrs: &Attrs, replace: bool) -> Result<(), NlError> {
        let mut a = attrs.clone();
        if replace {
            a.put(attr::REPLACE, &[]);
        }
        self.genl.request(cmd::REGISTER, 0, a.as_bytes()).map(drop)
    }

    pub fn revoke(&self, id: u32) -> Result<(), TapError> {
        self.simple(cmd::REVOKE, id, Attrs::new())
    }

    pub fn activate(&self, id: u32, on: bool) -> Result<(), TapError> {
        self.simple(cmd::ACTIVATE, id, Attrs::new().u8(attr::VALUE, on as u8))
    }

    pub fn deprecate(&self, id: u32, on: bool) -> Result<(), TapError> {
        self.simple(cmd::DEPRECATE, id, Attrs::new().u8(attr::VALUE, on as u8))
    }

    pub fn priority(&self, id: u32, priority: u16) -> Result<(), TapError> {
        self.simple(
            cmd::PRIORITY,
            id,
            Attrs::new().u16(attr::PRIORITY, priority),
        )
    }

    fn simple(&self, c: u8, id: u32, rest: Attrs) -> Result<(), TapError> {
        let mut a = Attrs::new().u32(attr::ID, id);
        a.put_raw(rest.as_bytes());
        self.genl
            .request(c, 0, a.as_bytes())
            .map(drop)
            .map_err(|e| tap_error(id, e))
    }

    /// Every module's statistics (a multipart dump: no size cap).
    pub fn report(&self) -> Result<Vec<KernelStats>, TapError> {
        let msgs = self
            .genl
            .request(cmd::REPORT, nl::NLM_F_DUMP, &[])
            .map_err(|e| TapError::Backend(e.to_string()))?;
        Ok(msgs.iter().filter_map(|m| parse_stats(&m.attrs)).collect())
    }

    /// One module's statistics.
    pub fn report_one(&self, id: u32) -> Result<KernelStats, TapError> {
        let msgs = self
            .genl
            .request(cmd::REPORT, 0, Attrs::new().u32(attr::ID, id).as_bytes())
            .map_err(|e| tap_error(id, e))?;
        msgs.iter()
            .find_map(|m| parse_stats(&m.attrs))
            .ok_or_else(|| TapError::Backend("empty report".into()))
    }

    pub fn sockets(&self) -> Result<Vec<SocketInfo>, TapError> {
        let msgs = self
            .genl
            .request(cmd::SOCKETS, nl::NLM_F_DUMP, &[])
            .map_err(|e| TapError::Backend(e.to_string()))?;
        Ok(msgs
            .iter()
            .filter_map(|m| nl::get_attr(&m.attrs, attr::SOCKET).map(parse_socket))
            .collect())
    }

    pub fn challenge(
        &self,
        id: u32,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<ChallengeAnswer, TapError> {
        let a = Attrs::new()
            .u32(attr::ID, id)
            .bytes(attr::NONCE, nonce)
            .bytes(attr::CIPHERTEXT, ciphertext);
        let msgs = self
            .genl
            .request(cmd::CHALLENGE, 0, a.as_bytes())
            .map_err(|e| tap_error(id, e))?;
        let m = msgs
            .first()
            .ok_or_else(|| TapError::Backend("no challenge answer".into()))?;
        match (
            nl::get_attr(&m.attrs, attr::NONCE),
            nl::get_attr(&m.attrs, attr::CIPHERTEXT),
        ) {
            (Some(n), Some(c)) => Ok(ChallengeAnswer {
                nonce: n.to_vec(),
                ciphertext: c.to_vec(),
            }),
            _ => Err(TapError::Backend(
                "challenge answer without nonce or ciphertext".into(),
            )),
        }
    }
}

impl Attrs {
    fn put_raw(&mut self, bytes: &[u8]) {
        // Already-encoded attributes (each 4-aligned).
        let mut a = std::mem::take(self).into_vec();
        a.extend_from_slice(bytes);
        *self = Attrs::from_vec(a);
    }
}

fn tap_error(id: u32, e: NlError) -> TapError {
    match &e {
        NlError::Kernel { errno, message } => match *errno {
            libc::ENOENT => TapError::UnknownModule(id),
            libc::ENOSPC => TapError::ResourceExhausted(message.clone()),
            _ => TapError::Refused {
                id,
                reason: message.clone(),
            },
        },
        _ => TapError::Backend(e.to_string()),
    }
}

fn parse_stats(a: &[u8]) -> Option<KernelStats> {
    let s = nl::get_attr(a, attr::STATS)?;
    use nl::stats as st;
    Some(KernelStats {
        id: nl::attr_u32(a, attr::ID)?,
        kind: nl::attr_u16(a, attr::KIND).unwrap_or(0),
        priority: nl::attr_u16(a, attr::PRIORITY).unwrap_or(0),
        flags: nl::attr_u8(a, attr::FLAGS).unwrap_or(0),
        sockets: nl::attr_u32(s, st::SOCKETS).unwrap_or(0),
        bytes_sent: nl::attr_u64(s, st::BYTES_SENT).unwrap_or(0),
        bytes_received: nl::attr_u64(s, st::BYTES_RECEIVED).unwrap_or(0),
        messages_sent: nl::attr_u64(s, st::MESSAGES_SENT).unwrap_or(0),
        messages_received: nl::attr_u64(s, st::MESSAGES_RECEIVED).unwrap_or(0),
        drops: nl::attr_u64(s, st::DROPS).unwrap_or(0),
        errors: nl::attr_u64(s, st::ERRORS).unwrap_or(0),
        active_ts_ns: nl::attr_u64(s, st::ACTIVE_TS).unwrap_or(0),
        bypassed: nl::attr_u64(s, st::BYPASSED).unwrap_or(0),
    })
}

fn sockaddr(a: &[u8], addr: u16, port: u16) -> Option<SocketAddr> {
    let ip: IpAddr = match nl::get_attr(a, addr)? {
        b if b.len() == 4 => Ipv4Addr::new(b[0], b[1], b[2], b[3]).into(),
        b if b.len() == 16 => {
            let o: [u8; 16] = b.try_into().ok()?;
            Ipv6Addr::from(o).into()
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, nl::attr_u16(a, port)?))
}

fn parse_socket(a: &[u8]) -> SocketInfo {
    use nl::sock as k;
    SocketInfo {
        id: nl::attr_u64(a, k::COOKIE).unwrap_or(0),
        protocol: match nl::attr_u8(a, k::PROTO) {
            Some(6) => Protocol::Tcp,
            Some(17) => Protocol::Udp,
            _ => Protocol::Any,
        },
        source: sockaddr(a, k::LOCAL_ADDR, k::LOCAL_PORT),
        destination: sockaddr(a, k::REMOTE_ADDR, k::REMOTE_PORT),
        pid: nl::attr_u32(a, k::PID).unwrap_or(0),
        thread_name: nl::attr_str(a, k::THREAD).unwrap_or_default(),
        process_name: nl::attr_str(a, k::PROCESS).unwrap_or_default(),
        modules: nl::get_attr(a, k::MODULES)
            .map(|b| {
                b.chunks_exact(4)
                    .filter_map(|c| c.try_into().ok().map(u32::from_ne_bytes))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The agent's kernel backend.
pub struct KernelTap {
    client: Client,
    inner: Mutex<Inner>,
    /// Kinds loaded as kind modules through `load_kind`.
    kinds: Mutex<BTreeSet<String>>,
    errors: NetlinkErrors,
}

/// Failed netlink exchanges with the module, for the agent's metrics.
#[derive(Default)]
struct NetlinkErrors {
    /// A register, revoke, activate, deprecate or priority request.
    request: AtomicU64,
    /// A statistics dump.
    report: AtomicU64,
    /// A socket dump.
    sockets: AtomicU64,
}

#[derive(Default)]
struct Inner {
    modules: BTreeMap<u32, ModuleConfig>,
    prepared: Option<(Vec<Op>, BTreeMap<u32, ModuleConfig>)>,
}

impl KernelTap {
    /// Connects to the loaded kernel module.
    pub fn new() -> Result<KernelTap, NlError> {
        Ok(KernelTap {
            client: Client::open()?,
            inner: Mutex::default(),
            kinds: Mutex::default(),
            errors: NetlinkErrors::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self, op: &Op) -> Result<(), TapError> {
        match op {
            Op::Register { id, attrs, replace } => {
                match self.client.register_nl(attrs, *replace) {
                    // The kernel kept a module from an earlier agent run.
                    Err(e) if !replace && e.errno() == Some(libc::EEXIST) => {
                        self.client.register_attrs(*id, attrs, true)
                    }
                    r => r.map_err(|e| tap_error(*id, e)),
                }
            }
            Op::Revoke(id) => match self.client.revoke(*id) {
                Err(TapError::UnknownModule(_)) => Ok(()),
                r => r,
            },
            Op::Set { id, cmd, attrs } => self.client.simple(*cmd, *id, attrs.clone()),
        }
    }
}

fn only_state_changed(old: &ModuleConfig, new: &ModuleConfig) -> bool {
    let mut o = old.clone();
    o.priority = new.priority;
    o.activated = new.activated;
    o.deprecated = new.deprecated;
    o.name = new.name.clone();
    &o == new
}

impl TapControl for KernelTap {
    fn name(&self) -> &'static str {
        "kernel"
    }

    fn prepare(&self, txn: &Transaction) -> Result<(), TapError> {
        {
            let kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
            for change in &txn.changes {
                let (Change::Register(m) | Change::Update(m)) = change else {
                    continue;
                };
                if Kind::from_name(&m.kind).is_none() && !kinds.contains(&m.kind) {
                    return Err(TapError::Refused {
                        id: m.id,
                        reason: format!("kind {} is neither built in nor loaded", m.kind),
                    });
                }
            }
        }
        let mut inner = self.lock();
        let mut modules = inner.modules.clone();
        let mut ops = Vec::new();
        for change in &txn.changes {
            let refused = |id: u32, e: EncodeError| TapError::Refused {
                id,
                reason: e.to_string(),
            };
            // A kind that is not built in: its parser lives in its kind
            // module, so the kernel checks the parameters now (a refusal
            // at apply could not reach the NETCONF peer).
            let check_external = |m: &ModuleConfig, attrs: &Attrs| {
                if Kind::from_name(&m.kind).is_some() {
                    return Ok(());
                }
                self.client
                    .check_register(m.id, attrs)
                    .map_err(|e| match e {
                        TapError::Refused { id, reason } => TapError::Refused {
                            id,
                            reason: format!("parameters of kind {}: {reason}", m.kind),
                        },
                        other => other,
                    })
            };
            match change {
                Change::Unregister(id) => {
                    modules.remove(id);
                    ops.push(Op::Revoke(*id));
                }
                Change::Register(m) => {
                    let attrs = register_attrs(m).map_err(|e| refused(m.id, e))?;
                    check_external(m, &attrs)?;
                    ops.push(Op::Register {
                        id: m.id,
                        attrs,
                        replace: modules.contains_key(&m.id),
                    });
                    modules.insert(m.id, m.clone());
                }
                Change::Update(new) => {
                    let attrs = register_attrs(new).map_err(|e| refused(new.id, e))?;
                    check_external(new, &attrs)?;
                    // The previous configuration is the one this backend applied.
                    let old = modules.get(&new.id).cloned();
                    if let Some(old) = old.as_ref().filter(|old| only_state_changed(old, new)) {
                        let id = new.id;
                        if old.priority != new.priority {
                            ops.push(Op::Set {
                                id,
                                cmd: cmd::PRIORITY,
                                attrs: Attrs::new().u16(attr::PRIORITY, new.priority),
                            });
                        }
                        if old.activated != new.activated {
                            ops.push(Op::Set {
                                id,
                                cmd: cmd::ACTIVATE,
                                attrs: Attrs::new().u8(attr::VALUE, new.activated as u8),
                            });
                        }
                        if old.deprecated != new.deprecated {
                            ops.push(Op::Set {
                                id,
                                cmd: cmd::DEPRECATE,
                                attrs: Attrs::new().u8(attr::VALUE, new.deprecated as u8),
                            });
                        }
                    } else {
                        ops.push(Op::Register {
                            id: new.id,
                            attrs,
                            replace: true,
                        });
                    }
                    modules.insert(new.id, new.clone());
                }
            }
        }
        if modules.len() > MAX_MODULES {
            return Err(TapError::ResourceExhausted(format!(
                "the kernel tap holds at most {MAX_MODULES} modules"
            )));
        }
        inner.prepared = Some((ops, modules));
        Ok(())
    }

    fn apply(&self, _txn: &Transaction) {
        let mut inner = self.lock();
        let Some((ops, modules)) = inner.prepared.take() else {
            return;
        };
        // Revocations first, so that a replaced module's slot is free.
        for op in ops.iter().filter(|o| matches!(o, Op::Revoke(_))) {
            if let Err(e) = self.run(op) {
                self.errors.request.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "kernel tap: revoke failed");
            }
        }
        for op in ops.iter().filter(|o| !matches!(o, Op::Revoke(_))) {
            if let Err(e) = self.run(op) {
                self.errors.request.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "kernel tap: request failed");
            }
        }
        inner.modules = modules;
        tracing::info!(modules = inner.modules.len(), "kernel tap configured");
    }

    fn abort(&self, _txn: &Transaction) {
        self.lock().prepared = None;
    }

    fn module_stats(&self) -> Vec<ModuleStats> {
        let report: BTreeMap<u32, KernelStats> = match self.client.report() {
            Ok(r) => r.into_iter().map(|s| (s.id, s)).collect(),
            Err(e) => {
                self.errors.report.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "kernel tap: report failed");
                BTreeMap::new()
            }
        };
        let inner = self.lock();
        inner
            .modules
            .values()
            .map(|m| {
                let Some(s) = report.get(&m.id) else {
                    return ModuleStats::idle(m.id, ModuleState::Registered);
                };
                let active_ts = l45_tap_control::active_ts_from_ns(s.active_ts_ns);
                let state = if m.deprecated {
                    ModuleState::Deprecated
                } else if s.sockets > 0 || active_ts.is_some() {
                    ModuleState::Active
                } else {
                    ModuleState::Registered
                };
                ModuleStats {
                    id: m.id,
                    state,
                    active_ts,
                    socket_count: s.sockets,
                    bytes_sent: s.bytes_sent,
                    bytes_received: s.bytes_received,
                    messages_sent: s.messages_sent,
                    messages_received: s.messages_received,
                    errors: s.errors,
                    // The kernel sees every socket of the namespace; it
                    // leaves untapped only connections made before it was
                    // loaded whose role it cannot tell.
                    bypassed: s.bypassed,
                }
            })
            .collect()
    }

    fn sockets(&self) -> Vec<SocketInfo> {
        self.client.sockets().unwrap_or_else(|e| {
            self.errors.sockets.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "kernel tap: socket dump failed");
            Vec::new()
        })
    }

    fn backend_errors(&self) -> Vec<(&'static str, u64)> {
        let e = &self.errors;
        vec![
            ("netlink_request", e.request.load(Ordering::Relaxed)),
            ("netlink_report", e.report.load(Ordering::Relaxed)),
            ("netlink_socket_dump", e.sockets.load(Ordering::Relaxed)),
        ]
    }

    fn challenge(
        &self,
        id: u32,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<ChallengeAnswer, TapError> {
        self.client.challenge(id, nonce, ciphertext)
    }

    fn image_target(&self) -> Option<String> {
        images::image_target().ok()
    }

    fn load_kind(&self, image: &KindImage) -> Result<(), TapError> {
        images::load(image)?;
        self.kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(image.kind.clone());
        Ok(())
    }

    fn unload_kind(&self, kind: &str) -> Result<(), TapError> {
        images::unload(kind)?;
        self.kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(kind);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use l45_tap_control::MatchRules;

    fn module(id: u32) -> ModuleConfig {
        ModuleConfig {
            id,
            name: format!("m{id}"),
            kind: "stream-tag".into(),
            priority: 7,
            activated: true,
            deprecated: false,
            attach: Attach::Immediate,
            matching: MatchRules {
                protocol: Some(Protocol::Tcp),
                source_address: Some("10.0.0.0/8".into()),
                destination_port: Some(8080),
                process_name: Some("curl".into()),
                ..MatchRules::default()
            },
            parameters: [("interval".to_string(), "64".to_string())]
                .into_iter()
                .collect(),
            key: Some(vec![1; 32]),
        }
    }

    #[test]
    fn register_request_carries_typed_attributes() {
        let a = register_attrs(&module(9)).unwrap();
        let b = a.as_bytes();
        assert_eq!(nl::attr_u32(b, attr::ID), Some(9));
        assert_eq!(nl::attr_u16(b, attr::KIND), Some(Kind::StreamTag.code()));
        assert_eq!(nl::attr_u16(b, attr::PRIORITY), Some(7));
        assert_eq!(
            nl::attr_u8(b, attr::FLAGS),
            Some(flag::ACTIVATED | flag::IMMEDIATE)
        );
        let m = nl::get_attr(b, attr::MATCH).unwrap();
        assert_eq!(nl::attr_u8(m, matching::PROTO), Some(6));
        assert_eq!(
            nl::get_attr(m, matching::SRC_ADDR),
            Some(&[10, 0, 0, 0][..])
        );
        assert_eq!(nl::attr_u8(m, matching::SRC_PREFIX), Some(8));
        assert_eq!(nl::attr_u16(m, matching::DST_PORT), Some(8080));
        assert_eq!(nl::attr_str(m, matching::PROCESS).as_deref(), Some("curl"));
        let p = nl::get_attr(b, attr::PARAMS).unwrap();
        let (_, first) = nl::parse_attrs(p).next().unwrap();
        assert_eq!(
            nl::attr_str(first, nl::param::NAME).as_deref(),
            Some("interval")
        );
        assert_eq!(nl::attr_str(first, nl::param::VALUE).as_deref(), Some("64"));
        assert_eq!(nl::get_attr(b, attr::KEY).map(|k| k.len()), Some(32));
    }

    #[test]
    fn bad_modules_are_refused_before_the_kernel_sees_them() {
        let mut m = module(1);
        m.kind = "No kind".into();
        assert_eq!(
            register_attrs(&m).unwrap_err(),
            EncodeError::UnknownKind("No kind".into())
        );
        let mut m = module(1);
        m.parameters.insert("interval".into(), "3".into());
        assert!(matches!(
            register_attrs(&m),
            Err(EncodeError::Parameters(_))
        ));
        let mut m = module(1);
        m.matching.source_address = Some("10.0.0.0/33".into());
        assert!(matches!(register_attrs(&m), Err(EncodeError::Address(_))));
        let mut m = module(1);
        m.matching.thread_name = Some("a-very-long-thread-name".into());
        assert!(matches!(register_attrs(&m), Err(EncodeError::Name(_))));
        let mut m = module(1);
        m.key = Some(vec![0; 31]);
        assert_eq!(register_attrs(&m).unwrap_err(), EncodeError::Key);
    }

    #[test]
    fn a_kind_that_is_not_built_in_goes_by_name() {
        let mut m = module(4);
        m.kind = "udp-xor-test".into();
        m.parameters = [("key".to_string(), "90".to_string())]
            .into_iter()
            .collect();
        let a = register_attrs(&m).expect("the kernel parses its parameters");
        let b = a.as_bytes();
        assert_eq!(nl::attr_u16(b, attr::KIND), Some(0));
        assert_eq!(
            nl::attr_str(b, attr::KIND_NAME).as_deref(),
            Some("udp-xor-test")
        );
        // A built-in kind carries its code and no name.
        let b = register_attrs(&module(4)).expect("valid");
        assert_eq!(nl::get_attr(b.as_bytes(), attr::KIND_NAME), None);
    }

    #[test]
    fn state_only_updates_are_detected() {
        let old = module(1);
        let mut new = old.clone();
        new.priority = 1;
        new.deprecated = true;
        assert!(only_state_changed(&old, &new));
        new.parameters.insert("interval".into(), "99".into());
        assert!(!only_state_changed(&old, &new));
    }

    #[test]
    fn report_and_socket_messages_parse() {
        use nl::{sock as k, stats as st};
        let stats = Attrs::new()
            .u32(st::SOCKETS, 2)
            .bytes(st::BYTES_SENT, &7u64.to_ne_bytes())
            .bytes(st::MESSAGES_RECEIVED, &3u64.to_ne_bytes());
        let msg = Attrs::new()
            .u32(attr::ID, 5)
            .u16(attr::PRIORITY, 9)
            .nested(attr::STATS, stats);
        let s = parse_stats(msg.as_bytes()).unwrap();
        assert_eq!(
            (
                s.id,
                s.priority,
                s.sockets,
                s.bytes_sent,
                s.messages_received
            ),
            (5, 9, 2, 7, 3)
        );
        assert_eq!(parse_stats(Attrs::new().u32(attr::ID, 5).as_bytes()), None);
        let sock = Attrs::new()
            .u8(k::PROTO, 17)
            .bytes(k::LOCAL_ADDR, &[127, 0, 0, 1])
            .u16(k::LOCAL_PORT, 53)
            .u32(k::PID, 42)
            .string(k::PROCESS, "dnsmasq")
            .bytes(
                k::MODULES,
                &[3u32.to_ne_bytes(), 4u32.to_ne_bytes()].concat(),
            );
        let i = parse_socket(sock.as_bytes());
        assert_eq!(i.protocol, Protocol::Udp);
        assert_eq!(i.source, Some("127.0.0.1:53".parse().unwrap()));
        assert_eq!(i.destination, None);
        assert_eq!(
            (i.pid, i.process_name.as_str(), i.modules),
            (42, "dnsmasq", vec![3, 4])
        );
    }

    #[test]
    fn kernel_errors_map_to_tap_errors() {
        let k = |errno| NlError::Kernel {
            errno,
            message: "m".into(),
        };
        assert_eq!(tap_error(3, k(libc::ENOENT)), TapError::UnknownModule(3));
        assert!(matches!(
            tap_error(3, k(libc::ENOSPC)),
            TapError::ResourceExhausted(_)
        ));
        assert!(matches!(
            tap_error(3, k(libc::EINVAL)),
            TapError::Refused { id: 3, .. }
        ));
        assert!(matches!(
            tap_error(3, NlError::Malformed("x")),
            TapError::Backend(_)
        ));
    }

    #[test]
    fn attribute_parser_stops_at_garbage() {
        let bytes = [8u8, 0, 1, 0, 1, 2, 3, 4, 200, 0, 2, 0];
        let v: Vec<_> = nl::parse_attrs(&bytes).collect();
        assert_eq!(v, vec![(1, &[1u8, 2, 3, 4][..])]);
    }
}
