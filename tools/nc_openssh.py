"""A NETCONF 1.1 client over OpenSSH: `ssh -s ... netconf` as the transport,
the framing (RFC 6242 chunks) done here, each reply parsed whole by lxml
(libxml2, C) as its chunks arrive.

Why: the read benchmark's end-to-end figures with ncclient are bounded by
ncclient itself (paramiko's decryption in Python, 4096-byte reads, then
the parse): this is a client whose own floor is far lower, so the end to
end shows the server and the SSH transport. It is what an operator gets
from the OpenSSH client every Linux system has plus a C XML parser; the
time of a read is from writing the rpc to holding the parsed reply tree.

Used by tools/bench_agent.py; also on its own:

    .venv/bin/python tools/nc_openssh.py --port P --user admin --key K [--cipher C] [--repeat 20] [--rpc '<get/>']

prints each read's time and the median/best.
"""
import argparse
import fcntl
import os
import pyexpat
import re
import select
import subprocess
import time

from lxml import etree

BASE = "urn:ietf:params:xml:ns:netconf:base:1.0"
EOM = b"]]>]]>"
# Linux F_SETPIPE_SZ: a larger pipe lets ssh write more per wake-up.
F_SETPIPE_SZ = 1031
READ = 1 << 20


class ReplyError(Exception):
    """The reply was an <rpc-error> or the session broke."""


