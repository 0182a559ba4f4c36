"""A libuv-style writer and a slow reader, for partial and vectored sends
through the tap (test_partial_sends.py; also runnable by hand).

    python3 partial_sends.py send PORT MODE TOTAL    # prints "ready", serves one connection
    python3 partial_sends.py recv PORT TOTAL         # prints a JSON verdict

The writer sends TOTAL pseudo-random bytes on a non-blocking socket with a
small send buffer, as many buffers of odd sizes, the way libuv writes a
large `res.end(buf)`: it hands the kernel up to IOV buffers at once
(`writev` or `sendmsg`), advances through them by the count it is told,
and after a short count or EAGAIN waits for EPOLLOUT and retries the
rest. MODE: writev | sendmsg (level-triggered, like libuv) | et (writev,
edge-triggered: write until EAGAIN, then wait for the edge, like nginx);
or from a file: sendfile (with an offset, like nginx), sendfile-pos (the
file position, checked at the end), sendfile-blocking (a blocking socket),
splice (file to pipe, pipe to socket).
At the end it shuts its side down (the peer sees end of stream after the
last byte it was told went out) and waits for the peer to close.

The reader reads small pieces with a small receive buffer and reports how
many bytes it got and where they first differ from what was sent.
"""
import hashlib
import json
import os
import random
import select
import socket
import sys

IOV = 64
SIZES = [1, 7, 999, 1000, 1001, 4093, 65537, 3, 131071, 17, 2048, 32769, 511, 12345]


def pattern(total):
    return random.Random(45).randbytes(total)


def buffers(data):
    """The payload cut into buffers of odd sizes."""
    out, at, i = [], 0, 0
    view = memoryview(data)
    while at < len(data):
        n = min(SIZES[i % len(SIZES)], len(data) - at)
        out.append(view[at:at + n])
        at += n
        i += 1
    return out


def send(port, mode, total):
    data = pattern(total)
    bufs = buffers(data)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1)
    print("ready", flush=True)
    conn, _ = srv.accept()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    conn.setblocking(False)
    fd = conn.fileno()
    ep = select.epoll()
    edge = mode == "et"
    ep.register(fd, select.EPOLLOUT | (select.EPOLLET if edge else 0))
    if mode.startswith(("sendfile", "splice")):
        stats = send_file(conn, ep, mode, data)
        finish(conn)
        print(json.dumps(stats), flush=True)
        return
    i, off = 0, 0
    calls = short = again = 0
    while i < len(bufs):
        batch = [bufs[i][off:]] + bufs[i + 1:i + IOV]
        calls += 1
        try:
            n = conn.sendmsg(batch) if mode == "sendmsg" else os.writev(fd, batch)
        except BlockingIOError:
            again += 1
            ep.poll(30)
            continue
        want = sum(len(b) for b in batch)
        assert 0 <= n <= want, (n, want)
        # Advance through the buffers by the count the call returned.
        left = n
        while left > 0:
            room = len(bufs[i]) - off
            if left >= room:
                left -= room
                i, off = i + 1, 0
            else:
                off += left
                left = 0
        if n < want:
            short += 1
            if not edge:
                ep.poll(30)  # libuv: a short write waits for EPOLLOUT
    finish(conn)
    print(json.dumps({"calls": calls, "short": short, "eagain": again}), flush=True)


def finish(conn):
    conn.shutdown(socket.SHUT_WR)
    conn.setblocking(True)
    conn.settimeout(60)
    while conn.recv(65536):
        pass
    conn.close()


def send_file(conn, ep, mode, data):
    """The payload from a file, by sendfile or splice, retried after short
    counts and EAGAIN as nginx does."""
    path = f"/tmp/l45-partial-{os.getpid()}"
    with open(path, "wb") as f:
        f.write(data)
    src = os.open(path, os.O_RDONLY)
    os.unlink(path)
    fd = conn.fileno()
    if mode == "sendfile-blocking":
        conn.setblocking(True)
    total, calls, short, again = len(data), 0, 0, 0
    sent = 0
    pipe_r, pipe_w = os.pipe() if mode == "splice" else (None, None)
    in_pipe = 0
    while sent < total:
        calls += 1
        want = total - sent
        try:
            if mode == "splice":
                if in_pipe == 0:
                    in_pipe = os.splice(src, pipe_w, min(want, 65536))
                asked = in_pipe
                n = os.splice(pipe_r, fd, in_pipe)
                in_pipe -= n
            elif mode == "sendfile-pos":
                n = os.sendfile(fd, src, None, want)
                asked = want
            else:
                n = os.sendfile(fd, src, sent, want)
                asked = want
        except BlockingIOError:
            again += 1
            ep.poll(30)
            continue
        assert 0 < n <= asked, (n, asked)
        sent += n
        if n < asked:
            short += 1
            ep.poll(30)
    stats = {"calls": calls, "short": short, "eagain": again}
    if mode == "sendfile-pos":
        # The file position moved by exactly what was sent.
        stats["position"] = os.lseek(src, 0, os.SEEK_CUR)
    return stats


def recv(port, total):
    want = hashlib.sha256(pattern(total)).hexdigest()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(60)
    s.connect(("127.0.0.1", port))
    got = bytearray()
    while True:
        b = s.recv(3000)
        if not b:
            break
        got += b
    s.close()
    expect = pattern(total)
    first_diff = next((k for k in range(min(len(got), total)) if got[k] != expect[k]), None) \
        if hashlib.sha256(got).hexdigest() != want else None
    print(json.dumps({"len": len(got), "exact": hashlib.sha256(got).hexdigest() == want,
                      "first_diff": first_diff}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    else:
        recv(int(sys.argv[2]), int(sys.argv[3]))
