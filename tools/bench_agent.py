"""Benchmark: bulk load, full get-config, reads, small edit and memory of l45-agent,
driven by ncclient over SSH on loopback (recording tap backend).

Usage: .venv/bin/python tools/bench_agent.py [N ...]   (default 10000 100000)

Prints seconds per step and the agent's RSS (VmRSS, VmHWM from /proc).

In the same run it measures, with the same steps and client:
- L45_AGENT_BASELINE (optional): an older l45-agent binary, for before/after;
- yuma123 netconfd (the issue's reference), reached as usual through an
  OpenSSH sshd started here on a free loopback port (own host key and
  config, `Subsystem netconf /usr/sbin/netconf-subsystem`) and netconfd
  started with --superuser and a module path holding our model. RSS is
  netconfd's. Set L45_BENCH_NETCONFD=0 to skip it. netconfd's load is about
  quadratic in N: above L45_BENCH_NETCONFD_MAX_N (default 20000) it is
  measured at that N instead.

  netconfd setup that matters: netconf-subsystem sends netconfd the SSH
  server port (from SSH_CONNECTION) and netconfd admits only the ports in its
  --port list (default 830), else agt_connect drops the session ("access
  denied"; the only other trace is agt_sys.c:944 "invalid internal value",
  from the session-end notification of a session that never got a user). So
  netconfd gets --port=<our sshd port>, a private --ncxserver-sockname (and
  netconf-subsystem --ncxserver-sockname=PORT@PATH), and --target=running
  (its default target is candidate; the benchmark edits running).

After the full get-config it times the reads of issue 18 (each five times,
medians; L45_BENCH_READS=0 skips them): one entry by key (subtree and XPath
filter), one entry with state (`get`), `/nacm` only, a content match on a
non-key leaf (priority 7: N/100 entries), full get-config and full `get`
with state; end to end (ncclient) and, for our agent, the server's parse +
handle + send from its debug log, and the server process's CPU time per
read and its time waiting for a core (the sums over its threads of
/proc/PID/task/*/schedstat, over the repeats: CPU is a figure a busy
machine moves less than wall time, the wait is what the load adds).

After the full `get` it also times ncclient's own work on that reply's
bytes, offline (no server, no SSH): its chunked-framing decoder fed
4096-byte reads (as its SSH transport reads) of the reply in 64 KiB
chunks, then the reply parse (`parse_root` + `GetReply.parse`, lxml).
That is the client's floor under the end-to-end figure, measured in the
same run (paramiko's decryption and its session loop's select() come on
top of it).

Then the same reads through a client that is not the bottleneck
(`tools/nc_openssh.py`: OpenSSH's `ssh -s ... netconf` as the transport,
chunked framing, every reply parsed whole by lxml as it arrives), for
our agent and netconfd: one entry by key, the N/100-entry content match
(L45_BENCH_OPENSSH_REPEAT times, default 21), full get-config and full
`get` (5 times each), each reply parsed into an lxml tree; the full `get`
again parsed by libexpat without a tree. Each row adds the client's CPU
per read (this process: framing and parse; the ssh child: decryption).
For the full `get` it also prints that client's floor: the same read with
the reply not parsed (ssh and the framing only) and the CPU time of
either parse of the same bytes offline. L45_BENCH_OPENSSH=0
skips these rows; L45_BENCH_OPENSSH_CIPHER picks `ssh -c` (default:
OpenSSH's choice, chacha20-poly1305 with our agent).

L45_BENCH_NCCLIENT_TICK (diagnostic): see below.
"""
import os
import re
import pathlib
import subprocess
import sys
import tempfile
import time

from ncclient import manager
import ncclient.transport.session as ncsession

from lxml import etree
from nc_openssh import OpenSshNetconf, negotiated_cipher

# Diagnostic only: ncclient has no option for its session loop's polling
# tick (`TICK = 0.1`, a module constant: a queued request waits until the
# loop's select() times out). L45_BENCH_NCCLIENT_TICK=0.005 shortens it to
# show what the server and the rest of the client cost without that wait;
# the figures of record use ncclient as shipped.
if os.environ.get("L45_BENCH_NCCLIENT_TICK"):
    ncsession.TICK = float(os.environ["L45_BENCH_NCCLIENT_TICK"])
    print(f"(diagnostic: ncclient TICK = {ncsession.TICK} s, not ncclient's default)", flush=True)

