//! `l45-dissector`: generates the inverse module of one customization-module
//! instance, a Wireshark Lua dissector, from the instance's kind and
//! parameters (see `docs/dissectors.md` and the wire formats in
//! `docs/modules.md`).
//!
//! ```text
//! l45-dissector KIND [name=value ...] [--port N]... > KIND.lua
//! l45-dissector --all DIR
//! ```
//!
//! Parameters are the YANG leaf names of the kind's parameter container and
//! go through [`Params::parse`], so they are refused exactly as the taps
//! refuse them. `--port N` also binds the dissector to port N (UDP for the DNS
//! kinds, TCP for the stream tag, both for the app-id tag), ahead of the
//! dissector registered there (e.g. `dns` on 53), which still gets the
//! traffic the module did not customize. Without it only heuristics run.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use l45_modules::wire::{
    APP_ID_MAGIC, APP_ID_MAX_PREFIX, CLEARANCE_LEN, COMPRESSED_MARKER, DNS_HEADER_LEN,
};
use l45_modules::{Kind, Params, TagPosition};

/// Clearance code used by `--all`, which has no instance to take one from
/// (the kind has no default). Documented in `docs/dissectors.md`.
pub const EXAMPLE_CLEARANCE_CODE: &str = "0123456789abcdefghijklmnopqrstuv";

/// Generates the Wireshark Lua dissector (the inverse module) of one
/// Layer 4.5 customization-module instance, on stdout.
///
/// Parameters are the YANG leaf names of the kind's parameter container
/// (e.g. tag=XTAGXdig) and are refused exactly as the taps refuse them;
/// omitted ones take the model's defaults. Load the output with
/// `tshark -X lua_script:FILE` or put it in Wireshark's plugin folder.
#[derive(Debug, Parser)]
#[command(name = "l45-dissector", version, max_term_width = 100)]
struct Cli {
    /// Module kind whose dissector to generate.
    #[arg(value_name = "KIND", value_parser = KindParser, required_unless_present = "all")]
    kind: Option<Kind>,
    /// The instance's parameters, NAME=VALUE with the YANG leaf name.
    #[arg(value_name = "NAME=VALUE", requires = "kind")]
    params: Vec<String>,
    /// Also bind the dissector to port N (UDP for the DNS kinds, TCP for
    /// stream-tag, both for app-id-tag), ahead of the dissector registered
    /// there, which still gets what the module did not customize
    /// (repeatable). Without it only heuristics run.
    #[arg(long = "port", value_name = "N", value_parser = parse_port, requires = "kind")]
    ports: Vec<u16>,
    /// Write the dissector of every kind, with default parameters, as
    /// DIR/KIND.lua instead.
    #[arg(long, value_name = "DIR", conflicts_with = "kind", value_hint = clap::ValueHint::DirPath)]
    all: Option<PathBuf>,
}

/// Module kind names, offered to completions and refused with the list of
/// known kinds.
#[derive(Clone, Copy)]
struct KindParser;

impl TypedValueParser for KindParser {
    type Value = Kind;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Kind, clap::Error> {
        let name = value.to_string_lossy();
        Kind::from_name(&name).ok_or_else(|| {
            let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
            cmd.clone().error(
                ErrorKind::InvalidValue,
                format!("unknown module kind '{name}' (known: {})", known.join(", ")),
            )
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            Kind::ALL.iter().map(|k| PossibleValue::new(k.name())),
        ))
    }
}

/// A command-line error: printed on stderr, exit code 2.
#[derive(Debug)]
enum CliError {
    /// The command line does not parse (clap's message and usage).
    Usage(clap::Error),
    /// It parses, but the kind refuses its parameters or ports.
    Invalid(String),
}

/// What the command line asks for (one per run: its size does not matter).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq, Eq)]
enum Command {
    One {
        kind: Kind,
        params: Params,
        ports: Vec<u16>,
    },
    All {
        dir: PathBuf,
    },
}

/// `args` without the program name.
fn parse_args<I, T>(args: I) -> Result<Command, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let argv = std::iter::once(std::ffi::OsString::from("l45-dissector"))
        .chain(args.into_iter().map(Into::into));
    let cli = Cli::try_parse_from(argv).map_err(CliError::Usage)?;
    if let Some(dir) = cli.all {
        return Ok(Command::All { dir });
    }
    // clap requires one of the two.
    let Some(kind) = cli.kind else {
        return Err(CliError::Usage(
            Cli::command().error(ErrorKind::MissingRequiredArgument, "no module kind given"),
        ));
    };
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for arg in &cli.params {
        let Some((name, value)) = arg.split_once('=') else {
            return Err(CliError::Invalid(format!(
                "'{arg}' is not a parameter: write name=value with the YANG leaf name, e.g. tag=XTAGXdig"
            )));
        };
        pairs.push((name, value));
    }
    let params = Params::parse(kind, pairs.iter().copied()).map_err(|e| {
        let names: Vec<&str> = pairs.iter().map(|(n, _)| *n).collect();
        CliError::Invalid(format!(
            "{}: {e} (parameters given: {})",
            kind.name(),
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ))
    })?;
    let mut ports = cli.ports;
    if kind == Kind::RateLimit && !ports.is_empty() {
        return Err(CliError::Invalid(
            "rate-limit puts no bytes on the wire, so there is nothing to bind to a port".into(),
        ));
    }
    ports.sort_unstable();
    ports.dedup();
    Ok(Command::One {
        kind,
        params,
        ports,
    })
}

