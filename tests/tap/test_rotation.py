"""Live rotation across two devices (dissertation figure 5.3): a dig loop
every 50 ms on device A, dnsmasq on device B, each under its own agent and
tap. Front tag (priority 10) → compression (deployed at 20, immediate
attach), raised on the receiver first, then on the sender, then the old
module revoked — without a single failed query."""
from taplab import DigLoop, Dnsmasq, module

FRONT = "<dns-tag><tag>XTAGXdig</tag></dns-tag>"
COMP = "<dns-compression><recursion-desired>true</recursion-desired></dns-compression>"


def test_two_device_rotation_front_tag_to_compression_loses_no_query(make_agent, procs, tmp_path):
    client_dev = make_agent()   # device A: the dig loop (sender of customized queries)
    server_dev = make_agent()   # device B: dnsmasq (receiver)
    dns = Dnsmasq(tmp_path, env=server_dev.env())
    procs.append(dns)
    to_server = f"<protocol>udp</protocol><destination-port>{dns.port}</destination-port>"
    at_server = f"<protocol>udp</protocol><source-port>{dns.port}</source-port>"

    client_dev.edit(module(1, "dns-front-tag", 10, to_server, FRONT))
    server_dev.edit(module(1, "dns-front-tag", 10, at_server, FRONT))
    loop = DigLoop(dns.port, client_dev.env())
    loop.start()
    try:
        loop.more(5)
        # M2 at lower precedence, attached at once to live sockets.
        imm = "<attach>immediate</attach>"
        server_dev.edit(module(2, "dns-compression", 20, at_server, COMP, extra=imm))
        client_dev.edit(module(2, "dns-compression", 20, to_server, COMP, extra=imm))
        loop.more(5)
        # Receiver first …
        server_dev.set_leaf(2, "priority", "5")
        loop.more(5)
        # … then the sender: queries are now compressed.
        client_dev.set_leaf(2, "priority", "5")
        loop.more(5)
        before = int(server_dev.state()[0][1]["messages-received"])
        # Retire M1 everywhere.
        server_dev.revoke(1)
        client_dev.revoke(1)
        loop.more(5)
    finally:
        loop.stop()
    assert not loop.failures, f"{len(loop.failures)} failed queries: {loop.failures[0]}"
    assert loop.ok >= 25
    mods, socks = server_dev.state()
    assert set(mods) == {2}
    assert int(mods[2]["messages-received"]) >= 10, mods
    # dnsmasq's one socket went through the whole rotation live.
    assert [s["modules"] for s in socks if s["process"] == "dnsmasq"] == [[2]], socks
    assert before >= 5
