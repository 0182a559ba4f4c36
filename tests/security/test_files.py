"""Item 4 of the security issue: the agent's state directory is 0700 and
every file in it 0600 (created so, not chmod'ed later); the agent refuses a
state directory others may write or that another user owns; the CIB and
SQLite's -wal/-shm beside it are 0600. Real agent, real NCO, and the
unprivileged user `nobody` as the other local user."""
import importlib.util
import os
import pathlib
import shutil
import sqlite3
import stat
import subprocess
import tempfile

import pytest

# The fixtures' module, by path: another suite's conftest may hold the
# name `conftest` when suites run together.
_spec = importlib.util.spec_from_file_location("security_fixtures", pathlib.Path(__file__).with_name("conftest.py"))
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
AGENT = _fixtures.AGENT
BASE = _fixtures.BASE
NS = _fixtures.NS
ROOT = _fixtures.ROOT
Agent = _fixtures.Agent
as_nobody = _fixtures.as_nobody

NCO = os.environ.get("L45_NCO", str(ROOT / "target" / "release" / "l45-nco"))
KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


def modules_config(ids, key=None):
    sec = f"<security><key>{key}</key></security>" if key else ""
    mods = "".join(f"<module><id>{i}</id><name>m{i}</name><kind>l45:dns-front-tag</kind>{sec}</module>" for i in ids)
    return f'<config xmlns="{BASE}"><customizations xmlns="{NS}" xmlns:l45="{NS}">{mods}</customizations></config>'


@pytest.fixture
def open_dir():
    """A working directory every user may enter, so that only the modes the
    agent gives its own directory and files keep `nobody` out."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="l45-files-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def open_agent(open_dir):
    a = Agent(open_dir).start()
    yield a
    a.stop()


def mode(p):
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_state_dir_is_0700_and_every_file_in_it_0600(open_agent):
    a = open_agent
    with a.connect() as m:
        # A snapshot (first load), then a journal record (a small change on
        # a larger store), startup, and a pending confirmed commit.
        m.edit_config(target="running", config=modules_config(range(1, 9), KEY))
        m.edit_config(target="running", config=modules_config([9], KEY))
        m.copy_config(source="running", target="startup")
        m.edit_config(target="candidate", config=modules_config([10]))
        m.commit(confirmed=True, timeout="600")
        names = sorted(p.name for p in a.state.iterdir())
        for want in ("running.xml", "running.journal", "startup.xml", "confirmed-commit",
                     "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "ssh_host_rsa_key",
                     "ssh_host_rsa_key.pub"):
            assert want in names, names
        assert mode(a.state) == 0o700
        wrong = {n: oct(mode(a.state / n)) for n in names if mode(a.state / n) != 0o600}
        assert not wrong, wrong
        m.commit()
    assert not (a.state / "confirmed-commit").exists()


def test_nobody_cannot_read_the_datastores(open_agent):
    a = open_agent
    with a.connect() as m:
        m.edit_config(target="running", config=modules_config([1], KEY))
    running = a.state / "running.xml"
    assert KEY in running.read_text()
    for f in (running, a.state / "startup.xml", a.state / "ssh_host_ed25519_key"):
        r = as_nobody(["cat", str(f)])
        assert r.returncode != 0 and "Permission denied" in r.stderr, (f, r)
    r = as_nobody(["ls", str(a.state)])
    assert r.returncode != 0, r


def refused_start(workdir):
    """Starts the agent on `workdir`/state, which must refuse; returns its
    log."""
    a = Agent(workdir)
    with pytest.raises(AssertionError):
        a.start()
    assert a.proc.wait(timeout=30) != 0
    a.log.close()
    return (pathlib.Path(workdir) / "agent.log").read_text()


@pytest.mark.parametrize("dir_mode", [0o777, 0o770, 0o702])
def test_agent_refuses_a_state_dir_others_may_write(tmp_path, dir_mode):
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, dir_mode)
    log = refused_start(tmp_path)
    assert str(state) in log and f"{dir_mode:04o}" in log, log
    # Nothing was written into it.
    assert list(state.iterdir()) == []


def test_agent_refuses_a_state_dir_of_another_user(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, 65534, 65534)
    log = refused_start(tmp_path)
    assert str(state) in log and "owned by uid 65534" in log, log


def test_agent_creates_missing_parents_0700(tmp_path):
    state = tmp_path / "a" / "b" / "state"
    a = Agent(tmp_path)
    a.state = state
    a.start()
    try:
        assert mode(tmp_path / "a") == 0o700
        assert mode(tmp_path / "a" / "b") == 0o700
        assert mode(state) == 0o700
    finally:
        a.stop()


def nco(cib, *args, check=True):
    p = subprocess.run([NCO, *args], env={**os.environ, "L45_CIB": str(cib)},
                       capture_output=True, text=True, timeout=60)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_cib_and_its_wal_and_shm_are_0600(open_dir):
    cib = open_dir / "cib.sqlite"
    key = open_dir / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    nco(cib, "devices", "add", "d1", "--address", "127.0.0.1:9", "--key", str(key))
    assert mode(cib) == 0o600
    # While a connection holds the database open, SQLite keeps its -wal and
    # -shm files; they take the database file's mode.
    held = sqlite3.connect(str(cib))
    try:
        held.execute("BEGIN")
        held.execute("SELECT count(*) FROM device").fetchall()
        nco(cib, "devices", "add", "d2", "--address", "127.0.0.1:10", "--key", str(key))
        for suffix in ("-wal", "-shm"):
            f = pathlib.Path(f"{cib}{suffix}")
            assert f.exists(), suffix
            assert mode(f) == 0o600, (suffix, oct(mode(f)))
    finally:
        held.close()
    r = as_nobody(["cat", str(cib)])
    assert r.returncode != 0 and "Permission denied" in r.stderr, r


def test_nco_refuses_a_cib_others_may_read(open_dir):
    cib = open_dir / "cib.sqlite"
    nco(cib, "devices", "list")
    os.chmod(cib, 0o644)
    p = nco(cib, "devices", "list", check=False)
    assert p.returncode != 0
    assert "0644" in p.stderr and str(cib) in p.stderr, p.stderr
