//! The versioned C ABI of a module kind that is not built in (a *module
//! image*): a user-space shared object exports one [`KindV1`] under the
//! symbol [`SYMBOL`]; a kernel module hands the same table to `l45.ko`.
//! The SDK (`l45-kind-sdk`) fills the table from a Rust type; the taps read
//! it only through [`ExternalKind`], which checks it once.
//!
//! Everything crosses as plain C types: the kind's parsed parameters live
//! in a fixed [`ParamsBlob`] the tap stores with the module instance, its
//! per-socket state in a [`StateBlob`] the tap keeps per (socket, module),
//! zeroed when a socket first meets the module. The contract of every
//! function is the one of the built-in kinds' [`crate::Instance`] methods
//! of the same name.
#![allow(unsafe_code)] // the FFI boundary to images; every block has a SAFETY note

use super::{Ctx, Directions, ParamError, RecvVerdict, Role, SendVerdict, Splice, Transport};

/// The ABI version this tap speaks. An image built for another is refused.
pub const ABI_VERSION: u32 = 1;
/// The symbol a user-space image exports its [`KindV1`] under.
pub const SYMBOL: &str = "l45_kind_v1";
/// Largest parsed parameters a kind may keep.
pub const PARAMS_MAX: usize = 256;
/// Largest per-socket state a kind may keep.
pub const STATE_MAX: usize = 64;
/// Longest kind name.
pub const NAME_MAX: usize = 64;
/// Most parameters one module entry passes to a kind's parser.
pub const PAIRS_MAX: usize = 16;
/// Longest parameter error message kept.
pub const ERROR_MAX: usize = 96;

/// A kind's parsed parameters (written by its `parse`).
#[repr(C, align(8))]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ParamsBlob(pub [u8; PARAMS_MAX]);

impl core::fmt::Debug for ParamsBlob {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ParamsBlob(..)")
    }
}

/// A kind's state for one socket; starts zeroed.
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateBlob(pub [u8; STATE_MAX]);

impl Default for StateBlob {
    fn default() -> Self {
        StateBlob([0; STATE_MAX])
    }
}

/// One `name = value` parameter (UTF-8, not NUL-terminated).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawParam {
    pub name: *const u8,
    pub name_len: usize,
    pub value: *const u8,
    pub value_len: usize,
}

/// [`Ctx`] in C terms.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawCtx {
    /// [`ROLE_CLIENT`] or [`ROLE_SERVER`].
    pub role: u32,
    /// [`TRANSPORT_STREAM`] or [`TRANSPORT_DATAGRAM`].
    pub transport: u32,
    pub thread_name: *const u8,
    pub thread_name_len: usize,
    pub process_name: *const u8,
    pub process_name_len: usize,
}

pub const ROLE_CLIENT: u32 = 0;
pub const ROLE_SERVER: u32 = 1;
pub const TRANSPORT_STREAM: u32 = 0;
pub const TRANSPORT_DATAGRAM: u32 = 1;

/// A verdict: `code` is one of the `VERDICT_*` constants, `value` the
/// byte count of `Customized` or the milliseconds of `Delay`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawVerdict {
    pub code: u32,
    pub value: u32,
}

pub const VERDICT_CUSTOMIZED: u32 = 0;
pub const VERDICT_NOT_MINE: u32 = 1;
pub const VERDICT_PASS_THROUGH: u32 = 2;
pub const VERDICT_DROP: u32 = 3;
pub const VERDICT_DELAY: u32 = 4;

/// [`Splice`] in C terms; `bytes` points into the kind's [`ParamsBlob`].
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawSplice {
    pub at: usize,
    pub bytes: *const u8,
    pub len: usize,
    pub min_send: usize,
}

/// `acts_on` result bits.
pub const ACTS_ON_SEND: u32 = 1;
pub const ACTS_ON_RECV: u32 = 2;
/// `flags` bit: the kind keeps something in its [`StateBlob`].
pub const FLAG_KEEPS_SOCKET_STATE: u32 = 1;

/// Parses `n` parameters into `params`; returns 0, or the length of an
/// error message written to `error` (at most `error_cap` bytes, UTF-8).
pub type ParseFn = unsafe extern "C" fn(
    pairs: *const RawParam,
    n: usize,
    params: *mut ParamsBlob,
    error: *mut u8,
    error_cap: usize,
) -> usize;
/// Output space for `input_len` bytes: `send` != 0 for the send side.
pub type CapacityFn =
    unsafe extern "C" fn(params: *const ParamsBlob, send: u32, input_len: usize) -> usize;
