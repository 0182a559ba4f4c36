"""What applications see through a tapped socket: readiness (poll, select,
epoll) and FIONREAD when the tap holds received bytes, non-blocking reads,
MSG_PEEK and MSG_WAITALL on a customized stream."""
import json
import socket
import subprocess
import sys
import threading

import pytest

from taplab import module

# A stream that starts like the stream tag's default tag but is not tagged:
# the client module holds the 10 matching bytes, then must give them back.
TRICKY = b"XTAGTAGTAG" + b"hello world, not tagged at all"

READER = r"""
import fcntl, json, os, select, socket, struct, sys, termios
port, how = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port))
s.setblocking(False)
want = int(sys.argv[3])
got = b""
waits = []
fionread = []
ep = None
if how == "epoll":
    ep = select.epoll()
    ep.register(s.fileno(), select.EPOLLIN)
while len(got) < want:
    if how == "poll":
        p = select.poll(); p.register(s, select.POLLIN)
        ready = bool(p.poll(3000))
    elif how == "select":
        ready = bool(select.select([s], [], [], 3)[0])
    else:
        ready = bool(ep.poll(3))
    waits.append(ready)
    if not ready:
        break
    try:
        chunk = s.recv(4)
    except BlockingIOError:
        continue
    if not chunk:
        break
    got += chunk
    n = struct.unpack("i", fcntl.ioctl(s.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
    fionread.append(n)
print(json.dumps({"got": got.decode("latin-1"), "waits": waits, "fionread": fionread}))
"""


def serve_once(payload, hold_open):
    """A plain (untapped) server that sends `payload` and keeps the
    connection open until `hold_open` is set."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def run():
        conn, _ = srv.accept()
        conn.sendall(payload)
        hold_open.wait(30)
        conn.close()
        srv.close()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return port, t


@pytest.mark.parametrize("how", ["poll", "select", "epoll"])
def test_held_bytes_are_readable_and_counted(tap, how):
    hold = threading.Event()
    port, t = serve_once(TRICKY, hold)
    tap.edit(module(1, "stream-tag", 10,
                    f"<protocol>tcp</protocol><destination-port>{port}</destination-port>"))
    try:
        p = subprocess.run([sys.executable, "-c", READER, str(port), how, str(len(TRICKY))],
                           env=tap.env(), capture_output=True, text=True, timeout=60)
    finally:
        hold.set()
        t.join(10)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    # Every byte arrives, in order, although the peer sent everything at
    # once and then went quiet: held bytes made the socket readable.
    assert r["got"].encode("latin-1") == TRICKY
    assert all(r["waits"]), f"{how} reported nothing while the tap held bytes: {r}"
    # FIONREAD counted held bytes once the kernel queue was empty.
    assert r["fionread"][-1] == 0 and any(n > 0 for n in r["fionread"]), r["fionread"]


PEEKER = r"""
import json, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /x HTTP/1.0\r\n\r\n")
peek = s.recv(100, socket.MSG_PEEK)
first = s.recv(100)
rest = s.recv(int(sys.argv[2]) - len(first), socket.MSG_WAITALL)
print(json.dumps({"peek": peek.hex(), "first": first.hex(), "rest": len(rest), "eof": s.recv(10) == b""}))
"""

SERVER = r"""
import socket, sys
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
conn.recv(100)
data = bytes(range(256)) * 40
for i in range(0, len(data), 777):
    conn.sendall(data[i:i + 777])
conn.close()
"""


def test_peek_and_waitall_on_a_tagged_stream(tap, procs):
    tap.edit(module(1, "stream-tag", 10, "<protocol>tcp</protocol>",
                    "<stream-tag><interval>100</interval></stream-tag>"))
    server = subprocess.Popen([sys.executable, "-c", SERVER], env=tap.env(), stdout=subprocess.PIPE, text=True)
    procs.append(server)
    port = int(server.stdout.readline())
    total = 256 * 40
    p = subprocess.run([sys.executable, "-c", PEEKER, str(port), str(total)], env=tap.env(),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    data = bytes(range(256)) * 40
    first = bytes.fromhex(r["first"])
    assert bytes.fromhex(r["peek"]) == first[:len(bytes.fromhex(r["peek"]))] and r["peek"]
    assert first == data[:len(first)]
    assert len(first) + r["rest"] == total and r["eof"]
    mods, _ = tap.state()
    assert int(mods[1]["bytes-sent"]) == total, mods

