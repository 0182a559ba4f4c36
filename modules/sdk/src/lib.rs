//! The Layer 4.5 module-kind SDK: write a customization module kind once,
//! in safe Rust, and build it into a *module image* — a user-space shared
//! object (`cdylib`) or, from the same source, a kernel module.
//!
//! A kind author implements [`ModuleKind`] (parameters, optional per-socket
//! state, send/recv with the contract of the built-in kinds'
//! [`l45_modules::Instance`]) and exports it with [`export_kind!`], which
//! emits the `#[no_mangle] static l45_kind_v1` table of the versioned C ABI
//! ([`l45_modules::abi`]). The table's functions are `extern "C"` shims
//! that check every pointer, length and code the tap hands them and never
//! panic: a bad call gets a harmless answer (`NotMine`, `PassThrough`, 0).
//!
//! `core` only (no `alloc`, no floats needed): the kernel has neither.
//! See `docs/images-sdk.md` and `modules/kind-template/`.
#![no_std]
#![allow(unsafe_code)] // the FFI boundary to the tap; every block has a SAFETY note

use core::fmt;
use core::mem::{align_of, size_of};

/// The module API crate, for tests that run a kind as the tap does
/// (`Instance`, `Kind::External`).
pub use l45_modules as modules;
pub use l45_modules::abi::{
    AbiError, ExternalKind, KindV1, ParamsBlob, RawCtx, RawParam, RawSplice, RawVerdict, StateBlob,
    ABI_VERSION, ERROR_MAX, NAME_MAX, PAIRS_MAX, PARAMS_MAX, STATE_MAX,
};
pub use l45_modules::{Ctx, Directions, RecvVerdict, Role, SendVerdict, Splice, Transport};

use l45_modules::abi::{
    ACTS_ON_RECV, ACTS_ON_SEND, FLAG_KEEPS_SOCKET_STATE, ROLE_CLIENT, ROLE_SERVER,
    TRANSPORT_DATAGRAM, TRANSPORT_STREAM, VERDICT_CUSTOMIZED, VERDICT_DELAY, VERDICT_DROP,
    VERDICT_NOT_MINE, VERDICT_PASS_THROUGH,
};

/// Why a kind's parser refused its parameters: a message of at most
/// [`ERROR_MAX`] bytes (longer ones are cut at a character boundary), which
/// the operator sees in the `<rpc-error>` of the commit.
#[derive(Clone, Copy)]
pub struct ParamError {
    len: usize,
    bytes: [u8; ERROR_MAX],
}

impl ParamError {
    pub fn new(message: &str) -> ParamError {
        let mut e = ParamError {
            len: 0,
            bytes: [0; ERROR_MAX],
        };
        let _ = fmt::Write::write_str(&mut e, message);
        e
    }

    /// A message built with `format_args!` (no allocation).
    pub fn format(args: fmt::Arguments<'_>) -> ParamError {
        let mut e = ParamError::new("");
        let _ = fmt::write(&mut e, args);
        e
    }

    pub fn as_str(&self) -> &str {
        // Only whole characters are ever written (`write_str`).
        core::str::from_utf8(self.bytes.get(..self.len).unwrap_or(&[])).unwrap_or("")
    }
}

impl From<&str> for ParamError {
    fn from(message: &str) -> ParamError {
        ParamError::new(message)
    }
}

impl fmt::Write for ParamError {
    /// Appends what fits, whole characters only; never fails, so a long
    /// message is cut rather than lost.
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            let mut buf = [0u8; 4];
            let enc = c.encode_utf8(&mut buf).as_bytes();
            let Some(dst) = self.bytes.get_mut(self.len..self.len + enc.len()) else {
                break;
            };
            dst.copy_from_slice(enc);
            self.len += enc.len();
        }
        Ok(())
    }
}

