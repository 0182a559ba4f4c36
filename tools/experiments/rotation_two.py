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
rotation_two-events.csv, rotation_two.png (queries per module over time)."""
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import l45exp as x  # noqa: E402

PORT = 53
TAG = b"XTAGXdig"


def main():
    args = x.parse_args(__doc__)
    interval = x.pick(args, 0.1, 0.1, 0.2)
    phase = x.pick(args, 20, 6, 2)
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
    out.csv(["t_s", "query", "answered", "form on the wire"], rows)
    out.csv(["t_s", "event"], ev.items, part="events")
    forms = {}
    for r in rows:
        forms[r[3]] = forms.get(r[3], 0) + 1
    out.figure("queries", len(rows))
    out.figure("unanswered", sum(1 for r in rows if not r[2]))
    out.figure("queries per form", forms)
    plot(out, rows, ev.items, interval)
    out.done()


def nco(env, ev, *args):
    p = subprocess.run([x.NCO, *map(str, args)], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"l45-nco {' '.join(map(str, args))}: {p.stderr.strip()[-800:]}")
    return p.stdout


class DigLoop(threading.Thread):
    def __init__(self, bed, server, interval, t0):
        super().__init__(daemon=True)
        self.bed, self.server, self.interval, self.t0 = bed, server, interval, t0
        self.rows, self.stop = [], threading.Event()

    def run(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            name = f"www.test_{n}.example.test"
            t = time.time() - self.t0
            p = subprocess.run([*self.bed.prefix("client"), "dig", f"@{self.server}", "-p", str(PORT), name,
                                "+tries=1", "+time=2", "+short"], env=self.bed.env("client"),
                               capture_output=True, text=True)
            self.rows.append([round(t, 3), name, int(x.taplab.ANSWER in p.stdout)])
            self.stop.wait(self.interval)


def run(bed, work, interval, phase):
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
    cap = x.Tcpdump(bed, "server", work / "wire.pcap", f"udp dst port {PORT}", snap=0)
    loop = DigLoop(bed, server, interval, ev.t0)
    loop.start()
    ev.mark("client: dig loop starts")
    try:
        time.sleep(phase)
        ev.mark("NCO: rotate m1 → m2 (dns-compression) starts")
        log = nco(env, ev, "rotate", "--from", "m1", "--to-name", "m2", "--to-kind", "dns-compression")
        ev.mark("NCO: rotate done (M1 revoked)")
        (work / "rotate.log").write_text(log)
        time.sleep(phase)
    finally:
        loop.stop.set()
        loop.join()
    recs = cap.records()
    rows = []
    for r in loop.rows:
        wire_name = x.qname(r[1])
        arrived = [rec[5] for rec in recs if wire_name in rec[5]]
        form = ("front tag (M1)" if any(p.startswith(TAG) for p in arrived)
                else "compression (M2)" if any(len(p) > 2 and p[2] == 0xA5 for p in arrived)
                else "plain" if arrived else "not seen")
        rows.append(r + [form])
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
