"""Shared pieces of the dissertation experiments (tools/experiments/*.py).

- Binaries: L45_AGENT, L45_PRELOAD, L45_NCO, L45_DISSECTOR, else
  $CARGO_TARGET_DIR/release or target/release.
- `Testbed`: the dissertation's two hosts as two network namespaces
  (`l45xPID-client`, `l45xPID-server`) joined by one veth pair, each end shaped to
  1 Gbit/s with an HTB class (HTB, not TBF: it takes the veth's 64 KiB GSO
  super-packets without a burst as large as one). Each host is a device: an
  l45-agent with the user-space tap. The agents listen on loopback in the
  root namespace (so ncclient and the NCO reach them without routing); only
  the tapped applications run inside the host namespaces, reading their
  agent's control file.
- Output: `Output` writes one experiment's CSV files and PNG plots into
  docs/experiments/ (or --out) and a small JSON summary the docs quote.
- Packet traces: `pcap_records` (timestamps and sizes, for throughput).

Everything started here is stopped by its owner's `close()`, also on error.
"""
import argparse
import csv
import json
import os
import pathlib
import signal
import struct
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
_RELEASE = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
os.environ.setdefault("L45_AGENT", str(_RELEASE / "l45-agent"))
os.environ.setdefault("L45_PRELOAD", str(_RELEASE / "libl45tap.so"))
os.environ.setdefault("L45_NCO", str(_RELEASE / "l45-nco"))
os.environ.setdefault("L45_DISSECTOR", str(_RELEASE / "l45-dissector"))
AGENT, PRELOAD = os.environ["L45_AGENT"], os.environ["L45_PRELOAD"]
NCO, DISSECTOR = os.environ["L45_NCO"], os.environ["L45_DISSECTOR"]

sys.path.insert(0, str(ROOT / "tests" / "tap"))
import taplab  # noqa: E402,F401  (re-exported helpers)
from taplab import Capture, Dnsmasq, TapAgent, module, stop_process, wait_for  # noqa: E402,F401

OUT_DEFAULT = ROOT / "docs" / "experiments"
# One set of namespaces per run, so two runs (say the smoke test during a
# long run) never tear down each other's hosts.
NS_PREFIX = f"l45x{os.getpid()}"
NET = "10.45.9"
RATE = "1gbit"


def sh(*args, check=True):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))}: {p.stderr.strip()}")
    return p


def parse_args(doc, extra=None):
    """The options every experiment takes: --quick (small sizes, few
    trials), --smoke (tiny, for the test that keeps the scripts working),
    --out DIR."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes and few trials")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script runs, figures mean nothing")
    ap.add_argument("--out", type=pathlib.Path, default=OUT_DEFAULT, help="where CSV/PNG/JSON go")
    if extra:
        extra(ap)
    args = ap.parse_args()
    args.mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    return args


def pick(args, full, quick, smoke):
    return {"full": full, "quick": quick, "smoke": smoke}[args.mode]


# ===== output =====

class Output:
    """One experiment's files: NAME.csv (or NAME-PART.csv), NAME.png,
    NAME.json (figures quoted by docs/experiments.md, with the mode and
    the command that produced them)."""

    def __init__(self, name, args, script=None):
        """`script`: the script's name when it is not `name` (a variant,
        e.g. rotation_two.py --impair writes rotation_two_impaired.*)."""
        self.name, self.dir, self.mode = name, pathlib.Path(args.out), args.mode
        self.dir.mkdir(parents=True, exist_ok=True)
        self.summary = {"experiment": name, "mode": args.mode,
                        "command": " ".join([f".venv/bin/python tools/experiments/{script or name}.py"]
                                            + sys.argv[1:]),
                        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "finished": None, "figures": {}}
        # The host is shared: its load average at the start and the end
        # says how noisy the run's absolute times are.
        self.summary["host load"] = {"start": host_load()}

    def csv(self, header, rows, part=None):
        path = self.dir / (f"{self.name}-{part}.csv" if part else f"{self.name}.csv")
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
        return path

    def figure(self, key, value):
        self.summary["figures"][key] = value
        print(f"  {key}: {value}", flush=True)

    def plot(self, fig, part=None):
        path = self.dir / (f"{self.name}-{part}.png" if part else f"{self.name}.png")
        fig.savefig(path, dpi=110, bbox_inches="tight")
        import matplotlib.pyplot as plt
        plt.close(fig)
        return path

    def done(self):
        self.summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.summary["host load"]["end"] = host_load()
        (self.dir / f"{self.name}.json").write_text(json.dumps(self.summary, indent=1) + "\n")


def host_load():
    """The host's load averages (1, 5, 15 min) and its CPU count."""
    one, five, fifteen = os.getloadavg()
    return {"1 min": round(one, 2), "5 min": round(five, 2), "15 min": round(fifteen, 2), "cpus": os.cpu_count()}


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


