//! DNS modules on datagrams: front, middle and end tag, the clearance-code
//! filter (a front tag the server insists on), and query compression.

use super::{concat, Ctx, RecvVerdict, Role, SendVerdict, Tag, TagPosition, Transport};

/// Length of the DNS header (RFC 1035 4.1.1).
pub const HEADER_LEN: usize = 12;

/// Third byte of a compressed query. In a real query this byte holds QR=0
/// and the opcode, so it is below 0x80: a compressed query can never be
/// mistaken for an uncompressed one, and the server recognises its own
/// format (rotation falls through on anything else).
pub const COMPRESSED_MARKER: u8 = 0xA5;

#[inline]
fn on_datagram(ctx: &Ctx<'_>, role: Role) -> bool {
    ctx.transport == Transport::Datagram && ctx.role == role
}

#[inline]
pub fn tag_send(
    position: TagPosition,
    tag: &Tag,
    ctx: &Ctx<'_>,
    input: &[u8],
    out: &mut [u8],
) -> SendVerdict {
    if !on_datagram(ctx, Role::Client) {
        return SendVerdict::NotMine;
    }
    if input.len() < HEADER_LEN {
        // Not a DNS message: leave it alone.
        return SendVerdict::PassThrough;
    }
    let tag = tag.as_bytes();
    let written = match position {
        TagPosition::Front => concat(out, [tag, input]),
        TagPosition::Middle => concat(out, [&input[..HEADER_LEN], tag, &input[HEADER_LEN..]]),
        TagPosition::End => concat(out, [input, tag]),
    };
    match written {
        Some(n) => SendVerdict::Customized(n),
        None => SendVerdict::PassThrough,
    }
}

#[inline]
pub fn tag_recv(
    position: TagPosition,
    tag: &Tag,
    ctx: &Ctx<'_>,
    input: &[u8],
    out: &mut [u8],
) -> RecvVerdict {
    if !on_datagram(ctx, Role::Server) {
        return RecvVerdict::NotMine;
    }
    let tag = tag.as_bytes();
    if input.len() < HEADER_LEN + tag.len() {
        return RecvVerdict::NotMine;
    }
    let written = match position {
        TagPosition::Front if same(&input[..tag.len()], tag) => concat(out, [&input[tag.len()..]]),
        TagPosition::Middle if same(&input[HEADER_LEN..HEADER_LEN + tag.len()], tag) => concat(
            out,
            [&input[..HEADER_LEN], &input[HEADER_LEN + tag.len()..]],
        ),
        TagPosition::End if same(&input[input.len() - tag.len()..], tag) => {
            concat(out, [&input[..input.len() - tag.len()]])
        }
        _ => return RecvVerdict::NotMine,
    };
    match written {
        Some(n) => RecvVerdict::Customized(n),
        None => RecvVerdict::NotMine,
    }
}

/// `a == b` for two slices of the same, short length (a tag): eight bytes
/// at a time, without a call into the C library's memcmp.
#[inline]
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Index loops, not `chunks_exact().zip()`: in the kernel build that
    // zip's size computation ends in a division-by-zero panic call objtool
    // does not know never returns ("falls through to next function").
    let word = |s: &[u8], at: usize| {
        s.get(at..at + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map_or(0, u64::from_ne_bytes)
    };
    let mut diff = 0u64;
    let mut at = 0;
    while at + 8 <= a.len() {
        diff |= word(a, at) ^ word(b, at);
        at += 8;
    }
    while let (Some(x), Some(y)) = (a.get(at), b.get(at)) {
        diff |= u64::from(x ^ y);
        at += 1;
    }
    diff == 0
}

/// Length of the uncompressed QNAME at the start of `bytes` (labels only, no
/// pointers, at most 255 bytes), including the root label.
fn qname_len(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let len = *bytes.get(at)? as usize;
        if len > 63 {
            return None;
        }
        at += 1 + len;
        if at > 255 {
            return None;
        }
        if len == 0 {
            return Some(at);
        }
    }
}

