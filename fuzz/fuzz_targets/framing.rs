//! RFC 6242 framing decoder: arbitrary bytes in arbitrary splits, with small
//! limits so the oversize paths run; decoded sizes and the memory held stay
//! within the limits; framed messages decode back to themselves.
#![no_main]

use l45_fuzz::Cursor;
use l45_netconf_proto::framing::{
    encode, encode_parts, Decoder, Frame, Framing, Limits, EOM, OVERSIZE_HEAD,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let mode = c.u8();
    let limits = Limits {
        max_message: 16 + usize::from(c.u16() % 8192),
        max_chunk: 1 + u64::from(c.u16()),
    };
    let split = 1 + usize::from(c.u8());
    let stream = c.rest();

    let mut d = Decoder::new(limits);
    if mode & 1 == 1 {
        d.set_framing(Framing::Chunked);
    }
    // The session switches to chunked framing after the hello.
    let switch_after = usize::from(mode >> 1);
    let mut frames = 0;
    'stream: for piece in stream.chunks(split) {
        d.push(piece);
        loop {
            match d.next_frame() {
                Ok(Some(Frame::Message(m))) => assert!(m.len() <= limits.max_message),
                Ok(Some(Frame::Oversized { head, size })) => {
                    assert!(head.len() <= OVERSIZE_HEAD);
                    assert!(size > limits.max_message, "{size} bytes reported oversized");
                }
                Ok(None) => break,
                Err(_) => break 'stream,
            }
            frames += 1;
            if frames == switch_after {
                d.set_framing(Framing::Chunked);
            }
        }
        // What an unfinished message holds is bounded by the limit.
        assert!(d.buffered() <= limits.max_message + OVERSIZE_HEAD + split + 16);
    }

    // What we frame, we decode unchanged (end-of-message framing cannot
    // carry a message whose tail and the delimiter form an earlier one).
    for framing in [Framing::EndOfMessage, Framing::Chunked] {
        let wire = encode(stream, framing);
        if framing == Framing::EndOfMessage
            && wire.windows(EOM.len()).position(|w| w == EOM) != Some(stream.len())
        {
            continue;
        }
        if framing == Framing::Chunked && stream.is_empty() {
            continue;
        }
        // The part encoder frames text (it never splits a character).
        let mut framed = vec![wire];
        if let Ok(text) = std::str::from_utf8(stream) {
            framed.push(
                encode_parts(text, framing, split)
                    .iter()
                    .flat_map(|p| p.as_bytes().iter().copied())
                    .collect(),
            );
        }
        for bytes in framed {
            let mut d = Decoder::new(Limits::default());
            d.set_framing(framing);
            let mut got = None;
            for piece in bytes.chunks(split) {
                d.push(piece);
                if let Some(f) = d.next_frame().expect("own framing decodes") {
                    got = Some(f);
                    break;
                }
            }
            assert_eq!(got, Some(Frame::Message(stream.to_vec())));
        }
    }
});
