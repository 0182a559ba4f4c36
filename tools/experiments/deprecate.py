#!/usr/bin/env python3
"""Figure 5.7: deprecation. The web server host's device gets a rate-limit
module of 1000 ms on the server's port; H1 (curl on the client host)
starts a download that now waits 1 s per 64 KiB send. Mid-transfer the
module is deprecated (deprecated=true): H1's live socket keeps it (the
same pattern to the end). H2 (a second curl, also on the client host,
started right after the deprecation) waits for the one-threaded server
to finish H1, then its new socket is not customized (full speed).
Throughput from a capture on the server host. Writes deprecate.csv,
deprecate-events.csv and deprecate.png."""
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
    size = x.pick(args, 3_700_000, 1_000_000, 300_000)
    deprecate_at = x.pick(args, 30, 6, 2)
    out = x.Output("deprecate", args)
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        bed = x.Testbed(work)
        srv = None
        try:
            srv, flows, ev, times, chains = run(bed, work, size, deprecate_at)
        finally:
            if srv:
                srv.close()
            bed.close()
    out.csv(["flow", "t_s", "mbit_s"], x.trace_rows(flows))
    out.csv(["t_s", "event"], ev.items, part="events")
    out.figure("file bytes", size)
    out.figure("H1 download s (customized throughout)", round(times["H1"], 3))
    out.figure("H2 download s (incl. waiting for H1)", round(times["H2"], 3))
    out.figure("socket chains after deprecation (H1's keeps the module)", chains)
    x.plot_trace(out, flows, ev.items, f"Deprecation: rate-limit 1000 ms, {size} B per flow ({out.mode})", BIN)
    out.done()


def run(bed, work, size, deprecate_at):
    www = work / "www"
    www.mkdir()
    x.random_file(www / "f", size)
    dev = bed.devices["server"]
    ev = x.Events()
    match = f"<protocol>tcp</protocol><source-port>{PORT}</source-port>"
    dev.edit(x.module(1, "rate-limit", 10, match, "<rate-limit><delay>1000</delay></rate-limit>"))
    ev.mark("rate-limit 1000 ms registered")
    srv = x.HttpServer(www, bed.addr("server"), PORT, bed.env("server"), bed.prefix("server"))
    cap = x.Tcpdump(bed, "server", work / "trace.pcap", f"tcp src port {PORT}")
    h1 = x.Download(bed, "client", srv.url("f"), work / "h1", None)
    ev.mark("H1 download starts")
    x.wait_for(lambda: any(1 in s["modules"] for s in dev.state()[1]), what="the module on H1's socket")
    time.sleep(max(0.0, h1.t0 + deprecate_at - time.time()))
    dev.set_leaf(1, "deprecated", "true")
    ev.mark("module deprecated")
    chains = [s["modules"] for s in dev.state()[1] if s["protocol"] == "tcp"]
    h2 = x.Download(bed, "client", srv.url("f"), work / "h2", None)
    ev.mark("H2 download requested")
    times = {}
    for name, d in (("H1", h1), ("H2", h2)):
        secs, got = d.wait()
        if got != size:
            raise RuntimeError(f"{name}: downloaded {got} of {size} bytes")
        times[name] = secs
        ev.mark(f"{name} download complete")
    recs = cap.records()
    # H1 and H2 are told apart by their client ports (H1's is the first seen)
    ports = []
    for _, proto, sp, dp, n, _ in recs:
        if sp == PORT and dp not in ports:
            ports.append(dp)
    flows = {}
    for name, cport in zip(("H1 (started before deprecation)", "H2 (new flow after deprecation)"), ports):
        flows[name] = x.throughput([r for r in recs if r[3] == cport], PORT, BIN, ev.t0)
    return srv, flows, ev, times, chains


if __name__ == "__main__":
    main()