impl fmt::Debug for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParamError({:?})", self.as_str())
    }
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A module kind. Every method has the contract of the
/// [`l45_modules::Instance`] method of the same name: never block, never
/// allocate, touch only what it is given; `out` is at least the capacity
/// the kind declared for the input's length (check anyway: a shorter one
/// must get `NotMine`, not a panic).
pub trait ModuleKind {
    /// Parsed parameters: at most [`PARAMS_MAX`] bytes, aligned to at most
    /// 8 (checked when the table is built). Copied freely by the tap.
    type Params: Copy;
    /// Per-socket state: at most [`STATE_MAX`]` - 8` bytes, aligned to at
    /// most 8. A socket's state starts as `Default::default()`. Use `()`
    /// if the kind keeps nothing per socket (then the tap may hand a closed
    /// socket's chain to the next one as it is).
    type State: Copy + Default;

    /// Builds the parameters from the module entry's (leaf name, value)
    /// pairs, at most [`PAIRS_MAX`], in name order. Refuse what is wrong
    /// with a message saying why; the commit then fails and nothing
    /// changes.
    fn parse(pairs: &[(&str, &str)]) -> Result<Self::Params, ParamError>;

    /// Which directions the kind acts on for a socket of `role` and
    /// `transport`; elsewhere its send/recv must answer `NotMine`.
    fn acts_on(params: &Self::Params, role: Role, transport: Transport) -> Directions;

    /// Output space `send` needs for `input_len` input bytes.
    fn send_capacity(params: &Self::Params, input_len: usize) -> usize;

    /// Output space `recv` needs for `input_len` input bytes.
    fn recv_capacity(params: &Self::Params, input_len: usize) -> usize;

    /// Customizes one outgoing message or stream chunk.
    fn send(
        params: &Self::Params,
        state: &mut Self::State,
        ctx: &Ctx<'_>,
        input: &[u8],
        out: &mut [u8],
    ) -> SendVerdict;

    /// Customizes one incoming message or stream chunk.
    fn recv(
        params: &Self::Params,
        state: &mut Self::State,
        ctx: &Ctx<'_>,
        input: &[u8],
        out: &mut [u8],
    ) -> RecvVerdict;

    /// End of stream: bytes still held, written to `out`.
    fn recv_eof(_params: &Self::Params, _state: &mut Self::State, _out: &mut [u8]) -> usize {
        0
    }

    /// Whether a receiving socket must drop what no module of its chain
    /// recognised.
    fn required_on_recv(_params: &Self::Params, _role: Role, _transport: Transport) -> bool {
        false
    }

    /// The kind's datagram customization, if it is one fixed insertion;
    /// `bytes` must borrow from `params`.
    fn splice(_params: &Self::Params) -> Option<Splice<'_>> {
        None
    }
}

/// A kind table the SDK built from a [`ModuleKind`]: the only way to make
/// one is [`table`], so its functions are this crate's shims and checking
/// it is safe. Same layout as [`KindV1`] (what the symbol must hold).
#[repr(transparent)]
pub struct Table(KindV1);

impl Table {
    /// The checked kind, as a tap holds it after loading the image.
    pub fn check(&'static self) -> Result<ExternalKind, AbiError> {
        // SAFETY: a `Table` is only made by `table()`: its functions are
        // this crate's shims, which keep the `KindV1` contract, and it is
        // borrowed for 'static.
        unsafe { ExternalKind::new(&self.0) }
    }

    pub fn raw(&self) -> &KindV1 {
        &self.0
    }
}

/// Bytes of the [`StateBlob`] the SDK keeps before a kind's state: a word
/// that says the state was initialised (the tap zeroes a new socket's blob).
const STATE_HEADER: usize = 8;
const STATE_READY: u64 = 0x4c34_3553_5441_5445; // "L45STATE"

const fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > NAME_MAX || !b[0].is_ascii_lowercase() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-') {
            return false;
        }
        i += 1;
    }
    true
}

