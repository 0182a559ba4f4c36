"""TCP through the user-space tap: stream tag over HTTP and HTTPS, rate
limit activation, deprecation and revocation on live transfers."""
import hashlib
import os
import pathlib
import subprocess
import sys
import time

import pytest

from taplab import free_port, module, wait_for

TAG = b"XTAGTAGTAGTAGTAGTAGTAGTAGTAGTAGX"

TLS_SERVER = r"""
import functools, http.server, ssl, sys
port, directory, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
handler = functools.partial(Quiet, directory=directory)
httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
print("ready", flush=True)
httpd.serve_forever()
"""

PLAIN_SERVER = r"""
import functools, http.server, sys
port, directory = int(sys.argv[1]), sys.argv[2]
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
handler = functools.partial(Quiet, directory=directory)
httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
print("ready", flush=True)
httpd.serve_forever()
"""


def make_file(path, size):
    h = hashlib.sha256()
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as f:
        left = size
        i = 0
        while left > 0:
            # Vary the content cheaply so no two MiB are equal.
            block = (i.to_bytes(8, "big") + chunk[8:])[:min(left, len(chunk))]
            f.write(block)
            h.update(block)
            left -= len(block)
            i += 1
    return h.hexdigest()


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


class Server:
    def __init__(self, directory, env, tls=None):
        self.port = free_port()
        if tls:
            args = [sys.executable, "-c", TLS_SERVER, str(self.port), str(directory), *tls]
        else:
            args = [sys.executable, "-c", PLAIN_SERVER, str(self.port), str(directory)]
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def server_match(port):
    return f"<protocol>tcp</protocol><source-port>{port}</source-port>"


def client_match(port):
    return f"<protocol>tcp</protocol><destination-port>{port}</destination-port><process-name>curl</process-name>"


def stream_params(interval=1000):
    return f"<stream-tag><interval>{interval}</interval><tag>{TAG.decode()}</tag></stream-tag>"


def curl(url, out, env=None, extra=()):
    return subprocess.run(["curl", "-sS", "-k", "-o", str(out), *extra, url],
                          env=env or os.environ.copy(), capture_output=True, text=True, timeout=600)


@pytest.fixture
def files(tmp_path):
    d = tmp_path / "www"
    d.mkdir()
    return d


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_stream_tag_200mb_transfer_is_exact(tap, procs, tmp_path, files, tls):
    digest = make_file(files / "big", 200 * 1024 * 1024)
    tls_args = None
    if tls:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem"),
                        "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
        tls_args = (str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    srv = Server(files, tap.env(), tls_args)
    procs.append(srv)
    tap.edit(module(1, "stream-tag", 10, server_match(srv.port), stream_params()),
             module(2, "stream-tag", 10, client_match(srv.port), stream_params()))
    scheme = "https" if tls else "http"
    r = curl(f"{scheme}://127.0.0.1:{srv.port}/big", tmp_path / "got", env=tap.env())
    assert r.returncode == 0, r.stderr
    assert sha256(tmp_path / "got") == digest
    mods, _ = tap.state()
    # The server inserted about one tag per 1000 bytes, the client took them out.
    assert int(mods[1]["bytes-sent"]) >= 200 * 1024 * 1024
    assert int(mods[2]["bytes-received"]) >= 200 * 1024 * 1024 * 1032 // 1000
    # Negative control: a client without the module receives the tags.
    (files / "small").write_bytes(b"a" * 5000)
    r = curl(f"{scheme}://127.0.0.1:{srv.port}/small", tmp_path / "plain")
    assert r.returncode != 0, "a plain client understood a tagged stream"
    if not tls:
        import socket
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"GET /small HTTP/1.0\r\n\r\n")
            raw = b""
            while chunk := s.recv(65536):
                raw += chunk
        assert raw.startswith(TAG) and raw.count(TAG) >= 5
        untagged = raw.replace(TAG, b"")
        assert untagged.startswith(b"HTTP/1.0 200") and untagged.endswith(b"a" * 5000)


