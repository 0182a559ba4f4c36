//! Generation of the Lua dissectors: one template per kind, filled with
//! the instance's constants.

use std::fmt::Write as _;

use l45_modules::wire::{
    APP_ID_MAGIC, APP_ID_MAX_PREFIX, CLEARANCE_LEN, COMPRESSED_MARKER, DNS_HEADER_LEN,
};
use l45_modules::{Kind, Params, TagPosition};

/// Wireshark protocol name (filter prefix) of a kind's dissector.
pub(crate) fn proto_name(kind: Kind) -> &'static str {
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
pub(crate) fn lua_str(bytes: &[u8]) -> String {
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
pub(crate) fn generate(kind: Kind, params: &Params, ports: &[u16]) -> String {
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
