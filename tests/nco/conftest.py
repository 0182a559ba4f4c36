"""Fixtures for the NCO tests: the real l45-nco CLI and service against real
agents (user-space tap devices from tests/tap/taplab.py, or many emulated
devices in one l45-agent process)."""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "tap"))
from taplab import AGENT, TapAgent, wait_for  # noqa: E402

NCO = os.environ.get("L45_NCO", str(ROOT / "target" / "release" / "l45-nco"))


class Nco:
    """Runs the l45-nco CLI on one CIB file."""

    def __init__(self, workdir):
        self.dir = pathlib.Path(workdir)
        self.cib = self.dir / "cib.sqlite"
        self.env = {**os.environ, "L45_CIB": str(self.cib)}
        self.service = None

    def run(self, *args, check=True, timeout=180):
        p = subprocess.run([NCO, *map(str, args)], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"l45-nco {' '.join(map(str, args))} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
        return p

    def json(self, *args, check=True):
        p = self.run("--json", *args, check=check)
        return json.loads(p.stdout) if p.stdout.strip() else None

    def add_tap_device(self, name, agent, role=None):
        args = ["devices", "add", name, "--address", f"127.0.0.1:{agent.port}", "--key", agent.key]
        if role:
            args += ["--role", role]
        self.run(*args)

    def serve(self, *extra):
        self.log = open(self.dir / "serve.log", "ab")
        self.service = subprocess.Popen([NCO, "serve", *map(str, extra)], env=self.env,
                                        stdout=self.log, stderr=subprocess.PIPE, text=True)
        line = self.service.stderr.readline()
        assert "serving" in line, f"nco serve did not start: {line!r}"
        return self.service

    def stop(self):
        if self.service and self.service.poll() is None:
            self.service.send_signal(signal.SIGTERM)
            try:
                self.service.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.service.kill()
                self.service.wait()


class Emulator:
    """N emulated devices in one l45-agent process (recording tap)."""

    def __init__(self, workdir, n, base_port=0, extra=(), key=None):
        self.dir = pathlib.Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = pathlib.Path(key) if key else self.dir / "nco_key"
        if not self.key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True)
        self.log = open(self.dir / "emulator.log", "ab")
        self.proc = subprocess.Popen(
            [AGENT, "--listen", f"127.0.0.1:{base_port}", "--state-dir", str(self.dir / "state"),
             "--authorized-keys", f"admin:{self.key}.pub", "--emulate", str(n), *extra],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.devices = {}
        for _ in range(n):
            line = self.proc.stdout.readline()
            assert "listening on" in line, f"emulator did not start: {line!r}"
            parts = line.split()
            self.devices[parts[-1]] = int(parts[3].rsplit(":", 1)[1])
            self.fingerprint = parts[5]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_port_block(n):
    """A base port with n consecutive free TCP ports after it, below the
    kernel's ephemeral range: the block is bound only later, and ports in
    that range are handed out meanwhile as source ports of outgoing
    connections (the NCO's own sessions took one once)."""
    import random
    try:
        low, high = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    ranges = [(r0, r1) for r0, r1 in ((10000, low - n), (high + 1, 65535 - n)) if r1 > r0]
    for _ in range(200):
        r0, r1 = random.choice(ranges)
        base = random.randint(r0, r1)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port block")


@pytest.fixture
def nco(tmp_path):
    n = Nco(tmp_path)
    yield n
    n.stop()


@pytest.fixture
def make_tap(tmp_path):
    made = []

    def make():
        a = TapAgent(tempfile.mkdtemp(dir=tmp_path))
        made.append(a)
        return a
    yield make
    for a in made:
        a.stop()


@pytest.fixture
def cleanup():
    things = []
    yield things
    for t in reversed(things):
        t.stop()
