"""Inverse modules: the Wireshark Lua dissectors l45-dissector generates
decode REAL customized traffic. An l45-agent with the user-space tap
customizes real programs under LD_PRELOAD (dig, python http.server); tcpdump
captures it on loopback; tshark decodes the capture with the generated
dissector of that module instance, and the decoded fields are checked.

Run: .venv/bin/python -m pytest tests/dissectors
Needs tshark, tcpdump, dnsmasq, dig (tools/install-deps.sh) and root (or
capture rights) for tcpdump. Builds the release binaries it needs unless
L45_AGENT, L45_PRELOAD and L45_DISSECTOR name them. Every process started
here is stopped by a fixture, also when a test fails."""
import math
import os
import pathlib
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "tap"))
from taplab import free_port, free_udp_tcp_port, udp_tcp_payloads, wait_for  # noqa: E402
RELEASE = ROOT / "target" / "release"
AGENT = os.environ.get("L45_AGENT", str(RELEASE / "l45-agent"))
PRELOAD = os.environ.get("L45_PRELOAD", str(RELEASE / "libl45tap.so"))
DISSECTOR = os.environ.get("L45_DISSECTOR", str(RELEASE / "l45-dissector"))
NS = "urn:layer45:params:xml:ns:yang:layer45-customization"
BASE = "urn:ietf:params:xml:ns:netconf:base:1.0"
NAME = "example.test"
ANSWER = "10.1.2.3"


@pytest.fixture(scope="session", autouse=True)
def built():
    """Builds the binaries under test unless all three were given."""
    if not all(k in os.environ for k in ("L45_AGENT", "L45_PRELOAD", "L45_DISSECTOR")):
        for args in (["-p", "l45-agent", "-p", "l45-tap-preload"],
                     ["-p", "l45-modules", "--bin", "l45-dissector"]):
            subprocess.run(["cargo", "build", "--release", "--quiet", *args], cwd=ROOT, check=True)
    for path in (AGENT, PRELOAD, DISSECTOR):
        assert pathlib.Path(path).exists(), f"missing {path}"


