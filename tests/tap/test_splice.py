"""Spliced datagrams: a UDP socket whose chain is one insertion (front or
middle tag, clearance code) is customized by scatter/gather I/O without
running the module. Its outcome must be the module's for every call shape
the tap interposes: buffer sizes either side of the stack buffers, one and
several iovecs, truncation, peeks, datagrams the server must drop."""
import json
import select
import socket
import subprocess
import sys

import pytest

from taplab import free_udp_tcp_port, module

TAG = b"XTAGXdig"
CODE = b"0123456789abcdefghijklmnopqrstuv"
KINDS = {
    # kind: (parameters, inserted bytes, offset)
    "dns-front-tag": (f"<dns-tag><tag>{TAG.decode()}</tag></dns-tag>", TAG, 0),
    "dns-middle-tag": (f"<dns-tag><tag>{TAG.decode()}</tag></dns-tag>", TAG, 12),
    "dns-clearance-filter": (f"<clearance><code>{CODE.decode()}</code></clearance>", CODE, 0),
}


def payload(n, k):
    """n bytes, different for every message k."""
    return bytes((i * 7 + k * 13 + 1) % 256 for i in range(n))


def insert(p, tag, at):
    return p[:at] + tag + p[at:]


SERVER = r"""
import ctypes, errno, json, os, select, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
def retried(call):
    # A non-blocking receive that dropped a datagram says EAGAIN: wait, again.
    while True:
        try:
            return call()
        except BlockingIOError:
            select.select([s], [], [], 10)
port, cases, blocking = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3] == "1"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", port))
if not blocking:
    s.settimeout(10)  # non-blocking receives, with poll in between
print("bound", flush=True)
for how, size in cases:
    flags, addr, n = 0, None, None
    if how == "recvmsg":
        d, _, flags, addr = s.recvmsg(size)
    elif how == "peek":
        d, _, flags, addr = s.recvmsg(size, 0, socket.MSG_PEEK)
    elif how == "recvfrom":
        d, addr = s.recvfrom(size)
    elif how == "recv_into":
        b = bytearray(size)
        d = bytes(b[:s.recv_into(b)])
    elif how == "read":
        d = retried(lambda: os.read(s.fileno(), size))
    elif how == "recv":
        d = s.recv(size)
    elif how == "recv_trunc":
        # MSG_TRUNC: the datagram's whole length, whatever the buffer.
        b = ctypes.create_string_buffer(max(size, 1))
        def trunc():
            n = libc.recv(s.fileno(), b, ctypes.c_size_t(size), socket.MSG_TRUNC)
            if n < 0 and ctypes.get_errno() == errno.EAGAIN:
                raise BlockingIOError
            return n
        n = retried(trunc)
        d = b.raw[:min(n, size)]
    print(json.dumps([d.hex(), flags & socket.MSG_TRUNC != 0, addr and addr[1], n]), flush=True)
"""

# (how, application buffer, payload length). 2048 bytes of stack buffer:
# the 1232-byte buffer (dnsmasq's) is received on the stack, the 4096- and
# 2100-byte ones scattered around the application's buffer.
RECV_CASES = [
    ("recvmsg", 1232, 40),
    ("recvmsg", 20, 40),
    ("recvmsg", 4096, 3000),
    ("recvmsg", 2100, 3000),
    ("recvfrom", 1232, 12),
    ("recvfrom", 4096, 12),
    ("recv_into", 64, 100),
    ("read", 1232, 33),
    # Buffers shorter than the shortest datagram the module recognises.
    ("recv", 4, 40),
    ("recvmsg", 4, 40),
    ("recv_trunc", 0, 40),
    ("recv_trunc", 30, 3000),
    ("peek", 1232, 40),
    ("recvmsg", 1232, 40),  # the datagram just peeked at
]


def answer(server, k):
    """The server's line for case k, or a failure naming the case (a
    datagram dropped that should have been delivered leaves the server
    waiting)."""
    ready, _, _ = select.select([server.stdout], [], [], 10)
    assert ready, f"case {k}: no answer from the server"
    line = server.stdout.readline()
    assert line, f"case {k}: the server ended"
    return json.loads(line)


