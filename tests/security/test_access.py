"""NETCONF users and logins, attacked as a read-only user or an
unauthenticated peer would, with real clients (ncclient, paramiko, raw
sockets) against the real agent."""
import socket
import subprocess
import time

import paramiko
import pytest
from ncclient import manager
from ncclient.operations.rpc import RPCError

from conftest import BASE, NS, Agent, module_xml

KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


def keyed_module(mid):
    return (f'<config xmlns="{BASE}"><customizations xmlns="{NS}" xmlns:l45="{NS}">'
            f"<module><id>{mid}</id><name>m{mid}</name><kind>l45:dns-front-tag</kind>"
            f"<security><key>{KEY}</key></security></module></customizations></config>")


def rpc_error_tag(call):
    with pytest.raises(RPCError) as e:
        call()
    return e.value.tag


def test_reader_cannot_probe_a_key_with_xpath(agent):
    with agent.connect() as admin:
        admin.edit_config(target="running", config=keyed_module(1))
    with agent.connect("operator") as reader:
        # A right guess and a wrong one answer the same: nothing.
        for guess in (KEY[:4], "ZZZZ"):
            sel = f"/l45:customizations/l45:module[starts-with(l45:security/l45:key,'{guess}')]/l45:id"
            reply = reader.get_config(source="running", filter=("xpath", (({"l45": NS}), sel)))
            assert "<id>" not in reply.xml, reply.xml
        # The module itself is readable, without its key.
        whole = reader.get_config(source="running").xml
        assert "<name>m1</name>" in whole and KEY not in whole


@pytest.mark.parametrize("op", [
    lambda m: m.lock(target="running"),
    lambda m: m.discard_changes(),
    lambda m: m.commit(),
    lambda m: m.copy_config(source="running", target="startup"),
    lambda m: m.validate(source="running"),
    lambda m: m.edit_config(target="running", config=module_xml(9)),
    lambda m: m.dispatch(edit_data_rpc(9)),
])
def test_reader_may_not_change_or_hold_the_device(agent, op):
    with agent.connect("operator") as reader:
        assert rpc_error_tag(lambda: op(reader)) == "access-denied"


def test_reader_may_read_report_and_subscribe(agent):
    with agent.connect("operator") as reader:
        assert "<data" in reader.get_config(source="running").xml
        assert "module layer45-customization" in reader.get_schema("layer45-customization").xml
        reader.dispatch(subscription_rpc())
        reply = reader.dispatch(report_rpc())
        assert reply.ok


NMDA = "urn:ietf:params:xml:ns:yang:ietf-netconf-nmda"
DATASTORES = "urn:ietf:params:xml:ns:yang:ietf-datastores"


def edit_data_rpc(mid):
    from ncclient.xml_ import to_ele
    return to_ele(f'<edit-data xmlns="{NMDA}" xmlns:ds="{DATASTORES}"><datastore>ds:running</datastore><config>'
                  f'<customizations xmlns="{NS}" xmlns:l45="{NS}"><module><id>{mid}</id><name>m{mid}</name>'
                  f"<kind>l45:dns-front-tag</kind></module></customizations></config></edit-data>")


def test_reader_cannot_probe_a_key_with_get_data(agent):
    from ncclient.xml_ import to_ele
    with agent.connect() as admin:
        admin.edit_config(target="running", config=keyed_module(1))
    with agent.connect("operator") as reader:
        for ds in ("running", "operational"):
            for guess in (KEY[:4], "ZZZZ"):
                sel = f"/l45:customizations/l45:module[starts-with(l45:security/l45:key,'{guess}')]/l45:id"
                reply = reader.dispatch(to_ele(
                    f'<get-data xmlns="{NMDA}" xmlns:ds="{DATASTORES}"><datastore>ds:{ds}</datastore>'
                    f'<xpath-filter xmlns:l45="{NS}">{sel}</xpath-filter></get-data>')).xml
                assert "<id>" not in reply, reply
            whole = reader.dispatch(to_ele(
                f'<get-data xmlns="{NMDA}" xmlns:ds="{DATASTORES}"><datastore>ds:{ds}</datastore></get-data>')).xml
            assert "<name>m1</name>" in whole and KEY not in whole


def subscription_rpc():
    from ncclient.xml_ import to_ele
    return to_ele('<create-subscription xmlns="urn:ietf:params:xml:ns:netconf:notification:1.0"/>')


def report_rpc():
    from ncclient.xml_ import to_ele
    return to_ele(f'<report xmlns="{NS}"/>')


def test_admin_cannot_lock_everyone_out_of_nacm(agent):
    with agent.connect() as admin:
        cut = (f'<config xmlns="{BASE}"><nacm xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-acm">'
               f'<rule-list xmlns:nc="{BASE}" nc:operation="delete"><name>admin</name></rule-list>'
               f"</nacm></config>")
        assert rpc_error_tag(lambda: admin.edit_config(target="running", config=cut)) == "invalid-value"
        # Still an admin.
        admin.edit_config(target="running", config=module_xml(3))


