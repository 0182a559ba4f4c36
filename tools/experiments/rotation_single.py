#!/usr/bin/env python3
"""Figure 5.8: single-device rotation of a live flow, 1000 ms → 100 ms,
through the NCO. The web server host's device is registered with l45-nco;
`modules deploy` puts M1 = rate-limit 1000 ms (priority 10) on the
server's port; curl on the client host starts a download (each of python
http.server's 64 KiB sends now waits 1 s); mid-transfer `l45-nco rotate
--from m1 --to-name m2 --to-kind rate-limit --param delay=100 --senders
web` rotates it on that one device: M2 deployed 10 below M1 (priority 20,
immediate attach: it joins the live socket's chain behind M1, no change),
raised above M1 (priority 9: it runs first, the same socket speeds up
tenfold), then M1 revoked (`--overlap none`) — the dissertation's steps,
driven by the NCO's rotation instead of edits by hand. The rotation has no
receivers (a rate limit needs nobody to undo it), so the one device is
its only sender. Throughput is from a capture on the server host. Writes
rotation_single.csv (throughput trace), rotation_single-events.csv and
rotation_single.png.

--impair: a middlebox between the hosts adds 1 % loss, 150 ± 100 ms delay
and 25 % reordering both ways (impair.py), and the rotation runs once per
`--overlap` given (e.g. `--overlap none until-idle`), each in a fresh
testbed; writes rotation_single_impaired.{csv,png,json} (every variant's
trace, whether its download arrived intact, and its throughput before
and after the rotation)."""
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import impair  # noqa: E402
import l45exp as x  # noqa: E402

PORT = 8000
BIN = 0.25


def options(ap):
    ap.add_argument("--impair", action="store_true", help="loss, delay and reordering between the hosts")
    ap.add_argument("--overlap", nargs="+", default=["none"], metavar="OVERLAP",
                    help="l45-nco rotate --overlap values, one run each (with --impair)")


def main():
    args = x.parse_args(__doc__, options)
    size = x.pick(args, 3_700_000, 2_000_000, 600_000)
    # when the rotation starts (s after the download starts)
    rotate_at = x.pick(args, 10, 5, 2)
    if args.impair:
        return main_impaired(args, size, rotate_at)
    out = x.Output("rotation_single", args)
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        bed = x.Testbed(work)
        srv = None
        try:
            srv, flows, ev, socks, _ = run(bed, work, size, rotate_at, args.overlap[0])
        finally:
            if srv:
                srv.close()
            bed.close()
    out.csv(["flow", "t_s", "mbit_s"], x.trace_rows(flows))
    out.csv(["t_s", "event"], ev.items, part="events")
    before, after = phases(flows["H1 download"], ev.items)
    out.figure("file bytes", size)
    out.figure("mean Mbit/s under M1 (1000 ms)", round(x.mean(before), 3))
    out.figure("mean Mbit/s under M2 (100 ms)", round(x.mean(after), 3))
    out.figure("chains of the live socket", socks)
    out.figure("rotate steps", [text for _, text in ev.items if text.startswith("NCO")])
    x.plot_trace(out, flows, ev.items, f"Single-device rotation by l45-nco rotate, M1 (1000 ms) → M2 (100 ms), "
                 f"{size} B ({out.mode})", BIN)
    out.done()


def phases(trace, events):
    """Throughput bins under M1 (from the download's start to the rotation)
    and under M2 (after M2 was raised above M1)."""
    start = next(t for t, text in events if "download starts" in text)
    rotate = next(t for t, text in events if "rotate" in text and "starts" in text)
    raised = next((t for t, text in events if "raised above M1" in text), rotate)
    before = [v for t, v in trace if start + 0.5 < t < rotate]
    after = [v for t, v in trace if t > raised + 0.5]
    return before, after