/// Client: a standard query with one question becomes
/// `ID(2) | marker | QNAME | QTYPE | QCLASS`; the header and any additional
/// records (EDNS) are dropped. Anything else is not this module's.
#[inline(never)] // not inlined into the chain loop: see `Instance::send`
pub fn compress_send(ctx: &Ctx<'_>, input: &[u8], out: &mut [u8]) -> SendVerdict {
    if !on_datagram(ctx, Role::Client) || input.len() < HEADER_LEN {
        return SendVerdict::NotMine;
    }
    let is_query = input[2] & 0xF8 == 0; // QR = 0, opcode = 0 (QUERY)
    let qdcount = u16::from_be_bytes([input[4], input[5]]);
    if !is_query || qdcount != 1 {
        return SendVerdict::NotMine;
    }
    let Some(name_len) = qname_len(&input[HEADER_LEN..]) else {
        return SendVerdict::NotMine;
    };
    let question_end = HEADER_LEN + name_len + 4;
    if input.len() < question_end {
        return SendVerdict::NotMine;
    }
    match concat(
        out,
        [
            &input[..2],
            &[COMPRESSED_MARKER],
            &input[HEADER_LEN..question_end],
        ],
    ) {
        Some(n) => SendVerdict::Customized(n),
        None => SendVerdict::NotMine,
    }
}

