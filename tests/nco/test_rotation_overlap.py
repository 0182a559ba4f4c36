"""Rotation with an overlap (dissertation §5.4) under impairment.

A relay between the DNS client and server holds every query for a random
0-1.5 s, so queries overtake each other and some tagged in the old format
arrive after the switch. Without an overlap the old module is revoked
while they are still in flight and they fail; with `--overlap` it stays
below the new one until its counters show no more old-format traffic, and
no query fails. This kernel has no netem qdisc, so the delay and
reordering are made in user space (the relay below).
"""
import heapq
import subprocess
import random
import select
import socket
import threading
import time

import pytest

from taplab import DigLoop, Dnsmasq, wait_for

HOLD_MAX = 1.5      # seconds a query may be held by the relay
DIG_TIMEOUT = 8     # far longer than any hold: a late answer still counts, even on a loaded host
LOOPS = 6           # concurrent dig loops: always some queries in flight


class ImpairingRelay:
    """UDP relay from clients to `upstream_port`: each client datagram is
    held for a random 0..HOLD_MAX s before it is forwarded (delay and
    reordering); answers go straight back."""

    def __init__(self, upstream_port, seed=4545):
        self.upstream = ("127.0.0.1", int(upstream_port))
        self.listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.listen.bind(("127.0.0.1", 0))
        self.port = self.listen.getsockname()[1]
        self.rng = random.Random(seed)
        self.by_client, self.client_of = {}, {}
        self.held = []          # heap of (due, seq, datagram, upstream socket)
        self.seq = 0
        self.forwarded = 0
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def upstream_socket(self, client):
        s = self.by_client.get(client)
        if s is None:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect(self.upstream)
            self.by_client[client] = s
            self.client_of[s] = client
        return s

    def run(self):
        while not self.stop_flag.is_set():
            now = time.monotonic()
            while self.held and self.held[0][0] <= now:
                _, _, data, up = heapq.heappop(self.held)
                up.send(data)
                self.forwarded += 1
            timeout = min(0.1, max(0.0, self.held[0][0] - now)) if self.held else 0.1
            readable, _, _ = select.select([self.listen, *self.client_of], [], [], timeout)
            for s in readable:
                if s is self.listen:
                    data, client = s.recvfrom(65536)
                    self.seq += 1
                    heapq.heappush(self.held, (time.monotonic() + self.rng.uniform(0, HOLD_MAX),
                                               self.seq, data, self.upstream_socket(client)))
                else:
                    try:
                        self.listen.sendto(s.recv(65536), self.client_of[s])
                    except ConnectionRefusedError:
                        pass

    def stop(self):
        self.stop_flag.set()
        self.thread.join(10)
        for s in [self.listen, *self.client_of]:
            s.close()


def rotate_under_impairment(nco, make_tap, tmp_path, cleanup, overlap):
    """Runs the dig loops through the relay across one rotation; returns
    (answered, failed outputs, rotation steps)."""
    client_dev, server_dev = make_tap(), make_tap()
    dns = Dnsmasq(tmp_path, env=server_dev.env())
    cleanup.append(dns)
    relay = ImpairingRelay(dns.port)
    cleanup.append(relay)
    nco.add_tap_device("client", client_dev, role="client")
    nco.add_tap_device("server", server_dev, role="server")
    common = ["modules", "deploy", "--name", "m1", "--kind", "dns-front-tag", "--priority", "10", "--protocol", "udp"]
    nco.json(*common, "--device", "client", "--dst-port", str(relay.port))
    nco.json(*common, "--device", "server", "--src-port", str(dns.port))
    loops = [DigLoop(relay.port, client_dev.env(), timeout=DIG_TIMEOUT, period=0) for _ in range(LOOPS)]
    answered = lambda: sum(lp.ok for lp in loops)  # noqa: E731
    failures = lambda: [f for lp in loops for f in lp.failures]  # noqa: E731
    for lp in loops:
        lp.start()
    try:
        wait_for(lambda: answered() >= 2 * LOOPS or failures(), 60, "queries before the rotation")
        steps = nco.json("rotate", "--from", "m1", "--to-name", "m2", "--to-kind", "dns-compression",
                         "--overlap", overlap)
        before = answered()
        # Every query sent before the switch has been answered or failed
        # once each loop has finished another one.
        wait_for(lambda: answered() + len(failures()) >= before + 2 * LOOPS, 60, "queries after the rotation")
    finally:
        for lp in loops:
            lp.stop()
    assert relay.forwarded > 0
    return answered(), failures(), steps


