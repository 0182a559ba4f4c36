//! Layer 4.5 customization modules: the API every module implements and the
//! built-in catalogue.
//!
//! `core` only, no allocation: Linux 6.12's Rust has no `alloc`, and the same
//! sources must build into the kernel tap. The tap owns every buffer: it hands
//! a module the input bytes, an output buffer at least
//! [`Instance::send_capacity`] / [`Instance::recv_capacity`] long, and a
//! fixed-size [`SocketState`] per (socket, module). A module never blocks,
//! allocates or opens sockets; a delay is a verdict the tap carries out.
//!
//! Chains: the tap runs the modules attached to a socket in priority order.
//! The first one that recognises the traffic customizes it; one that does not
//! answers [`SendVerdict::NotMine`] / [`RecvVerdict::NotMine`] and the next
//! one is tried. Every module that changes bytes recognises its own signature
//! on receive, which is what lets rotation fall through from an old module to
//! a new one on a live flow.
#![no_std]

pub mod abi;
mod appid;
mod dns;
mod rate;
pub mod security;
mod stream;

pub use security::{ChallengeError, CHALLENGE_LEN, NONCE_LEN, TAG_LEN};

/// Wire-format constants, for inverse modules (dissectors) and tests.
pub mod wire {
    pub use super::appid::{MAGIC as APP_ID_MAGIC, MAX_PREFIX as APP_ID_MAX_PREFIX};
    pub use super::dns::{COMPRESSED_MARKER, HEADER_LEN as DNS_HEADER_LEN};
    pub use super::security::CLEARANCE_LEN;
}

/// Which end of the conversation the socket is. Clients initiate (TCP
/// `connect`, UDP first operation a send); servers accept (TCP `accept`, UDP
/// first operation a receive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// The directions a module acts on for one socket (`Instance::acts_on`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directions {
    pub send: bool,
    pub recv: bool,
}

impl Directions {
    pub fn or(self, other: Directions) -> Directions {
        Directions {
            send: self.send || other.send,
            recv: self.recv || other.recv,
        }
    }
}

/// Byte stream (TCP) or datagrams (UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Stream,
    Datagram,
}

/// What a module may know about the socket and the calling thread.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub role: Role,
    pub transport: Transport,
    /// Name of the calling thread (Linux `comm` of the TID).
    pub thread_name: &'a [u8],
    /// Name of the process (Linux `comm` of the TGID).
    pub process_name: &'a [u8],
}

/// A datagram customization that is one fixed insertion
/// ([`Instance::splice`]): the sending end (client) puts `bytes` at offset
/// `at` of every datagram of at least `min_send` bytes and sends shorter
/// ones as they are; the receiving end (server) recognises a datagram of at
/// least `min_send + bytes.len()` bytes with `bytes` at `at`, and delivers
/// it without them; what it does not recognise it drops. A tap can do this with scatter/gather I/O —
/// the kernel reads the inserted bytes from, and writes the received ones
/// to, a buffer of their own — instead of copying each datagram through
/// the module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Splice<'a> {
    pub at: usize,
    pub bytes: &'a [u8],
    pub min_send: usize,
}

impl Splice<'_> {
    /// Whether the receiving end recognises `wire` (a received datagram)
    /// as carrying the inserted bytes.
    #[inline]
    pub fn recognises(&self, wire: &[u8]) -> bool {
        wire.len() >= self.min_send + self.bytes.len()
            && wire
                .get(self.at..self.at + self.bytes.len())
                .is_some_and(|b| self.is_inserted(b))
    }

    /// Whether `bytes` (as many as were inserted, taken from `at`) are the
    /// inserted ones.
    #[inline]
    pub fn is_inserted(&self, bytes: &[u8]) -> bool {
        dns::same(bytes, self.bytes)
    }
}

/// Outcome of a module's `send`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendVerdict {
    /// The first `n` bytes of the output buffer replace the input.
    Customized(usize),
    /// Not for this module: try the next one.
    NotMine,
    /// Send the original bytes; stop the chain.
    PassThrough,
    /// Swallow the message: the application is told it was sent.
    Drop,
    /// Wait this many milliseconds, then send the original bytes.
    Delay(u32),
}

