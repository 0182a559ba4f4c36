"""Helpers for the user-space tap tests and benchmarks: real agents with the userspace tap
backend, real programs (dnsmasq, dig, python http.server, curl, openssl)
under LD_PRELOAD, and tcpdump captures. Every process started here is
stopped by its fixture, also when a test fails."""
import os
import pathlib
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
AGENT = os.environ.get("L45_AGENT", str(ROOT / "target" / "release" / "l45-agent"))
PRELOAD = os.environ.get("L45_PRELOAD", str(ROOT / "target" / "release" / "libl45tap.so"))
NS = "urn:layer45:params:xml:ns:yang:layer45-customization"
BASE = "urn:ietf:params:xml:ns:netconf:base:1.0"
ANSWER = "10.1.2.3"
NAME = "example.test"


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_tcp_port():
    """A port free for both UDP and TCP (dnsmasq binds both)."""
    for _ in range(50):
        p = free_port(socket.SOCK_DGRAM)
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p))
            return p
        except OSError:
            continue
    raise RuntimeError("no free port")


def stop_process(p, timeout=10):
    """Terminates a process this code started (if still running) and reaps
    it; killed if it does not exit within `timeout` seconds."""
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_for(cond, timeout=10.0, what="condition"):
    """Polls a condition that has no event to wait on, with a deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def module(mid, kind, priority=100, match="", params="", extra=""):
    return (f"<module><id>{mid}</id><name>m{mid}</name><kind>l45:{kind}</kind>"
            f"<priority>{priority}</priority>{extra}<match>{match}</match>"
            f"<parameters>{params}</parameters></module>")


def shm_root():
    """Where control files go: /dev/shm if it is a writable tmpfs, else the
    temporary directory."""
    d = pathlib.Path("/dev/shm")
    return str(d) if d.is_dir() and os.access(d, os.W_OK) else None


class TapAgent:
    """An l45-agent driving the user-space tap through its own control file."""

    def __init__(self, workdir, host="127.0.0.1", port=None, prefix=()):
        """`prefix` runs the agent under another command, e.g.
        `ip netns exec NS` (then `host` is its address in that namespace)."""
        self.dir = pathlib.Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        # The control file on tmpfs, as the agent's default /dev/shm/l45-tap
        # is: on a disk file system every tapped process's first write to a
        # shared page (statistics, socket table) is a journalled page fault.
        self.shm_dir = pathlib.Path(tempfile.mkdtemp(prefix="l45-test-", dir=shm_root()))
        self.shm = self.shm_dir / "tap.shm"
        self.key = self.dir / "key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True)
        self.host = host
        self.port = port or free_port()
        self.prefix = list(prefix)
        self.log = open(self.dir / "agent.log", "ab")
        self.proc = subprocess.Popen(
            [*self.prefix, AGENT, "--listen", f"{host}:{self.port}", "--state-dir", str(self.dir / "state"),
             "--authorized-keys", f"admin:{self.key}.pub", "--tap", "userspace", "--tap-shm", str(self.shm)],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        assert "listening on" in line and "tap userspace" in line, f"agent did not start: {line!r}"
        self.fingerprint = line.split()[5]
        from ncclient import manager
        self.extra_sessions = []
        self.nc = manager.connect(host=self.host, port=self.port, username="admin",
                                  key_filename=str(self.key), hostkey_verify=False,
                                  allow_agent=False, look_for_keys=False, timeout=60)

    def second_session(self):
        from ncclient import manager
        m = manager.connect(host=self.host, port=self.port, username="admin",
                            key_filename=str(self.key), hostkey_verify=False,
                            allow_agent=False, look_for_keys=False, timeout=60)
        self.extra_sessions.append(m)
        return m

    def env(self):
        return {**os.environ, "LD_PRELOAD": PRELOAD, "L45_TAP_SHM": str(self.shm)}

    def edit(self, *modules, op=None):
        attr = f' xmlns:nc="{BASE}" nc:operation="{op}"' if op else ""
        body = "".join(modules)
        self.nc.edit_config(target="running", config=(
            f'<config xmlns="{BASE}"><customizations xmlns="{NS}" xmlns:l45="{NS}"{attr}>'
            f"{body}</customizations></config>"))

    def set_leaf(self, mid, leaf, value):
        self.nc.edit_config(target="running", config=(
            f'<config xmlns="{BASE}"><customizations xmlns="{NS}"><module><id>{mid}</id>'
            f"<{leaf}>{value}</{leaf}></module></customizations></config>"))

    def revoke(self, mid):
        self.nc.dispatch(_xml(f'<revoke-module xmlns="{NS}"><id>{mid}</id></revoke-module>'))

    def state(self):
        """Per-module state and the socket list, from <get>."""
        from lxml import etree
        data = self.nc.get(filter=("subtree", f'<customizations xmlns="{NS}"/>')).data_ele
        n = {"l": NS}
        mods = {}
        for m in data.findall(".//l:module", n):
            st = m.find("l:state", n)
            if st is None:
                continue
            mods[int(m.findtext("l:id", namespaces=n))] = {
                c.tag.split("}")[1]: c.text for c in st}
        socks = []
        for s in data.findall(".//l:socket", n):
            socks.append({
                "process": s.findtext("l:process-name", namespaces=n),
                "modules": [int(x.text) for x in s.findall("l:module", n)],
                "protocol": s.findtext("l:protocol", namespaces=n),
                "source-port": s.findtext("l:source-port", namespaces=n),
                "thread": s.findtext("l:thread-name", namespaces=n),
                "destination": s.findtext("l:destination-address", namespaces=n),
            })
        return mods, socks

    def stop(self):
        for m in [self.nc, *self.extra_sessions]:
            try:
                m.close_session()
            except Exception:
                pass
        stop_process(self.proc)
        self.log.close()
        shutil.rmtree(self.shm_dir, ignore_errors=True)


def _xml(text):
    from lxml import etree
    return etree.fromstring(text)


def dns_query(qid=0x1234, name=NAME):
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00\x00\x01\x00\x01"


def plain_dns_answers(port, timeout=0.5):
    """One query from an untapped socket; True if answered with ANSWER."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(dns_query(), ("127.0.0.1", port))
        try:
            data, _ = s.recvfrom(4096)
        except socket.timeout:
            return False
        return bytes(map(int, ANSWER.split("."))) in data


