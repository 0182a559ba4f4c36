"""The example kind udp-xor-mask as a module image in real processes: a
user-space tap loads the image (`load_kind`, as the agent does after
install-module), tapped UDP client and server under the preload library
load the published copy themselves, and a relay between them (not tapped)
sees every datagram masked on the wire while the server gets, and the
client gets back, the bytes as written.

The agent's install-module RPC is not on main yet, so the image is loaded
by `tap/userspace/examples/image_tap.rs` instead of through NETCONF."""
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from conftest import PRELOAD

KEY = bytes.fromhex("a55a01")
MARKER = b"L45x"
MESSAGES = [b"hello", bytes(range(256)) * 4, b"\x00" * 37, b"last one"]

SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
print("listening", flush=True)
for _ in range(int(sys.argv[2])):
    data, peer = s.recvfrom(65536)
    print(data.hex(), flush=True)
    s.sendto(data, peer)
"""

CLIENT = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
for m in sys.argv[2:]:
    s.sendto(bytes.fromhex(m), ("127.0.0.1", int(sys.argv[1])))
    data, _ = s.recvfrom(65536)
    print(data.hex(), flush=True)
"""


def masked(payload):
    return MARKER + bytes(b ^ KEY[i % len(KEY)] for i, b in enumerate(payload))


class Relay(threading.Thread):
    """Forwards client datagrams to the server and replies back, keeping
    what it saw on the wire (the middle of the path: no tap here)."""

    def __init__(self, server_port):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.server = ("127.0.0.1", server_port)
        self.to_server = []
        self.running = True
        self.start()

    def run(self):
        client = None
        while self.running:
            try:
                data, peer = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            if peer == self.server:
                if client:
                    self.sock.sendto(data, client)
            else:
                client = peer
                self.to_server.append(data)
                self.sock.sendto(data, self.server)

    def stop(self):
        self.running = False
        self.join(timeout=5)
        self.sock.close()


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_exchange(env, messages):
    """One tapped server and client, through a relay; returns (what the
    relay saw, what the server received, what the client got back)."""
    port = free_udp_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port), str(len(messages))],
                              env=env, stdout=subprocess.PIPE, text=True)
    relay = Relay(port)
    try:
        assert server.stdout.readline().strip() == "listening"
        client = subprocess.run([sys.executable, "-c", CLIENT, str(relay.port),
                                 *(m.hex() for m in messages)],
                                env=env, capture_output=True, text=True, timeout=30)
        assert client.returncode == 0, client.stderr
        received, _ = server.communicate(timeout=10)
    finally:
        relay.stop()
        if server.poll() is None:
            server.kill()
            server.wait()
    return (relay.to_server,
            [bytes.fromhex(x) for x in received.split()],
            [bytes.fromhex(x) for x in client.stdout.split()])


def start_tap(image_tap, tmp_path, stored_image):
    path, sha = stored_image
    control = tmp_path / "tap"
    tap = subprocess.Popen([image_tap, str(control), "--image", str(path), "udp-xor-mask", sha,
                            "udp-xor-mask", f"key={KEY.hex()}"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert tap.stdout.readline().strip() == "ready"
    env = {**os.environ, "LD_PRELOAD": PRELOAD, "L45_TAP_SHM": str(control)}
    return tap, control, sha, env


def stop_tap(tap):
    tap.stdin.close()
    tap.wait(timeout=10)


def stats(tap):
    """The module's counters, as the agent reads them."""
    tap.stdin.write("stats\n")
    tap.stdin.flush()
    return dict(kv.split("=") for kv in tap.stdout.readline().split())


def test_masked_on_the_wire_and_delivered_intact(tmp_path, image_tap, stored_image):
    tap, control, sha, env = start_tap(image_tap, tmp_path, stored_image)
    try:
        published = tmp_path / f"tap.kind-{sha}"
        assert oct(os.stat(published).st_mode & 0o7777) == "0o644"
        wire, at_server, back = run_exchange(env, MESSAGES)
        assert wire == [masked(m) for m in MESSAGES]
        assert at_server == MESSAGES
        assert back == MESSAGES
        st = stats(tap)
        assert st["errors"] == "0", st
        assert st["messages_sent"] == st["messages_received"] == str(len(MESSAGES)), st
    finally:
        stop_tap(tap)


def test_a_published_copy_that_does_not_match_its_digest_is_not_run(
        tmp_path, image_tap, stored_image):
    tap, control, sha, env = start_tap(image_tap, tmp_path, stored_image)
    try:
        published = tmp_path / f"tap.kind-{sha}"
        data = bytearray(published.read_bytes())
        data[len(data) // 2] ^= 0xFF
        published.write_bytes(bytes(data))
        # New processes refuse the changed image: the module does not run
        # and the traffic goes as written (nothing lost), and is reported.
        wire, at_server, back = run_exchange(env, MESSAGES)
        assert wire == MESSAGES
        assert at_server == MESSAGES
        assert back == MESSAGES
        # Reported: each of the two processes counted an error against the
        # module it could not run, and customized nothing.
        st = stats(tap)
        assert st["errors"] == "2", st
        assert st["messages_sent"] == st["messages_received"] == "0", st
    finally:
        stop_tap(tap)


def test_dnsmasq_of_another_user_loads_the_published_image(tmp_path, image_tap, stored_image):
    """dnsmasq drops to its own user before its first query: it can read
    the copy the agent's user published (0644, beside a control file every
    user may read), not the stored image (0600). dig masks, dnsmasq
    unmasks — a masked query it could not unmask it would refuse."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tap"))
    from taplab import Dnsmasq, shm_root, ANSWER
    shared = pathlib.Path(shm_root() or tempfile.gettempdir()) / f"l45-images-{os.getpid()}-{time.monotonic_ns()}"
    shared.mkdir(mode=0o755)
    path, sha = stored_image
    control = shared / "tap"
    tap = subprocess.Popen([image_tap, str(control), "--image", str(path), "udp-xor-mask", sha,
                            "udp-xor-mask", f"key={KEY.hex()}"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    server = None
    try:
        assert tap.stdout.readline().strip() == "ready"
        env = {**os.environ, "LD_PRELOAD": PRELOAD, "L45_TAP_SHM": str(control)}
        server = Dnsmasq(tmp_path, env=env)
        owner = os.stat(f"/proc/{server.proc.pid}").st_uid
        if os.geteuid() == 0:
            # Started by root, dnsmasq runs as its own user: the case at hand.
            wait_for_user_change = time.monotonic() + 10
            while owner == 0 and time.monotonic() < wait_for_user_change:
                time.sleep(0.02)
                owner = os.stat(f"/proc/{server.proc.pid}").st_uid
            assert owner != 0, "dnsmasq kept root's user"
        dig = subprocess.run(["dig", "@127.0.0.1", "-p", str(server.port), "example.test",
                              "+tries=1", "+time=3", "+short"],
                             env=env, capture_output=True, text=True, timeout=30)
        assert dig.stdout.strip() == ANSWER, (owner, dig.stdout, dig.stderr,
                                              (tmp_path / "dnsmasq.log").read_text())
        # The query left dig masked (an untapped listener sees it).
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(5)
            probe = subprocess.Popen(["dig", "@127.0.0.1", "-p", str(s.getsockname()[1]),
                                      "example.test", "+tries=1", "+time=1"],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                assert s.recvfrom(65536)[0].startswith(MARKER)
            finally:
                probe.wait(timeout=10)
    finally:
        if server:
            server.stop()
        stop_tap(tap)
        shutil.rmtree(shared, ignore_errors=True)
