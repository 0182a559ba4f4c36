"""The NCO end to end: the l45-nco CLI and service against real agents."""
import os
import re
import signal
import sqlite3
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest import NCO, Emulator, free_port_block
from taplab import NS, BypassClient, DigLoop, Dnsmasq, HoldingServer, build_bypass_client, dig, wait_for


def device_modules(agent):
    """{id: {leaf: text}} of the device's running configuration."""
    data = agent.nc.get_config(source="running", filter=("subtree", f'<customizations xmlns="{NS}"/>')).data_ele
    out = {}
    for m in data.iter(f"{{{NS}}}module"):
        mid = int(m.findtext(f"{{{NS}}}id"))
        leaves = {}
        for el in m.iter():
            if len(el) == 0 and el.text is not None:
                leaves[el.tag.split("}")[1]] = el.text.strip()
        out[mid] = leaves
    return out


def nco_time(text):
    """A time the NCO printed: RFC 3339 in UTC with milliseconds
    (2026-12-05T18:30:00.250Z), as an aware datetime."""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text), text
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert t.utcoffset() == timedelta(0), text
    return t


def recent(text, seconds=120):
    """The NCO time `text` lies within `seconds` before now."""
    age = (datetime.now(timezone.utc) - nco_time(text)).total_seconds()
    return -1 <= age <= seconds


def deploy_args(device, name="tag", kind="dns-front-tag", extra=()):
    return ["modules", "deploy", "--device", device, "--name", name, "--kind", kind, *extra]


def test_deploy_report_priority_activate_revoke(nco, make_tap):
    dev = make_tap()
    nco.add_tap_device("d1", dev, role="client")
    # The first connection pins the device's host key.
    reqs = nco.json(*deploy_args("d1", extra=["--param", "tag=XTAGXdig", "--protocol", "udp", "--dst-port", "53"]))
    assert [r["state"] for r in reqs] == ["confirmed"]
    mid = reqs[0]["module"]
    on_dev = device_modules(dev)[mid]
    assert on_dev["kind"].endswith("dns-front-tag") and on_dev["tag"] == "XTAGXdig"
    assert on_dev["destination-port"] == "53" and len(on_dev["key"]) == 44  # 32-byte key, base64
    devices = nco.json("devices", "list")
    assert devices[0]["host_key"] and devices[0]["host_key"].startswith("SHA256:")
    assert recent(devices[0]["added_at"]), devices[0]
    assert recent(reqs[0]["created_at"]) and recent(reqs[0]["finished_at"]), reqs[0]

    assert nco.json("monitor")["reported"] == 1
    status = nco.json("status")[0]
    assert status["modules_deployed"] == 1 and status["last_report_at"] is not None
    assert recent(status["last_report_at"]), status
    table = nco.run("status").stdout
    assert status["last_report_at"] in table, table

    nco.json("modules", "priority", "--device", "d1", "--id", mid, "--priority", "7")
    assert device_modules(dev)[mid]["priority"] == "7"
    nco.json("modules", "deactivate", "--device", "d1", "--id", mid)
    assert device_modules(dev)[mid]["activated"] == "false"
    nco.json("modules", "activate", "--device", "d1", "--name", "tag")
    assert device_modules(dev)[mid]["activated"] == "true"
    listed = nco.json("modules", "list")
    assert listed[0]["priority"] == 7 and listed[0]["status"] == "deployed"

    nco.json("modules", "revoke", "--device", "d1", "--id", mid)
    assert mid not in device_modules(dev)
    revoked = nco.json("modules", "list")[0]
    assert revoked["status"] == "revoked"
    assert nco_time(revoked["created_at"]) <= nco_time(revoked["deployed_at"]) <= nco_time(revoked["revoked_at"])
    history = nco.json("history", "--device", "d1")
    times = [nco_time(h["at"]) for h in history]
    assert times == sorted(times, reverse=True) and recent(history[0]["at"]), history  # newest first
    events = [h["event"] for h in history]
    for e in ("module-deployed", "priority-set", "module-deactivated", "module-activated", "module-revoked"):
        assert e in events, events


def test_scheduled_deploy_fires_on_time(nco, make_tap):
    dev = make_tap()
    nco.add_tap_device("d1", dev)
    queued = time.time()
    reqs = nco.json(*deploy_args("d1", extra=["--at", "+3s"]))
    answered = time.time()
    assert reqs[0]["state"] == "pending"
    # +3s counts from when the command ran (milliseconds: 0.001 s slack).
    due = nco_time(reqs[0]["not_before"]).timestamp()
    assert queued + 3 - 0.001 <= due <= answered + 3, (queued, reqs[0]["not_before"], answered)
    mid = reqs[0]["module"]
    nco.serve("--state-req-window", "60", "--sec-check-window", "3600")
    wait_for(lambda: mid in device_modules(dev), 20, "scheduled deploy")
    fired = time.time() - queued
    assert 2.5 <= fired <= 8, f"deploy scheduled for +3 s arrived after {fired:.1f} s"