ROOT = pathlib.Path(__file__).resolve().parents[1]
AGENT = os.environ.get("L45_AGENT", str(ROOT / "target" / "release" / "l45-agent"))
NS = "urn:layer45:params:xml:ns:yang:layer45-customization"
BASE = "urn:ietf:params:xml:ns:netconf:base:1.0"


def rss(pid):
    out = {}
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(("VmRSS", "VmHWM")):
            k, v = line.split(":")
            out[k] = int(v.split()[0]) // 1024
    return out


def load_xml(n, start=1):
    # priority i % 100: a content match on one priority selects N/100 entries
    # (1000 at 100k: the "1 000 entries" read)
    mods = "".join(f"<module><id>{i}</id><name>m{i}</name><kind>l45:dns-front-tag</kind><priority>{i % 100}</priority></module>"
                   for i in range(start, start + n))
    return f'<config xmlns="{BASE}"><customizations xmlns="{NS}" xmlns:l45="{NS}">{mods}</customizations></config>'


def timed(f):
    t = time.perf_counter()
    r = f()
    return time.perf_counter() - t, r


class ServerLog:
    """The agent's per-rpc debug timings (`rpc handled` lines), if it logs."""

    def __init__(self, path=None):
        self.path, self.pos = path, 0

    def take(self):
        if not self.path:
            return []
        with open(self.path) as f:
            f.seek(self.pos)
            text = f.read()
            self.pos = f.tell()
        out = []
        for line in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines():
            if "rpc handled" in line:
                out.append({k: v for k, v in re.findall(r"(\w+)=([\w.-]+)", line)})
        return out

    def server_ms(self):
        """parse + handle + send of the last get/get-config since the last take, in ms."""
        recs = [r for r in self.take() if r.get("op") in ("get-config", "get", "get-data")]
        if not recs:
            return None
        return sum(float(recs[-1].get(k + "_ms", "nan")) for k in ("parse", "handle", "send"))

    def split(self, step):
        """recv/parse/handle/send of the step's rpc, in ms."""
        recs = [r for r in self.take() if r.get("op") in ("edit-config", "get-config", "get")]
        if not recs:
            return ""
        r = recs[-1]
        f = {k: float(r.get(k + "_ms", "nan")) for k in ("recv", "parse", "handle", "send")}
        server = f["parse"] + f["handle"] + f["send"]
        return (f"  {step:<11} server {server:8.1f} ms (recv {f['recv']:.1f}, parse {f['parse']:.1f}, "
                f"handle {f['handle']:.1f}, send {f['send']:.1f}; in {int(r.get('bytes_in', 0)) / 1e6:.2f} MB, "
                f"out {int(r.get('bytes_out', 0)) / 1e6:.2f} MB)")


NACM_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-acm"
ENTRY = re.compile(r"<module(?:\s[^>]*)?>\s*<id>")


NMDA_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-nmda"
DS_NS = "urn:ietf:params:xml:ns:yang:ietf-datastores"


class RawReply:
    """A dispatched RPC's reply, read like ncclient's get replies."""

    def __init__(self, reply):
        self.xml = self.data_xml = reply.xml


def nmda_rows(m, key):
    """RFC 8526 get-data by key (running; operational with origins), when
    the server has it (netconfd does not)."""
    if not any(c.startswith(f"{NMDA_NS}?") for c in m.server_capabilities):
        return []
    from ncclient.xml_ import to_ele

    def get_data(ds, extra=""):
        return lambda: RawReply(m.dispatch(to_ele(
            f'<get-data xmlns="{NMDA_NS}" xmlns:ds="{DS_NS}"><datastore>ds:{ds}</datastore>'
            f"<xpath-filter xmlns:l45=\"{NS}\">/l45:customizations/l45:module[l45:id='{key}']</xpath-filter>{extra}</get-data>")))
    return [
        ("get-data running, one entry by key", get_data("running"), 1),
        ("get-data operational, one, with-origin", get_data("operational", "<with-origin/>"), 1),
    ]


class _FloorSession:
    """What ncclient's framing decoder needs of a session."""

    def __init__(self):
        from io import BytesIO
        self._buffer = BytesIO()
        self._base = ncsession.NetconfBase.BASE_11
        self._message_list = []
        self.got = None

    def _dispatch_message(self, raw):
        self.got = raw


