//! RFC 6242 message framing: end-of-message (`]]>]]>`) for the hello and
//! base:1.0 peers, chunked framing once both sides announced base:1.1.
//!
//! The decoder is a pure state machine over bytes: feed it what the transport
//! delivered, in any split, and take complete messages out.

use thiserror::Error;

/// End-of-message delimiter of RFC 6242 section 4.3.
pub const EOM: &[u8] = b"]]>]]>";
/// RFC 6242 section 4.2: chunk-size is at most 4294967295.
pub const MAX_CHUNK_SIZE_RFC: u64 = 4_294_967_295;
/// Bytes kept of an oversized message, enough to find its message-id.
pub const OVERSIZE_HEAD: usize = 4096;

/// Which framing is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    EndOfMessage,
    Chunked,
}

/// Size limits; the defaults suit a device agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message accepted; larger ones are discarded and reported.
    pub max_message: usize,
    /// Largest single chunk accepted (chunked framing).
    pub max_chunk: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: 64 * 1024 * 1024,
            max_chunk: 64 * 1024 * 1024,
        }
    }
}

/// Fatal framing errors: the stream cannot be resynchronised, so the session
/// must end (after telling the peer, where possible).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FramingError {
    #[error("bad chunk header: {0}")]
    BadChunkHeader(String),
    #[error("chunk of {size} bytes exceeds the limit of {max}")]
    ChunkTooLarge { size: u64, max: u64 },
}

/// One decoded unit.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete message.
    Message(Vec<u8>),
    /// A message larger than the limit, discarded; `head` keeps its first
    /// bytes so the caller can still name the message-id in its error.
    Oversized { head: Vec<u8>, size: usize },
}

#[derive(Debug)]
enum ChunkState {
    /// Expecting `\n#` then a size or `#` (end of message).
    Header,
    /// Inside a chunk with this many bytes left.
    Data(u64),
}

/// Incremental RFC 6242 decoder.
#[derive(Debug)]
pub struct Decoder {
    framing: Framing,
    limits: Limits,
    /// Bytes received; those before `start` are consumed. Consumed bytes
    /// are dropped in bulk (see `compact`), never per message: a buffer
    /// holding many messages costs linear time, not a copy of the rest per
    /// message.
    input: Vec<u8>,
    start: usize,
    /// EOM framing: how far `input` was already searched for the delimiter.
    scanned: usize,
    /// Chunked framing: the message assembled so far.
    message: Vec<u8>,
    /// Size of the current message, also when it is being discarded.
    message_size: usize,
    discarding: bool,
    chunk: ChunkState,
    /// Bytes moved to drop consumed input (tests check it stays linear).
    #[cfg(test)]
    moved: usize,
}

/// Capacity above which an emptied input buffer is freed rather than kept.
const KEEP_CAPACITY: usize = 1 << 20;

impl Decoder {
    pub fn new(limits: Limits) -> Self {
        Decoder {
            framing: Framing::EndOfMessage,
            limits,
            input: Vec::new(),
            start: 0,
            scanned: 0,
            message: Vec::new(),
            message_size: 0,
            discarding: false,
            chunk: ChunkState::Header,
            #[cfg(test)]
            moved: 0,
        }
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Switches framing after the hello exchange. Bytes already received
    /// after the hello are decoded with the new framing.
    pub fn set_framing(&mut self, framing: Framing) {
        self.framing = framing;
        self.scanned = self.start;
    }

    /// Appends bytes received from the transport.
    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.input.extend_from_slice(bytes);
    }

    /// Drops consumed input once it is at least half the buffer, so each
    /// byte is moved a bounded number of times.
    fn compact(&mut self) {
        if self.start == self.input.len() {
            if self.input.capacity() > KEEP_CAPACITY {
                self.input = Vec::new();
            } else {
                self.input.clear();
            }
        } else if self.start > 0 && self.start >= self.input.len() / 2 {
            #[cfg(test)]
            {
                self.moved += self.input.len() - self.start;
            }
            self.input.drain(..self.start);
        } else {
            return;
        }
        self.scanned -= self.start.min(self.scanned);
        self.start = 0;
    }

    /// Bytes held but not yet decoded into a message.
    pub fn buffered(&self) -> usize {
        self.input.len() - self.start + self.message.len()
    }