/// Builds the ABI table of kind `K` named `name`. In a `static` (as
/// [`export_kind!`] puts it) a kind whose types do not fit, or a bad name,
/// fails the build.
pub const fn table<K: ModuleKind>(name: &'static str) -> Table {
    assert!(
        size_of::<K::Params>() <= PARAMS_MAX,
        "ModuleKind::Params is larger than PARAMS_MAX"
    );
    assert!(
        align_of::<K::Params>() <= 8,
        "ModuleKind::Params needs alignment above 8"
    );
    assert!(
        size_of::<K::State>() <= STATE_MAX - STATE_HEADER,
        "ModuleKind::State is larger than STATE_MAX - 8"
    );
    assert!(
        align_of::<K::State>() <= 8,
        "ModuleKind::State needs alignment above 8"
    );
    assert!(
        valid_name(name),
        "kind name must be 1-64 characters of [a-z0-9-] starting with a letter"
    );
    let keeps_state = size_of::<K::State>() > 0;
    Table(KindV1 {
        abi_version: ABI_VERSION,
        params_size: size_of::<K::Params>() as u32,
        state_size: if keeps_state {
            (STATE_HEADER + size_of::<K::State>()) as u32
        } else {
            0
        },
        flags: if keeps_state {
            FLAG_KEEPS_SOCKET_STATE
        } else {
            0
        },
        name: name.as_ptr(),
        name_len: name.len(),
        parse: Some(parse_shim::<K>),
        capacity: Some(capacity_shim::<K>),
        acts_on: Some(acts_on_shim::<K>),
        required_on_recv: Some(required_on_recv_shim::<K>),
        splice: Some(splice_shim::<K>),
        send: Some(send_shim::<K>),
        recv: Some(recv_shim::<K>),
        recv_eof: Some(recv_eof_shim::<K>),
    })
}

/// Exports kind `$kind` (a [`ModuleKind`]) under the name `$name` as the
/// image's `l45_kind_v1` symbol, and as `KIND_TABLE` for the crate's own
/// tests (`KIND_TABLE.check()`).
#[macro_export]
macro_rules! export_kind {
    ($kind:ty, $name:literal) => {
        /// This image's kind table (the `l45_kind_v1` symbol).
        #[no_mangle]
        #[allow(non_upper_case_globals)]
        pub static l45_kind_v1: $crate::Table = $crate::table::<$kind>($name);
        /// The same table under a Rust name, for tests.
        pub static KIND_TABLE: &$crate::Table = &l45_kind_v1;
    };
}

/// The panic handler of a `no_std` image. The SDK's shims never panic, and
/// a kind should not either; if it does anyway, the process aborts (a
/// user-space image calls libc's `abort`, like `panic = "abort"`).
#[macro_export]
macro_rules! image_panic_handler {
    () => {
        #[panic_handler]
        fn l45_image_panic(_: &core::panic::PanicInfo<'_>) -> ! {
            extern "C" {
                fn abort() -> !;
            }
            // SAFETY: libc's abort takes nothing and never returns; every
            // process that loads a user-space image has libc.
            unsafe { abort() }
        }

        /// The precompiled `core` was built to unwind and names this
        /// symbol; with `panic = "abort"` nothing ever calls it, but a
        /// shared object must resolve it to load (`RTLD_NOW`).
        #[no_mangle]
        extern "C" fn rust_eh_personality() {}
    };
}

// ===== the shims: raw C arguments → safe calls, bound-checked =====

/// The kind's parameters in a blob the tap got from this kind's parser.
///
/// # Safety
/// `params` is null or points to a [`ParamsBlob`] that `parse_shim::<K>`
/// filled (the tap only passes blobs from `ExternalKind::parse`, copied
/// bytewise, which keeps a `Copy` type valid).
unsafe fn params_of<'a, K: ModuleKind>(params: *const ParamsBlob) -> Option<&'a K::Params> {
    // SAFETY: non-null blobs are 8-aligned, PARAMS_MAX bytes, and hold a
    // K::Params written by parse_shim (size and alignment asserted in
    // `table`).
    unsafe { params.cast::<K::Params>().as_ref() }
}