def udp_port_bound(port, pid="self"):
    suffix = f":{port:04X}"
    for table in (f"/proc/{pid}/net/udp", f"/proc/{pid}/net/udp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        if any(line.split()[1].endswith(suffix) for line in lines if len(line.split()) > 1):
            return True
    return False


class Dnsmasq:
    def __init__(self, workdir, env=None, host="127.0.0.1", port=None, prefix=(), log_queries=True):
        self.dir = pathlib.Path(workdir)
        self.port = port or free_udp_tcp_port()
        conf = self.dir / "dnsmasq.conf"
        conf.write_text(
            f"port={self.port}\nlisten-address={host}\nbind-interfaces\nno-resolv\nno-hosts\n"
            f"cache-size=0\naddress=/{NAME}/{ANSWER}\n")
        self.log = open(self.dir / "dnsmasq.log", "ab")
        self.proc = subprocess.Popen(
            [*prefix, "dnsmasq", "--keep-in-foreground", f"--conf-file={conf}",
             f"--pid-file={self.dir / 'dnsmasq.pid'}", "--log-facility=-",
             *(["--log-queries"] if log_queries else [])],
            stdout=self.log, stderr=self.log, env=env or os.environ.copy())
        # dnsmasq prints nothing on readiness: poll until its UDP port is
        # bound (no traffic, so its socket's first sight is the test's).
        wait_for(lambda: self.proc.poll() is not None or udp_port_bound(self.port, self.proc.pid),
                 what="dnsmasq to bind")
        assert self.proc.poll() is None, "dnsmasq exited"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.log.close()


def dig(port, env=None, extra=(), timeout=3, server="127.0.0.1", prefix=()):
    """Runs dig once; returns (answered, stdout)."""
    p = subprocess.run([*prefix, "dig", f"@{server}", "-p", str(port), NAME, "+tries=1", f"+time={timeout}", *extra],
                       capture_output=True, text=True, env=env or os.environ.copy())
    return (f"\t{ANSWER}" in p.stdout and "status: NOERROR" in p.stdout), p.stdout


class DigLoop(threading.Thread):
    """dig against one DNS server over and over, from its own thread, at
    most one query per `period`: answered queries are counted, the output
    of failed ones kept."""

    def __init__(self, port, env, timeout=2, period=0.05, server="127.0.0.1"):
        super().__init__(daemon=True)
        self.port, self.env, self.timeout, self.period, self.server = port, env, timeout, period, server
        self.ok = 0
        self.failures = []
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            started = time.monotonic()
            answered, out = dig(self.port, env=self.env, timeout=self.timeout, server=self.server)
            if answered:
                self.ok += 1
            else:
                self.failures.append(out)
            self.stopping.wait(max(0.0, self.period - (time.monotonic() - started)))

    def more(self, n, timeout=30):
        """Waits until n more queries succeeded (or any failed)."""
        target = self.ok + n
        wait_for(lambda: self.ok >= target or self.failures, timeout, f"{n} more answered queries")
        assert not self.failures, self.failures[0]

    def stop(self):
        self.stopping.set()
        self.join(timeout=max(30, 2 * self.timeout))


class Capture:
    """tcpdump on loopback, started before traffic and stopped after."""

    def __init__(self, path, bpf, iface="lo", prefix=(), buffer_kib=None):
        """`buffer_kib`: tcpdump's kernel buffer (-B), for captures of
        megabytes that must miss nothing."""
        self.path = path
        size = ["-B", str(buffer_kib)] if buffer_kib else []
        self.proc = subprocess.Popen([*prefix, "tcpdump", "-i", iface, "-U", "--immediate-mode", *size, "-n", "-w", str(path), bpf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()  # "listening on lo, ..." once the capture runs
        assert "listening on" in line, f"tcpdump did not start: {line!r}"

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=10)
        return udp_tcp_payloads(self.path)


def udp_tcp_payloads(path):
    """(proto, sport, dport, payload) of every IPv4 packet in a pcap file."""
    data = pathlib.Path(path).read_bytes()
    if len(data) < 24:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    out, at = [], 24
    while at + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[at:at + 16])
        pkt = data[at + 16:at + 16 + incl]
        at += 16 + incl
        off = 14 if linktype == 1 else 16 if linktype == 113 else 0
        ip = pkt[off:]
        if len(ip) < 20 or ip[0] >> 4 != 4:
            continue
        ihl = (ip[0] & 15) * 4
        proto = ip[9]
        l4 = ip[ihl:]
        if proto == 17 and len(l4) >= 8:
            sport, dport = struct.unpack("!HH", l4[:4])
            out.append(("udp", sport, dport, l4[8:]))
        elif proto == 6 and len(l4) >= 20:
            sport, dport = struct.unpack("!HH", l4[:4])
            doff = (l4[12] >> 4) * 4
            out.append(("tcp", sport, dport, l4[doff:]))
    return out




# ===== bypass detection (test_bypass.py, tests/nco) =====

BYPASS_CLIENT_C = pathlib.Path(__file__).resolve().parent / "bypass_client.c"


def build_bypass_client(outdir, static):
    """Compiles bypass_client.c with gcc, statically (a program the tap cannot
    be preloaded into; named bypass_static) or not (bypass_client). Skips the
    test if gcc or a static libc is missing."""
    import pytest
    gcc = shutil.which("gcc")
    if not gcc:
        pytest.skip("gcc is not installed")
    out = pathlib.Path(outdir) / ("bypass_static" if static else "bypass_client")
    r = subprocess.run([gcc, "-O1", "-Wall", *(["-static"] if static else []), "-o", str(out), str(BYPASS_CLIENT_C)],
                       capture_output=True, text=True)
    if r.returncode != 0 and static and "-lc" in r.stderr:
        pytest.skip(f"no static libc to link with: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    return out


class HoldingServer:
    """A TCP server on a free loopback port that accepts connections and holds
    them open until stopped (its sockets are the server ends: a match on the
    peer's port does not select them)."""

    def __init__(self):
        import threading
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def stop(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=10)
        for c in self.conns:
            c.close()


class BypassClient:
    """bypass_client MODE 127.0.0.1 PORT, holding its connection until
    stopped. `unavailable` is set (and the process gone) when the kernel
    refused io_uring."""

    def __init__(self, binary, mode, port, env=None):
        self.proc = subprocess.Popen([str(binary), mode, "127.0.0.1", str(port)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env or {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"})
        self.pid = self.proc.pid
        line = self.proc.stdout.readline().strip()
        self.unavailable = None
        if line.startswith("io_uring unavailable"):
            self.unavailable = line
            self.proc.wait(timeout=10)
            return
        assert line.startswith("connected "), f"{binary} {mode}: {line!r} {self.proc.stderr.read() if self.proc.poll() is not None else ''}"
        self.port = int(line.split()[1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def next_notification(session, name, timeout):
    """The next notification called `name` on a subscribed ncclient session
    (others are skipped), as {leaf: text}; None at the deadline."""
    from lxml import etree
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        n = session.take_notification(block=True, timeout=left)
        if n is None:
            return None
        root = etree.fromstring(n.notification_xml.encode())
        for el in root:
            if el.tag == f"{{{NS}}}{name}":
                return {c.tag.split("}")[1]: c.text for c in el}