# ===== the testbed: two hosts, one shaped link =====

class Testbed:
    """Two network namespaces joined by a veth pair shaped to 1 Gbit/s;
    one user-space-tap device (agent) per host. `hosts` maps role →
    (namespace, address)."""

    def __init__(self, work, roles=("client", "server"), rate=RATE, agents=True):
        if os.geteuid() != 0:
            raise SystemExit("the experiments need root (network namespaces, tc, tcpdump)")
        self.work = pathlib.Path(work)
        self.roles = roles
        self.hosts = {r: (f"{NS_PREFIX}-{r}", f"{NET}.{i + 1}") for i, r in enumerate(roles)}
        self.devices = {}
        self._down()
        a, b = roles
        ns_a, ns_b = self.hosts[a][0], self.hosts[b][0]
        sh("ip", "netns", "add", ns_a)
        sh("ip", "netns", "add", ns_b)
        sh("ip", "link", "add", "eth0", "netns", ns_a, "type", "veth", "peer", "name", "eth0", "netns", ns_b)
        for role in roles:
            ns, addr = self.hosts[role]
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            if rate:
                sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", "root", "handle", "1:",
                   "htb", "default", "10")
                sh("ip", "netns", "exec", ns, "tc", "class", "add", "dev", "eth0", "parent", "1:", "classid",
                   "1:10", "htb", "rate", rate, "ceil", rate)
        if agents:
            self._start_agents()

    def _start_agents(self):
        try:
            for role in self.roles:
                self.devices[role] = TapAgent(self.work / f"{role}-device")
        except BaseException:
            self.close()  # the namespaces and any agent already up
            raise

    def prefix(self, role):
        return ["ip", "netns", "exec", self.hosts[role][0]]

    def addr(self, role):
        return self.hosts[role][1]

    def env(self, role):
        """The environment of a tapped application on `role`'s host."""
        return self.devices[role].env()

    def _down(self):
        for ns, _ in self.hosts.values():
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", ns, check=False)

    def close(self):
        for d in self.devices.values():
            try:
                d.stop()
            except Exception as e:  # keep tearing down
                print(f"teardown: {e}", file=sys.stderr)
        self._down()


# ===== applications =====

HTTP_SERVER = r"""
import functools, http.server, ssl, sys
class Quiet(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def log_message(self, *args):
        pass
class Server(http.server.HTTPServer):
    def handle_error(self, request, client_address):
        pass  # a client or middlebox that hangs up is part of the experiment
host, port, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
httpd = Server((host, port), functools.partial(Quiet, directory=root))
if len(sys.argv) > 5:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[4], sys.argv[5])
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
print("ready", flush=True)
httpd.serve_forever()
"""


class HttpServer:
    """python http.server (one thread, as the dissertation's), optionally
    with TLS, on `host:port` in a namespace, under `env`."""

    def __init__(self, root, host, port, env, prefix=(), tls=None):
        extra = [str(tls[0]), str(tls[1])] if tls else []
        self.proc = subprocess.Popen([*prefix, sys.executable, "-c", HTTP_SERVER, host, str(port), str(root), *extra],
                                     env=env, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            stop_process(self.proc)
            raise RuntimeError(f"http server did not start: {line!r}")
        self.host, self.port, self.scheme = host, port, "https" if tls else "http"

    def url(self, path):
        return f"{self.scheme}://{self.host}:{self.port}/{path}"

    def close(self):
        stop_process(self.proc)


def self_signed(work):
    key, cert = work / "tls.key", work / "tls.crt"
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
       "-days", "2", "-subj", "/CN=l45-experiment")
    return cert, key


def random_file(path, nbytes):
    with open(path, "wb") as f:
        block = os.urandom(1 << 20)
        left = nbytes
        while left > 0:
            f.write(block[:min(left, len(block))])
            left -= len(block)
    return path


def curl(url, out, env, prefix=(), timeout=600):
    """Downloads `url`; returns (seconds, bytes)."""
    t0 = time.perf_counter()
    p = subprocess.run([*prefix, "curl", "-sS", "-k", "--max-time", str(timeout), "-o", str(out), url],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"curl {url}: {p.stderr.strip()}")
    return dt, pathlib.Path(out).stat().st_size


# ===== packet traces =====

