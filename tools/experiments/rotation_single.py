#!/usr/bin/env python3
"""Figure 5.8: single-device rotation of a live flow, 1000 ms → 100 ms.
The web server host's device gets M1 = rate-limit 1000 ms (priority 10) on
the server's port; curl on the client host starts a download (each of
python http.server's 64 KiB sends now waits 1 s); mid-transfer M2 =
rate-limit 100 ms is deployed with priority 20 and attach=immediate (it
joins the live socket's chain behind M1: no change), then M2's priority is
set to 5 (it now runs first: the same socket speeds up tenfold). The
rotation steps are NETCONF edits to the device's agent, as the NCO's
rotate would send them (the NCO's single-device rotation with overlap is
issue 24 item 3). Throughput is from a capture on the server host.
Writes rotation_single.csv (throughput trace), rotation_single-events.csv
and rotation_single.png."""
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import l45exp as x  # noqa: E402

PORT = 8000
BIN = 0.25


def main():
    args = x.parse_args(__doc__)
    size = x.pick(args, 3_700_000, 2_000_000, 600_000)
    # when M2 is deployed and when it takes over (s after the download starts)
    deploy_at, promote_at = x.pick(args, (10, 20), (4, 8), (1.5, 3))
    out = x.Output("rotation_single", args)
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        bed = x.Testbed(work)
        srv = None
        try:
            srv, flows, ev, socks = run(bed, work, size, deploy_at, promote_at)
        finally:
            if srv:
                srv.close()
            bed.close()
    out.csv(["flow", "t_s", "mbit_s"], x.trace_rows(flows))
    out.csv(["t_s", "event"], ev.items, part="events")
    tr = flows["H1 download"]
    before = [v for t, v in tr if ev.items[1][0] + 0.5 < t < ev.items[3][0]]
    after = [v for t, v in tr if t > ev.items[3][0] + 0.5]
    out.figure("file bytes", size)
    out.figure("mean Mbit/s under M1 (1000 ms)", round(x.mean(before), 3))
    out.figure("mean Mbit/s under M2 (100 ms)", round(x.mean(after), 3))
    out.figure("chains of the live socket", socks)
    x.plot_trace(out, flows, ev.items, f"Single-device rotation M1 (1000 ms) → M2 (100 ms), {size} B ({out.mode})", BIN)
    out.done()


def run(bed, work, size, deploy_at, promote_at):
    www = work / "www"
    www.mkdir()
    x.random_file(www / "f", size)
    dev = bed.devices["server"]
    ev = x.Events()
    match = f"<protocol>tcp</protocol><source-port>{PORT}</source-port>"
    dev.edit(x.module(1, "rate-limit", 10, match, "<rate-limit><delay>1000</delay></rate-limit>"))
    ev.mark("M1 rate-limit 1000 ms registered, priority 10")
    srv = x.HttpServer(www, bed.addr("server"), PORT, bed.env("server"), bed.prefix("server"))
    cap = x.Tcpdump(bed, "server", work / "trace.pcap", f"tcp src port {PORT}")
    dl = x.Download(bed, "client", srv.url("f"), work / "out", None)
    ev.mark("H1 download starts")
    socks = {}
    x.wait_for(lambda: any(1 in s["modules"] for s in dev.state()[1]), what="M1 on the live socket")
    time.sleep(max(0.0, dl.t0 + deploy_at - time.time()))
    dev.edit(x.module(2, "rate-limit", 20, match, "<rate-limit><delay>100</delay></rate-limit>",
                      extra="<attach>immediate</attach>"))
    ev.mark("M2 rate-limit 100 ms registered, priority 20, attach immediate")
    x.wait_for(lambda: any(2 in s["modules"] for s in dev.state()[1]), what="M2 on the live socket")
    socks["after M2 deployed"] = [s["modules"] for s in dev.state()[1] if 1 in s["modules"]]
    time.sleep(max(0.0, dl.t0 + promote_at - time.time()))
    dev.set_leaf(2, "priority", 5)
    ev.mark("M2 priority 20 → 5: M2 runs first")
    secs, got = dl.wait()
    ev.mark(f"H1 download complete ({got} B in {secs:.1f} s)")
    if got != size:
        raise RuntimeError(f"downloaded {got} of {size} bytes")
    flows = {"H1 download": x.throughput(cap.records(), PORT, BIN, ev.t0)}
    return srv, flows, ev, socks


if __name__ == "__main__":
    main()