/// Outcome of a module's `recv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvVerdict {
    /// The first `n` bytes of the output buffer replace the input. On a
    /// stream, every input byte is consumed (kept in the socket state if the
    /// module needs more to decide) and `n` may be 0.
    Customized(usize),
    /// Not for this module: try the next one.
    NotMine,
    /// Deliver the original bytes; stop the chain.
    PassThrough,
    /// Discard the message (datagrams only).
    Drop,
}

/// The module kinds: the ones built in, one per YANG identity derived from
/// `l45:module-kind`, and kinds loaded from a module image
/// ([`abi::ExternalKind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    DnsFrontTag,
    DnsMiddleTag,
    DnsEndTag,
    DnsCompression,
    DnsClearanceFilter,
    StreamTag,
    RateLimit,
    AppIdTag,
    /// A kind from a module image, named by the image.
    External(abi::ExternalKind),
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::DnsFrontTag,
        Kind::DnsMiddleTag,
        Kind::DnsEndTag,
        Kind::DnsCompression,
        Kind::DnsClearanceFilter,
        Kind::StreamTag,
        Kind::RateLimit,
        Kind::AppIdTag,
    ];

    /// The YANG identity name (without prefix).
    pub fn name(self) -> &'static str {
        match self {
            Kind::DnsFrontTag => "dns-front-tag",
            Kind::DnsMiddleTag => "dns-middle-tag",
            Kind::DnsEndTag => "dns-end-tag",
            Kind::DnsCompression => "dns-compression",
            Kind::DnsClearanceFilter => "dns-clearance-filter",
            Kind::StreamTag => "stream-tag",
            Kind::RateLimit => "rate-limit",
            Kind::AppIdTag => "app-id-tag",
            Kind::External(k) => k.name(),
        }
    }

    /// A built-in kind by name (external kinds are found in the tap's
    /// registry of loaded images).
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The YANG `parameters` container (case of the `kind-parameters`
    /// choice) that holds this kind's parameters.
    pub fn parameter_container(self) -> &'static str {
        match self {
            Kind::DnsFrontTag | Kind::DnsMiddleTag | Kind::DnsEndTag => "dns-tag",
            Kind::DnsCompression => "dns-compression",
            Kind::DnsClearanceFilter => "clearance",
            Kind::StreamTag => "stream-tag",
            Kind::RateLimit => "rate-limit",
            Kind::AppIdTag => "app-id-tag",
            Kind::External(_) => "installed",
        }
    }

    /// Small stable number used in shared memory and netlink; 0 for an
    /// external kind, which travels by name.
    pub fn code(self) -> u16 {
        match self {
            Kind::DnsFrontTag => 1,
            Kind::DnsMiddleTag => 2,
            Kind::DnsEndTag => 3,
            Kind::DnsCompression => 4,
            Kind::DnsClearanceFilter => 5,
            Kind::StreamTag => 6,
            Kind::RateLimit => 7,
            Kind::AppIdTag => 8,
            Kind::External(_) => 0,
        }
    }

    pub fn from_code(code: u16) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.code() == code)
    }
}

/// Longest tag, label or code a module carries (YANG `tag-text` is 1..64).
pub const MAX_TAG: usize = 64;

/// A short byte string held inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    len: u8,
    bytes: [u8; MAX_TAG],
}

impl Tag {
    pub fn new(bytes: &[u8]) -> Option<Tag> {
        if bytes.is_empty() || bytes.len() > MAX_TAG {
            return None;
        }
        let mut tag = Tag {
            len: bytes.len() as u8,
            bytes: [0; MAX_TAG],
        };
        tag.bytes[..bytes.len()].copy_from_slice(bytes);
        Some(tag)
    }

    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl core::fmt::Debug for Tag {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Tag({:?})",
            core::str::from_utf8(self.as_bytes()).unwrap_or("<bytes>")
        )
    }
}

/// Where a DNS tag goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagPosition {
    /// Before the 12-byte header.
    Front,
    /// After the header, before the question.
    Middle,
    /// After the last record.
    End,
}