fn parse_port(value: &str) -> Result<u16, String> {
    match value.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("bad port '{value}': expected 1..65535")),
    }
}

/// Default parameters of `kind` for `--all`.
fn default_params(kind: Kind) -> Result<Params, CliError> {
    let pairs: &[(&str, &str)] = match kind {
        Kind::DnsClearanceFilter => &[("code", EXAMPLE_CLEARANCE_CODE)],
        _ => &[],
    };
    Params::parse(kind, pairs.iter().copied())
        .map_err(|e| CliError::Invalid(format!("{}: default parameters refused: {e}", kind.name())))
}

fn write_all(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        CliError::Invalid(format!("cannot create directory {}: {e}", dir.display()))
    })?;
    let mut written = Vec::new();
    for kind in Kind::ALL {
        let lua = generate(kind, &default_params(kind)?, &[]);
        let path = dir.join(format!("{}.lua", kind.name()));
        std::fs::write(&path, lua)
            .map_err(|e| CliError::Invalid(format!("cannot write {}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

fn main() -> ExitCode {
    if let Some(code) = l45_service::assets::run_if_requested(Cli::command) {
        return code;
    }
    let result = parse_args(std::env::args_os().skip(1)).and_then(|cmd| match cmd {
        Command::One {
            kind,
            params,
            ports,
        } => {
            print!("{}", generate(kind, &params, &ports));
            Ok(())
        }
        Command::All { dir } => {
            for path in write_all(&dir)? {
                eprintln!("wrote {}", path.display());
            }
            Ok(())
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Help and --version (stdout, 0) and usage errors (stderr, 2).
        Err(CliError::Usage(e)) => e.exit(),
        Err(CliError::Invalid(msg)) => {
            eprintln!("l45-dissector: {msg}");
            ExitCode::from(2)
        }
    }
}

// ===== generation =====

/// Wireshark protocol name (filter prefix) of a kind's dissector.
pub fn proto_name(kind: Kind) -> &'static str {
    match kind {
        Kind::DnsFrontTag => "l45_dns_front_tag",
        Kind::DnsMiddleTag => "l45_dns_middle_tag",
        Kind::DnsEndTag => "l45_dns_end_tag",
        Kind::DnsCompression => "l45_dns_compression",
        Kind::DnsClearanceFilter => "l45_dns_clearance",
        Kind::StreamTag => "l45_stream_tag",
        Kind::RateLimit => "l45_rate_limit",
        Kind::AppIdTag => "l45_app_id",
        Kind::External(_) => "l45_installed",
    }
}

/// A Lua string literal holding exactly `bytes` (printable ASCII as is,
/// everything else as a three-digit decimal escape).
fn lua_str(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 2);
    s.push('"');
    for &b in bytes {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(char::from(b)),
            _ => {
                let _ = write!(s, "\\{b:03}");
            }
        }
    }
    s.push('"');
    s
}

fn lua_ports(ports: &[u16]) -> String {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!("{{ {} }}", list.join(", "))
}

/// Replaces every `@KEY@` in `template`.
fn fill(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (key, value) in vars {
        out = out.replace(&format!("@{key}@"), value);
    }
    out
}

/// The Lua dissector of one instance of `kind` with `params`; `ports` also
/// binds it to those ports.
pub fn generate(kind: Kind, params: &Params, ports: &[u16]) -> String {
    let proto = proto_name(kind);
    let mut vars: Vec<(&str, String)> = vec![
        ("PROTO", proto.to_string()),
        ("KIND", kind.name().to_string()),
        ("PORTS", lua_ports(ports)),
        ("HEADER_LEN", DNS_HEADER_LEN.to_string()),
    ];
    // Transports on which `decoders` are registered (heuristic and --port);
    // the stream tag registers itself (a post-dissector), the rate limit
    // nothing.
    let (body, instance, transports): (&str, String, &[&str]) = match *params {
        Params::DnsTag { position, tag } => {
            vars.push(("TAG", lua_str(tag.as_bytes())));
            let (pos, title) = match position {
                TagPosition::Front => ("front", "front tag"),
                TagPosition::Middle => ("middle", "middle tag"),
                TagPosition::End => ("end", "end tag"),
            };
            vars.push(("POSITION", lua_str(pos.as_bytes())));
            vars.push(("TITLE", format!("DNS {title}")));
            (
                DNS_TAG_LUA,
                format!("tag = {}", lua_str(tag.as_bytes())),
                &["udp"],
            )
        }
        Params::DnsClearance { code } => {
            vars.push(("TAG", lua_str(code.as_bytes())));
            vars.push(("POSITION", lua_str(b"front")));
            vars.push(("TITLE", "DNS clearance filter".to_string()));
            vars.push(("CLEARANCE_LEN", CLEARANCE_LEN.to_string()));
            (
                DNS_TAG_LUA,
                format!(
                    "code = {} (secret: treat this file like the code)",
                    lua_str(code.as_bytes())
                ),
                &["udp"],
            )
        }
        Params::DnsCompression { recursion_desired } => {
            vars.push(("MARKER", format!("0x{COMPRESSED_MARKER:02X}")));
            vars.push(("RD", recursion_desired.to_string()));
            vars.push(("TITLE", "DNS compression".to_string()));
            (
                DNS_COMPRESSION_LUA,
                format!("recursion-desired = {recursion_desired}"),
                &["udp"],
            )
        }
        Params::StreamTag { interval, tag } => {
            vars.push(("TAG", lua_str(tag.as_bytes())));
            vars.push(("INTERVAL", interval.to_string()));
            vars.push(("TITLE", "stream tag".to_string()));
            (
                STREAM_TAG_LUA,
                format!("interval = {interval}, tag = {}", lua_str(tag.as_bytes())),
                &[],
            )
        }
        Params::External { kind, .. } => {
            vars.push(("NAME", kind.name().to_string()));
            (
                INSTALLED_LUA,
                format!("installed kind {}", kind.name()),
                &[],
            )
        }
        Params::RateLimit { delay_ms } => {
            vars.push(("DELAY", delay_ms.to_string()));
            vars.push(("TITLE", "rate limit".to_string()));
            (RATE_LIMIT_LUA, format!("delay = {delay_ms} ms"), &[])
        }
        Params::AppIdTag {
            label,
            use_thread_name,
        } => {
            vars.push(("MAGIC", lua_str(APP_ID_MAGIC)));
            vars.push(("LABEL", lua_str(label.as_bytes())));
            vars.push(("MAX_BODY", (APP_ID_MAX_PREFIX - 5).to_string()));
            vars.push((
                "NAME_SOURCE",
                if use_thread_name { "thread" } else { "process" }.to_string(),
            ));
            vars.push(("TITLE", "application-id tag".to_string()));
            (
                APP_ID_LUA,
                format!(
                    "label = {}, use-thread-name = {use_thread_name}",
                    lua_str(label.as_bytes())
                ),
                &["udp", "tcp"],
            )
        }
    };
    vars.push(("INSTANCE", instance));
    let quoted: Vec<String> = transports.iter().map(|t| lua_str(t.as_bytes())).collect();
    vars.push(("TRANSPORTS", format!("{{ {} }}", quoted.join(", "))));
    let mut out = fill(HEADER_LUA, &vars);
    out.push_str(&fill(COMMON_LUA, &vars));
    if kind != Kind::RateLimit {
        out.push_str(&fill(HELPERS_LUA, &vars));
    }
    if !transports.is_empty() {
        out.push_str(&fill(DNS_HELPERS_LUA, &vars));
    }
    out.push_str(&fill(body, &vars));
    if !transports.is_empty() {
        out.push_str(&fill(PORTS_LUA, &vars));
        for t in transports {
            let mut v = vars.clone();
            v.push(("T", (*t).to_string()));
            out.push_str(&fill(REGISTER_LUA, &v));
        }
    }
    out
}

const HEADER_LUA: &str = r#"-- Layer 4.5 inverse module: Wireshark dissector for one @KIND@ instance.
-- Generated by l45-dissector; regenerate rather than edit (the constants
-- must match the deployed module). Instance: @INSTANCE@.
-- Wire formats: docs/modules.md. Usage and limits: docs/dissectors.md.
--   tshark -X lua_script:THIS.lua -r capture.pcap -Y @PROTO@
"#;

const COMMON_LUA: &str = r#"
local proto = Proto("@PROTO@", "Layer 4.5 @TITLE@")
"#;

/// Helpers of the dissectors that decode bytes.
const HELPERS_LUA: &str = r#"
local HEADER_LEN = @HEADER_LEN@   -- DNS header (RFC 1035 4.1.1)
local PORTS = @PORTS@   -- ports given with --port
local TRANSPORTS = @TRANSPORTS@
local data_dissector = Dissector.get("data")
-- "transport/port" -> the dissector --port displaced there (false if none)
local displaced = {}

-- The dissector other than this one for transport/port, or nil.
local function port_dissector(transport, port)
    local d = displaced[transport .. "/" .. port]
    if d ~= nil then return d or nil end
    return DissectorTable.get(transport .. ".port"):get_dissector(port)
end

-- Bytes [offset, offset + length) of tvb as a ByteArray (empty if length 0).
local function bytes(tvb, offset, length)
    if length <= 0 then return ByteArray.new() end
    return tvb:bytes(offset, length)
end
"#;

/// DNS helpers of the DNS kinds and the app-id tag.
const DNS_HELPERS_LUA: &str = r#"
-- Length of the uncompressed QNAME at offset (labels only, at most 255
-- bytes, root label included), or nil: the same rule as modules/src/dns.rs.
local function qname_len(tvb, offset)
    local at = 0
    while true do
        if offset + at >= tvb:len() then return nil end
        local n = tvb(offset + at, 1):uint()
        if n > 63 then return nil end
        at = at + 1 + n
        if at > 255 then return nil end
        if n == 0 then return at end
    end
end

-- The dotted form of a QNAME whose length qname_len has checked.
local function qname_text(tvb, offset)
    local labels = {}
    while true do
        local n = tvb(offset, 1):uint()
        if n == 0 then break end
        labels[#labels + 1] = tvb:raw(offset + 1, n)
        offset = offset + 1 + n
    end
    if #labels == 0 then return "<Root>" end
    return table.concat(labels, ".")
end

-- Hands a de-customized DNS message to Wireshark's DNS dissector and marks
-- the columns.
local dns_dissector = Dissector.get("dns")
local function call_dns(bytearray, name, pinfo, tree)
    dns_dissector:call(bytearray:tvb(name), pinfo, tree)
    pinfo.cols.protocol:set("L45 DNS")
    pinfo.cols.info:prepend("[@TITLE@] ")
end
"#;

const DNS_TAG_LUA: &str = r#"
-- Client send (docs/modules.md), position @POSITION@:
--   front: TAG || query     middle: header(12) || TAG || rest     end: query || TAG
-- The server recognises a datagram of at least HEADER_LEN + #TAG bytes with
-- TAG at that place; so does this dissector.
local TAG = @TAG@
local POSITION = @POSITION@

local f_tag = ProtoField.string("@PROTO@.tag", "Tag")
local f_offset = ProtoField.uint16("@PROTO@.offset", "Tag offset")
local f_query_len = ProtoField.uint16("@PROTO@.query_len", "DNS message length without the tag")
proto.fields = { f_tag, f_offset, f_query_len }

-- Offset of TAG in the datagram, or nil if the datagram is not this module's.
local function tag_offset(tvb)
    local len = tvb:len()
    if len < HEADER_LEN + #TAG then return nil end
    local at
    if POSITION == "front" then at = 0
    elseif POSITION == "middle" then at = HEADER_LEN
    else at = len - #TAG end
    if tvb:raw(at, #TAG) ~= TAG then return nil end
    return at
end

local function decode(tvb, pinfo, tree)
    local at = tag_offset(tvb)
    if at == nil then return false end
    local len = tvb:len()
    local subtree = tree:add(proto, tvb(at, #TAG))
    subtree:add(f_tag, tvb(at, #TAG))
    subtree:add(f_offset, tvb(at, #TAG), at)
    subtree:add(f_query_len, len - #TAG):set_generated()
    local query = bytes(tvb, 0, at) .. bytes(tvb, at + #TAG, len - at - #TAG)
    call_dns(query, "DNS without the tag", pinfo, tree)
    return true
end
local decoders = { udp = decode }
"#;

const DNS_COMPRESSION_LUA: &str = r#"
-- Client send (docs/modules.md): ID(2) || MARKER || QNAME || QTYPE(2) || QCLASS(2),
-- nothing else. The server rebuilds the 12-byte header (QDCOUNT 1, RD as
-- configured); this dissector does the same and hands the result to DNS.
local MARKER = @MARKER@
local RECURSION_DESIRED = @RD@

local f_id = ProtoField.uint16("@PROTO@.id", "Query ID", base.HEX)
local f_marker = ProtoField.uint8("@PROTO@.marker", "Compression marker", base.HEX)
local f_qname = ProtoField.string("@PROTO@.qname", "QNAME")
local f_qtype = ProtoField.uint16("@PROTO@.qtype", "QTYPE")
local f_qclass = ProtoField.uint16("@PROTO@.qclass", "QCLASS", base.HEX)
local f_rd = ProtoField.bool("@PROTO@.rd", "RD set in the rebuilt header")
proto.fields = { f_id, f_marker, f_qname, f_qtype, f_qclass, f_rd }

local function decode(tvb, pinfo, tree)
    local len = tvb:len()
    if len < 3 or tvb(2, 1):uint() ~= MARKER then return false end
    local n = qname_len(tvb, 3)
    if n == nil or len ~= 3 + n + 4 then return false end
    local subtree = tree:add(proto, tvb(0, len))
    subtree:add(f_id, tvb(0, 2))
    subtree:add(f_marker, tvb(2, 1))
    subtree:add(f_qname, tvb(3, n), qname_text(tvb, 3))
    subtree:add(f_qtype, tvb(3 + n, 2))
    subtree:add(f_qclass, tvb(5 + n, 2))
    subtree:add(f_rd, RECURSION_DESIRED):set_generated()
    local flags = RECURSION_DESIRED and "01 00" or "00 00"
    local header = bytes(tvb, 0, 2) .. ByteArray.new(flags .. " 00 01 00 00 00 00 00 00")
    call_dns(header .. bytes(tvb, 3, len - 3), "DNS with the rebuilt header", pinfo, tree)
    return true
end
local decoders = { udp = decode }
"#;

const STREAM_TAG_LUA: &str = r#"
-- Server send (docs/modules.md): TAG first, then after every INTERVAL payload
-- bytes (only when more payload follows). So in the server's byte stream the
-- tags sit at offsets k * (INTERVAL + #TAG), k = 0, 1, ...: each segment is
-- decoded from its TCP relative sequence number, whatever the segmentation.
-- A direction is the module's when its first payload byte starts the tag;
-- later segments of that direction are checked against the expected tags.
--
-- The tags sit inside whatever protocol the stream carries (HTTP, TLS...),
-- whose dissector Wireshark usually picks by conversation or port before
-- any heuristic runs. So this is a post-dissector: it looks at every TCP
-- segment's payload after the other dissectors (only on PORTS if any were
-- given) and adds its own tree; the application protocol's tree still shows
-- the tagged bytes.
local TAG = @TAG@
local INTERVAL = @INTERVAL@
local PERIOD = INTERVAL + #TAG

local f_tag = ProtoField.string("@PROTO@.tag", "Tag")
local f_fragment = ProtoField.bytes("@PROTO@.tag_fragment", "Part of a tag split across segments")
local f_count = ProtoField.uint32("@PROTO@.count", "Tags starting in this segment")
local f_offset = ProtoField.uint32("@PROTO@.offset", "Stream offset of the tag")
local f_interval = ProtoField.uint32("@PROTO@.interval", "Interval (payload bytes between tags)")
local f_payload_len = ProtoField.uint32("@PROTO@.payload_len", "Payload bytes in this segment")
proto.fields = { f_tag, f_fragment, f_count, f_offset, f_interval, f_payload_len }

local f_tcp_seq = Field.new("tcp.seq")
local f_tcp_stream = Field.new("tcp.stream")
local f_tcp_payload = Field.new("tcp.payload")

-- "tcp stream/source port" of the directions whose stream starts with TAG.
local tagged = {}
function proto.init()
    tagged = {}
end

local watched = {}
for _, port in ipairs(PORTS) do watched[port] = true end

local function last(field)
    local all = { field() }
    return all[#all]
end

-- Decodes one segment's payload (tvb); false if it is not the module's.
local function decode(tvb, pinfo, tree, seq, stream)
    local len = tvb:len()
    -- Relative sequence numbers (Wireshark's default): the first payload
    -- byte of a direction is 1.
    local off = seq - 1
    local key = tostring(stream) .. "/" .. tostring(pinfo.src_port)
    if off < 0 or (off ~= 0 and not tagged[key]) then return false end
    -- Every tag (or part of one) inside [off, off + len) must be there.
    local pieces = {}
    local k = math.floor(off / PERIOD)
    while k * PERIOD < off + len do
        local t0 = k * PERIOD
        local a = math.max(t0, off)
        local b = math.min(t0 + #TAG, off + len)
        if a < b then
            if tvb:raw(a - off, b - a) ~= TAG:sub(a - t0 + 1, b - t0) then return false end
            pieces[#pieces + 1] = { at = a - off, len = b - a, start = t0, whole = (b - a == #TAG) }
        end
        k = k + 1
    end
    tagged[key] = true

    local count = 0
    local payload = ByteArray.new()
    local at = 0
    for _, p in ipairs(pieces) do
        if p.start >= off then count = count + 1 end
        payload = payload .. bytes(tvb, at, p.at - at)
        at = p.at + p.len
    end
    payload = payload .. bytes(tvb, at, len - at)

    local subtree = tree:add(proto, tvb(0, len))
    subtree:add(f_count, count):set_generated()
    subtree:add(f_interval, INTERVAL):set_generated()
    subtree:add(f_payload_len, payload:len()):set_generated()
    for _, p in ipairs(pieces) do
        if p.whole then
            local item = subtree:add(f_tag, tvb(p.at, p.len))
            item:add(f_offset, tvb(p.at, p.len), p.start)
        else
            subtree:add(f_fragment, tvb(p.at, p.len))
        end
    end
    pinfo.cols.info:prepend(string.format("[@TITLE@: %d tag(s)] ", count))
    if payload:len() > 0 then
        -- A "Stream payload without tags" tab in the packet bytes pane.
        payload:tvb("Stream payload without tags")
    end
    return true
end

function proto.dissector(tvb, pinfo, tree)
    if #PORTS > 0 and not (watched[pinfo.src_port] or watched[pinfo.dst_port]) then return end
    local payload, seq, stream = last(f_tcp_payload), last(f_tcp_seq), last(f_tcp_stream)
    if payload == nil or seq == nil or stream == nil then return end
    decode(payload.range:tvb(), pinfo, tree, seq.value, stream.value)
end
register_postdissector(proto)
"#;

const RATE_LIMIT_LUA: &str = r#"
-- rate-limit delays every send by @DELAY@ ms and changes no byte: nothing on
-- the wire identifies it, so this file registers the protocol (for a
-- consistent set of inverse modules) but no dissector and no heuristic, and
-- no packet will ever show @PROTO@. To see the module's effect, look at
-- the timing of the matched flow instead, e.g.
--   tshark -r capture.pcap -Y 'udp.dstport == 53' -T fields -e frame.time_delta_displayed
-- where consecutive sends are at least @DELAY@ ms apart.
local DELAY_MS = @DELAY@
proto.prefs.delay_note = Pref.statictext(
    "Timing only: each send waits " .. DELAY_MS .. " ms; no bytes on the wire to dissect.")
"#;

const INSTALLED_LUA: &str = r#"
-- @NAME@ is a kind from a module image: its wire format is its author's, not
-- known to this tool, so this file registers the protocol (for a consistent
-- set of inverse modules) but no dissector.
"#;

const APP_ID_LUA: &str = r#"
-- Client send (docs/modules.md): MAGIC || LEN(1) || NAME || ":" || LABEL || payload,
-- before every datagram and once at the start of a stream. LEN counts
-- NAME || ":" || LABEL (at most MAX_BODY); NAME is the @NAME_SOURCE@ name. The
-- server strips any such prefix; this dissector decodes any, and says
-- whether the label is this instance's.
local MAGIC = @MAGIC@
local LABEL = @LABEL@
local MAX_BODY = @MAX_BODY@

local f_magic = ProtoField.string("@PROTO@.magic", "Magic")
local f_len = ProtoField.uint8("@PROTO@.len", "Length of name:label")
local f_name = ProtoField.string("@PROTO@.name", "Application (@NAME_SOURCE@ name)")
local f_label = ProtoField.string("@PROTO@.label", "Label")
local f_mine = ProtoField.bool("@PROTO@.instance_label", "Label is this instance's (" .. LABEL .. ")")
proto.fields = { f_magic, f_len, f_name, f_label, f_mine }

local f_tcp_seq = Field.new("tcp.seq")

-- Length of the prefix at the start of tvb, or nil if there is none.
local function prefix_len(tvb)
    local len = tvb:len()
    if len < 5 or tvb:raw(0, 4) ~= MAGIC then return nil end
    local body = tvb(4, 1):uint()
    if body > MAX_BODY or 5 + body > len then return nil end
    return 5 + body
end

local function add_prefix(tvb, tree, n)
    local subtree = tree:add(proto, tvb(0, n))
    subtree:add(f_magic, tvb(0, 4))
    subtree:add(f_len, tvb(4, 1))
    local body = n - 5
    local text = body > 0 and tvb:raw(5, body) or ""
    -- NAME never holds the label; split before ":" LABEL when it is this
    -- instance's, else at the first ":".
    local name_len
    if body > #LABEL and text:sub(-(#LABEL + 1)) == ":" .. LABEL then
        name_len = body - #LABEL - 1
    else
        name_len = (text:find(":", 1, true) or (body + 1)) - 1
    end
    if name_len > 0 then subtree:add(f_name, tvb(5, name_len)) end
    local label_len = body - name_len - 1
    if label_len > 0 then subtree:add(f_label, tvb(5 + name_len + 1, label_len)) end
    subtree:add(f_mine, label_len == #LABEL and text:sub(-#LABEL) == LABEL):set_generated()
    return text
end

-- Whether tvb holds something shaped like a DNS message (a header and a
-- first question that parses).
local function looks_like_dns(tvb)
    if tvb:len() < HEADER_LEN then return false end
    if tvb(4, 2):uint() < 1 then return false end
    local n = qname_len(tvb, HEADER_LEN)
    return n ~= nil and HEADER_LEN + n + 4 <= tvb:len()
end

local function decode_udp(tvb, pinfo, tree)
    local n = prefix_len(tvb)
    if n == nil then return false end
    local text = add_prefix(tvb, tree, n)
    local rest = tvb:len() - n
    if rest > 0 then
        local inner = bytes(tvb, n, rest):tvb("Payload without the app-id prefix")
        -- The payload goes where it would have gone without the prefix: the
        -- dissector of its port, else DNS if it looks like DNS, else data.
        local sub = port_dissector("udp", pinfo.dst_port) or port_dissector("udp", pinfo.src_port)
        if sub == nil and looks_like_dns(inner) then sub = dns_dissector end
        if sub == nil then sub = data_dissector end
        sub:call(inner, pinfo, tree)
    end
    pinfo.cols.protocol:set("L45 APP-ID")
    pinfo.cols.info:prepend("[app-id " .. text .. "] ")
    return true
end

local function decode_tcp(tvb, pinfo, tree)
    -- Only the first payload byte of a direction (relative sequence 1) can
    -- start the prefix.
    local seqs = { f_tcp_seq() }
    if #seqs == 0 or seqs[#seqs].value ~= 1 then return false end
    local n = prefix_len(tvb)
    if n == nil then return false end
    local text = add_prefix(tvb, tree, n)
    local rest = tvb:len() - n
    if rest > 0 then
        data_dissector:call(bytes(tvb, n, rest):tvb("Stream payload without the app-id prefix"), pinfo, tree)
    end
    pinfo.cols.protocol:set("L45 APP-ID")
    pinfo.cols.info:set("[app-id " .. text .. "] " .. rest .. " payload bytes")
    return true
end
local decoders = { udp = decode_udp, tcp = decode_tcp }
"#;

/// Installs `proto.dissector` for the ports given with `--port`: it decodes
/// what is the module's and hands anything else to the dissector it
/// displaced.
const PORTS_LUA: &str = r#"
local PT_TCP = 2   -- pinfo.port_type of TCP
function proto.dissector(tvb, pinfo, tree)
    local transport = TRANSPORTS[1]
    if #TRANSPORTS > 1 then
        transport = (pinfo.port_type == PT_TCP) and "tcp" or "udp"
    end
    if decoders[transport](tvb, pinfo, tree) then return tvb:len() end
    local sub = port_dissector(transport, pinfo.dst_port) or port_dissector(transport, pinfo.src_port)
    return (sub or data_dissector):call(tvb, pinfo, tree)
end
"#;

/// Registration on one transport `T`: a heuristic, plus the `--port` ports.
const REGISTER_LUA: &str = r#"
-- @T@: a heuristic, tried when no dissector registered for the packet's ports
-- took it (tshark -o @T@.try_heuristic_first:TRUE tries it first), and the
-- --port ports, taken over from whatever dissector had them.
proto:register_heuristic("@T@", decoders.@T@)
for _, port in ipairs(PORTS) do
    local ports = DissectorTable.get("@T@.port")
    displaced["@T@/" .. port] = ports:get_dissector(port) or false
    ports:add(port, proto)
end
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn one(list: &[&str]) -> String {
        match parse_args(list) {
            Ok(Command::One {
                kind,
                params,
                ports,
            }) => generate(kind, &params, &ports),
            other => panic!("{list:?}: {other:?}"),
        }
    }

    #[test]
    fn dns_tag_dissector_carries_the_instance_tag_and_position() {
        let lua = one(&["dns-middle-tag", "tag=MyTag42", "--port", "53"]);
        assert!(lua.contains("local TAG = \"MyTag42\""), "{lua}");
        assert!(lua.contains("local POSITION = \"middle\""));
        assert!(lua.contains("Proto(\"l45_dns_middle_tag\""));
        assert!(lua.contains("ProtoField.string(\"l45_dns_middle_tag.tag\""));
        assert!(lua.contains("local PORTS = { 53 }"));
        assert!(lua.contains("proto:register_heuristic(\"udp\""));
        assert!(!lua.contains("register_heuristic(\"tcp\""));
        assert!(!lua.contains('@'), "unfilled placeholder:\n{lua}");
        // Defaults come from the YANG model via Params::parse.
        let lua = one(&["dns-front-tag"]);
        assert!(lua.contains("local TAG = \"XTAGXdig\""));
        assert!(lua.contains("local PORTS = {  }"));
    }

    #[test]
    fn every_kind_generates_with_defaults_and_no_placeholder_left() {
        for kind in Kind::ALL {
            let params = default_params(kind).expect("defaults");
            let lua = generate(kind, &params, &[]);
            assert!(
                lua.contains(&format!("Proto(\"{}\"", proto_name(kind))),
                "{kind:?}"
            );
            assert!(!lua.contains('@'), "{kind:?}: unfilled placeholder");
        }
        let lua = generate(
            Kind::DnsClearanceFilter,
            &default_params(Kind::DnsClearanceFilter).expect("code"),
            &[],
        );
        assert!(lua.contains(&lua_str(EXAMPLE_CLEARANCE_CODE.as_bytes())));
    }

    #[test]
    fn stream_app_id_compression_and_rate_carry_their_parameters() {
        let lua = one(&["stream-tag", "interval=64", "tag=STREAMTAG"]);
        assert!(lua.contains("local INTERVAL = 64"));
        assert!(lua.contains("local TAG = \"STREAMTAG\""));
        assert!(lua.contains("l45_stream_tag.count"));
        assert!(lua.contains("register_postdissector(proto)"));
        assert!(!lua.contains("register_heuristic"));
        let lua = one(&["stream-tag", "--port", "8443"]);
        assert!(lua.contains("local PORTS = { 8443 }"));

        let lua = one(&["app-id-tag", "label=blue", "--port", "5300"]);
        assert!(lua.contains("local LABEL = \"blue\""));
        assert!(lua.contains("local MAGIC = \"XTAG\""));
        assert!(lua.contains("l45_app_id.name") && lua.contains("l45_app_id.label"));
        assert!(
            lua.contains("register_heuristic(\"udp\"")
                && lua.contains("register_heuristic(\"tcp\"")
        );
        assert!(lua.contains("local MAX_BODY = 80"));

        let lua = one(&["dns-compression", "recursion-desired=false"]);
        assert!(lua.contains("local MARKER = 0xA5"));
        assert!(lua.contains("local RECURSION_DESIRED = false"));
        assert!(lua.contains("l45_dns_compression.qname"));

        let lua = one(&["rate-limit", "delay=250"]);
        assert!(lua.contains("local DELAY_MS = 250"));
        assert!(!lua.contains("register_heuristic"));
        assert!(!lua.contains("proto.dissector"));
    }

    #[test]
    fn tags_are_escaped_into_exact_lua_literals() {
        assert_eq!(lua_str(b"a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(lua_str(b"\n\x7f\x001"), r#""\010\127\0001""#);
        assert_eq!(lua_str("é".as_bytes()), r#""\195\169""#);
        let lua = one(&["dns-end-tag", "tag=x\"]]--"]);
        assert!(lua.contains(r#"local TAG = "x\"]]--""#), "{lua}");
    }

    #[test]
    fn bad_parameters_are_refused_like_the_taps_refuse_them() {
        let err = |list: &[&str]| match parse_args(list) {
            Err(CliError::Invalid(msg)) => msg,
            Err(CliError::Usage(e)) => e.to_string(),
            other => panic!("{list:?} accepted: {other:?}"),
        };
        let usage = |list: &[&str]| match parse_args(list) {
            Err(CliError::Usage(e)) => e.kind(),
            other => panic!("{list:?} is not a usage error: {other:?}"),
        };
        assert!(err(&["dns-front-tag", "tag="]).contains("bad value for parameter tag"));
        assert!(err(&["stream-tag", "interval=15"]).contains("bad value for parameter interval"));
        assert!(err(&["stream-tag", "interval=x"]).contains("bad value for parameter interval"));
        assert!(err(&["rate-limit", "tag=x"]).contains("parameter not known to this kind"));
        assert!(err(&["dns-clearance-filter"]).contains("parameter code is required"));
        assert!(
            err(&["dns-clearance-filter", "code=short"]).contains("bad value for parameter code")
        );
        assert!(err(&["dns-tag"]).contains("unknown module kind 'dns-tag'"));
        assert!(err(&["dns-front-tag", "XTAG"]).contains("not a parameter"));
        assert!(err(&["dns-front-tag", "--port", "0"]).contains("bad port"));
        assert!(err(&["dns-front-tag", "--port", "70000"]).contains("bad port"));
        assert!(err(&["rate-limit", "--port", "53"]).contains("no bytes on the wire"));
        assert_eq!(usage(&["dns-front-tag", "--port"]), ErrorKind::InvalidValue);
        assert_eq!(
            usage(&["dns-front-tag", "--verbose"]),
            ErrorKind::UnknownArgument
        );
        assert_eq!(usage(&[]), ErrorKind::MissingRequiredArgument);
        assert_eq!(usage(&["--all"]), ErrorKind::InvalidValue);
        assert_eq!(
            usage(&["--all", "a", "stream-tag"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(usage(&["--help"]), ErrorKind::DisplayHelp);
        // Kind names are exact, and ports are deduplicated.
        assert_eq!(usage(&["DNS-FRONT-TAG"]), ErrorKind::InvalidValue);
        match parse_args(["app-id-tag", "--port", "9", "--port=9", "--port", "7"]) {
            Ok(Command::One { ports, .. }) => assert_eq!(ports, vec![7, 9]),
            other => panic!("{other:?}"),
        }
        match parse_args(["--all", "some/dir"]) {
            Ok(Command::All { dir }) => assert_eq!(dir, Path::new("some/dir")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn all_writes_one_file_per_kind() {
        let dir = std::env::temp_dir().join(format!("l45-dissector-test-{}", std::process::id()));
        let written = write_all(&dir).expect("write");
        assert_eq!(written.len(), Kind::ALL.len());
        for kind in Kind::ALL {
            let text =
                std::fs::read_to_string(dir.join(format!("{}.lua", kind.name()))).expect("read");
            assert!(text.contains(proto_name(kind)));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
