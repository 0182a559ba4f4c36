"""Helpers for the service tests: the binaries, their generated CLI assets,
the unit files with their binary paths pointing at this build."""
import os
import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
AGENT = os.environ.get("L45_AGENT", str(ROOT / "target" / "release" / "l45-agent"))
NCO = os.environ.get("L45_NCO", str(ROOT / "target" / "release" / "l45-nco"))
DISSECTOR = os.environ.get("L45_DISSECTOR", str(ROOT / "target" / "release" / "l45-dissector"))
UNITS = ROOT / "packaging" / "systemd"
SYSUSERS = sorted((ROOT / "packaging" / "sysusers.d").glob("*.conf"))


def generate_assets(binary, out):
    """`BINARY --generate-cli-assets OUT`: the files it wrote."""
    r = subprocess.run([binary, "--generate-cli-assets", str(out)], capture_output=True,
                       text=True, timeout=60, check=True)
    return [pathlib.Path(line) for line in r.stdout.splitlines()]


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    out = tmp_path_factory.mktemp("assets")
    files = generate_assets(AGENT, out) + generate_assets(NCO, out) + generate_assets(DISSECTOR, out)
    return out, files


@pytest.fixture(scope="session")
def units(tmp_path_factory, assets):
    """The units copied with /usr/bin/l45-* replaced by this build's
    binaries (verify checks that ExecStart's binary exists)."""
    out = tmp_path_factory.mktemp("units")
    for unit in UNITS.glob("*.service"):
        text = unit.read_text()
        text = text.replace("/usr/bin/l45-agent", AGENT).replace("/usr/bin/l45-nco", NCO)
        (out / unit.name).write_text(text)
    return out


def exposure(unit_path):
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit_path)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout + r.stderr)
    assert m, f"no exposure level in:\n{r.stdout}\n{r.stderr}"
    return float(m.group(1)), r.stdout


def have(tool):
    return shutil.which(tool) is not None