def client_floor(raw, repeat=3):
    """Best of `repeat`: ncclient's framing decoder (4096-byte reads of the
    reply in 64 KiB chunks) and its reply parse, on `raw`, in seconds."""
    from ncclient import xml_
    from ncclient.operations.retrieve import GetReply
    from ncclient.transport import parser as ncparser
    data = raw.encode()
    part = 64 * 1024
    wire = b"".join(b"\n#%d\n%s" % (len(data[i:i + part]), data[i:i + part]) for i in range(0, len(data), part)) + b"\n##\n"
    framing, parse = [], []
    for _ in range(repeat):
        s = _FloorSession()
        p = ncparser.DefaultXMLParser(s)
        t = time.perf_counter()
        for i in range(0, len(wire), 4096):
            p.parse(wire[i:i + 4096])
        framing.append(time.perf_counter() - t)
        assert s.got == raw
        t = time.perf_counter()
        xml_.parse_root(raw)
        GetReply(raw).parse()
        parse.append(time.perf_counter() - t)
    return min(framing), min(parse)


def sched(pid):
    """The process's CPU time and its time runnable but waiting for a core
    so far, in seconds: the sums over its threads of
    /proc/PID/task/TID/schedstat (nanoseconds; threads that ended since
    are not counted, the agent keeps its threads between reads)."""
    cpu = wait = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            f = open(f"/proc/{pid}/task/{task}/schedstat").read().split()
        except OSError:
            continue  # (the thread just ended)
        cpu, wait = cpu + int(f[0]), wait + int(f[1])
    return cpu / 1e9, wait / 1e9


def cpu_text(pid, before, times):
    """CPU and run-queue wait per read since `before` (a `sched`)."""
    if not pid:
        return ""
    cpu, wait = sched(pid)
    return f", CPU {(cpu - before[0]) / times * 1000:.1f} ms/read, waited for a core {(wait - before[1]) / times * 1000:.1f} ms/read"


