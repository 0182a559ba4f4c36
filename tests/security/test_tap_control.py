"""The user-space tap's control area against other local users: real
agents, real tapped processes, and `nobody` as the attacker.

The control file (module table) is the agent user's, mode 0644, without
keys; the shared part (statistics) is a System V segment every user may
write but nobody can resize or remove; each user's socket table is a
segment only that user can write."""
import base64
import ctypes
import os
import pathlib
import shutil
import socket
import struct
import subprocess
import tempfile

import pytest
from conftest import BASE, NS, PRELOAD, as_nobody

PYTHON = "/usr/bin/python3"  # stdlib only, readable by nobody
KEY = bytes(((i * 37) & 0xFF) ^ 0xA5 for i in range(32))
TAG = "SECTAGxx"
SHARED_ID_OFFSET = 32  # header: magic, version, max_modules, max_sockets, agent_pid, generation
TABLE_LEN = 528_384  # a socket table segment (l45-tap-shm checks the same figure)

# A tapped UDP client: sends each query line's datagram, says so, and keeps
# its socket until stdin closes (so the agent can list it meanwhile).
CLIENT = r"""
import socket, sys
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.1", port))
for line in sys.stdin:
    if not line.strip():
        break
    s.send(bytes.fromhex(line.strip()))
    print("sent", flush=True)
"""

# Writes garbage over a System V segment, then tries to remove it (which
# must fail for anyone but its owner).
GARBLE = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
shmid, mode = int(sys.argv[1]), sys.argv[2]
addr = libc.shmat(shmid, None, 0)
assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
size = int(sys.argv[3])
buf = (ctypes.c_ubyte * size).from_address(addr)
if mode == "zero":
    ctypes.memset(addr, 0, size)
elif mode == "ones":
    ctypes.memset(addr, 0xFF, size)
else:
    data = os.urandom(size)
    # odd sequence words everywhere, and random owners
    ctypes.memmove(addr, bytes(b | 1 for b in data), size)
