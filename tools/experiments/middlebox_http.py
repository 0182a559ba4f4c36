#!/usr/bin/env python3
"""The dissertation's HTTP tag schemes (section 5.3.5, "HTTP over TCP File
Transfer") through real middleboxes. client host ─ middlebox ─ server
host; python http.server on the server host sends a 3.7 MB file (the
dissertation's kernel module file) to curl on the client host. Schemes:
base, 100x (a 32-byte stream tag every 3200 bytes), 10x (every 320), 1x
(every 32), 0.5x (every 16: twice as many tag bytes as file bytes); the
server's device tags, curl's device strips. The stream tag is sent first,
so every scheme puts a tag before the HTTP status line, i.e. in the
header. Middleboxes: IP router (control), suricata inline (AF_PACKET IPS,
HTTP/app-layer event rules set to drop), squid (forward proxy: curl -x),
haproxy in front of the server in HTTP mode and in TCP mode.
A cell is PASS when curl got the file byte for byte and the tags crossed
the client's link (counted in a capture there), FAIL when curl failed or
got other bytes. Writes middlebox_http.csv, middlebox_http-runs.csv,
middlebox_http.png."""
import hashlib
import pathlib
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import l45exp as x  # noqa: E402
import middleboxes as mb  # noqa: E402

TAG = b"XTAGTAGTAGTAGTAGTAGTAGTAGTAGTAGX"  # stream-tag's default, 32 bytes
SCHEMES = {"base": None, "100x": 3200, "10x": 320, "1x": 32, "0.5x": 16}
PORT = 8000


BOXES = (("IP router (control)", "routed", mb.Router), ("suricata IPS", "wire", mb.Suricata),
         ("squid proxy", "routed", mb.Squid),
         ("haproxy (http mode)", "routed", lambda b, w: mb.Haproxy(b, w, True, PORT)),
         ("haproxy (tcp mode)", "routed", lambda b, w: mb.Haproxy(b, w, False, PORT)))


def main():
    args = x.parse_args(__doc__)
    size = x.pick(args, 3_700_000, 3_700_000, 200_000)
    repeats = x.pick(args, 5, 1, 1)
    chosen = x.pick(args, BOXES, BOXES, BOXES[:1] + BOXES[4:])
    out = x.Output("middlebox_http", args)
    table, runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        www = work / "www"
        www.mkdir()
        x.random_file(www / "f", size)
        digest = hashlib.sha256((www / "f").read_bytes()).hexdigest()
        for name, mode, make in chosen:
            print(f"== {name}", flush=True)
            d = work / name.replace(" ", "-").replace("(", "").replace(")", "")
            bed = x.MiddleboxBed(d, mode=mode)
            srv = None
            try:
                srv = x.HttpServer(www, bed.hosts["server"][1], PORT, bed.env("server"), bed.prefix("server"))
                with make(bed, d) as box:
                    row = [name, box.kind]
                    for scheme, interval in SCHEMES.items():
                        results = [download(bed, d, box, scheme, interval, digest, size, r) for r in range(repeats)]
                        runs += [(name, scheme, r, *res) for r, res in enumerate(results)]
                        ok = sum(1 for res in results if res[0] == "PASS")
                        row.append("PASS" if ok == repeats else "FAIL" if ok == 0 else f"PARTIAL {ok}/{repeats}")
                        print(f"  {scheme:<5} {row[-1]}  {results[0][1:]}", flush=True)
                    if isinstance(box, mb.Suricata):
                        ev = box.events()
                        row.append("; ".join(sorted({f"{a} {s}" for a, s, _ in ev})) or "no events")
                    else:
                        row.append("")
                    table.append(row)
            finally:
                if srv:
                    srv.close()
                bed.close()
    out.csv(["middlebox", "kind", *SCHEMES, "notes"], table)
    out.csv(["middlebox", "scheme", "repeat", "verdict", "curl", "bytes on the client's link",
             "tags on the client's link", "tags in the first packet"], runs, part="runs")
    for r in table:
        out.figure(r[0], dict(zip(SCHEMES, r[2:7])))
    for scheme in SCHEMES:
        wire = [rr[5] for rr in runs if rr[1] == scheme and rr[0] == "IP router (control)"]
        if wire:
            out.figure(f"{scheme}: bytes on the wire for the {size} B file", wire[0])
    plot(out, table)
    out.done()


def download(bed, d, box, scheme, interval, digest, size, r):
    via_proxy = isinstance(box, mb.Squid)
    via_haproxy = isinstance(box, mb.Haproxy)
    cport = mb.Squid.port if via_proxy else mb.Haproxy.port if via_haproxy else PORT
    mods = {"client": [], "server": []}
    if interval:
        params = f"<stream-tag><interval>{interval}</interval></stream-tag>"
        mods["server"].append(x.module(1, "stream-tag", 10, f"<protocol>tcp</protocol><source-port>{PORT}"
                                       "</source-port>", params))
        mods["client"].append(x.module(1, "stream-tag", 10, f"<protocol>tcp</protocol><destination-port>{cport}"
                                       "</destination-port><process-name>curl</process-name>", params))
    for role in ("client", "server"):
        bed.devices[role].edit(*mods[role], op="replace")
    url = f"http://{bed.hosts['server'][1]}:{PORT}/f"
    proxy = ["-x", f"http://{bed.mbox_addr}:{cport}"] if via_proxy else []
    if via_haproxy:
        url = f"http://{bed.mbox_addr}:{cport}/f"
    got = d / "out"
    cap = x.Tcpdump(bed, "client", d / f"{scheme}-{r}.pcap", f"tcp src port {cport}", snap=0)
    p = subprocess.run([*bed.prefix("client"), "curl", "-sS", "--max-time", "20", "-o", str(got), "-w", "%{http_code}",
                        *proxy, url], env=bed.env("client"), capture_output=True, text=True)
    recs = cap.records()
    stream = b"".join(rec[5] for rec in recs)
    wire = sum(rec[4] for rec in recs)
    first = next((rec[5] for rec in recs if rec[4] > 0), b"")
    body = got.read_bytes() if got.exists() else b""
    same = len(body) == size and hashlib.sha256(body).hexdigest() == digest
    curl = f"rc {p.returncode} http {p.stdout.strip()}" + (f": {p.stderr.strip()[:80]}" if p.returncode else "")
    tags = stream.count(TAG)
    verdict = "PASS" if same and p.returncode == 0 and (tags > 0 or not interval) else "FAIL"
    if got.exists():
        got.unlink()
    return verdict, curl, wire, tags, first.count(TAG)


def plot(out, table):
    plt = x.pyplot()
    colors = {"PASS": "#7fc97f", "FAIL": "#f0027f"}
    fig, a = plt.subplots(figsize=(8, 0.55 * len(table) + 1.2))
    a.set_axis_off()
    cells = [r[2:7] for r in table]
    t = a.table(cellText=cells, rowLabels=[r[0] for r in table], colLabels=list(SCHEMES), loc="center",
                cellColours=[[colors.get(c.split()[0], "#ffff99") for c in r] for r in cells])
    t.scale(1, 1.4)
    a.set_title(f"HTTP stream-tag schemes through real middleboxes ({out.mode})")
    out.plot(fig)


if __name__ == "__main__":
    main()
