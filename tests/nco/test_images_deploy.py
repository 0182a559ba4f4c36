"""`modules deploy --image` and `images remove`: the NCO installs the example
kind's image as the first step of each device's deploy request (once per
device, decided by the device's own /images state), resumes after being
killed, and removes images only where no module uses them."""
import os
import signal
import sqlite3
import subprocess

from conftest import NCO, Nco, free_port_block
from taplab import BASE, NS, Capture, Dnsmasq, TapAgent, dig, free_port, wait_for
from test_images_e2e import EXAMPLE, KEY, trust

NSMAP = {"l": NS}


def build_image(nco, tmp_path):
    built = nco.json("images", "build", EXAMPLE, "--out", tmp_path / "images")
    built = built[0] if isinstance(built, list) else built
    return built, nco.json("images", "key")["public_key"]


def images_state(dev):
    """{sha256: installed-at} of the images the device holds."""
    data = dev.nc.get(filter=("subtree", f'<images xmlns="{NS}"><image/></images>')).data_ele
    return {i.findtext("l:sha256", namespaces=NSMAP): i.findtext("l:installed-at", namespaces=NSMAP)
            for i in data.iterfind(".//l:image", NSMAP)}


def installed_kinds(dev):
    """Kind names of the device's running modules of an installed kind."""
    data = dev.nc.get_config(source="running", filter=("subtree", f'<customizations xmlns="{NS}"/>')).data_ele
    return [k.text for k in data.iterfind(".//l:installed/l:kind-name", NSMAP)]


def untrust(dev):
    """Removes the NCO's key from the device's trusted signers: from then
    on the device refuses any install-module of the NCO's images, so a
    deploy that succeeds did not send one."""
    dev.nc.edit_config(target="running", config=(
        f'<config xmlns="{BASE}"><images xmlns="{NS}" xmlns:nc="{BASE}">'
        f'<trusted-signer nc:operation="delete"><name>nco</name></trusted-signer></images></config>'))


def cib_rows(path, sql):
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def history_events(nco, device, event):
    return [h for h in nco.json("history", "--device", device, "--limit", "1000") if h["event"] == event]


def masked_queries(tmp_path, dns, env, n=3):
    """Runs n digs under a capture; returns (answers ok, queries on the wire)."""
    capture = Capture(tmp_path / f"dns-{free_port()}.pcap", f"udp port {dns.port}")
    try:
        results = [dig(dns.port, env=env) for _ in range(n)]
    finally:
        packets = capture.stop()
    queries = [p for proto, _, dport, p in packets if proto == "udp" and dport == dns.port]
    return all(ok for ok, _ in results), queries


