"""Items 6 and 7 of the security issue: crash safety of running's snapshot
and journal, and a confirmed commit that survives a kill -9.

The agent aborts at a named step of writing its state when started with
`L45_FAULT_AT=<step>:<n>` (the n-th arrival at that step; see
netconf-server/agent/src/datastore/fault.rs). Each test crashes it there,
restarts it, and checks that running is exactly the state before the
interrupted change or exactly the state after it."""
import importlib.util
import os
import pathlib
import resource
import time

import pytest

# The fixtures' module, by path: another suite's conftest may hold the
# name `conftest` when suites run together.
_spec = importlib.util.spec_from_file_location("security_fixtures", pathlib.Path(__file__).with_name("conftest.py"))
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
BASE = _fixtures.BASE
NS = _fixtures.NS
Agent = _fixtures.Agent

NC_NS = f'xmlns:nc="{BASE}"'


def config(modules):
    body = "".join(modules)
    return f'<config xmlns="{BASE}"><customizations xmlns="{NS}" xmlns:l45="{NS}" {NC_NS}>{body}</customizations></config>'


def module(i):
    return f"<module><id>{i}</id><name>m{i}</name><kind>l45:dns-front-tag</kind></module>"


def delete(i):
    return f'<module nc:operation="delete"><id>{i}</id></module>'


def running(m):
    return m.get_config(source="running").data_xml


@pytest.fixture(autouse=True)
def no_core_files():
    """The agent is made to abort(): no core file for it."""
    old = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, old[1]))
    yield
    resource.setrlimit(resource.RLIMIT_CORE, old)


def start(workdir, fault=None):
    """An agent on `workdir`, crashing at `fault` when given."""
    env = os.environ.pop("L45_FAULT_AT", None)
    if fault:
        os.environ["L45_FAULT_AT"] = fault
    try:
        return Agent(workdir).start()
    finally:
        os.environ.pop("L45_FAULT_AT", None)
        if env is not None:
            os.environ["L45_FAULT_AT"] = env


# The compactions of one run: 1 at start-up, 2 the load of 40 modules,
# 3 the large edit under test. Appends: 1 add 41, 2 delete 1, 3 add 42.
STATE_A = ([module(i) for i in range(1, 41)], [module(41)], [delete(1)])
# Deletes what a replayed journal record would bring back (41).
LARGE = [delete(i) for i in range(2, 22)] + [delete(41)]
SMALL = [module(42)]


def reach_a(m):
    for edit in STATE_A:
        m.edit_config(target="running", config=config(edit))
    return running(m)


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    """Running after state A and after each change under test, from an
    agent that does not crash."""
    a = start(tmp_path_factory.mktemp("reference"))
    try:
        with a.connect() as m:
            state_a = reach_a(m)
            m.edit_config(target="running", config=config(SMALL))
            after_small = running(m)
            m.edit_config(target="running", config=config([delete(42)]))
            assert running(m) == state_a
            m.edit_config(target="running", config=config(LARGE))
            after_large = running(m)
    finally:
        a.stop()
    ids = lambda xml: sorted(int(x.split("</id>")[0]) for x in xml.split("<id>")[1:])
    assert ids(after_large) == list(range(22, 41))
    return {"A": state_a, "small": after_small, "large": after_large}


def crash_during(workdir, fault, change):
    a = start(workdir, fault)
    try:
        m = a.connect()
        before = reach_a(m)
        with pytest.raises(Exception):
            # The agent dies before it replies (so the session is not
            # closed either).
            m.edit_config(target="running", config=config(change))
    except BaseException:
        a.stop()
        raise
    assert a.proc.wait(timeout=30) == -6, "the agent did not abort at the fault point"
    a.log.close()
    b = Agent(workdir).start()
    try:
        with b.connect() as m:
            return before, running(m)
    finally:
        b.stop()


