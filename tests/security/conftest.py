"""Fixtures for the security tests: the interop suite's real agent on
loopback (reused, not copied), and running commands as an unprivileged
local user (`runuser -u nobody`)."""
import importlib.util
import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]

_spec = importlib.util.spec_from_file_location("interop_fixtures", ROOT / "tests" / "interop" / "conftest.py")
interop = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(interop)

Agent = interop.Agent
BASE = interop.BASE
NS = interop.NS
module_xml = interop.module_xml
free_port = interop.free_port
AGENT = interop.AGENT
PRELOAD = os.environ.get("L45_PRELOAD", str(ROOT / "target" / "release" / "libl45tap.so"))

agent = interop.agent
make_agent = interop.make_agent


def as_nobody(args, **kw):
    """Runs `args` as the unprivileged user `nobody`; returns the
    CompletedProcess (never raises on a non-zero exit)."""
    return subprocess.run(["runuser", "-u", "nobody", "--", *args], capture_output=True, text=True, **kw)


@pytest.fixture
def nobody_dir():
    """A directory only `nobody` (and root) may use, for its scripts and
    outputs: under /tmp, since pytest's own temporary tree is root's alone."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="l45-nobody-", dir="/tmp"))
    os.chown(d, 65534, 65534)
    yield d
    shutil.rmtree(d, ignore_errors=True)
