#!/usr/bin/env python3
"""Table 5.1 and the end-tag size limit, with real middleboxes.

Three namespaces: client host ─ middlebox ─ server host (1 Gbit/s links).
The server host runs dnsmasq (tapped, answers every name under
example.test). The middlebox is one of: a plain IP router (control), a
gateway whose nftables firewall drops all UDP to port 53 (the
dissertation's Hawaii node; then the dissertation's follow-up checks: the
schemes again with dnsmasq on port 5353, base queries over TCP, and what
reached the server), suricata inline (AF_PACKET IPS, Debian's DNS/HTTP/app-layer event rules
set to drop), or a DNS forwarder the client queries instead of the server
(dnsmasq, unbound, bind9 — each forwarding to the server's dnsmasq). For
each of the dissertation's schemes — base, front tag, middle tag, end tag
(32-byte tags), compression — the client's device customizes dig's
queries and the server's device undoes it (attach=immediate on dnsmasq's
socket), and N queries are sent. A cell is PASS when every query was
answered and the customized form reached the server (seen in a capture
on the server's link), STRIPPED when answered but the middlebox had
rebuilt the query (the customization never arrived), FAIL when none was
answered, PARTIAL otherwise.

End-tag size: the dissertation grew the end tag until the (uncustomized)
server stopped answering. dns-end-tag's tag is at most 64 bytes, so the
probe appends N bytes after a dig-like query (EDNS(0) OPT record, UDP
size 1232) itself, from the client host, and finds the largest N each
server still answers (binary search; the DNS payload = query + N).

Writes middlebox_dns.csv (the table), middlebox_dns-cells.csv (every
query), middlebox_dns-endsize.csv, middlebox_dns-gateway.csv (the
follow-up checks), middlebox_dns.png. `--box NAME…` runs only the
middleboxes whose name contains one of the NAMEs."""
import pathlib
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import l45exp as x  # noqa: E402
import middleboxes as mb  # noqa: E402

TAG = "XTAGXdig" * 4
SCHEMES = {
    "base": None,
    "front": ("dns-front-tag", f"<dns-tag><tag>{TAG}</tag></dns-tag>"),
    "middle": ("dns-middle-tag", f"<dns-tag><tag>{TAG}</tag></dns-tag>"),
    "end": ("dns-end-tag", f"<dns-tag><tag>{TAG}</tag></dns-tag>"),
    "compress": ("dns-compression", ""),
}

def strict_suricata(bed, work):
    return mb.Suricata(bed, work, strict=True)


strict_suricata.name, strict_suricata.kind, strict_suricata.mode = "suricata IPS, strict port 53", "inline IPS", "wire"
BOXES = (mb.Router, mb.UdpDnsGateway, mb.Suricata, strict_suricata, mb.DnsmasqForwarder, mb.Unbound, mb.Bind9)

PROBE = r"""
import json, socket, struct, sys
server, port = sys.argv[1], int(sys.argv[2])
def query(qid, extra):
    q = struct.pack("!HHHHHH", qid, 0x0120, 1, 0, 0, 1)
    for label in b"size.example.test".split(b"."):
        q += bytes([len(label)]) + label
    q += b"\x00\x00\x01\x00\x01"
    q += b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"  # OPT: UDP size 1232
    return q + (b"XTAGXdig" * (extra // 8 + 1))[:extra]
def answered(extra, qid):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    q = query(qid, extra)
    try:
        s.sendto(q, (server, port))
        while True:
            data, _ = s.recvfrom(65535)
            if data[:2] == q[:2]:
                return (data[3] & 15) == 0 and b"\x0a\x01\x02\x03" in data, len(q)
    except (socket.timeout, OSError):
        return False, len(q)
    finally:
        s.close()
ok0, base_len = answered(0, 1)
lo, hi, qid = 0, 65507 - base_len, 2
tried = []
if ok0:
    while lo < hi:
        mid = (lo + hi + 1) // 2
        ok, _ = answered(mid, qid)
        tried.append([mid, ok])
        qid += 1
        lo, hi = (mid, hi) if ok else (lo, mid - 1)
print(json.dumps({"plain": ok0, "query_len": base_len, "max_extra": lo if ok0 else None, "tried": tried}))
"""


def options(ap):
    ap.add_argument("--box", nargs="+", metavar="NAME", help="only the middleboxes whose name contains one of these")