/// Parsed, validated parameters of one module instance.
// Held inline (no allocation: the kernel tap has none), so an external
// kind's blob makes every variant its size.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Params {
    DnsTag {
        position: TagPosition,
        tag: Tag,
    },
    DnsCompression {
        recursion_desired: bool,
    },
    DnsClearance {
        code: Tag,
    },
    StreamTag {
        interval: u32,
        tag: Tag,
    },
    RateLimit {
        delay_ms: u32,
    },
    AppIdTag {
        label: Tag,
        use_thread_name: bool,
    },
    /// An external kind and what its parser made of the parameters.
    External {
        kind: abi::ExternalKind,
        blob: abi::ParamsBlob,
    },
}

/// Defaults, as in the YANG model (`yang/layer45-customization*.yang`); a
/// test in the `l45-yang` crate checks they agree.
pub mod defaults {
    pub const DNS_TAG: &[u8] = b"XTAGXdig";
    pub const RECURSION_DESIRED: bool = true;
    pub const STREAM_INTERVAL: u32 = 1000;
    pub const STREAM_TAG: &[u8] = b"XTAGTAGTAGTAGTAGTAGTAGTAGTAGTAGX";
    pub const RATE_DELAY_MS: u32 = 100;
    pub const APP_ID_LABEL: &[u8] = b"l45";
    pub const USE_THREAD_NAME: bool = false;
}

/// Why parameters were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamError {
    UnknownKind,
    /// A parameter this kind does not have.
    UnknownParameter,
    /// A parameter value that does not parse or is out of range.
    BadValue(&'static str),
    /// A parameter the kind cannot do without.
    Missing(&'static str),
    /// An external kind's parser refused the parameters, saying why.
    Rejected(abi::ErrorText),
}

impl core::fmt::Display for ParamError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ParamError::UnknownKind => f.write_str("unknown module kind"),
            ParamError::UnknownParameter => f.write_str("parameter not known to this kind"),
            ParamError::BadValue(p) => write!(f, "bad value for parameter {p}"),
            ParamError::Missing(p) => write!(f, "parameter {p} is required"),
            ParamError::Rejected(why) => f.write_str(why.as_str()),
        }
    }
}

/// A tag, label or code as YANG's `tag-text` allows it: 1–64 printable
/// ASCII characters.
fn text_tag(v: &str, name: &'static str) -> Result<Tag, ParamError> {
    if !v.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err(ParamError::BadValue(name));
    }
    Tag::new(v.as_bytes()).ok_or(ParamError::BadValue(name))
}

fn parse_bool(v: &str, name: &'static str) -> Result<bool, ParamError> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ParamError::BadValue(name)),
    }
}