def test_without_overlap_late_queries_in_the_old_format_fail(nco, make_tap, tmp_path, cleanup):
    answered, failures, steps = rotate_under_impairment(nco, make_tap, tmp_path, cleanup, "none")
    assert [s["step"] for s in steps] == ["deploy new module below the old one", "raise on the receivers",
                                          "raise on the senders", "revoke the old module"]
    # The failure the dissertation predicts: this test can fail.
    assert failures, f"no query failed among {answered} although the old module went at once"


def test_with_overlap_no_query_fails(nco, make_tap, tmp_path, cleanup):
    answered, failures, steps = rotate_under_impairment(nco, make_tap, tmp_path, cleanup, "2s")
    assert not failures, f"{len(failures)} of {answered + len(failures)} queries failed: {failures[0]}"
    names = [s["step"] for s in steps]
    assert names == ["deploy new module below the old one", "raise on the receivers", "raise on the senders",
                     "keep the old module until its traffic stops", "revoke the old module"], names
    kept = next(s for s in steps if s["step"].startswith("keep"))
    assert kept["ms"] >= 2000, kept


def test_overlap_bad_values_are_refused_and_change_nothing(nco, make_tap):
    dev = make_tap()
    nco.add_tap_device("d1", dev, role="client")
    for bad in ["soon", "-2s", "5 weeks"]:
        p = nco.run("rotate", "--from", "m1", "--to-name", "m2", "--to-kind", "dns-compression",
                    "--senders", "d1", f"--overlap={bad}", check=False)
        assert p.returncode != 0 and "is not a duration" in p.stderr, (bad, p.stderr)
    events = [h["event"] for h in nco.json("history")]
    assert events == ["device-added"], events


def test_until_idle_keeps_a_live_tcp_transfer_exact(nco, make_tap, tmp_path, cleanup):
    """A stream tag cannot change format mid-stream: with `until-idle` the
    live transfer keeps the old module to its end, byte for byte; the old
    module goes once no socket uses it, and a new connection gets the new
    one."""
    from test_stream import Server, curl, make_file, sha256
    client_dev, server_dev = make_tap(), make_tap()
    files = tmp_path / "www"
    files.mkdir()
    size = 12 * 1024 * 1024
    digest = make_file(files / "big", size)
    srv = Server(files, server_dev.env())
    cleanup.append(srv)
    nco.add_tap_device("client", client_dev, role="client")
    nco.add_tap_device("server", server_dev, role="server")
    common = ["modules", "deploy", "--name", "m1", "--kind", "stream-tag", "--priority", "10", "--protocol", "tcp",
              "--param", "interval=1000"]
    nco.json(*common, "--device", "client", "--dst-port", str(srv.port))
    nco.json(*common, "--device", "server", "--src-port", str(srv.port))
    url = f"http://127.0.0.1:{srv.port}/big"
    # About 12 s at 1 MB/s: the rotation starts during the transfer.
    transfer = subprocess.Popen(["curl", "-sS", "--limit-rate", "1M", "-o", str(tmp_path / "live"), url],
                                env=client_dev.env(), stderr=subprocess.PIPE, text=True)
    cleanup.append(Stopper(transfer))
    wait_for(lambda: (tmp_path / "live").exists() and (tmp_path / "live").stat().st_size > 256 * 1024, 30,
             "the transfer to be under way")
    assert transfer.poll() is None and (tmp_path / "live").stat().st_size < size
    steps = nco.json("rotate", "--from", "m1", "--to-name", "m2", "--to-kind", "stream-tag",
                     "--param", "interval=300", "--overlap", "until-idle")
    # The rotation waited for the live transfer to end.
    assert transfer.poll() is not None, "the rotation finished while the old module was still in use"
    assert transfer.returncode == 0, transfer.stderr.read()
    assert sha256(tmp_path / "live") == digest
    names = [s["step"] for s in steps]
    assert names == ["deploy new module below the old one", "raise on the receivers", "raise on the senders",
                     "deprecate the old module and wait until no socket uses it", "revoke the old module"], names
    for dev in (client_dev, server_dev):
        assert dev_module_names(dev) == ["m2"]
    # A new connection is customized by the new module, exactly.
    r = curl(url, tmp_path / "after", env=client_dev.env())
    assert r.returncode == 0, r.stderr
    assert sha256(tmp_path / "after") == digest
    mods, _ = server_dev.state()
    assert [int(st["bytes-sent"]) >= size for st in mods.values()] == [True], mods


class Stopper:
    def __init__(self, proc):
        self.proc = proc

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def dev_module_names(dev):
    from taplab import NS
    data = dev.nc.get_config(source="running", filter=("subtree", f'<customizations xmlns="{NS}"/>')).data_ele
    return [m.findtext(f"{{{NS}}}name") for m in data.iter(f"{{{NS}}}module")]