/// The kind's state in a socket's blob, initialised on first use.
///
/// # Safety
/// `state` is null or points to a [`StateBlob`] the tap keeps for this
/// (socket, module), zeroed when the socket first met the module and
/// written since only by this kind's shims; nothing else uses it during
/// the call.
unsafe fn state_of<'a, K: ModuleKind>(state: *mut StateBlob) -> Option<&'a mut K::State> {
    if size_of::<K::State>() == 0 {
        // A zero-sized state is never read or written: any aligned
        // non-null pointer will do, and the tap's blob stays untouched.
        return Some(
            // SAFETY: a dangling, aligned pointer is valid for a ZST.
            unsafe { core::ptr::NonNull::<K::State>::dangling().as_mut() },
        );
    }
    // SAFETY: by the caller's guarantee the blob is valid and ours.
    let blob = unsafe { state.as_mut() }?;
    let base = blob.0.as_mut_ptr();
    // SAFETY: the blob is 8-aligned and STATE_MAX bytes; the header word is
    // at offset 0 and the state at STATE_HEADER (8), which keeps alignment
    // ≤ 8; the state fits (asserted in `table`).
    unsafe {
        let ready = base.cast::<u64>();
        let st = base.add(STATE_HEADER).cast::<K::State>();
        if ready.read() != STATE_READY {
            st.write(K::State::default());
            ready.write(STATE_READY);
        }
        Some(&mut *st)
    }
}

/// A byte slice from a C pointer and length; an empty slice for (null, 0).
///
/// # Safety
/// A non-null `ptr` points to `len` readable bytes that outlive `'a`.
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        return (len == 0).then_some(&[][..]);
    }
    if len > isize::MAX as usize {
        return None;
    }
    // SAFETY: the caller's guarantee.
    Some(unsafe { core::slice::from_raw_parts(ptr, len) })
}

/// As [`bytes`], writable.
///
/// # Safety
/// A non-null `ptr` points to `len` writable bytes, used by nothing else,
/// that outlive `'a`.
unsafe fn bytes_mut<'a>(ptr: *mut u8, len: usize) -> Option<&'a mut [u8]> {
    if ptr.is_null() {
        return (len == 0).then_some(&mut [][..]);
    }
    if len > isize::MAX as usize {
        return None;
    }
    // SAFETY: the caller's guarantee.
    Some(unsafe { core::slice::from_raw_parts_mut(ptr, len) })
}

fn role_of(role: u32) -> Option<Role> {
    match role {
        ROLE_CLIENT => Some(Role::Client),
        ROLE_SERVER => Some(Role::Server),
        _ => None,
    }
}

fn transport_of(transport: u32) -> Option<Transport> {
    match transport {
        TRANSPORT_STREAM => Some(Transport::Stream),
        TRANSPORT_DATAGRAM => Some(Transport::Datagram),
        _ => None,
    }
}

/// Writes `message` into the tap's error buffer; returns its length (at
/// least 1: 0 means success).
///
/// # Safety
/// As [`bytes_mut`] for (`error`, `cap`).
unsafe fn report(message: &str, error: *mut u8, cap: usize) -> usize {
    // SAFETY: the caller's guarantee.
    let Some(buf) = (unsafe { bytes_mut(error, cap) }) else {
        return 1;
    };
    // Whole characters only: the tap keeps the longest valid UTF-8 prefix.
    let mut len = message.len().min(buf.len());
    while !message.is_char_boundary(len) {
        len -= 1;
    }
    buf[..len].copy_from_slice(&message.as_bytes()[..len]);
    // An error must never read as success, even with no room to say why.
    len.max(1)
}