impl Params {
    /// Builds the parameters of `kind` from (leaf name, value) pairs as the
    /// YANG model names them; absent leaves take the model's defaults.
    pub fn parse<'a>(
        kind: Kind,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Params, ParamError> {
        let mut params = match kind {
            Kind::DnsFrontTag | Kind::DnsMiddleTag | Kind::DnsEndTag => Params::DnsTag {
                position: match kind {
                    Kind::DnsFrontTag => TagPosition::Front,
                    Kind::DnsMiddleTag => TagPosition::Middle,
                    _ => TagPosition::End,
                },
                tag: Tag::new(defaults::DNS_TAG).ok_or(ParamError::BadValue("tag"))?,
            },
            Kind::DnsCompression => Params::DnsCompression {
                recursion_desired: defaults::RECURSION_DESIRED,
            },
            Kind::DnsClearanceFilter => Params::DnsClearance {
                code: Tag::new(b"-").ok_or(ParamError::BadValue("code"))?,
            },
            Kind::StreamTag => Params::StreamTag {
                interval: defaults::STREAM_INTERVAL,
                tag: Tag::new(defaults::STREAM_TAG).ok_or(ParamError::BadValue("tag"))?,
            },
            Kind::RateLimit => Params::RateLimit {
                delay_ms: defaults::RATE_DELAY_MS,
            },
            Kind::AppIdTag => Params::AppIdTag {
                label: Tag::new(defaults::APP_ID_LABEL).ok_or(ParamError::BadValue("label"))?,
                use_thread_name: defaults::USE_THREAD_NAME,
            },
            Kind::External(kind) => {
                return Ok(Params::External {
                    kind,
                    blob: kind.parse(pairs)?,
                })
            }
        };
        let mut have_code = false;
        for (name, value) in pairs {
            match (&mut params, name) {
                (Params::DnsTag { tag, .. }, "tag") => *tag = text_tag(value, "tag")?,
                (Params::DnsCompression { recursion_desired }, "recursion-desired") => {
                    *recursion_desired = parse_bool(value, "recursion-desired")?
                }
                (Params::DnsClearance { code }, "code") => {
                    if value.len() != security::CLEARANCE_LEN {
                        return Err(ParamError::BadValue("code"));
                    }
                    *code = text_tag(value, "code")?;
                    have_code = true;
                }
                (Params::StreamTag { interval, .. }, "interval") => {
                    let n: u32 = value
                        .parse()
                        .map_err(|_| ParamError::BadValue("interval"))?;
                    if n < 16 {
                        return Err(ParamError::BadValue("interval"));
                    }
                    *interval = n;
                }
                (Params::StreamTag { tag, .. }, "tag") => *tag = text_tag(value, "tag")?,
                (Params::RateLimit { delay_ms }, "delay") => {
                    let n: u32 = value.parse().map_err(|_| ParamError::BadValue("delay"))?;
                    if n > 60_000 {
                        return Err(ParamError::BadValue("delay"));
                    }
                    *delay_ms = n;
                }
                (Params::AppIdTag { label, .. }, "label") => *label = text_tag(value, "label")?,
                (
                    Params::AppIdTag {
                        use_thread_name, ..
                    },
                    "use-thread-name",
                ) => *use_thread_name = parse_bool(value, "use-thread-name")?,
                _ => return Err(ParamError::UnknownParameter),
            }
        }
        if kind == Kind::DnsClearanceFilter && !have_code {
            return Err(ParamError::Missing("code"));
        }
        Ok(params)
    }
}

/// Per (socket, module) state the tap keeps for a module. Fixed size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketState {
    /// Stream tag, sending side: payload bytes since the last tag.
    pub sent_since_tag: u32,
    /// Receiving side: recognition of the first tag (see [`Recognition`]).
    pub recognition: Recognition,
    /// Receiving side: bytes of the current tag still to strip (0 = in
    /// payload).
    pub tag_left: u8,
    /// Receiving side: payload bytes until the next tag.
    pub until_tag: u32,
    /// Bytes held while recognising a signature at the start of a stream.
    pub held_len: u8,
    pub held: [u8; MAX_TAG + 2],
    /// The stream prefix (app-id tag) was sent already.
    pub prefix_sent: bool,
    /// An external kind's own state.
    pub external: abi::StateBlob,
}

impl Default for SocketState {
    fn default() -> Self {
        SocketState {
            sent_since_tag: 0,
            recognition: Recognition::Unknown,
            tag_left: 0,
            until_tag: 0,
            held_len: 0,
            held: [0; MAX_TAG + 2],
            prefix_sent: false,
            external: abi::StateBlob::default(),
        }
    }
}

/// Whether a stream module has recognised its signature on this socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Recognition {
    #[default]
    Unknown,
    Mine,
    NotMine,
}

/// One configured module: identity, kind and parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instance {
    pub id: u32,
    pub kind: Kind,
    pub params: Params,
}

impl Instance {
    pub fn new<'a>(
        id: u32,
        kind: Kind,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Instance, ParamError> {
        Ok(Instance {
            id,
            kind,
            params: Params::parse(kind, pairs)?,
        })
    }

    /// Output space `send` needs for `input_len` input bytes.
    #[inline]
    pub fn send_capacity(&self, input_len: usize) -> usize {
        // By reference: a tag is 65 bytes, not worth a copy per message.
        match &self.params {
            Params::DnsTag { tag, .. } => input_len + tag.len(),
            Params::DnsClearance { code } => input_len + code.len(),
            Params::DnsCompression { .. } => input_len,
            Params::StreamTag { interval, tag } => {
                input_len + (input_len / *interval as usize + 2) * tag.len()
            }
            Params::RateLimit { .. } => 0,
            Params::AppIdTag { .. } => input_len + appid::MAX_PREFIX,
            Params::External { kind, blob } => kind.capacity(blob, true, input_len),
        }
    }