@pytest.mark.parametrize("window", ["1", "3600"], ids=["by-report", "by-notification"])
def test_deprecate_then_automatic_revoke_when_idle(nco, make_tap, window):
    dev = make_tap()
    nco.add_tap_device("d1", dev)
    mid = nco.json(*deploy_args("d1"))[0]["module"]
    # With a long report window only the agent's deprecated-module-idle
    # notification can bring the revoke in time.
    nco.serve("--state-req-window", window, "--sec-check-window", "3600")
    nco.run("modules", "deprecate", "--device", "d1", "--id", mid, "--no-wait")
    # No socket uses it: the next report shows it deprecated and idle, the
    # service queues the revoke and carries it out.
    wait_for(lambda: mid not in device_modules(dev), 30, "automatic revoke of the idle deprecated module")
    nco.stop()
    events = [h["event"] for h in nco.json("history", "--device", "d1")]
    assert "module-deprecated" in events and "module-revoked" in events, events


def test_security_check_passes_and_a_wrong_key_revokes_with_alert(nco, make_tap):
    dev = make_tap()
    nco.add_tap_device("d1", dev)
    mid = nco.json(*deploy_args("d1"))[0]["module"]
    results = nco.json("security-check")
    assert results == [{"device": "d1", "module": mid, "passed": True, "detail": "answer authentic"}]
    # Someone changes the module's key on the device behind the NCO's back.
    dev.nc.edit_config(target="running", config=(
        f'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><customizations xmlns="{NS}">'
        f"<module><id>{mid}</id><security><key>{'A' * 43}=</key></security></module></customizations></config>"))
    p = nco.run("--json", "security-check", check=False)
    assert p.returncode == 2, p.stdout + p.stderr
    import json
    failed = json.loads(p.stdout)
    assert failed[0]["passed"] is False
    assert mid not in device_modules(dev), "a module that failed its check must be revoked"
    alerts = nco.json("alerts")
    assert any(a["kind"] == "security-check-failed" and a["module"] == mid for a in alerts), alerts
    assert all(recent(a["at"]) for a in alerts), alerts


def test_device_rpc_error_is_recorded_not_retried(nco, tmp_path, cleanup):
    emu = Emulator(tmp_path / "emu", 1, extra=["--tap-capacity", "1"])
    cleanup.append(emu)
    (name, port), = emu.devices.items()
    nco.run("devices", "add", name, "--address", f"127.0.0.1:{port}", "--key", emu.key)
    assert nco.json(*deploy_args(name, "first"))[0]["state"] == "confirmed"
    p = nco.run("--json", *deploy_args(name, "second"), check=False)
    assert p.returncode == 2
    import json
    r = json.loads(p.stdout)[0]
    assert r["state"] == "failed" and r["attempts"] == 1, r
    assert "resource-denied" in r["error"] or "holds at most" in r["error"], r["error"]
    alerts = nco.json("alerts")
    assert any(a["kind"] == "rpc-error" and a["device"] == name for a in alerts), alerts


