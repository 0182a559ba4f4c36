"""The systemd units in packaging/systemd: verified clean, exposure scores
bounded, users created by the sysusers.d file (docs/service.md)."""
import configparser
import os
import subprocess

import pytest

from conftest import SYSUSERS, UNITS, exposure

# Measured with systemd 252 (Debian 12): agent 1.4, kernel agent 1.7,
# NCO 1.1. The issue asks ≤ 2.5 for the user-space agent and the NCO; the
# kernel agent's bound is 2.0: CAP_NET_ADMIN and AF_NETLINK are what its
# work needs (docs/service.md).
BOUNDS = {"l45-agent.service": 2.5, "l45-nco.service": 2.5, "l45-agent-kernel.service": 2.0}


def service_section(path):
    p = configparser.ConfigParser(strict=False, interpolation=None)
    p.optionxform = str
    # Repeated keys (SystemCallFilter=) are legal in units: keep the last.
    p.read_string("".join(line for line in open(path) if not line.startswith("#")))
    return p["Service"]


def test_every_unit_has_a_bound():
    assert sorted(p.name for p in UNITS.glob("*.service")) == sorted(BOUNDS)


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_verify_is_clean(units, assets, name):
    out, _ = assets
    # The units name their man pages (Documentation=man:…): verify looks
    # them up, so it finds the ones generated from the clap definitions.
    env = dict(os.environ, MANPATH=str(out / "man"))
    r = subprocess.run(["systemd-analyze", "verify", str(units / name)],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_exposure_within_bound(units, name):
    level, report = exposure(units / name)
    assert level <= BOUNDS[name], report


def test_exposure_check_can_fail(units, tmp_path):
    """The parse sees a worse unit as worse: the agent's unit run as root
    with every hardening line removed scores far above the bound."""
    text = (units / "l45-agent.service").read_text()
    keep = [line for line in text.splitlines()
            if not line.startswith(("Protect", "Private", "Restrict", "SystemCall", "User=",
                                    "Group=", "Capability", "NoNewPrivileges", "MemoryDeny",
                                    "LockPersonality", "UMask", "DevicePolicy", "RemoveIPC"))]
    (tmp_path / "bad.service").write_text("\n".join(keep) + "\n")
    level, _ = exposure(tmp_path / "bad.service")
    assert level > 5.0


def test_least_privilege_per_backend():
    user = service_section(UNITS / "l45-agent.service")
    kernel = service_section(UNITS / "l45-agent-kernel.service")
    nco = service_section(UNITS / "l45-nco.service")
    for s in (user, nco):
        assert s["CapabilityBoundingSet"] == "" and s["AmbientCapabilities"] == ""
        assert "AF_NETLINK" not in s["RestrictAddressFamilies"]
    assert kernel["CapabilityBoundingSet"] == "CAP_NET_ADMIN"
    assert kernel["AmbientCapabilities"] == "CAP_NET_ADMIN"
    assert "AF_NETLINK" in kernel["RestrictAddressFamilies"]
    # The user-space tap's segments live in the host's IPC namespace.
    assert "PrivateIPC" not in user
    # Tapped processes of every user open the control file and its
    # directory; the state directory is the agent's alone.
    assert user["RuntimeDirectoryMode"] == "0755" and user["StateDirectoryMode"] == "0700"
    assert "--tap-shm %t/l45/tap" in user["ExecStart"] and "--tap userspace" in user["ExecStart"]
    assert "--tap kernel" in kernel["ExecStart"]
    for s in (user, kernel, nco):
        assert s["Type"] == "notify" and s["NoNewPrivileges"] == "yes"


def test_sysusers_creates_the_units_users(tmp_path):
    (tmp_path / "etc").mkdir()
    # One file per package (l45-agent.conf, l45-nco.conf).
    assert [f.name for f in SYSUSERS] == ["l45-agent.conf", "l45-nco.conf"]
    r = subprocess.run(["systemd-sysusers", f"--root={tmp_path}", *map(str, SYSUSERS)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    users = {line.split(":")[0]: line.split(":") for line in
             (tmp_path / "etc" / "passwd").read_text().splitlines()}
    for unit in UNITS.glob("*.service"):
        name = service_section(unit)["User"]
        assert name in users, f"{unit.name}: User={name} not created"
        assert int(users[name][2]) < 1000  # a system user
        assert users[name][6].endswith("nologin")


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_units_say_how_to_turn_metrics_on(name):
    """--metrics is read from L45_METRICS (clap env), which the env file
    sets; the unit's hardening already allows the TCP listener."""
    text = (UNITS / name).read_text()
    assert "L45_METRICS=127.0.0.1:944" in text and "docs/service.md" in text
    s = service_section(UNITS / name)
    assert "AF_INET" in s["RestrictAddressFamilies"] and "EnvironmentFile" in s