@pytest.mark.parametrize("step,after", [
    ("snapshot-written", False),
    ("snapshot-renamed", True),
    ("snapshot-synced", True),
    ("journal-removed", True),
])
def test_crash_in_compaction_finds_before_or_after(tmp_path, expected, step, after):
    before, found = crash_during(tmp_path, f"{step}:3", LARGE)
    assert before == expected["A"]
    # A process crash loses nothing the kernel already has: a step after
    # the rename finds the new snapshot.
    assert found == (expected["large"] if after else expected["A"])


@pytest.mark.parametrize("step,after", [("append-partial", False), ("append-synced", True)])
def test_crash_in_append_finds_before_or_after(tmp_path, expected, step, after):
    _, found = crash_during(tmp_path, f"{step}:3", SMALL)
    assert found == (expected["small"] if after else expected["A"])


def test_journal_of_an_older_snapshot_is_ignored(tmp_path, expected):
    """The crash the issue describes: new snapshot renamed, old journal
    still there. The old records (which re-add module 41) stay unapplied,
    also across a second restart and later appends."""
    _, found = crash_during(tmp_path, "snapshot-synced:3", LARGE)
    assert found == expected["large"]
    a = Agent(tmp_path).start()
    try:
        with a.connect() as m:
            m.edit_config(target="running", config=config([module(99)]))
            after = running(m)
            assert "<id>41</id>" not in after
    finally:
        a.stop()
    b = Agent(tmp_path).start()
    try:
        with b.connect() as m:
            assert running(m) == after
    finally:
        b.stop()


# ===== confirmed commit across a kill -9 =====

def poll(fn, timeout, what):
    """Polls `fn` until it returns true (no event exists for a rollback
    that happens inside the agent while no session is subscribed)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if fn():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def confirmed_commit(a, timeout, persist=None):
    with a.connect() as m:
        m.edit_config(target="running", config=config([module(1)]))
        before = running(m)
        m.edit_config(target="candidate", config=config([module(2), delete(1)]))
        m.commit(confirmed=True, timeout=str(timeout), persist=persist)
        after = running(m)
        assert after != before
        return before, after, time.monotonic()


def test_kill9_during_confirmed_commit_rolls_back_at_the_deadline(tmp_path):
    a = Agent(tmp_path).start()
    before, after, t0 = confirmed_commit(a, 6, persist="p1")
    a.kill9()
    b = Agent(tmp_path).start()
    try:
        with b.connect() as m:
            # Still pending after the restart: not yet rolled back.
            assert running(m) == after
            assert (b.state / "confirmed-commit").exists()
            poll(lambda: running(m) == before, 30, "the rollback")
            # Not before the deadline the confirmed commit had.
            assert time.monotonic() - t0 >= 6 - 0.5
        assert not (b.state / "confirmed-commit").exists()
    finally:
        b.stop()


def test_persist_id_confirms_after_a_restart(tmp_path):
    a = Agent(tmp_path).start()
    _, after, _ = confirmed_commit(a, 600, persist="p2")
    a.kill9()
    b = Agent(tmp_path).start()
    try:
        with b.connect() as m:
            m.commit(persist_id="p2")
            assert running(m) == after
        assert not (b.state / "confirmed-commit").exists()
    finally:
        b.stop()
    c = Agent(tmp_path).start()
    try:
        with c.connect() as m:
            assert running(m) == after
    finally:
        c.stop()


def test_confirmed_commit_without_persist_is_rolled_back_at_start(tmp_path):
    # Its session ended with the agent (RFC 6241 8.4.1).
    a = Agent(tmp_path).start()
    before, _, _ = confirmed_commit(a, 600)
    a.kill9()
    b = Agent(tmp_path).start()
    try:
        with b.connect() as m:
            assert running(m) == before
        assert not (b.state / "confirmed-commit").exists()
    finally:
        b.stop()


def test_confirmed_commit_expired_while_down_is_rolled_back_at_start(tmp_path):
    a = Agent(tmp_path).start()
    before, _, t0 = confirmed_commit(a, 2, persist="p3")
    a.kill9()
    # Wait for the wall clock to pass the stored deadline.
    time.sleep(max(0.0, t0 + 2.5 - time.monotonic()))
    b = Agent(tmp_path).start()
    try:
        with b.connect() as m:
            assert running(m) == before
    finally:
        b.stop()