def cib_rows(path, sql):
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def test_nco_killed_mid_deploy_with_devices_down_completes_exactly_once(nco, tmp_path, cleanup):
    up = Emulator(tmp_path / "up", 25)
    cleanup.append(up)
    base = free_port_block(25)
    # The other 25 devices are down for now: their ports refuse connections.
    for name, port in up.devices.items():
        nco.run("devices", "add", name, "--address", f"127.0.0.1:{port}", "--key", up.key)
    down_names = [f"down-{i:02}" for i in range(25)]
    for i, name in enumerate(down_names):
        nco.run("devices", "add", name, "--address", f"127.0.0.1:{base + i}", "--key", up.key)
    devices = list(up.devices) + down_names
    args = ["modules", "deploy", "--name", "tag", "--kind", "dns-front-tag"]
    for d in devices:
        args += ["--device", d]
    deploy = subprocess.Popen([NCO, "--json", *args], env=nco.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    # Wait until the reachable half is confirmed and the rest is retrying,
    # then kill the NCO without warning.
    def progress():
        rows = cib_rows(nco.cib, "SELECT state, attempts FROM request")
        confirmed = sum(1 for s, _ in rows if s == "confirmed")
        retrying = sum(1 for s, a in rows if s in ("pending", "sent") and a >= 1)
        return confirmed == 25 and retrying == 25
    wait_for(progress, 60, "half the deploy done, half retrying")
    deploy.send_signal(signal.SIGKILL)
    deploy.wait()
    alerts = nco.json("alerts")
    assert sum(1 for a in alerts if a["kind"] == "device-unreachable") >= 1, alerts
    # The missing devices come back, the NCO restarts as a service.
    back = Emulator(tmp_path / "back", 25, base_port=base, key=up.key)
    cleanup.append(back)
    # (The emulator calls them dev-0001…; the NCO knows them by address.)
    nco.serve("--state-req-window", "3600", "--sec-check-window", "3600")
    wait_for(lambda: cib_rows(nco.cib, "SELECT count(*) FROM request WHERE action = 'deploy' AND state = 'confirmed'")[0][0] == 50,
             120, "every deploy confirmed")
    nco.stop()
    # Consistent CIB: one module and one confirmed deploy per device, no
    # open requests, ids never reused.
    per_device = cib_rows(nco.cib, "SELECT d.name, count(*) FROM module m JOIN device d ON d.id = m.device_id GROUP BY d.name")
    assert len(per_device) == 50 and all(n == 1 for _, n in per_device)
    assert cib_rows(nco.cib, "SELECT count(*) FROM request WHERE state IN ('pending', 'sent')")[0][0] == 0
    assert cib_rows(nco.cib, "SELECT count(*) FROM request WHERE action <> 'deploy'")[0][0] == 0
    status = nco.json("status")
    assert sum(s["modules_deployed"] for s in status) == 50
    # Every device holds exactly one module entry.
    from ncclient import manager
    for emu in (up, back):
        for name, port in emu.devices.items():
            with manager.connect(host="127.0.0.1", port=port, username="admin", key_filename=str(emu.key),
                                 hostkey_verify=False, allow_agent=False, look_for_keys=False) as m:
                data = m.get_config("running", filter=("subtree", f'<customizations xmlns="{NS}"/>')).data_xml
                assert data.count("<id>") == 1, (name, data)


def test_two_device_rotation_with_the_cli_loses_no_query(nco, make_tap, tmp_path, cleanup):
    client_dev, server_dev = make_tap(), make_tap()
    dns = Dnsmasq(tmp_path, env=server_dev.env())
    cleanup.append(dns)
    nco.add_tap_device("client", client_dev, role="client")
    nco.add_tap_device("server", server_dev, role="server")
    nco.json(*deploy_args("client", "m1", extra=["--priority", "10", "--protocol", "udp", "--dst-port", dns.port]))
    nco.json(*deploy_args("server", "m1", extra=["--priority", "10", "--protocol", "udp", "--src-port", dns.port]))
    loop = DigLoop(dns.port, client_dev.env())
    loop.start()
    try:
        loop.more(5)
        steps = nco.json("rotate", "--from", "m1", "--to-name", "m2", "--to-kind", "dns-compression")
        loop.more(5)
    finally:
        loop.stop()
    assert not loop.failures, f"{len(loop.failures)} failed queries: {loop.failures[0]}"
    assert [s["step"] for s in steps] == ["deploy new module below the old one", "raise on the receivers",
                                          "raise on the senders", "revoke the old module"]
    mods, socks = server_dev.state()
    kinds = {m: device_modules(server_dev)[m]["kind"] for m in device_modules(server_dev)}
    assert list(kinds.values()) == ["l45:dns-compression"] or all(k.endswith("dns-compression") for k in kinds.values())
    assert all(int(st["messages-received"]) > 0 for st in mods.values()), mods


def test_bad_input_gets_clear_errors_and_changes_nothing(nco, make_tap):
    dev = make_tap()
    nco.add_tap_device("d1", dev)
    cases = [
        (["devices", "add", "d1", "--address", "127.0.0.1:1", "--key", "/k"], "already exists"),
        (["devices", "add", "d2", "--address", "nowhere", "--key", "/k"], "address"),
        (deploy_args("nope"), "unknown device"),
        (deploy_args("d1", kind="dns-magic"), "unknown module kind"),
        (deploy_args("d1", kind="stream-tag", extra=["--param", "interval=3"]), "interval"),
        (deploy_args("d1", extra=["--param", "colour=red"]), "colour"),
        (deploy_args("d1", extra=["--at", "someday"]), "bad time"),
        (["modules", "revoke", "--device", "d1", "--id", "99"], "no module with id 99"),
        (["rotate", "--from", "ghost", "--to-name", "x", "--to-kind", "dns-compression", "--senders", "d1"], "ghost"),
    ]
    before = nco.json("history", "--limit", "1000")
    for args, needle in cases:
        p = nco.run(*args, check=False)
        assert p.returncode != 0, args
        assert needle in (p.stderr + p.stdout), (args, p.stderr)
        assert "panicked" not in p.stderr
    assert nco.json("history", "--limit", "1000") == before
    assert device_modules(dev) == {}


def test_middlebox_gets_inverse_modules_and_flow_queries(nco, make_tap, tmp_path):
    dev = make_tap()
    nco.add_tap_device("d1", dev)
    mid = nco.json(*deploy_args("d1", extra=["--param", "tag=MBTAG123", "--protocol", "udp", "--dst-port", "53"]))[0]["module"]
    plugins = tmp_path / "plugins"
    added = nco.json("middlebox", "add", "mb1", "--address", f"dir:{plugins}")
    assert added["inverses"] == 8
    shipped = nco.json("middlebox", "distribute", "mb1")
    assert [(d["device"], d["module"], d["state"]) for d in shipped] == [("d1", mid, "deployed")]
    lua = (plugins / f"l45-d1-{mid}-dns-front-tag.lua").read_text()
    assert "MBTAG123" in lua and "l45_dns_front_tag" in lua
    import hashlib
    assert hashlib.sha256(lua.encode()).hexdigest() == shipped[0]["sha256"]
    # tshark accepts the shipped dissector.
    p = subprocess.run(["tshark", "-G", "protocols", "-X", f"lua_script:{plugins / f'l45-d1-{mid}-dns-front-tag.lua'}"],
                       capture_output=True, text=True)
    assert "l45_dns_front_tag" in p.stdout, p.stderr[-2000:]
    # Flow queries: a DNS flow from the device is explained, another is not.
    known = nco.json("flow", "--middlebox", "mb1", "--protocol", "udp", "--src", "127.0.0.1", "--sport", "40000",
                     "--dst", "192.0.2.53", "--dport", "53")
    assert [(m["device"], m["module"], m["inverse_deployed"]) for m in known] == [("d1", mid, True)]
    p = nco.run("--json", "flow", "--middlebox", "mb1", "--protocol", "tcp", "--src", "127.0.0.1", "--sport", "40000",
                "--dst", "192.0.2.80", "--dport", "80", check=False)
    assert p.returncode == 3 and p.stdout.strip() == "[]"
    assert any(a["kind"] == "flow-rejected" for a in nco.json("alerts"))


def test_monitor_alerts_a_customization_active_on_one_end_only(nco, make_tap, tmp_path, cleanup):
    client_dev, server_dev = make_tap(), make_tap()
    dns = Dnsmasq(tmp_path, env=server_dev.env())
    cleanup.append(dns)
    nco.add_tap_device("client", client_dev)
    nco.add_tap_device("server", server_dev)
    # The client end tags queries to dnsmasq; the server end's module is
    # configured for another port, so it never sees them.
    nco.json(*deploy_args("client", "m1", extra=["--protocol", "udp", "--dst-port", dns.port], kind="dns-end-tag"))
    nco.json(*deploy_args("server", "m1", extra=["--protocol", "udp", "--src-port", dns.port + 1], kind="dns-end-tag"))
    answered, out = dig(dns.port, env=client_dev.env())
    assert answered, out  # end tags are tolerated by a plain server
    r = nco.json("monitor")
    assert r["reported"] == 2 and r["alerts_raised"] >= 1
    alerts = nco.json("alerts")
    one_sided = [a for a in alerts if a["kind"] == "active-on-one-end-only"]
    assert [(a["device"], a["module"]) for a in one_sided] == [("server", 1)], alerts


def test_a_bypassed_module_raises_an_alert(nco, make_tap, tmp_path, cleanup):
    """A static binary on a socket a deployed module's match selects: the
    agent's module-bypassed notification becomes a warning alert in the CIB,
    shown by `l45-nco alerts`."""
    static = build_bypass_client(tmp_path, static=True)
    dev = make_tap()
    nco.add_tap_device("d1", dev)
    srv = HoldingServer()
    cleanup.append(srv)
    mid = nco.json(*deploy_args("d1", kind="stream-tag", extra=[
        "--param", "interval=1000", "--param", "tag=XTAGTAGTAGTAGTAGTAGTAGTAGTAGTAGX", "--protocol", "tcp", "--dst-port", srv.port]))[0]["module"]
    nco.serve("--state-req-window", "3600", "--sec-check-window", "3600")

    def alerted():
        return [a for a in nco.json("alerts") if a["kind"] == "module-bypassed"]

    # The service subscribes to the device's notifications soon after it
    # starts, and nothing outside shows when: each new static connection is
    # a new escaping socket (a new notification), until one gets through.
    def connect_and_look():
        client = BypassClient(static, "plain", srv.port)
        cleanup.append(client)
        try:
            return wait_for(alerted, 3, "a module-bypassed alert")
        except AssertionError:
            return None
        finally:
            client.stop()

    found = wait_for(connect_and_look, 40, "a module-bypassed alert from the service")
    a = found[0]
    assert (a["device"], a["module"], a["severity"]) == ("d1", mid, "warning"), a
    assert "does not run the tap" in a["message"] and "bypass_static" in a["message"], a
    assert f"-> 127.0.0.1:{srv.port}" in a["message"], a
    table = nco.run("alerts").stdout
    assert "module-bypassed" in table and "bypass_static" in table, table