@pytest.mark.parametrize("blocking", [True, False], ids=["blocking", "nonblocking"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_spliced_receive_strips_truncates_and_drops_as_the_module(tap, procs, kind, blocking):
    params, tag, at = KINDS[kind]
    port = free_udp_tcp_port()
    tap.edit(module(1, kind, 10, f"<protocol>udp</protocol><source-port>{port}</source-port>", params))
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port), json.dumps([[h, n] for h, n, _ in RECV_CASES]),
         "1" if blocking else "0"],
        env=tap.env(), stdout=subprocess.PIPE, text=True)
    procs.append(server)
    assert server.stdout.readline().strip() == "bound"
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    dest = ("127.0.0.1", port)
    good = wire_bytes = 0
    for k, (how, size, n) in enumerate(RECV_CASES):
        p = payload(n, k)
        if how == "recvmsg" and k > 0 and RECV_CASES[k - 1][0] == "peek":
            p = payload(n, k - 1)  # queued for the peek before
        else:
            if how != "peek":
                # What the server must drop first: untagged, too short for
                # the tag and a header, the tag one byte off.
                for bad in (p, insert(p[:3], tag, 0) if at == 0 else p[:at] + tag[:3],
                            insert(p, b"Y" + tag, at)):
                    client.sendto(bad, dest)
            client.sendto(insert(p, tag, at), dest)
        if how != "peek":
            good += 1
            wire_bytes += n + len(tag)
        got, trunc, src, full = answer(server, k)
        got = bytes.fromhex(got)
        if how == "peek":
            # A peek sees the datagram as it is on the wire (documented).
            assert got == insert(p, tag, at)[:size], how
            continue
        assert got == p[:size], f"case {k}: {how} into {size} of a {n}-byte payload"
        if how == "recvmsg":
            assert trunc == (n > size), f"case {k}: MSG_TRUNC"
        if how == "recv_trunc":
            assert full == n, f"case {k}: MSG_TRUNC returns the payload's whole length"
        if how in ("recvmsg", "recvfrom"):
            assert src == client.getsockname()[1], f"case {k}: source address"
    assert server.wait(timeout=10) == 0
    mods, _ = tap.state()
    assert int(mods[1]["messages-received"]) == good, mods
    # Credited with the whole datagram, truncated or not.
    assert int(mods[1]["bytes-received"]) == wire_bytes, mods


CLIENT = r"""
import json, os, socket, sys
dest = ("127.0.0.1", int(sys.argv[1]))
def payload(n, k):
    return bytes((i * 7 + k * 13 + 1) % 256 for i in range(n))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
out = [
    s.sendto(payload(5, 0), dest),                       # too short: as it is
    s.sendto(payload(40, 1), dest),                      # on the stack
    s.sendto(payload(600, 2), dest),                     # longer: an iovec list
    s.sendmsg([payload(5, 3), payload(10, 4), payload(30, 5)], [], 0, dest),
    s.sendmsg([payload(3, 6), payload(4, 7)], [], 0, dest),
    s.sendmsg([payload(300, 8)] * 3, [], 0, dest),
]
s.connect(dest)
out.append(s.send(payload(50, 9)))
out.append(os.write(s.fileno(), payload(13, 10)))
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
# An iovec with a null base is left out (as the general path's gather
# does), not sent as whatever the stack held.
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(iovec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]
data = ctypes.create_string_buffer(payload(20, 11), 20)
iovs = (iovec * 2)(iovec(None, 8), iovec(ctypes.cast(data, ctypes.c_void_p), 20))
out.append(libc.sendmsg(s.fileno(), ctypes.byref(msghdr(None, 0, iovs, 2, None, 0, 0)), 0))
# A bad message vector, raw (as dig calls it) and through libc: the
# kernel's error, not a crash.
for call in (lambda: libc.syscall(307, s.fileno(), None, 1, 0),  # SYS_sendmmsg
             lambda: libc.sendmmsg(s.fileno(), None, 1, 0)):
    ctypes.set_errno(0)
    out.append([call(), errno.errorcode.get(ctypes.get_errno())])
print(json.dumps(out), flush=True)
"""


@pytest.mark.parametrize("kind", list(KINDS))
def test_spliced_send_inserts_at_its_offset_for_every_call_shape(tap, kind):
    params, tag, at = KINDS[kind]
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(10)
    port = server.getsockname()[1]
    tap.edit(module(1, kind, 10, f"<protocol>udp</protocol><destination-port>{port}</destination-port>", params))
    sent = [payload(5, 0), payload(40, 1), payload(600, 2),
            payload(5, 3) + payload(10, 4) + payload(30, 5), payload(3, 6) + payload(4, 7),
            payload(300, 8) * 3, payload(50, 9), payload(13, 10), payload(20, 11)]
    p = subprocess.run([sys.executable, "-c", CLIENT, str(port)], env=tap.env(),
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    # The application sees its own byte counts.
    assert json.loads(p.stdout) == [len(x) for x in sent] + [[-1, "EFAULT"]] * 2
    for k, x in enumerate(sent):
        d, _ = server.recvfrom(8192)
        want = x if len(x) < 12 else insert(x, tag, at)
        assert d == want, f"message {k} ({len(x)} bytes)"
    mods, _ = tap.state()
    assert int(mods[1]["messages-sent"]) == sum(len(x) >= 12 for x in sent), mods