def pcap_records(path):
    """(time s, proto, sport, dport, ip length, payload) of each IPv4
    packet in a pcap (Ethernet, Linux cooked or raw); payload as captured
    (it may be cut by the snap length)."""
    data = pathlib.Path(path).read_bytes()
    if len(data) < 24:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    off = 14 if linktype == 1 else 16 if linktype == 113 else 0
    out, at = [], 24
    while at + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack(endian + "IIII", data[at:at + 16])
        pkt = data[at + 16:at + 16 + incl]
        at += 16 + incl
        ip = pkt[off:]
        if len(ip) < 20 or ip[0] >> 4 != 4:
            continue
        ihl, proto, total = (ip[0] & 15) * 4, ip[9], struct.unpack("!H", ip[2:4])[0]
        l4 = ip[ihl:]
        if len(l4) < 8:
            continue
        sport, dport = struct.unpack("!HH", l4[:4])
        if proto == 6 and len(l4) >= 20:
            payload = l4[(l4[12] >> 4) * 4:]
            plen = total - ihl - (l4[12] >> 4) * 4
        elif proto == 17:
            payload, plen = l4[8:], total - ihl - 8
        else:
            continue
        out.append((sec + frac / (1e9 if nano else 1e6), proto, sport, dport, plen, payload))
    return out


def throughput(records, sport, bin_s=0.1, t0=None):
    """Bytes per second of TCP payload sent from `sport`, in `bin_s` bins:
    [(bin start s, Mbit/s)], times relative to `t0` (default: first packet)."""
    pk = [(t, n) for t, proto, sp, _, n, _ in records if proto == 6 and sp == sport and n > 0]
    if not pk:
        return []
    t0 = pk[0][0] if t0 is None else t0
    nbins = int((pk[-1][0] - t0) / bin_s) + 1
    bins = [0] * nbins
    for t, n in pk:
        k = int((t - t0) / bin_s)
        if 0 <= k < nbins:
            bins[k] += n
    return [(round(k * bin_s, 3), b * 8 / bin_s / 1e6) for k, b in enumerate(bins)]


