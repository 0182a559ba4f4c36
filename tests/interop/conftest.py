"""Fixtures: a real l45-agent on loopback, real clients against it."""
import os
import pathlib
import signal
import socket
import subprocess
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
AGENT = os.environ.get("L45_AGENT", str(ROOT / "target" / "release" / "l45-agent"))
NS = "urn:layer45:params:xml:ns:yang:layer45-customization"
BASE = "urn:ietf:params:xml:ns:netconf:base:1.0"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Agent:
    def __init__(self, workdir, extra=()):
        self.dir = pathlib.Path(workdir)
        self.state = self.dir / "state"
        self.key = self.dir / "client_key"
        self.operator_key = self.dir / "operator_key"
        for k in (self.key, self.operator_key):
            if not k.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(k)], check=True)
        (self.dir / "pw").write_text("secret\n")
        self.password = "secret"
        self.extra = list(extra)
        self.port = free_port()
        self.proc = None

    def start(self):
        args = [AGENT, "--listen", f"127.0.0.1:{self.port}", "--state-dir", str(self.state),
                "--authorized-keys", f"admin:{self.key}.pub",
                "--authorized-keys", f"operator:{self.operator_key}.pub",
                "--user", "admin", "--password-file", str(self.dir / "pw"), *self.extra]
        self.log = open(self.dir / "agent.log", "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, text=True)
        # The agent prints one line once it listens: wait for it (an event,
        # not a sleep).
        line = self.proc.stdout.readline()
        assert "listening on" in line, f"agent did not start: {line!r}"
        self.banner = line
        return self

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def connect(self, user="admin", key=None):
        from ncclient import manager
        return manager.connect(host="127.0.0.1", port=self.port, username=user,
                               key_filename=str(key or (self.key if user == "admin" else self.operator_key)),
                               hostkey_verify=False, allow_agent=False, look_for_keys=False, timeout=60)


@pytest.fixture
def agent(tmp_path):
    a = Agent(tmp_path).start()
    yield a
    a.stop()


@pytest.fixture
def make_agent(tmp_path):
    made = []

    def make(*extra):
        d = tempfile.mkdtemp(dir=tmp_path)
        a = Agent(d, extra).start()
        made.append(a)
        return a
    yield make
    for a in made:
        a.stop()


def module_xml(mid, name=None, kind="dns-front-tag", priority=None, op=None):
    attr = f' xmlns:nc="{BASE}" nc:operation="{op}"' if op else ""
    prio = f"<priority>{priority}</priority>" if priority is not None else ""
    return (f'<config xmlns="{BASE}"><customizations xmlns="{NS}" xmlns:l45="{NS}">'
            f'<module{attr}><id>{mid}</id><name>{name or f"m{mid}"}</name><kind>l45:{kind}</kind>{prio}</module>'
            f"</customizations></config>")