unsafe extern "C" fn parse_shim<K: ModuleKind>(
    pairs: *const RawParam,
    n: usize,
    params: *mut ParamsBlob,
    error: *mut u8,
    error_cap: usize,
) -> usize {
    let fail = |m: &str| {
        // SAFETY: the tap passes an error buffer of error_cap bytes.
        unsafe { report(m, error, error_cap) }
    };
    if n > PAIRS_MAX {
        return fail("too many parameters");
    }
    if params.is_null() {
        return fail("no parameter buffer");
    }
    let mut raw: &[RawParam] = &[];
    if n > 0 {
        if pairs.is_null() {
            return fail("no parameters");
        }
        // SAFETY: the tap passes n pairs.
        raw = unsafe { core::slice::from_raw_parts(pairs, n) };
    }
    let mut text: [(&str, &str); PAIRS_MAX] = [("", ""); PAIRS_MAX];
    for (slot, p) in text.iter_mut().zip(raw) {
        // SAFETY: each pair points into strings the tap holds for the call.
        let (Some(name), Some(value)) = (unsafe { bytes(p.name, p.name_len) }, unsafe {
            bytes(p.value, p.value_len)
        }) else {
            return fail("bad parameter pointer");
        };
        let (Ok(name), Ok(value)) = (core::str::from_utf8(name), core::str::from_utf8(value))
        else {
            return fail("parameter is not UTF-8");
        };
        *slot = (name, value);
    }
    match K::parse(&text[..raw.len()]) {
        Ok(p) => {
            // SAFETY: params is the tap's blob, non-null (checked), 8-aligned
            // and PARAMS_MAX bytes; K::Params fits it (asserted in `table`).
            // Zeroed first, so bytes past the parameters are defined.
            unsafe {
                params.write(ParamsBlob([0; PARAMS_MAX]));
                params.cast::<K::Params>().write(p);
            }
            0
        }
        Err(e) => fail(e.as_str()),
    }
}

unsafe extern "C" fn capacity_shim<K: ModuleKind>(
    params: *const ParamsBlob,
    send: u32,
    input_len: usize,
) -> usize {
    // SAFETY: the tap passes this kind's parsed blob.
    let Some(p) = (unsafe { params_of::<K>(params) }) else {
        return 0;
    };
    if send != 0 {
        K::send_capacity(p, input_len)
    } else {
        K::recv_capacity(p, input_len)
    }
}

unsafe extern "C" fn acts_on_shim<K: ModuleKind>(
    params: *const ParamsBlob,
    role: u32,
    transport: u32,
) -> u32 {
    // SAFETY: as in capacity_shim.
    let Some(p) = (unsafe { params_of::<K>(params) }) else {
        return 0;
    };
    let (Some(role), Some(transport)) = (role_of(role), transport_of(transport)) else {
        return 0;
    };
    let d = K::acts_on(p, role, transport);
    (if d.send { ACTS_ON_SEND } else { 0 }) | (if d.recv { ACTS_ON_RECV } else { 0 })
}

unsafe extern "C" fn required_on_recv_shim<K: ModuleKind>(
    params: *const ParamsBlob,
    role: u32,
    transport: u32,
) -> u32 {
    // SAFETY: as in capacity_shim.
    let Some(p) = (unsafe { params_of::<K>(params) }) else {
        return 0;
    };
    let (Some(role), Some(transport)) = (role_of(role), transport_of(transport)) else {
        return 0;
    };
    u32::from(K::required_on_recv(p, role, transport))
}

unsafe extern "C" fn splice_shim<K: ModuleKind>(
    params: *const ParamsBlob,
    out: *mut RawSplice,
) -> u32 {
    // SAFETY: as in capacity_shim.
    let Some(p) = (unsafe { params_of::<K>(params) }) else {
        return 0;
    };
    if out.is_null() {
        return 0;
    }
    let Some(s) = K::splice(p) else {
        return 0;
    };
    // SAFETY: out is the tap's RawSplice, non-null (checked). The tap
    // itself checks that the bytes lie inside the blob.
    unsafe {
        out.write(RawSplice {
            at: s.at,
            bytes: s.bytes.as_ptr(),
            len: s.bytes.len(),
            min_send: s.min_send,
        })
    };
    1
}

/// Parameters, state, context, input and output of one data call.
type DataArgs<'a, K> = (
    &'a <K as ModuleKind>::Params,
    &'a mut <K as ModuleKind>::State,
    Ctx<'a>,
    &'a [u8],
    &'a mut [u8],
);