/// `ACTS_ON_*` bits for a socket of this role and transport; also used
/// for `required_on_recv` (non-zero = required).
pub type SocketFn =
    unsafe extern "C" fn(params: *const ParamsBlob, role: u32, transport: u32) -> u32;
/// Fills `out` and returns 1 if the kind is one fixed insertion, else 0.
pub type SpliceFn = unsafe extern "C" fn(params: *const ParamsBlob, out: *mut RawSplice) -> u32;
/// `send` or `recv` of one message or stream chunk.
pub type DataFn = unsafe extern "C" fn(
    params: *const ParamsBlob,
    state: *mut StateBlob,
    ctx: *const RawCtx,
    input: *const u8,
    input_len: usize,
    out: *mut u8,
    out_len: usize,
) -> RawVerdict;
/// End of stream: bytes written to `out`.
pub type EofFn = unsafe extern "C" fn(
    params: *const ParamsBlob,
    state: *mut StateBlob,
    out: *mut u8,
    out_len: usize,
) -> usize;

/// The table an image exports. Every function must be set, never block,
/// allocate or panic across the boundary, and touch only the memory it is
/// given.
#[repr(C)]
pub struct KindV1 {
    /// [`ABI_VERSION`].
    pub abi_version: u32,
    /// Bytes of [`ParamsBlob`] the kind uses (≤ [`PARAMS_MAX`]).
    pub params_size: u32,
    /// Bytes of [`StateBlob`] the kind uses (≤ [`STATE_MAX`]).
    pub state_size: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// The kind's name: 1..=[`NAME_MAX`] bytes of `[a-z0-9-]`, starting
    /// with a letter, not a built-in kind's name.
    pub name: *const u8,
    pub name_len: usize,
    pub parse: Option<ParseFn>,
    pub capacity: Option<CapacityFn>,
    pub acts_on: Option<SocketFn>,
    pub required_on_recv: Option<SocketFn>,
    pub splice: Option<SpliceFn>,
    pub send: Option<DataFn>,
    pub recv: Option<DataFn>,
    pub recv_eof: Option<EofFn>,
}

// SAFETY: a KindV1 is immutable once exported: plain numbers, function
// pointers and a pointer to a static name. Sharing it between threads
// shares nothing mutable.
unsafe impl Sync for KindV1 {}

/// Why a [`KindV1`] table was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbiError {
    Null,
    /// Built for another ABI version (the one found).
    Version(u32),
    ParamsTooLarge(u32),
    StateTooLarge(u32),
    BadName,
    /// The name of a built-in kind.
    BuiltInName,
    /// A function pointer is not set (which one).
    MissingFunction(&'static str),
}

impl core::fmt::Display for AbiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AbiError::Null => f.write_str("no kind table"),
            AbiError::Version(v) => write!(f, "ABI version {v}, this tap speaks {ABI_VERSION}"),
            AbiError::ParamsTooLarge(n) => {
                write!(f, "parameters of {n} bytes (at most {PARAMS_MAX})")
            }
            AbiError::StateTooLarge(n) => {
                write!(f, "socket state of {n} bytes (at most {STATE_MAX})")
            }
            AbiError::BadName => {
                f.write_str("kind name is not 1-64 characters of [a-z0-9-] starting with a letter")
            }
            AbiError::BuiltInName => f.write_str("kind name is a built-in kind's"),
            AbiError::MissingFunction(n) => write!(f, "function {n} is not set"),
        }
    }
}

/// A checked kind table: what a tap holds for a loaded image.
#[derive(Clone, Copy)]
pub struct ExternalKind {
    table: &'static KindV1,
    name: &'static str,
}

impl PartialEq for ExternalKind {
    fn eq(&self, other: &Self) -> bool {
        core::ptr::eq(self.table, other.table)
    }
}

impl Eq for ExternalKind {}

impl core::fmt::Debug for ExternalKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ExternalKind({})", self.name)
    }
}

