#!/usr/bin/env python3
"""Where the user-space tap's DNS cost goes, in exact counts: one `dig -f`
of N distinct names → dnsmasq, each run under valgrind's callgrind, for
baseline (no tap), tapped with no module, and the DNS front tag (the same
configurations as tools/bench_tap.py). Prints, per process, the extra
instructions (and with --cache-sim the extra L1/last-level cache misses)
over the baseline and per query, and the functions that differ most.

valgrind runs the program under its tool binary, so /proc/self/comm — the
process name the tap's rules match — would read "callgrind-amd64"; the tool
is started through a symlink named after the program instead.

Usage: .venv/bin/python tools/profile_tap.py [--queries 1000] [--cache-sim] [--top 15] [--keep DIR]
Needs valgrind, target/release/l45-agent and libl45tap.so.
"""
import argparse
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "tap"))
from taplab import TapAgent, free_udp_tcp_port, module, udp_port_bound, wait_for  # noqa: E402

TOOL = pathlib.Path("/usr/libexec/valgrind/callgrind-amd64-linux")
EVENTS = {"Ir": "instructions", "I1mr": "L1i misses", "D1mr": "L1d read misses",
          "D1mw": "L1d write misses", "ILmr": "LL instr misses", "DLmr": "LL read misses",
          "DLmw": "LL write misses"}


def valgrind(name, work, cache_sim):
    """argv prefix running callgrind with the client's comm kept as `name`."""
    d = work / "vg" / name
    d.mkdir(parents=True, exist_ok=True)
    link = d / name
    if not link.exists():
        link.symlink_to(TOOL)
    return [str(link), "--tool=callgrind", *(["--cache-sim=yes"] if cache_sim else []),
            *(["--dump-instr=yes"] if os.environ.get("L45_PROFILE_INSTR") else [])]


def vg_env(env):
    # What Debian's valgrind wrapper sets before starting the tool.
    return {**env, "LD_LIBRARY_PATH": "/usr/lib/debug", "VALGRIND_LAUNCHER": "/usr/bin/valgrind.bin"}


def totals(path):
    text = path.read_text(errors="replace")
    events = next(l.split()[1:] for l in text.splitlines() if l.startswith("events:"))
    values = next(l.split()[1:] for l in text.splitlines() if l.startswith("totals:"))
    return dict(zip(events, map(int, values)))


def functions(path, event):
    out = subprocess.run(["callgrind_annotate", f"--show={event}", f"--sort={event}", "--inclusive=no",
                          "--threshold=100", "--auto=no", str(path)], capture_output=True, text=True).stdout
    fn = Counter()
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.*)$", line)
        if m and "PROGRAM TOTALS" not in line:
            # Inlined code is named by its source file: merge by function.
            name = re.sub(r"\s*\[.*\]$", "", re.sub(r"^[^:]*:", "", m.group(2)))
            fn[name] += int(m.group(1).replace(",", ""))
    return fn


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--cache-sim", action="store_true", help="also simulate the caches (slower)")
    ap.add_argument("--top", type=int, default=15, help="functions to list per comparison")
    ap.add_argument("--keep", help="keep the callgrind files in this directory")
    args = ap.parse_args()
    if not TOOL.exists() or not shutil.which("callgrind_annotate"):
        raise SystemExit("needs valgrind (apt-get install valgrind)")
    work = pathlib.Path(tempfile.mkdtemp(prefix="l45-profile-"))
    out = pathlib.Path(args.keep) if args.keep else work / "out"
    out.mkdir(parents=True, exist_ok=True)
    agent = TapAgent(work / "agent")
    batch = work / "batch"
    batch.write_text("".join(f"q{i}.example.test A +tries=1 +time=2 +short\n" for i in range(args.queries)))
    plain, tapped = os.environ.copy(), agent.env()
    configs = [("baseline", plain), ("tapped", tapped), ("front", tapped)]
    servers = {}
    try:
        for name, env in configs:
            d = work / name
            d.mkdir()
            port = free_udp_tcp_port()
            conf = d / "dnsmasq.conf"
            # user=root: under valgrind, dnsmasq must not drop privileges
            # before callgrind writes its output.
            conf.write_text(f"port={port}\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\n"
                            f"cache-size=0\naddress=/example.test/10.1.2.3\nuser=root\n")
            p = subprocess.Popen([*valgrind("dnsmasq", work, args.cache_sim), f"--callgrind-out-file={out}/dnsmasq-{name}.cg",
                                  shutil.which("dnsmasq"), "--keep-in-foreground", f"--conf-file={conf}",
                                  f"--pid-file={d / 'pid'}", "--log-facility=-"],
                                 env=vg_env(env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for(lambda: p.poll() is not None or udp_port_bound(port, p.pid), timeout=120, what="dnsmasq")
            servers[name] = (port, p)
        pf = servers["front"][0]
        agent.edit(
            module(1, "dns-front-tag", 10,
                   f"<protocol>udp</protocol><destination-port>{pf}</destination-port><process-name>dig</process-name>"),
            module(2, "dns-front-tag", 10,
                   f"<protocol>udp</protocol><source-port>{pf}</source-port><process-name>dnsmasq</process-name>"))
        for name, env in configs:
            r = subprocess.run([*valgrind("dig", work, args.cache_sim), f"--callgrind-out-file={out}/dig-{name}.cg",
                                shutil.which("dig"), "@127.0.0.1", "-p", str(servers[name][0]), "-f", str(batch)],
                               env=vg_env(env), capture_output=True, text=True)
            answered = r.stdout.count("10.1.2.3")
            if answered != args.queries:
                raise SystemExit(f"{name}: {answered} of {args.queries} answered")
    finally:
        for _, p in servers.values():
            p.terminate()
            p.wait()
        agent.stop()
    events = ["Ir", *(["I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw"] if args.cache_sim else [])]
    for prog in ("dig", "dnsmasq"):
        t = {name: totals(out / f"{prog}-{name}.cg") for name, _ in configs}
        print(f"\n{prog}: extra over baseline, and per query ({args.queries} queries; start-up included)")
        for ev in events:
            cells = [f"{name} {t[name][ev] - t['baseline'][ev]:+,} ({(t[name][ev] - t['baseline'][ev]) / args.queries:+.1f})"
                     for name in ("tapped", "front")]
            print(f"  {EVENTS[ev]:<18} baseline {t['baseline'][ev]:,}   " + "   ".join(cells))
        for a, b in (("baseline", "tapped"), ("tapped", "front")):
            fa, fb = functions(out / f"{prog}-{a}.cg", "Ir"), functions(out / f"{prog}-{b}.cg", "Ir")
            diff = sorted(((fb[k] - fa[k], k) for k in set(fa) | set(fb)), key=lambda x: -abs(x[0]))
            print(f"  instructions, {b} − {a}, by function (÷ queries):")
            for v, k in diff[:args.top]:
                print(f"    {v / args.queries:+9.1f}  {k[:100]}")
    if args.keep:
        print(f"\ncallgrind files in {out}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
