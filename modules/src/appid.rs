//! Application-id tag, for traffic classification: the client puts
//! `XTAG | len | name ":" label` in front of every datagram, or once at the
//! start of a stream, where `name` is the process (or thread) name; the
//! server strips it. Middleboxes classify flows by it (see the generated
//! Wireshark dissector).

use super::{Ctx, Recognition, RecvVerdict, Role, SendVerdict, SocketState, Tag, Transport};

pub const MAGIC: &[u8; 4] = b"XTAG";
/// Magic, length byte, 15-byte name, ':', 64-byte label.
pub const MAX_PREFIX: usize = 4 + 1 + 15 + 1 + 64;

#[inline(never)] // not inlined into the chain loop: see `Instance::send`
pub fn send(
    label: &Tag,
    use_thread_name: bool,
    state: &mut SocketState,
    ctx: &Ctx<'_>,
    input: &[u8],
    out: &mut [u8],
) -> SendVerdict {
    if ctx.role != Role::Client || input.is_empty() {
        return SendVerdict::NotMine;
    }
    if ctx.transport == Transport::Stream && state.prefix_sent {
        return SendVerdict::PassThrough;
    }
    let name = if use_thread_name {
        ctx.thread_name
    } else {
        ctx.process_name
    };
    let name = &name[..name.len().min(15)];
    let body = name.len() + 1 + label.len();
    let total = 5 + body + input.len();
    if total > out.len() {
        return SendVerdict::PassThrough;
    }
    out[..4].copy_from_slice(MAGIC);
    out[4] = body as u8;
    out[5..5 + name.len()].copy_from_slice(name);
    out[5 + name.len()] = b':';
    out[6 + name.len()..5 + body].copy_from_slice(label.as_bytes());
    out[5 + body..total].copy_from_slice(input);
    state.prefix_sent = true;
    SendVerdict::Customized(total)
}

#[inline(never)] // not inlined into the chain loop: see `Instance::send`
pub fn recv(state: &mut SocketState, ctx: &Ctx<'_>, input: &[u8], out: &mut [u8]) -> RecvVerdict {
    if ctx.role != Role::Server {
        return RecvVerdict::NotMine;
    }
    match ctx.transport {
        Transport::Datagram => {
            if input.len() < 5 || &input[..4] != MAGIC {
                return RecvVerdict::NotMine;
            }
            let end = 5 + input[4] as usize;
            if input.len() < end || !(2..=MAX_PREFIX - 5).contains(&(end - 5)) {
                return RecvVerdict::NotMine;
            }
            let rest = &input[end..];
            if rest.len() > out.len() {
                return RecvVerdict::NotMine;
            }
            out[..rest.len()].copy_from_slice(rest);
            RecvVerdict::Customized(rest.len())
        }
        Transport::Stream => recv_stream(state, input, out),
    }
}

/// Strips the prefix at the start of a stream: holds the 5 header bytes while
/// recognising them, then skips the announced length.
fn recv_stream(state: &mut SocketState, input: &[u8], out: &mut [u8]) -> RecvVerdict {
    match state.recognition {
        Recognition::NotMine => return RecvVerdict::NotMine,
        Recognition::Mine if state.until_tag == 0 => return RecvVerdict::PassThrough,
        _ => {}
    }
    let mut at = 0;
    if state.recognition == Recognition::Unknown {
        while at < input.len() && state.held_len < 5 {
            let b = input[at];
            // The length byte must announce a prefix this module could have
            // written (name ≤ 15, ':' and label ≤ 64), like the datagram check.
            let ok = if state.held_len < 4 {
                b == MAGIC[state.held_len as usize]
            } else {
                (2..=MAX_PREFIX - 5).contains(&(b as usize))
            };
            if !ok {
                state.recognition = Recognition::NotMine;
                let held = super::stream::release_held(state, out);
                let rest = &input[at..];
                if held + rest.len() > out.len() {
                    return RecvVerdict::PassThrough;
                }
                out[held..held + rest.len()].copy_from_slice(rest);
                return RecvVerdict::Customized(held + rest.len());
            }
            state.held[state.held_len as usize] = b;
            state.held_len += 1;
            at += 1;
        }
        if state.held_len < 5 {
            return RecvVerdict::Customized(0);
        }
        state.recognition = Recognition::Mine;
        state.until_tag = u32::from(state.held[4]);
        state.held_len = 0;
    }
    let skip = (state.until_tag as usize).min(input.len() - at);
    at += skip;
    state.until_tag -= skip as u32;
    let rest = &input[at..];
    if rest.len() > out.len() {
        return RecvVerdict::PassThrough;
    }
    out[..rest.len()].copy_from_slice(rest);
    RecvVerdict::Customized(rest.len())
}

