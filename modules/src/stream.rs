//! Stream tag: the server inserts a tag at the start of the stream and after
//! every `interval` payload bytes; the client strips them, whatever the read
//! boundaries. State lives in [`SocketState`], so tags split across reads and
//! sends are handled.

use super::{Ctx, Recognition, RecvVerdict, Role, SendVerdict, SocketState, Tag, Transport};

#[inline(never)] // not inlined into the chain loop: see `Instance::send`
pub fn send(
    interval: u32,
    tag: &Tag,
    state: &mut SocketState,
    ctx: &Ctx<'_>,
    input: &[u8],
    out: &mut [u8],
) -> SendVerdict {
    if ctx.transport != Transport::Stream || ctx.role != Role::Server {
        return SendVerdict::NotMine;
    }
    if input.is_empty() {
        return SendVerdict::PassThrough;
    }
    let tag = tag.as_bytes();
    let mut at_in = 0;
    let mut at_out = 0;
    if state.sent_since_tag == 0 && !state.prefix_sent {
        // First send on this socket: the stream starts with a tag.
        state.sent_since_tag = interval;
        state.prefix_sent = true;
    }
    while at_in < input.len() {
        if state.sent_since_tag >= interval {
            if at_out + tag.len() > out.len() {
                return SendVerdict::PassThrough; // capacity contract broken by the tap
            }
            out[at_out..at_out + tag.len()].copy_from_slice(tag);
            at_out += tag.len();
            state.sent_since_tag = 0;
        }
        let take = ((interval - state.sent_since_tag) as usize).min(input.len() - at_in);
        if at_out + take > out.len() {
            return SendVerdict::PassThrough;
        }
        out[at_out..at_out + take].copy_from_slice(&input[at_in..at_in + take]);
        at_out += take;
        at_in += take;
        state.sent_since_tag += take as u32;
    }
    SendVerdict::Customized(at_out)
}

#[inline(never)] // not inlined into the chain loop: see `Instance::send`
pub fn recv(
    interval: u32,
    tag: &Tag,
    state: &mut SocketState,
    ctx: &Ctx<'_>,
    input: &[u8],
    out: &mut [u8],
) -> RecvVerdict {
    if ctx.transport != Transport::Stream || ctx.role != Role::Client {
        return RecvVerdict::NotMine;
    }
    let tag = tag.as_bytes();
    let mut at_in = 0;
    let mut at_out = 0;
    if state.recognition == Recognition::Unknown {
        // Recognise the tag that opens the stream; hold what matched so far.
        while at_in < input.len() && (state.held_len as usize) < tag.len() {
            if input[at_in] != tag[state.held_len as usize] {
                // Not a tagged stream: what we held is application data.
                state.recognition = Recognition::NotMine;
                let held = release_held(state, out);
                let rest = &input[at_in..];
                if held + rest.len() > out.len() {
                    return RecvVerdict::PassThrough;
                }
                out[held..held + rest.len()].copy_from_slice(rest);
                return RecvVerdict::Customized(held + rest.len());
            }
            state.held[state.held_len as usize] = input[at_in];
            state.held_len += 1;
            at_in += 1;
        }
        if (state.held_len as usize) < tag.len() {
            return RecvVerdict::Customized(0);
        }
        state.recognition = Recognition::Mine;
        state.held_len = 0;
        state.tag_left = 0;
        state.until_tag = interval;
    }
    if state.recognition == Recognition::NotMine {
        return RecvVerdict::NotMine;
    }
    while at_in < input.len() {
        if state.tag_left > 0 {
            // The rest of the tag, or as much of it as this read has: one
            // comparison for the whole piece (byte by byte only to find
            // where a mismatch starts).
            let pos = tag.len() - state.tag_left as usize;
            let n = (state.tag_left as usize).min(input.len() - at_in);
            let (got, want) = (&input[at_in..at_in + n], &tag[pos..pos + n]);
            let matched = if got == want {
                n
            } else {
                got.iter().zip(want).take_while(|(a, b)| a == b).count()
            };
            state.tag_left -= matched as u8;
            at_in += matched;
            if matched < n {
                // Out of step with the sender: stop stripping rather than eat data.
                state.recognition = Recognition::NotMine;
                let rest = &input[at_in..];
                if at_out + rest.len() > out.len() {
                    return RecvVerdict::PassThrough;
                }
                out[at_out..at_out + rest.len()].copy_from_slice(rest);
                return RecvVerdict::Customized(at_out + rest.len());
            }
            continue;
        }
        let take = (state.until_tag as usize).min(input.len() - at_in);
        if at_out + take > out.len() {
            return RecvVerdict::PassThrough;
        }
        out[at_out..at_out + take].copy_from_slice(&input[at_in..at_in + take]);
        at_out += take;
        at_in += take;
        state.until_tag -= take as u32;
        if state.until_tag == 0 {
            state.tag_left = tag.len() as u8;
            state.until_tag = interval;
        }
    }
    RecvVerdict::Customized(at_out)
}

