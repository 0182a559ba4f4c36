#!/usr/bin/env python3
"""The user-space tap under the programs people run: each row runs a real
server and client under the tap with a byte-changing customization on both
ends and checks two things — the bytes arrive exact end to end, and the
customization is on the wire (a capture on loopback: stream tags about
every 1000 bytes, DNS queries carrying their tag). A program the tap cannot
enter (a static binary) must instead be reported by the agent as a bypass.

    tools/compat_matrix.py [--only NAME...] [--size MB] [--write]

--write replaces the table in docs/user-space-tap.md (between the
"compat-matrix" markers). Installs the programs it needs (Debian packages)
on first use; a row whose program cannot be installed says so. Needs the
release agent and preload library (cargo build --release -p l45-agent -p
l45-tap-preload) and root (tcpdump)."""
import argparse
import hashlib
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "tap"))
from taplab import Capture, TapAgent, free_port, free_udp_tcp_port, module, stop_process, wait_for  # noqa: E402

TAG = b"XTAGTAGTAGTAGTAGTAGTAGTAGTAGTAGX"
DNS_TAG = "XTAGXdig"
INTERVAL = 1000
PACKAGES = {
    "nginx": "nginx", "node": "nodejs", "unbound": "unbound", "named": "bind9",
    "haproxy": "haproxy", "redis-server": "redis-server", "go": "golang-go",
    "javac": "default-jdk-headless", "dig": "bind9-dnsutils",
}
DOC = ROOT / "docs" / "user-space-tap.md"
BEGIN, END = "<!-- compat-matrix:begin -->", "<!-- compat-matrix:end -->"


def have(cmd):
    if shutil.which(cmd) or os.path.exists(f"/usr/sbin/{cmd}"):
        return True
    pkg = PACKAGES.get(cmd)
    if not pkg:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not getattr(have, "updated", False):
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        have.updated = True
    r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", pkg],
                       env=env, capture_output=True, text=True)
    # Packaged daemons start themselves; the matrix runs its own.
    for svc in ("nginx", "unbound", "named", "haproxy", "redis-server"):
        subprocess.run(["systemctl", "stop", svc], capture_output=True)
        subprocess.run(["service", svc, "stop"], capture_output=True)
    return r.returncode == 0 and (shutil.which(cmd) or os.path.exists(f"/usr/sbin/{cmd}"))


def version(cmd, args=("--version",), pattern=r"(\d+\.\d+(\.\d+)?)"):
    try:
        r = subprocess.run([cmd, *args], capture_output=True, text=True, timeout=30)
        m = re.search(pattern, r.stdout + r.stderr)
        return m.group(1) if m else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def make_file(path, size):
    """A file of `size` bytes no two MiB of which are equal; its digest."""
    chunk = os.urandom(1 << 20)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left, i = size, 0
        while left > 0:
            block = (i.to_bytes(8, "big") + chunk[8:])[:min(left, len(chunk))]
            f.write(block)
            h.update(block)
            left -= len(block)
            i += 1
    return h.hexdigest()


def wait_port(port, proc=None, timeout=30):
    def up():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False
    wait_for(up, timeout, f"port {port}")


def tags_by_direction(payloads, port):
    """Stream tags seen from the server (source port `port`) and to it."""
    down, up = bytearray(), bytearray()
    for proto, sport, dport, data in payloads:
        if proto != "tcp":
            continue
        if sport == port:
            down += data
        elif dport == port:
            up += data
    return bytes(down).count(TAG), bytes(up).count(TAG), len(down), len(up)


class Row:
    def __init__(self, program, ver, checked):
        self.program, self.version, self.checked = program, ver, checked
        self.result, self.detail = "fail", ""

    def line(self):
        detail = " ".join(self.detail.replace("|", "/").split())
        return f"| {self.program} | {self.version} | {self.checked} | {self.result} | {detail} |"


