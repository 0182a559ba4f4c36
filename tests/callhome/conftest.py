"""Fixtures for the call-home tests (RFC 8071): the real l45-nco serve taking
calls from real l45-agent processes, some in a network namespace whose
nftables let only connections the device opens through."""
import json
import os
import pathlib
import secrets
import signal
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "tap"))
from taplab import AGENT, wait_for  # noqa: E402

NCO = os.environ.get("L45_NCO", str(ROOT / "target" / "release" / "l45-nco"))


def keygen(path):
    path = pathlib.Path(path)
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


class Nco:
    """The l45-nco CLI on one CIB, and its serve with call home."""

    def __init__(self, workdir):
        self.dir = pathlib.Path(workdir)
        self.cib = self.dir / "cib.sqlite"
        self.key = keygen(self.dir / "nco_key")
        self.env = {**os.environ, "L45_CIB": str(self.cib)}
        self.service = None
        self.log_path = self.dir / "serve.log"

    def run(self, *args, check=True, timeout=180):
        p = subprocess.run([NCO, *map(str, args)], env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"l45-nco {' '.join(map(str, args))} exited {p.returncode}:\n"
                                 f"{p.stdout}\n{p.stderr}")
        return p

    def json(self, *args, check=True):
        p = self.run("--json", *args, check=check)
        return json.loads(p.stdout) if p.stdout.strip() else None

    def serve(self, listen="127.0.0.1:0", *extra):
        """Starts serve; returns the call-home address it listens on."""
        self.log = open(self.log_path, "ab")
        self.service = subprocess.Popen(
            [NCO, "serve", "--state-req-window", "2", "--call-home-listen", listen,
             "--call-home-key", self.key, "--call-home-keepalive", "1", *map(str, extra)],
            env={**self.env, "L45_LOG": "info,russh=warn", "NO_COLOR": "1"},
            stdout=self.log, stderr=subprocess.PIPE, text=True)
        for _ in range(50):
            line = self.service.stderr.readline()
            if "serving" in line or not line:
                break
        assert "serving" in line and "call home on" in line, f"serve did not start: {line!r}"
        # The rest of stderr (the log) goes to the file, so serve never
        # blocks on a full pipe.
        self.drain = subprocess.Popen(["cat"], stdin=self.service.stderr, stdout=self.log)
        return line.rsplit("call home on ", 1)[1].rstrip(")\n")

    def log_text(self):
        return self.log_path.read_text(errors="replace")

    def stop(self):
        if self.service and self.service.poll() is None:
            self.service.send_signal(signal.SIGTERM)
            try:
                self.service.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.service.kill()
                self.service.wait()
        if self.service:
            self.drain.wait(timeout=10)


class Agent:
    """One l45-agent (recording tap) that calls home; optionally inside a
    network namespace (`netns`)."""

    def __init__(self, workdir, nco_key, call_home, listen="127.0.0.1:0", token=None,
                 netns=None, machine_id=None, extra=()):
        self.dir = pathlib.Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.args = [AGENT, "--listen", listen, "--state-dir", str(self.dir / "state"),
                     "--authorized-keys", f"admin:{nco_key}.pub",
                     "--call-home-max-backoff", "2", "--ssh-keepalive", "1", *extra]
        if call_home:
            self.args += ["--call-home", call_home]
        if token:
            tf = self.dir / "token"
            fd = os.open(tf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(fd, (token + "\n").encode())
            os.close(fd)
            self.args += ["--enrollment-token-file", str(tf)]
        self.netns = netns
        self.machine_id = None
        if machine_id:
            # Another machine: its own /etc/machine-id in a mount namespace.
            self.machine_id = self.dir / "machine-id"
            self.machine_id.write_text(machine_id + "\n")
        self.proc = None
        self.start()

    def start(self):
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        if self.machine_id:
            prefix += ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/machine-id && exec "$@"',
                       str(self.machine_id)]
        self.log = open(self.dir / "agent.log", "ab")
        self.proc = subprocess.Popen(prefix + self.args, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True)
        line = self.proc.stdout.readline()
        assert "listening on" in line, f"agent did not start: {line!r}"
        self.fingerprint = line.split()[5]
        self.addr = line.split()[3]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Netns:
    """A network namespace joined to this one by a veth pair, whose
    nftables accept only what belongs to connections the namespace opened:
    the device behind a NAT or firewall of the issue."""

    def __init__(self):
        tag = secrets.token_hex(3)
        self.name = f"l45ch-{tag}"
        self.host_if, self.dev_if = f"l45h{tag}", f"l45d{tag}"
        octet = int(tag[:2], 16) % 200 + 20
        self.host_ip, self.dev_ip = f"10.245.{octet}.1", f"10.245.{octet}.2"
        sh = lambda *a: subprocess.run(a, check=True)  # noqa: E731
        sh("ip", "netns", "add", self.name)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.dev_if)
        sh("ip", "link", "set", self.dev_if, "netns", self.name)
        sh("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        self.ns("ip", "addr", "add", f"{self.dev_ip}/24", "dev", self.dev_if)
        self.ns("ip", "link", "set", self.dev_if, "up")
        self.ns("ip", "link", "set", "lo", "up")
        rules = """
table inet l45_device {
  chain input {
    type filter hook input priority 0; policy drop;
    iif lo accept
    ct state established,related accept
  }
}
"""
        subprocess.run(["ip", "netns", "exec", self.name, "nft", "-f", "-"], input=rules,
                       text=True, check=True)

    def ns(self, *args, check=True):
        return subprocess.run(["ip", "netns", "exec", self.name, *args], check=check,
                              capture_output=True, text=True)

    def cut(self):
        self.ns("ip", "link", "set", self.dev_if, "down")

    def restore(self):
        self.ns("ip", "link", "set", self.dev_if, "up")

    def stop(self):
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


def can_use_netns():
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables)"
    for tool in ("ip", "nft"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            return f"needs {tool} (tools/install-deps.sh)"
    return None


@pytest.fixture
def nco(tmp_path):
    n = Nco(tmp_path)
    yield n
    n.stop()


@pytest.fixture
def cleanup():
    things = []
    yield things
    for t in reversed(things):
        t.stop()


def wait_until(cond, timeout=20.0, what="condition"):
    return wait_for(cond, timeout=timeout, what=what)


def device(nco, name):
    for d in nco.json("devices", "list"):
        if d["name"] == name:
            return d
    return None


def pending(nco):
    return nco.json("devices", "pending")


def alerts(nco, kind):
    return [a for a in nco.json("alerts") if a["kind"] == kind]

