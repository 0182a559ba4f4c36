"""Partial and vectored non-blocking sends through a customized stream (issue
22): whatever the application is told was sent reaches the peer, after the
chain, exactly once. The writer is libuv's way of sending a large buffer
(Node.js `res.end(buf)`): many iovecs of odd sizes, a small send buffer,
short counts and EAGAIN, retries of the rest after EPOLLOUT. The same from
a file (sendfile, splice): the bytes go through the chain too, not around
it, with sendfile's offsets and counts."""
import json
import pathlib
import subprocess
import sys

import pytest

from taplab import free_port, module

HERE = pathlib.Path(__file__).resolve().parent
PROG = str(HERE / "partial_sends.py")
TAG = "XTAGTAGTAGTAGTAGTAGTAGTAGTAGTAGX"
TOTAL = 8 * 1024 * 1024


def stream_tag(interval=1000):
    return f"<stream-tag><interval>{interval}</interval><tag>{TAG}</tag></stream-tag>"


@pytest.mark.parametrize("mode", ["writev", "sendmsg", "et", "sendfile", "sendfile-pos", "sendfile-blocking",
                                  "splice"])
def test_non_blocking_writer_is_exact_through_stream_tags(tap, procs, mode):
    port = free_port()
    tap.edit(module(1, "stream-tag", 10, f"<protocol>tcp</protocol><source-port>{port}</source-port>",
                    stream_tag()),
             module(2, "stream-tag", 10, f"<protocol>tcp</protocol><destination-port>{port}</destination-port>",
                    stream_tag()))
    sender = subprocess.Popen([sys.executable, PROG, "send", str(port), mode, str(TOTAL)], env=tap.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(sender)
    assert sender.stdout.readline().strip() == "ready", sender.stderr.read()
    r = subprocess.run([sys.executable, PROG, "recv", str(port), str(TOTAL)], env=tap.env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    out, err = sender.communicate(timeout=60)
    assert sender.returncode == 0, err
    wrote = json.loads(out)
    # The writer really met the cases this is about.
    if mode != "sendfile-blocking":
        assert wrote["short"] + wrote["eagain"] > 10, wrote
    if mode == "sendfile-pos":
        assert wrote["position"] == TOTAL, wrote
    assert got == {"len": TOTAL, "exact": True, "first_diff": None}, (got, wrote)
    mods, _ = tap.state()
    # The sender's module customized every byte once (none went around it);
    # the reader's module took out about one tag per 1000 bytes.
    assert int(mods[1]["bytes-sent"]) == TOTAL, mods[1]
    assert int(mods[2]["bytes-received"]) >= TOTAL + (TOTAL // 1000) * len(TAG), mods[2]