class Lab:
    """One agent with the user-space tap; every process started is stopped."""

    def __init__(self, work):
        self.work = pathlib.Path(work)
        self.agent = TapAgent(self.work / "agent")
        self.procs = []
        self.next_id = 1

    def env(self):
        return self.agent.env()

    def start(self, args, tapped=True, **kw):
        p = subprocess.Popen(args, env=self.env() if tapped else os.environ.copy(),
                             stdout=kw.pop("stdout", subprocess.DEVNULL),
                             stderr=kw.pop("stderr", subprocess.DEVNULL), **kw)
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in self.procs:
            stop_process(p)
        self.procs.clear()

    def stream_modules(self, port):
        """Stream tag on both ends of TCP port `port`; replaces all modules."""
        a, b = self.next_id, self.next_id + 1
        self.next_id += 2
        params = f"<stream-tag><interval>{INTERVAL}</interval><tag>{TAG.decode()}</tag></stream-tag>"
        self.agent.edit(
            module(a, "stream-tag", 10, f"<protocol>tcp</protocol><source-port>{port}</source-port>", params),
            module(b, "stream-tag", 10, f"<protocol>tcp</protocol><destination-port>{port}</destination-port>", params),
            op="replace")
        return a, b

    def dns_modules(self, port):
        a, b = self.next_id, self.next_id + 1
        self.next_id += 2
        params = f"<dns-tag><tag>{DNS_TAG}</tag></dns-tag>"
        self.agent.edit(
            module(a, "dns-front-tag", 10, f"<protocol>udp</protocol><source-port>{port}</source-port>", params),
            module(b, "dns-front-tag", 10, f"<protocol>udp</protocol><destination-port>{port}</destination-port>", params),
            op="replace")
        return a, b

    def close(self):
        self.stop_all()
        self.agent.stop()


def tagged_enough(tags, length):
    """Whether a captured direction of `length` bytes carries a stream tag
    every INTERVAL bytes (a tag split by a capture gap may be missed)."""
    return tags >= length // (INTERVAL + len(TAG)) * 0.98 - 1


def check_stream(row, lab, port, transfer, expected_down):
    """Runs `transfer` (returns (exact, note)) under a capture of `port` and
    fills in the row from exactness and the tags on the wire: their density
    in what the server sent (the stream tag's direction: the server inserts,
    the client removes) as far as it was captured (a capture on a busy
    loopback misses packets, so not their total)."""
    cap = Capture(lab.work / f"cap-{port}.pcap", f"tcp port {port}", buffer_kib=131072)
    try:
        exact, note = transfer()
    finally:
        payloads = cap.stop()
    down, _, down_len, _ = tags_by_direction(payloads, port)
    tagged = down_len > 0 and down > 0 and tagged_enough(down, down_len)
    row.result = "pass" if exact and tagged else "FAIL"
    row.detail = (f"{'exact' if exact else 'NOT exact'}; on the wire: {down} tags in {down_len} B from the server"
                  f" ({down_len * 100 // max(expected_down * (INTERVAL + len(TAG)) // INTERVAL, 1)} % of it captured)"
                  f"{'; ' + note if note else ''}")


def curl(lab, urls, outs, extra=()):
    args = ["curl", "-sS", "-k", "--max-time", "300", *extra]
    for u, o in zip(urls, outs):
        args += ["-o", str(o), u]
    r = subprocess.run(args, env=lab.env(), capture_output=True, text=True, timeout=400)
    return r.returncode == 0, (f"curl exit {r.returncode}: {r.stderr.strip()[:120]}" if r.returncode else "")


NGINX_CONF = """daemon off; master_process on; worker_processes 2; user root;
pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
  access_log off; sendfile {sendfile}; tcp_nopush on; keepalive_timeout 30;
  client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;
  uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;
  types {{ }} default_type application/octet-stream;
  server {{ listen 127.0.0.1:{port}{h2}; root {www}; }}
}}
"""


def self_signed(d):
    cert, key = d / "cert.pem", d / "key.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"],
                       check=True, capture_output=True)
    return cert, key