/// Whether `name` may name an external kind.
pub fn valid_name(name: &[u8]) -> bool {
    (1..=NAME_MAX).contains(&name.len())
        && name[0].is_ascii_lowercase()
        && name
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

impl ExternalKind {
    /// Checks a table an image exported.
    ///
    /// # Safety
    /// `table` is null or points to a [`KindV1`] that, with its name and
    /// the code its functions point to, stays valid and unchanged for the
    /// rest of the program (a user-space image is never unloaded; a kernel
    /// image is pinned while registered) and whose functions keep the
    /// contract documented on [`KindV1`].
    pub unsafe fn new(table: *const KindV1) -> Result<ExternalKind, AbiError> {
        // SAFETY: the caller guarantees a null or valid, 'static table.
        let table: &'static KindV1 = unsafe { table.as_ref() }.ok_or(AbiError::Null)?;
        if table.abi_version != ABI_VERSION {
            return Err(AbiError::Version(table.abi_version));
        }
        if table.params_size as usize > PARAMS_MAX {
            return Err(AbiError::ParamsTooLarge(table.params_size));
        }
        if table.state_size as usize > STATE_MAX {
            return Err(AbiError::StateTooLarge(table.state_size));
        }
        if table.name.is_null() || table.name_len == 0 || table.name_len > NAME_MAX {
            return Err(AbiError::BadName);
        }
        // SAFETY: non-null and, by the caller's guarantee, name_len bytes
        // that live as long as the table.
        let name = unsafe { core::slice::from_raw_parts(table.name, table.name_len) };
        if !valid_name(name) {
            return Err(AbiError::BadName);
        }
        let name = core::str::from_utf8(name).map_err(|_| AbiError::BadName)?;
        if super::Kind::ALL.iter().any(|k| k.name() == name) {
            return Err(AbiError::BuiltInName);
        }
        let missing = [
            ("parse", table.parse.is_none()),
            ("capacity", table.capacity.is_none()),
            ("acts_on", table.acts_on.is_none()),
            ("required_on_recv", table.required_on_recv.is_none()),
            ("splice", table.splice.is_none()),
            ("send", table.send.is_none()),
            ("recv", table.recv.is_none()),
            ("recv_eof", table.recv_eof.is_none()),
        ];
        if let Some((f, _)) = missing.into_iter().find(|(_, m)| *m) {
            return Err(AbiError::MissingFunction(f));
        }
        Ok(ExternalKind { table, name })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The table, for a tap that must hand it on (the kernel registry).
    pub fn table(&self) -> &'static KindV1 {
        self.table
    }

    pub fn keeps_socket_state(&self) -> bool {
        self.table.flags & FLAG_KEEPS_SOCKET_STATE != 0
    }

    /// Runs the kind's parser over at most [`PAIRS_MAX`] parameters.
    pub fn parse<'a>(
        &self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<ParamsBlob, ParamError> {
        let empty = RawParam {
            name: core::ptr::null(),
            name_len: 0,
            value: core::ptr::null(),
            value_len: 0,
        };
        let mut raw = [empty; PAIRS_MAX];
        let mut n = 0;
        for (name, value) in pairs {
            let slot = raw
                .get_mut(n)
                .ok_or(ParamError::BadValue("too many parameters"))?;
            *slot = RawParam {
                name: name.as_ptr(),
                name_len: name.len(),
                value: value.as_ptr(),
                value_len: value.len(),
            };
            n += 1;
        }
        let mut blob = ParamsBlob([0; PARAMS_MAX]);
        let mut error = [0u8; ERROR_MAX];
        let Some(parse) = self.table.parse else {
            return Err(ParamError::UnknownKind);
        };
        // SAFETY: `raw[..n]` point into the caller's strings, alive for the
        // call; blob and error are ours, of the sizes passed.
        let len = unsafe { parse(raw.as_ptr(), n, &mut blob, error.as_mut_ptr(), ERROR_MAX) };
        if len == 0 {
            Ok(blob)
        } else {
            Err(ParamError::Rejected(ErrorText::new(
                &error[..len.min(ERROR_MAX)],
            )))
        }
    }

    pub fn capacity(&self, params: &ParamsBlob, send: bool, input_len: usize) -> usize {
        match self.table.capacity {
            // SAFETY: params came from this kind's parser (ExternalKind::parse).
            Some(f) => unsafe { f(params, u32::from(send), input_len) },
            None => 0,
        }
    }

    pub fn acts_on(&self, params: &ParamsBlob, role: Role, transport: Transport) -> Directions {
        let bits = match self.table.acts_on {
            // SAFETY: as in `capacity`.
            Some(f) => unsafe { f(params, raw_role(role), raw_transport(transport)) },
            None => 0,
        };
        Directions {
            send: bits & ACTS_ON_SEND != 0,
            recv: bits & ACTS_ON_RECV != 0,
        }
    }

    pub fn required_on_recv(&self, params: &ParamsBlob, ctx: &Ctx<'_>) -> bool {
        match self.table.required_on_recv {
            // SAFETY: as in `capacity`.
            Some(f) => unsafe { f(params, raw_role(ctx.role), raw_transport(ctx.transport)) != 0 },
            None => false,
        }
    }

    /// The kind's fixed insertion, if it is one; the bytes must lie inside
    /// `params` (anything else is refused as no splice).
    pub fn splice<'p>(&self, params: &'p ParamsBlob) -> Option<Splice<'p>> {
        let f = self.table.splice?;
        let mut raw = RawSplice {
            at: 0,
            bytes: core::ptr::null(),
            len: 0,
            min_send: 0,
        };
        // SAFETY: as in `capacity`; `raw` is ours.
        if unsafe { f(params, &mut raw) } == 0 {
            return None;
        }
        let base = params.0.as_ptr() as usize;
        let start = (raw.bytes as usize).checked_sub(base)?;
        let bytes = params.0.get(start..start.checked_add(raw.len)?)?;
        Some(Splice {
            at: raw.at,
            bytes,
            min_send: raw.min_send,
        })
    }

    pub fn send(
        &self,
        params: &ParamsBlob,
        state: &mut StateBlob,
        ctx: &Ctx<'_>,
        input: &[u8],
        out: &mut [u8],
    ) -> SendVerdict {
        let Some(v) = call_data(self.table.send, params, state, ctx, input, out) else {
            return SendVerdict::NotMine;
        };
        match v.code {
            VERDICT_CUSTOMIZED if (v.value as usize) <= out.len() => {
                SendVerdict::Customized(v.value as usize)
            }
            VERDICT_NOT_MINE => SendVerdict::NotMine,
            VERDICT_PASS_THROUGH => SendVerdict::PassThrough,
            VERDICT_DROP => SendVerdict::Drop,
            VERDICT_DELAY => SendVerdict::Delay(v.value),
            // A length past the buffer or an unknown code: the bytes go out
            // as the application wrote them.
            _ => SendVerdict::PassThrough,
        }
    }

    pub fn recv(
        &self,
        params: &ParamsBlob,
        state: &mut StateBlob,
        ctx: &Ctx<'_>,
        input: &[u8],
        out: &mut [u8],
    ) -> RecvVerdict {
        let Some(v) = call_data(self.table.recv, params, state, ctx, input, out) else {
            return RecvVerdict::NotMine;
        };
        match v.code {
            VERDICT_CUSTOMIZED if (v.value as usize) <= out.len() => {
                RecvVerdict::Customized(v.value as usize)
            }
            VERDICT_NOT_MINE => RecvVerdict::NotMine,
            VERDICT_DROP => RecvVerdict::Drop,
            _ => RecvVerdict::PassThrough,
        }
    }

    pub fn recv_eof(&self, params: &ParamsBlob, state: &mut StateBlob, out: &mut [u8]) -> usize {
        match self.table.recv_eof {
            // SAFETY: as in `call_data`.
            Some(f) => unsafe { f(params, state, out.as_mut_ptr(), out.len()) }.min(out.len()),
            None => 0,
        }
    }
}

