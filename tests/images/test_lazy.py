"""Lazy loading of a module image in tapped processes, with a real agent
(user-space tap) that gets the image over NETCONF (`install-module`,
signed by a key the test trusts) and modules of the kind in its running
configuration: a process loads the image only when a socket of its own
meets the kind — then it shows in /proc/PID/maps as the file it was
loaded from (the published copy, `CONTROL.kind-<sha256>`) — and a process
under the same table whose sockets never meet it maps nothing of it. After a revoke, a
live process's new and old sockets go plain. A socket first seen inside a
signal handler gets no image kind there (nothing is loaded in a handler),
and gets it at its next call outside."""
import base64
import hashlib
import os
import pathlib
import shutil
import socket
import subprocess
import sys
from xml.sax.saxutils import escape

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ncclient.xml_ import to_ele

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tests" / "tap"))
from taplab import BASE, NS, TapAgent, free_port, module, stop_process  # noqa: E402

KEY = bytes.fromhex("a55a01")
MARKER = b"L45x"
# The loader maps the copy the agent published beside the control file
# (CONTROL.kind-<sha256>).
MAPPED = ".kind-"

# A tapped program that blocks on its standard input between commands, so
# its maps can be read while it lives. Commands (one line each, answered
# with one line):
#   udp PORT HEX          a new UDP socket sends HEX to PORT
#   again N PORT HEX      socket N (0-based) sends HEX to PORT
#   tcp PORT HEX          a new TCP connection to PORT sends HEX
#   serve PORT            a new UDP socket bound to PORT
#   get N                 socket N receives one datagram: its hex
WORKER = r"""
import socket, sys
socks = []
for line in sys.stdin:
    cmd, *a = line.split()
    if cmd == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        socks.append(s)
        s.sendto(bytes.fromhex(a[1]), ("127.0.0.1", int(a[0])))
        print("sent", flush=True)
    elif cmd == "again":
        socks[int(a[0])].sendto(bytes.fromhex(a[2]), ("127.0.0.1", int(a[1])))
        print("sent", flush=True)
    elif cmd == "tcp":
        c = socket.create_connection(("127.0.0.1", int(a[0])), timeout=10)
        socks.append(c)
        c.sendall(bytes.fromhex(a[1]))
        print("sent", flush=True)
    elif cmd == "serve":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", int(a[0])))
        s.settimeout(10)
        socks.append(s)
        print("bound", flush=True)
    elif cmd == "get":
        print(socks[int(a[0])].recv(65536).hex(), flush=True)
"""


def masked(payload):
    return MARKER + bytes(b ^ KEY[i % len(KEY)] for i, b in enumerate(payload))


def image_mapped(pid):
    return MAPPED in pathlib.Path(f"/proc/{pid}/maps").read_text()


