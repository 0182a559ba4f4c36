"""Fixtures for the module-image tests: the real l45-nco CLI (build, key,
push) and real agents (the interop suite's, recording tap), with a real
shared object built from tests/fixtures/kind-crate."""
import importlib.util
import json
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
NCO = os.environ.get("L45_NCO", str(ROOT / "target" / "release" / "l45-nco"))


class Nco:
    """The l45-nco CLI on one CIB file (its signing key beside it)."""

    def __init__(self, workdir):
        self.dir = pathlib.Path(workdir)
        self.cib = self.dir / "cib.sqlite"
        self.key = pathlib.Path(str(self.cib) + ".image-key")
        self.env = {**os.environ, "L45_CIB": str(self.cib)}

    def run(self, *args, check=True, timeout=300):
        p = subprocess.run([NCO, *map(str, args)], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"l45-nco {' '.join(map(str, args))} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
        return p

    def json(self, *args, check=True):
        p = self.run("--json", *args, check=check)
        return json.loads(p.stdout) if p.stdout.strip() else None


@pytest.fixture(scope="module")
def world():
    """A directory others may traverse (so only the modes the programs
    give their files keep `nobody` out), an NCO with its key, and the
    fixture kind built and signed once for the module's tests."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="l45-images-", dir="/tmp"))
    os.chmod(d, 0o755)
    nco = Nco(d / "nco")
    nco.dir.mkdir()
    os.chmod(nco.dir, 0o755)
    crate = d / "kind-crate"
    shutil.copytree(ROOT / "tests" / "fixtures" / "kind-crate", crate)
    built = nco.json("images", "build", crate, "--out", d / "out")
    yield {"dir": d, "nco": nco, "built": built[0], "crate": crate}
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def agent(world, tmp_path):
    a = Agent(tempfile.mkdtemp(dir=world["dir"])).start()
    yield a
    a.stop()
