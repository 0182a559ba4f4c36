"""Notifications against real clients: RFC 5277 create-subscription with
replay from the persisted log (ncclient, netconf-console2), RFC 8639/8641
dynamic subscriptions (establish-subscription through ncclient's raw
dispatch) with periodic and on-change YANG-push, NACM on pushed data."""
import datetime
import os
import pathlib
import re
import stat
import subprocess
import sys
import time

import pytest
from ncclient.operations.rpc import RPCError
from ncclient.xml_ import to_ele

from conftest import BASE, NS, module_xml

NOTIF = "urn:ietf:params:xml:ns:netconf:notification:1.0"
NC_NOTIF = "urn:ietf:params:xml:ns:netmod:notification"
SN = "urn:ietf:params:xml:ns:yang:ietf-subscribed-notifications"
YP = "urn:ietf:params:xml:ns:yang:ietf-yang-push"
DS = "urn:ietf:params:xml:ns:yang:ietf-datastores"
NACM = "urn:ietf:params:xml:ns:yang:ietf-netconf-acm"


def iso(t):
    return t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def take(m, timeout=10):
    """The next notification's XML, or None after `timeout` seconds."""
    n = m.take_notification(block=True, timeout=timeout)
    return None if n is None else n.notification_xml


def take_until(m, needle, timeout=15):
    """Notifications up to and including the first containing `needle`."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        x = take(m, timeout=max(0.1, deadline - time.monotonic()))
        if x is None:
            break
        got.append(x)
        if needle in x:
            return got
    raise AssertionError(f"no notification with {needle!r} in {got}")


def establish(m, inner):
    reply = m.dispatch(to_ele(f'<establish-subscription xmlns="{SN}">{inner}</establish-subscription>'))
    found = re.search(r"<(?:\w+:)?id[^>]*>(\d+)</", reply.xml)
    assert found, reply.xml
    return int(found.group(1))


def datastore_sub(xpath, trigger):
    return (f'<datastore xmlns="{YP}" xmlns:ds="{DS}">ds:operational</datastore>'
            f'<datastore-xpath-filter xmlns="{YP}" xmlns:l45="{NS}">{xpath}</datastore-xpath-filter>{trigger}')


# ===== schema and state =====

def test_hello_and_yang_library_list_the_notification_modules(agent):
    names = ["notifications", "nc-notifications", "ietf-subscribed-notifications", "ietf-yang-push"]
    with agent.connect() as m:
        caps = list(m.server_capabilities)
        for name in names:
            assert any(f"module={name}&" in c for c in caps), name
        assert any("module=ietf-yang-push&" in c and "features=on-change" in c for c in caps)
        lib = m.get(filter=("subtree", '<yang-library xmlns="urn:ietf:params:xml:ns:yang:ietf-yang-library"/>')).data_xml
        for name in names:
            assert f"<name>{name}</name>" in lib, name
        # imported for the YANG-patch grouping only
        assert re.search(r"<import-only-module>\s*<name>ietf-yang-patch</name>", lib), lib


def test_streams_list_the_netconf_stream_with_replay(agent):
    with agent.connect() as m:
        data = m.get(filter=("subtree", f'<netconf xmlns="{NC_NOTIF}"/>')).data_xml
        assert "<name>NETCONF</name>" in data
        assert "<replaySupport>true</replaySupport>" in data
        assert re.search(r"<replayLogCreationTime>\d{4}-\d\d-\d\dT", data)
        sn = m.get(filter=("subtree", f'<streams xmlns="{SN}"/>')).data_xml
        assert "<name>NETCONF</name>" in sn and "<replay-support/>" in sn


def test_no_yang_push_hides_the_module(make_agent):
    a = make_agent("--no-yang-push")
    with a.connect() as m:
        assert not any("module=ietf-yang-push&" in c for c in m.server_capabilities)
        with pytest.raises(RPCError) as e:
            establish(m, datastore_sub("/l45:customizations/l45:module/l45:state",
                                       f'<periodic xmlns="{YP}"><period>100</period></periodic>'))
        assert e.value.tag == "operation-not-supported"


# ===== RFC 5277 =====

def test_replay_after_restart_then_live_then_complete(agent):
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=2)
    with agent.connect() as m:
        m.edit_config(target="running", config=module_xml(1))
        m.edit_config(target="running", config=module_xml(2))
    agent.stop()
    agent.start()
    with agent.connect() as m:
        m.create_subscription(start_time=iso(start))
        got = take_until(m, "replayComplete")
        registered = [int(x) for g in got for x in re.findall(r"<module-registered[^>]*><id>(\d+)</id>", g)]
        assert registered == [1, 2]
        assert sum("netconf-config-change" in g for g in got) == 2
        # live events follow the replay on the same subscription
        m.edit_config(target="running", config=module_xml(3))
        got = take_until(m, "<id>3</id>")
        assert "module-registered" in got[-1]


def test_replay_with_stop_time_ends_with_notification_complete(agent):
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=2)
    with agent.connect() as m:
        m.edit_config(target="running", config=module_xml(4))
    stop = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1)
    with agent.connect() as m:
        m.create_subscription(start_time=iso(start), stop_time=iso(stop))
        got = take_until(m, "notificationComplete")
        assert any("replayComplete" in g for g in got)
        assert any("<id>4</id>" in g for g in got)
        # the subscription ended: the session may subscribe again
        m.create_subscription()


def test_create_subscription_errors(agent):
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    with agent.connect() as m:
        with pytest.raises(RPCError) as e:
            m.create_subscription(start_time=iso(future))
        assert e.value.tag == "bad-element" and "startTime" in e.value.message
        with pytest.raises(RPCError) as e:
            m.create_subscription(start_time=iso(past), stop_time=iso(past - datetime.timedelta(minutes=1)))
        assert e.value.tag == "bad-element"
        with pytest.raises(RPCError) as e:
            m.create_subscription(stream_name="NOPE")
        assert e.value.tag == "invalid-value"
        m.create_subscription()
        with pytest.raises(RPCError) as e:
            m.create_subscription()
        assert e.value.tag == "operation-failed"
        # the session goes on
        assert "<data" in m.get_config("running").data_xml


def test_filter_selects_on_notification_content(agent):
    with agent.connect() as m:
        m.create_subscription(filter=("subtree", f'<module-registered xmlns="{NS}"><id>6</id></module-registered>'))
        m.edit_config(target="running", config=module_xml(5))
        m.edit_config(target="running", config=module_xml(6))
        got = take(m)
        assert got is not None and "module-registered" in got and "<id>6</id>" in got, got
        assert take(m, timeout=1) is None
    with agent.connect() as m:
        m.dispatch(to_ele(f'<create-subscription xmlns="{NOTIF}"><filter type="xpath" xmlns:l45="{NS}" '
                          f'select="/l45:module-revoked[l45:id=5]"/></create-subscription>'))
        m.edit_config(target="running", config=module_xml(6, op="delete"))
        m.edit_config(target="running", config=module_xml(5, op="delete"))
        got = take(m)
        assert got is not None and "module-revoked" in got and "<id>5</id>" in got, got
        assert take(m, timeout=1) is None


def test_log_is_bounded_owner_only_and_survives_a_damaged_tail(make_agent):
    a = make_agent("--notification-log-events", "5")
    with a.connect() as m:
        for i in range(10, 16):
            m.edit_config(target="running", config=module_xml(i))
    a.stop()
    log = a.state / "notifications.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    with open(log, "ab") as f:
        f.write(b"99\t1700000000000\tlayer45-customization\tmodule-reg")  # cut short
    a.start()
    with a.connect() as m:
        m.create_subscription(start_time="1970-01-01T00:00:00Z")
        got = take_until(m, "replayComplete")[:-1]
        assert len(got) == 5
        # the newest five: module 13's registration ... module 15's
        assert "<id>15</id>" in got[-1]
        assert all("module-reg" not in g or "<name>" in g for g in got)
    assert "damaged" in (a.dir / "agent.log").read_text()


def test_netconf_console2_create_subscription(agent):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([str(pathlib.Path(sys.executable).parent / "netconf-console2"), "--host", "127.0.0.1",
                          "--port", str(agent.port), "-u", "admin", "-p", agent.password,
                          "--create-subscription", "NETCONF", "--sleep", "30"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        # its reply to create-subscription comes first
        deadline = time.monotonic() + 30
        seen = ""
        while "<ok" not in seen and time.monotonic() < deadline:
            seen += p.stdout.readline()
        assert "<ok" in seen, seen
        with agent.connect() as m:
            m.edit_config(target="running", config=module_xml(77, name="console"))
        while "<name>console</name>" not in seen and time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            seen += line
        assert "<module-registered" in seen and "<name>console</name>" in seen, seen
    finally:
        p.kill()
        p.wait()


# ===== RFC 8639 / 8641 =====

def test_establish_stream_subscription_with_replay(agent):
    with agent.connect() as m:
        m.edit_config(target="running", config=module_xml(20))
    with agent.connect() as m:
        sid = establish(m, "<stream>NETCONF</stream><replay-start-time>1970-01-01T00:00:00Z</replay-start-time>")
        got = take_until(m, "replay-completed")
        assert f"<id>{sid}</id>" in got[-1]
        assert any("<id>20</id>" in g for g in got)
        # RFC 5277 and RFC 8639 subscriptions do not share a session
        with pytest.raises(RPCError):
            m.create_subscription()


def test_periodic_push_update_carries_module_state(agent):
    with agent.connect() as m:
        m.edit_config(target="running", config=module_xml(30))
        m.edit_config(target="running", config=module_xml(31))
        sid = establish(m, datastore_sub("/l45:customizations/l45:module[l45:id='30']/l45:state",
                                         f'<periodic xmlns="{YP}"><period>50</period></periodic>'))
        first = take(m)
        second = take(m)
        for n in (first, second):
            assert n is not None and "push-update" in n, n
            assert f"<id>{sid}</id>" in n
            assert "<id>30</id>" in n and "<socket-count>0</socket-count>" in n
            assert "<id>31</id>" not in n
        m.dispatch(to_ele(f'<delete-subscription xmlns="{SN}"><id>{sid}</id></delete-subscription>'))
        # drain what was already queued, then nothing more
        while take(m, timeout=1.5) is not None:
            pass
        with pytest.raises(RPCError) as e:
            m.dispatch(to_ele(f'<delete-subscription xmlns="{SN}"><id>{sid}</id></delete-subscription>'))
        assert e.value.tag == "invalid-value"


def test_on_change_pushes_changes_as_yang_patch(agent):
    with agent.connect() as m:
        m.edit_config(target="running", config=module_xml(40))
        sid = establish(m, datastore_sub("/l45:customizations/l45:module/l45:state",
                                         f'<on-change xmlns="{YP}"><sync-on-start>true</sync-on-start></on-change>'))
        sync = take(m)
        assert sync is not None and "push-update" in sync and "<id>40</id>" in sync, sync
        m.edit_config(target="running", config=module_xml(41))
        change = take(m)
        assert change is not None and "push-change-update" in change, change
        assert f"<id>{sid}</id>" in change
        assert "/layer45-customization:customizations/module=41/state" in change
        assert "<operation>create</operation>" in change and "<state>registered</state>" in change
        m.edit_config(target="running", config=module_xml(41, op="delete"))
        change = take(m)
        assert change is not None and "<operation>delete</operation>" in change and "module=41/state" in change
        # on-change covers state and sockets only
        with pytest.raises(RPCError) as e:
            establish(m, datastore_sub("/l45:customizations/l45:module/l45:name",
                                       f'<on-change xmlns="{YP}"/>'))
        assert e.value.tag == "invalid-value"
        assert "on-change" in e.value.message


def test_resync_sends_a_full_update_of_an_on_change_subscription(agent):
    with agent.connect() as m, agent.connect() as other:
        m.edit_config(target="running", config=module_xml(45))
        # No sync-on-start: nothing is pushed until something changes.
        sid = establish(m, datastore_sub("/l45:customizations/l45:module/l45:state",
                                         f'<on-change xmlns="{YP}"><sync-on-start>false</sync-on-start></on-change>'))
        assert take(m, timeout=1) is None
        resync = f'<resync-subscription xmlns="{YP}"><id>{sid}</id></resync-subscription>'
        m.dispatch(to_ele(resync))
        full = take(m)
        assert full is not None and "<push-update" in full and "<id>45</id>" in full, full
        # Later changes are reported against the resynchronized baseline.
        m.edit_config(target="running", config=module_xml(46))
        change = take(m)
        assert change is not None and "push-change-update" in change and "module=46/state" in change, change
        assert "module=45" not in change
        # Another session's subscription, an unknown id, a periodic one: refused.
        psid = establish(m, datastore_sub("/l45:customizations/l45:module/l45:state",
                                          f'<periodic xmlns="{YP}"><period>6000</period></periodic>'))
        for bad_id, session in [(sid, other), (999999, m), (psid, m)]:
            with pytest.raises(RPCError) as e:
                session.dispatch(to_ele(f'<resync-subscription xmlns="{YP}"><id>{bad_id}</id></resync-subscription>'))
            assert e.value.tag == "invalid-value"
            assert e.value.to_dict()["app_tag"].endswith("no-such-subscription-resync"), e.value.to_dict()


def test_modify_and_kill_subscription(agent):
    with agent.connect() as m, agent.connect() as admin:
        m.edit_config(target="running", config=module_xml(50))
        sid = establish(m, datastore_sub("/l45:customizations/l45:module/l45:state",
                                         f'<periodic xmlns="{YP}"><period>6000</period></periodic>'))
        m.dispatch(to_ele(f'<modify-subscription xmlns="{SN}"><id>{sid}</id>'
                          f'<datastore xmlns="{YP}" xmlns:ds="{DS}">ds:operational</datastore>'
                          f'<datastore-xpath-filter xmlns="{YP}" xmlns:l45="{NS}">/l45:customizations/l45:module/l45:state</datastore-xpath-filter>'
                          f'<periodic xmlns="{YP}"><period>30</period></periodic></modify-subscription>'))
        got = take_until(m, "push-update", timeout=5)
        assert any("subscription-modified" in g for g in got)
        admin.dispatch(to_ele(f'<kill-subscription xmlns="{SN}"><id>{sid}</id></kill-subscription>'))
        got = take_until(m, "subscription-terminated", timeout=5)
        assert f"<id>{sid}</id>" in got[-1]


def nacm_hide_statistics():
    """A rule that hides bytes-sent from the operator group."""
    return (f'<config xmlns="{BASE}"><nacm xmlns="{NACM}"><rule-list><name>hide-bytes</name><group>*</group>'
            f'<rule><name>no-bytes-sent</name><module-name>layer45-customization</module-name>'
            f'<path xmlns:l45="{NS}">/l45:customizations/l45:module/l45:state/l45:bytes-sent</path>'
            f'<access-operations>read</access-operations><action>deny</action></rule></rule-list></nacm></config>')


def test_nacm_hides_unreadable_nodes_from_pushes(agent):
    with agent.connect() as m:
        m.edit_config(target="running", config=module_xml(60))
        m.edit_config(target="running", config=nacm_hide_statistics())
    with agent.connect(user="operator") as op, agent.connect() as adm:
        trigger = f'<periodic xmlns="{YP}"><period>50</period></periodic>'
        establish(op, datastore_sub("/l45:customizations/l45:module/l45:state", trigger))
        establish(adm, datastore_sub("/l45:customizations/l45:module/l45:state", trigger))
        o = take(op)
        a = take(adm)
        assert o is not None and "<id>60</id>" in o and "<socket-count>" in o, o
        assert "bytes-sent" not in o
        assert a is not None and "<bytes-sent>0</bytes-sent>" in a, a


def test_nacm_hides_unreadable_nodes_from_on_change(agent):
    with agent.connect() as m:
        m.edit_config(target="running", config=module_xml(61))
        m.edit_config(target="running", config=nacm_hide_statistics())
    with agent.connect(user="operator") as op:
        establish(op, datastore_sub("/l45:customizations/l45:module/l45:state",
                                    f'<on-change xmlns="{YP}"><sync-on-start>true</sync-on-start></on-change>'))
        sync = take(op)
        assert sync is not None and "<id>61</id>" in sync and "<socket-count>" in sync, sync
        assert "bytes-sent" not in sync
        with agent.connect() as m:
            m.edit_config(target="running", config=module_xml(62))
        change = take(op)
        assert change is not None and "module=62/state" in change and "<state>registered</state>" in change, change
        assert "bytes-sent" not in change
