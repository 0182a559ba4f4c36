"""Devices that call home (RFC 8071) to the real l45-nco serve: a device
behind a firewall the NCO cannot reach, pending and accepted devices,
enrollment tokens (used once), a changed host key, and a fleet of dialed
and calling devices in one rotation."""
import socket

import pytest

from conftest import Agent, Netns, alerts, can_use_netns, device, pending, wait_until


def deploy(nco, dev, name="tag", kind="dns-front-tag", *extra):
    return nco.json("modules", "deploy", "--device", dev, "--name", name, "--kind", kind, *extra)


def modules_of(nco, dev):
    return [m for m in nco.json("modules", "list") if m["device"] == dev]


def test_device_behind_firewall_calls_home_is_managed_and_resumes_after_a_cut(nco, tmp_path, cleanup):
    why = can_use_netns()
    if why:
        pytest.skip(why)
    net = Netns()
    cleanup.append(net)
    addr = nco.serve(f"{net.host_ip}:0")
    agent = Agent(tmp_path / "dev", nco.key, addr, listen=f"{net.dev_ip}:830", netns=net.name)
    cleanup.append(agent)
    # The NCO cannot open a connection to the device.
    s = socket.socket()
    s.settimeout(1.5)
    with pytest.raises(OSError):
        s.connect((net.dev_ip, 830))
    s.close()
    # Unknown: pending, with its check-in data; nothing can be deployed.
    p = wait_until(lambda: pending(nco), what="the device to be pending")[0]
    assert p["host_key"] == agent.fingerprint and p["state"] == "pending"
    assert p["device_data"]["tap_backend"] == "recording"
    assert p["device_data"]["architecture"] and p["device_data"]["kernel_release"]
    assert alerts(nco, "device-pending")
    refused = nco.run("--json", "modules", "deploy", "--device", p["name"], "--name", "m",
                      "--kind", "dns-front-tag", check=False)
    assert refused.returncode != 0 and "unknown device" in refused.stderr
    # Accepted: its waiting connection is used at once.
    nco.run("devices", "accept", p["name"], "--as", "edge", "--role", "server")
    d = device(nco, "edge")
    assert d["call_home"] and d["host_key"] == agent.fingerprint
    assert d["address"].startswith(net.dev_ip + ":")
    assert d["device_data"]["host_name"]
    # Deploy, monitor, security-check through serve's relay.
    req = deploy(nco, "edge", "m1", "dns-front-tag", "--priority", "10")[0]
    assert req["state"] == "confirmed", req
    assert nco.json("monitor")["reported"] >= 1
    checks = nco.json("security-check", check=False)
    assert any(c["device"] == "edge" for c in checks), checks
    status = [s for s in nco.json("status") if s["device"] == "edge"][0]
    assert status["checked_in_at"] and status["modules_deployed"] == 1
    calls_before = nco.log_text().count("device called home")
    # Cut the link; a request queued meanwhile waits for the call.
    net.cut()
    wait_until(lambda: "server ended the session" in nco.log_text()
               or "connection to server lost" in nco.log_text(), 30, "serve to notice the cut")
    queued = nco.json("modules", "deploy", "--device", "edge", "--name", "m2", "--kind",
                      "stream-tag", "--no-wait")[0]
    assert queued["state"] == "pending"
    net.restore()
    wait_until(lambda: nco.log_text().count("device called home") > calls_before, 30,
               "the device to call again")

    def done():
        r = [m for m in modules_of(nco, "edge") if m["name"] == "m2"]
        return r and r[0]["status"] == "deployed" and r[0]
    m2 = wait_until(done, 30, "the queued deploy to complete")
    # Exactly once: one confirmed request, one deployed-history event, and
    # the device reports the module once.
    events = [h for h in nco.json("history", "--device", "edge")
              if h["module"] == m2["id"] and h["event"] == "module-deployed"]
    assert len(events) == 1, events
    assert nco.json("monitor")["reported"] >= 1
    assert not [a for a in alerts(nco, "missing-on-device") if a["device"] == "edge"]
    assert not [a for a in alerts(nco, "unknown-module-on-device") if a["device"] == "edge"]