/// Calls a kind's `send` or `recv` (`None` if the table has none).
fn call_data(
    f: Option<DataFn>,
    params: &ParamsBlob,
    state: &mut StateBlob,
    ctx: &Ctx<'_>,
    input: &[u8],
    out: &mut [u8],
) -> Option<RawVerdict> {
    let f = f?;
    let raw_ctx = raw_ctx(ctx);
    // SAFETY: every pointer is to memory borrowed for the call, with its
    // length; params came from this kind's parser (ExternalKind::parse).
    Some(unsafe {
        f(
            params,
            state,
            &raw_ctx,
            input.as_ptr(),
            input.len(),
            out.as_mut_ptr(),
            out.len(),
        )
    })
}

fn raw_role(role: Role) -> u32 {
    match role {
        Role::Client => ROLE_CLIENT,
        Role::Server => ROLE_SERVER,
    }
}

fn raw_transport(transport: Transport) -> u32 {
    match transport {
        Transport::Stream => TRANSPORT_STREAM,
        Transport::Datagram => TRANSPORT_DATAGRAM,
    }
}

fn raw_ctx(ctx: &Ctx<'_>) -> RawCtx {
    RawCtx {
        role: raw_role(ctx.role),
        transport: raw_transport(ctx.transport),
        thread_name: ctx.thread_name.as_ptr(),
        thread_name_len: ctx.thread_name.len(),
        process_name: ctx.process_name.as_ptr(),
        process_name_len: ctx.process_name.len(),
    }
}

