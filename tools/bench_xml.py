"""Benchmark: hostile and large XML against l45-agent over SSH on loopback.

Usage: .venv/bin/python tools/bench_xml.py [--only NAME ...]

Messages (each to a freshly started agent, so peak RSS is that message's):
- attrs:  one <get-config> whose filter element carries 200 000 attributes;
- ns:     a <validate> whose inline config holds 1 000 000 empty elements
          under a 4 KB default namespace (two shapes: the elements as
          children of <config>, and nested one level below);
- edit64: a legitimate edit-config of just under 64 MiB (the default
          message limit), ~570 000 module entries.

For each, the agent's CPU time (utime + stime from /proc/PID/stat, the
agent's idle start-up subtracted) and peak RSS (VmHWM) are printed, with
the reply's first error-tag. L45_AGENT_BASELINE=<older l45-agent> runs the
same messages against that binary in the same run and prints new/old
ratios. L45_AGENT picks the new binary (default target/release/l45-agent).
"""
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import paramiko

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "interop"))
from conftest import Agent, BASE, NS  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    # Fields after the command name (which may hold spaces): utime and stime
    # are the 14th and 15th fields of the line.
    stat = open(f"/proc/{pid}/stat").read()
    rest = stat[stat.rindex(")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def vm_hwm_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Raw:
    """A NETCONF session on a raw paramiko channel (base:1.1, chunked), so
    large messages are sent as they are built and nothing parses them on
    the client side."""

    def __init__(self, port, key, user="admin"):
        self.transport = paramiko.Transport(("127.0.0.1", port))
        self.transport.connect(username=user, pkey=paramiko.Ed25519Key.from_private_key_file(str(key)))
        self.ch = self.transport.open_session()
        self.ch.invoke_subsystem("netconf")
        self.buf = b""
        while b"]]>]]>" not in self.buf:
            data = self.ch.recv(65536)
            if not data:
                raise EOFError("no hello")
            self.buf += data
        self.buf = self.buf[self.buf.index(b"]]>]]>") + 6:]
        self.ch.sendall(f'<hello xmlns="{BASE}"><capabilities><capability>urn:ietf:params:netconf:base:1.1'
                        f"</capability></capabilities></hello>]]>]]>".encode())

    def send(self, message, part=1 << 20, between=None):
        """Sends one message in chunks of `part` bytes; `between(i)` runs
        after chunk i (the tests use it to interleave another session)."""
        for i, at in enumerate(range(0, len(message), part)):
            piece = message[at:at + part]
            self.ch.sendall(b"\n#%d\n" % len(piece) + piece)
            if between:
                between(i)
        self.ch.sendall(b"\n##\n")

    def reply(self):
        """Reads one chunked reply."""
        out = []
        while True:
            while not re.match(rb"\n#(#|\d+)\n", self.buf):
                data = self.ch.recv(1 << 20)
                if not data:
                    raise EOFError("session closed")
                self.buf += data
            m = re.match(rb"\n#(#|\d+)\n", self.buf)
            if m.group(1) == b"#":
                self.buf = self.buf[m.end():]
                return b"".join(out).decode()
            n = int(m.group(1))
            while len(self.buf) < m.end() + n:
                data = self.ch.recv(1 << 20)
                if not data:
                    raise EOFError("session closed")
                self.buf += data
            out.append(self.buf[m.end():m.end() + n])
            self.buf = self.buf[m.end() + n:]

    def rpc(self, body, mid="1"):
        msg = body if isinstance(body, bytes) else body.encode()
        self.send(b'<rpc xmlns="%s" message-id="%s">' % (BASE.encode(), mid.encode()) + msg + b"</rpc>")
        return self.reply()

    def close(self):
        self.transport.close()


def attrs_message(n=200_000):
    attrs = " ".join(f"a{i}='{i}'" for i in range(n))
    return f"<get-config><source><running/></source><filter type='subtree'><customizations xmlns='{NS}' {attrs}/></filter></get-config>".encode()


def ns_message(n=1_000_000, shape="default"):
    """`default`: the elements are <config>'s children in a 4 KB default
    namespace; `nested`: one level below; `prefixed`: <config>'s children,
    in a 4 KB namespace bound to a prefix."""
    ns = "urn:x:" + "n" * 4090
    if shape == "nested":
        config = f'<config><top xmlns="{ns}">'.encode() + b"<a/>" * n + b"</top></config>"
    elif shape == "prefixed":
        config = f'<config xmlns:p="{ns}">'.encode() + b"<p:a/>" * n + b"</config>"
    else:
        config = f'<config xmlns="{ns}">'.encode() + b"<a/>" * n + b"</config>"
    return b"<validate><source>" + config + b"</source></validate>"


def edit_message(limit=64 * 1024 * 1024):
    head = f'<edit-config><target><running/></target><config><customizations xmlns="{NS}" xmlns:l45="{NS}">'.encode()
    tail = b"</customizations></config></edit-config>"
    envelope = len(f'<rpc xmlns="{BASE}" message-id="1"></rpc>')
    parts, size, i = [], len(head) + len(tail) + envelope, 1
    while True:
        m = f"<module><id>{i}</id><name>m{i}</name><kind>l45:dns-front-tag</kind><priority>{i % 1000}</priority></module>".encode()
        if size + len(m) > limit:
            break
        parts.append(m)
        size += len(m)
        i += 1
    return head + b"".join(parts) + tail


MESSAGES = {
    "attrs": attrs_message,
    "ns": lambda: ns_message(),
    "ns-nested": lambda: ns_message(shape="nested"),
    "ns-prefixed": lambda: ns_message(shape="prefixed"),
    "edit64": edit_message,
}


def run_one(binary, name, body):
    os.environ["L45_AGENT"] = binary
    import conftest
    conftest.AGENT = binary
    with tempfile.TemporaryDirectory() as d:
        a = Agent(d).start()
        try:
            c = Raw(a.port, a.key)
            # Start-up and the hello are not the message's cost.
            c.rpc(b"<get-config><source><running/></source><filter><customizations xmlns='" + NS.encode() + b"'/></filter></get-config>", "0")
            cpu0 = cpu_seconds(a.proc.pid)
            reply = c.rpc(body)
            cpu = cpu_seconds(a.proc.pid) - cpu0
            hwm = vm_hwm_mb(a.proc.pid)
            tag = re.search(r"<error-tag>([^<]*)</error-tag>", reply)
            outcome = tag.group(1) if tag else ("ok" if "<ok/>" in reply else reply[:80])
            c.close()
        finally:
            a.stop()
    return cpu, hwm, outcome


def main():
    only = sys.argv[sys.argv.index("--only") + 1:] if "--only" in sys.argv else list(MESSAGES)
    new = os.environ.get("L45_AGENT", str(ROOT / "target" / "release" / "l45-agent"))
    old = os.environ.get("L45_AGENT_BASELINE")
    for name in only:
        body = MESSAGES[name]()
        mb = len(body) / 1e6
        results = {}
        for label, binary in (("new", new), ("old", old)):
            if not binary:
                continue
            cpu, hwm, outcome = run_one(binary, name, body)
            results[label] = (cpu, hwm)
            print(f"{name:<10} {label}: {mb:7.2f} MB message, agent CPU {cpu:8.2f} s, peak RSS {hwm:8.1f} MB, reply {outcome}", flush=True)
        if "old" in results and "new" in results:
            (nc, nh), (oc, oh) = results["new"], results["old"]
            print(f"{name:<10} new/old: CPU {nc / oc if oc else float('nan'):.3f}, peak RSS {nh / oh:.3f}", flush=True)


if __name__ == "__main__":
    main()