def test_unprefixed_key_logs_in_only_as_the_first_admin(make_agent):
    a = make_agent()
    a.stop()
    # The operator key given without USER: it binds to the first admin.
    b2 = UnprefixedAgent(a.dir, f"{a.operator_key}.pub").start()
    try:
        with manager.connect(host="127.0.0.1", port=b2.port, username="admin", key_filename=str(a.operator_key),
                             hostkey_verify=False, allow_agent=False, look_for_keys=False, timeout=30) as m:
            assert "<data" in m.get_config(source="running").xml
        for user in ("operator", "root", "someone"):
            with pytest.raises(Exception):
                manager.connect(host="127.0.0.1", port=b2.port, username=user, key_filename=str(a.operator_key),
                                hostkey_verify=False, allow_agent=False, look_for_keys=False, timeout=30)
    finally:
        b2.stop()


class UnprefixedAgent(Agent):
    """An agent whose only key file is given without `USER:`."""

    def __init__(self, workdir, pubkey, extra=()):
        super().__init__(workdir, extra)
        self.pubkey = pubkey

    def start(self):
        from conftest import AGENT
        args = [AGENT, "--listen", f"127.0.0.1:{self.port}", "--state-dir", str(self.state),
                "--authorized-keys", str(self.pubkey), *self.extra]
        self.log = open(self.dir / "agent.log", "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        assert "listening on" in line, f"agent did not start: {line!r}"
        return self


def log_shows(agent, text, within=30):
    """Whether the agent's log shows `text` within `within` seconds (it is
    written right after the event the test saw, so it may trail it)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if text in (agent.dir / "agent.log").read_text():
            return True
        time.sleep(0.05)
    return False


def closed_by_peer(sock, within):
    """Whether the peer closes `sock` before `within` seconds pass (reads
    until EOF; the deadline only bounds a failing test)."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
        return True
    except (socket.timeout, TimeoutError):
        return False
    except ConnectionResetError:
        return True


def test_silent_connection_is_closed_after_the_login_grace_time(make_agent):
    a = make_agent("--login-grace-time", "2")
    s = socket.create_connection(("127.0.0.1", a.port))
    # Never send a banner: the agent closes the connection.
    assert closed_by_peer(s, within=30)
    s.close()
    assert log_shows(a, "no SSH identification in time")
    assert "127.0.0.1" in (a.dir / "agent.log").read_text()


def test_unauthenticated_connection_is_closed_after_the_login_grace_time(make_agent):
    a = make_agent("--login-grace-time", "2")
    sock = socket.create_connection(("127.0.0.1", a.port))
    t = paramiko.Transport(sock)
    t.start_client(timeout=10)
    # Key exchange done, no authentication: closed at the deadline (the
    # transport's thread ends then).
    t.join(30)
    assert not t.is_active()
    t.close()
    assert log_shows(a, "not authenticated in time")


def test_unauthenticated_connections_are_capped(make_agent):
    a = make_agent("--max-unauthenticated", "2", "--login-grace-time", "60")
    held = [socket.create_connection(("127.0.0.1", a.port)) for _ in range(2)]
    for s in held:
        # Each got the server's banner: both are in the pre-auth phase.
        s.settimeout(10)
        assert s.recv(64).startswith(b"SSH-2.0")
    extra = socket.create_connection(("127.0.0.1", a.port))
    assert closed_by_peer(extra, within=30)
    extra.close()
    assert log_shows(a, "too many unauthenticated connections")
    # An authenticated client gets in once a slot is free.
    held[0].close()
    deadline = time.monotonic() + 30
    while True:
        try:
            with a.connect() as m:
                assert "<data" in m.get_config(source="running").xml
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
    for s in held[1:]:
        s.close()


def test_sessions_per_user_are_capped(make_agent):
    a = make_agent("--max-sessions-per-user", "2")
    first = [a.connect("operator") for _ in range(2)]
    with pytest.raises(Exception):
        a.connect("operator")
    # Another user is not affected.
    with a.connect() as admin:
        assert "<data" in admin.get_config(source="running").xml
    for m in first:
        m.close_session()
    assert log_shows(a, "per-user session limit reached")


def test_idle_session_is_closed(make_agent):
    a = make_agent("--idle-timeout", "2")
    m = a.connect()
    # The client's session thread ends when the agent closes the session.
    m._session.join(30)
    assert not m.connected
    assert log_shows(a, "idle timeout")


def test_failed_login_is_logged_with_the_peer(agent, tmp_path):
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    with pytest.raises(Exception):
        manager.connect(host="127.0.0.1", port=agent.port, username="admin", key_filename=str(stranger),
                        hostkey_verify=False, allow_agent=False, look_for_keys=False, timeout=30)
    assert log_shows(agent, "public key refused")
    assert "127.0.0.1" in (agent.dir / "agent.log").read_text()