class Tcpdump(Capture):
    """tcpdump on a host's eth0 (headers only unless `snap` says more)."""

    def __init__(self, bed, role, path, bpf, snap=128):
        self.path = path
        self.proc = subprocess.Popen([*bed.prefix(role), "tcpdump", "-i", "eth0", "-U", "--immediate-mode",
                                      "-s", str(snap), "-B", "16384", "-n", "-w", str(path), bpf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        assert "listening on" in line, f"tcpdump did not start: {line!r}"

    def records(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=10)
        return pcap_records(self.path)


def median(xs):
    s = sorted(xs)
    n = len(s)
    return (s[n // 2] + s[(n - 1) // 2]) / 2 if n else float("nan")


def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


# ===== lifecycle experiments: a paced download and what happened when =====

class Events:
    """Named moments of an experiment, in seconds since `t0`, for the CSV
    and the plot's vertical markers (the dissertation's numbered log lines)."""

    def __init__(self):
        self.t0 = time.time()
        self.items = []

    def mark(self, text):
        t = time.time() - self.t0
        self.items.append((round(t, 3), text))
        print(f"  [{t:7.3f} s] {text}", flush=True)


class Download:
    """curl in the background on a host; `wait()` returns (seconds, bytes)."""

    def __init__(self, bed, role, url, out, env):
        self.out = pathlib.Path(out)
        self.t0 = time.time()
        self.proc = subprocess.Popen([*bed.prefix(role), "curl", "-sS", "-k", "-o", str(out), url], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait(self, timeout=900):
        _, err = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise RuntimeError(f"curl: {err.strip()}")
        return time.time() - self.t0, self.out.stat().st_size


def trace_rows(flows):
    """CSV rows (flow, t, Mbit/s) from {flow: [(t, Mbit/s)]}."""
    return [(name, t, round(v, 3)) for name, tr in flows.items() for t, v in tr]


def plot_trace(out, flows, events, title, bin_s, xlabel="seconds since the experiment started", logy=False):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for name, tr in flows.items():
        if tr:
            # a closing point, so the last bin is drawn with its width
            ts = [t for t, _ in tr] + [tr[-1][0] + bin_s]
            vs = [v for _, v in tr] + [tr[-1][1]]
            ax.step(ts, vs, where="post", label=name, lw=1)
    if logy:
        ax.set_yscale("log")
    for i, (t, text) in enumerate(events):
        ax.axvline(t, color="grey", ls=":", lw=0.8)
        ax.annotate(f"({i + 1})", (t, ax.get_ylim()[1]), fontsize=8, ha="left", va="top")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"Mbit/s ({int(bin_s * 1000)} ms bins)")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    legend = "\n".join(f"({i + 1}) {t:.1f} s {text}" for i, (t, text) in enumerate(events))
    fig.text(0.01, -0.02, legend, fontsize=8, va="top", family="monospace")
    out.plot(fig)


# ===== a middlebox between the two hosts =====

class MiddleboxBed(Testbed):
    """client ─ middlebox ─ server, three namespaces, each link shaped to
    1 Gbit/s. `routed`: the middlebox has an address on both links and
    forwards IP (a router, and the host of a resolver or proxy: clients
    talk to `mbox_addr`). `wire`: the middlebox's two interfaces have no
    address and forward nothing by themselves (an inline bump in the wire,
    e.g. suricata's AF_PACKET IPS mode copying between them); client and
    server share one subnet."""

    def __init__(self, work, mode="routed", rate=RATE):
        if os.geteuid() != 0:
            raise SystemExit("the experiments need root (network namespaces, tc, tcpdump)")
        self.work = pathlib.Path(work)
        self.roles = ("client", "server")
        self.mode = mode
        self.hosts = {"client": (f"{NS_PREFIX}-client", "10.45.11.1"),
                      "server": (f"{NS_PREFIX}-server", "10.45.12.1" if mode == "routed" else "10.45.11.2"),
                      "mbox": (f"{NS_PREFIX}-mbox", "10.45.11.254")}
        self.devices = {}
        self._down()
        for ns, _ in self.hosts.values():
            sh("ip", "netns", "add", ns)
        mb = self.hosts["mbox"][0]
        sh("ip", "link", "add", "eth0", "netns", self.hosts["client"][0], "type", "veth", "peer", "name", "eth0",
           "netns", mb)
        sh("ip", "link", "add", "eth0", "netns", self.hosts["server"][0], "type", "veth", "peer", "name", "eth1",
           "netns", mb)
        for role in ("client", "server"):
            ns, addr = self.hosts[role]
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        if mode == "routed":
            sh("ip", "-n", mb, "addr", "add", "10.45.11.254/24", "dev", "eth0")
            sh("ip", "-n", mb, "addr", "add", "10.45.12.254/24", "dev", "eth1")
            sh("ip", "netns", "exec", mb, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        else:
            for dev in ("eth0", "eth1"):  # an inline box sees every frame
                sh("ip", "-n", mb, "link", "set", dev, "promisc", "on")
        for ns, devs in ((self.hosts["client"][0], ["eth0"]), (self.hosts["server"][0], ["eth0"]),
                         (mb, ["eth0", "eth1"])):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            for dev in devs:
                sh("ip", "-n", ns, "link", "set", dev, "up")
                if mode == "wire":
                    # no offloads: AF_PACKET copies frames as they are, so
                    # each must be at most one MTU and carry its checksums
                    sh("ip", "netns", "exec", ns, "ethtool", "-K", dev, "gro", "off", "tso", "off", "gso", "off",
                       "tx", "off", "rx", "off")
                if rate:
                    sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb",
                       "default", "10")
                    sh("ip", "netns", "exec", ns, "tc", "class", "add", "dev", dev, "parent", "1:", "classid",
                       "1:10", "htb", "rate", rate, "ceil", rate)
        if mode == "routed":
            sh("ip", "-n", self.hosts["client"][0], "route", "add", "default", "via", "10.45.11.254")
            sh("ip", "-n", self.hosts["server"][0], "route", "add", "default", "via", "10.45.12.254")
        self._start_agents()

    @property
    def mbox_addr(self):
        return self.hosts["mbox"][1]

    @property
    def mbox_server_side(self):
        return "10.45.12.254"


class Daemon:
    """A middlebox program in the foreground in a namespace, stopped with
    SIGTERM (then SIGKILL); `ready` polls a condition with a deadline."""

    def __init__(self, name, args, prefix, log, ready=None, timeout=30, env=None):
        self.name = name
        self.logf = open(log, "ab")
        self.proc = subprocess.Popen([*prefix, *args], stdout=self.logf, stderr=subprocess.STDOUT, env=env)
        if ready:
            try:
                wait_for(lambda: self.proc.poll() is not None or ready(), timeout=timeout, what=f"{name} ready")
            except AssertionError:
                self.close()
                raise
            if self.proc.poll() is not None:
                self.logf.close()
                raise RuntimeError(f"{name} exited: {pathlib.Path(log).read_text()[-1500:]}")

    def close(self):
        stop_process(self.proc)
        if not self.logf.closed:
            self.logf.close()


def port_listening(prefix, port, proto="udp"):
    p = sh(*prefix, "ss", "-Hln", "-u" if proto == "udp" else "-t", check=False)
    return any(f":{port} " in line + " " for line in p.stdout.splitlines())


def qname(name):
    """A DNS name in wire form (length-prefixed labels, root byte): finds
    one query's bytes in a capture, whatever module reshaped the rest."""
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\x00"