class Worker:
    """WORKER under the preload library, started and stopped by a test."""

    def __init__(self, env):
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def ask(self, *words):
        self.proc.stdin.write(" ".join(map(str, words)) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().strip()
        assert line, f"worker exited ({self.proc.poll()}) on {words}"
        return line

    def mapped(self):
        return image_mapped(self.proc.pid)

    def stop(self):
        if self.proc.stdin:
            self.proc.stdin.close()
        stop_process(self.proc)


def udp_listener():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(10)
    return s


def xor_module(mid, match):
    return module(mid, "installed-binary", match=match,
                  params="<installed><kind-name>udp-xor-mask</kind-name>"
                         f"<arguments>key={KEY.hex()}</arguments></installed>")


def udp_to(port):
    return f"<protocol>udp</protocol><destination-port>{port}</destination-port>"


def udp_from(port):
    return f"<protocol>udp</protocol><source-port>{port}</source-port>"


@pytest.fixture
def agent(tmp_path, xor_image):
    """A real agent with the user-space tap and the example kind installed
    through install-module, signed by a key it trusts."""
    a = TapAgent(tmp_path / "agent")
    try:
        private = Ed25519PrivateKey.generate()
        public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        a.nc.edit_config(target="running", config=(
            f'<config xmlns="{BASE}"><images xmlns="{NS}"><trusted-signer><name>test</name>'
            f"<public-key>{base64.b64encode(public).decode()}</public-key></trusted-signer></images></config>"))
        image = xor_image.read_bytes()
        manifest = (f"l45-image-manifest 1\nkind udp-xor-mask\nabi-version 1\n"
                    f"target userspace-{os.uname().machine}\nsha256 {hashlib.sha256(image).hexdigest()}\n"
                    f"size {len(image)}\nbuilt-at 2026-12-06T03:40:00Z\n"
                    f"signer {hashlib.sha256(public).hexdigest()[:16]}\n")
        signature = private.sign(manifest.encode())
        a.nc.dispatch(to_ele(
            f'<install-module xmlns="{NS}"><image>{base64.b64encode(image).decode()}</image>'
            f"<manifest>{escape(manifest)}</manifest>"
            f"<signature>{base64.b64encode(signature).decode()}</signature></install-module>"))
        yield a
    finally:
        a.stop()


@pytest.fixture
def workers(agent):
    made = []

    def make():
        w = Worker(agent.env())
        made.append(w)
        return w
    yield make
    for w in made:
        w.stop()


def test_only_a_process_whose_socket_meets_the_kind_loads_it(agent, workers):
    wire, plain = udp_listener(), udp_listener()
    server_port = free_port(socket.SOCK_DGRAM)
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(4)
    tcp.settimeout(10)
    try:
        # Client side: sockets sending to the wire port; server side:
        # sockets bound to server_port. Both kinds of socket are UDP.
        agent.edit(xor_module(1, udp_to(wire.getsockname()[1])),
                   xor_module(2, udp_from(server_port)))

        # A tapped process under the same table whose sockets do not meet
        # the kind: UDP to another port, a TCP connection. Traffic as
        # written, nothing of the image mapped.
        other = workers()
        assert other.ask("udp", plain.getsockname()[1], b"plain udp".hex()) == "sent"
        assert plain.recvfrom(65536)[0] == b"plain udp"
        assert other.ask("tcp", tcp.getsockname()[1], b"plain tcp".hex()) == "sent"
        conn, _ = tcp.accept()
        with conn:
            conn.settimeout(10)
            assert conn.recv(65536) == b"plain tcp"
        assert not other.mapped(), "a process that never met the kind mapped its image"

        # A process whose socket meets it: loaded (the sealed memory file
        # it was loaded from is mapped), the datagram masked on the wire.
        client = workers()
        assert not client.mapped(), "nothing is loaded before a socket meets the kind"
        payload = bytes(range(40))
        assert client.ask("udp", wire.getsockname()[1], payload.hex()) == "sent"
        on_wire, _ = wire.recvfrom(65536)
        assert on_wire == masked(payload)
        assert client.mapped()

        # The server process loads it when its bound socket first
        # receives, and gets the bytes as written.
        server = workers()
        assert server.ask("serve", server_port) == "bound"
        assert not server.mapped()
        wire.sendto(on_wire, ("127.0.0.1", server_port))
        assert bytes.fromhex(server.ask("get", 0)) == payload
        assert server.mapped()

        # The bystander still maps nothing, and still sends as written.
        assert other.ask("again", 0, plain.getsockname()[1], b"still plain".hex()) == "sent"
        assert plain.recvfrom(65536)[0] == b"still plain"
        assert not other.mapped()
        mods, _ = agent.state()
        assert mods[1]["errors"] == "0" and mods[2]["errors"] == "0", mods
    finally:
        for s in (wire, plain, tcp):
            s.close()


def test_after_a_revoke_a_live_process_stops_using_the_kind(agent, workers):
    wire = udp_listener()
    port = wire.getsockname()[1]
    try:
        agent.edit(xor_module(1, udp_to(port)))
        client = workers()
        assert client.ask("udp", port, b"first".hex()) == "sent"
        assert wire.recvfrom(65536)[0] == masked(b"first")
        agent.revoke(1)
        mods, _ = agent.state()
        assert 1 not in mods
        # A new socket of the same live process: plain.
        assert client.ask("udp", port, b"new socket".hex()) == "sent"
        assert wire.recvfrom(65536)[0] == b"new socket"
        # The socket that had the module: it left its chain, plain too.
        assert client.ask("again", 0, port, b"old socket".hex()) == "sent"
        assert wire.recvfrom(65536)[0] == b"old socket"
        # A module of the kind again: the image (loaded once, never
        # unloaded) is used by new sockets again.
        agent.edit(xor_module(3, udp_to(port)))
        assert client.ask("udp", port, b"back".hex()) == "sent"
        assert wire.recvfrom(65536)[0] == masked(b"back")
    finally:
        wire.close()


def test_a_socket_first_seen_in_a_signal_handler_meets_the_kind_outside_it(agent, tmp_path):
    gcc = shutil.which("gcc")
    if not gcc:
        pytest.skip("gcc is not installed")
    program = tmp_path / "handler_send"
    subprocess.run([gcc, "-O1", "-Wall", "-o", str(program), str(ROOT / "tests/images/handler_send.c")],
                   check=True)
    wire = udp_listener()
    port = wire.getsockname()[1]
    try:
        agent.edit(xor_module(1, udp_to(port)))
        done = subprocess.run([str(program), str(port)], env=agent.env(), capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0, (done.returncode, done.stderr)
        # In the handler: nothing loaded, the datagram as written; the
        # same socket's next datagram, from main, loads the kind.
        assert done.stdout.split("\n")[:2] == ["mapped no", "mapped yes"], done.stdout
        assert wire.recvfrom(65536)[0] == b"in-handler"
        assert wire.recvfrom(65536)[0] == masked(b"after-handler")
    finally:
        wire.close()