def main_impaired(args, size, rotate_at):
    out = x.Output("rotation_single_impaired", args, script="rotation_single")
    flows, events, how, table = {}, {}, None, []
    for overlap in args.overlap:
        variant = f"overlap {overlap}"
        print(f"== {variant}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            work = pathlib.Path(tmp)
            bed = x.MiddleboxBed(work, mode=impair.bed_mode())
            srv = imp = None
            try:
                imp = impair.Impairment(bed)
                how = imp.how()
                srv, f, ev, socks, intact = run(bed, work, size, rotate_at, overlap)
            finally:
                if imp:
                    imp.close()
                if srv:
                    srv.close()
                bed.close()
        flows[variant] = f["H1 download"]
        events[variant] = ev.items
        before, after = phases(flows[variant], ev.items)
        done = next(t for t, text in ev.items if "download complete" in text)
        start = next(t for t, text in ev.items if "download starts" in text)
        table.append([variant, intact, round(done - start, 2), round(x.mean(before), 3), round(x.mean(after), 3),
                      json.dumps(socks), json.dumps(imp.stats() if imp else {})])
        out.figure(f"{variant}: download intact", intact)
        out.figure(f"{variant}: download s", round(done - start, 2))
        out.figure(f"{variant}: mean Mbit/s before the rotation", round(x.mean(before), 3))
        out.figure(f"{variant}: mean Mbit/s after M2 was raised", round(x.mean(after), 3))
        out.figure(f"{variant}: live socket's chain after the rotation", socks)
    out.figure("impairment", how)
    out.figure("file bytes", size)
    out.csv(["variant", "t_s", "mbit_s"], x.trace_rows(flows))
    out.csv(["variant", "t_s", "event"], [[v, t, text] for v, items in events.items() for t, text in items],
            part="events")
    out.csv(["variant", "download intact (SHA-256)", "download s", "mean Mbit/s before", "mean Mbit/s after",
             "live socket's chain after the rotation", "impairment frames"], table, part="summary")
    plot_impaired(out, flows, events, how, size)
    out.done()


def plot_impaired(out, flows, events, how, size):
    plt = x.pyplot()
    fig, axes = plt.subplots(len(flows), 1, figsize=(9, 2.6 * len(flows) + 0.6), sharex=True, squeeze=False)
    for ax, (v, tr) in zip(axes[:, 0], flows.items()):
        if tr:
            ax.step([t for t, _ in tr], [m for _, m in tr], where="post", lw=1)
        for t, text in events[v]:
            if text.startswith("NCO") or "download" in text:
                ax.axvline(t, color="grey", ls=":", lw=0.8)
        ax.set_title(f"l45-nco rotate --{v}", fontsize=9)
        ax.set_ylabel(f"Mbit/s ({int(BIN * 1000)} ms)")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("seconds since the experiment started (dotted: download start, rotation steps, end)")
    fig.suptitle(f"Single-device rotation 1000 ms → 100 ms under impairment, {size} B ({out.mode})\n{how}",
                 fontsize=9)
    fig.tight_layout()
    out.plot(fig)


def nco(env, *args):
    p = subprocess.run([x.NCO, *map(str, args)], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"l45-nco {' '.join(map(str, args))}: {p.stderr.strip()[-800:]}")
    return p.stdout


def run(bed, work, size, rotate_at, overlap):
    www = work / "www"
    www.mkdir()
    x.random_file(www / "f", size)
    want = hashlib.sha256((www / "f").read_bytes()).hexdigest()
    dev = bed.devices["server"]
    env = {**os.environ, "L45_CIB": str(work / "cib.sqlite")}
    ev = x.Events()
    nco(env, "devices", "add", "web", "--address", f"{dev.host}:{dev.port}", "--key", dev.key)
    nco(env, "modules", "deploy", "--device", "web", "--name", "m1", "--kind", "rate-limit", "--param", "delay=1000",
        "--priority", "10", "--protocol", "tcp", "--src-port", PORT, "--report")
    m1 = next(iter(dev.state()[0]))
    ev.mark(f"NCO: M1 rate-limit 1000 ms deployed, priority 10 (module {m1})")
    srv = x.HttpServer(www, bed.addr("server"), PORT, bed.env("server"), bed.prefix("server"))
    cap = x.Tcpdump(bed, "server", work / "trace.pcap", f"tcp src port {PORT}")
    dl = x.Download(bed, "client", srv.url("f"), work / "out", None)
    ev.mark("H1 download starts")
    x.wait_for(lambda: any(m1 in s["modules"] for s in dev.state()[1]), what="M1 on the live socket")
    time.sleep(max(0.0, dl.t0 + rotate_at - time.time()))
    ev.mark(f"NCO: rotate m1 → m2 (rate-limit 100 ms, --overlap {overlap}) starts")
    t_start = time.time()
    rotate = subprocess.Popen([x.NCO, "rotate", "--json", "--from", "m1", "--to-name", "m2", "--to-kind",
                               "rate-limit", "--param", "delay=100", "--senders", "web", "--overlap", overlap,
                               "--overlap-max", "300s"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)

    # The live socket's chain while the rotation runs (with until-idle it
    # runs until the download ends). The socket list is the tap's view,
    # updated by the application's next call on the socket: poll, 5 s at
    # most, until M1 is off the live socket.
    def live_chains():
        return [s["modules"] for s in dev.state()[1] if s["modules"]]
    try:
        x.wait_for(lambda: dl.proc.poll() is not None or all(m1 not in c for c in live_chains()), timeout=5,
                   what="M1 off the live socket")
    except AssertionError:
        pass  # until-idle: the live socket keeps M1 to its end
    socks = live_chains()
    stdout, stderr = rotate.communicate(timeout=600)
    t_done = time.time()
    if rotate.returncode != 0:
        raise RuntimeError(f"l45-nco rotate: {stderr.strip()[-800:]}")
    steps = json.loads(stdout)
    # each step's end, counted back from the command's end with the NCO's
    # own step timings (the process start and CIB open come before them)
    ends, t = [], t_done
    for s in reversed(steps):
        ends.append((t, s["step"]))
        t -= s["ms"] / 1000
    label = {"deploy new module below the old one": "M2 deployed below M1 (priority 20, attach immediate)",
             "raise on the senders": "M2 raised above M1 (priority 9)",
             "deprecate the old module and wait until no socket uses it": "M1 deprecated; no socket uses it",
             "keep the old module until its traffic stops": "M1's traffic stopped",
             "revoke the old module": "M1 revoked"}
    for t, step in reversed(ends):
        ev.items.append((round(t - ev.t0, 3), f"NCO: {label.get(step, step)}"))
    ev.items.sort()
    print(f"  rotate took {t_done - t_start:.2f} s: {steps}", flush=True)
    secs, got = dl.wait()
    ev.mark(f"H1 download complete ({got} B in {secs:.1f} s)")
    intact = hashlib.sha256((work / "out").read_bytes()).hexdigest() == want
    if got != size or not intact:
        raise RuntimeError(f"downloaded {got} of {size} bytes, intact: {intact}")
    flows = {"H1 download": x.throughput(cap.records(), PORT, BIN, ev.t0)}
    return srv, flows, ev, socks, intact


if __name__ == "__main__":
    main()
