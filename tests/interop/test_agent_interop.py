"""The agent against real NETCONF clients over SSH on loopback."""
import pathlib
import re
import sys
import subprocess
import threading
import time

import paramiko
import pytest
from ncclient.operations.rpc import RPCError
from ncclient.xml_ import to_ele

from conftest import BASE, NS, module_xml

SUBTREE = ("subtree", f'<customizations xmlns="{NS}"/>')


def ids(reply):
    return sorted(int(x) for x in re.findall(r"<id>(\d+)</id>", reply.data_xml))


# ===== ncclient =====

def test_hello_lists_module_capabilities(agent):
    with agent.connect() as m:
        caps = list(m.server_capabilities)
        assert "urn:ietf:params:netconf:base:1.1" in caps
        assert any(c.startswith(f"{BASE}?module=ietf-netconf&revision=2011-06-01") for c in caps)
        assert any(c.startswith(f"{NS}?module=layer45-customization&revision=") for c in caps)
        assert not any("layer45-netconf-edit" in c for c in caps)


def test_get_schema_returns_our_module(agent):
    with agent.connect() as m:
        text = m.get_schema("layer45-customization").data
        assert "module layer45-customization" in text
        with pytest.raises(RPCError) as e:
            m.get_schema("no-such-module")
        assert e.value.tag == "invalid-value"


def test_edit_config_create_merge_delete(agent):
    with agent.connect() as m:
        m.edit_config(target="running", config=module_xml(1, priority=10, op="create"))
        m.edit_config(target="running", config=module_xml(2, kind="dns-compression"))
        assert ids(m.get_config("running", filter=SUBTREE)) == [1, 2]
        with pytest.raises(RPCError) as e:
            m.edit_config(target="running", config=module_xml(1, op="create"))
        assert e.value.tag == "data-exists"
        m.edit_config(target="running", config=module_xml(1, priority=20))
        assert "<priority>20</priority>" in m.get_config("running", filter=SUBTREE).data_xml
        m.edit_config(target="running", config=module_xml(2, op="delete"))
        assert ids(m.get_config("running", filter=SUBTREE)) == [1]
        with pytest.raises(RPCError) as e:
            m.edit_config(target="running", config=module_xml(2, op="delete"))
        assert e.value.tag == "data-missing"


def test_get_config_subtree_and_xpath_filters(agent):
    with agent.connect() as m:
        for i in (1, 2, 3):
            m.edit_config(target="running", config=module_xml(i, priority=i * 10))
        one = m.get_config("running", filter=("subtree", f'<customizations xmlns="{NS}"><module><id>2</id></module></customizations>'))
        assert ids(one) == [2]
        sel = m.get_config("running", filter=("subtree", f'<customizations xmlns="{NS}"><module><id>3</id><priority/></module></customizations>'))
        assert "<priority>30</priority>" in sel.data_xml and "<name>" not in sel.data_xml
        xp = m.get_config("running", filter=("xpath", ({"l": NS}, "/l:customizations/l:module[l:priority > 15]")))
        assert ids(xp) == [2, 3]
        none = m.get_config("running", filter=("subtree", '<nothing xmlns="urn:unknown"/>'))
        assert "<module>" not in none.data_xml


def test_with_defaults_modes(agent):
    with agent.connect() as m:
        m.edit_config(target="running", config=module_xml(4))
        explicit = m.get_config("running", filter=SUBTREE).data_xml
        assert "<activated>" not in explicit
        rpc = f"""<get-config xmlns="{BASE}"><source><running/></source>
          <filter type="subtree"><customizations xmlns="{NS}"/></filter>
          <with-defaults xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-with-defaults">report-all</with-defaults></get-config>"""
        full = m.dispatch(to_ele(rpc)).xml
        assert "<activated>true</activated>" in full and "<attach>new-sockets</attach>" in full


def test_candidate_commit_and_discard(agent):
    with agent.connect() as m:
        m.edit_config(target="candidate", config=module_xml(7))
        assert ids(m.get_config("running", filter=SUBTREE)) == []
        assert ids(m.get_config("candidate", filter=SUBTREE)) == [7]
        m.commit()
        assert ids(m.get_config("running", filter=SUBTREE)) == [7]
        m.edit_config(target="candidate", config=module_xml(8))
        m.discard_changes()
        assert ids(m.get_config("candidate", filter=SUBTREE)) == [7]