def test_rate_limit_attached_but_inactive_until_activated(tap, procs, tmp_path, files):
    (files / "f").write_bytes(os.urandom(256 * 1024))
    srv = Server(files, tap.env())
    procs.append(srv)
    tap.edit(module(5, "rate-limit", 10, server_match(srv.port), "<rate-limit><delay>100</delay></rate-limit>",
                    extra="<activated>false</activated>"))
    url = f"http://127.0.0.1:{srv.port}/f"
    t0 = time.monotonic()
    assert curl(url, tmp_path / "a").returncode == 0
    fast = time.monotonic() - t0
    mods, _ = tap.state()
    assert mods[5]["messages-sent"] == "0", "a deactivated module acted"

    tap.set_leaf(5, "activated", "true")
    t0 = time.monotonic()
    assert curl(url, tmp_path / "b").returncode == 0
    slow = time.monotonic() - t0
    mods, _ = tap.state()
    sends = int(mods[5]["messages-sent"])
    assert sends >= 2, mods[5]
    # Every send waited 100 ms: the transfer took at least that long per send.
    assert slow >= 0.1 * sends * 0.9, (slow, sends)
    assert slow > fast + 0.15, (fast, slow)
    assert (tmp_path / "b").read_bytes() == (files / "f").read_bytes()


def _start_slow_download(url, out, env):
    return subprocess.Popen(["curl", "-sS", "--limit-rate", "8M", "-o", str(out), url], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_deprecate_keeps_live_transfer_but_not_new_connections(tap, procs, tmp_path, files):
    digest = make_file(files / "long", 24 * 1024 * 1024)
    (files / "short").write_bytes(b"b" * 100_000)
    srv = Server(files, tap.env())
    procs.append(srv)
    tap.edit(module(1, "stream-tag", 10, server_match(srv.port), stream_params()),
             module(2, "stream-tag", 10, client_match(srv.port), stream_params()))
    out = tmp_path / "long.out"
    dl = _start_slow_download(f"http://127.0.0.1:{srv.port}/long", out, tap.env())
    procs.append(dl)
    sub = tap.second_session()
    sub.create_subscription()
    wait_for(lambda: out.exists() and out.stat().st_size > 2 * 1024 * 1024, 30, "download to start")
    tap.set_leaf(1, "deprecated", "true")
    tap.set_leaf(2, "deprecated", "true")
    mods, socks = tap.state()
    assert mods[1]["state"] == "deprecated" and int(mods[1]["socket-count"]) >= 1
    # A new connection from a client WITHOUT the module gets untagged bytes:
    # the deprecated server module did not attach to it.
    r = curl(f"http://127.0.0.1:{srv.port}/short", tmp_path / "short.out")
    assert r.returncode == 0 and (tmp_path / "short.out").read_bytes() == b"b" * 100_000
    # The live transfer kept its modules on both ends to the last byte.
    assert dl.wait(timeout=120) == 0, dl.stderr.read()
    assert sha256(out) == digest
    wait_for(lambda: tap.state()[0][1]["socket-count"] == "0", 10, "deprecated module to go idle")
    # The agent tells subscribers (the NCO revokes on this).
    idle = set()
    while len(idle) < 2:
        n = sub.take_notification(timeout=10)
        assert n is not None, f"no deprecated-module-idle notification (got {idle})"
        if "deprecated-module-idle" in n.notification_xml:
            idle.add(int(n.notification_xml.split("<id>")[1].split("<")[0]))
    assert idle == {1, 2}


def test_revoke_mid_transfer_leaves_applications_working(tap, procs, tmp_path, files):
    make_file(files / "long", 24 * 1024 * 1024)
    digest = make_file(files / "after", 3 * 1024 * 1024)
    srv = Server(files, tap.env())
    procs.append(srv)
    tap.edit(module(1, "stream-tag", 10, server_match(srv.port), stream_params()),
             module(2, "stream-tag", 10, client_match(srv.port), stream_params()))
    out = tmp_path / "long.out"
    dl = _start_slow_download(f"http://127.0.0.1:{srv.port}/long", out, tap.env())
    procs.append(dl)
    wait_for(lambda: out.exists() and out.stat().st_size > 2 * 1024 * 1024, 30, "download to start")
    tap.revoke(1)
    tap.revoke(2)
    # The interrupted stream may be damaged, but nobody hangs or crashes.
    rc = dl.wait(timeout=120)
    assert rc in (0, 18), f"curl exit {rc}: {dl.stderr.read()}"
    assert srv.proc.poll() is None
    mods, socks = tap.state()
    assert 1 not in mods and 2 not in mods and not socks
    r = curl(f"http://127.0.0.1:{srv.port}/after", tmp_path / "after.out", env=tap.env())
    assert r.returncode == 0 and sha256(tmp_path / "after.out") == digest