def main():
    args = x.parse_args(__doc__, options)
    queries = x.pick(args, 25, 5, 2)  # the dissertation: 5 repeats of 5 queries
    boxes = x.pick(args, BOXES, BOXES, (mb.Router, mb.UdpDnsGateway, mb.DnsmasqForwarder))
    if args.box:
        boxes = [b for b in boxes if any(n in b.name for n in args.box)]
    out = x.Output("middlebox_dns", args)
    table, cells, sizes, checks = [], [], [], None
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        for cls in boxes:
            print(f"== {cls.name}", flush=True)
            bed = x.MiddleboxBed(work / cls.name.replace(" ", "-"), mode=cls.mode)
            dns = None
            try:
                (work / cls.name.replace(" ", "-") / "dns").mkdir(parents=True, exist_ok=True)
                dns = x.Dnsmasq(work / cls.name.replace(" ", "-") / "dns", env=bed.env("server"),
                                host=bed.hosts["server"][1], port=53, prefix=bed.prefix("server"))
                with cls(bed, work) as box:
                    target = bed.mbox_addr if cls.kind.startswith("DNS") else bed.hosts["server"][1]
                    row = [cls.name, cls.kind]
                    for scheme in SCHEMES:
                        verdict, per = run_scheme(bed, work, target, scheme, queries)
                        row.append(verdict)
                        cells += [(cls.name, scheme, *p) for p in per]
                        print(f"  {scheme:<8} {verdict}", flush=True)
                    configure(bed, "base")
                    size = end_size(bed, target)
                    sizes.append((cls.name, size["plain"], size["query_len"], size["max_extra"],
                                  size["query_len"] + size["max_extra"] if size["max_extra"] is not None else ""))
                    print(f"  end-tag size: {sizes[-1]}", flush=True)
                    if isinstance(box, mb.Suricata):  # what it saw and did
                        ev = box.events()
                        row.append("; ".join(sorted({f"{a} {s}" for a, s, _ in ev})) or "no events")
                    elif isinstance(box, mb.UdpDnsGateway):
                        checks = gateway_checks(bed, work / cls.name.replace(" ", "-"), box, target, queries,
                                                cells)
                        row.append(f"dropped {checks['dropped'][0]} UDP/53 datagrams; see the follow-up checks")
                    else:
                        row.append("")
                    table.append(row)
            finally:
                if dns:
                    dns.stop()
                bed.close()
    out.csv(["middlebox", "kind", *SCHEMES, "notes"], table)
    out.csv(["middlebox", "scheme", "query", "answered", "status", "customized form at server",
             "reached the server"], cells, part="cells")
    if checks:
        out.csv(["check", "result"], checks["rows"], part="gateway")
        for k, v in checks["rows"]:
            out.figure(f"gateway: {k}", v)
    out.csv(["server", "plain query answered", "query bytes", "largest end tag answered (bytes)",
             "largest DNS payload answered (bytes)"], sizes, part="endsize")
    for r in table:
        out.figure(r[0], dict(zip(SCHEMES, r[2:7])))
    for s in sizes:
        out.figure(f"end-size {s[0]}", f"{s[4]} B payload" if s[4] != "" else "plain query not answered")
    plot(out, table, sizes)
    out.done()


def configure(bed, scheme, port=53):
    spec = SCHEMES[scheme]
    mods = {"client": [], "server": []}
    if spec:
        kind, params = spec
        mods["client"].append(x.module(1, kind, 10, f"<protocol>udp</protocol><destination-port>{port}"
                                       "</destination-port><process-name>dig</process-name>", params))
        mods["server"].append(x.module(1, kind, 10, f"<protocol>udp</protocol><source-port>{port}</source-port>"
                                       "<process-name>dnsmasq</process-name>", params,
                                       extra="<attach>immediate</attach>"))
    for role in ("client", "server"):
        bed.devices[role].edit(*mods[role], op="replace")


def customized(scheme, payload):
    t = TAG.encode()
    return {"base": True, "front": payload.startswith(t), "middle": payload[12:12 + len(t)] == t,
            "end": payload.endswith(t), "compress": len(payload) > 2 and payload[2] == 0xA5}[scheme]