IPC_RMID = 0
print("rmid", libc.shmctl(shmid, IPC_RMID, None), ctypes.get_errno(), flush=True)
"""


def dns_query(qid=0x1234):
    name = b"".join(bytes([len(p)]) + p for p in b"www.example.com".split(b".")) + b"\0"
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + name + struct.pack(">HH", 1, 1)


def module(mid, port, tag=TAG, key=KEY, extra=""):
    sec = f"<security><key>{base64.b64encode(key).decode()}</key></security>" if key else ""
    return (f"<module><id>{mid}</id><name>m{mid}</name><kind>l45:dns-front-tag</kind>"
            f"<priority>10</priority>{extra}"
            f"<match><protocol>udp</protocol><destination-port>{port}</destination-port></match>"
            f"<parameters><dns-tag><tag>{tag}</tag></dns-tag></parameters>{sec}</module>")


def edit(nc, body):
    nc.edit_config(target="running", config=(
        f'<config xmlns="{BASE}"><customizations xmlns="{NS}" xmlns:l45="{NS}">{body}</customizations></config>'))


def module_state(nc, mid):
    from lxml import etree  # noqa: F401 (ncclient's parser)
    data = nc.get(filter=("subtree", f'<customizations xmlns="{NS}"/>')).data_ele
    n = {"l": NS}
    for m in data.findall(".//l:module", n):
        if m.findtext("l:id", namespaces=n) == str(mid):
            st = m.find("l:state", n)
            return {c.tag.split("}")[1]: c.text for c in st} if st is not None else {}
    return None


def receiver():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(10)
    return s, s.getsockname()[1]


class Client:
    """A tapped client process (as `user`, or the test's own user)."""

    def __init__(self, port, shm, user=None, extra_env=()):
        env = ["env", f"LD_PRELOAD={PRELOAD}", f"L45_TAP_SHM={shm}", *extra_env]
        cmd = [*env, PYTHON, "-c", CLIENT, str(port)]
        if user:
            cmd = ["runuser", "-u", user, "--", *cmd]
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)

    def send(self, data):
        self.p.stdin.write(data.hex() + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        assert line.strip() == "sent", self.p.stderr.read()

    def close(self):
        if self.p.poll() is None:
            self.p.communicate("\n", timeout=30)
        assert self.p.returncode == 0, self.p.stderr


def send_once(port, shm, user=None):
    """What the receiver on `port` gets from one tapped client's query."""
    c = Client(port, shm, user)
    try:
        c.send(dns_query())
    finally:
        c.close()


@pytest.fixture
def shm_dir():
    """A directory for control files on tmpfs that every user may enter
    (root's, not writable by others, as /run/l45 would be)."""
    root = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    d = pathlib.Path(tempfile.mkdtemp(prefix="l45-sec-", dir=root))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def tap(make_agent, shm_dir):
    path = shm_dir / "tap"
    a = make_agent("--tap", "userspace", "--tap-shm", str(path))
    nc = a.connect()
    yield a, nc, path
    nc.close_session()


def shared_id(path):
    return struct.unpack_from("<i", path.read_bytes(), SHARED_ID_OFFSET)[0]


def segment_bytes(shmid):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
    libc.shmdt.argtypes = [ctypes.c_void_p]
    SHM_RDONLY = 0o10000
    addr = libc.shmat(shmid, None, SHM_RDONLY)
    assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
    try:
        size = segment_size(shmid)
        return ctypes.string_at(addr, size)
    finally:
        libc.shmdt(addr)


def segment_info(shmid):
    """(size, mode, owner uid) of a segment, from /proc/sysvipc/shm."""
    lines = pathlib.Path("/proc/sysvipc/shm").read_text().splitlines()
    head = lines[0].split()
    for line in lines[1:]:
        f = dict(zip(head, line.split()))
        if int(f["shmid"]) == shmid:
            return int(f["size"]), int(f["perms"], 8) & 0o777, int(f["uid"])
    raise AssertionError(f"segment {shmid} not found")


def segment_size(shmid):
    return segment_info(shmid)[0]


def socket_tables(uid):
    """Ids of the socket tables (segments of their size) owned by `uid`."""
    lines = pathlib.Path("/proc/sysvipc/shm").read_text().splitlines()
    head = lines[0].split()
    out = []
    for line in lines[1:]:
        f = dict(zip(head, line.split()))
        if int(f["size"]) == TABLE_LEN and int(f["uid"]) == uid and int(f["cuid"]) == uid:
            out.append(int(f["shmid"]))
    return out


NOBODY = 65534


def test_no_key_material_where_others_can_read(tap):
    a, nc, path = tap
    rx, port = receiver()
    with rx:
        edit(nc, module(1, port))
        send_once(port, path)
        assert rx.recvfrom(4096)[0] == TAG.encode() + dns_query()
    shmid = shared_id(path)
    size, mode, uid = segment_info(shmid)
    assert (mode, uid) == (0o666, os.geteuid())
    assert oct(path.stat().st_mode & 0o7777) == oct(0o644)
    readable = {p: p.read_bytes() for p in path.parent.iterdir()
                if p.stat().st_mode & 0o004}
    readable["shared segment"] = segment_bytes(shmid)
    for t in socket_tables(os.geteuid()):
        readable[f"socket table {t}"] = segment_bytes(t)
    for where, data in readable.items():
        for i in range(0, 32, 8):
            assert KEY[i:i + 8] not in data, f"key bytes in {where}"
    # The lock file is the agent user's alone.
    lock = path.parent / "tap.lock"
    assert lock.stat().st_mode & 0o077 == 0
    r = as_nobody([PYTHON, "-c", f"open({str(lock)!r}).read()"])
    assert r.returncode != 0 and "Permission denied" in r.stderr


def test_others_cannot_write_or_truncate_the_control_part(tap):
    a, nc, path = tap
    for code in (f"open({str(path)!r}, 'r+b')",
                 f"import os; os.truncate({str(path)!r}, 0)",
                 f"import os; os.unlink({str(path)!r})",
                 f"import os; os.rename({str(path)!r}, {str(path)!r} + '.x')"):
        r = as_nobody([PYTHON, "-c", code])
        assert r.returncode != 0 and "Permission denied" in r.stderr, (code, r.stderr)
    assert path.stat().st_size > 0
    # Nothing else in the directory that others could write or truncate.
    for p in path.parent.iterdir():
        assert p.stat().st_mode & 0o022 == 0, p


@pytest.mark.parametrize("garbage", ["zero", "ones", "random"])
def test_garbage_in_the_shared_part_is_survived(tap, nobody_dir, garbage):
    a, nc, path = tap
    rx, port = receiver()
    with rx:
        edit(nc, module(1, port))
        send_once(port, path, user="nobody")
        assert rx.recvfrom(4096)[0] == TAG.encode() + dns_query()
        shmid = shared_id(path)
        r = as_nobody([PYTHON, "-c", GARBLE, str(shmid), garbage, str(segment_size(shmid))])
        assert r.returncode == 0, r.stderr
        # EPERM (1): nobody cannot remove (or otherwise own) the segment.
        assert r.stdout.split() == ["rmid", "-1", "1"], r.stdout
        # Nor does garbage in nobody's own socket table (kept alive by a
        # tapped process of nobody's) hurt the agent.
        holder = Client(port, path, user="nobody")
        try:
            holder.send(dns_query())
            assert rx.recvfrom(4096)[0] == TAG.encode() + dns_query()
            tables = socket_tables(NOBODY)
            assert tables, "nobody's tapped process made its socket table"
            for t in tables:
                r = as_nobody([PYTHON, "-c", GARBLE, str(t), garbage, str(TABLE_LEN)])
                assert r.returncode == 0, r.stderr
            assert module_state(nc, 1) is not None
        finally:
            holder.close()
        # The agent still answers, and a new edit reaches a tapped process.
        assert module_state(nc, 1) is not None
        assert a.proc.poll() is None
        edit(nc, module(1, port, tag="NEWTAGxx"))
        send_once(port, path, user="nobody")
        assert rx.recvfrom(4096)[0] == b"NEWTAGxx" + dns_query()
        assert module_state(nc, 1) is not None
    assert a.proc.poll() is None


def test_a_tapped_process_of_another_user_is_customized(tap):
    a, nc, path = tap
    rx, port = receiver()
    with rx:
        edit(nc, module(1, port))
        c = Client(port, path, user="nobody")
        try:
            c.send(dns_query())
            assert rx.recvfrom(4096)[0] == TAG.encode() + dns_query()
            st = module_state(nc, 1)
            assert st["socket-count"] == "1" and st["messages-sent"] == "1", st
        finally:
            c.close()


def test_a_root_process_refuses_a_control_file_another_user_made(tap):
    """`nobody` plants a control file (a copy of the agent's, whose table
    would customize) in a directory anyone may write: a tapped root process
    told to use it passes its traffic through untouched."""
    a, nc, path = tap
    rx, port = receiver()
    planted = pathlib.Path(tempfile.mkdtemp(prefix="l45-plant-", dir="/dev/shm")) / "tap"
    planted.parent.chmod(0o1777)  # sticky and world-writable, like /dev/shm or /tmp
    try:
        with rx:
            edit(nc, module(1, port))
            r = as_nobody([PYTHON, "-c",
                           f"import shutil; shutil.copyfile({str(path)!r}, {str(planted)!r})"])
            assert r.returncode == 0, r.stderr
            assert planted.stat().st_uid != 0
            send_once(port, planted)  # as root
            assert rx.recvfrom(4096)[0] == dns_query(), "customized by a planted file"
            send_once(port, path)  # the agent's own file: obeyed
            assert rx.recvfrom(4096)[0] == TAG.encode() + dns_query()
    finally:
        shutil.rmtree(planted.parent, ignore_errors=True)


def test_a_challenge_through_netconf_passes(tap):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from lxml import etree
    a, nc, path = tap
    edit(nc, module(7, 5353))
    nonce, challenge = os.urandom(12), os.urandom(16)
    aead = AESGCM(KEY)
    ct = aead.encrypt(nonce, challenge, b"l45-challenge" + (7).to_bytes(4, "big"))
    reply = nc.dispatch(etree.fromstring(
        f'<challenge xmlns="{NS}"><id>7</id><nonce>{base64.b64encode(nonce).decode()}</nonce>'
        f"<ciphertext>{base64.b64encode(ct).decode()}</ciphertext></challenge>"))
    n = {"l": NS}
    out = etree.fromstring(reply.xml.encode())
    rnonce = base64.b64decode(out.findtext(".//l:nonce", namespaces=n))
    rct = base64.b64decode(out.findtext(".//l:ciphertext", namespaces=n))
    plain = aead.decrypt(rnonce, rct, b"l45-response" + (7).to_bytes(4, "big"))
    assert plain == challenge + (7).to_bytes(4, "big")


def test_another_user_cannot_touch_a_users_socket_table(tap):
    """A root process's socket is listed in root's socket table: `nobody`
    may read it but not attach it for writing or remove it, so it cannot
    erase, rewrite or hide a record there, even one the agent has not read
    yet."""
    a, nc, path = tap
    rx, port = receiver()
    with rx:
        edit(nc, module(1, port))
        c = Client(port, path)
        try:
            c.send(dns_query())
            assert rx.recvfrom(4096)[0] == TAG.encode() + dns_query()
            tables = socket_tables(0)
            assert tables
            for t in tables:
                assert segment_info(t)[1] == 0o644
                r = as_nobody([PYTHON, "-c", GARBLE, str(t), "zero", str(TABLE_LEN)])
                assert r.returncode != 0 and "Permission denied" in r.stderr, r.stderr
            assert module_state(nc, 1)["socket-count"] == "1"
        finally:
            c.close()


def test_filling_or_erasing_the_tables_does_not_make_a_used_module_idle(tap):
    """A root process holds a socket using module 1; `nobody` zeroes the
    shared part and fills its own socket table with records, and the module
    is deprecated: the root socket still counts (what
    `deprecated-module-idle` is decided on) until it really closes."""
    a, nc, path = tap
    rx, port = receiver()
    rx2, port2 = receiver()
    with rx, rx2:
        # nobody's own socket uses module 2: it makes nobody's table.
        edit(nc, module(1, port) + module(2, port2, tag="OTHERtag"))
        filler = Client(port2, path, user="nobody")
        c = Client(port, path)
        try:
            filler.send(dns_query())
            assert rx2.recvfrom(4096)[0] == b"OTHERtag" + dns_query()
            c.send(dns_query())
            assert rx.recvfrom(4096)[0] == TAG.encode() + dns_query()
            shmid = shared_id(path)
            r = as_nobody([PYTHON, "-c", GARBLE, str(shmid), "zero", str(segment_size(shmid))])
            assert r.returncode == 0, r.stderr
            for t in socket_tables(NOBODY):
                # Every slot claimed (by pid 0xffffffff) and odd-sequenced.
                r = as_nobody([PYTHON, "-c", GARBLE, str(t), "ones", str(TABLE_LEN)])
                assert r.returncode == 0, r.stderr
            edit(nc, "<module><id>1</id><deprecated>true</deprecated></module>")
            st = module_state(nc, 1)
            assert (st["state"], st["socket-count"]) == ("deprecated", "1"), st
        finally:
            c.close()
            filler.close()
        st = module_state(nc, 1)
        assert st["socket-count"] == "0", st
