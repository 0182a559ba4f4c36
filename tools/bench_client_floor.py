"""What ncclient itself costs for the benchmark's messages, offline (no
server, no SSH): the floor under tools/bench_agent.py's figures.

Usage: .venv/bin/python tools/bench_client_floor.py [N ...]

For N module entries it times, with ncclient's own code:
- edit request: building the <edit-config> of the bench (to_ele of the
  config string, wrapping, to_xml), as EditConfig.request does;
- reply framing: ncclient's chunked-framing decoder (DefaultXMLParser,
  fed 4096-byte reads as its SSH transport does) over a get-config reply
  of the same size, sent as one chunk and as 64 KiB chunks;
- reply parsing: _dispatch_message's parse_root plus GetReply.parse
  (lxml) of that reply;
- the bench's own `data_xml` + count (not inside its timings).
It also reports the polling tick of ncclient's session loop: a request
queued while the loop sleeps in select() waits up to TICK seconds.
"""
import sys
import time
from io import BytesIO

from ncclient import xml_
from ncclient.operations.retrieve import GetReply
from ncclient.transport import parser as ncparser
from ncclient.transport import session as ncsession

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from bench_agent import BASE, NS, load_xml  # noqa: E402


def reply_xml(n):
    mods = "".join(f"<module><id>{i}</id><name>m{i}</name><kind>dns-front-tag</kind><priority>{i % 1000}</priority></module>"
                   for i in range(1, n + 1))
    return (f'<rpc-reply xmlns="{BASE}" message-id="urn:uuid:0f0e0d0c-0b0a-0908-0706-050403020100">'
            f'<data><customizations xmlns="{NS}">{mods}</customizations></data></rpc-reply>')


class StubSession:
    def __init__(self):
        self._buffer = BytesIO()
        self._base = ncsession.NetconfBase.BASE_11
        self._message_list = []
        self.got = None

    def _dispatch_message(self, raw):
        self.got = raw


def framing_time(raw, chunk):
    data = raw.encode()
    wire = b"".join(b"\n#%d\n%s" % (len(data[i:i + chunk]), data[i:i + chunk]) for i in range(0, len(data), chunk)) + b"\n##\n"
    s = StubSession()
    p = ncparser.DefaultXMLParser(s)
    t = time.perf_counter()
    for i in range(0, len(wire), 4096):
        p.parse(wire[i:i + 4096])
    dt = time.perf_counter() - t
    assert s.got == raw
    return dt


def build_edit(cfg):
    """What EditConfig.request and RPC._wrap do with the config string."""
    node = xml_.new_ele("edit-config")
    xml_.sub_ele(xml_.sub_ele(node, "target"), "running")
    node.append(xml_.validated_element(cfg, ("config", xml_.qualify("config"))))
    rpc = xml_.new_ele("rpc", {"message-id": "urn:uuid:0f0e0d0c-0b0a-0908-0706-050403020100"})
    rpc.append(node)
    return xml_.to_xml(rpc).encode()


def timed(f):
    t = time.perf_counter()
    r = f()
    return time.perf_counter() - t, r


for n in [int(a) for a in sys.argv[1:]] or [10000, 100000]:
    cfg = load_xml(n)
    t_req, _ = timed(lambda: build_edit(cfg))
    raw = reply_xml(n)
    t_one = framing_time(raw, len(raw))
    t_64k = framing_time(raw, 64 * 1024)
    t_parse, rep = timed(lambda: (xml_.parse_root(raw), GetReply(raw).parse()))
    r = GetReply(raw)
    r.parse()
    t_count, c = timed(lambda: r.data_xml.count("<module>"))
    assert c == n
    print(f"client floor N={n:>7} (request {len(cfg) / 1e6:.1f} MB, reply {len(raw) / 1e6:.1f} MB): "
          f"edit request build {t_req:.3f} s; reply framing one chunk {t_one:.3f} s, 64 KiB chunks {t_64k:.3f} s; "
          f"reply parse {t_parse:.3f} s; bench data_xml+count {t_count:.3f} s; session poll tick {ncsession.TICK * 1000:.0f} ms",
          flush=True)
