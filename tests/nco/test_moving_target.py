"""Moving-target rotation (dissertation §6.2.7): `serve --rotate` rotates
a DNS customization and a stream customization on a schedule, each time
to a fresh tag, under a dig loop and a long TCP transfer: no query fails,
the transfer is exact, every rotation is in the CIB history.

L45_MOVING_TARGET_SECONDS (default 20) sets how long the traffic runs; the
soak of record is 600 s with `--every 30s` (docs/nco.md)."""
import os
import subprocess
import time

from taplab import NS, DigLoop, Dnsmasq, wait_for
from test_stream import Server, make_file, sha256

SECONDS = float(os.environ.get("L45_MOVING_TARGET_SECONDS", "20"))
EVERY = os.environ.get("L45_MOVING_TARGET_EVERY", "3s")


def current_tags(dev):
    """{module name: tag} of the device's running configuration."""
    data = dev.nc.get_config(source="running", filter=("subtree", f'<customizations xmlns="{NS}"/>')).data_ele
    return {m.findtext(f"{{{NS}}}name"): m.findtext(f".//{{{NS}}}tag") for m in data.iter(f"{{{NS}}}module")}


def test_scheduled_rotation_with_fresh_tags_loses_nothing(nco, make_tap, tmp_path, cleanup):
    client_dev, server_dev = make_tap(), make_tap()
    dns = Dnsmasq(tmp_path, env=server_dev.env())
    cleanup.append(dns)
    files = tmp_path / "www"
    files.mkdir()
    rate = 1024 * 1024
    size = int(SECONDS * rate)
    digest = make_file(files / "big", size)
    web = Server(files, server_dev.env())
    cleanup.append(web)
    nco.add_tap_device("client", client_dev, role="client")
    nco.add_tap_device("server", server_dev, role="server")
    dns_rule = ["--name", "dns", "--kind", "dns-front-tag", "--priority", "10", "--protocol", "udp"]
    nco.json("modules", "deploy", "--device", "client", *dns_rule, "--dst-port", str(dns.port))
    nco.json("modules", "deploy", "--device", "server", *dns_rule, "--src-port", str(dns.port))
    web_rule = ["--name", "web", "--kind", "stream-tag", "--priority", "10", "--protocol", "tcp"]
    nco.json("modules", "deploy", "--device", "client", *web_rule, "--dst-port", str(web.port))
    nco.json("modules", "deploy", "--device", "server", *web_rule, "--src-port", str(web.port))

    transfer = subprocess.Popen(["curl", "-sS", "--limit-rate", str(rate), "-o", str(tmp_path / "got"),
                                 f"http://127.0.0.1:{web.port}/big"],
                                env=client_dev.env(), stderr=subprocess.PIPE, text=True)
    loop = DigLoop(dns.port, client_dev.env(), timeout=3)
    loop.start()
    seen_tags = set()
    try:
        nco.serve("--state-req-window", "60", "--sec-check-window", "3600",
                  "--rotate", "dns:1s", "--rotate", "web:until-idle", "--every", EVERY)
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline:
            tags = current_tags(server_dev)
            seen_tags.update(v for k, v in tags.items() if k.startswith("dns"))
            time.sleep(0.5)   # sampling the configuration, not synchronising
        transfer.wait(timeout=SECONDS + 120)
        # The stream customization moves on once the transfer is over.
        wait_for(lambda: any(n.startswith("web-r") for n in current_tags(server_dev)), 90,
                 "the stream customization to rotate after the transfer")
        (files / "small").write_bytes(os.urandom(300_000))
        after = subprocess.run(["curl", "-sS", "-o", str(tmp_path / "small"), f"http://127.0.0.1:{web.port}/small"],
                               env=client_dev.env(), capture_output=True, text=True, timeout=60)
    finally:
        loop.stop()
        if transfer.poll() is None:
            transfer.kill()
        nco.stop()
    assert loop.ok > 0
    assert not loop.failures, f"{len(loop.failures)} of {loop.ok + len(loop.failures)} failed: {loop.failures[0]}"
    assert transfer.returncode == 0, transfer.stderr.read()
    assert sha256(tmp_path / "got") == digest
    assert after.returncode == 0 and (tmp_path / "small").read_bytes() == (files / "small").read_bytes()
    history = nco.json("history", "--device", "server", "--limit", "100000")
    revoked = [h for h in history if h["event"] == "module-revoked"]
    dns_generations = {n for n in current_tags(server_dev) if n.startswith("dns")}
    # Several rotations happened, each a new module with a fresh tag.
    rotations = len([h for h in history if h["event"] == "module-deployed"]) - 2
    assert rotations >= 2, history
    assert len(seen_tags) >= 3, seen_tags
    assert revoked, history
    assert len(dns_generations) == 1 and next(iter(dns_generations)).startswith("dns-r"), dns_generations


def test_stopping_mid_rotation_finishes_it(nco, make_tap, tmp_path, cleanup):
    """SIGTERM while a rotation keeps both generations (its overlap): the
    service finishes that rotation before it exits, so one generation is
    left, and none has started after the signal."""
    client_dev, server_dev = make_tap(), make_tap()
    dns = Dnsmasq(tmp_path, env=server_dev.env())
    cleanup.append(dns)
    nco.add_tap_device("client", client_dev, role="client")
    nco.add_tap_device("server", server_dev, role="server")
    dns_rule = ["--name", "dns", "--kind", "dns-front-tag", "--priority", "10", "--protocol", "udp"]
    nco.json("modules", "deploy", "--device", "client", *dns_rule, "--dst-port", str(dns.port))
    nco.json("modules", "deploy", "--device", "server", *dns_rule, "--src-port", str(dns.port))
    loop = DigLoop(dns.port, client_dev.env(), timeout=3)
    loop.start()
    try:
        # The overlap keeps the old generation while dig traffic flows.
        nco.serve("--state-req-window", "60", "--sec-check-window", "3600",
                  "--rotate", "dns:3s", "--every", "1s")
        wait_for(lambda: len(current_tags(server_dev)) == 2, 60, "a rotation's overlap (two generations)")
        nco.stop()
        assert nco.service.returncode == 0
    finally:
        loop.stop()
        nco.stop()
    generations = set(current_tags(server_dev))
    assert generations == {"dns-r2"}, generations
    assert not loop.failures, loop.failures[0]