#[cfg(test)]
mod tests {
    use crate::{Ctx, Instance, Kind, RecvVerdict, Role, SendVerdict, SocketState, Transport};

    fn ctx(role: Role, transport: Transport) -> Ctx<'static> {
        Ctx {
            role,
            transport,
            thread_name: b"isc-net-0000",
            process_name: b"dig",
        }
    }

    #[test]
    fn datagram_prefix_names_the_process_or_thread() {
        let m = Instance::new(4, Kind::AppIdTag, [("label", "lab")]).unwrap();
        let mut st = SocketState::default();
        let mut out = [0u8; 128];
        let c = ctx(Role::Client, Transport::Datagram);
        let SendVerdict::Customized(n) = m.send(&mut st, &c, b"query", &mut out) else {
            panic!()
        };
        assert_eq!(&out[..n], b"XTAG\x07dig:labquery");
        let mut back = [0u8; 128];
        let s = ctx(Role::Server, Transport::Datagram);
        assert_eq!(
            m.recv(&mut st, &s, &out[..n], &mut back),
            RecvVerdict::Customized(5)
        );
        assert_eq!(&back[..5], b"query");
        assert_eq!(
            m.recv(&mut st, &s, b"query", &mut back),
            RecvVerdict::NotMine
        );
        // A prefix announcing more bytes than the message has is not ours.
        assert_eq!(
            m.recv(&mut st, &s, b"XTAG\x50dig", &mut back),
            RecvVerdict::NotMine
        );

        let m = Instance::new(4, Kind::AppIdTag, [("use-thread-name", "true")]).unwrap();
        let SendVerdict::Customized(n) = m.send(&mut st, &c, b"q", &mut out) else {
            panic!()
        };
        assert_eq!(&out[..n], b"XTAG\x10isc-net-0000:l45q");
    }

    #[test]
    fn stream_prefix_once_and_stripped_across_reads() {
        let m = Instance::new(4, Kind::AppIdTag, [("label", "x")]).unwrap();
        let c = ctx(Role::Client, Transport::Stream);
        let s = ctx(Role::Server, Transport::Stream);
        let mut tx = SocketState::default();
        let mut wire = [0u8; 256];
        let SendVerdict::Customized(n) = m.send(&mut tx, &c, b"GET /", &mut wire) else {
            panic!()
        };
        assert_eq!(
            m.send(&mut tx, &c, b" HTTP/1.1", &mut [0u8; 64]),
            SendVerdict::PassThrough
        );
        let mut rx = SocketState::default();
        let mut got = [0u8; 64];
        let mut got_len = 0;
        for b in wire[..n].chunks(1) {
            let mut out = [0u8; 80];
            match m.recv(&mut rx, &s, b, &mut out) {
                RecvVerdict::Customized(k) => {
                    got[got_len..got_len + k].copy_from_slice(&out[..k]);
                    got_len += k;
                }
                RecvVerdict::PassThrough => {
                    got[got_len..got_len + b.len()].copy_from_slice(b);
                    got_len += b.len();
                }
                v => panic!("{v:?}"),
            }
        }
        assert_eq!(&got[..got_len], b"GET /");
        assert_eq!(
            m.recv(&mut rx, &s, b" HTTP/1.1", &mut [0u8; 64]),
            RecvVerdict::PassThrough
        );
        // An untagged stream: held bytes come back.
        let mut rx = SocketState::default();
        let mut out = [0u8; 80];
        assert_eq!(
            m.recv(&mut rx, &s, b"XT", &mut out),
            RecvVerdict::Customized(0)
        );
        assert_eq!(
            m.recv(&mut rx, &s, b"Y", &mut out),
            RecvVerdict::Customized(3)
        );
        assert_eq!(&out[..3], b"XTY");
        // "XTAGT…" (the stream tag's default tag) announces 84 bytes: more
        // than any app-id prefix, so it is not one.
        let mut rx = SocketState::default();
        assert_eq!(
            m.recv(&mut rx, &s, b"XTAGTAGTAG", &mut out),
            RecvVerdict::Customized(10)
        );
        assert_eq!(&out[..10], b"XTAGTAGTAG");
    }
}
