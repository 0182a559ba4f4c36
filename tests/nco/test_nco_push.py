"""`l45-nco serve` follows agents by YANG-push (RFC 8641) instead of polling
`report`, and still polls agents that do not offer it."""
import sqlite3
import time

from conftest import Emulator
from taplab import Dnsmasq, dig, wait_for


def deployment(nco, device, mid):
    """(state, socket_count, bytes_sent, last_report_at) of a module in the CIB."""
    with sqlite3.connect(nco.cib) as db:
        return db.execute(
            "SELECT x.state, x.socket_count, x.bytes_sent, x.last_report_at FROM deployment x"
            " JOIN module m ON m.id = x.module_row JOIN device d ON d.id = m.device_id"
            " WHERE d.name = ? AND m.module_id = ?", (device, mid)).fetchone()


def deploy(nco, device, extra=()):
    return nco.json("modules", "deploy", "--device", device, "--name", "m1", "--kind", "dns-end-tag", *extra)[0]["module"]


def test_statistics_and_idle_reach_the_cib_by_push_within_a_second(nco, make_tap, tmp_path, cleanup):
    dev = make_tap()
    dns = Dnsmasq(tmp_path)
    cleanup.append(dns)
    nco.add_tap_device("d1", dev)
    mid = deploy(nco, "d1", ["--protocol", "udp", "--dst-port", dns.port])
    # No polling in the test's time: only the subscription brings news.
    nco.serve("--state-req-window", "3600", "--sec-check-window", "3600")
    wait_for(lambda: deployment(nco, "d1", mid), 20, "the first report")
    assert deployment(nco, "d1", mid)[2] == 0
    answered, out = dig(dns.port, env=dev.env())
    assert answered, out
    done = time.monotonic()
    wait_for(lambda: deployment(nco, "d1", mid)[2] > 0, 5, "bytes-sent in the CIB")
    took = time.monotonic() - done
    print(f"statistics in the CIB {took * 1000:.0f} ms after the traffic")
    assert took <= 1.0, f"statistics reached the CIB {took:.2f} s after the traffic"
    # Deprecated and idle (dig has exited): the pushed state queues the revoke.
    nco.json("modules", "deprecate", "--device", "d1", "--id", mid)
    done = time.monotonic()
    wait_for(lambda: deployment(nco, "d1", mid)[0] in ("deprecated", "revoked"), 5, "deprecated in the CIB")
    wait_for(lambda: any(h["event"] == "auto-revoke" for h in nco.json("history", "--device", "d1")), 5,
             "the automatic revoke")
    took = time.monotonic() - done
    print(f"idle deprecated module's revoke queued {took * 1000:.0f} ms after deprecate")
    assert took <= 1.0, f"the idle deprecated module reached the CIB {took:.2f} s after deprecate"


def report_times(nco, device, mid, seconds):
    """The distinct last_report_at values seen over `seconds`."""
    seen = set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        row = deployment(nco, device, mid)
        if row:
            seen.add(row[3])
        time.sleep(0.1)
    return seen


def test_push_replaces_polling_and_agents_without_it_are_polled(nco, tmp_path, cleanup):
    pushing = Emulator(tmp_path / "push", 1)
    polled = Emulator(tmp_path / "poll", 1, extra=["--no-yang-push"])
    cleanup.extend([pushing, polled])
    (push_name, push_port), = pushing.devices.items()
    (poll_name, poll_port), = polled.devices.items()
    nco.run("devices", "add", "pushed", "--address", f"127.0.0.1:{push_port}", "--key", pushing.key)
    nco.run("devices", "add", "polled", "--address", f"127.0.0.1:{poll_port}", "--key", polled.key)
    pm = deploy(nco, "pushed")
    qm = deploy(nco, "polled")
    nco.serve("--state-req-window", "1", "--sec-check-window", "3600")
    wait_for(lambda: deployment(nco, "pushed", pm), 20, "the first report of the pushing agent")
    # Once a second round has polled, the pushing agent's subscription
    # (established right after the first round) is in place.
    polled_at = set()
    wait_for(lambda: polled_at.add((deployment(nco, "polled", qm) or (0, 0, 0, None))[3]) or len(polled_at - {None}) >= 2,
             20, "a second polling round")
    # The polled agent is asked every second; the pushing one's module does
    # not change (recording tap), so nothing is recorded for it.
    assert len(report_times(nco, "polled", qm, 3.5)) >= 3
    assert len(report_times(nco, "pushed", pm, 3.5)) == 1
