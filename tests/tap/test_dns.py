"""dig → dnsmasq through the user-space tap, configured by edit-config."""
import pytest

from taplab import (Capture, Dnsmasq, dig, module, plain_dns_answers, wait_for)

TAG = "XTAGXdig"
CODE = "0123456789abcdefghijklmnopqrstuv"


def client_match(port):
    return f"<protocol>udp</protocol><destination-port>{port}</destination-port><process-name>dig</process-name>"


def server_match(port):
    return f"<protocol>udp</protocol><source-port>{port}</source-port>"


PARAMS = {
    "dns-front-tag": f"<dns-tag><tag>{TAG}</tag></dns-tag>",
    "dns-middle-tag": f"<dns-tag><tag>{TAG}</tag></dns-tag>",
    "dns-end-tag": f"<dns-tag><tag>{TAG}</tag></dns-tag>",
    "dns-compression": "<dns-compression><recursion-desired>true</recursion-desired></dns-compression>",
}


def on_wire(kind, payload):
    tag = TAG.encode()
    if kind == "dns-front-tag":
        return payload.startswith(tag)
    if kind == "dns-middle-tag":
        return payload[12:12 + len(tag)] == tag
    if kind == "dns-end-tag":
        return payload.endswith(tag)
    # Compressed: ID, marker 0xA5, QNAME, QTYPE, QCLASS and nothing else.
    return payload[2] == 0xA5 and payload[3:].startswith(b"\x07example\x04test\x00") and len(payload) == 3 + 14 + 4


@pytest.mark.parametrize("kind", list(PARAMS))
def test_dns_kinds_customize_on_the_wire_and_need_the_server_module(tap, procs, tmp_path, kind):
    dns = Dnsmasq(tmp_path, env=tap.env())
    procs.append(dns)
    tap.edit(module(1, kind, 10, client_match(dns.port), PARAMS[kind]),
             module(2, kind, 10, server_match(dns.port), PARAMS[kind]))

    cap = Capture(tmp_path / "q.pcap", f"udp port {dns.port}")
    answered, out = dig(dns.port, env=tap.env())
    packets = cap.stop()
    assert answered, f"{kind}: tapped dig through tapped dnsmasq failed:\n{out}"
    queries = [p for (proto, s, d, p) in packets if d == dns.port]
    assert queries, "no query captured"
    assert all(on_wire(kind, q) for q in queries), f"{kind}: not customized on the wire: {queries!r}"
    plain_len = len(queries[0])
    mods, socks = tap.state()
    assert int(mods[1]["messages-sent"]) >= 1 and int(mods[2]["messages-received"]) >= 1, mods
    assert mods[1]["state"] == "active" and "active-ts" in mods[2]
    # The socket table: what the tap did not need for matching (its own
    # port, the thread's name) the agent reads from /proc.
    assert any(s["process"] == "dnsmasq" and s["modules"] == [2] and s["source-port"] == str(dns.port)
               and s["thread"] == "dnsmasq" for s in socks), socks

    # Without the server-side module the server sees the customized bytes:
    # dnsmasq rejects front/middle tags and compressed queries, but still
    # answers a query with a tag after its last record (EDNS tolerance).
    tap.revoke(2)
    answered, out = dig(dns.port, env=tap.env(), timeout=1)
    if kind == "dns-end-tag":
        assert answered, f"end tag must be tolerated by a plain server:\n{out}"
    else:
        assert not answered, f"{kind}: a plain server answered a customized query:\n{out}"
    assert plain_len > 0


def test_clearance_filter_attaches_to_a_running_dnsmasq_and_revoke_restores(tap, procs, tmp_path):
    dns = Dnsmasq(tmp_path, env=tap.env())
    procs.append(dns)
    assert plain_dns_answers(dns.port)
    # Immediate attach: dnsmasq's socket exists already; no restart.
    tap.edit(module(7, "dns-clearance-filter", 10, server_match(dns.port),
                    f"<clearance><code>{CODE}</code></clearance>",
                    extra="<attach>immediate</attach>"))
    assert not plain_dns_answers(dns.port, timeout=1.0), "query without the code was answered"
    assert not dig(dns.port, timeout=1)[0]
    # A client holding the code gets through.
    tap.edit(module(8, "dns-clearance-filter", 10, client_match(dns.port),
                    f"<clearance><code>{CODE}</code></clearance>"))
    answered, out = dig(dns.port, env=tap.env())
    assert answered, out
    mods, _ = tap.state()
    assert int(mods[7]["messages-received"]) >= 1
    pid = dns.proc.pid
    # Revoke restores plain service at once, same dnsmasq process.
    tap.revoke(7)
    assert plain_dns_answers(dns.port, timeout=1.0)
    assert dns.proc.pid == pid and dns.proc.poll() is None


def test_short_and_odd_datagrams_pass_without_harm(tap, procs, tmp_path):
    """Messages too short for a DNS header are left alone by client modules
    and never recognised by server modules; the applications keep working."""
    import socket
    import subprocess
    import sys
    dns = Dnsmasq(tmp_path, env=tap.env())
    procs.append(dns)
    tap.edit(module(1, "dns-compression", 10, f"<protocol>udp</protocol><destination-port>{dns.port}</destination-port>"),
             module(2, "dns-middle-tag", 20, f"<protocol>udp</protocol><destination-port>{dns.port}</destination-port>"),
             module(3, "dns-end-tag", 10, server_match(dns.port)),
             module(4, "dns-compression", 20, server_match(dns.port)))
    # A tapped Python client sends garbage of every length 0..40 and then a
    # real query; it must neither crash nor lose the real answer.
    script = (
        "import socket,sys,struct\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2)\n"
        f"a=('127.0.0.1',{dns.port})\n"
        "for n in range(41): s.sendto(bytes(range(n)), a)\n"
        "q=struct.pack('!HHHHHH',7,0x0100,1,0,0,0)+b'\\x07example\\x04test\\x00\\x00\\x01\\x00\\x01'\n"
        "s.sendto(q,a)\n"
        "while True:\n"
        "    d,_=s.recvfrom(4096)\n"
        "    if d[:2]==b'\\x00\\x07': break\n"
        "print('ANSWER', bytes([10,1,2,3]) in d)\n")
    p = subprocess.run([sys.executable, "-c", script], env=tap.env(), capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert "ANSWER True" in p.stdout
    assert dns.proc.poll() is None
    assert plain_dns_answers(dns.port)