def nginx(lab, www, sendfile=True, http2=False):
    """nginx on a free port; with `http2`, HTTP/2 over TLS (ALPN h2)."""
    d = pathlib.Path(tempfile.mkdtemp(dir=lab.work, prefix="nginx-"))
    port = free_port()
    conf = d / "nginx.conf"
    h2 = ""
    if http2:
        # nginx 1.22: `http2` is a parameter of `listen`. Not h2c: curl
        # 7.88.1 with prior knowledge gets framing errors from nginx 1.22
        # on the second stream of a connection, with or without the tap.
        cert, key = self_signed(lab.work)
        h2 = f" ssl http2; ssl_certificate {cert}; ssl_certificate_key {key}"
    conf.write_text(NGINX_CONF.format(d=d, port=port, sendfile="on" if sendfile else "off", www=www, h2=h2))
    p = lab.start(["nginx", "-c", str(conf), "-p", str(d)])
    wait_port(port, p)
    return port


def row_nginx(lab, www, files, sendfile):
    row = Row("nginx", version("nginx", ("-v",)), f"sendfile {'on' if sendfile else 'off'}, HTTP/1.1 keep-alive: "
              "curl fetches two files on one connection")
    port = nginx(lab, www, sendfile)
    lab.stream_modules(port)
    names = ["a", "b"]
    outs = [lab.work / f"nginx-{n}" for n in names]

    def transfer():
        ok, note = curl(lab, [f"http://127.0.0.1:{port}/{n}" for n in names], outs)
        return ok and all(sha256_file(o) == files[n] for o, n in zip(outs, names)), note
    check_stream(row, lab, port, transfer, sum((www / n).stat().st_size for n in names))
    return row


def row_curl_h2(lab, www, files):
    row = Row("curl", version("curl"), "HTTP/2 over TLS (nginx, sendfile on), 4 parallel transfers on one "
              "connection")
    port = nginx(lab, www, True, http2=True)
    lab.stream_modules(port)
    names = ["c1", "c2", "c3", "c4"]
    outs = [lab.work / f"h2-{n}" for n in names]

    def transfer():
        ok, note = curl(lab, [f"https://127.0.0.1:{port}/{n}" for n in names], outs,
                        ("--http2", "--parallel", "--parallel-max", "4", "--no-progress-meter"))
        return ok and all(sha256_file(o) == files[n] for o, n in zip(outs, names)), note
    check_stream(row, lab, port, transfer, sum((www / n).stat().st_size for n in names))
    return row


# (node -e: process.argv is [node, arg1, arg2].)
NODE_HTTP = """
const http = require('http'), fs = require('fs');
const buf = fs.readFileSync(process.argv[2]);
http.createServer((q, s) => s.end(buf)).listen(+process.argv[1], '127.0.0.1', () => console.log('ready'));
"""
NODE_NET_SERVER = """
const net = require('net'), fs = require('fs');
net.createServer(c => fs.createReadStream(process.argv[2]).pipe(c))
   .listen(+process.argv[1], '127.0.0.1', () => console.log('ready'));
"""
NODE_NET_CLIENT = """
const net = require('net'), fs = require('fs');
const out = fs.createWriteStream(process.argv[2]);
const c = net.connect(+process.argv[1], '127.0.0.1');
c.pipe(out); out.on('finish', () => process.exit(0)); c.on('error', e => { console.error(e); process.exit(1); });
"""


