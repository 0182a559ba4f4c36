#!/usr/bin/env python3
"""Figure 5.5: immediate attach. dnsmasq runs on the server host under the
tap with no module; H1 (the client host, no module) sends one dig query
every interval (the dissertation: 5 s, two tries, 5 s timeout). Then a
DNS front-tag module is deployed on the server's device with
attach=immediate: it joins dnsmasq's existing socket, and since H1's
queries carry no tag it drops them. After a while the module is revoked
(revoke-module) and the queries are answered again. Writes attach.csv
(one row per query: time, name, answered), attach-events.csv and
attach.png (answered/dropped queries over time)."""
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import l45exp as x  # noqa: E402

PORT = 53


def main():
    args = x.parse_args(__doc__)
    interval, timeout, tries = x.pick(args, (5, 5, 2), (1, 1, 1), (0.5, 1, 1))
    phase = x.pick(args, 30, 8, 2)  # seconds before attach, attached, after revoke
    out = x.Output("attach", args)
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        bed = x.Testbed(work)
        dns = None
        try:
            dns, rows, ev, chain = run(bed, work, interval, timeout, tries, phase)
        finally:
            if dns:
                dns.stop()
            bed.close()
    out.csv(["t_s", "query", "answered"], rows)
    out.csv(["t_s", "event"], ev.items, part="events")
    t_attach, t_revoke = ev.items[1][0], ev.items[2][0]
    during = [r for r in rows if t_attach + 0.2 < r[0] < t_revoke]
    outside = [r for r in rows if r[0] < t_attach or r[0] > t_revoke + 0.2]
    out.figure("queries", len(rows))
    out.figure("answered while attached", sum(r[2] for r in during))
    out.figure("sent while attached", len(during))
    out.figure("answered before attach / after revoke", f"{sum(r[2] for r in outside)} of {len(outside)}")
    out.figure("dnsmasq socket chain after attach", chain)
    plot(out, rows, ev.items, interval)
    out.done()


def run(bed, work, interval, timeout, tries, phase):
    server = bed.addr("server")
    dev = bed.devices["server"]
    ev = x.Events()
    (work / "dns").mkdir()
    dns = x.Dnsmasq(work / "dns", env=bed.env("server"), host=server, port=PORT, prefix=bed.prefix("server"))
    ev.mark(f"dnsmasq started (pid {dns.proc.pid}), no module")
    rows, chain = [], None
    plan = [(phase, "attach"), (phase, "revoke"), (phase, None)]
    n = 0
    for length, then in plan:
        end = time.time() + length
        while time.time() < end:
            n += 1
            name = f"www.test_{n}.example.test"  # dnsmasq answers every name under example.test
            t = time.time() - ev.t0
            p = subprocess.run([*bed.prefix("client"), "dig", f"@{server}", "-p", str(PORT), name,
                                f"+tries={tries}", f"+time={timeout}", "+short"], capture_output=True, text=True)
            rows.append((round(t, 3), name, int(x.taplab.ANSWER in p.stdout)))
            time.sleep(max(0.0, ev.t0 + t + interval - time.time()))
        if then == "attach":
            dev.edit(x.module(1, "dns-front-tag", 10,
                              f"<protocol>udp</protocol><source-port>{PORT}</source-port>"
                              "<process-name>dnsmasq</process-name>", extra="<attach>immediate</attach>"))
            ev.mark("front-tag module registered, attach immediate")
        elif then == "revoke":
            # the user-space tap re-matches an existing socket at its next
            # message: by now dnsmasq's socket has seen several
            chain = [s["modules"] for s in dev.state()[1] if s["process"] == "dnsmasq"]
            dev.revoke(1)
            ev.mark("module revoked")
    return dns, rows, ev, chain


def plot(out, rows, events, interval):
    plt = x.pyplot()
    fig, ax = plt.subplots(figsize=(9, 3))
    ok = [r[0] for r in rows if r[2]]
    bad = [r[0] for r in rows if not r[2]]
    ax.scatter(ok, [1] * len(ok), marker="o", color="tab:green", label=f"answered ({len(ok)})", s=18)
    ax.scatter(bad, [0] * len(bad), marker="x", color="tab:red", label=f"dropped by the module ({len(bad)})", s=22)
    for i, (t, text) in enumerate(events):
        ax.axvline(t, color="grey", ls=":", lw=0.8)
        ax.annotate(f"({i + 1})", (t, 1.25), fontsize=8)
    ax.set_ylim(-0.5, 1.4)
    ax.set_yticks([0, 1], ["dropped", "answered"])
    ax.set_xlabel("seconds since the experiment started")
    ax.set_title(f"Immediate attach: one dig every {interval} s to a running dnsmasq ({out.mode})")
    ax.legend(loc="center right", fontsize=8)
    legend = "\n".join(f"({i + 1}) {t:.1f} s {text}" for i, (t, text) in enumerate(events))
    fig.text(0.01, -0.05, legend, fontsize=8, va="top", family="monospace")
    out.plot(fig)


if __name__ == "__main__":
    main()
