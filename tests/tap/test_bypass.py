"""Sockets that escape the tap are reported (issue 22, "no silent bypass"):
a socket a byte-changing module's match selects, held by a static binary
(`not-tapped`) or by a tapped process that drives it through io_uring
(`io-uring`), shows in the module's `bypassed` counter and arrives as a
`module-bypassed` notification; a tapped process on the same port is not
reported."""
import pytest

from taplab import (BypassClient, HoldingServer, build_bypass_client, module, next_notification,
                    wait_for)
from test_stream import stream_params


def client_match(port):
    return f"<protocol>tcp</protocol><destination-port>{port}</destination-port>"


def subscribe(tap):
    sub = tap.second_session()
    sub.create_subscription()
    return sub


def test_a_static_binary_is_reported_and_a_tapped_client_is_not(tap, procs, tmp_path):
    static = build_bypass_client(tmp_path, static=True)
    dynamic = build_bypass_client(tmp_path, static=False)
    srv = HoldingServer()
    procs.append(srv)
    tap.edit(module(1, "stream-tag", 10, client_match(srv.port), stream_params()))
    sub = subscribe(tap)

    # A tapped client first: the tap lists its socket with the module.
    tapped = BypassClient(dynamic, "plain", srv.port, env=tap.env())
    procs.append(tapped)
    wait_for(lambda: any(s["modules"] == [1] and s["process"] == "bypass_client" for s in tap.state()[1]),
             10, "the tapped client's socket to be listed")

    # A static binary on the same port: the preload library cannot reach it.
    untapped = BypassClient(static, "plain", srv.port)
    procs.append(untapped)
    n = next_notification(sub, "module-bypassed", 15)
    assert n is not None, "no module-bypassed notification for the static client"
    assert n == {
        "id": "1", "reason": "not-tapped", "pid": str(untapped.pid), "process-name": "bypass_static",
        "protocol": "tcp", "source-address": "127.0.0.1", "source-port": str(untapped.port),
        "destination-address": "127.0.0.1", "destination-port": str(srv.port),
    }, n
    # The tapped client's socket was looked at in that same pass (it existed
    # before): it is not counted, the static one is, once.
    mods, socks = tap.state()
    assert mods[1]["bypassed"] == "1", mods[1]
    assert mods[1]["socket-count"] == "1", mods[1]

    # Each escaping socket is reported once: a second static connection is
    # the next notification, not the first one again.
    again = BypassClient(static, "plain", srv.port)
    procs.append(again)
    n = next_notification(sub, "module-bypassed", 15)
    assert n is not None and (n["pid"], n["source-port"]) == (str(again.pid), str(again.port)), n
    assert tap.state()[0][1]["bypassed"] == "2"


@pytest.mark.parametrize("mode", ["uring-connect", "uring-send"])
def test_a_tapped_process_using_io_uring_is_reported(tap, procs, tmp_path, mode):
    dynamic = build_bypass_client(tmp_path, static=False)
    srv = HoldingServer()
    procs.append(srv)
    tap.edit(module(1, "stream-tag", 10, client_match(srv.port), stream_params()))
    sub = subscribe(tap)
    client = BypassClient(dynamic, mode, srv.port, env=tap.env())
    procs.append(client)
    if client.unavailable:
        pytest.skip(f"the kernel refuses io_uring here ({client.unavailable}; sysctl kernel.io_uring_disabled?)")
    n = next_notification(sub, "module-bypassed", 15)
    assert n is not None, f"no module-bypassed notification for the io_uring client ({mode})"
    assert (n["id"], n["reason"], n["pid"], n["process-name"], n["source-port"]) == \
        ("1", "io-uring", str(client.pid), "bypass_client", str(client.port)), n
    mods, socks = tap.state()
    assert mods[1]["bypassed"] == "1", mods[1]
    listed = [s for s in socks if s["process"] == "bypass_client"]
    if mode == "uring-send":
        # The tap saw the connect (it lists the socket with the module) but
        # not the send that went through the ring.
        assert [s["modules"] for s in listed] == [[1]], socks
    else:
        # Connected through the ring: the tap never matched the socket.
        assert listed == [], socks