def test_enrollment_token_is_used_once_and_a_changed_host_key_is_refused(nco, tmp_path, cleanup):
    addr = nco.serve()
    token = nco.run("devices", "enroll", "host9", "--role", "client").stdout.strip()
    assert token.startswith("l45e-")
    a = Agent(tmp_path / "a", nco.key, addr, token=token)
    cleanup.append(a)
    d = wait_until(lambda: device(nco, "host9"), what="enrollment")
    assert d["call_home"] and d["host_key"] == a.fingerprint and d["role"] == "client"
    assert not pending(nco)
    assert deploy(nco, "host9")[0]["state"] == "confirmed"
    # The same token from another machine: refused, not pending.
    b = Agent(tmp_path / "b", nco.key, addr, token=token, machine_id="0123456789abcdef0123456789abcdef")
    cleanup.append(b)
    wait_until(lambda: alerts(nco, "enrollment-refused"), what="the reused token to be refused")
    assert all(x["host_key"] != b.fingerprint for x in nco.json("devices", "list"))
    assert not [p for p in pending(nco) if p["host_key"] == b.fingerprint]
    # host9 reinstalled with a new host key (same machine): refused, critical.
    a.stop()
    for f in (tmp_path / "a" / "state").glob("ssh_host_*"):
        f.unlink()
    a.start()
    assert a.fingerprint != d["host_key"]
    crit = wait_until(lambda: [x for x in alerts(nco, "host-key-mismatch") if x["device"] == "host9"],
                      what="the changed host key to be refused")
    assert crit[0]["severity"] == "critical"
    assert device(nco, "host9")["host_key"] == d["host_key"]
    assert not [p for p in pending(nco) if p["host_key"] == a.fingerprint]


def test_unknown_device_waits_and_rejected_stays_out(nco, tmp_path, cleanup):
    addr = nco.serve()
    a = Agent(tmp_path / "a", nco.key, addr)
    cleanup.append(a)
    p = wait_until(lambda: pending(nco), what="pending")[0]
    nco.run("devices", "reject", p["name"])
    assert pending(nco)[0]["state"] == "rejected"
    assert not device(nco, p["name"])
    calls = pending(nco)[0]["calls"]
    # It keeps calling (backoff) and stays refused.
    wait_until(lambda: pending(nco)[0]["calls"] > calls, 20, "another call")
    assert not device(nco, p["name"])


def test_mixed_fleet_of_dialed_and_calling_devices_rotates_together(nco, tmp_path, cleanup):
    addr = nco.serve()
    dialed = Agent(tmp_path / "dialed", nco.key, None)
    cleanup.append(dialed)
    token = nco.run("devices", "enroll", "caller", "--role", "client").stdout.strip()
    caller = Agent(tmp_path / "caller", nco.key, addr, token=token)
    cleanup.append(caller)
    wait_until(lambda: device(nco, "caller"), what="the caller to enroll")
    nco.run("devices", "add", "server1", "--address", dialed.addr, "--key", nco.key,
            "--role", "server")
    for dev in ("server1", "caller"):
        assert deploy(nco, dev, "m1", "dns-front-tag", "--priority", "20")[0]["state"] == "confirmed"
    steps = nco.json("rotate", "--from", "m1", "--to-name", "m2", "--to-kind", "dns-compression")
    assert [s["step"] for s in steps] == ["deploy new module below the old one", "raise on the receivers",
                                          "raise on the senders", "revoke the old module"]
    live = {(m["device"], m["name"]) for m in nco.json("modules", "list") if m["status"] == "deployed"}
    assert live == {("server1", "m2"), ("caller", "m2")}
