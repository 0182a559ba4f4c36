"""RFC 8526 get-data and edit-data (NMDA) against real clients: ncclient's
raw dispatch and netconf-console2's --rpc."""
import pathlib
import re
import subprocess
import sys

import pytest
from ncclient.operations.rpc import RPCError
from ncclient.xml_ import to_ele

from conftest import NS, module_xml

NMDA = "urn:ietf:params:xml:ns:yang:ietf-netconf-nmda"
DS = "urn:ietf:params:xml:ns:yang:ietf-datastores"
ORIGIN = "urn:ietf:params:xml:ns:yang:ietf-origin"
YANG_LIBRARY = "urn:ietf:params:xml:ns:yang:ietf-yang-library"


def get_data(datastore, body=""):
    return to_ele(f'<get-data xmlns="{NMDA}" xmlns:ds="{DS}"><datastore>ds:{datastore}</datastore>{body}</get-data>')


def edit_data(datastore, config, default_operation=None):
    op = f"<default-operation>{default_operation}</default-operation>" if default_operation else ""
    return to_ele(f'<edit-data xmlns="{NMDA}" xmlns:ds="{DS}"><datastore>ds:{datastore}</datastore>{op}'
                  f'<config>{config}</config></edit-data>')


def module(mid, name=None, priority=None):
    prio = f"<priority>{priority}</priority>" if priority is not None else ""
    return (f'<customizations xmlns="{NS}" xmlns:l45="{NS}"><module><id>{mid}</id><name>{name or f"m{mid}"}</name>'
            f"<kind>l45:dns-front-tag</kind>{prio}</module></customizations>")


def by_id(mid):
    return f"<xpath-filter xmlns:l45=\"{NS}\">/l45:customizations/l45:module[l45:id='{mid}']</xpath-filter>"


def ids(xml):
    return sorted(int(x) for x in re.findall(r"<(?:\w+:)?id>(\d+)</(?:\w+:)?id>", xml))


def test_hello_and_yang_library_announce_nmda(agent):
    with agent.connect() as m:
        caps = list(m.server_capabilities)
        library = [c for c in caps if c.startswith("urn:ietf:params:netconf:capability:yang-library:1.1?")]
        assert len(library) == 1 and "revision=2019-01-04" in library[0] and "content-id=" in library[0], caps
        assert any(c.startswith(f"{NMDA}?module=ietf-netconf-nmda&revision=2019-01-07") for c in caps), caps
        reply = m.dispatch(get_data("operational", f'<subtree-filter><yang-library xmlns="{YANG_LIBRARY}"/></subtree-filter>')).xml
    content_id = library[0].split("content-id=")[1]
    assert f"<content-id>{content_id}</content-id>" in reply
    for name in ("ietf-netconf-nmda", "ietf-datastores", "ietf-origin"):
        assert f"<name>{name}</name>" in reply, name
    for ds in ("running", "candidate", "startup", "intended", "operational"):
        assert re.search(rf"<name[^>]*>ds:{ds}</name><schema>(config|state)-schema</schema>", reply), ds
    assert re.search(r"<name[^>]*>ds:operational</name><schema>state-schema</schema>", reply)