def start_ready(lab, args):
    p = lab.start(args, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if "ready" not in line:
        raise AssertionError(f"{args[0]} did not start: {line!r}")
    return p


def row_node_http(lab, www, files):
    row = Row("Node.js", version("node"), "http: `res.end(buf)` of the whole file (libuv writev, partial writes); curl")
    port = free_port()
    start_ready(lab, ["node", "-e", NODE_HTTP, str(port), str(www / "big")])
    lab.stream_modules(port)
    out = lab.work / "node-http"

    def transfer():
        ok, note = curl(lab, [f"http://127.0.0.1:{port}/"], [out])
        return ok and sha256_file(out) == files["big"], note
    check_stream(row, lab, port, transfer, (www / "big").stat().st_size)
    return row


def row_node_net(lab, www, files):
    row = Row("Node.js", version("node"), "net: a file stream piped to the socket; a node client pipes it to a file")
    port = free_port()
    start_ready(lab, ["node", "-e", NODE_NET_SERVER, str(port), str(www / "big")])
    lab.stream_modules(port)
    out = lab.work / "node-net"

    def transfer():
        r = subprocess.run(["node", "-e", NODE_NET_CLIENT, str(port), str(out)], env=lab.env(),
                           capture_output=True, text=True, timeout=300)
        return r.returncode == 0 and sha256_file(out) == files["big"], r.stderr.strip()[:120]
    check_stream(row, lab, port, transfer, (www / "big").stat().st_size)
    return row


ASYNCIO_SERVER = """
import asyncio, sys
port, path, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
async def handle(reader, writer):
    loop = asyncio.get_running_loop()
    with open(path, 'rb') as f:
        if mode == 'sendfile':
            await loop.sendfile(writer.transport, f)
        else:
            while chunk := f.read(65536):
                writer.write(chunk)
                await writer.drain()
    writer.close()
    await writer.wait_closed()
async def main():
    srv = await asyncio.start_server(handle, '127.0.0.1', port)
    print('ready', flush=True)
    async with srv:
        await srv.serve_forever()
asyncio.run(main())
"""
ASYNCIO_CLIENT = """
import asyncio, sys
async def main():
    reader, writer = await asyncio.open_connection('127.0.0.1', int(sys.argv[1]))
    with open(sys.argv[2], 'wb') as out:
        while chunk := await reader.read(1 << 16):
            out.write(chunk)
    writer.close()
asyncio.run(main())
"""


def row_asyncio(lab, www, files, mode):
    what = "streams (`write` + `drain`)" if mode == "streams" else "`loop.sendfile` (os.sendfile underneath)"
    row = Row("Python asyncio", version(sys.executable), f"{what}; an asyncio client reads to EOF")
    port = free_port()
    start_ready(lab, [sys.executable, "-c", ASYNCIO_SERVER, str(port), str(www / "big"), mode])
    lab.stream_modules(port)
    out = lab.work / f"asyncio-{mode}"

    def transfer():
        r = subprocess.run([sys.executable, "-c", ASYNCIO_CLIENT, str(port), str(out)], env=lab.env(),
                           capture_output=True, text=True, timeout=300)
        return r.returncode == 0 and sha256_file(out) == files["big"], r.stderr.strip()[-120:]
    check_stream(row, lab, port, transfer, (www / "big").stat().st_size)
    return row


def row_haproxy(lab, www, files):
    row = Row("HAProxy", version("haproxy", ("-v",)), "TCP mode in front of a Python HTTP server; curl through it "
              "(the curl–haproxy leg customized)")
    backend = free_port()
    start_ready(lab, [sys.executable, "-c",
                      "import functools,http.server,sys\n"
                      "h=functools.partial(http.server.SimpleHTTPRequestHandler,directory=sys.argv[2])\n"
                      "s=http.server.ThreadingHTTPServer(('127.0.0.1',int(sys.argv[1])),h)\n"
                      "print('ready',flush=True);s.serve_forever()", str(backend), str(www)])
    port = free_port()
    cfg = lab.work / "haproxy.cfg"
    cfg.write_text(f"""global
  maxconn 256
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend f
  bind 127.0.0.1:{port}
  default_backend b
backend b
  server s 127.0.0.1:{backend}
""")
    p = lab.start(["haproxy", "-db", "-f", str(cfg)])
    wait_port(port, p)
    lab.stream_modules(port)
    out = lab.work / "haproxy-out"

    def transfer():
        ok, note = curl(lab, [f"http://127.0.0.1:{port}/big"], [out])
        return ok and sha256_file(out) == files["big"], note
    check_stream(row, lab, port, transfer, (www / "big").stat().st_size)
    return row


def row_openssl(lab, www, files):
    row = Row("OpenSSL", version("openssl", ("version",)), "s_server -WWW and s_client: TLS 1.3 over the "
              "customized stream (tags below TLS)")
    cert, key = self_signed(lab.work)
    port = free_port()
    p = lab.start(["openssl", "s_server", "-quiet", "-accept", str(port), "-WWW", "-cert", str(cert),
                   "-key", str(key)], cwd=str(www))
    wait_port(port, p)
    lab.stream_modules(port)

    def transfer():
        r = subprocess.run(["openssl", "s_client", "-quiet", "-connect", f"127.0.0.1:{port}"],
                           input=b"GET /big HTTP/1.0\r\n\r\n", env=lab.env(), capture_output=True, timeout=300)
        body = r.stdout.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in r.stdout else b""
        return hashlib.sha256(body).hexdigest() == files["big"], ""
    check_stream(row, lab, port, transfer, (www / "big").stat().st_size)
    return row


JAVA_CLIENT = """
import java.net.URI; import java.net.http.*; import java.nio.file.Path;
public class Fetch { public static void main(String[] a) throws Exception {
  HttpClient c = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
  HttpResponse<Path> r = c.send(HttpRequest.newBuilder(URI.create(a[0])).build(),
      HttpResponse.BodyHandlers.ofFile(Path.of(a[1])));
  System.exit(r.statusCode() == 200 ? 0 : 1); } }
"""


def row_java(lab, www, files):
    row = Row("Java", version("java", ("-version",)), "java.net.http.HttpClient (NIO) fetching from nginx")
    src = lab.work / "Fetch.java"
    src.write_text(JAVA_CLIENT)
    port = nginx(lab, www, True)
    lab.stream_modules(port)
    out = lab.work / "java-out"

    def transfer():
        r = subprocess.run(["java", str(src), f"http://127.0.0.1:{port}/big", str(out)], env=lab.env(),
                           capture_output=True, text=True, timeout=300)
        return r.returncode == 0 and sha256_file(out) == files["big"], r.stderr.strip()[-120:]
    check_stream(row, lab, port, transfer, (www / "big").stat().st_size)
    return row


# A raw client that keeps its connection a few seconds (the agent looks
# once a second): it reads whatever the customized server sends.
GO_CLIENT = """package main
import ("io"; "net"; "os"; "time")
func main() {
  c, err := net.Dial("tcp", os.Args[1]); if err != nil { os.Exit(2) }
  c.Write([]byte("GET /big HTTP/1.0\\r\\n\\r\\n"))
  time.Sleep(3 * time.Second)
  f, _ := os.Create(os.Args[2]); io.Copy(f, c); f.Close()
}
"""


def row_go_static(lab, www, files):
    row = Row("Go (static)", version("go", ("version",)), "a CGO_ENABLED=0 client (net.Dial, an HTTP request): cannot be tapped; "
              "the agent must report it")
    d = lab.work / "goclient"
    d.mkdir(exist_ok=True)
    (d / "main.go").write_text(GO_CLIENT)
    (d / "go.mod").write_text("module goclient\n\ngo 1.19\n")
    b = subprocess.run(["go", "build", "-o", str(d / "client"), "."], cwd=d, capture_output=True, text=True,
                       env={**os.environ, "CGO_ENABLED": "0", "GOCACHE": str(d / "cache"), "GOPATH": str(d / "gopath")},
                       timeout=600)
    if b.returncode != 0:
        row.detail = f"go build failed: {b.stderr[-120:]}"
        return row
    port = nginx(lab, www, True)
    client_id = lab.stream_modules(port)[1]
    sub = lab.agent.second_session()
    sub.create_subscription()
    r = subprocess.run([str(d / "client"), f"127.0.0.1:{port}", str(lab.work / "go-out")],
                       env=lab.env(), capture_output=True, text=True, timeout=60)
    try:
        wait_for(lambda: int(lab.agent.state()[0].get(client_id, {}).get("bypassed") or 0) >= 1, 10,
                 "the agent to count the bypass")
        bypassed = int(lab.agent.state()[0][client_id]["bypassed"])
        n = sub.take_notification(timeout=10)
        xml = n.notification_xml if n is not None else ""
        if "module-bypassed" not in xml or "not-tapped" not in xml:
            raise AssertionError(f"no module-bypassed notification: {xml[:200]}")
        row.result = "cannot tap (reported)"
        got = (lab.work / "go-out").read_bytes() if (lab.work / "go-out").exists() else b""
        row.detail = (f"module {client_id} `bypassed` = {bypassed} and a `module-bypassed` notification, reason not-tapped; "
                      f"the client received the server's tags raw ({got.count(TAG)} in {len(got)} B)")
    except AssertionError:
        row.result = "FAIL"
        row.detail = f"client exit {r.returncode}; no bypass reported"
    return row


def row_redis(lab, www, files):
    row = Row("Redis", version("redis-server"), "2000 SET + 2000 GET pipelined in one write each way "
              "(random values 1–4000 B); every reply checked")
    port = free_port()
    p = lab.start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
    wait_port(port, p)
    lab.stream_modules(port)
    client = r"""
import os, socket, sys
vals = [os.urandom(1 + (i * 7919) % 4000).hex().encode()[: 1 + (i * 7919) % 4000] for i in range(2000)]
def cmd(*a): return b"*%d\r\n" % len(a) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in a)
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"".join(cmd(b"SET", b"k%d" % i, v) for i, v in enumerate(vals)))
want = b"+OK\r\n" * len(vals)
got = b""
while len(got) < len(want):
    got += s.recv(1 << 16)
assert got == want, got[:80]
s.sendall(b"".join(cmd(b"GET", b"k%d" % i) for i in range(len(vals))))
want = b"".join(b"$%d\r\n%s\r\n" % (len(v), v) for v in vals)
got = b""
while len(got) < len(want):
    c = s.recv(1 << 16)
    assert c, "closed"
    got += c
assert got == want, "GET replies differ"
print(len(want))
"""

    def transfer():
        r = subprocess.run([sys.executable, "-c", client, str(port)], env=lab.env(), capture_output=True,
                           text=True, timeout=120)
        return r.returncode == 0, r.stderr.strip()[-120:]
    cap = Capture(lab.work / "redis.pcap", f"tcp port {port}")
    try:
        exact, note = transfer()
    finally:
        payloads = cap.stop()
    down, _, down_len, _ = tags_by_direction(payloads, port)
    tagged = down > 0 and tagged_enough(down, down_len)
    row.result = "pass" if exact and tagged else "FAIL"
    row.detail = (f"{'exact' if exact else 'NOT exact: ' + note}; on the wire: {down} tags in {down_len} B from "
                  f"the server")
    return row


UNBOUND_CONF = """server:
  interface: 127.0.0.1@{port}
  num-threads: 2
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{d}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  local-zone: "example.test." static
  local-data: "example.test. A 10.1.2.3"
"""
NAMED_CONF = """options {{
  directory "{d}"; listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};
  recursion no; pid-file none; session-keyfile none;
}};
zone "example.test" {{ type primary; file "{d}/zone"; }};
"""
ZONE = """$TTL 60
@ IN SOA ns root 1 60 60 60 60
@ IN NS ns
ns IN A 127.0.0.1
@ IN A 10.1.2.3
"""


def dns_server(lab, which, port):
    d = pathlib.Path(tempfile.mkdtemp(dir=lab.work, prefix=f"{which}-"))
    if which == "unbound":
        (d / "unbound.conf").write_text(UNBOUND_CONF.format(port=port, d=d))
        p = lab.start(["unbound", "-d", "-c", str(d / "unbound.conf")])
    else:
        (d / "zone").write_text(ZONE)
        (d / "named.conf").write_text(NAMED_CONF.format(port=port, d=d))
        p = lab.start(["named", "-g", "-4", "-n", "2", "-u", "root", "-c", str(d / "named.conf")])
    wait_port(port, p)
    return p


def row_dns(lab, which, name, ver):
    row = Row(name, ver, "2 threads: 20 UDP queries with a DNS front tag both ends, then 10 over TCP "
              "(dig +tcp) with a stream tag both ends")
    port = free_udp_tcp_port()
    dns_server(lab, which, port)
    lab.dns_modules(port)
    cap = Capture(lab.work / f"{which}.pcap", f"port {port}")
    answered = 0
    try:
        for _ in range(20):
            r = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "example.test", "+tries=1", "+time=2"],
                               env=lab.env(), capture_output=True, text=True, timeout=30)
            answered += "10.1.2.3" in r.stdout and "NOERROR" in r.stdout
    finally:
        payloads = cap.stop()
    queries = [p for p in payloads if p[0] == "udp" and p[2] == port]
    tagged = sum(p[3].startswith(DNS_TAG.encode()) for p in queries)
    lab.stream_modules(port)
    tcp_ok = 0
    cap = Capture(lab.work / f"{which}-tcp.pcap", f"tcp port {port}")
    try:
        for _ in range(10):
            r = subprocess.run(["dig", "+tcp", "@127.0.0.1", "-p", str(port), "example.test", "+tries=1", "+time=2"],
                               env=lab.env(), capture_output=True, text=True, timeout=30)
            tcp_ok += "10.1.2.3" in r.stdout and "NOERROR" in r.stdout
    finally:
        payloads = cap.stop()
    down, _, _, _ = tags_by_direction(payloads, port)
    ok = answered == 20 and tagged == len(queries) > 0 and tcp_ok == 10 and down > 0
    row.result = "pass" if ok else "FAIL"
    row.detail = (f"UDP {answered}/20 answered, {tagged}/{len(queries)} queries tagged on the wire; "
                  f"TCP {tcp_ok}/10 answered, {down} stream tags from the server on the wire")
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="row names: nginx h2 node asyncio haproxy openssl java go redis unbound bind")
    ap.add_argument("--size", type=int, default=20, help="MB of the large file (default 20)")
    ap.add_argument("--write", action="store_true", help="replace the table in docs/user-space-tap.md")
    args = ap.parse_args()
    want = set(args.only or ["nginx", "h2", "node", "asyncio", "haproxy", "openssl", "java", "go", "redis",
                             "unbound", "bind"])
    work = pathlib.Path(tempfile.mkdtemp(prefix="l45-matrix-"))
    www = work / "www"
    www.mkdir()
    files = {"big": make_file(www / "big", args.size << 20), "a": make_file(www / "a", 7 << 20),
             "b": make_file(www / "b", 3 << 20 | 12345), "small": make_file(www / "small", 4321)}
    for n in ("c1", "c2", "c3", "c4"):
        files[n] = make_file(www / n, (5 << 20) + 1000 * int(n[1]))
    www.chmod(0o755)
    plan = [
        ("nginx", "nginx", lambda lab: row_nginx(lab, www, files, True)),
        ("nginx", "nginx", lambda lab: row_nginx(lab, www, files, False)),
        ("h2", "nginx", lambda lab: row_curl_h2(lab, www, files)),
        ("node", "node", lambda lab: row_node_http(lab, www, files)),
        ("node", "node", lambda lab: row_node_net(lab, www, files)),
        ("asyncio", None, lambda lab: row_asyncio(lab, www, files, "streams")),
        ("asyncio", None, lambda lab: row_asyncio(lab, www, files, "sendfile")),
        ("haproxy", "haproxy", lambda lab: row_haproxy(lab, www, files)),
        ("openssl", "openssl", lambda lab: row_openssl(lab, www, files)),
        ("java", "javac", lambda lab: row_java(lab, www, files)),
        ("go", "go", lambda lab: row_go_static(lab, www, files)),
        ("redis", "redis-server", lambda lab: row_redis(lab, www, files)),
        ("unbound", "unbound", lambda lab: row_dns(lab, "unbound", "Unbound", version("unbound", ("-V",)))),
        ("bind", "named", lambda lab: row_dns(lab, "named", "BIND 9", version("named", ("-v",)))),
    ]
    rows = []
    for name, program, run in plan:
        if name not in want:
            continue
        if program and not have(program) or name in ("nginx", "h2", "java", "go") and not have("nginx"):
            r = Row(name, "-", "-")
            r.result, r.detail = "not run", f"{program} could not be installed"
            rows.append(r)
            print(r.line(), flush=True)
            continue
        lab = Lab(work / f"row{len(rows)}")
        try:
            r = run(lab)
        except Exception as e:  # a row that breaks is a failed row, and the next one runs
            r = Row(name, "?", "?")
            r.result, r.detail = "FAIL", f"{type(e).__name__}: {str(e)[:160]}"
            traceback.print_exc()
        finally:
            lab.close()
        rows.append(r)
        print(r.line(), flush=True)
    table = "\n".join(["| program | version | what was checked | result | detail |", "|---|---|---|---|---|",
                       *[r.line() for r in rows]])
    print()
    print(table)
    if args.write:
        text = DOC.read_text()
        start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
        DOC.write_text(text[:start] + "\n" + table + "\n" + text[end:])
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r.result in ("pass", "cannot tap (reported)") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
