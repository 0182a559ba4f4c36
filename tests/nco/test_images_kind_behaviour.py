"""A module of an installed kind (the example `udp-xor-mask` image, deployed
by the NCO with `modules deploy --image`) behaves like a built-in one:
statistics, the security challenge, activated false, deprecated, revoke,
and rotation to and from it with immediate attach under a dig loop."""
import json
import os
import subprocess

from taplab import AGENT, NS, Capture, DigLoop, Dnsmasq, dig, stop_process
from test_images_deploy import build_image, cib_rows, images_state, installed_kinds
from test_images_e2e import KEY, trust

MARKER = b"L45x"


def lab(nco, make_tap, tmp_path, cleanup):
    client, server = make_tap(), make_tap()
    # dnsmasq drops to its own user before it reads the published image.
    os.chmod(server.shm_dir, 0o755)
    dns = Dnsmasq(tmp_path, env=server.env())
    cleanup.append(dns)
    nco.add_tap_device("client", client, role="client")
    nco.add_tap_device("server", server, role="server")
    built, public_key = build_image(nco, tmp_path)
    for dev in (client, server):
        trust(dev, public_key)
    return client, server, dns, built


class Wire:
    """Queries to the DNS server as they are on the wire, for n digs."""

    def __init__(self, tmp_path, dns, env):
        self.tmp_path, self.dns, self.env, self.n = tmp_path, dns, env, 0

    def queries(self, n=3):
        self.n += 1
        capture = Capture(self.tmp_path / f"wire-{self.n}.pcap", f"udp port {self.dns.port}")
        try:
            results = [dig(self.dns.port, env=self.env) for _ in range(n)]
        finally:
            packets = capture.stop()
        assert all(ok for ok, _ in results), results[-1][1]
        queries = [p for proto, _, dport, p in packets if proto == "udp" and dport == self.dns.port]
        assert len(queries) >= n, packets
        return queries


def masked(queries):
    return all(q[:4] == MARKER for q in queries)


def module_stats(dev, mid):
    mods, _ = dev.state()
    return {k: int(v) for k, v in mods[mid].items() if k.startswith(("messages-", "bytes-"))}


def deploy_xor(nco, built, dns):
    rule = ["--name", "xor", "--kind", "udp-xor-mask", "--image", built["path"], "--priority", "10",
            "--protocol", "udp", "--param", f"key={KEY.hex()}"]
    c = nco.json("modules", "deploy", "--device", "client", *rule, "--dst-port", str(dns.port))[0]
    s = nco.json("modules", "deploy", "--device", "server", *rule, "--src-port", str(dns.port))[0]
    assert c["state"] == s["state"] == "confirmed", (c, s)
    return c["module"], s["module"]


def test_an_installed_kind_behaves_like_a_built_in(nco, make_tap, tmp_path, cleanup):
    client, server, dns, built = lab(nco, make_tap, tmp_path, cleanup)
    cid, sid = deploy_xor(nco, built, dns)
    wire = Wire(tmp_path, dns, client.env())
    assert masked(wire.queries())

    # Statistics: the tap counts the kind's messages, the NCO records them.
    before = module_stats(client, cid)
    assert before["messages-sent"] >= 3 and module_stats(server, sid)["messages-received"] >= 3, before
    wire.queries()
    assert module_stats(client, cid)["messages-sent"] >= before["messages-sent"] + 3
    nco.json("monitor")
    sent = cib_rows(nco.cib, "SELECT p.messages_sent FROM deployment p JOIN module m ON m.id = p.module_row"
                             f" JOIN device d ON d.id = m.device_id WHERE d.name = 'client' AND m.module_id = {cid}")
    assert sent and sent[0][0] >= 6, sent

    # The security challenge: answered with the module's key.
    results = nco.json("security-check")
    assert sorted((r["device"], r["module"], r["passed"]) for r in results) == [
        ("client", cid, True), ("server", sid, True)], results

    # activated false: attached but pass-through; the server's module does
    # not claim the plain query and it is answered.
    nco.json("modules", "deactivate", "--device", "client", "--name", "xor")
    assert not any(q[:4] == MARKER for q in wire.queries())
    nco.json("modules", "activate", "--device", "client", "--name", "xor")
    assert masked(wire.queries())

    # deprecated: no new sockets (every dig has a new one).
    nco.json("modules", "deprecate", "--device", "client", "--name", "xor")
    assert client.state()[0][cid]["state"] == "deprecated"
    assert not any(q[:4] == MARKER for q in wire.queries())

    # revoke: gone from the device, queries plain and answered.
    nco.json("modules", "revoke", "--device", "client", "--name", "xor")
    assert installed_kinds(client) == []
    assert not any(q[:4] == MARKER for q in wire.queries())

    # A wrong key on the device fails the challenge: revoked, alerted.
    server.nc.edit_config(target="running", config=(
        f'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><customizations xmlns="{NS}">'
        f"<module><id>{sid}</id><security><key>{'A' * 43}=</key></security></module></customizations></config>"))
    p = nco.run("--json", "security-check", check=False)
    assert p.returncode == 2, p.stdout + p.stderr
    assert [(r["device"], r["passed"]) for r in json.loads(p.stdout)] == [("server", False)], p.stdout
    assert installed_kinds(server) == []
    assert any(a["kind"] == "security-check-failed" and a["module"] == sid for a in nco.json("alerts"))
    # Its image stays installed (nothing uses it now, so it can go).
    assert list(images_state(server)) == [built["sha256"]]


