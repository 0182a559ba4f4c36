#!/usr/bin/env python3
"""Figures 5.9 / 5.10: the NCO rotates a live DNS customization on two
devices. The server host runs dnsmasq (tapped), the client host a dig loop
(tapped, one query every interval; the dissertation: one every 5 s). The
NCO (l45-nco with its CIB) registers both devices (roles client/server),
deploys M1 = DNS front tag (priority 10) to both, then `l45-nco rotate
--from m1 --to-name m2 --to-kind dns-compression`: M2 deployed 10 below M1
with immediate attach everywhere, raised above M1 on the receiver (the
server), then on the sender, then M1 revoked (figure 5.3). A capture on
the server's link tells which module each query arrived under. Writes
rotation_two.csv (one row per query: time, answered, form on the wire),
rotation_two-events.csv, rotation_two.png (queries per module over time).

--impair: a middlebox between the hosts adds 1 % loss, 150 ± 100 ms delay and
25 % reordering both ways (impair.py: tc netem, or its user-space bridge
where the kernel has no netem), the rotation runs once per `--overlap`
given (e.g. `--overlap none 2s`), each in a fresh testbed, with several dig
loops so that queries are always in flight; writes
rotation_two_impaired.csv (every query, with its variant),
rotation_two_impaired.png (answered and failed queries over time per
variant) and rotation_two_impaired.json."""
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import impair  # noqa: E402
import l45exp as x  # noqa: E402

PORT = 53
TAG = b"XTAGXdig"


def options(ap):
    ap.add_argument("--impair", action="store_true", help="loss, delay and reordering between the hosts")
    ap.add_argument("--overlap", nargs="+", default=["none"], metavar="OVERLAP",
                    help="l45-nco rotate --overlap values, one run each (with --impair)")


def main():
    args = x.parse_args(__doc__, options)
    interval = x.pick(args, 0.1, 0.1, 0.2)
    phase = x.pick(args, 20, 6, 2)
    if args.impair:
        return main_impaired(args, interval, phase)
    out = x.Output("rotation_two", args)
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        bed = x.Testbed(work)
        dns = None
        try:
            dns, rows, ev = run(bed, work, interval, phase)
        finally:
            if dns:
                dns.stop()
            bed.close()
    out.csv(["t_s", "query", "answered", "form on the wire", "server replied"], rows)
    out.csv(["t_s", "event"], ev.items, part="events")
    forms = {}
    for r in rows:
        forms[r[3]] = forms.get(r[3], 0) + 1
    out.figure("queries", len(rows))
    out.figure("unanswered", sum(1 for r in rows if not r[2]))
    out.figure("queries per form", forms)
    plot(out, rows, ev.items, interval)
    out.done()


LOOPS = 8      # concurrent dig loops under impairment: always some queries in flight
# Why an unanswered query (row: t, name, answered, form, replied) failed.
SERVER = "the server did not answer it (its device could not undo the form)"
CAUSES = {
    "lost on the way to the server": lambda r: r[3] == "not seen",
    "the answer was lost on the way back": lambda r: r[3] != "not seen" and r[4],
    SERVER: lambda r: r[3] != "not seen" and not r[4],
}
DIG_TIMEOUT = 2