def reset_peak(pid):
    """Restarts VmHWM at the current RSS (clear_refs 5, Linux ≥ 4.0)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def reads(label, n, m, log, repeat=5, pid=None, ssh=None):
    """The read rows of issue 18: each read `repeat` times, medians of the
    client's time (end to end) and of the server's parse + handle + send.
    `ssh` (host, port, user, key): also the OpenSSH client's rows."""
    key = n // 2
    one = f'<customizations xmlns="{NS}"><module><id>{key}</id></module></customizations>'
    rows = [
        ("one entry by key, subtree", lambda: m.get_config("running", filter=("subtree", one)), 1),
        ("one entry by key, XPath", lambda: m.get_config("running", filter=("xpath", ({"l45": NS}, f"/l45:customizations/l45:module[l45:id='{key}']"))), 1),
        ("one entry with state (get)", lambda: m.get(filter=("subtree", one)), 1),
        ("/nacm only", lambda: m.get_config("running", filter=("subtree", f'<nacm xmlns="{NACM_NS}"/>')), 0),
        *nmda_rows(m, key),
        (f"{n // 100} entries (priority 7)", lambda: m.get_config("running", filter=("subtree", f'<customizations xmlns="{NS}"><module><priority>7</priority></module></customizations>')), n // 100),
        ("full get-config", lambda: m.get_config("running"), n),
        ("full get with state", lambda: m.get(), n),
    ]
    earlier_peak = 0
    print(f"  read {'(ncclient)':<30} load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    for name, call, want in rows:
        if name == "full get with state" and pid:
            earlier_peak = rss(pid)["VmHWM"]
            reset_peak(pid)
            before = rss(pid)["VmRSS"]
        ends, servers, size, raw = [], [], 0, None
        cpu0 = sched(pid) if pid else None
        for _ in range(repeat):
            log.take()
            t, r = timed(call)
            raw = r.xml
            got = len(ENTRY.findall(r.data_xml))  # (yang-library's modules have no id)
            assert got == want, f"{label} {name}: {got} entries, want {want}"
            ends.append(t)
            size = len(r.xml)
            ms = log.server_ms()
            if ms is not None:
                servers.append(ms)
        cpu = cpu_text(pid, cpu0, repeat)
        ends.sort()
        servers.sort()
        server = f"server {servers[len(servers) // 2]:8.1f} ms (min {servers[0]:.1f}{cpu})" if servers else f"server      n/a{cpu}"
        print(f"  read {name:<30} end to end {ends[len(ends) // 2] * 1000:8.1f} ms (min {ends[0] * 1000:.1f}), "
              f"{server}; {want} entries, {size / 1e6:.2f} MB", flush=True)
        if name == "full get with state":
            if pid:
                print(f"  read {'  agent memory':<30} RSS before {before} MB, peak while answering {rss(pid)['VmHWM']} MB "
                      f"(reply {size / 1e6:.1f} MB)", flush=True)
            framing, parse = client_floor(raw)
            print(f"  read {'  client floor, same bytes':<30} ncclient framing {framing * 1000:.1f} ms + reply parse "
                  f"{parse * 1000:.1f} ms = {(framing + parse) * 1000:.1f} ms (offline, best of 3)", flush=True)
    if ssh and os.environ.get("L45_BENCH_OPENSSH", "1") != "0":
        try:
            openssh_reads(n, ssh, log, pid)
        except Exception as e:  # report, keep the other rows
            print(f"  read {'OpenSSH client':<30} failed: {e!r}", flush=True)
    # (the peak before the reset, for the run's peak)
    return earlier_peak


def openssh_reads(n, ssh, log, pid):
    """Reads through OpenSSH + lxml (tools/nc_openssh.py): the end to end
    without ncclient's own cost, and that client's floor on the full get."""
    host, port, user, key = ssh
    cipher = os.environ.get("L45_BENCH_OPENSSH_CIPHER") or None
    many = int(os.environ.get("L45_BENCH_OPENSSH_REPEAT", "21"))
    print(f"  read {'OpenSSH client':<30} ssh -s netconf, cipher {negotiated_cipher(host, port, user, key, cipher)}, "
          f"each reply parsed as it arrives; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    key_filter = f'<customizations xmlns="{NS}"><module><id>{n // 2}</id></module></customizations>'
    content = f'<customizations xmlns="{NS}"><module><priority>7</priority></module></customizations>'
    rows = [
        ("one entry by key, subtree", f'<get-config><source><running/></source><filter type="subtree">{key_filter}</filter></get-config>', 1, 5, "lxml"),
        (f"{n // 100} entries (priority 7)", f'<get-config><source><running/></source><filter type="subtree">{content}</filter></get-config>', n // 100, many, "lxml"),
        ("full get-config", "<get-config><source><running/></source></get-config>", n, 5, "lxml"),
        ("full get with state", "<get/>", n, 5, "lxml"),
        ("full get, expat (no tree)", "<get/>", n, 5, "expat"),
    ]
    module = f"{{{NS}}}module"
    sizes = {}
    with OpenSshNetconf(host, port, user, key, cipher) as s:
        for name, body, want, times, parse in rows:
            ends, servers, client = [], [], [0.0, 0.0]
            cpu0 = sched(pid) if pid else None
            for _ in range(times):
                log.take()
                c0 = s.cpu()
                t, got = timed(lambda: s.rpc(body, parse))
                client = [c + b - a for c, a, b in zip(client, c0, s.cpu())]
                ends.append(t)
                ms = log.server_ms()
                if ms is not None:
                    servers.append(ms)
                if parse == "lxml":
                    root = got
                    got = sum(1 for e in root.iter(module) if e.find(f"{{{NS}}}id") is not None)
                    assert got == want, f"OpenSSH {name}: {got} entries, want {want}"
                else:  # (the lxml row's reply, give or take a counter's digits)
                    assert abs(got - sizes[body]) < sizes[body] // 20, (name, got, sizes[body])
            cpu = cpu_text(pid, cpu0, times)
            if parse == "lxml":
                sizes[body] = len(etree.tostring(root))
            ends.sort()
            servers.sort()
            server = f"server {servers[len(servers) // 2]:8.1f} ms (min {servers[0]:.1f}{cpu})" if servers else f"server      n/a{cpu}"
            print(f"  read {'  ' + name:<30} end to end {ends[len(ends) // 2] * 1000:8.1f} ms (min {ends[0] * 1000:.1f}, "
                  f"{times} reads), {server}; client CPU {client[0] / times * 1000:.1f} ms (python: framing, parse) + "
                  f"{client[1] / times * 1000:.1f} ms (ssh) per read; {want} entries", flush=True)
        # The floor of this client on the full get: ssh and the framing
        # alone (the reply not parsed), and lxml's parse of the same bytes.
        transport = sorted(timed(lambda: s.rpc("<get/>", None))[0] for _ in range(3))
        raw = s.rpc_bytes("<get/>")

        def cpu_of(parse):
            t = time.process_time()
            s.parse_offline(raw, parse)
            return time.process_time() - t
        lxml_cpu = min(cpu_of("lxml") for _ in range(3))
        expat_cpu = min(cpu_of("expat") for _ in range(3))
        print(f"  read {'  client floor, full get':<30} ssh + framing, no parse {transport[1] * 1000:.1f} ms (median of 3, "
              f"min {transport[0] * 1000:.1f}); parse of the same {len(raw) / 1e6:.1f} MB offline, CPU: lxml tree "
              f"{lxml_cpu * 1000:.1f} ms, expat {expat_cpu * 1000:.1f} ms (best of 3)", flush=True)


def steps(label, n, connect, pid, log=ServerLog(), ssh=None):
    idle = rss(pid)
    log.take()
    with connect() as m:
        xml = load_xml(n)
        split = []
        t_load, _ = timed(lambda: m.edit_config(target="running", config=xml))
        split.append(log.split("load"))
        t_get, r = timed(lambda: m.get_config("running"))
        split.append(log.split("get-config"))
        assert r.data_xml.count("<module>") == n, label
        read_lines, earlier_peak = [], 0
        if os.environ.get("L45_BENCH_READS", "1") != "0":
            import contextlib
            import io
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                earlier_peak = reads(label, n, m, log, pid=pid, ssh=ssh)
            read_lines = buf.getvalue().splitlines()
        small = load_xml(1, start=n // 2)
        t_small, _ = timed(lambda: m.edit_config(target="running", config=small))
        split.append(log.split("small edit"))
        # ncclient's session loop polls its send queue every TICK (0.1 s):
        # one request waits 0-100 ms before it is sent, depending on when
        # the loop last went to sleep. Repeat the small edit to see the
        # spread and the time when that wait is short.
        smalls = []
        for i in range(10):
            t, _ = timed(lambda: m.edit_config(target="running", config=load_xml(1, start=n // 2 + 1 + i)))
            smalls.append(t)
            log.take()
        peak = rss(pid)
        peak["VmHWM"] = max(peak["VmHWM"], earlier_peak)
        t_del, _ = timed(lambda: m.edit_config(target="running", config=f'<config xmlns="{BASE}"><customizations xmlns="{NS}" xmlns:nc="{BASE}" nc:operation="remove"/></config>'))
        split.append(log.split("delete all"))
        time.sleep(0.5)
        after = rss(pid)
        assert m.get_config("running").data_xml.count("<module>") == 0, label  # the delete did delete
    smalls.sort()
    print(f"{label:<10} N={n:>7}: load {t_load:.3f} s, get-config {t_get:.3f} s, small edit {t_small * 1000:.1f} ms, "
          f"delete-all {t_del:.3f} s; RSS idle {idle['VmRSS']} MB, peak {peak['VmHWM']} MB, after delete {after['VmRSS']} MB; "
          f"10 more small edits: min {smalls[0] * 1000:.1f} ms, median {smalls[5] * 1000:.1f} ms, max {smalls[-1] * 1000:.1f} ms", flush=True)
    for line in split:
        if line:
            print(line, flush=True)
    for line in read_lines:
        print(line, flush=True)


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_netconfd(n):
    d = pathlib.Path(tempfile.mkdtemp())
    mods = d / "modules"
    mods.mkdir()
    # Our model as NAME.yang; its imports come from yang/ietf (the revisions
    # it was written against; without them on the module path netconfd
    # 2.13 reports "Load module 'layer45-customization' failed (module not
    # found)"), then netconfd's own modules.
    for f in (ROOT / "yang").glob("layer45-customization@*.yang"):
        (mods / (f.name.split("@")[0] + ".yang")).write_text(f.read_text())  # yuma looks up NAME.yang
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "hostkey")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "k")], check=True)
    (d / "authorized_keys").write_text((d / "k.pub").read_text())
    (d / "startup-cfg.xml").write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<config xmlns="{BASE}"/>\n')
    port = free_port()
    sock = d / "ncxserver.sock"  # our own, not the shared /tmp/ncxserver.sock
    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/hostkey\nPidFile {d}/sshd.pid\n"
        f"AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        f"PermitRootLogin prohibit-password\nSubsystem netconf /usr/sbin/netconf-subsystem --ncxserver-sockname={port}@{sock}\n")
    os.makedirs("/run/sshd", exist_ok=True)
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")], stderr=open(d / "sshd.log", "w"))
    ncd = subprocess.Popen(["/usr/sbin/netconfd", f"--superuser={user}", f"--modpath={mods}:{ROOT / 'yang' / 'ietf'}:/usr/share/yuma/modules",
                            "--module=layer45-customization",
                            # An empty startup of our own instead of --no-startup: netconfd (no
                            # :startup with --target=running) saves running to the startup file
                            # after each edit, which would otherwise be ~/.yuma/startup-cfg.xml.
                            f"--startup={d / 'startup-cfg.xml'}",
                            # netconf-subsystem forwards the SSH server port (from SSH_CONNECTION);
                            # netconfd only admits the ports in --port (default 830): without this,
                            # agt_connect refuses the session ("access denied").
                            f"--port={port}", f"--ncxserver-sockname={sock}", "--target=running",
                            f"--log-level={os.environ.get('L45_NETCONFD_LOG', 'warn')}", f"--log={d}/netconfd.log"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.1)
        time.sleep(0.5)
        # timeout is also ncclient's rpc timeout: netconfd's 50k load took 589 s
        steps("netconfd", n, lambda: manager.connect(host="127.0.0.1", port=port, username=user, key_filename=str(d / "k"),
                                                     hostkey_verify=False, allow_agent=False, look_for_keys=False, timeout=3600), ncd.pid,
              ssh=("127.0.0.1", port, user, d / "k"))
    finally:
        for p in (ncd, sshd):
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def run(n, agent=AGENT, label="l45-agent"):
    d = pathlib.Path(tempfile.mkdtemp())
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "k")], check=True)
    # The agent's debug log carries per-rpc server timings (session.rs).
    log = d / "agent.log"
    env = dict(os.environ, NO_COLOR="1", RUST_LOG=os.environ.get("L45_BENCH_RUST_LOG", "info,l45_agent::session=debug,l45_agent::agent=debug"))
    p = subprocess.Popen([agent, "--listen", "127.0.0.1:0", "--state-dir", str(d / "s"), "--authorized-keys", f"admin:{d}/k.pub",
                          "--max-message-size", str(512 << 20)], stdout=subprocess.PIPE, stderr=open(log, "w"), text=True, env=env)
    line = p.stdout.readline()
    port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
    steps(label, n, lambda: manager.connect(host="127.0.0.1", port=port, username="admin", key_filename=str(d / "k"),
                                            hostkey_verify=False, allow_agent=False, look_for_keys=False, timeout=600), p.pid,
          ServerLog(log), ssh=("127.0.0.1", port, "admin", d / "k"))
    p.terminate()
    p.wait()


def main():
    for n in [int(a) for a in sys.argv[1:]] or [10000, 100000]:
        if os.environ.get("L45_AGENT_BASELINE"):
            run(n, os.environ["L45_AGENT_BASELINE"], "baseline")
        run(n)
        if os.environ.get("L45_BENCH_NETCONFD", "1") != "0":
            # netconfd's load time grows about quadratically with N (10k: 10-18 s,
            # 20k: ~86 s, 50k: 589 s on 2 cores; 72% of its CPU in
            # val_get_next_child, i.e. linear sibling scans), so 100k would take
            # most of an hour: above L45_BENCH_NETCONFD_MAX_N it is measured at
            # that N instead.
            cap = int(os.environ.get("L45_BENCH_NETCONFD_MAX_N", "20000"))
            if n > cap:
                print(f"netconfd   N={n:>7}: not measured (over L45_BENCH_NETCONFD_MAX_N={cap}); measuring N={cap} instead", flush=True)
            try:
                run_netconfd(min(n, cap))
            except Exception as e:  # report, keep the other figures
                print(f"netconfd   N={min(n, cap):>7}: failed: {e!r}", flush=True)


if __name__ == "__main__":
    main()
