#!/usr/bin/env python3
"""Figures 3.3 / 4.4: overhead of the user-space tap on 1000 short-lived DNS
flows. The client host runs one `dig -f` over N distinct names (each query
its own socket) against dnsmasq (cache off, one answer for every name) on
the server host, across the 1 Gbit/s link. Configurations, interleaved per
trial (a different one first each trial), a fresh dnsmasq each time:
baseline (no LD_PRELOAD), tapped (the tap loaded, no module matches),
front tag (32-byte DNS front tag on every query, stripped by dnsmasq's tap).
Writes dns_overhead.csv (one row per trial and configuration) and
dns_overhead.png (box plots, as the dissertation's)."""
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import l45exp as x  # noqa: E402

TAG = "XTAGXdig" * 4  # 32 bytes, the dissertation's tag size
CONFIGS = ("baseline", "tapped", "front tag")
PORTS = {"baseline": 5301, "tapped": 5302, "front tag": 5303}


def main():
    args = x.parse_args(__doc__)
    queries = x.pick(args, 1000, 1000, 50)
    trials = x.pick(args, 15, 15, 2)  # 1000 queries take well under a second: quick keeps all 15
    out = x.Output("dns_overhead", args)
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        bed = x.Testbed(work)
        try:
            rows = run(bed, work, queries, trials)
        finally:
            bed.close()
    out.csv(["trial", "configuration", "queries", "seconds"], rows)
    report(out, rows, queries, trials)
    out.done()


def run(bed, work, queries, trials):
    server = bed.addr("server")
    bed.devices["client"].edit(x.module(
        1, "dns-front-tag", 10,
        f"<protocol>udp</protocol><destination-port>{PORTS['front tag']}</destination-port>"
        "<process-name>dig</process-name>", f"<dns-tag><tag>{TAG}</tag></dns-tag>"))
    bed.devices["server"].edit(x.module(
        1, "dns-front-tag", 10,
        f"<protocol>udp</protocol><source-port>{PORTS['front tag']}</source-port>"
        "<process-name>dnsmasq</process-name>", f"<dns-tag><tag>{TAG}</tag></dns-tag>"))
    batch = work / "batch"
    batch.write_text("".join(f"q{i}.example.test A +tries=1 +time=2 +short\n" for i in range(queries)))
    warm = work / "warm"
    warm.write_text("w.example.test A +tries=1 +time=2 +short\n")
    rows = []
    for trial in range(trials):
        k = trial % len(CONFIGS)
        for name in CONFIGS[k:] + CONFIGS[:k]:
            tapped = name != "baseline"
            senv = bed.env("server") if tapped else None
            cenv = bed.env("client") if tapped else dict(x.os.environ)
            d = work / f"dns-{trial}-{name.replace(' ', '-')}"
            d.mkdir()
            dns = x.Dnsmasq(d, env=senv, host=server, port=PORTS[name], prefix=bed.prefix("server"),
                            log_queries=False)
            try:
                dig(bed, server, PORTS[name], warm, cenv, 1)
                t0 = time.perf_counter()
                dig(bed, server, PORTS[name], batch, cenv, queries)
                rows.append((trial, name, queries, round(time.perf_counter() - t0, 6)))
            finally:
                dns.stop()
        print(f"trial {trial + 1}/{trials}: " + ", ".join(f"{r[1]} {r[3]:.3f} s" for r in rows[-3:]), flush=True)
    mods, _ = bed.devices["server"].state()
    stripped = int(mods[1]["messages-received"])
    assert stripped >= queries * trials, f"server tap stripped {stripped} tags, expected {queries * trials}"
    return rows


def dig(bed, server, port, batch, env, expect):
    p = subprocess.run([*bed.prefix("client"), "dig", f"@{server}", "-p", str(port), "-f", str(batch)],
                       env=env, capture_output=True, text=True)
    answers = p.stdout.count(x.taplab.ANSWER)
    if p.returncode != 0 or answers != expect:
        raise RuntimeError(f"dig: {answers} of {expect} answered: {p.stderr.strip()[-300:]}")


def report(out, rows, queries, trials):
    by = {c: [r[3] for r in rows if r[1] == c] for c in CONFIGS}
    base = x.mean(by["baseline"])
    for c in CONFIGS:
        out.figure(f"{c} mean s", round(x.mean(by[c]), 4))
        out.figure(f"{c} median s", round(x.median(by[c]), 4))
        if c != "baseline":
            out.figure(f"{c} mean overhead %", round(100 * (x.mean(by[c]) / base - 1), 2))
            out.figure(f"{c} mean extra s", round(x.mean(by[c]) - base, 4))
            # one slow trial moves a mean of 15 a lot on a shared host; the median less
            out.figure(f"{c} median overhead %", round(100 * (x.median(by[c]) / x.median(by["baseline"]) - 1), 2))
    plt = x.pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.boxplot([by[c] for c in CONFIGS], tick_labels=["Linux baseline", "Layer 4.5 tap", "tap + front tag"],
               showmeans=True)
    ax.set_ylabel(f"seconds for {queries} queries")
    ax.set_title(f"DNS: {queries} dig queries → dnsmasq, {trials} trials ({out.mode})")
    ax.grid(axis="y", alpha=0.3)
    out.plot(fig)


if __name__ == "__main__":
    main()
