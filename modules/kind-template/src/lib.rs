//! `my-kind`: a template module kind. It puts a configurable prefix in
//! front of every datagram a client sends, and a server strips it again.
//! Rename it (here, in `export_kind!` and in Cargo.toml's
//! `[package.metadata.l45] kind`), then make it do what you need.
//!
//! The rules (README.md): `core` only — no std, no alloc, no floats (the
//! same source builds into the kernel tap); never block, never panic on any
//! input; recognise your own traffic on receive and answer `NotMine` to
//! anything else, so a rotation can fall through to the next module.
#![cfg_attr(not(any(test, feature = "std")), no_std)]

use l45_kind_sdk::{
    Ctx, Directions, ModuleKind, ParamError, RecvVerdict, Role, SendVerdict, Transport,
};

/// Longest prefix, in bytes.
pub const PREFIX_MAX: usize = 16;

pub struct MyKind;

/// What the parser makes of the module's parameters: plain data, `Copy`,
/// at most `PARAMS_MAX` (256) bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    prefix: [u8; PREFIX_MAX],
    len: u8,
}

impl Params {
    fn prefix(&self) -> &[u8] {
        self.prefix.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl ModuleKind for MyKind {
    type Params = Params;
    /// Nothing kept per socket. A kind that needs to (a counter, bytes held
    /// across stream chunks) names a `Copy + Default` type of at most 56
    /// bytes here; every socket starts with its `Default`.
    type State = ();

    fn parse(pairs: &[(&str, &str)]) -> Result<Params, ParamError> {
        let mut p = Params {
            prefix: [0; PREFIX_MAX],
            len: 0,
        };
        for (name, value) in pairs {
            match *name {
                "prefix" => {
                    let v = value.as_bytes();
                    if v.is_empty() || v.len() > PREFIX_MAX {
                        return Err("prefix must be 1-16 bytes".into());
                    }
                    p.prefix[..v.len()].copy_from_slice(v);
                    p.len = v.len() as u8;
                }
                _ => {
                    return Err(ParamError::format(format_args!(
                        "my-kind has no parameter {name}"
                    )))
                }
            }
        }
        if p.len == 0 {
            return Err("prefix is required".into());
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

    fn send_capacity(p: &Params, input_len: usize) -> usize {
        input_len.saturating_add(p.prefix().len())
    }

    fn recv_capacity(_: &Params, input_len: usize) -> usize {
        input_len
    }

    fn send(p: &Params, _: &mut (), ctx: &Ctx<'_>, input: &[u8], out: &mut [u8]) -> SendVerdict {
        if ctx.role != Role::Client || ctx.transport != Transport::Datagram {
            return SendVerdict::NotMine;
        }
        let prefix = p.prefix();
        let n = prefix.len() + input.len();
        // Check every length: never index past a buffer.
        let Some(out) = out.get_mut(..n) else {
            return SendVerdict::NotMine;
        };
        out[..prefix.len()].copy_from_slice(prefix);
        out[prefix.len()..].copy_from_slice(input);
        SendVerdict::Customized(n)
    }

    fn recv(p: &Params, _: &mut (), ctx: &Ctx<'_>, input: &[u8], out: &mut [u8]) -> RecvVerdict {
        if ctx.role != Role::Server || ctx.transport != Transport::Datagram {
            return RecvVerdict::NotMine;
        }
        let Some(body) = input.strip_prefix(p.prefix()) else {
            return RecvVerdict::NotMine;
        };
        let Some(out) = out.get_mut(..body.len()) else {
            return RecvVerdict::NotMine;
        };
        out.copy_from_slice(body);
        RecvVerdict::Customized(body.len())
    }
}

// The image's `l45_kind_v1` symbol (and `KIND_TABLE` for the tests).
l45_kind_sdk::export_kind!(MyKind, "my-kind");

#[cfg(not(any(test, feature = "std")))]
l45_kind_sdk::image_panic_handler!();

#[cfg(test)]
mod tests {
    use super::*;
    use l45_kind_sdk::modules::{Instance, Kind, SocketState};

    const CLIENT: Ctx<'static> = Ctx {
        role: Role::Client,
        transport: Transport::Datagram,
        thread_name: b"t",
        process_name: b"p",
    };

    /// The kind as a tap runs it: through the exported table.
    fn module(pairs: &[(&str, &str)]) -> Result<Instance, String> {
        let kind = Kind::External(KIND_TABLE.check().map_err(|e| e.to_string())?);
        Instance::new(1, kind, pairs.iter().copied()).map_err(|e| e.to_string())
    }

    #[test]
    fn round_trip() {
        let m = module(&[("prefix", "hi")]).expect("valid");
        let mut st = SocketState::default();
        let mut wire = [0u8; 16];
        assert_eq!(
            m.send(&mut st, &CLIENT, b"abc", &mut wire),
            SendVerdict::Customized(5)
        );
        assert_eq!(&wire[..5], b"hiabc");
        let server = Ctx {
            role: Role::Server,
            ..CLIENT
        };
        let mut back = [0u8; 16];
        assert_eq!(
            m.recv(&mut st, &server, &wire[..5], &mut back),
            RecvVerdict::Customized(3)
        );
        assert_eq!(&back[..3], b"abc");
        assert_eq!(
            m.recv(&mut st, &server, b"abc", &mut back),
            RecvVerdict::NotMine
        );
    }

    #[test]
    fn bad_parameters() {
        assert_eq!(module(&[]).err().as_deref(), Some("prefix is required"));
        assert_eq!(
            module(&[("prefix", "")]).err().as_deref(),
            Some("prefix must be 1-16 bytes")
        );
        assert_eq!(
            module(&[("size", "1")]).err().as_deref(),
            Some("my-kind has no parameter size")
        );
    }

    #[test]
    fn tiny_buffers() {
        let m = module(&[("prefix", "hi")]).expect("valid");
        let mut st = SocketState::default();
        let mut out = [0u8; 4];
        assert_eq!(
            m.send(&mut st, &CLIENT, b"abc", &mut out),
            SendVerdict::NotMine
        );
    }
}
