//! `udp-xor-test`: XOR of UDP payloads with a one-byte key. A client's
//! datagrams are masked on send, a server's unmasked on receive, so the
//! bytes on the wire differ from what either application sees. Written
//! directly against the image ABI (`l45_modules::abi`), without the SDK.
//! Parameter: `key`, 1..=255 (decimal).
#![no_std]
#![allow(unsafe_code)] // the ABI's extern "C" functions

use l45_modules::abi::{
    KindV1, ParamsBlob, RawCtx, RawParam, RawSplice, RawVerdict, StateBlob, ABI_VERSION,
    ACTS_ON_RECV, ACTS_ON_SEND, ROLE_CLIENT, ROLE_SERVER, TRANSPORT_DATAGRAM, VERDICT_CUSTOMIZED,
    VERDICT_NOT_MINE,
};

const NAME: &[u8] = b"udp-xor-test";

fn write_error(error: *mut u8, cap: usize, msg: &[u8]) -> usize {
    let len = msg.len().min(cap);
    // SAFETY: the tap's error buffer has `cap` bytes.
    unsafe { core::ptr::copy_nonoverlapping(msg.as_ptr(), error, len) };
    len
}

unsafe extern "C" fn parse(
    pairs: *const RawParam,
    n: usize,
    params: *mut ParamsBlob,
    error: *mut u8,
    error_cap: usize,
) -> usize {
    // SAFETY: the tap passes `n` valid pairs.
    let pairs = unsafe { core::slice::from_raw_parts(pairs, n) };
    let mut key = None;
    for p in pairs {
        // SAFETY: each pair points to name_len/value_len valid bytes.
        let (name, value) = unsafe {
            (
                core::slice::from_raw_parts(p.name, p.name_len),
                core::slice::from_raw_parts(p.value, p.value_len),
            )
        };
        if name != b"key" {
            return write_error(error, error_cap, b"udp-xor-test takes only parameter key");
        }
        let parsed = core::str::from_utf8(value)
            .ok()
            .and_then(|v| v.parse::<u8>().ok())
            .filter(|k| *k != 0);
        match parsed {
            Some(k) => key = Some(k),
            None => return write_error(error, error_cap, b"key must be a number from 1 to 255"),
        }
    }
    let Some(key) = key else {
        return write_error(error, error_cap, b"parameter key is required");
    };
    // SAFETY: the tap's zeroed blob.
    unsafe { (*params).0[0] = key };
    0
}

unsafe extern "C" fn capacity(_: *const ParamsBlob, _: u32, input_len: usize) -> usize {
    input_len
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

unsafe extern "C" fn no_splice(_: *const ParamsBlob, _: *mut RawSplice) -> u32 {
    0
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
    // SAFETY: the tap's parameters and buffers, of the lengths given.
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

unsafe extern "C" fn no_eof(
    _: *const ParamsBlob,
    _: *mut StateBlob,
    _: *mut u8,
    _: usize,
) -> usize {
    0
}

/// The table the tap reads (user space: the image's exported symbol;
/// kernel: handed to l45.ko by the kind module's init).
#[no_mangle]
pub static l45_kind_v1: KindV1 = KindV1 {
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
    splice: Some(no_splice),
    send: Some(xor),
    recv: Some(xor),
    recv_eof: Some(no_eof),
};