/// A kind parser's error message, held inline (`ParamError` is `Copy`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ErrorText {
    len: u8,
    bytes: [u8; ERROR_MAX],
}

impl ErrorText {
    /// Keeps the longest valid UTF-8 prefix of `text`.
    pub fn new(text: &[u8]) -> ErrorText {
        let text = &text[..text.len().min(ERROR_MAX)];
        let valid = match core::str::from_utf8(text) {
            Ok(s) => s.len(),
            Err(e) => e.valid_up_to(),
        };
        let mut bytes = [0; ERROR_MAX];
        bytes[..valid].copy_from_slice(&text[..valid]);
        ErrorText {
            len: valid as u8,
            bytes,
        }
    }

    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

impl core::fmt::Debug for ErrorText {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Instance, Kind, SocketState};

    // A hand-written table, as an image exports it: XOR with a one-byte
    // key on datagram sends (client) and receives (server).
    unsafe extern "C" fn parse(
        pairs: *const RawParam,
        n: usize,
        params: *mut ParamsBlob,
        error: *mut u8,
        error_cap: usize,
    ) -> usize {
        // SAFETY: the tap passes n valid pairs and buffers of the sizes given.
        let pairs = unsafe { core::slice::from_raw_parts(pairs, n) };
        for p in pairs {
            // SAFETY: as above.
            let value = unsafe { core::slice::from_raw_parts(p.value, p.value_len) };
            if value.len() != 1 {
                let msg = b"key must be one byte";
                let len = msg.len().min(error_cap);
                // SAFETY: error has error_cap bytes.
                unsafe { core::ptr::copy_nonoverlapping(msg.as_ptr(), error, len) };
                return len;
            }
            // SAFETY: params is the tap's blob.
            unsafe { (*params).0[0] = value[0] };
        }
        0
    }
    unsafe extern "C" fn capacity(_: *const ParamsBlob, _: u32, n: usize) -> usize {
        n
    }
    unsafe extern "C" fn acts_on(_: *const ParamsBlob, role: u32, transport: u32) -> u32 {
        match (role, transport) {
            (ROLE_CLIENT, TRANSPORT_DATAGRAM) => ACTS_ON_SEND,
            (ROLE_SERVER, TRANSPORT_DATAGRAM) => ACTS_ON_RECV,
            _ => 0,
        }
    }
    unsafe extern "C" fn not_required(_: *const ParamsBlob, _: u32, _: u32) -> u32 {
        0
    }
    unsafe extern "C" fn splice(params: *const ParamsBlob, out: *mut RawSplice) -> u32 {
        // SAFETY: the tap's blob and splice.
        unsafe {
            (*out).at = 0;
            (*out).bytes = (*params).0.as_ptr();
            (*out).len = 1;
            (*out).min_send = 0;
        }
        1
    }
    unsafe extern "C" fn xor(
        params: *const ParamsBlob,
        _: *mut StateBlob,
        _: *const RawCtx,
        input: *const u8,
        input_len: usize,
        out: *mut u8,
        out_len: usize,
    ) -> RawVerdict {
        if out_len < input_len {
            return RawVerdict {
                code: VERDICT_NOT_MINE,
                value: 0,
            };
        }
        // SAFETY: the tap's buffers, of the lengths given.
        let (key, input, out) = unsafe {
            (
                (*params).0[0],
                core::slice::from_raw_parts(input, input_len),
                core::slice::from_raw_parts_mut(out, out_len),
            )
        };
        for (o, i) in out.iter_mut().zip(input) {
            *o = i ^ key;
        }
        RawVerdict {
            code: VERDICT_CUSTOMIZED,
            value: input_len as u32,
        }
    }
    unsafe extern "C" fn eof(
        _: *const ParamsBlob,
        _: *mut StateBlob,
        _: *mut u8,
        _: usize,
    ) -> usize {
        0
    }