def test_deploy_with_image_installs_once_per_device_and_resumes_after_a_kill(nco, make_tap, tmp_path, cleanup):
    client_dev, server_dev = make_tap(), make_tap()
    # dnsmasq drops to its own user before it reads the published image.
    os.chmod(server_dev.shm_dir, 0o755)
    dns = Dnsmasq(tmp_path, env=server_dev.env())
    cleanup.append(dns)
    nco.add_tap_device("client", client_dev, role="client")
    nco.add_tap_device("server", server_dev, role="server")
    # A third device is down while the deploy starts: its port refuses
    # (and the NCO's key for it is made with the agent, in its folder).
    late_port = free_port_block(1)
    late_dir = tmp_path / "late"
    late_key = late_dir / "key"
    nco.run("devices", "add", "late", "--address", f"127.0.0.1:{late_port}", "--key", late_key)

    built, public_key = build_image(nco, tmp_path)
    sha = built["sha256"]
    for dev in (client_dev, server_dev):
        trust(dev, public_key)
        assert images_state(dev) == {}

    deploy = subprocess.Popen(
        [NCO, "--json", "modules", "deploy", "--device", "client", "--device", "server", "--device", "late",
         "--name", "xor", "--kind", "udp-xor-mask", "--image", built["path"], "--protocol", "udp",
         "--param", f"key={KEY.hex()}"],
        env=nco.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def progress():
        rows = cib_rows(nco.cib, "SELECT d.name, r.state, r.attempts FROM request r JOIN module m ON m.id = r.module_row"
                                 " JOIN device d ON d.id = m.device_id")
        state = {d: (s, a) for d, s, a in rows}
        return (state.get("client", ("",))[0] == "confirmed" and state.get("server", ("",))[0] == "confirmed"
                and state.get("late", ("", 0))[0] in ("pending", "sent") and state["late"][1] >= 1)
    wait_for(progress, 60, "client and server deployed, late retrying")
    deploy.send_signal(signal.SIGKILL)
    deploy.wait()

    # The reachable devices got the image, then the module using it.
    first = {}
    for dev in (client_dev, server_dev):
        held = images_state(dev)
        assert list(held) == [sha], held
        first[dev] = held[sha]
        assert installed_kinds(dev) == ["udp-xor-mask"]
    ok, queries = masked_queries(tmp_path, dns, client_dev.env())
    assert ok and queries and all(q[:4] == b"L45x" for q in queries), queries[:1]

    # The late device comes up; someone installs the image on it by hand
    # (another NCO with its own CIB), so the NCO's CIB does not know.
    late = TapAgent(late_dir, port=late_port)
    cleanup.append(late)
    trust(late, public_key)
    other = Nco(tmp_path / "other")
    (tmp_path / "other").mkdir()
    other.run("devices", "add", "late", "--address", f"127.0.0.1:{late_port}", "--key", late_key)
    other.json("images", "push", built["path"], "--device", "late")
    by_hand = images_state(late)
    assert list(by_hand) == [sha]
    untrust(late)
    assert cib_rows(nco.cib, "SELECT count(*) FROM image_install i JOIN device d ON d.id = i.device_id"
                             " WHERE d.name = 'late'")[0][0] == 0

    # The NCO restarts as a service and finishes the request: the device
    # holds the digest, so it is not sent again (it would refuse it now:
    # the NCO's key is no longer trusted there); the CIB learns it holds it.
    nco.serve("--state-req-window", "3600", "--sec-check-window", "3600")
    wait_for(lambda: cib_rows(nco.cib, "SELECT count(*) FROM request WHERE state = 'confirmed'")[0][0] == 3,
             60, "the late device's deploy confirmed")
    nco.stop()
    assert images_state(late) == by_hand, "an image the device held was installed again"
    assert installed_kinds(late) == ["udp-xor-mask"]
    listed = nco.json("images", "list")
    assert [(i["sha256"], sorted(i["devices"])) for i in listed] == [(sha, ["client", "late", "server"])], listed
    # The CIB keeps the signature that vouches for the image.
    with open(f"{built['path']}.sig", "rb") as f:
        assert listed[0]["signature"] == f.read().hex()

    # A second deploy with the same image: the image step is a no-op (no
    # device trusts the NCO's key any more, so a resent image would fail).
    installs_before = {d: len(history_events(nco, d, "image-installed")) for d in ("client", "server", "late")}
    assert installs_before == {"client": 1, "server": 1, "late": 1}, installs_before
    for dev in (client_dev, server_dev):
        untrust(dev)
    again = nco.json("modules", "deploy", "--device", "client", "--device", "server", "--device", "late",
                     "--name", "xor2", "--kind", "udp-xor-mask", "--image", built["path"],
                     "--protocol", "tcp", "--param", f"key={KEY.hex()}")
    assert [r["state"] for r in again] == ["confirmed"] * 3, again
    for dev in (client_dev, server_dev, late):
        assert images_state(dev) == {sha: (first.get(dev) or by_hand[sha])}
        assert installed_kinds(dev) == ["udp-xor-mask", "udp-xor-mask"]
    assert {d: len(history_events(nco, d, "image-installed")) for d in installs_before} == installs_before
    # Each module row names its image.
    mods = nco.json("modules", "list")
    assert {m["image"] for m in mods} == {sha}, mods


def test_deploy_with_an_image_of_another_kind_is_refused_and_builds_nothing(nco, make_tap, tmp_path):
    dev = make_tap()
    nco.add_tap_device("d1", dev)
    built, _ = build_image(nco, tmp_path)
    p = nco.run("modules", "deploy", "--device", "d1", "--name", "x", "--kind", "dns-front-tag",
                "--image", built["path"], check=False)
    assert p.returncode == 1 and "is an image of kind udp-xor-mask, not dns-front-tag" in p.stderr, p.stderr
    assert cib_rows(nco.cib, "SELECT count(*) FROM module")[0][0] == 0
    # An untrusted device refuses the image: the deploy fails with the
    # device's error and nothing is configured.
    r = nco.json("modules", "deploy", "--device", "d1", "--name", "x", "--kind", "udp-xor-mask",
                 "--image", built["path"], "--param", f"key={KEY.hex()}", check=False)
    assert r[0]["state"] == "failed" and "not a trusted signer" in r[0]["error"], r
    assert images_state(dev) == {} and installed_kinds(dev) == []


def test_images_remove_is_refused_while_in_use_then_removes_everywhere(nco, make_tap, tmp_path):
    a, b = make_tap(), make_tap()
    nco.add_tap_device("a", a)
    nco.add_tap_device("b", b)
    built, public_key = build_image(nco, tmp_path)
    sha = built["sha256"]
    for dev in (a, b):
        trust(dev, public_key)
    nco.json("modules", "deploy", "--device", "a", "--device", "b", "--name", "xor", "--kind", "udp-xor-mask",
             "--image", built["path"], "--protocol", "udp", "--param", f"key={KEY.hex()}")
    nco.json("modules", "revoke", "--device", "b", "--name", "xor")

    # By kind, every holder: a still uses it and says so; b lets it go.
    p = nco.run("--json", "images", "remove", "udp-xor-mask", check=False)
    assert p.returncode == 2, p.stdout + p.stderr
    import json
    out = {o["device"]: o for o in json.loads(p.stdout)}
    assert out["a"]["ok"] is False and "in-use" in out["a"]["error"] and "is used by module(s) 1" in out["a"]["error"], out["a"]
    assert out["b"] == {"device": "b", "sha256": sha, "ok": True, "removed": True, "error": None}, out["b"]
    assert list(images_state(a)) == [sha] and images_state(b) == {}
    assert [(i["sha256"], i["devices"]) for i in nco.json("images", "list")] == [(sha, ["a"])]
    events = [h["event"] for h in nco.json("history", "--device", "b")]
    assert "image-removed" in events, events

    # Once the module is revoked, by digest.
    nco.json("modules", "revoke", "--device", "a", "--name", "xor")
    out = nco.json("images", "remove", sha)
    assert out == [{"device": "a", "sha256": sha, "ok": True, "removed": True, "error": None}], out
    assert images_state(a) == {}
    assert [(i["sha256"], i["devices"]) for i in nco.json("images", "list")] == [(sha, [])]
    # A device that does not hold it: done, nothing to remove.
    out = nco.json("images", "remove", sha, "--device", "a")
    assert out == [{"device": "a", "sha256": sha, "ok": True, "removed": False, "error": None}], out
    # Neither a digest nor a recorded kind.
    p = nco.run("images", "remove", "no-such-kind", check=False)
    assert p.returncode == 1 and "neither a SHA-256 nor the kind of a recorded image" in p.stderr, p.stderr
