"""The agent as a service: sd_notify readiness, SIGHUP reloads the
authorized keys without dropping sessions, logs to the journal."""
import os
import pathlib
import signal
import socket
import subprocess

import pytest

from conftest import AGENT


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return (pathlib.Path(f"{path}.pub")).read_text()


class ServiceAgent:
    """An agent started as systemd would: NOTIFY_SOCKET bound by the test,
    which reads the agent's notifications (the events it waits for)."""

    def __init__(self, tmp, keys_file, extra=(), env=None):
        self.tmp = pathlib.Path(tmp)
        self.port = free_port()
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify_path = self.tmp / "notify.sock"
        self.notify.bind(str(self.notify_path))
        self.notify.settimeout(30)
        self.log_path = self.tmp / "agent.log"
        self.log = open(self.log_path, "ab")
        full_env = dict(os.environ, NOTIFY_SOCKET=str(self.notify_path), **(env or {}))
        self.proc = subprocess.Popen(
            [AGENT, "--listen", f"127.0.0.1:{self.port}", "--state-dir", str(self.tmp / "state"),
             "--authorized-keys", f"admin:{keys_file}", *extra],
            stdout=subprocess.DEVNULL, stderr=self.log, env=full_env)

    def next_notification(self):
        return self.notify.recv(4096).decode()

    def sighup_and_wait(self):
        self.proc.send_signal(signal.SIGHUP)
        assert self.next_notification() == "RELOADING=1"
        assert self.next_notification().startswith("READY=1")

    def connect(self, key):
        from ncclient import manager
        return manager.connect(host="127.0.0.1", port=self.port, username="admin",
                               key_filename=str(key), hostkey_verify=False, allow_agent=False,
                               look_for_keys=False, timeout=30)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.notify.close()
        self.log.close()


@pytest.fixture
def keys(tmp_path):
    a, b = tmp_path / "key_a", tmp_path / "key_b"
    return a, keygen(a), b, keygen(b)


@pytest.fixture
def service_agent(tmp_path, keys):
    made = []

    def make(keys_text, **kw):
        f = tmp_path / "authorized_keys"
        f.write_text(keys_text)
        agent = ServiceAgent(tmp_path, f, **kw)
        made.append(agent)
        return agent, f

    yield make
    for a in made:
        a.stop()


def test_ready_is_sent_once_listening(service_agent, keys):
    a_key, a_pub, _, _ = keys
    agent, _ = service_agent(a_pub)
    msg = agent.next_notification()
    assert msg.startswith("READY=1"), msg
    # Ready means listening: a NETCONF session works at once.
    with agent.connect(a_key) as m:
        assert "<data" in m.get_config("running").xml


def login_refused(agent, key):
    from ncclient.transport.errors import AuthenticationError
    try:
        agent.connect(key).close_session()
    except AuthenticationError:
        return True
    return False


def test_sighup_reloads_keys_and_keeps_sessions(service_agent, keys):
    a_key, a_pub, b_key, b_pub = keys
    agent, keys_file = service_agent(a_pub)
    assert agent.next_notification().startswith("READY=1")
    session_a = agent.connect(a_key)
    assert login_refused(agent, b_key)

    keys_file.write_text(a_pub + b_pub)
    agent.sighup_and_wait()
    with agent.connect(b_key) as m:
        assert "<data" in m.get_config("running").xml
    assert "<data" in session_a.get_config("running").xml

    keys_file.write_text(b_pub)
    agent.sighup_and_wait()
    assert login_refused(agent, a_key)
    # The session A opened before its key was removed goes on.
    assert "<data" in session_a.get_config("running").xml
    session_a.close_session()


def test_reload_that_fails_keeps_the_keys(service_agent, keys):
    a_key, a_pub, b_key, b_pub = keys
    agent, keys_file = service_agent(a_pub)
    assert agent.next_notification().startswith("READY=1")
    keys_file.write_text(b_pub + "ssh-ed25519 not-base64!!\n")
    agent.sighup_and_wait()
    assert "reload failed" in agent.log_path.read_text()
    with agent.connect(a_key) as m:
        assert "<data" in m.get_config("running").xml
    assert login_refused(agent, b_key)
    assert agent.proc.poll() is None


JOURNAL = pathlib.Path("/run/systemd/journal/socket")


@pytest.fixture
def fake_journal():
    """A datagram socket where journald's would be (this machine runs no
    journald): the agent's journal records arrive there."""
    if JOURNAL.exists():
        pytest.skip("a journald runs here; this test needs its socket path free")
    created_dir = not JOURNAL.parent.exists()
    JOURNAL.parent.mkdir(parents=True, exist_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(JOURNAL))
    s.settimeout(30)
    try:
        yield s
    finally:
        s.close()
        JOURNAL.unlink()
        if created_dir:
            JOURNAL.parent.rmdir()


def parse_journal(rec):
    """journald's native protocol: `KEY=VALUE\n`, or `KEY\n`, a 64-bit
    little-endian length, the value and `\n`."""
    fields, i = {}, 0
    while i < len(rec):
        nl = rec.index(b"\n", i)
        line = rec[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            i = nl + 1
        else:
            n = int.from_bytes(rec[nl + 1:nl + 9], "little")
            k, v = line, rec[nl + 9:nl + 9 + n]
            i = nl + 9 + n + 1
        fields[k.decode()] = v.decode()
    return fields


def journal_until(sock, message):
    while True:
        fields = parse_journal(sock.recv(65536))
        if fields.get("MESSAGE") == message:
            return fields


@pytest.mark.parametrize("how", ["flag", "journal-stream"])
def test_logs_go_to_the_journal_with_fields(service_agent, keys, fake_journal, tmp_path, how):
    a_key, a_pub, _, _ = keys
    if how == "flag":
        agent, _ = service_agent(a_pub, extra=["--log-format", "journal"])
    else:
        # What systemd does: JOURNAL_STREAM names stderr's device and inode.
        stderr_file = tmp_path / "agent.log"
        stderr_file.touch()
        st = os.stat(stderr_file)
        agent, _ = service_agent(a_pub, env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert agent.next_notification().startswith("READY=1")
    with agent.connect(a_key):
        pass
    rec = journal_until(fake_journal, "authenticated")
    assert rec["SYSLOG_IDENTIFIER"] == "l45-agent"
    assert rec["L45_USER"] == "admin" and rec["L45_METHOD"] == "publickey"
    assert "127.0.0.1" in rec["L45_PEER"]
    assert rec["PRIORITY"] == "6"  # info
    # Nothing went to stderr as text.
    assert b"authenticated" not in agent.log_path.read_bytes()


def test_text_when_stderr_is_not_the_journal(service_agent, keys, fake_journal):
    a_key, a_pub, _, _ = keys
    # JOURNAL_STREAM inherited but naming another file: text on stderr.
    agent, _ = service_agent(a_pub, env={"JOURNAL_STREAM": "1:1"})
    assert agent.next_notification().startswith("READY=1")
    with agent.connect(a_key):
        pass
    agent.stop()
    assert "authenticated" in agent.log_path.read_text()