def main_impaired(args, interval, phase):
    out = x.Output("rotation_two_impaired", args, script="rotation_two")
    repeats = x.pick(args, 5, 3, 1)
    rows, events, how, stats = [], [], None, {}
    for overlap in args.overlap:
        variant = f"overlap {overlap}"
        mine, took = [], []
        for rep in range(1, repeats + 1):
            print(f"== {variant}, run {rep} of {repeats}", flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                work = pathlib.Path(tmp)
                bed = x.MiddleboxBed(work, mode=impair.bed_mode())
                dns = imp = None
                try:
                    imp = impair.Impairment(bed, seed=4545 + rep)
                    how = imp.how()
                    dns, got, ev = run(bed, work, interval, phase, overlap=overlap, loops=LOOPS)
                finally:
                    if imp:
                        imp.close()
                        for k, v in imp.stats().items():
                            stats.setdefault(variant, {}).setdefault(k, 0)
                            stats[variant][k] += v
                    if dns:
                        dns.stop()
                    bed.close()
            # times relative to the start of the rotation (the l45-nco command)
            rotate_at = next(t for t, text in ev.items if "rotate" in text and "starts" in text)
            done_at = next(t for t, text in ev.items if "rotate done" in text)
            took.append(done_at - rotate_at)
            mine += [[variant, rep, round(r[0] - rotate_at, 3), *r[1:]] for r in got]
            events += [[variant, rep, round(t - rotate_at, 3), text] for t, text in ev.items]
        rows += mine
        failed = [r[2:] for r in mine if not r[4]]
        out.figure(f"{variant}: queries", len(mine))
        out.figure(f"{variant}: unanswered", len(failed))
        for why, cause in CAUSES.items():
            out.figure(f"{variant}: unanswered, {why}", sum(1 for r in failed if cause(r)))
        out.figure(f"{variant}: not answered by the server, sent at (s from the rotation's start)",
                   sorted(r[0] for r in failed if CAUSES[SERVER](r)))
        out.figure(f"{variant}: rotation took s", f"{min(took):.2f}–{max(took):.2f}")
        out.figure(f"{variant}: impairment frames", stats.get(variant, {}))
    out.figure("impairment", how)
    out.figure("dig loops", LOOPS)
    out.figure("runs per variant", repeats)
    out.csv(["variant", "run", "t_s from the rotation's start", "query", "answered", "form on the wire",
             "server replied"], rows)
    out.csv(["variant", "run", "t_s from the rotation's start", "event"], events, part="events")
    plot_impaired(out, rows, events, how, repeats)
    out.done()


def plot_impaired(out, rows, events, how, repeats):
    plt = x.pyplot()
    variants = list(dict.fromkeys(r[0] for r in rows))
    fig, axes = plt.subplots(len(variants), 1, figsize=(9, 2.6 * len(variants) + 0.6), sharex=True, squeeze=False)
    lo, hi = min(r[2] for r in rows), max(r[2] for r in rows)
    step = 0.5
    bins = [lo + i * step for i in range(int((hi - lo) / step) + 2)]
    for ax, v in zip(axes[:, 0], variants):
        mine = [r[2:] for r in rows if r[0] == v]
        ok = [r[0] for r in mine if r[2]]
        lost = [r[0] for r in mine if not r[2] and not CAUSES[SERVER](r)]
        bad = [r[0] for r in mine if not r[2] and CAUSES[SERVER](r)]
        ax.hist(ok, bins=bins, histtype="step", lw=1.5, color="tab:green", label=f"answered: {len(ok)}")
        if lost:
            ax.hist(lost, bins=bins, histtype="stepfilled", alpha=0.5, color="tab:grey",
                    label=f"lost on the link: {len(lost)}")
        if bad:
            ax.hist(bad, bins=bins, histtype="stepfilled", alpha=0.8, color="tab:red",
                    label=f"not answered by the server: {len(bad)}")
        ends = [t for vv, _, t, text in events if vv == v and "rotate done" in text]
        ax.axvline(0, color="grey", ls=":", lw=1)
        ax.axvspan(0, max(ends), color="grey", alpha=0.15, lw=0)
        ax.set_title(f"l45-nco rotate --{v} ({repeats} runs overlaid; shaded: the rotation, longest run)",
                     fontsize=9)
        ax.set_ylabel(f"queries per {step} s")
        ax.legend(fontsize=8, loc="upper left")
    axes[-1, 0].set_xlabel("seconds from the start of l45-nco rotate (when each query was sent)")
    fig.suptitle(f"Two-device rotation under impairment ({out.mode})\n{how}", fontsize=9)
    fig.tight_layout()
    out.plot(fig)


def nco(env, ev, *args):
    p = subprocess.run([x.NCO, *map(str, args)], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"l45-nco {' '.join(map(str, args))}: {p.stderr.strip()[-800:]}")
    return p.stdout


class DigLoop(threading.Thread):
    def __init__(self, bed, server, interval, t0, label=""):
        super().__init__(daemon=True)
        self.bed, self.server, self.interval, self.t0, self.label = bed, server, interval, t0, label
        self.rows, self.stop = [], threading.Event()

    def run(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            name = f"www.test{self.label}_{n}.example.test"
            t = time.time() - self.t0
            p = subprocess.run([*self.bed.prefix("client"), "dig", f"@{self.server}", "-p", str(PORT), name,
                                "+tries=1", f"+time={DIG_TIMEOUT}", "+short"], env=self.bed.env("client"),
                               capture_output=True, text=True)
            self.rows.append([round(t, 3), name, int(x.taplab.ANSWER in p.stdout)])
            self.stop.wait(self.interval)


def run(bed, work, interval, phase, overlap=None, loops=1):
    server = bed.addr("server")
    env = {**os.environ, "L45_CIB": str(work / "cib.sqlite")}
    ev = x.Events()
    (work / "dns").mkdir()
    dns = x.Dnsmasq(work / "dns", env=bed.env("server"), host=server, port=PORT, prefix=bed.prefix("server"))
    for role, d in bed.devices.items():
        nco(env, ev, "devices", "add", role, "--address", f"{d.host}:{d.port}", "--key", d.key, "--role", role)
    nco(env, ev, "modules", "deploy", "--device", "client", "--name", "m1", "--kind", "dns-front-tag",
        "--param", f"tag={TAG.decode()}", "--priority", "10", "--protocol", "udp", "--dst-port", PORT,
        "--report")
    nco(env, ev, "modules", "deploy", "--device", "server", "--name", "m1", "--kind", "dns-front-tag",
        "--param", f"tag={TAG.decode()}", "--priority", "10", "--protocol", "udp", "--src-port", PORT,
        "--immediate", "--report")
    ev.mark("NCO: M1 (front tag, priority 10) deployed to both devices")
    cap = x.Tcpdump(bed, "server", work / "wire.pcap", f"udp port {PORT}", snap=0)
    digs = [DigLoop(bed, server, interval, ev.t0, label=f"{i}" if loops > 1 else "") for i in range(loops)]
    for loop in digs:
        loop.start()
    ev.mark("client: dig loop starts" if loops == 1 else f"client: {loops} dig loops start")
    try:
        time.sleep(phase)
        ev.mark("NCO: rotate m1 → m2 (dns-compression) starts")
        log = nco(env, ev, "rotate", "--from", "m1", "--to-name", "m2", "--to-kind", "dns-compression",
                  *(["--overlap", overlap] if overlap else []))
        ev.mark("NCO: rotate done (M1 revoked)")
        (work / "rotate.log").write_text(log)
        time.sleep(phase)
    finally:
        for loop in digs:
            loop.stop.set()
        for loop in digs:
            loop.join()
    recs = cap.records()
    rows = []
    queries = [rec for rec in recs if rec[3] == PORT]
    replies = [rec for rec in recs if rec[2] == PORT]
    for r in sorted((r for loop in digs for r in loop.rows), key=lambda r: r[0]):
        wire_name = x.qname(r[1])
        got = [rec for rec in queries if wire_name in rec[5]]
        arrived = [rec[5] for rec in got]
        form = ("front tag (M1)" if any(p.startswith(TAG) for p in arrived)
                else "compression (M2)" if any(len(p) > 2 and p[2] == 0xA5 for p in arrived)
                else "plain" if arrived else "not seen")
        # an answer left the server: a datagram from port 53 back to the
        # query's source port within dig's timeout (each dig has its own port)
        replied = any(a[3] == q[2] and q[0] <= a[0] <= q[0] + DIG_TIMEOUT for q in got for a in replies)
        rows.append(r + [form, int(replied)])
    return dns, rows, ev


def plot(out, rows, events, interval):
    plt = x.pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.6))
    end = max(r[0] for r in rows) + 1
    bins = [i * 1.0 for i in range(int(end) + 1)]
    for form, color in (("front tag (M1)", "tab:blue"), ("compression (M2)", "tab:orange"),
                        ("plain", "tab:grey"), ("not seen", "black")):
        ts = [r[0] for r in rows if r[3] == form]
        if ts:
            ax.hist(ts, bins=bins, histtype="step", lw=1.5, color=color, label=f"{form}: {len(ts)}")
    bad = [r[0] for r in rows if not r[2]]
    ax.scatter(bad, [0.2] * len(bad), marker="x", color="red", label=f"unanswered: {len(bad)}")
    for i, (t, text) in enumerate(events):
        ax.axvline(t, color="grey", ls=":", lw=0.8)
        ax.annotate(f"({i + 1})", (t, ax.get_ylim()[1]), fontsize=8, va="top")
    ax.set_xlabel("seconds since the experiment started")
    ax.set_ylabel("queries per second, by the module on the wire")
    ax.set_title(f"Two-device rotation by the NCO, dig every {interval} s ({out.mode})")
    ax.legend(fontsize=8, loc="lower right")
    legend = "\n".join(f"({i + 1}) {t:.1f} s {text}" for i, (t, text) in enumerate(events))
    fig.text(0.01, -0.03, legend, fontsize=8, va="top", family="monospace")
    out.plot(fig)


if __name__ == "__main__":
    main()