    /// Takes the next complete frame, if the buffered bytes hold one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        match self.framing {
            Framing::EndOfMessage => Ok(self.next_eom()),
            Framing::Chunked => self.next_chunked(),
        }
    }

    fn next_eom(&mut self) -> Option<Frame> {
        let from = self.scanned.saturating_sub(EOM.len() - 1).max(self.start);
        let found = find(&self.input[from..], EOM).map(|i| i + from);
        match found {
            Some(end) => {
                let rest = self.input.len() - (end + EOM.len());
                let message = if self.start == 0 && rest <= end {
                    // The message is most of the buffer: keep it in place
                    // and move the (smaller) rest out.
                    let rest = self.input.split_off(end + EOM.len());
                    #[cfg(test)]
                    {
                        self.moved += rest.len();
                    }
                    let mut message = std::mem::replace(&mut self.input, rest);
                    message.truncate(end);
                    message
                } else {
                    let message = self.input[self.start..end].to_vec();
                    self.start = end + EOM.len();
                    message
                };
                self.scanned = self.start;
                let size = self.message_size + message.len();
                let discarding = std::mem::take(&mut self.discarding);
                self.message_size = 0;
                if discarding || size > self.limits.max_message {
                    let mut head = std::mem::take(&mut self.message);
                    if head.is_empty() {
                        head = message;
                        head.truncate(OVERSIZE_HEAD);
                    }
                    return Some(Frame::Oversized { head, size });
                }
                Some(Frame::Message(message))
            }
            None => {
                // Over the limit without a delimiter: keep only the head and a
                // tail long enough to hold a split delimiter. That tail may be
                // the start of the delimiter, not message bytes.
                let held = self.input.len() - self.start;
                if self.message_size + held > self.limits.max_message + EOM.len() - 1 {
                    if !self.discarding {
                        self.discarding = true;
                        self.message =
                            self.input[self.start..self.start + held.min(OVERSIZE_HEAD)].to_vec();
                    }
                    let drop = held.saturating_sub(EOM.len() - 1);
                    self.message_size += drop;
                    self.start += drop;
                }
                self.scanned = self.input.len();
                None
            }
        }
    }

    fn next_chunked(&mut self) -> Result<Option<Frame>, FramingError> {
        let mut pos = self.start;
        let result = loop {
            match self.chunk {
                ChunkState::Header => {
                    let avail = &self.input[pos..];
                    if avail.len() < 3 {
                        break None;
                    }
                    if avail[0] != b'\n' || avail[1] != b'#' {
                        return Err(FramingError::BadChunkHeader(describe(
                            &avail[..avail.len().min(12)],
                        )));
                    }
                    if avail[2] == b'#' {
                        if avail.len() < 4 {
                            break None;
                        }
                        if avail[3] != b'\n' {
                            return Err(FramingError::BadChunkHeader(describe(&avail[..4])));
                        }
                        pos += 4;
                        if self.message_size == 0 {
                            return Err(FramingError::BadChunkHeader(
                                "end-of-chunks before any chunk".into(),
                            ));
                        }
                        let size = std::mem::take(&mut self.message_size);
                        let message = std::mem::take(&mut self.message);
                        break Some(if std::mem::take(&mut self.discarding) {
                            Frame::Oversized {
                                head: message,
                                size,
                            }
                        } else {
                            Frame::Message(message)
                        });
                    }
                    // chunk-size = 1-9 followed by up to 9 more digits, then LF.
                    let digits = &avail[2..];
                    let Some(nl) = digits.iter().take(11).position(|&b| b == b'\n') else {
                        if digits.len() > 10 {
                            return Err(FramingError::BadChunkHeader(describe(
                                &avail[..avail.len().min(14)],
                            )));
                        }
                        if let Some(bad) = digits.iter().find(|b| !b.is_ascii_digit()) {
                            return Err(FramingError::BadChunkHeader(format!(
                                "unexpected byte 0x{bad:02x} in chunk size"
                            )));
                        }
                        break None;
                    };
                    let size_text = &digits[..nl];
                    if size_text.is_empty()
                        || size_text[0] == b'0'
                        || !size_text.iter().all(u8::is_ascii_digit)
                    {
                        return Err(FramingError::BadChunkHeader(describe(
                            &avail[..(nl + 3).min(avail.len())],
                        )));
                    }
                    let size: u64 = std::str::from_utf8(size_text)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .filter(|s| *s <= MAX_CHUNK_SIZE_RFC)
                        .ok_or_else(|| FramingError::BadChunkHeader(describe(size_text)))?;
                    if size > self.limits.max_chunk {
                        return Err(FramingError::ChunkTooLarge {
                            size,
                            max: self.limits.max_chunk,
                        });
                    }
                    pos += 2 + nl + 1;
                    self.chunk = ChunkState::Data(size);
                }
                ChunkState::Data(left) => {
                    let avail = &self.input[pos..];
                    if avail.is_empty() {
                        break None;
                    }
                    let take = (left.min(avail.len() as u64)) as usize;
                    let new_size = self.message_size + take;
                    if new_size > self.limits.max_message && !self.discarding {
                        self.discarding = true;
                        self.message.truncate(OVERSIZE_HEAD);
                    }
                    if !self.discarding {
                        self.message.extend_from_slice(&avail[..take]);
                    } else if self.message.len() < OVERSIZE_HEAD {
                        let room = OVERSIZE_HEAD - self.message.len();
                        self.message.extend_from_slice(&avail[..take.min(room)]);
                    }
                    self.message_size = new_size;
                    pos += take;
                    let left = left - take as u64;
                    self.chunk = if left == 0 {
                        ChunkState::Header
                    } else {
                        ChunkState::Data(left)
                    };
                }
            }
        };
        self.start = pos;
        Ok(result)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn describe(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

/// Frames one outgoing message.
pub fn encode(message: &[u8], framing: Framing) -> Vec<u8> {
    match framing {
        Framing::EndOfMessage => {
            let mut out = Vec::with_capacity(message.len() + EOM.len());
            out.extend_from_slice(message);
            out.extend_from_slice(EOM);
            out
        }
        Framing::Chunked => {
            let mut out = Vec::with_capacity(message.len() + 32);
            // One chunk per message; chunk-size has no practical limit.
            if !message.is_empty() {
                out.extend_from_slice(format!("\n#{}\n", message.len()).as_bytes());
                out.extend_from_slice(message);
            }
            out.extend_from_slice(b"\n##\n");
            out
        }
    }
}

/// Most message bytes per buffer (and per chunk) that a [`PartEncoder`]
/// produces. Peers decode a long sequence of small chunks as they arrive
/// (one 10 MB chunk costs ncclient a second of re-scanning its buffer).
pub const SEND_PART: usize = 64 * 1024;

/// Room kept before a part's bytes for its chunk header (`\n#`, at most
/// ten digits, `\n`), written when the part is complete.
const HEAD_ROOM: usize = 13;

/// One framed buffer of an outgoing message: `bytes[start..]` goes on the
/// wire.
#[derive(Debug)]
pub struct Part {
    bytes: Vec<u8>,
    start: usize,
}

impl Part {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

/// Frames one outgoing message handed over piece by piece (as it is
/// generated) into parts of at most `max_part` message bytes each; with
/// chunked framing every part is one whole chunk (the last followed by the
/// end-of-message marker). A part never ends inside
/// a UTF-8 character (peers such as ncclient decode each chunk on its
/// own), unless `max_part` is smaller than one character. The message is
/// never held whole: each part is handed to `emit` once full.
#[derive(Debug)]
pub struct PartEncoder {
    framing: Framing,
    max_part: usize,
    buf: Vec<u8>,
}

impl PartEncoder {
    pub fn new(framing: Framing, max_part: usize) -> PartEncoder {
        let max_part = max_part.max(1);
        PartEncoder {
            framing,
            max_part,
            buf: Self::fresh(max_part),
        }
    }

    fn fresh(max_part: usize) -> Vec<u8> {
        let mut buf = Vec::with_capacity(HEAD_ROOM + max_part + 4);
        buf.resize(HEAD_ROOM, 0);
        buf
    }

    fn payload(&self) -> usize {
        self.buf.len() - HEAD_ROOM
    }

    /// Appends message text; hands every part it completes to `emit`.
    pub fn push(&mut self, mut text: &str, emit: &mut impl FnMut(Part)) {
        while !text.is_empty() {
            let room = self.max_part - self.payload();
            if text.len() <= room {
                self.buf.extend_from_slice(text.as_bytes());
                if text.len() == room {
                    self.flush(emit);
                }
                return;
            }
            let mut cut = room;
            while cut > 0 && !text.is_char_boundary(cut) {
                cut -= 1;
            }
            if cut == 0 && self.payload() == 0 {
                // A character longer than a whole part: it goes whole.
                cut = (1..=text.len())
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(text.len());
            }
            self.buf.extend_from_slice(&text.as_bytes()[..cut]);
            text = &text[cut..];
            self.flush(emit);
        }
    }

    /// Hands the part being filled to `emit` (nothing when it is empty).
    fn flush(&mut self, emit: &mut impl FnMut(Part)) {
        if self.payload() == 0 {
            return;
        }
        let start = self.frame_head();
        let bytes = std::mem::replace(&mut self.buf, Self::fresh(self.max_part));
        emit(Part { bytes, start });
    }

    /// Writes the chunk header of the part being filled into its head room
    /// (chunked framing, a part with payload); returns where the part's
    /// bytes start.
    fn frame_head(&mut self) -> usize {
        let payload = self.payload();
        match self.framing {
            Framing::Chunked if payload > 0 => {
                let head = format!("\n#{payload}\n");
                let start = HEAD_ROOM - head.len();
                self.buf[start..HEAD_ROOM].copy_from_slice(head.as_bytes());
                start
            }
            _ => HEAD_ROOM,
        }
    }

    /// Ends the message: its last part with the end-of-message marker
    /// after it, in the same part (one write, one SSH packet, one wake-up
    /// of the peer less than a part of its own).
    pub fn finish(mut self, emit: &mut impl FnMut(Part)) {
        let end: &[u8] = match self.framing {
            Framing::EndOfMessage => EOM,
            Framing::Chunked => b"\n##\n",
        };
        let start = self.frame_head();
        let mut bytes = std::mem::take(&mut self.buf);
        bytes.extend_from_slice(end);
        emit(Part { bytes, start });
    }
}

/// `message` framed as [`PartEncoder`] parts of at most `max_part` bytes.
pub fn encode_parts(message: &str, framing: Framing, max_part: usize) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut enc = PartEncoder::new(framing, max_part);
    enc.push(message, &mut |p| parts.push(p));
    enc.finish(&mut |p| parts.push(p));
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(dec: &mut Decoder) -> Result<Vec<Frame>, FramingError> {
        let mut out = Vec::new();
        while let Some(f) = dec.next_frame()? {
            out.push(f);
        }
        Ok(out)
    }

    fn chunked() -> Decoder {
        let mut d = Decoder::new(Limits::default());
        d.set_framing(Framing::Chunked);
        d
    }

    #[test]
    fn eom_single_message() {
        let mut d = Decoder::new(Limits::default());
        d.push(b"<hello/>]]>]]>");
        assert_eq!(
            decode_all(&mut d).unwrap(),
            vec![Frame::Message(b"<hello/>".to_vec())]
        );
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn eom_delimiter_split_across_every_byte() {
        let input = b"<a/>]]>]]><b/>]]>]]>";
        let mut d = Decoder::new(Limits::default());
        let mut got = Vec::new();
        for b in input {
            d.push(&[*b]);
            got.extend(decode_all(&mut d).unwrap());
        }
        assert_eq!(
            got,
            vec![
                Frame::Message(b"<a/>".to_vec()),
                Frame::Message(b"<b/>".to_vec())
            ]
        );
    }

    #[test]
    fn eom_message_at_the_limit_with_a_split_delimiter_is_not_oversized() {
        // Found by fuzzing: the first bytes of a split delimiter were
        // counted as message bytes.
        let mut d = Decoder::new(Limits {
            max_message: 17,
            ..Limits::default()
        });
        d.push(b"0123456789abcdefg");
        assert_eq!(d.next_frame().unwrap(), None);
        d.push(b"]]>]");
        assert_eq!(d.next_frame().unwrap(), None);
        d.push(b"]><b/>]]>]]>");
        assert_eq!(
            decode_all(&mut d).unwrap(),
            vec![
                Frame::Message(b"0123456789abcdefg".to_vec()),
                Frame::Message(b"<b/>".to_vec())
            ]
        );
    }

    #[test]
    fn eom_coalesced_messages_then_switch_to_chunked() {
        let mut d = Decoder::new(Limits::default());
        d.push(b"<hello/>]]>]]>\n#4\n<a/>\n##\n");
        assert_eq!(
            d.next_frame().unwrap(),
            Some(Frame::Message(b"<hello/>".to_vec()))
        );
        d.set_framing(Framing::Chunked);
        assert_eq!(
            d.next_frame().unwrap(),
            Some(Frame::Message(b"<a/>".to_vec()))
        );
        assert_eq!(d.next_frame().unwrap(), None);
    }

    #[test]
    fn chunked_rfc6242_example() {
        // RFC 6242 section 4.2 example, two chunks.
        let mut d = chunked();
        d.push(b"\n#4\n<rpc\n#18\n message-id=\"102\"\n\n##\n");
        assert_eq!(
            decode_all(&mut d).unwrap(),
            vec![Frame::Message(b"<rpc message-id=\"102\"\n".to_vec())]
        );
    }

    #[test]
    fn chunked_one_byte_at_a_time_with_one_byte_chunks() {
        let mut wire = Vec::new();
        for b in b"<rpc/>" {
            wire.extend_from_slice(b"\n#1\n");
            wire.push(*b);
        }
        wire.extend_from_slice(b"\n##\n");
        let mut d = chunked();
        let mut got = Vec::new();
        for b in &wire {
            d.push(&[*b]);
            got.extend(decode_all(&mut d).unwrap());
        }
        assert_eq!(got, vec![Frame::Message(b"<rpc/>".to_vec())]);
    }

    #[test]
    fn chunked_bad_headers_are_fatal() {
        for bad in [
            &b"\n#0\nx\n##\n"[..],
            b"\n#01\nx",
            b"\n#x\n",
            b"#4\n<a/>",
            b"\n#-1\n",
            b"\n##\n",
            b"\n##x",
            b"\n#12345678901\n",
            b"\n#4294967296\n",
        ] {
            let mut d = chunked();
            d.push(bad);
            assert!(
                matches!(d.next_frame(), Err(FramingError::BadChunkHeader(_))),
                "{:?} should be a bad header",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn chunked_partial_header_waits() {
        let mut d = chunked();
        d.push(b"\n#11");
        assert_eq!(d.next_frame().unwrap(), None);
        d.push(b"\n<rpc></rpc>\n##");
        assert_eq!(d.next_frame().unwrap(), None);
        d.push(b"\n");
        assert_eq!(
            d.next_frame().unwrap(),
            Some(Frame::Message(b"<rpc></rpc>".to_vec()))
        );
    }

    #[test]
    fn chunk_over_limit_is_fatal() {
        let mut d = Decoder::new(Limits {
            max_message: 100,
            max_chunk: 10,
        });
        d.set_framing(Framing::Chunked);
        d.push(b"\n#11\n");
        assert_eq!(
            d.next_frame(),
            Err(FramingError::ChunkTooLarge { size: 11, max: 10 })
        );
    }

    #[test]
    fn chunked_oversized_message_is_discarded_and_stream_continues() {
        let mut d = Decoder::new(Limits {
            max_message: 16,
            max_chunk: 16,
        });
        d.set_framing(Framing::Chunked);
        d.push(b"\n#10\n<rpc messa\n#10\nge-id=\"7\" \n#10\n/>........\n##\n\n#4\n<a/>\n##\n");
        let frames = decode_all(&mut d).unwrap();
        assert_eq!(frames.len(), 2);
        match &frames[0] {
            Frame::Oversized { head, size } => {
                assert_eq!(*size, 30);
                assert!(head.starts_with(b"<rpc messa"));
            }
            other => panic!("expected oversized, got {other:?}"),
        }
        assert_eq!(frames[1], Frame::Message(b"<a/>".to_vec()));
    }

    #[test]
    fn eom_oversized_message_is_discarded_and_stream_continues() {
        let mut d = Decoder::new(Limits {
            max_message: 8,
            max_chunk: 8,
        });
        let mut got = Vec::new();
        for part in [
            &b"<rpc message-id=\"9\">"[..],
            b"xxxxxxxxxxxxxxxxxxxxxxxxx",
            b"</rpc>]]>",
            b"]]><a/>]]>]]>",
        ] {
            d.push(part);
            got.extend(decode_all(&mut d).unwrap());
        }
        assert_eq!(got.len(), 2);
        match &got[0] {
            Frame::Oversized { head, size } => {
                assert!(head.starts_with(b"<rpc message-id=\"9\">"));
                assert!(*size > 8);
            }
            other => panic!("expected oversized, got {other:?}"),
        }
        assert_eq!(got[1], Frame::Message(b"<a/>".to_vec()));
        assert!(d.buffered() < 16);
    }

    #[test]
    fn many_messages_in_one_buffer_cost_linear_work() {
        let n = 20_000;
        for framing in [Framing::EndOfMessage, Framing::Chunked] {
            let wire: Vec<u8> = (0..n)
                .flat_map(|i| encode(format!("<m{i}/>").as_bytes(), framing))
                .collect();
            let mut d = Decoder::new(Limits::default());
            d.set_framing(framing);
            // All at once, then in pieces that split messages and delimiters.
            d.push(&wire);
            let mut got = decode_all(&mut d).unwrap();
            for piece in wire.chunks(4099) {
                d.push(piece);
                got.extend(decode_all(&mut d).unwrap());
            }
            assert_eq!(got.len(), 2 * n, "{framing:?}");
            assert_eq!(
                got[n - 1],
                Frame::Message(format!("<m{}/>", n - 1).into_bytes())
            );
            assert_eq!(got[n], Frame::Message(b"<m0/>".to_vec()));
            assert_eq!(d.buffered(), 0);
            // Removing each message from the front of the buffer would move
            // ~n²/2 messages' worth of bytes.
            assert!(
                d.moved <= 2 * wire.len(),
                "{framing:?}: {} for {}",
                d.moved,
                wire.len()
            );
        }
    }

    #[test]
    fn a_large_message_is_not_copied_out_of_the_buffer() {
        let big = vec![b'x'; 1 << 20];
        let mut d = Decoder::new(Limits::default());
        d.push(&big);
        d.push(b"]]>]]><a/>]]>]]>");
        let frames = decode_all(&mut d).unwrap();
        assert_eq!(
            frames,
            vec![Frame::Message(big), Frame::Message(b"<a/>".to_vec())]
        );
        assert!(d.moved < 64, "{}", d.moved);
    }

    #[test]
    fn encode_round_trips() {
        for framing in [Framing::EndOfMessage, Framing::Chunked] {
            let mut d = Decoder::new(Limits::default());
            d.set_framing(framing);
            d.push(&encode(b"<rpc-reply/>", framing));
            assert_eq!(
                d.next_frame().unwrap(),
                Some(Frame::Message(b"<rpc-reply/>".to_vec()))
            );
        }
        assert_eq!(encode(b"<a/>", Framing::Chunked), b"\n#4\n<a/>\n##\n");
    }

    #[test]
    fn encode_parts_splits_and_round_trips() {
        let msg: String = (0..1000u32).map(|i| format!("<a>{i}é€</a>")).collect();
        for framing in [Framing::EndOfMessage, Framing::Chunked] {
            for max in [1, 2, 7, 999, 4000, msg.len(), 50_000] {
                let parts = encode_parts(&msg, framing, max);
                let wire: Vec<u8> = parts.iter().flat_map(|p| p.as_bytes().to_vec()).collect();
                if max >= msg.len() || framing == Framing::EndOfMessage {
                    assert_eq!(wire, encode(msg.as_bytes(), framing));
                }
                if framing == Framing::EndOfMessage {
                    continue;
                }
                let mut d = Decoder::new(Limits::default());
                d.set_framing(framing);
                d.push(&wire);
                assert_eq!(
                    d.next_frame().unwrap(),
                    Some(Frame::Message(msg.as_bytes().to_vec()))
                );
                assert_eq!(d.buffered(), 0);
                // Every chunk is whole UTF-8 and at most `max` bytes (a
                // character longer than `max` alone excepted).
                let last = parts.last().expect("a part").as_bytes();
                assert!(last.ends_with(b"\n##\n"));
                for b in parts
                    .iter()
                    .map(Part::as_bytes)
                    .map(|b| b.strip_suffix(b"\n##\n").unwrap_or(b))
                    .filter(|b| !b.is_empty())
                {
                    let nl = b[2..].iter().position(|&c| c == b'\n').unwrap() + 2;
                    let chunk = std::str::from_utf8(&b[nl + 1..]).expect("whole characters");
                    assert!(chunk.len() <= max || chunk.chars().count() == 1);
                    assert_eq!(b[2..nl], *chunk.len().to_string().as_bytes());
                }
            }
            // Pieces of any size give the same parts as one piece.
            let mut enc = PartEncoder::new(framing, 999);
            let mut pieces = Vec::new();
            for piece in msg.split_inclusive('>') {
                enc.push(piece, &mut |p| pieces.push(p));
            }
            enc.finish(&mut |p| pieces.push(p));
            let whole = encode_parts(&msg, framing, 999);
            assert_eq!(
                pieces.iter().map(Part::as_bytes).collect::<Vec<_>>(),
                whole.iter().map(Part::as_bytes).collect::<Vec<_>>()
            );
            let empty: Vec<u8> = encode_parts("", framing, 10)
                .iter()
                .flat_map(|p| p.as_bytes().to_vec())
                .collect();
            assert_eq!(empty, encode(b"", framing));
        }
    }
}