/// Writes the bytes held during recognition to `out` and forgets them.
pub fn release_held(state: &mut SocketState, out: &mut [u8]) -> usize {
    let n = (state.held_len as usize).min(out.len());
    out[..n].copy_from_slice(&state.held[..n]);
    state.held_len = 0;
    if state.recognition == Recognition::Unknown && n > 0 {
        state.recognition = Recognition::NotMine;
    }
    n
}

#[cfg(test)]
mod tests {
    use crate::{Ctx, Instance, Kind, RecvVerdict, Role, SendVerdict, SocketState, Transport};

    fn ctx(role: Role) -> Ctx<'static> {
        Ctx {
            role,
            transport: Transport::Stream,
            thread_name: b"t",
            process_name: b"p",
        }
    }

    fn payload(n: usize) -> [u8; 4096] {
        let mut p = [0u8; 4096];
        for (i, b) in p.iter_mut().enumerate().take(n) {
            *b = (i * 7 % 251) as u8;
        }
        p
    }

    /// Sends `data` in `send_chunk` pieces, receives the wire bytes in
    /// `recv_chunk` pieces, and checks the application sees `data`.
    fn check(interval: &str, data: &[u8], send_chunk: usize, recv_chunk: usize) {
        let m = Instance::new(
            1,
            Kind::StreamTag,
            [("interval", interval), ("tag", "TAGTAG")],
        )
        .unwrap();
        let mut tx = SocketState::default();
        let mut wire = [0u8; 16384];
        let mut wire_len = 0;
        for piece in data.chunks(send_chunk) {
            let cap = m.send_capacity(piece.len());
            let mut out = [0u8; 8192];
            assert!(cap <= out.len());
            let SendVerdict::Customized(n) =
                m.send(&mut tx, &ctx(Role::Server), piece, &mut out[..cap])
            else {
                panic!("server did not tag")
            };
            wire[wire_len..wire_len + n].copy_from_slice(&out[..n]);
            wire_len += n;
        }
        let interval_n: usize = interval.parse().unwrap();
        let tags = if data.is_empty() {
            0
        } else {
            1 + (data.len() - 1) / interval_n
        };
        assert_eq!(
            wire_len,
            data.len() + 6 * tags,
            "interval {interval} send {send_chunk}"
        );
        assert!(data.is_empty() || wire[..6] == *b"TAGTAG");
        let mut rx = SocketState::default();
        let mut got = [0u8; 8192];
        let mut got_len = 0;
        for piece in wire[..wire_len].chunks(recv_chunk) {
            let mut out = [0u8; 8192];
            let cap = m.recv_capacity(piece.len());
            match m.recv(&mut rx, &ctx(Role::Client), piece, &mut out[..cap]) {
                RecvVerdict::Customized(n) => {
                    got[got_len..got_len + n].copy_from_slice(&out[..n]);
                    got_len += n;
                }
                v => panic!("client verdict {v:?}"),
            }
        }
        assert_eq!(
            &got[..got_len],
            data,
            "interval {interval} send {send_chunk} recv {recv_chunk}"
        );
    }

    #[test]
    fn a_broken_tag_stops_stripping_at_its_first_wrong_byte_for_any_read_split() {
        let m = Instance::new(1, Kind::StreamTag, [("interval", "16"), ("tag", "TAGTAG")]).unwrap();
        let data = payload(40);
        // Tag, 16 bytes, a tag whose 4th byte is wrong, 24 bytes.
        let mut wire = [0u8; 128];
        let mut n = 0;
        for part in [b"TAGTAG".as_slice(), &data[..16], b"TAGxAG", &data[16..40]] {
            wire[n..n + part.len()].copy_from_slice(part);
            n += part.len();
        }
        // The three matching tag bytes go, the rest is the application's.
        let mut want = [0u8; 128];
        let mut w = 0;
        for part in [&data[..16], b"xAG".as_slice(), &data[16..40]] {
            want[w..w + part.len()].copy_from_slice(part);
            w += part.len();
        }
        for recv_chunk in [1, 2, 3, 4, 5, 7, 22, 23, 24, 128] {
            let mut rx = SocketState::default();
            let mut got = [0u8; 128];
            let mut got_len = 0;
            for piece in wire[..n].chunks(recv_chunk) {
                let mut out = [0u8; 256];
                let cap = m.recv_capacity(piece.len());
                let bytes: &[u8] = match m.recv(&mut rx, &ctx(Role::Client), piece, &mut out[..cap])
                {
                    RecvVerdict::Customized(k) => &out[..k],
                    RecvVerdict::NotMine => piece, // the tap delivers it as it came
                    v => panic!("verdict {v:?}"),
                };
                got[got_len..got_len + bytes.len()].copy_from_slice(bytes);
                got_len += bytes.len();
            }
            assert_eq!(&got[..got_len], &want[..w], "recv chunk {recv_chunk}");
        }
    }

    #[test]
    fn tags_survive_any_split_of_sends_and_reads() {
        let data = payload(2500);
        for interval in ["16", "100", "1000"] {
            for send_chunk in [1, 5, 99, 1000, 2500] {
                for recv_chunk in [1, 3, 6, 7, 512, 4096] {
                    check(interval, &data[..2500], send_chunk, recv_chunk);
                }
            }
        }
        check("16", &data[..16], 16, 1);
        check("16", &data[..32], 7, 2);
    }

    #[test]
    fn untagged_stream_falls_through_with_held_bytes_returned() {
        let m = Instance::new(1, Kind::StreamTag, [("tag", "TAGTAG")]).unwrap();
        let mut rx = SocketState::default();
        let mut out = [0u8; 128];
        // "TAG" matches a prefix of the tag and is held …
        assert_eq!(
            m.recv(&mut rx, &ctx(Role::Client), b"TAG", &mut out),
            RecvVerdict::Customized(0)
        );
        // … then the stream turns out not to be tagged: nothing is lost.
        assert_eq!(
            m.recv(&mut rx, &ctx(Role::Client), b" line\n", &mut out),
            RecvVerdict::Customized(9)
        );
        assert_eq!(&out[..9], b"TAG line\n");
        assert_eq!(
            m.recv(&mut rx, &ctx(Role::Client), b"more", &mut out),
            RecvVerdict::NotMine
        );
        // A stream that ends inside the recognition gives its bytes back at EOF.
        let mut rx = SocketState::default();
        assert_eq!(
            m.recv(&mut rx, &ctx(Role::Client), b"TA", &mut out),
            RecvVerdict::Customized(0)
        );
        assert_eq!(m.recv_eof(&mut rx, &mut out), 2);
        assert_eq!(&out[..2], b"TA");
    }

    #[test]
    fn stream_tag_ignores_datagrams_and_the_wrong_end() {
        let m = Instance::new(1, Kind::StreamTag, []).unwrap();
        let mut st = SocketState::default();
        let mut out = [0u8; 128];
        assert_eq!(
            m.send(&mut st, &ctx(Role::Client), b"x", &mut out),
            SendVerdict::NotMine
        );
        assert_eq!(
            m.recv(&mut st, &ctx(Role::Server), b"x", &mut out),
            RecvVerdict::NotMine
        );
        let dgram = Ctx {
            transport: Transport::Datagram,
            ..ctx(Role::Server)
        };
        assert_eq!(
            m.send(&mut st, &dgram, b"x", &mut out),
            SendVerdict::NotMine
        );
    }
}