def run_scheme(bed, work, target, scheme, n, port=53):
    configure(bed, scheme, port)
    cap = x.Tcpdump(bed, "server", work / f"{scheme}-{port}.pcap", f"udp dst port {port}", snap=0)
    per = []
    for i in range(n):
        name = f"{scheme}-{port}-{i}.example.test"
        p = subprocess.run([*bed.prefix("client"), "dig", f"@{target}", "-p", str(port), name, "+tries=1",
                            "+time=2"],
                           env=bed.env("client"), capture_output=True, text=True)
        m = re.search(r"status: (\w+)", p.stdout)
        status = m.group(1) if m else ("timeout" if "timed out" in p.stdout else f"rc {p.returncode}")
        per.append([name, int(x.taplab.ANSWER in p.stdout and status == "NOERROR"), status])
    recs = cap.records()
    for p in per:
        wire_name = x.qname(p[0])
        arrived = [r[5] for r in recs if wire_name in r[5]]
        p.append(int(any(customized(scheme, pl) for pl in arrived)))
        p.append(int(bool(arrived)))
    ok = sum(p[1] for p in per)
    form = sum(p[3] for p in per)
    if ok == n and form == n:
        verdict = "PASS"
    elif ok == n:
        verdict = "STRIPPED"
    elif ok == 0:
        verdict = "FAIL"
    else:
        verdict = f"PARTIAL {ok}/{n}"
    return verdict, per


def gateway_checks(bed, work, box, target, n, cells):
    """The dissertation's follow-up tests of the Hawaii node (§5.3.5): the
    same schemes with dnsmasq on port 5353, a base query over TCP to port
    53, and whether any UDP reached port 53 (iperf3 there; here the
    server-side captures of the port-53 cells and the firewall's
    counter)."""
    rows = []
    reached = sum(c[6] for c in cells if c[0] == box.name)
    rows.append(["UDP queries to port 53 that reached the server (capture on its link)", reached])
    rows.append(["UDP/53 datagrams the gateway's drop rule counted (the schemes' queries, the size probe)",
                 box.dropped()[0]])
    (work / "dns5353").mkdir(parents=True, exist_ok=True)
    alt = x.Dnsmasq(work / "dns5353", env=bed.env("server"), host=bed.hosts["server"][1], port=5353,
                    prefix=bed.prefix("server"))
    try:
        for scheme in SCHEMES:
            verdict, per = run_scheme(bed, work, target, scheme, n, port=5353)
            cells += [(f"{box.name}, port 5353", scheme, *p) for p in per]
            rows.append([f"{scheme} scheme, dnsmasq on port 5353", verdict])
            print(f"  port 5353 {scheme:<8} {verdict}", flush=True)
    finally:
        alt.stop()
    configure(bed, "base")
    tcp_ok = 0
    for i in range(n):
        p = subprocess.run([*bed.prefix("client"), "dig", f"@{target}", f"tcp-{i}.example.test", "+tcp",
                            "+tries=1", "+time=2"], env=bed.env("client"), capture_output=True, text=True)
        tcp_ok += int(x.taplab.ANSWER in p.stdout and "status: NOERROR" in p.stdout)
    rows.append(["base queries over TCP to port 53 answered", f"{tcp_ok} of {n}"])
    rows.append(["UDP/53 datagrams the gateway's drop rule counted after the TCP queries", box.dropped()[0]])
    return {"rows": rows, "dropped": box.dropped()}


def end_size(bed, target):
    import json
    p = subprocess.run([*bed.prefix("client"), sys.executable, "-c", PROBE, target, "53"],
                       capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


def plot(out, table, sizes):
    plt = x.pyplot()
    colors = {"PASS": "#7fc97f", "STRIPPED": "#fdc086", "FAIL": "#f0027f"}
    fig, (a, b) = plt.subplots(1, 2, figsize=(15, 0.6 * len(table) + 1.6),
                               gridspec_kw={"width_ratios": [3, 2], "wspace": 0.55})
    a.set_axis_off()
    cell_text = [r[2:7] for r in table]
    t = a.table(cellText=cell_text, rowLabels=[r[0] for r in table], colLabels=list(SCHEMES), loc="center",
                cellColours=[[colors.get(c.split()[0], "#ffff99") for c in r] for r in cell_text])
    t.scale(1, 1.4)
    a.set_title(f"DNS schemes through real middleboxes ({out.mode})")
    names = [s[0] for s in sizes]
    vals = [s[4] if s[4] != "" else 0 for s in sizes]
    b.barh(names, vals, color="tab:blue")
    for i, v in enumerate(vals):
        b.annotate(str(v) if v else "plain query not answered", (v, i), va="center", fontsize=8)
    b.set_xlabel("largest DNS payload (query + end bytes) answered")
    b.invert_yaxis()
    out.plot(fig)


if __name__ == "__main__":
    main()
