#!/usr/bin/env python3
"""Soak: mixed real traffic through the user-space tap while modules are
rotated and revoked, then the books are checked.

    tools/soak.py [--seconds 600] [--round 30]

Traffic, all the time, each program under the tap:
- DNS: a dig loop against dnsmasq, a DNS customization on both ends;
- HTTP: a curl loop fetching a 4 MB file from nginx (sendfile on; Python's
  http.server where nginx is missing), a stream tag on both ends, every
  body checked against its SHA-256;
- Node.js `http` (where node is installed): the same from `res.end(buf)`;
- Python asyncio streams: a client reading a 4 MB stream to EOF.
Every round (--round seconds): the DNS customization is rotated as in the
dissertation's figure 5.3 (the new module deployed below the old one with
immediate attach, raised on the receiver, then on the sender, the old one
revoked), alternating between a front tag and compression; on the stream
ports a byte-neutral module (a rate limit of 0 ms) joins every live socket
(immediate attach) and is revoked the next round, so live chains change
under the transfers. A stream tag itself is not rotated on live
connections: a stream customization is decided when a connection starts.

The run fails on any corrupted or failed transfer, any unanswered DNS
query, any program that died or hung (every client has a deadline), or a
socket list of the agent that /proc contradicts at the end. Exit status 0
on success; the summary line says what ran."""
import argparse
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "tap"))
sys.path.insert(0, str(ROOT / "tools"))
from taplab import Dnsmasq, TapAgent, dig, free_port, module, stop_process  # noqa: E402
from compat_matrix import ASYNCIO_CLIENT, ASYNCIO_SERVER, NGINX_CONF, NODE_HTTP, TAG, make_file  # noqa: E402

FRONT = "<dns-tag><tag>XTAGXdig</tag></dns-tag>"
COMP = "<dns-compression><recursion-desired>true</recursion-desired></dns-compression>"
STREAM = f"<stream-tag><interval>1000</interval><tag>{TAG.decode()}</tag></stream-tag>"
NEUTRAL = "<rate-limit><delay>0</delay></rate-limit>"
SIZE = 4 << 20


class Loop(threading.Thread):
    """Runs `once()` (returns None when fine, else what went wrong) until
    stopped; counts runs and keeps failures."""

    def __init__(self, name, once):
        super().__init__(daemon=True, name=name)
        self.once = once
        self.ok = 0
        self.failures = []
        self.stopping = threading.Event()
        self.progress = threading.Condition()

    def run(self):
        while not self.stopping.is_set():
            try:
                err = self.once()
            except Exception as e:  # a broken run is a failure of this loop, not of the soak script
                err = f"{type(e).__name__}: {e}"
            with self.progress:
                if err:
                    self.failures.append(err)
                else:
                    self.ok += 1
                self.progress.notify_all()

    def more(self, n, timeout=60):
        """Waits until `n` more runs succeeded (traffic under the current
        configuration)."""
        with self.progress:
            target = self.ok + n
            if not self.progress.wait_for(lambda: self.ok >= target or self.stopping.is_set(), timeout):
                raise AssertionError(f"{self.name}: no {n} good runs in {timeout} s")


def fetch(env, url, digest, deadline=120):
    try:
        r = subprocess.run(["curl", "-sS", "--max-time", str(deadline), url], env=env,
                           capture_output=True, timeout=deadline + 10)
    except subprocess.TimeoutExpired:
        return f"curl {url} hung"
    if r.returncode != 0:
        return f"curl {url} exit {r.returncode}: {r.stderr.decode(errors='replace').strip()[:100]}"
    if hashlib.sha256(r.stdout).hexdigest() != digest:
        return f"curl {url}: corrupted body ({len(r.stdout)} B)"
    return None