def test_ncclient_edit_data_and_get_data_on_each_datastore(agent):
    with agent.connect() as m:
        m.dispatch(edit_data("running", module(1, priority=5)))
        m.dispatch(edit_data("running", module(2)))
        assert ids(m.dispatch(get_data("running", by_id(1))).xml) == [1]
        assert "<priority>5</priority>" in m.dispatch(get_data("intended", by_id(1))).xml
        # candidate: edited apart from running until commit
        m.dispatch(edit_data("candidate", module(3)))
        assert ids(m.dispatch(get_data("candidate", f'<subtree-filter><customizations xmlns="{NS}"/></subtree-filter>')).xml) == [1, 2, 3]
        assert ids(m.dispatch(get_data("running", f'<subtree-filter><customizations xmlns="{NS}"/></subtree-filter>')).xml) == [1, 2]
        m.commit()
        assert ids(m.dispatch(get_data("running", by_id(3))).xml) == [3]
        # operational: configuration with the tap's state, origins on request
        op = m.dispatch(get_data("operational", by_id(2) + "<with-origin/>")).xml
        assert "<state>registered</state>" in op
        assert re.search(rf'<customizations [^>]*xmlns:or="{ORIGIN}"[^>]*or:origin="or:intended"', op), op
        assert re.search(r'<state or:origin="or:learned">', op), op
        only_state = m.dispatch(get_data("operational", by_id(2) + "<config-filter>false</config-filter>")).xml
        assert "<state>registered</state>" in only_state and "<name>" not in only_state
        # replace and delete through edit-data
        m.dispatch(edit_data("running", f'<customizations xmlns="{NS}" xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0">'
                                        f'<module nc:operation="delete"><id>1</id></module></customizations>'))
        assert ids(m.get_config("running", filter=("subtree", f'<customizations xmlns="{NS}"/>')).data_xml) == [2, 3]
        m.dispatch(edit_data("running", module(9), default_operation="replace"))
        assert ids(m.get_config("running", filter=("subtree", f'<customizations xmlns="{NS}"/>')).data_xml) == [9]


def test_edit_data_refuses_datastores_that_are_not_writable(agent):
    with agent.connect() as m:
        for ds in ("operational", "intended", "startup"):
            with pytest.raises(RPCError) as e:
                m.dispatch(edit_data(ds, module(4)))
            assert e.value.tag == "invalid-value", ds
        with pytest.raises(RPCError) as e:
            m.dispatch(get_data("running", "<with-origin/>"))
        assert e.value.tag == "invalid-value"
        with pytest.raises(RPCError) as e:
            m.dispatch(get_data("nonesuch"))
        assert e.value.tag == "invalid-value"
        # nothing was written, and the session goes on
        assert ids(m.get_config("running", filter=("subtree", f'<customizations xmlns="{NS}"/>')).data_xml) == []


def test_nacm_reader_may_get_data_but_not_edit_data(agent):
    with agent.connect() as m:
        m.edit_config(target="running", config=module_xml(7))
    with agent.connect(user="operator") as m:
        assert ids(m.dispatch(get_data("operational", by_id(7))).xml) == [7]
        with pytest.raises(RPCError) as e:
            m.dispatch(edit_data("running", module(8)))
        assert e.value.tag == "access-denied"
    with agent.connect() as m:
        assert ids(m.get_config("running", filter=("subtree", f'<customizations xmlns="{NS}"/>')).data_xml) == [7]


def console(agent, tmp_path, rpc):
    f = tmp_path / "rpc.xml"
    f.write_text(rpc)
    return subprocess.run([str(pathlib.Path(sys.executable).parent / "netconf-console2"), "--host", "127.0.0.1",
                           "--port", str(agent.port), "-u", "admin", "-p", agent.password, "--rpc", str(f)],
                          capture_output=True, text=True, timeout=60)


def test_netconf_console2_edit_data_and_get_data(agent, tmp_path):
    out = console(agent, tmp_path, f'<edit-data xmlns="{NMDA}" xmlns:ds="{DS}"><datastore>ds:running</datastore>'
                                   f'<config>{module(61, name="console-nmda")}</config></edit-data>')
    assert out.returncode == 0 and "<ok/>" in out.stdout, out.stdout + out.stderr
    out = console(agent, tmp_path, f'<get-data xmlns="{NMDA}" xmlns:ds="{DS}"><datastore>ds:operational</datastore>'
                                   f'{by_id(61)}<with-origin/></get-data>')
    assert out.returncode == 0, out.stderr
    assert "console-nmda" in out.stdout and "or:intended" in out.stdout, out.stdout