    /// Output space `recv` needs for `input_len` input bytes.
    #[inline]
    pub fn recv_capacity(&self, input_len: usize) -> usize {
        match &self.params {
            // The rebuilt header is longer than the compressed one.
            Params::DnsCompression { .. } => input_len + dns::HEADER_LEN,
            // Bytes held during recognition may be released with the input.
            Params::StreamTag { .. } | Params::AppIdTag { .. } => input_len + MAX_TAG + 2,
            Params::External { kind, blob } => kind.capacity(blob, false, input_len),
            _ => input_len,
        }
    }

    /// Which directions this module can act on for a socket of `role` and
    /// `transport`. Elsewhere its `send`/`recv` only ever say `NotMine`, so
    /// the tap hands those calls straight to the kernel (a DNS client's
    /// answers, a DNS server's replies). A test holds every kind to this.
    pub fn acts_on(&self, role: Role, transport: Transport) -> Directions {
        let (send_role, recv_role, on) = match &self.params {
            Params::DnsTag { .. } | Params::DnsClearance { .. } | Params::DnsCompression { .. } => {
                (Role::Client, Role::Server, Some(Transport::Datagram))
            }
            Params::StreamTag { .. } => (Role::Server, Role::Client, Some(Transport::Stream)),
            Params::AppIdTag { .. } => (Role::Client, Role::Server, None),
            // A delay on every send, whatever the socket.
            Params::RateLimit { .. } => {
                return Directions {
                    send: true,
                    recv: false,
                }
            }
            Params::External { kind, blob } => return kind.acts_on(blob, role, transport),
        };
        let transport_ok = match on {
            Some(t) => t == transport,
            None => true,
        };
        Directions {
            send: transport_ok && role == send_role,
            recv: transport_ok && role == recv_role,
        }
    }

    /// Whether this kind can act on datagrams at all (see `acts_on`).
    pub fn acts_on_datagrams(&self) -> bool {
        [Role::Client, Role::Server].into_iter().any(|role| {
            let d = self.acts_on(role, Transport::Datagram);
            d.send || d.recv
        })
    }

    /// Whether this kind keeps anything in its [`SocketState`] (the stream
    /// and app-id kinds: tag positions, held bytes, the prefix sent). A
    /// socket's chain of kinds that keep nothing can serve the next socket
    /// as it is, with no state to start afresh.
    pub fn keeps_socket_state(&self) -> bool {
        match &self.params {
            Params::StreamTag { .. } | Params::AppIdTag { .. } => true,
            Params::External { kind, .. } => kind.keeps_socket_state(),
            _ => false,
        }
    }

