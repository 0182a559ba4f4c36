"""Hostile XML against the real agent: a message of M bytes gets a proper
reply, costs memory proportional to M, and does not hold up other sessions
(the parse runs off the async workers)."""
import re
import threading

import paramiko

from conftest import BASE, NS

# The densest tree (one element per 4 source bytes) holds ~52 bytes per
# source byte; the rest is the agent's own baseline.
RSS_PER_BYTE = 64
RSS_BASE = 100 * 1024 * 1024
FOUR_KB_NS = "urn:x:" + "n" * 4090


def vm_hwm(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


class Raw:
    """A NETCONF session on a raw paramiko channel (base:1.1), so a large
    message is sent as built, in chunks, with nothing parsing it here."""

    def __init__(self, agent):
        self.transport = paramiko.Transport(("127.0.0.1", agent.port))
        self.transport.connect(username="admin", pkey=paramiko.Ed25519Key.from_private_key_file(str(agent.key)))
        self.ch = self.transport.open_session()
        self.ch.invoke_subsystem("netconf")
        self.buf = b""
        while b"]]>]]>" not in self.buf:
            self.buf += self._recv()
        self.buf = self.buf[self.buf.index(b"]]>]]>") + 6:]
        self.ch.sendall(f'<hello xmlns="{BASE}"><capabilities><capability>urn:ietf:params:netconf:base:1.1'
                        "</capability></capabilities></hello>]]>]]>".encode())

    def _recv(self):
        data = self.ch.recv(1 << 20)
        if not data:
            raise EOFError("session closed")
        return data

    def send(self, body, mid="1", part=1 << 20, between=None):
        """Sends one <rpc> in chunks of `part` bytes; `between(i)` runs after
        chunk i, while the message is still incomplete."""
        message = f'<rpc xmlns="{BASE}" message-id="{mid}">'.encode() + body + b"</rpc>"
        for i, at in enumerate(range(0, len(message), part)):
            piece = message[at:at + part]
            self.ch.sendall(b"\n#%d\n" % len(piece) + piece)
            if between:
                between(i)
        self.ch.sendall(b"\n##\n")
        return len(message)

    def reply(self):
        out = []
        while True:
            while not re.match(rb"\n#(#|\d+)\n", self.buf):
                self.buf += self._recv()
            m = re.match(rb"\n#(#|\d+)\n", self.buf)
            if m.group(1) == b"#":
                self.buf = self.buf[m.end():]
                return b"".join(out).decode()
            n = int(m.group(1))
            while len(self.buf) < m.end() + n:
                self.buf += self._recv()
            out.append(self.buf[m.end():m.end() + n])
            self.buf = self.buf[m.end() + n:]

    def close(self):
        self.transport.close()


def error_tag(reply):
    m = re.search(r"<error-tag>([^<]*)</error-tag>", reply)
    return m.group(1) if m else None


def assert_rss_within(agent, size):
    hwm = vm_hwm(agent.proc.pid)
    bound = RSS_PER_BYTE * size + RSS_BASE
    assert hwm < bound, f"peak RSS {hwm >> 20} MiB for a {size >> 20} MiB message (bound {bound >> 20} MiB)"


def still_answers(agent):
    with agent.connect() as m:
        assert "<data" in m.get_config("running").xml


def test_200k_attributes_on_one_element_are_too_big(agent):
    attrs = " ".join(f"a{i}='{i}'" for i in range(200_000))
    body = (f"<get-config><source><running/></source><filter type='subtree'>"
            f"<customizations xmlns='{NS}' {attrs}/></filter></get-config>").encode()
    c = Raw(agent)
    size = c.send(body, mid="77")
    reply = c.reply()
    assert error_tag(reply) == "too-big", reply[:500]
    assert 'message-id="77"' in reply
    assert "more than 256 attributes" in reply
    # The session goes on.
    c.send(f"<get-config><source><running/></source><filter><customizations xmlns='{NS}'/></filter></get-config>".encode(), mid="78")
    assert "<data" in c.reply()
    c.close()
    assert_rss_within(agent, size)


def test_a_million_elements_under_a_4kb_namespace_share_it(agent):
    body = (f'<validate><source><config><top xmlns="{FOUR_KB_NS}">'.encode() + b"<a/>" * 1_000_000
            + b"</top></config></source></validate>")
    c = Raw(agent)
    size = c.send(body)
    reply = c.reply()
    # Not a node of any module: a proper error, after the whole message
    # was parsed.
    assert error_tag(reply) == "unknown-namespace", reply[:500]
    c.close()
    assert_rss_within(agent, size)
    still_answers(agent)


def test_many_top_level_elements_under_a_4kb_prefix_are_too_big(agent):
    # Each top-level element of <config> carries the declarations in scope
    # when handed on: a million of them must not make a million copies.
    body = (f'<validate><source><config xmlns:p="{FOUR_KB_NS}">'.encode() + b"<p:a/>" * 1_000_000
            + b"</config></source></validate>")
    c = Raw(agent)
    size = c.send(body)
    assert error_tag(c.reply()) == "too-big"
    c.close()
    assert_rss_within(agent, size)


def big_edit(limit=64 * 1024 * 1024 - 1024):
    head = f'<edit-config><target><running/></target><config><customizations xmlns="{NS}" xmlns:l45="{NS}">'.encode()
    tail = b"</customizations></config></edit-config>"
    parts, size, i = [], len(head) + len(tail), 1
    while True:
        m = (f"<module><id>{i}</id><name>m{i}</name><kind>l45:dns-front-tag</kind>"
             f"<priority>{i % 1000}</priority></module>").encode()
        if size + len(m) > limit:
            return head + b"".join(parts) + tail, i - 1
        parts.append(m)
        size += len(m)
        i += 1


def test_other_sessions_answer_while_a_64mib_message_streams_and_is_parsed(agent):
    body, count = big_edit()
    done = []

    def small_session(label):
        # A new session: hello, then get-config.
        still_answers(agent)
        done.append(label)

    big = Raw(agent)

    def between(i):
        if i == 16:
            small_session("while sending")

    big.send(body, between=between)
    # The message is complete: the agent parses and applies it. Sessions
    # started now are served meanwhile.
    others = [threading.Thread(target=small_session, args=(f"while parsing {k}",)) for k in range(2)]
    for t in others:
        t.start()
    reply = big.reply()
    done.append("big")
    for t in others:
        t.join()
    big.close()
    assert "<ok/>" in reply, reply[:500]
    assert done[0] == "while sending"
    assert done[-1] == "big", done
    with agent.connect() as m:
        assert m.get_config("running").data_xml.count("<module>") == count