/// The safe arguments of a data call, or `None` if any is unusable.
///
/// # Safety
/// The pointers are as `KindV1`'s `send`/`recv` documents them.
unsafe fn data_args<'a, K: ModuleKind>(
    params: *const ParamsBlob,
    state: *mut StateBlob,
    ctx: *const RawCtx,
    input: *const u8,
    input_len: usize,
    out: *mut u8,
    out_len: usize,
) -> Option<DataArgs<'a, K>> {
    // SAFETY (all): the tap's blobs, context and buffers of the lengths it
    // passes, borrowed for the call; the output does not overlap the input.
    let p = unsafe { params_of::<K>(params) }?;
    let st = unsafe { state_of::<K>(state) }?;
    let raw = unsafe { ctx.as_ref() }?;
    let ctx = Ctx {
        role: role_of(raw.role)?,
        transport: transport_of(raw.transport)?,
        thread_name: unsafe { bytes(raw.thread_name, raw.thread_name_len) }?,
        process_name: unsafe { bytes(raw.process_name, raw.process_name_len) }?,
    };
    let input = unsafe { bytes(input, input_len) }?;
    let out = unsafe { bytes_mut(out, out_len) }?;
    Some((p, st, ctx, input, out))
}

fn verdict(code: u32, value: u32) -> RawVerdict {
    RawVerdict { code, value }
}

unsafe extern "C" fn send_shim<K: ModuleKind>(
    params: *const ParamsBlob,
    state: *mut StateBlob,
    ctx: *const RawCtx,
    input: *const u8,
    input_len: usize,
    out: *mut u8,
    out_len: usize,
) -> RawVerdict {
    // SAFETY: arguments as the ABI documents them.
    let Some((p, st, ctx, input, out)) =
        (unsafe { data_args::<K>(params, state, ctx, input, input_len, out, out_len) })
    else {
        return verdict(VERDICT_NOT_MINE, 0);
    };
    let out_len = out.len();
    match K::send(p, st, &ctx, input, out) {
        SendVerdict::Customized(n) => match u32::try_from(n) {
            Ok(v) if n <= out_len => verdict(VERDICT_CUSTOMIZED, v),
            _ => verdict(VERDICT_PASS_THROUGH, 0),
        },
        SendVerdict::NotMine => verdict(VERDICT_NOT_MINE, 0),
        SendVerdict::PassThrough => verdict(VERDICT_PASS_THROUGH, 0),
        SendVerdict::Drop => verdict(VERDICT_DROP, 0),
        SendVerdict::Delay(ms) => verdict(VERDICT_DELAY, ms),
    }
}

unsafe extern "C" fn recv_shim<K: ModuleKind>(
    params: *const ParamsBlob,
    state: *mut StateBlob,
    ctx: *const RawCtx,
    input: *const u8,
    input_len: usize,
    out: *mut u8,
    out_len: usize,
) -> RawVerdict {
    // SAFETY: arguments as the ABI documents them.
    let Some((p, st, ctx, input, out)) =
        (unsafe { data_args::<K>(params, state, ctx, input, input_len, out, out_len) })
    else {
        return verdict(VERDICT_NOT_MINE, 0);
    };
    let out_len = out.len();
    match K::recv(p, st, &ctx, input, out) {
        RecvVerdict::Customized(n) => match u32::try_from(n) {
            Ok(v) if n <= out_len => verdict(VERDICT_CUSTOMIZED, v),
            _ => verdict(VERDICT_PASS_THROUGH, 0),
        },
        RecvVerdict::NotMine => verdict(VERDICT_NOT_MINE, 0),
        RecvVerdict::PassThrough => verdict(VERDICT_PASS_THROUGH, 0),
        RecvVerdict::Drop => verdict(VERDICT_DROP, 0),
    }
}

unsafe extern "C" fn recv_eof_shim<K: ModuleKind>(
    params: *const ParamsBlob,
    state: *mut StateBlob,
    out: *mut u8,
    out_len: usize,
) -> usize {
    // SAFETY: arguments as the ABI documents them.
    let (Some(p), Some(st), Some(out)) = (
        unsafe { params_of::<K>(params) },
        unsafe { state_of::<K>(state) },
        unsafe { bytes_mut(out, out_len) },
    ) else {
        return 0;
    };
    let len = out.len();
    K::recv_eof(p, st, out).min(len)
}

#[cfg(test)]
mod tests;
