"""nginx under the tap with a byte-changing module on both ends (issue 22):
with its default `sendfile on` the body went around the chain (the kernel
moved it, one tag on the wire: the headers'); now it goes through it. The
body must arrive byte-exact at a tapped curl AND carry the tags on the
wire (tcpdump), over one HTTP/1.1 keep-alive connection, with sendfile on
and off."""
import pathlib
import shutil
import subprocess

import pytest

from taplab import Capture, free_port, module, stop_process, udp_tcp_payloads, wait_for
from test_stream import TAG, client_match, make_file, server_match, sha256, stream_params

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SIZE = 6 * 1024 * 1024

CONF = """
daemon off;
master_process off;
worker_processes 1;
error_log {dir}/error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    sendfile {sendfile};
    keepalive_timeout 30;
    server {{
        # A small send buffer: sendfile meets short counts and EAGAIN.
        listen 127.0.0.1:{port} sndbuf=32k;
        root {root};
    }}
}}
"""


def tcp_listening(port):
    """Whether something listens on 127.0.0.1:port (/proc/net/tcp, state 0A)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        return any(line.split()[1] == want and line.split()[3] == "0A" for line in f.readlines()[1:])


class Nginx:
    def __init__(self, workdir, root, env, sendfile):
        self.dir = pathlib.Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = self.dir / "nginx.conf"
        conf.write_text(CONF.format(dir=self.dir, root=root, port=self.port, sendfile="on" if sendfile else "off"))
        self.log = open(self.dir / "stderr.log", "ab")
        self.proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(self.dir), "-e", str(self.dir / "error.log")],
                                     env=env, stdout=self.log, stderr=self.log)
        # nginx says nothing when it is ready: poll for its listening socket.
        wait_for(lambda: self.proc.poll() is not None or tcp_listening(self.port), what="nginx to listen")
        assert self.proc.poll() is None, (self.dir / "error.log").read_text()

    def stop(self):
        stop_process(self.proc)
        self.log.close()


@pytest.mark.parametrize("sendfile", [True, False], ids=["sendfile-on", "sendfile-off"])
def test_nginx_body_is_exact_and_tagged_on_the_wire(tap, procs, tmp_path, sendfile):
    www = tmp_path / "www"
    www.mkdir()
    digest = make_file(www / "big", SIZE)
    srv = Nginx(tmp_path / "nginx", www, tap.env(), sendfile)
    procs.append(srv)
    tap.edit(module(1, "stream-tag", 10, server_match(srv.port), stream_params()),
             module(2, "stream-tag", 10, client_match(srv.port), stream_params()))
    pcap = tmp_path / "cap.pcap"
    # A buffer the whole transfer fits: tcpdump drops nothing, however slowly it runs.
    cap = Capture(pcap, f"tcp port {srv.port}", buffer_kib=64 * 1024)

    def from_server(packets):
        return b"".join(p for proto, sport, _, p in packets if proto == "tcp" and sport == srv.port)
    try:
        # Two requests on one keep-alive connection.
        url = f"http://127.0.0.1:{srv.port}/big"
        r = subprocess.run(["curl", "-sS", "-w", "%{num_connects}\n", "-o", str(tmp_path / "a"),
                            "-o", str(tmp_path / "b"), url, url],
                           env=tap.env(), capture_output=True, text=True, timeout=300)
        if r.returncode == 0:
            # tcpdump writes what it saw a little later: wait until both
            # bodies' worth is in the file before stopping it.
            wait_for(lambda: len(from_server(udp_tcp_payloads(pcap))) >= 2 * SIZE, 20, "the capture")
    finally:
        packets = cap.stop()
    assert r.returncode == 0, r.stderr
    assert sha256(tmp_path / "a") == digest and sha256(tmp_path / "b") == digest
    # One connection: the second response came on the first one's socket.
    assert r.stdout.split() == ["1", "0"], r.stdout
    # The customization is on the wire: about one tag per 1000 bytes of
    # each response (headers and body), from the server's port.
    wire = from_server(packets)
    assert len(wire) >= 2 * SIZE, len(wire)
    # (sendfile going around the chain left 1 tag, the headers', here.)
    assert wire.count(TAG) >= len(wire) // (1000 + len(TAG)) - 2, (wire.count(TAG), len(wire))
    mods, _ = tap.state()
    assert int(mods[1]["bytes-sent"]) >= 2 * SIZE, mods[1]
    assert int(mods[2]["bytes-received"]) >= 2 * SIZE + 2 * (SIZE // 1000) * len(TAG), mods[2]