    const NAME: &[u8] = b"test-xor";

    fn table() -> KindV1 {
        KindV1 {
            abi_version: ABI_VERSION,
            params_size: 1,
            state_size: 0,
            flags: 0,
            name: NAME.as_ptr(),
            name_len: NAME.len(),
            parse: Some(parse),
            capacity: Some(capacity),
            acts_on: Some(acts_on),
            required_on_recv: Some(not_required),
            splice: Some(splice),
            send: Some(xor),
            recv: Some(xor),
            recv_eof: Some(eof),
        }
    }

    fn leak(t: KindV1) -> *const KindV1 {
        extern crate std;
        std::boxed::Box::leak(std::boxed::Box::new(t))
    }

    #[test]
    fn tables_are_checked() {
        // SAFETY (all calls): leaked, hence 'static, tables.
        assert!(unsafe { ExternalKind::new(leak(table())) }.is_ok());
        assert_eq!(
            unsafe { ExternalKind::new(core::ptr::null()) },
            Err(AbiError::Null)
        );
        let v2 = KindV1 {
            abi_version: 2,
            ..table()
        };
        assert_eq!(
            unsafe { ExternalKind::new(leak(v2)) },
            Err(AbiError::Version(2))
        );
        let big = KindV1 {
            params_size: PARAMS_MAX as u32 + 1,
            ..table()
        };
        assert!(matches!(
            unsafe { ExternalKind::new(leak(big)) },
            Err(AbiError::ParamsTooLarge(_))
        ));
        for bad in [&b"Upper"[..], b"", b"1dns", b"a b", b"dns-front-tag"] {
            let t = KindV1 {
                name: bad.as_ptr(),
                name_len: bad.len(),
                ..table()
            };
            let e = unsafe { ExternalKind::new(leak(t)) };
            assert!(
                matches!(e, Err(AbiError::BadName | AbiError::BuiltInName)),
                "{bad:?}: {e:?}"
            );
        }
        let no_send = KindV1 {
            send: None,
            ..table()
        };
        assert_eq!(
            unsafe { ExternalKind::new(leak(no_send)) },
            Err(AbiError::MissingFunction("send"))
        );
    }

    #[test]
    fn an_external_kind_runs_like_a_built_in_one() {
        // SAFETY: a leaked, hence 'static, table.
        let kind = Kind::External(unsafe { ExternalKind::new(leak(table())) }.expect("valid"));
        assert_eq!(kind.name(), "test-xor");
        let refused = Instance::new(1, kind, [("key", "ab")]).expect_err("two bytes");
        assert_eq!(std::format!("{refused}"), "key must be one byte");
        let m = Instance::new(1, kind, [("key", "\x05")]).expect("one byte");
        let ctx = Ctx {
            role: Role::Client,
            transport: Transport::Datagram,
            thread_name: b"t",
            process_name: b"p",
        };
        assert_eq!(
            m.acts_on(Role::Client, Transport::Datagram),
            Directions {
                send: true,
                recv: false
            }
        );
        assert_eq!(
            m.acts_on(Role::Client, Transport::Stream),
            Directions::default()
        );
        let mut state = SocketState::default();
        let mut out = [0u8; 3];
        assert_eq!(
            m.send(&mut state, &ctx, b"abc", &mut out),
            SendVerdict::Customized(3)
        );
        assert_eq!(&out, &[b'a' ^ 5, b'b' ^ 5, b'c' ^ 5]);
        let mut back = [0u8; 3];
        assert_eq!(
            m.recv(&mut state, &ctx, &out, &mut back),
            RecvVerdict::Customized(3)
        );
        assert_eq!(&back, b"abc");
        // Too small an output buffer: the kind declines.
        assert_eq!(
            m.send(&mut state, &ctx, b"abcd", &mut out),
            SendVerdict::NotMine
        );
        // The splice points into the instance's own parameters.
        assert_eq!(m.splice().map(|s| s.bytes), Some(&[5u8][..]));
    }

    extern crate std;
}