def test_rotation_to_and_from_an_installed_kind_loses_no_query(nco, make_tap, tmp_path, cleanup):
    client, server, dns, built = lab(nco, make_tap, tmp_path, cleanup)
    for dev, end in (("client", "--dst-port"), ("server", "--src-port")):
        nco.json("modules", "deploy", "--device", dev, "--name", "m1", "--kind", "dns-front-tag",
                 "--priority", "10", "--protocol", "udp", end, str(dns.port))
    wire = Wire(tmp_path, dns, client.env())
    loop = DigLoop(dns.port, client.env())
    loop.start()
    try:
        loop.more(5)
        # Built in → installed kind: the new module's deploy installs the
        # image on both devices first; dnsmasq's long-lived socket takes the
        # new module at once (immediate attach).
        steps = nco.json("rotate", "--from", "m1", "--to-name", "m2", "--to-kind", "udp-xor-mask",
                         "--to-image", built["path"], "--param", f"key={KEY.hex()}")
        assert len(steps) == 4, steps
        loop.more(5)
        assert masked(wire.queries())
        # Installed kind → built in.
        nco.json("rotate", "--from", "m2", "--to-name", "m3", "--to-kind", "dns-front-tag")
        loop.more(5)
        assert not any(q[:4] == MARKER for q in wire.queries())
    finally:
        loop.stop()
    assert not loop.failures, f"{len(loop.failures)} failed queries: {loop.failures[0]}"
    assert loop.ok >= 15
    for dev in (client, server):
        assert installed_kinds(dev) == []
        assert list(images_state(dev)) == [built["sha256"]]
    # Every module of m2 is revoked, so the image can go everywhere.
    out = nco.json("images", "remove", "udp-xor-mask")
    assert sorted((o["device"], o["removed"]) for o in out) == [("client", True), ("server", True)], out
    assert images_state(client) == {} and images_state(server) == {}


def restart(dev):
    """Stops the device's agent and starts it again on the same state
    directory, control file and port (the tapped processes live on)."""
    from ncclient import manager
    dev.nc.close_session()
    stop_process(dev.proc)
    dev.proc = subprocess.Popen(
        [AGENT, "--listen", f"{dev.host}:{dev.port}", "--state-dir", str(dev.dir / "state"),
         "--authorized-keys", f"admin:{dev.key}.pub", "--tap", "userspace", "--tap-shm", str(dev.shm)],
        stdout=subprocess.PIPE, stderr=dev.log, text=True)
    line = dev.proc.stdout.readline()
    assert "listening on" in line, f"agent did not start again: {line!r}"
    dev.nc = manager.connect(host=dev.host, port=dev.port, username="admin", key_filename=str(dev.key),
                             hostkey_verify=False, allow_agent=False, look_for_keys=False, timeout=60)


def test_an_agent_restart_keeps_the_image_and_the_modules_using_it(nco, make_tap, tmp_path, cleanup):
    client, server, dns, built = lab(nco, make_tap, tmp_path, cleanup)
    cid, sid = deploy_xor(nco, built, dns)
    wire = Wire(tmp_path, dns, client.env())
    assert masked(wire.queries())
    for dev in (client, server):
        restart(dev)
        assert list(images_state(dev)) == [built["sha256"]]
        assert installed_kinds(dev) == ["udp-xor-mask"]
    log = (client.dir / "agent.log").read_text()
    assert "stored module image loaded" in log
    # Traffic is customized as before; the NCO finds its modules, with the
    # keys it holds, and the device's host key it pinned.
    assert masked(wire.queries())
    nco.json("monitor")
    assert not [a for a in nco.json("alerts") if a["kind"] in ("missing-on-device", "unknown-module-on-device",
                                                            "host-key-mismatch")]
    results = nco.json("security-check")
    assert sorted((r["device"], r["module"], r["passed"]) for r in results) == [
        ("client", cid, True), ("server", sid, True)], results
