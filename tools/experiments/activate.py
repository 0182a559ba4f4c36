#!/usr/bin/env python3
"""Figure 5.6: activation. The web server host's device gets a rate-limit
module (100 ms before every send) on the server's port, deployed
deactivated (activated=false): a first download attaches it to the socket
but is not slowed. Then the module is activated (activated=true) and a
second download of the same file (3.7 MB, the dissertation's kernel
module file) shows the 100 ms pattern. Both flows are time-shifted to
start at zero, as in the dissertation's graph. Throughput from a capture on
the server host. Writes activate.csv, activate-events.csv, activate.png."""
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import l45exp as x  # noqa: E402

PORT = 8000
BIN = 0.02  # five bins per 100 ms delay


def main():
    args = x.parse_args(__doc__)
    size = x.pick(args, 3_700_000, 3_700_000, 400_000)
    out = x.Output("activate", args)
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        bed = x.Testbed(work)
        srv = None
        try:
            srv, flows, ev, times, attached = run(bed, work, size)
        finally:
            if srv:
                srv.close()
            bed.close()
    out.csv(["flow", "t_s", "mbit_s"], x.trace_rows(flows))
    out.csv(["t_s", "event"], ev.items, part="events")
    out.figure("file bytes", size)
    out.figure("deactivated download s", round(times[0], 3))
    out.figure("activated download s", round(times[1], 3))
    out.figure("module state after the deactivated download", attached)
    x.plot_trace(out, flows, [], f"Activation: {size} B, rate-limit 100 ms deactivated vs activated ({out.mode})",
                 BIN, xlabel="seconds since the flow's first byte", logy=True)
    out.done()


def run(bed, work, size):
    www = work / "www"
    www.mkdir()
    x.random_file(www / "f", size)
    dev = bed.devices["server"]
    ev = x.Events()
    match = f"<protocol>tcp</protocol><source-port>{PORT}</source-port>"
    dev.edit(x.module(1, "rate-limit", 10, match, "<rate-limit><delay>100</delay></rate-limit>",
                      extra="<activated>false</activated>"))
    ev.mark("(1) rate-limit 100 ms registered, deactivated")
    srv = x.HttpServer(www, bed.addr("server"), PORT, bed.env("server"), bed.prefix("server"))
    flows, times = {}, []
    attached = None
    for label in ("(2) download, module deactivated", "(4) download, module activated"):
        cap = x.Tcpdump(bed, "server", work / f"{len(times)}.pcap", f"tcp src port {PORT}")
        dl = x.Download(bed, "client", srv.url("f"), work / "out", None)
        ev.mark(label)
        secs, got = dl.wait()
        if got != size:
            raise RuntimeError(f"downloaded {got} of {size} bytes")
        times.append(secs)
        flows[f"{label[4:]} ({secs:.2f} s)"] = x.throughput(cap.records(), PORT, BIN)
        if attached is None:
            # what the module's counters say after the deactivated transfer
            attached = dev.state()[0][1]
            dev.set_leaf(1, "activated", "true")
            ev.mark("(3) module activated")
    return srv, flows, ev, times, attached


if __name__ == "__main__":
    main()