def stop_process(proc, sig=signal.SIGTERM, timeout=10):
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class TapAgent:
    """An l45-agent driving the user-space tap through its control file."""

    def __init__(self, workdir):
        self.dir = pathlib.Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shm = self.dir / "tap.shm"
        (self.dir / "pw").write_text("secret\n")
        self.port = free_port()
        self.log = open(self.dir / "agent.log", "ab")
        self.nc = None
        self.proc = subprocess.Popen(
            [AGENT, "--listen", f"127.0.0.1:{self.port}", "--state-dir", str(self.dir / "state"),
             "--user", "admin", "--password-file", str(self.dir / "pw"),
             "--tap", "userspace", "--tap-shm", str(self.shm)],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        try:
            # The agent prints one line once it listens: an event, not a sleep.
            line = self.proc.stdout.readline()
            assert "listening on" in line and "tap userspace" in line, f"agent did not start: {line!r}"
            from ncclient import manager
            self.nc = manager.connect(host="127.0.0.1", port=self.port, username="admin", password="secret",
                                      hostkey_verify=False, allow_agent=False, look_for_keys=False,
                                      timeout=60)
        except BaseException:
            self.stop()
            raise

    def env(self):
        return {**os.environ, "LD_PRELOAD": PRELOAD, "L45_TAP_SHM": str(self.shm)}

    def deploy(self, mid, kind, match, params=""):
        """One module on running (edit-config), customizing at once."""
        self.nc.edit_config(target="running", config=(
            f'<config xmlns="{BASE}"><customizations xmlns="{NS}" xmlns:l45="{NS}"><module>'
            f"<id>{mid}</id><name>m{mid}</name><kind>l45:{kind}</kind><priority>10</priority>"
            f"<match>{match}</match><parameters>{params}</parameters></module>"
            f"</customizations></config>"))

    def stop(self):
        if self.nc is not None:
            try:
                self.nc.close_session()
            except Exception:
                pass
        stop_process(self.proc)
        self.log.close()


def udp_port_bound(port):
    suffix = f":{port:04X}"
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        if any(len(f) > 1 and f[1].endswith(suffix) for f in (line.split() for line in lines)):
            return True
    return False


class Dnsmasq:
    """A plain (untapped) dnsmasq answering example.test."""

    def __init__(self, workdir):
        self.dir = pathlib.Path(workdir)
        self.port = free_udp_tcp_port()
        conf = self.dir / "dnsmasq.conf"
        conf.write_text(
            f"port={self.port}\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\n"
            f"cache-size=0\naddress=/{NAME}/{ANSWER}\n")
        self.log = open(self.dir / "dnsmasq.log", "ab")
        self.proc = subprocess.Popen(
            ["dnsmasq", "--keep-in-foreground", f"--conf-file={conf}",
             f"--pid-file={self.dir / 'dnsmasq.pid'}", "--log-facility=-"],
            stdout=self.log, stderr=self.log)
        try:
            # dnsmasq prints nothing on readiness: poll until its port is bound.
            wait_for(lambda: self.proc.poll() is not None or udp_port_bound(self.port),
                     what="dnsmasq to bind")
            assert self.proc.poll() is None, "dnsmasq exited"
        except BaseException:
            self.stop()
            raise

    def stop(self):
        stop_process(self.proc)
        self.log.close()


class HttpServer:
    """python3 -m http.server serving `root`, optionally under the tap."""

    def __init__(self, root, env=None, port=None):
        self.port = port or free_port()
        self.proc = subprocess.Popen(
            ["python3", "-u", "-m", "http.server", str(self.port), "--bind", "127.0.0.1"],
            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            # It prints "Serving HTTP on 127.0.0.1 port N ..." once it listens.
            line = self.proc.stdout.readline()
            assert "Serving HTTP" in line, f"http.server did not start: {line!r}"
        except BaseException:
            self.stop()
            raise

    def stop(self):
        stop_process(self.proc)
        self.proc.stdout.close()


def http_get(port, path):
    """A plain HTTP/1.0 GET; returns every byte the server sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                return b"".join(chunks)
            chunks.append(b)


def dig(port, env=None, timeout=1):
    """Runs dig once (one try); returns its stdout."""
    p = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), NAME, "+tries=1", f"+time={timeout}"],
                       capture_output=True, text=True, env=env, timeout=30)
    return p.stdout


class Capture:
    """tcpdump on loopback, started before the traffic and stopped after."""

    def __init__(self, path, bpf):
        self.path = pathlib.Path(path)
        self.proc = subprocess.Popen(["tcpdump", "-i", "lo", "-U", "-n", "-w", str(path), bpf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            # "listening on lo, ..." once the capture runs: wait for it.
            while True:
                line = self.proc.stderr.readline()
                if not line or "listening on" in line:
                    break
            assert "listening on" in line, f"tcpdump did not start: {line!r}"
        except BaseException:
            stop_process(self.proc, signal.SIGINT)
            raise

    def packets(self):
        return read_pcap(self.path)

    def stop(self, until=None):
        """Stops tcpdump, once `until(packets)` holds if given (tcpdump -U
        writes each packet as it reads it, so the file is polled)."""
        try:
            if until is not None:
                wait_for(lambda: until(self.packets()), what="the capture to hold the traffic")
        finally:
            stop_process(self.proc, signal.SIGINT)
        return self.packets()


def read_pcap(path):
    """(proto, sport, dport, payload) of every IPv4 UDP/TCP packet."""
    if not pathlib.Path(path).exists():
        return []
    return udp_tcp_payloads(path)


def generate(out_path, kind, *args):
    """Runs l45-dissector; returns the path of the generated Lua."""
    p = subprocess.run([DISSECTOR, kind, *args], capture_output=True, text=True)
    assert p.returncode == 0, f"l45-dissector {kind} {args}: {p.stderr}"
    pathlib.Path(out_path).write_text(p.stdout)
    return pathlib.Path(out_path)


def tshark_fields(pcap, scripts, display_filter, fields, options=()):
    """Rows (lists of field values) of the packets matching the filter,
    decoded with the given Lua scripts; fails on any Lua error."""
    args = ["tshark", "-n", "-r", str(pcap)]
    for s in scripts:
        args += ["-X", f"lua_script:{s}"]
    for o in options:
        args += ["-o", o]
    args += ["-Y", display_filter, "-T", "fields", "-E", "separator=|", "-E", "occurrence=a"]
    for f in fields:
        args += ["-e", f]
    p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"tshark failed ({p.returncode}): {p.stderr}"
    assert "Lua" not in p.stderr and "lua" not in p.stderr, f"Lua error in tshark: {p.stderr}"
    return [line.split("|") for line in p.stdout.splitlines() if line.strip()]


@pytest.fixture
def procs():
    """Things a test starts (objects with stop()); stopped at the end, in
    reverse order, also on failure."""
    started = []
    yield started
    for p in reversed(started):
        try:
            p.stop()
        except Exception:
            pass


@pytest.fixture
def tap(tmp_path, procs):
    a = TapAgent(tmp_path / "agent")
    procs.append(a)
    return a


# ===== the tests =====

HEURISTIC_FIRST = ("udp.try_heuristic_first:TRUE", "tcp.try_heuristic_first:TRUE")
ALL_PROTOS = ("l45_dns_front_tag", "l45_dns_middle_tag", "l45_dns_end_tag", "l45_dns_compression",
              "l45_dns_clearance", "l45_stream_tag", "l45_rate_limit", "l45_app_id")


def truthy(value):
    return value in ("1", "True", "TRUE", "true")


def client_match(port):
    return (f"<protocol>udp</protocol><destination-port>{port}</destination-port>"
            f"<process-name>dig</process-name>")


class DnsCase:
    def __init__(self, tag, args, xml, on_wire, fields, expect, other_args=None):
        self.tag, self.args, self.xml, self.on_wire = tag, args, xml, on_wire
        self.fields, self.expect, self.other_args = fields, expect, other_args


CODE = "L45 clearance code for tests 32b"
DNS_CASES = {
    "dns-front-tag": DnsCase(
        "Front-L45-t1", ["tag=Front-L45-t1"], "<dns-tag><tag>Front-L45-t1</tag></dns-tag>",
        lambda p: p.startswith(b"Front-L45-t1"),
        ["l45_dns_front_tag.tag", "l45_dns_front_tag.offset"], ["Front-L45-t1", "0"], ["tag=Front-L45-t2"]),
    "dns-middle-tag": DnsCase(
        "Mid:L45", ["tag=Mid:L45"], "<dns-tag><tag>Mid:L45</tag></dns-tag>",
        lambda p: p[12:19] == b"Mid:L45",
        ["l45_dns_middle_tag.tag", "l45_dns_middle_tag.offset"], ["Mid:L45", "12"], ["tag=Mid:L46"]),
    "dns-end-tag": DnsCase(
        "End.L45.tag", ["tag=End.L45.tag"], "<dns-tag><tag>End.L45.tag</tag></dns-tag>",
        lambda p: p.endswith(b"End.L45.tag"),
        ["l45_dns_end_tag.tag"], ["End.L45.tag"], ["tag=XTAGXdig"]),
    "dns-clearance-filter": DnsCase(
        CODE, [f"code={CODE}"], f"<clearance><code>{CODE}</code></clearance>",
        lambda p: p.startswith(CODE.encode()),
        ["l45_dns_clearance.tag"], [CODE], ["code=" + "Z" * 32]),
    # The instance's RD (false) is what the rebuilt header carries, although
    # dig asked for recursion.
    "dns-compression": DnsCase(
        None, ["recursion-desired=false"],
        "<dns-compression><recursion-desired>false</recursion-desired></dns-compression>",
        lambda p: p[2] == 0xA5 and p[3:] == b"\x07example\x04test\x00\x00\x01\x00\x01",
        ["l45_dns_compression.qname", "l45_dns_compression.marker", "l45_dns_compression.rd",
         "dns.flags.recdesired"],
        [NAME, "0xa5", "0", "0"]),
}
PROTO = {"dns-front-tag": "l45_dns_front_tag", "dns-middle-tag": "l45_dns_middle_tag",
         "dns-end-tag": "l45_dns_end_tag", "dns-clearance-filter": "l45_dns_clearance",
         "dns-compression": "l45_dns_compression"}


def normalise(values):
    """tshark prints booleans as 1/0 or True/False depending on version."""
    return ["1" if v in ("True", "true") else "0" if v in ("False", "false") else v.lower()
            if v.startswith("0x") else v for v in values]


@pytest.mark.parametrize("kind", list(DNS_CASES))
def test_dns_kinds_decode_from_a_real_capture(tap, procs, tmp_path, kind):
    case = DNS_CASES[kind]
    dns = Dnsmasq(tmp_path)
    procs.append(dns)
    tap.deploy(1, kind, client_match(dns.port), case.xml)
    cap = Capture(tmp_path / "q.pcap", f"udp port {dns.port}")
    procs.append(cap)
    dig(dns.port, env=tap.env())
    packets = cap.stop(until=lambda ps: any(p[2] == dns.port for p in ps))
    queries = [payload for (proto, _, dport, payload) in packets if proto == "udp" and dport == dns.port]
    # The capture holds customized traffic: otherwise the test proves nothing.
    assert queries and all(case.on_wire(q) for q in queries), f"{kind}: not customized: {queries!r}"

    proto = PROTO[kind]
    n = len(case.fields)
    for mode, extra, options in (("heuristic", [], HEURISTIC_FIRST),
                                 ("port", ["--port", str(dns.port)], ())):
        lua = generate(tmp_path / f"{kind}-{mode}.lua", kind, *case.args, *extra)
        rows = tshark_fields(cap.path, [lua], proto, [*case.fields, "dns.qry.name", "udp.dstport"], options)
        assert len(rows) == len(queries), f"{kind} ({mode}): decoded {rows}, sent {len(queries)} queries"
        for row in rows:
            assert normalise(row[:n]) == case.expect, f"{kind} ({mode}): {row}"
            # The de-customized message went to the DNS dissector.
            assert row[n] == NAME, f"{kind} ({mode}): DNS query not decoded: {row}"
            assert row[n + 1] == str(dns.port), f"{kind} ({mode}): claimed a reply: {row}"

    # The dissector of another instance (another tag or code) claims nothing.
    if case.other_args:
        other = generate(tmp_path / f"{kind}-other.lua", kind, *case.other_args)
        assert tshark_fields(cap.path, [other], proto, ["frame.number"], HEURISTIC_FIRST) == []


def test_app_id_tag_on_udp_names_the_application(tap, procs, tmp_path):
    dns = Dnsmasq(tmp_path)
    procs.append(dns)
    tap.deploy(1, "app-id-tag", client_match(dns.port), "<app-id-tag><label>blue-team</label></app-id-tag>")
    cap = Capture(tmp_path / "a.pcap", f"udp port {dns.port}")
    procs.append(cap)
    dig(dns.port, env=tap.env())
    packets = cap.stop(until=lambda ps: any(p[2] == dns.port for p in ps))
    queries = [payload for (proto, _, dport, payload) in packets if proto == "udp" and dport == dns.port]
    assert queries and all(q.startswith(b"XTAG\x0ddig:blue-team") for q in queries), queries

    fields = ["l45_app_id.name", "l45_app_id.label", "l45_app_id.instance_label", "l45_app_id.len",
              "dns.qry.name"]
    lua = generate(tmp_path / "app-id.lua", "app-id-tag", "label=blue-team")
    rows = tshark_fields(cap.path, [lua], "l45_app_id", fields, HEURISTIC_FIRST)
    assert len(rows) == len(queries), rows
    for row in rows:
        assert normalise(row) == ["dig", "blue-team", "1", "13", NAME], row
    # Bound to the port instead of by heuristic: the same decode.
    lua = generate(tmp_path / "app-id-port.lua", "app-id-tag", "label=blue-team", "--port", str(dns.port))
    assert tshark_fields(cap.path, [lua], "l45_app_id", fields) == rows
    # Another instance's dissector still decodes the prefix (the server strips
    # any), but says the label is not its own.
    other = generate(tmp_path / "app-id-other.lua", "app-id-tag", "label=red-team")
    rows = tshark_fields(cap.path, [other], "l45_app_id", fields[:3], HEURISTIC_FIRST)
    assert rows and all(normalise(r) == ["dig", "blue-team", "0"] for r in rows), rows


@pytest.mark.parametrize("mode", ["any-port", "port"])
def test_stream_tag_on_tcp_counts_every_tag(tap, procs, tmp_path, mode):
    """The stream tag's dissector is a post-dissector (the HTTP dissector
    takes the conversation first); with --port it only looks at that port."""
    tag, interval = b"L45-STREAM-TAG", 64
    period = interval + len(tag)
    root = tmp_path / "www"
    root.mkdir()
    (root / "blob.bin").write_bytes(bytes(i % 251 for i in range(5000)))
    port = free_port()
    tap.deploy(1, "stream-tag", f"<protocol>tcp</protocol><source-port>{port}</source-port>",
               f"<stream-tag><interval>{interval}</interval><tag>{tag.decode()}</tag></stream-tag>")
    server = HttpServer(root, env=tap.env(), port=port)
    procs.append(server)
    cap = Capture(tmp_path / "s.pcap", f"tcp port {port}")
    procs.append(cap)
    got = http_get(port, "/blob.bin")
    packets = cap.stop(until=lambda ps: sum(len(p[3]) for p in ps if p[1] == port) >= len(got))
    # The server end inserted the tags: at the start and after every
    # `interval` payload bytes (the client here is plain and sees them).
    tags = math.ceil(len(got) / period)
    assert tags > 10 and all(got[k * period:k * period + len(tag)] == tag for k in range(tags)), got[:200]

    args = ["stream-tag", f"interval={interval}", f"tag={tag.decode()}"]
    extra = ["--port", str(port)] if mode == "port" else []
    lua = generate(tmp_path / "stream.lua", *args, *extra)
    rows = tshark_fields(cap.path, [lua], "l45_stream_tag",
                         ["tcp.srcport", "l45_stream_tag.count", "l45_stream_tag.payload_len",
                          "l45_stream_tag.tag", "l45_stream_tag.interval"])
    assert rows, "no segment decoded"
    assert all(r[0] == str(port) for r in rows), f"claimed the client's direction: {rows}"
    assert sum(int(r[1]) for r in rows) == tags, rows
    assert sum(int(r[2]) for r in rows) == len(got) - tags * len(tag), rows
    whole = [t for r in rows for t in r[3].split(",") if t]
    assert whole and all(t == tag.decode() for t in whole), whole
    assert all(r[4] == str(interval) for r in rows)
    # Segments with data from the server all decoded (none left undecoded).
    data_segments = [p for p in packets if p[1] == port and p[3]]
    assert len(rows) == len(data_segments), (len(rows), len(data_segments))

    # Another tag, another interval or another port: not recognised (with
    # another interval only the segments before the first misplaced tag).
    for other in (["stream-tag", f"interval={interval}", "tag=OTHER-TAG"],
                  ["stream-tag", f"interval={interval + 1}", f"tag={tag.decode()}"],
                  [*args, "--port", str(port + 1 if port < 65535 else port - 1)]):
        lua = generate(tmp_path / "stream-other.lua", *other)
        rows = tshark_fields(cap.path, [lua], "l45_stream_tag", ["l45_stream_tag.count"])
        assert sum(int(r[0]) for r in rows) < tags, (other, rows)


def test_plain_traffic_is_never_claimed(procs, tmp_path):
    """No false positives: every generated dissector at once (defaults),
    heuristics first, over a plain capture of DNS and HTTP."""
    dns = Dnsmasq(tmp_path)
    procs.append(dns)
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text("hello " * 500)
    http = HttpServer(root)
    procs.append(http)
    cap = Capture(tmp_path / "plain.pcap", f"udp port {dns.port} or tcp port {http.port}")
    procs.append(cap)
    out = dig(dns.port, timeout=2)
    assert ANSWER in out, out
    body = http_get(http.port, "/index.html")
    assert body.startswith(b"HTTP/1.0 200"), body[:100]
    cap.stop(until=lambda ps: sum(1 for p in ps if p[0] == "udp") >= 2
             and sum(len(p[3]) for p in ps if p[1] == http.port) >= len(body))

    d = tmp_path / "all"
    p = subprocess.run([DISSECTOR, "--all", str(d)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    scripts = sorted(d.glob("*.lua"))
    assert [s.stem for s in scripts] == sorted(
        ["dns-front-tag", "dns-middle-tag", "dns-end-tag", "dns-compression", "dns-clearance-filter",
         "stream-tag", "rate-limit", "app-id-tag"])
    # The filter names every l45 protocol, so tshark would refuse it if one
    # (e.g. the timing-only rate limit) were not registered.
    claimed = tshark_fields(cap.path, scripts, " or ".join(ALL_PROTOS), ["frame.number"], HEURISTIC_FIRST)
    assert claimed == [], claimed
    # The capture is not empty: DNS and HTTP are decoded as usual.
    assert len(tshark_fields(cap.path, scripts, "dns.qry.name == \"example.test\"", ["frame.number"])) == 2
    assert tshark_fields(cap.path, scripts, "tcp.srcport == %d and tcp.len > 0" % http.port, ["frame.number"])


def test_cli_refuses_bad_parameters_with_exit_code_2():
    for args, message in ((["stream-tag", "interval=15"], "bad value for parameter interval"),
                          (["dns-clearance-filter"], "parameter code is required"),
                          (["dns-front-tag", "label=x"], "parameter not known to this kind"),
                          (["nope"], "unknown module kind"),
                          (["dns-front-tag", "--port", "x"], "bad port")):
        p = subprocess.run([DISSECTOR, *args], capture_output=True, text=True)
        assert p.returncode == 2 and message in p.stderr and p.stdout == "", (args, p)
