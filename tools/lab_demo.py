"""What the NCO does to one device, step by step, with ncclient."""
import re
import sys

from ncclient import manager
from ncclient.xml_ import to_ele

NS = "urn:layer45:params:xml:ns:yang:layer45-customization"
BASE = "urn:ietf:params:xml:ns:netconf:base:1.0"
port, key = int(sys.argv[1]), sys.argv[2]


def module(mid, name, kind, priority, attach="new-sockets"):
    return (f'<config xmlns="{BASE}"><customizations xmlns="{NS}" xmlns:l45="{NS}"><module>'
            f"<id>{mid}</id><name>{name}</name><kind>l45:{kind}</kind><priority>{priority}</priority>"
            f"<attach>{attach}</attach><match><protocol>udp</protocol><destination-port>53</destination-port>"
            f"<process-name>dig</process-name></match></module></customizations></config>")


def show(m, title):
    data = m.dispatch(to_ele(f'<report xmlns="{NS}"/>')).xml
    rows = re.findall(r"<id>(\d+)</id><state>(\w+)</state>(?:<activated>(\w+)</activated>)?", data)
    cfg = m.get_config("running", filter=("subtree", f'<customizations xmlns="{NS}"/>')).data_xml
    prios = dict(re.findall(r"<id>(\d+)</id><name>[^<]*</name><kind>[^<]*</kind><priority>(\d+)</priority>", cfg))
    print(f"\n== {title}")
    print(f"{'id':>4} {'state':<12} {'activated':<9} priority")
    for mid, state, act in rows:
        print(f"{mid:>4} {state:<12} {act or '-':<9} {prios.get(mid, '-')}")


with manager.connect(host="127.0.0.1", port=port, username="admin", key_filename=key,
                     hostkey_verify=False, allow_agent=False, look_for_keys=False) as m:
    print(f"NETCONF session {m.session_id}; {len(list(m.server_capabilities))} capabilities")
    m.edit_config(target="running", config=module(1, "dns-front-tag", "dns-front-tag", 10))
    show(m, "deployed M1 (front tag, priority 10)")
    m.edit_config(target="running", config=module(2, "dns-compression", "dns-compression", 20, "immediate"))
    show(m, "deployed M2 (compression, priority 20, immediate attach)")
    m.edit_config(target="candidate", config=module(2, "dns-compression", "dns-compression", 5, "immediate"))
    m.commit()
    show(m, "rotated: M2 raised above M1 (candidate + commit)")
    m.dispatch(to_ele(f'<revoke-module xmlns="{NS}"><id>1</id></revoke-module>'))
    show(m, "M1 revoked")
    try:
        m.edit_config(target="running", config=module(3, "bad", "dns-front-tag", 70000))
    except Exception as e:  # the device's rpc-error, as an operator sees it
        print(f"\n== invalid edit refused by the device: {e}")
print("\nlab done")