/// Server: rebuilds the 12-byte header of a compressed query.
#[inline(never)] // not inlined into the chain loop: see `Instance::send`
pub fn compress_recv(
    recursion_desired: bool,
    ctx: &Ctx<'_>,
    input: &[u8],
    out: &mut [u8],
) -> RecvVerdict {
    if !on_datagram(ctx, Role::Server) || input.len() < 3 || input[2] != COMPRESSED_MARKER {
        return RecvVerdict::NotMine;
    }
    let question = &input[3..];
    match qname_len(question) {
        Some(name_len) if question.len() == name_len + 4 => {}
        _ => return RecvVerdict::NotMine,
    }
    let flags = if recursion_desired { 0x01 } else { 0x00 };
    let header = [input[0], input[1], flags, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    match concat(out, [&header, question]) {
        Some(n) => RecvVerdict::Customized(n),
        None => RecvVerdict::NotMine,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_compares_every_byte_of_short_slices() {
        let a: [u8; 40] = core::array::from_fn(|i| i as u8);
        for len in 0..a.len() {
            assert!(same(&a[..len], &a[..len]));
            for at in 0..len {
                let mut b = a;
                b[at] ^= 0x80;
                assert!(!same(&a[..len], &b[..len]), "len {len}, differing at {at}");
            }
        }
        assert!(!same(b"abc", b"ab"));
    }
    use crate::{Instance, Kind, SocketState};

    // dig example.com A with EDNS (cookie removed): id 0x1234, RD.
    const QUERY: &[u8] = &[
        0x12, 0x34, 0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, 1, // header
        7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, // qname
        0, 1, 0, 1, // A IN
        0, 0, 0x29, 0x04, 0xd0, 0, 0, 0, 0, 0, 0, // OPT
    ];

    fn ctx(role: Role) -> Ctx<'static> {
        Ctx {
            role,
            transport: Transport::Datagram,
            thread_name: b"dig",
            process_name: b"dig",
        }
    }

    #[test]
    fn front_middle_end_tags_round_trip() {
        for (kind, tag_at) in [
            (Kind::DnsFrontTag, 0usize),
            (Kind::DnsMiddleTag, 12),
            (Kind::DnsEndTag, QUERY.len()),
        ] {
            let m = Instance::new(1, kind, [("tag", "XTAGXdig")]).unwrap();
            let mut st = SocketState::default();
            let mut wire = [0u8; 256];
            let v = m.send(&mut st, &ctx(Role::Client), QUERY, &mut wire);
            assert_eq!(v, SendVerdict::Customized(QUERY.len() + 8), "{kind:?}");
            assert_eq!(&wire[tag_at..tag_at + 8], b"XTAGXdig", "{kind:?}");
            let mut back = [0u8; 256];
            let v = m.recv(
                &mut st,
                &ctx(Role::Server),
                &wire[..QUERY.len() + 8],
                &mut back,
            );
            assert_eq!(v, RecvVerdict::Customized(QUERY.len()), "{kind:?}");
            assert_eq!(&back[..QUERY.len()], QUERY, "{kind:?}");
            // An untagged query is not this module's.
            let v = m.recv(&mut st, &ctx(Role::Server), QUERY, &mut back);
            assert_eq!(v, RecvVerdict::NotMine, "{kind:?}");
        }
    }

    #[test]
    fn tags_leave_short_and_server_side_messages_alone() {
        let m = Instance::new(1, Kind::DnsFrontTag, []).unwrap();
        let mut st = SocketState::default();
        let mut out = [0u8; 64];
        assert_eq!(
            m.send(&mut st, &ctx(Role::Client), &QUERY[..5], &mut out),
            SendVerdict::PassThrough
        );
        assert_eq!(
            m.send(&mut st, &ctx(Role::Server), QUERY, &mut out),
            SendVerdict::NotMine
        );
        // A message shorter than tag + header is not recognised, never read past.
        assert_eq!(
            m.recv(&mut st, &ctx(Role::Server), b"XTAGXdig", &mut out),
            RecvVerdict::NotMine
        );
        assert!(m.required_on_recv(&ctx(Role::Server)));
        assert!(!Instance::new(1, Kind::DnsEndTag, [])
            .unwrap()
            .required_on_recv(&ctx(Role::Server)));
    }

    #[test]
    fn compression_drops_header_and_edns_then_rebuilds() {
        let m = Instance::new(7, Kind::DnsCompression, []).unwrap();
        let mut st = SocketState::default();
        let mut wire = [0u8; 256];
        let SendVerdict::Customized(n) = m.send(&mut st, &ctx(Role::Client), QUERY, &mut wire)
        else {
            panic!()
        };
        assert_eq!(n, 2 + 1 + 13 + 4);
        assert_eq!(&wire[..3], &[0x12, 0x34, COMPRESSED_MARKER]);
        let mut back = [0u8; 256];
        let RecvVerdict::Customized(k) = m.recv(&mut st, &ctx(Role::Server), &wire[..n], &mut back)
        else {
            panic!()
        };
        assert_eq!(k, 12 + 13 + 4);
        assert_eq!(&back[..12], &[0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&back[12..k], &QUERY[12..29]);
        // An ordinary query falls through to the next module.
        assert_eq!(
            m.recv(&mut st, &ctx(Role::Server), QUERY, &mut back),
            RecvVerdict::NotMine
        );
        // Truncated compressed forms are not recognised.
        for cut in 0..n {
            assert_eq!(
                m.recv(&mut st, &ctx(Role::Server), &wire[..cut], &mut back),
                RecvVerdict::NotMine,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn compression_ignores_what_it_cannot_compress() {
        let m = Instance::new(7, Kind::DnsCompression, [("recursion-desired", "false")]).unwrap();
        let mut st = SocketState::default();
        let mut out = [0u8; 256];
        let mut two_questions = [0u8; 64];
        two_questions[..QUERY.len()].copy_from_slice(QUERY);
        two_questions[5] = 2;
        assert_eq!(
            m.send(
                &mut st,
                &ctx(Role::Client),
                &two_questions[..QUERY.len()],
                &mut out
            ),
            SendVerdict::NotMine
        );
        let mut response = [0u8; 64];
        response[..QUERY.len()].copy_from_slice(QUERY);
        response[2] = 0x81;
        assert_eq!(
            m.send(
                &mut st,
                &ctx(Role::Client),
                &response[..QUERY.len()],
                &mut out
            ),
            SendVerdict::NotMine
        );
        // A label longer than 63 bytes is not a name.
        let mut bad_name = [0u8; 64];
        bad_name[..QUERY.len()].copy_from_slice(QUERY);
        bad_name[12] = 64;
        assert_eq!(
            m.send(
                &mut st,
                &ctx(Role::Client),
                &bad_name[..QUERY.len()],
                &mut out
            ),
            SendVerdict::NotMine
        );
        // recursion-desired=false rebuilds with RD clear.
        let compressed = [0xab, 0xcd, COMPRESSED_MARKER, 1, b'a', 0, 0, 1, 0, 1];
        assert_eq!(
            m.recv(&mut st, &ctx(Role::Server), &compressed, &mut out),
            RecvVerdict::Customized(12 + 7)
        );
        assert_eq!(out[2], 0);
    }

    #[test]
    fn clearance_requires_the_code() {
        let code = "0123456789abcdef0123456789abcdef";
        let m = Instance::new(3, Kind::DnsClearanceFilter, [("code", code)]).unwrap();
        let mut st = SocketState::default();
        let mut wire = [0u8; 256];
        let SendVerdict::Customized(n) = m.send(&mut st, &ctx(Role::Client), QUERY, &mut wire)
        else {
            panic!()
        };
        assert_eq!(&wire[..32], code.as_bytes());
        let mut back = [0u8; 256];
        assert_eq!(
            m.recv(&mut st, &ctx(Role::Server), &wire[..n], &mut back),
            RecvVerdict::Customized(QUERY.len())
        );
        assert_eq!(
            m.recv(&mut st, &ctx(Role::Server), QUERY, &mut back),
            RecvVerdict::NotMine
        );
        assert!(m.required_on_recv(&ctx(Role::Server)));
    }
}
