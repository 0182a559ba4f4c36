//! `udp-xor-mask`: XOR-masks the payload of UDP datagrams under a
//! per-instance key. The client masks what it sends and puts a fixed
//! 4-byte marker in front; the server recognises the marker, strips it and
//! unmasks. A datagram without the marker is not this module's (`NotMine`),
//! so during a rotation a server falls through to the next module of its
//! chain. Replies travel as the application wrote them.
//!
//! Wire format of a masked datagram: `MARKER` ‖ (payload XOR key repeated).
//!
//! Parameters: `key`, 1–32 bytes as hex (2–64 hex digits), required.
//!
//! `core` only (no std, no alloc, no floats): the same source builds into
//! the kernel tap.
#![cfg_attr(not(any(test, feature = "std")), no_std)]

use l45_kind_sdk::{
    Ctx, Directions, ModuleKind, ParamError, RecvVerdict, Role, SendVerdict, Transport,
};

/// Marks a masked datagram ("L45x").
pub const MARKER: [u8; 4] = *b"L45x";
/// Longest key, in bytes.
pub const KEY_MAX: usize = 32;

pub struct UdpXorMask;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    key: [u8; KEY_MAX],
    /// 1..=KEY_MAX (the parser refuses anything else).
    len: u8,
}

impl Params {
    fn key(&self) -> &[u8] {
        self.key.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `out[i] = input[i] ^ key[i % key.len()]`, as far as both reach.
#[inline]
fn xor_into(key: &[u8], input: &[u8], out: &mut [u8]) {
    if key.is_empty() {
        return;
    }
    // Key-length blocks: no division per byte, no index to check.
    for (o, i) in out.chunks_mut(key.len()).zip(input.chunks(key.len())) {
        for ((o, i), k) in o.iter_mut().zip(i).zip(key) {
            *o = i ^ k;
        }
    }
}

impl ModuleKind for UdpXorMask {
    type Params = Params;
    type State = ();

    fn parse(pairs: &[(&str, &str)]) -> Result<Params, ParamError> {
        let mut key = None;
        for (name, value) in pairs {
            match *name {
                "key" => key = Some(*value),
                _ => {
                    return Err(ParamError::format(format_args!(
                        "udp-xor-mask has no parameter {name} (only key)"
                    )))
                }
            }
        }
        let hex = key.ok_or("key is required (1-32 bytes as hex)")?.as_bytes();
        if hex.is_empty() || hex.len() % 2 != 0 || hex.len() > 2 * KEY_MAX {
            return Err("key must be 2-64 hex digits (1-32 bytes)".into());
        }
        let mut p = Params {
            key: [0; KEY_MAX],
            len: (hex.len() / 2) as u8,
        };
        for (byte, pair) in p.key.iter_mut().zip(hex.chunks_exact(2)) {
            let (Some(hi), Some(lo)) = (hex_digit(pair[0]), hex_digit(pair[1])) else {
                return Err("key must be hex digits only".into());
            };
            *byte = hi << 4 | lo;
        }
        Ok(p)
    }

    fn acts_on(_: &Params, role: Role, transport: Transport) -> Directions {
        let datagram = transport == Transport::Datagram;
        Directions {
            send: datagram && role == Role::Client,
            recv: datagram && role == Role::Server,
        }
    }

    fn send_capacity(_: &Params, input_len: usize) -> usize {
        input_len.saturating_add(MARKER.len())
    }

    fn recv_capacity(_: &Params, input_len: usize) -> usize {
        input_len
    }

    #[inline]
    fn send(p: &Params, _: &mut (), ctx: &Ctx<'_>, input: &[u8], out: &mut [u8]) -> SendVerdict {
        let key = p.key();
        if ctx.role != Role::Client || ctx.transport != Transport::Datagram || key.is_empty() {
            return SendVerdict::NotMine;
        }
        let n = MARKER.len() + input.len();
        let Some(out) = out.get_mut(..n) else {
            return SendVerdict::NotMine;
        };
        let (marker, body) = out.split_at_mut(MARKER.len());
        marker.copy_from_slice(&MARKER);
        xor_into(key, input, body);
        SendVerdict::Customized(n)
    }

    #[inline]
    fn recv(p: &Params, _: &mut (), ctx: &Ctx<'_>, input: &[u8], out: &mut [u8]) -> RecvVerdict {
        let key = p.key();
        if ctx.role != Role::Server || ctx.transport != Transport::Datagram || key.is_empty() {
            return RecvVerdict::NotMine;
        }
        let Some(body) = input.strip_prefix(&MARKER[..]) else {
            return RecvVerdict::NotMine;
        };
        let Some(out) = out.get_mut(..body.len()) else {
            return RecvVerdict::NotMine;
        };
        xor_into(key, body, out);
        RecvVerdict::Customized(body.len())
    }
}

l45_kind_sdk::export_kind!(UdpXorMask, "udp-xor-mask");

#[cfg(not(any(test, feature = "std")))]
l45_kind_sdk::image_panic_handler!();

#[cfg(test)]
mod tests;
