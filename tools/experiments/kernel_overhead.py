#!/usr/bin/env python3
"""Figures 3.3 and 3.4 with the kernel tap (the dissertation's own tap: a
kernel module), in the qemu VM of kmod/vm-test.sh.

This host's kernel cannot load modules, so the module runs in the VM
kmod/vm-test.sh builds and boots (TCG, no KVM; docs/kernel-tap.md). This
script runs `L45_TESTS=0 L45_VM_TESTS=kmod/vm/experiments.sh
kmod/vm-test.sh`: the benchmark kernel (no debug checks) boots with
kmod/vm/experiments.sh as its test script, which times, on the VM's
loopback, `dig -f` with QUERIES names to dnsmasq (figure 3.3) and a
busybox wget of a BYTES random file from busybox httpd, SHA-256 checked
(figure 3.4, a reduced size), each unloaded (no module), tapped (a
pass-through module on both ends) and tagged (32-byte dns-front-tag; a
32-byte stream-tag every 1000 bytes), interleaved over ROUNDS rounds.
Times are guest time (qemu -icount: instructions the guest ran, so a busy
host stretches the run, not the figures), read in the VM with busybox
adjtimex (microseconds). Writes kernel_overhead.csv (every run), kernel_overhead.png
and kernel_overhead.json."""
import os
import pathlib
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import l45exp as x  # noqa: E402

CONFIGS = ("unloaded", "tapped", "tagged")
LABELS = {"dig": "DNS: dig -f, one batch (figure 3.3)", "http": "HTTP: busybox wget (figure 3.4)"}


def main():
    args = x.parse_args(__doc__)
    rounds = x.pick(args, 15, 5, 2)
    queries = x.pick(args, 1000, 1000, 100)
    nbytes = x.pick(args, 256_000_000, 16_000_000, 1_000_000)
    out = x.Output("kernel_overhead", args)
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        env = {**os.environ, "L45_TESTS": "0", "L45_VM_TESTS": str(x.ROOT / "kmod" / "vm" / "experiments.sh"),
               "L45_BENCH_ROUNDS": str(rounds), "L45_BENCH_QUERIES": str(queries), "L45_BENCH_BYTES": str(nbytes),
               "L45_KBENCH_OUT": str(work / "kbench.txt"),
               # the full form's benchmark VM takes ≈ 15 min of emulation
               # (vm-test.sh stops a VM after 15 min by default)
               "L45_VM_TIMEOUT": os.environ.get("L45_VM_TIMEOUT", "3600")}
        log = work / "vm-test.log"
        with open(log, "w") as f:
            p = subprocess.run([str(x.ROOT / "kmod" / "vm-test.sh")], env=env, stdout=subprocess.PIPE, stderr=f,
                               text=True)
        console = log.read_text()
        raw = work / "kbench.txt.raw"
        lines = raw.read_text().splitlines() if raw.exists() else []
        if p.returncode != 0 or not lines:
            sys.stderr.write(console[-4000:])
            raise SystemExit(f"kmod/vm-test.sh failed ({p.stdout.strip()}); no BENCH lines")
        problems = [line.split("EXP ", 1)[1] for line in console.splitlines() if " EXP " in line
                    and "EXP queries=" not in line and "EXP stats " not in line]
        # each module's counters after the last round it ran in
        counters = {}
        for line in console.splitlines():
            m = re.search(r"EXP stats (\w+) (\d+) id=(\d+) .*bytes_sent=(\d+) bytes_received=(\d+) "
                          r"messages_sent=(\d+) messages_received=(\d+)", line)
            if m:
                cfg, _, mid, bs, br, ms, mr = m.groups()
                counters[f"{cfg} module {mid}"] = {"bytes sent": int(bs), "bytes received": int(br),
                                                   "messages sent": int(ms), "messages received": int(mr)}
        timings = [line for line in console.splitlines() if "timings:" in line]
        print("\n".join(timings), flush=True)
    rows = []
    for line in lines:
        m = re.match(r"BENCH (\w+) (\w+) (\d+) s=(\S+) (\w+)=(\d+)", line)
        if not m:
            continue
        workload, cfg, rnd, secs, what, val = m.groups()
        rows.append([workload, cfg, int(rnd), None if secs == "fail" else float(secs), what, int(val)])
    out.csv(["workload", "configuration", "round", "seconds", "check", "value"], rows)
    out.figure("rounds", rounds)
    out.figure("queries", queries)
    out.figure("http bytes", nbytes)
    for workload in LABELS:
        base = x.mean([r[3] for r in rows if r[0] == workload and r[1] == "unloaded" and r[3] is not None])
        for cfg in CONFIGS:
            mine = [r for r in rows if r[0] == workload and r[1] == cfg]
            ts = [r[3] for r in mine if r[3] is not None]
            out.figure(f"{workload} {cfg} mean s", round(x.mean(ts), 3))
            out.figure(f"{workload} {cfg} median s", round(x.median(ts), 3))
            if cfg != "unloaded":
                out.figure(f"{workload} {cfg} mean overhead %",
                           round(100 * (x.mean(ts) / base - 1), 2) if base > 0 else "n/a")
            if workload == "dig":
                out.figure(f"dig {cfg} answered", f"{sum(r[5] for r in mine)} of {queries * len(mine)}")
            else:
                out.figure(f"http {cfg} intact", f"{sum(r[5] for r in mine)} of {len(mine)}")
            out.figure(f"{workload} {cfg} failed runs", sum(1 for r in mine if r[3] is None))
    out.figure("problems reported in the VM", problems or "none")
    out.figure("module counters after the last round", counters or "none reported")
    out.figure("vm-test.sh timings", timings[-1].split("timings: ", 1)[1] if timings else "?")
    plot(out, rows, rounds, queries, nbytes)
    out.done()


def plot(out, rows, rounds, queries, nbytes):
    plt = x.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (workload, label) in zip(axes, LABELS.items()):
        data = [[r[3] for r in rows if r[0] == workload and r[1] == cfg and r[3] is not None] for cfg in CONFIGS]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(CONFIGS) + 1), CONFIGS)
        ax.set_title(label, fontsize=9)
        ax.set_ylabel("seconds (guest time, qemu -icount)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Kernel tap in the qemu VM (TCG, noisy): {rounds} rounds, {queries} queries, "
                 f"{nbytes / 1e6:g} MB ({out.mode})", fontsize=9)
    fig.tight_layout()
    out.plot(fig)


if __name__ == "__main__":
    main()