    /// The datagram customization of the kinds that are one fixed
    /// insertion (front and middle tag, clearance filter): the same as their
    /// `send` on a client's and `recv` on a server's datagram socket, where
    /// they are `required_on_recv` (a test holds them to it). `None` for
    /// the other kinds.
    pub fn splice(&self) -> Option<Splice<'_>> {
        let (at, tag) = match &self.params {
            Params::DnsTag {
                position: TagPosition::Front,
                tag,
            } => (0, tag),
            Params::DnsTag {
                position: TagPosition::Middle,
                tag,
            } => (dns::HEADER_LEN, tag),
            Params::DnsClearance { code } => (0, code),
            Params::External { kind, blob } => return kind.splice(blob),
            _ => return None,
        };
        Some(Splice {
            at,
            bytes: tag.as_bytes(),
            min_send: dns::HEADER_LEN,
        })
    }

    /// Whether a receiving server must drop what no module of its chain
    /// recognised (front and middle tag, clearance filter: the spec says the
    /// server drops untagged queries).
    pub fn required_on_recv(&self, ctx: &Ctx<'_>) -> bool {
        if let Params::External { kind, blob } = &self.params {
            return kind.required_on_recv(blob, ctx);
        }
        ctx.role == Role::Server
            && ctx.transport == Transport::Datagram
            && matches!(
                self.params,
                Params::DnsTag {
                    position: TagPosition::Front | TagPosition::Middle,
                    ..
                } | Params::DnsClearance { .. }
            )
    }

    /// Customizes one outgoing message (datagram) or stream chunk.
    ///
    /// The stream, app-id and compression kinds stay out of line: inlined
    /// into a chain's loop, their set-up is hoisted ahead of it, and a DNS
    /// tag paid for it on every message (callgrind: ≈ 20 instructions per
    /// query and side). The DNS tags, a few instructions, stay inline.
    #[inline]
    pub fn send(
        &self,
        state: &mut SocketState,
        ctx: &Ctx<'_>,
        input: &[u8],
        out: &mut [u8],
    ) -> SendVerdict {
        match &self.params {
            Params::DnsTag { position, tag } => dns::tag_send(*position, tag, ctx, input, out),
            Params::DnsClearance { code } => {
                dns::tag_send(TagPosition::Front, code, ctx, input, out)
            }
            Params::DnsCompression { .. } => dns::compress_send(ctx, input, out),
            Params::StreamTag { interval, tag } => {
                stream::send(*interval, tag, state, ctx, input, out)
            }
            Params::RateLimit { delay_ms } => rate::send(*delay_ms),
            Params::AppIdTag {
                label,
                use_thread_name,
            } => appid::send(label, *use_thread_name, state, ctx, input, out),
            Params::External { kind, blob } => {
                kind.send(blob, &mut state.external, ctx, input, out)
            }
        }
    }

    /// Customizes one incoming message (datagram) or stream chunk.
    #[inline]
    pub fn recv(
        &self,
        state: &mut SocketState,
        ctx: &Ctx<'_>,
        input: &[u8],
        out: &mut [u8],
    ) -> RecvVerdict {
        match &self.params {
            Params::DnsTag { position, tag } => dns::tag_recv(*position, tag, ctx, input, out),
            Params::DnsClearance { code } => {
                dns::tag_recv(TagPosition::Front, code, ctx, input, out)
            }
            Params::DnsCompression { recursion_desired } => {
                dns::compress_recv(*recursion_desired, ctx, input, out)
            }
            Params::StreamTag { interval, tag } => {
                stream::recv(*interval, tag, state, ctx, input, out)
            }
            Params::RateLimit { .. } => RecvVerdict::NotMine,
            Params::AppIdTag { .. } => appid::recv(state, ctx, input, out),
            Params::External { kind, blob } => {
                kind.recv(blob, &mut state.external, ctx, input, out)
            }
        }
    }

    /// End of stream: returns how many held bytes (kept while recognising a
    /// signature) were written to `out`; they are application data.
    pub fn recv_eof(&self, state: &mut SocketState, out: &mut [u8]) -> usize {
        if let Params::External { kind, blob } = &self.params {
            return kind.recv_eof(blob, &mut state.external, out);
        }
        stream::release_held(state, out)
    }
}