def wait_for_notification(m, predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = m.take_notification(block=True, timeout=max(0.1, deadline - time.monotonic()))
        if n is not None and predicate(n.notification_xml):
            return n.notification_xml
    raise AssertionError("notification did not arrive")


def test_confirmed_commit_rolls_back_on_timeout(agent):
    with agent.connect() as watcher, agent.connect() as m:
        watcher.create_subscription()
        m.edit_config(target="candidate", config=module_xml(9))
        m.commit(confirmed=True, timeout="1")
        assert ids(m.get_config("running", filter=SUBTREE)) == [9]
        wait_for_notification(watcher, lambda x: "module-registered" in x and "<id>9</id>" in x)
        # The rollback is announced as a change by the system.
        wait_for_notification(watcher, lambda x: "module-revoked" in x and "<id>9</id>" in x)
        assert ids(m.get_config("running", filter=SUBTREE)) == []


def test_confirmed_commit_confirmed_and_cancelled(agent):
    with agent.connect() as m:
        m.edit_config(target="candidate", config=module_xml(10))
        m.commit(confirmed=True, timeout="60")
        m.commit()  # confirms
        m.edit_config(target="candidate", config=module_xml(11))
        m.commit(confirmed=True, timeout="60")
        assert ids(m.get_config("running", filter=SUBTREE)) == [10, 11]
        m.cancel_commit()
        assert ids(m.get_config("running", filter=SUBTREE)) == [10]


def test_lock_contention_between_sessions(agent):
    with agent.connect() as a, agent.connect() as b:
        a.lock("running")
        with pytest.raises(RPCError) as e:
            b.lock("running")
        assert e.value.tag == "lock-denied"
        assert f"<session-id>{a.session_id}</session-id>" in str(e.value.info)
        with pytest.raises(RPCError) as e:
            b.edit_config(target="running", config=module_xml(12))
        assert e.value.tag == "lock-denied"
        a.edit_config(target="running", config=module_xml(12))
        a.unlock("running")
        b.lock("running")
        b.unlock("running")


def test_locked_time_is_when_the_lock_was_taken(agent):
    """RFC 6022: a lock's locked-time is when it was acquired, the same on every read."""
    from datetime import datetime, timezone
    monitoring = ('<netconf-state xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring">'
                  '<datastores/></netconf-state>')

    def locked_time(m):
        found = re.search(r"<(?:\w+:)?locked-time>([^<]+)<", m.get(filter=("subtree", monitoring)).data_xml)
        assert found, "a locked datastore shows its lock"
        return datetime.fromisoformat(found.group(1).replace("Z", "+00:00"))

    with agent.connect() as m:
        before = datetime.now(timezone.utc).replace(microsecond=0)
        m.lock("running")
        after = datetime.now(timezone.utc)
        first = locked_time(m)
        for i in range(20):   # other work between the reads (milliseconds pass)
            m.get_config("running")
        second = locked_time(m)
        m.unlock("running")
    assert before <= first <= after
    assert first == second


def test_invalid_value_is_invalid_value_with_path(agent):
    with agent.connect() as m:
        with pytest.raises(RPCError) as e:
            m.edit_config(target="running", config=module_xml(13, priority=70000))
        assert e.value.tag == "invalid-value"
        with pytest.raises(RPCError) as e:
            m.edit_config(target="running", config=module_xml(0))
        assert e.value.tag == "invalid-value"
        missing = f'<config xmlns="{BASE}"><customizations xmlns="{NS}"><module><id>14</id></module></customizations></config>'
        with pytest.raises(RPCError) as e:
            m.edit_config(target="running", config=missing)
        assert e.value.tag == "missing-element"
        assert "module" in (e.value.path or "")
        assert ids(m.get_config("running", filter=SUBTREE)) == []


def test_kill_session(agent):
    with agent.connect() as a:
        b = agent.connect()
        b.lock("running")
        a.kill_session(str(b.session_id))
        a.lock("running")  # the killed session's lock is gone
        deadline = time.monotonic() + 20
        while b.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not b.connected


def test_nacm_operator_reads_but_cannot_write(agent):
    with agent.connect() as admin:
        key = f'<config xmlns="{BASE}"><customizations xmlns="{NS}" xmlns:l45="{NS}"><module><id>20</id><name>k</name><kind>l45:dns-front-tag</kind><security><key>{"A" * 43}=</key></security></module></customizations></config>'
        admin.edit_config(target="running", config=key)
        assert "<key>" in admin.get_config("running", filter=SUBTREE).data_xml
    with agent.connect(user="operator") as op:
        data = op.get_config("running", filter=SUBTREE).data_xml
        assert "<id>20</id>" in data and "<key>" not in data
        with pytest.raises(RPCError) as e:
            op.edit_config(target="running", config=module_xml(21))
        assert e.value.tag == "access-denied"
        with pytest.raises(RPCError) as e:
            op.dispatch(to_ele(f'<revoke-module xmlns="{NS}"><id>20</id></revoke-module>'))
        assert e.value.tag == "access-denied"
        op.dispatch(to_ele(f'<report xmlns="{NS}"/>'))


def test_revoke_and_report_rpcs(agent):
    with agent.connect() as m:
        m.edit_config(target="running", config=module_xml(30))
        report = m.dispatch(to_ele(f'<report xmlns="{NS}"/>')).xml
        assert "<id>30</id>" in report and "<state>registered</state>" in report
        m.dispatch(to_ele(f'<revoke-module xmlns="{NS}"><id>30</id></revoke-module>'))
        assert ids(m.get_config("running", filter=SUBTREE)) == []
        with pytest.raises(RPCError) as e:
            m.dispatch(to_ele(f'<revoke-module xmlns="{NS}"><id>30</id></revoke-module>'))
        assert e.value.tag == "data-missing"


def test_tap_prepare_failure_changes_nothing(make_agent):
    a = make_agent("--tap-capacity", "1")
    with a.connect() as m:
        m.edit_config(target="running", config=module_xml(1))
        with pytest.raises(RPCError) as e:
            m.edit_config(target="running", config=module_xml(2))
        assert e.value.tag == "resource-denied"
        assert ids(m.get_config("running", filter=SUBTREE)) == [1]


def test_restart_after_kill9_keeps_config(agent):
    with agent.connect() as m:
        m.edit_config(target="running", config=module_xml(40, priority=5))
    agent.kill9()
    agent.start()
    with agent.connect() as m:
        assert ids(m.get_config("running", filter=SUBTREE)) == [40]
        assert "<id>40</id>" in m.dispatch(to_ele(f'<report xmlns="{NS}"/>')).xml


def test_session_limit(make_agent):
    a = make_agent("--max-sessions", "1")
    with a.connect():
        with pytest.raises(Exception):
            a.connect()


def test_slow_session_does_not_block_another(agent):
    # A session stuck mid-message (sent half an RPC) blocks nobody.
    raw = RawSession(agent)
    raw.send_eom(HELLO_11)
    raw.chan.sendall(b"\n#100000\n<rpc")
    with agent.connect() as m:
        m.get_config("running")
    raw.close()


# ===== raw SSH: bad input =====

HELLO_11 = f'<hello xmlns="{BASE}"><capabilities><capability>urn:ietf:params:netconf:base:1.1</capability></capabilities></hello>'


class RawSession:
    def __init__(self, agent):
        self.t = paramiko.Transport(("127.0.0.1", agent.port))
        self.t.connect(username="admin", pkey=paramiko.Ed25519Key.from_private_key_file(str(agent.key)))
        self.chan = self.t.open_session()
        self.chan.invoke_subsystem("netconf")
        self.chan.settimeout(60)
        self.buf = b""
        self.read_eom()

    def read_eom(self):
        while b"]]>]]>" not in self.buf:
            d = self.chan.recv(65536)
            if not d:
                raise EOFError
            self.buf += d
        msg, self.buf = self.buf.split(b"]]>]]>", 1)
        return msg.decode()

    def send_eom(self, text):
        self.chan.sendall(text.encode() + b"]]>]]>")

    def send_chunked(self, data):
        self.chan.sendall(b"\n#%d\n" % len(data) + data + b"\n##\n")

    def read_chunked(self):
        while True:
            m = re.match(rb"^((?:\n#\d+\n)(?:.|\n)*?)\n##\n", self.buf)
            if m:
                frame = m.group(1)
                self.buf = self.buf[m.end():]
                out, rest = b"", frame
                while rest:
                    h = re.match(rb"\n#(\d+)\n", rest)
                    n = int(h.group(1))
                    out += rest[h.end():h.end() + n]
                    rest = rest[h.end() + n:]
                return out.decode()
            d = self.chan.recv(1 << 20)
            if not d:
                raise EOFError
            self.buf += d

    def rpc(self, body, mid="1"):
        self.send_chunked(f'<rpc xmlns="{BASE}" message-id="{mid}">{body}</rpc>'.encode())
        return self.read_chunked()

    def closed(self):
        try:
            return self.chan.recv(1) == b""
        except Exception:
            return True

    def close(self):
        self.t.close()


def test_bad_input_gets_errors_and_session_goes_on(agent):
    s = RawSession(agent)
    s.send_eom(HELLO_11)
    # garbage inside a well-framed message
    s.send_chunked(b"\x01\x02garbage<<<")
    assert "<error-tag>malformed-message</error-tag>" in s.read_chunked()
    # truncated XML keeps its message-id
    s.send_chunked(f'<rpc xmlns="{BASE}" message-id="77"><get-config><source>'.encode())
    r = s.read_chunked()
    assert 'message-id="77"' in r and "malformed-message" in r
    # unknown operation
    assert "operation-not-supported" in s.rpc("<frobnicate/>")
    # wrong namespace
    r = s.send_chunked(b'<rpc xmlns="urn:wrong" message-id="5"><get/></rpc>') or s.read_chunked()
    assert "unknown-namespace" in r
    assert "unknown-namespace" in s.rpc('<get xmlns="urn:wrong"/>')
    # config without its namespace is rejected
    r = s.rpc(f'<edit-config><target><running/></target><config><customizations><module><id>1</id></module></customizations></config></edit-config>')
    assert "<rpc-error>" in r
    # the session still works
    assert "<data" in s.rpc("<get-config><source><running/></source></get-config>")
    s.close()


def test_oversized_message_is_too_big_and_nothing_is_lost(agent):
    with agent.connect() as m:
        m.edit_config(target="running", config=module_xml(50))
    s = RawSession(agent)
    s.send_eom(HELLO_11)
    chunk = b"x" * (1 << 20)
    head = f'<rpc xmlns="{BASE}" message-id="big"><edit-config><target><running/></target><config>'.encode()
    s.chan.sendall(b"\n#%d\n" % len(head) + head)
    for _ in range(100):  # 100 MB
        s.chan.sendall(b"\n#%d\n" % len(chunk) + chunk)
    s.chan.sendall(b"\n##\n")
    r = s.read_chunked()
    assert "too-big" in r and 'message-id="big"' in r
    assert "<id>50</id>" in s.rpc("<get-config><source><running/></source></get-config>")
    s.close()


def test_bad_chunk_header_closes_session_cleanly(agent):
    s = RawSession(agent)
    s.send_eom(HELLO_11)
    s.chan.sendall(b"\n#abc\n<rpc/>")
    assert "malformed-message" in s.read_chunked()
    assert s.closed()
    with agent.connect() as m:  # the agent serves others
        m.get_config("running")


def test_bad_hello_closes_session(agent):
    s = RawSession(agent)
    s.send_eom("<hello xmlns='urn:nope'/>")
    assert s.closed()


# ===== other clients =====

def test_openssh_netconf_subsystem(agent):
    hello = f'<hello xmlns="{BASE}"><capabilities><capability>urn:ietf:params:netconf:base:1.0</capability></capabilities></hello>]]>]]>'
    rpc = f'<rpc xmlns="{BASE}" message-id="1"><get-config><source><running/></source></get-config></rpc>]]>]]>'
    close = f'<rpc xmlns="{BASE}" message-id="2"><close-session/></rpc>]]>]]>'
    out = subprocess.run(
        ["ssh", "-i", str(agent.key), "-p", str(agent.port), "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-s", "admin@127.0.0.1", "netconf"],
        input=hello + rpc + close, capture_output=True, text=True, timeout=60)
    assert "<session-id>" in out.stdout
    assert 'message-id="1"' in out.stdout and "<data" in out.stdout
    assert 'message-id="2"' in out.stdout and "<ok/>" in out.stdout


def test_openssh_chunked_reads_with_each_cipher(agent):
    """`ssh -s` with chunked framing (tools/nc_openssh.py, the read
    benchmark's fast client), with every cipher OpenSSH and the agent
    share: a content-match read, the whole list, and a reply of several
    64 KiB chunks are the replies ncclient gets, byte for byte."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tools"))
    from lxml import etree
    from nc_openssh import OpenSshNetconf, negotiated_cipher
    mods = "".join(f"<module><id>{i}</id><name>{'n' * 50}{i}</name><kind>l45:dns-front-tag</kind>"
                   f"<priority>{i % 3}</priority></module>" for i in range(1, 3001))
    content = f'<customizations xmlns="{NS}"><module><priority>2</priority></module></customizations>'
    with agent.connect() as m:
        m.edit_config(target="running", config=f'<config xmlns="{BASE}"><customizations xmlns="{NS}" xmlns:l45="{NS}">{mods}</customizations></config>')
        want_content = m.get_config("running", filter=("subtree", content))
        want_all = m.get_config("running")
    assert ids(want_content) == list(range(2, 3001, 3))
    assert len(want_all.data_xml) > 4 * 65536  # several chunks
    rpcs = [
        (f'<get-config><source><running/></source><filter type="subtree">{content}</filter></get-config>', want_content),
        ("<get-config><source><running/></source></get-config>", want_all),
    ]
    offered = subprocess.run(["ssh", "-Q", "cipher"], capture_output=True, text=True, check=True).stdout.split()
    tried = []
    for cipher in ("chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr"):
        if cipher not in offered:
            continue
        assert negotiated_cipher("127.0.0.1", agent.port, "admin", agent.key, cipher).startswith(cipher)
        with OpenSshNetconf("127.0.0.1", agent.port, "admin", agent.key, cipher) as s:
            for body, want in rpcs:
                data = s.rpc(body).find(f"{{{BASE}}}data")
                c14n = etree.tostring(data, method="c14n", exclusive=True)
                assert c14n == etree.tostring(want.data_ele, method="c14n", exclusive=True), (cipher, body[:80])
        tried.append(cipher)
    assert "chacha20-poly1305@openssh.com" in tried, tried


def test_netconf_console2(agent):
    with agent.connect() as m:
        m.edit_config(target="running", config=module_xml(60, name="console"))
    out = subprocess.run([str(pathlib.Path(sys.executable).parent / "netconf-console2"), "--host", "127.0.0.1", "--port", str(agent.port), "-u", "admin",
                          "-p", agent.password, "--get-config", "-x", "/customizations"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "<name>console</name>" in out.stdout


def test_yangcli(agent):
    with agent.connect() as m:
        m.edit_config(target="running", config=module_xml(70, name="yuma"))
    out = subprocess.run(["yangcli", "--server=127.0.0.1", f"--ncport={agent.port}", "--user=admin",
                          f"--password={agent.password}", "--batch-mode", "--run-command=xget /customizations"],
                         capture_output=True, text=True, timeout=120)
    assert "name yuma" in out.stdout, out.stdout[-2000:]


def test_parameters_must_fit_the_kind(agent):
    def cfg(mid, kind, params):
        return (f'<config xmlns="{BASE}"><customizations xmlns="{NS}" xmlns:l45="{NS}"><module><id>{mid}</id><name>p</name>'
                f"<kind>l45:{kind}</kind><parameters>{params}</parameters></module></customizations></config>")
    with agent.connect() as m:
        m.edit_config(target="running", config=cfg(80, "stream-tag", "<stream-tag><interval>500</interval></stream-tag>"))
        with pytest.raises(RPCError) as e:
            m.edit_config(target="running", config=cfg(81, "rate-limit", "<stream-tag><interval>500</interval></stream-tag>"))
        assert e.value.tag == "invalid-value"
        assert ids(m.get_config("running", filter=SUBTREE)) == [80]
        with pytest.raises(RPCError) as e:
            m.edit_config(target="running", config=cfg(82, "stream-tag", "<stream-tag><interval>3</interval></stream-tag>"))
        assert e.value.tag == "invalid-value"