class OpenSshNetconf:
    """One NETCONF session on an `ssh -s` child process."""

    def __init__(self, host, port, user, key, cipher=None, extra_ssh_options=(), timeout=300):
        self.timeout = timeout
        cmd = ["ssh", "-s", "-p", str(port), "-i", str(key), "-l", user,
               "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
               "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
               "-o", "IdentitiesOnly=yes", "-o", "ControlPath=none"]
        if cipher:
            cmd += ["-c", cipher]
        cmd += list(extra_ssh_options) + [host, "netconf"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.out = self.proc.stdout.fileno()
        try:
            fcntl.fcntl(self.out, F_SETPIPE_SZ, READ)
        except OSError:
            pass  # (a smaller pipe only costs more reads)
        self.buf = bytearray()
        self.message_id = 0
        # Our hello first, as soon as the channel is open (as ncclient
        # does): yuma123's netconfd loses an rpc that reaches it in the
        # same read as the client's hello.
        self._write(f'<?xml version="1.0" encoding="UTF-8"?><hello xmlns="{BASE}"><capabilities>'
                    "<capability>urn:ietf:params:netconf:base:1.1</capability></capabilities></hello>".encode() + EOM)
        hello = self._read_eom()
        self.server_hello = etree.fromstring(hello)
        caps = [c.text for c in self.server_hello.iter(f"{{{BASE}}}capability")]
        if "urn:ietf:params:netconf:base:1.1" not in caps:
            raise ReplyError("the server does not offer base:1.1 (chunked framing)")

    def _write(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def _fill(self):
        if not select.select([self.out], [], [], self.timeout)[0]:
            raise ReplyError(f"nothing from the server for {self.timeout} s; "
                             f"buffered {len(self.buf)} bytes, ending {bytes(self.buf[-120:])!r}")
        data = os.read(self.out, READ)
        if not data:
            raise ReplyError(f"ssh ended (exit {self.proc.poll()})")
        self.buf += data

    def _read_eom(self):
        while (i := self.buf.find(EOM)) < 0:
            self._fill()
        msg = bytes(self.buf[:i])
        del self.buf[:i + len(EOM)]
        return msg

    def _send(self, body):
        self.message_id += 1
        msg = f'<rpc xmlns="{BASE}" message-id="{self.message_id}">{body}</rpc>'.encode()
        self._write(b"\n#%d\n%s\n##\n" % (len(msg), msg))

    def _pieces(self):
        """The message's data as it arrives, in pieces (the chunks, or the
        part of a chunk read so far)."""
        buf = self.buf
        pos = 0
        while True:
            # chunk header: \n#<size>\n, or the end of message: \n##\n
            while len(buf) - pos < 2:
                self._fill()
            if buf[pos:pos + 2] != b"\n#":
                raise ReplyError(f"bad chunk header {bytes(buf[pos:pos + 80])!r}")
            while (nl := buf.find(b"\n", pos + 1)) < 0 or len(buf) - pos < 4:
                self._fill()
            if buf[pos + 2:pos + 4] == b"#\n":
                pos += 4
                break
            size = int(buf[pos + 2:nl])
            pos = nl + 1
            while len(buf) - pos < size:
                # (what is there goes on now: the parse overlaps the transfer)
                if len(buf) > pos:
                    yield bytes(buf[pos:])
                    size -= len(buf) - pos
                    del buf[:]
                    pos = 0
                self._fill()
            yield bytes(buf[pos:pos + size])
            pos += size
            if pos > READ:
                del buf[:pos]
                pos = 0
        del buf[:pos]

    @staticmethod
    def _reply(root):
        if root.tag != f"{{{BASE}}}rpc-reply":
            raise ReplyError(f"not an rpc-reply: {root.tag}")
        err = root.find(f"{{{BASE}}}rpc-error")
        if err is not None:
            raise ReplyError(etree.tostring(err, encoding="unicode"))
        return root

    def rpc(self, body, parse="lxml"):
        """Sends `<rpc>body</rpc>` and reads the reply, parsed as it
        arrives. `parse`: "lxml" builds the tree and returns its root
        (`<rpc-reply>`, checked); "expat" parses it whole (well-formedness,
        namespaces; libexpat, no handlers, no tree) and returns its size in
        bytes; None only reads it (the transport's own time), returns its
        size."""
        self._send(body)
        size = 0
        if parse == "lxml":
            parser = etree.XMLParser(huge_tree=True)
            for piece in self._pieces():
                parser.feed(piece)
            return self._reply(parser.close())
        if parse == "expat":
            parser = pyexpat.ParserCreate(namespace_separator=" ")
            for piece in self._pieces():
                parser.Parse(piece, False)
                size += len(piece)
            parser.Parse(b"", True)
            return size
        for piece in self._pieces():
            size += len(piece)
        return size

    def rpc_bytes(self, body):
        """The reply's bytes, unparsed."""
        self._send(body)
        return b"".join(self._pieces())

    @staticmethod
    def parse_offline(raw, parse="lxml", piece=64 * 1024):
        """`raw` parsed as `rpc` parses a reply (fed in pieces)."""
        if parse == "expat":
            parser = pyexpat.ParserCreate(namespace_separator=" ")
            for i in range(0, len(raw), piece):
                parser.Parse(raw[i:i + piece], False)
            parser.Parse(b"", True)
            return len(raw)
        parser = etree.XMLParser(huge_tree=True)
        for i in range(0, len(raw), piece):
            parser.feed(raw[i:i + piece])
        return OpenSshNetconf._reply(parser.close())

    def cpu(self):
        """CPU seconds so far of this process (the framing and the parse)
        and of the ssh child (decryption, pipe writes)."""
        with open(f"/proc/{self.proc.pid}/schedstat") as f:
            ssh = int(f.read().split()[0]) / 1e9
        return time.process_time(), ssh

    def close(self):
        try:
            self.rpc("<close-session/>")
        except (ReplyError, OSError):
            pass
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def negotiated_cipher(host, port, user, key, cipher=None):
    """The cipher and MAC `ssh` agrees on with the server (from `ssh -v`)."""
    cmd = ["ssh", "-v", "-p", str(port), "-i", str(key), "-l", user, "-o", "BatchMode=yes",
           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
           "-o", "IdentitiesOnly=yes", "-o", "ControlPath=none"]
    if cipher:
        cmd += ["-c", cipher]
    out = subprocess.run(cmd + ["-s", host, "netconf"], input=b"", capture_output=True, timeout=30).stderr.decode()
    m = re.search(r"kex: server->client cipher: (\S+) MAC: (\S+)", out)
    return f"{m[1]} (MAC {m[2]})" if m else "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--cipher")
    ap.add_argument("--rpc", default="<get/>")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--parse", choices=["lxml", "expat", "none"], default="lxml")
    a = ap.parse_args()
    parse = None if a.parse == "none" else a.parse
    print("cipher:", negotiated_cipher(a.host, a.port, a.user, a.key, a.cipher))
    times = []
    with OpenSshNetconf(a.host, a.port, a.user, a.key, a.cipher) as s:
        for _ in range(a.repeat):
            t = time.perf_counter()
            got = s.rpc(a.rpc, parse)
            times.append(time.perf_counter() - t)
            what = f"{sum(1 for _ in got.iter())} elements" if parse == "lxml" else f"{got} bytes"
            print(f"{times[-1] * 1000:.1f} ms, {what}", flush=True)
    times.sort()
    print(f"median {times[len(times) // 2] * 1000:.1f} ms, best {times[0] * 1000:.1f} ms of {len(times)}")


if __name__ == "__main__":
    main()