/// Copies `parts` one after another into `out`; `None` if it does not fit.
/// (A fixed number of parts: the loops unroll into plain copies.)
#[inline]
fn concat<const N: usize>(out: &mut [u8], parts: [&[u8]; N]) -> Option<usize> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let out = out.get_mut(..total)?;
    let mut at = 0;
    for p in parts {
        out[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DNS query for `example.test`, type A.
    const QUERY: &[u8] =
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x04test\x00\x00\x01\x00\x01";

    /// One instance of every kind, with its default parameters (the
    /// clearance filter needs a code).
    fn every_kind() -> impl Iterator<Item = (Kind, Instance)> {
        Kind::ALL.into_iter().map(|kind| {
            let pairs: &[(&str, &str)] = if kind == Kind::DnsClearanceFilter {
                &[("code", "0123456789abcdefghijklmnopqrstuv")]
            } else {
                &[]
            };
            (kind, Instance::new(1, kind, pairs.iter().copied()).unwrap())
        })
    }

    /// A context for every role and transport.
    fn every_ctx() -> impl Iterator<Item = Ctx<'static>> {
        [Role::Client, Role::Server].into_iter().flat_map(|role| {
            [Transport::Stream, Transport::Datagram]
                .into_iter()
                .map(move |transport| Ctx {
                    role,
                    transport,
                    thread_name: b"t",
                    process_name: b"p",
                })
        })
    }

    /// `acts_on` is a promise the tap relies on to skip calls: wherever a
    /// kind says it does not act, its send/recv must say `NotMine` for any
    /// bytes — including bytes carrying its own signature.
    #[test]
    fn kinds_leave_alone_every_direction_acts_on_excludes() {
        let query = QUERY;
        let mut own = [0u8; 256];
        let mut buf = [0u8; 512];
        for (kind, m) in every_kind() {
            let mut seen = Directions::default();
            for ctx in every_ctx() {
                let (role, transport) = (ctx.role, ctx.transport);
                let acts = m.acts_on(role, transport);
                seen = seen.or(acts);
                // The kind's own customized form of a query, made as its
                // sending end would make it.
                let sender = Ctx {
                    role: Role::Client,
                    transport: Transport::Datagram,
                    ..ctx
                };
                let mut st = SocketState::default();
                let n = match m.send(&mut st, &sender, query, &mut own) {
                    SendVerdict::Customized(n) => n,
                    _ => 0,
                };
                for input in [query, &own[..n], b"XTAGTAGTAG and more bytes".as_slice()] {
                    if !acts.send {
                        let mut st = SocketState::default();
                        assert_eq!(
                            m.send(&mut st, &ctx, input, &mut buf),
                            SendVerdict::NotMine,
                            "{kind:?} {role:?} {transport:?} send"
                        );
                    }
                    if !acts.recv {
                        let mut st = SocketState::default();
                        assert_eq!(
                            m.recv(&mut st, &ctx, input, &mut buf),
                            RecvVerdict::NotMine,
                            "{kind:?} {role:?} {transport:?} recv"
                        );
                    }
                }
            }
            assert!(seen.send, "{kind:?} acts on no send at all");
        }
    }

    /// `keeps_socket_state` is a promise the tap relies on to hand a closed
    /// socket's chain, state and all, to the next socket: a kind that says
    /// it keeps nothing must leave its state as it found it, sending and
    /// receiving, on its own customized bytes too.
    #[test]
    fn kinds_that_keep_no_socket_state_leave_it_untouched() {
        let query = QUERY;
        let mut own = [0u8; 256];
        let mut buf = [0u8; 512];
        let mut stateful = 0;
        for (kind, m) in every_kind() {
            if m.keeps_socket_state() {
                stateful += 1;
                continue;
            }
            for ctx in every_ctx() {
                let (role, transport) = (ctx.role, ctx.transport);
                let mut st = SocketState::default();
                let n = match m.send(&mut st, &ctx, query, &mut own) {
                    SendVerdict::Customized(n) => n,
                    _ => 0,
                };
                assert_eq!(
                    st,
                    SocketState::default(),
                    "{kind:?} {role:?} {transport:?} send"
                );
                for input in [query, &own[..n]] {
                    let _ = m.recv(&mut st, &ctx, input, &mut buf);
                    assert_eq!(
                        st,
                        SocketState::default(),
                        "{kind:?} {role:?} {transport:?} recv"
                    );
                }
            }
        }
        assert_eq!(stateful, 2, "the stream tag and the app-id tag keep state");
    }

    /// `splice` is a promise the tap relies on to skip a module: for every
    /// length around the limits, customized or not, tagged or not, doing
    /// the splice must give what the module's own send and recv give.
    #[test]
    fn splices_do_what_their_modules_do() {
        let client = Ctx {
            role: Role::Client,
            transport: Transport::Datagram,
            thread_name: b"t",
            process_name: b"p",
        };
        let server = Ctx {
            role: Role::Server,
            ..client
        };
        let mut spliced = 0;
        for (kind, m) in every_kind() {
            let Some(sp) = m.splice() else {
                assert!(
                    !matches!(
                        kind,
                        Kind::DnsFrontTag | Kind::DnsMiddleTag | Kind::DnsClearanceFilter
                    ),
                    "{kind:?} is an insertion"
                );
                continue;
            };
            spliced += 1;
            assert!(
                sp.at <= sp.min_send,
                "{kind:?}: inserts past the shortest datagram"
            );
            assert!(
                m.required_on_recv(&server),
                "{kind:?}: a splice drops what it does not recognise"
            );
            let mut own = [0u8; 512];
            let mut buf = [0u8; 512];
            for len in 0..QUERY.len() + 2 * MAX_TAG {
                // The query's bytes, cycled to `len`, plain and with the
                // tag written over them at every offset (near misses too).
                let plain: [u8; 256] = core::array::from_fn(|i| QUERY[i % QUERY.len()]);
                let plain = &plain[..len];
                let mut st = SocketState::default();
                let sent = m.send(&mut st, &client, plain, &mut own);
                if len >= sp.min_send {
                    let n = sp.at + sp.bytes.len() + (len - sp.at);
                    assert_eq!(sent, SendVerdict::Customized(n), "{kind:?} len {len}");
                    assert_eq!(&own[..sp.at], &plain[..sp.at]);
                    assert_eq!(&own[sp.at..sp.at + sp.bytes.len()], sp.bytes);
                    assert_eq!(&own[sp.at + sp.bytes.len()..n], &plain[sp.at..]);
                } else {
                    assert!(
                        matches!(sent, SendVerdict::PassThrough | SendVerdict::NotMine),
                        "{kind:?} len {len}: {sent:?}"
                    );
                }
                let mut inputs = [[0u8; 256]; 3];
                inputs[0][..len].copy_from_slice(plain);
                for (k, at) in [sp.at, sp.at + 1].into_iter().enumerate() {
                    inputs[k + 1][..len].copy_from_slice(plain);
                    let end = (at + sp.bytes.len()).min(len);
                    if at < end {
                        inputs[k + 1][at..end].copy_from_slice(&sp.bytes[..end - at]);
                    }
                }
                for input in &inputs {
                    let wire = &input[..len];
                    let got = m.recv(&mut st, &server, wire, &mut buf);
                    if sp.recognises(wire) {
                        let n = len - sp.bytes.len();
                        assert_eq!(got, RecvVerdict::Customized(n), "{kind:?} len {len}");
                        assert_eq!(&buf[..sp.at], &wire[..sp.at]);
                        assert_eq!(&buf[sp.at..n], &wire[sp.at + sp.bytes.len()..]);
                    } else {
                        assert_eq!(got, RecvVerdict::NotMine, "{kind:?} len {len}");
                    }
                }
            }
        }
        assert_eq!(spliced, 3);
    }

    #[test]
    fn kinds_round_trip_names_and_codes() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(k));
            assert_eq!(Kind::from_code(k.code()), Some(k));
        }
        assert_eq!(Kind::from_name("dns-tag"), None);
        assert_eq!(Kind::from_code(0), None);
    }

    #[test]
    fn parameters_take_defaults_and_refuse_bad_values() {
        let p = Params::parse(Kind::StreamTag, []).unwrap();
        assert_eq!(
            p,
            Params::StreamTag {
                interval: 1000,
                tag: Tag::new(defaults::STREAM_TAG).unwrap()
            }
        );
        assert_eq!(
            Params::parse(Kind::StreamTag, [("interval", "15")]),
            Err(ParamError::BadValue("interval"))
        );
        assert_eq!(
            Params::parse(Kind::RateLimit, [("tag", "x")]),
            Err(ParamError::UnknownParameter)
        );
        assert_eq!(
            Params::parse(Kind::DnsClearanceFilter, []),
            Err(ParamError::Missing("code"))
        );
        assert_eq!(
            Params::parse(Kind::DnsClearanceFilter, [("code", "short")]),
            Err(ParamError::BadValue("code"))
        );
        assert_eq!(
            Params::parse(Kind::DnsFrontTag, [("tag", "")]),
            Err(ParamError::BadValue("tag"))
        );
        assert_eq!(
            Params::parse(Kind::DnsFrontTag, [("tag", "tab\there")]),
            Err(ParamError::BadValue("tag"))
        );
        assert_eq!(
            Params::parse(Kind::StreamTag, [("tag", "ünï")]),
            Err(ParamError::BadValue("tag"))
        );
        assert_eq!(
            Params::parse(Kind::AppIdTag, [("use-thread-name", "yes")]),
            Err(ParamError::BadValue("use-thread-name"))
        );
    }
}