class Soak:
    def __init__(self, work):
        self.work = pathlib.Path(work)
        self.agent = TapAgent(self.work / "agent")
        self.env = self.agent.env()
        self.servers = []   # (name, Popen)
        self.loops = []
        self.programs = []
        self.next_id = 100
        www = self.work / "www"
        www.mkdir()
        www.chmod(0o755)
        self.digest = make_file(www / "file", SIZE)
        self.www = www

    def start(self, name, args, ready_line=False, **kw):
        p = subprocess.Popen(args, env=self.env, stdout=subprocess.PIPE if ready_line else subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, text=True, **kw)
        self.servers.append((name, p))
        if ready_line:
            line = p.stdout.readline()
            assert "ready" in line, f"{name} did not start: {line!r}"
        return p

    def wait_port(self, port, p):
        import socket
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert p.poll() is None, "server exited"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"port {port} never opened")

    def stream_modules(self, port):
        a, b = self.next_id, self.next_id + 1
        self.next_id += 2
        self.agent.edit(module(a, "stream-tag", 10, f"<protocol>tcp</protocol><source-port>{port}</source-port>", STREAM),
                        module(b, "stream-tag", 10, f"<protocol>tcp</protocol><destination-port>{port}</destination-port>",
                               STREAM))
        return port

    def setup(self):
        # DNS
        self.dns = Dnsmasq(self.work, env=self.env)
        self.servers.append(("dnsmasq", self.dns.proc))
        self.dns_ids = (1, 2)   # (at the server, to the server)
        self.dns_kind = ("dns-front-tag", FRONT)
        self.agent.edit(*self.dns_modules(self.dns_ids, self.dns_kind, 10))
        self.programs.append("dnsmasq+dig")
        self.dns_loop = Loop("dns", lambda: None if dig(self.dns.port, env=self.env, timeout=2)[0]
                             else "a DNS query went unanswered")
        self.loops.append(self.dns_loop)
        # HTTP from nginx, or from Python where nginx is missing
        self.stream_ports = []
        if shutil.which("nginx") or os.path.exists("/usr/sbin/nginx"):
            d = self.work / "nginx"
            d.mkdir()
            port = free_port()
            (d / "nginx.conf").write_text(NGINX_CONF.format(d=d, port=port, sendfile="on", www=self.www, h2=""))
            p = self.start("nginx", ["nginx", "-c", str(d / "nginx.conf"), "-p", str(d)])
            self.programs.append("nginx(sendfile)+curl")
        else:
            port = free_port()
            p = self.start("http.server", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                                           "--directory", str(self.www), str(port)])
            self.programs.append("http.server+curl")
        self.wait_port(port, p)
        self.stream_ports.append(self.stream_modules(port))
        url = f"http://127.0.0.1:{port}/file"
        self.loops.append(Loop("http", lambda: fetch(self.env, url, self.digest)))
        # Node.js
        if shutil.which("node"):
            nport = free_port()
            self.start("node", ["node", "-e", NODE_HTTP, str(nport), str(self.www / "file")], ready_line=True)
            self.stream_ports.append(self.stream_modules(nport))
            nurl = f"http://127.0.0.1:{nport}/"
            self.loops.append(Loop("node", lambda: fetch(self.env, nurl, self.digest)))
            self.programs.append("node+curl")
        # asyncio
        aport = free_port()
        self.start("asyncio", [sys.executable, "-c", ASYNCIO_SERVER, str(aport), str(self.www / "file"), "streams"],
                   ready_line=True)
        self.stream_ports.append(self.stream_modules(aport))
        out = self.work / "asyncio.out"

        def asyncio_once():
            try:
                r = subprocess.run([sys.executable, "-c", ASYNCIO_CLIENT, str(aport), str(out)], env=self.env,
                                   capture_output=True, timeout=120)
            except subprocess.TimeoutExpired:
                return "asyncio client hung"
            if r.returncode != 0:
                return f"asyncio client exit {r.returncode}"
            h = hashlib.sha256(out.read_bytes()).hexdigest()
            return None if h == self.digest else "asyncio: corrupted stream"
        self.loops.append(Loop("asyncio", asyncio_once))
        self.programs.append("asyncio")

    def dns_modules(self, ids, kind, priority, extra=""):
        at, to = ids
        name, params = kind
        return (module(at, name, priority, f"<protocol>udp</protocol><source-port>{self.dns.port}</source-port>",
                       params, extra=extra),
                module(to, name, priority, f"<protocol>udp</protocol><destination-port>{self.dns.port}</destination-port>",
                       params, extra=extra))

    def rotate_dns(self):
        """Figure 5.3 on one host: new below old (immediate), receiver raised,
        sender raised, old revoked."""
        old = self.dns_ids
        new = (self.next_id, self.next_id + 1)
        self.next_id += 2
        kind = ("dns-compression", COMP) if self.dns_kind[0] == "dns-front-tag" else ("dns-front-tag", FRONT)
        # Queries flow under each step before the next.
        self.agent.edit(*self.dns_modules(new, kind, 20, extra="<attach>immediate</attach>"))
        self.dns_loop.more(3)
        self.agent.set_leaf(new[0], "priority", "5")
        self.dns_loop.more(3)
        self.agent.set_leaf(new[1], "priority", "5")
        self.dns_loop.more(3)
        self.agent.revoke(old[0])
        self.agent.revoke(old[1])
        # Back to the usual priority for the next round.
        self.agent.set_leaf(new[0], "priority", "10")
        self.agent.set_leaf(new[1], "priority", "10")
        self.dns_ids, self.dns_kind = new, kind

    def churn_streams(self, neutral):
        """Revokes last round's byte-neutral modules and attaches new ones to
        every live stream socket."""
        for mid in neutral:
            self.agent.revoke(mid)
        added = []
        for port in self.stream_ports:
            for rule in (f"<source-port>{port}</source-port>", f"<destination-port>{port}</destination-port>"):
                added.append(module(self.next_id, "rate-limit", 50, f"<protocol>tcp</protocol>{rule}", NEUTRAL,
                                    extra="<attach>immediate</attach>"))
                self.next_id += 1
        self.agent.edit(*added)
        return list(range(self.next_id - len(added), self.next_id))

    def socket_list_matches_proc(self):
        """Every socket the agent lists is a socket of that pid in /proc."""
        from lxml import etree
        data = self.agent.nc.get(filter=("subtree", '<customizations xmlns="urn:layer45:params:xml:ns:yang:'
                                         'layer45-customization"><socket/></customizations>')).data_ele
        bad = []
        n = {"l": "urn:layer45:params:xml:ns:yang:layer45-customization"}
        listed = data.findall(".//l:socket", n)
        for s in listed:
            sid = int(s.findtext("l:id", namespaces=n))
            pid, fd = sid >> 32, sid & 0xffffffff
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                target = ""
            if not target.startswith("socket:"):
                bad.append((pid, fd, target, etree.tostring(s)[:200]))
        return len(listed), bad

    def run(self, seconds, round_seconds):
        self.setup()
        for loop in self.loops:
            loop.start()
        rounds, neutral = 0, []
        start = time.monotonic()
        try:
            while time.monotonic() - start < seconds:
                time.sleep(min(round_seconds, max(0.0, seconds - (time.monotonic() - start))))
                if time.monotonic() - start >= seconds:
                    break
                self.rotate_dns()
                neutral = self.churn_streams(neutral)
                rounds += 1
                for name, p in self.servers:
                    if p.poll() is not None:
                        raise AssertionError(f"{name} died (exit {p.returncode})")
        finally:
            for loop in self.loops:
                loop.stopping.set()
            for loop in self.loops:
                loop.join(timeout=180)
        hung = [loop.name for loop in self.loops if loop.is_alive()]
        dead = [name for name, p in self.servers if p.poll() is not None]
        # Clients are gone: every listed socket must still be a socket.
        listed, bad = self.socket_list_matches_proc()
        failures = {loop.name: loop.failures for loop in self.loops if loop.failures}
        counts = {loop.name: loop.ok for loop in self.loops}
        ok = not failures and not hung and not dead and not bad and rounds > 0
        print(f"soak: {time.monotonic() - start:.0f} s, {rounds} rounds, programs {', '.join(self.programs)}; "
              f"good runs {counts}; failures {sum(len(f) for f in failures.values())}; hung {hung}; dead {dead}; "
              f"{listed} sockets listed at the end, {len(bad)} not in /proc -> {'OK' if ok else 'FAILED'}")
        for name, f in failures.items():
            print(f"  {name}: {len(f)} failures, first: {f[0]}")
        for b in bad:
            print(f"  listed but not a socket in /proc: {b}")
        return ok

    def stop(self):
        for _, p in self.servers:
            stop_process(p)
        self.agent.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--round", type=float, default=30)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="l45-soak-")
    soak = Soak(work)
    try:
        ok = soak.run(args.seconds, args.round)
    finally:
        soak.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
