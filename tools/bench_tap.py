#!/usr/bin/env python3
"""User-space tap overhead, as ratios against a baseline measured in the
same run (interleaved trials, medians).

  DNS:  N sequential queries for N distinct names, one dig (batch file, as
        in the dissertation) → dnsmasq (cache off, no query log):
        baseline (no tap) · tapped, no module · DNS front tag.
        With --split, the same with one query: the tap's cost per process
        (loading the library, mapping the control area) and per query.
        With --attribution, also an empty and a pass-through preload library
        (tools/preload_baseline.c): what LD_PRELOAD itself costs. With
        --control, a second plain configuration: the noise floor. With
        --compare-preload PATH, also "front tag, other library": the front
        tag with PATH as LD_PRELOAD (an earlier build, say), same rules and
        port, its trials interleaved with the others; reported also as this
        library's paired ratio over it (below 1: this one is faster).
        Every trial starts a fresh dnsmasq per configuration (one
        unmeasured query first): a long-lived server would carry its
        memory layout's luck into every trial of its configuration.
  Ratios: of medians, and paired (per trial, over the same trial's
  baseline) with a distribution-free 95 % confidence interval.
  HTTP: one M-byte transfer, python http.server → curl:
        baseline · tapped, no module · stream tag every 1000 bytes
  Client and server run on one CPU (see `pin`); CPU time is the server's
  scheduler counters plus the clients' rusage.

Usage: .venv/bin/python tools/bench_tap.py [--queries 1000] [--mbytes 1024] [--trials 15]
                                           [--split] [--dig-per-query] [--only dns|http]
                                           [--attribution] [--control] [--compare-preload PATH]
Needs target/release/l45-agent and libl45tap.so (cargo build --release).
"""
import argparse
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "tap"))
import taplab  # noqa: E402
from taplab import Dnsmasq, TapAgent, free_port, free_udp_tcp_port, module  # noqa: E402

HTTP_SERVER = r"""
import functools, http.server, sys
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
handler = functools.partial(Quiet, directory=sys.argv[2])
# One thread: its CPU time is all in the main task's counters.
httpd = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), handler)
print("ready", flush=True)
httpd.serve_forever()
"""


def proc_cpu(pid):
    """CPU seconds (all threads) a process has run, from the scheduler's
    nanosecond counters (/proc/PID/stat counts in 10 ms ticks: too coarse)."""
    total = 0
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def children_faults():
    # Page faults cost ≈ 2–3 µs each in this VM (a fresh anonymous page):
    # a library that faults in 30 pages more per process costs a 1000-query
    # dig run ≈ 0.2 %, so the count is worth showing beside the time.
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt


class Meter:
    """Wall time, and CPU time of the clients (children) plus the server:
    CPU time is far less disturbed by other load on the machine."""

    def __init__(self, server_pid):
        self.server_pid = server_pid

    def __enter__(self):
        self.t0, self.c0, self.s0 = time.perf_counter(), children_cpu(), proc_cpu(self.server_pid)
        self.f0 = children_faults()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        self.client = children_cpu() - self.c0
        self.server = proc_cpu(self.server_pid) - self.s0
        self.cpu = self.client + self.server
        self.faults = children_faults() - self.f0


def pin():
    """Client and server on one CPU: a query is then a plain hand-over on
    that CPU, not a cross-CPU wake-up whose cost (an inter-processor
    interrupt, a VM exit under virtualisation) varies tenfold from run to
    run and would drown a 1 % difference. The benchmark process pins
    itself (after starting the agent, which stays unpinned) and the clients
    inherit it: a `preexec_fn` would make Python fork instead of spawn, and
    the child's copy-on-write faults before exec would be billed to the
    client, inflating every configuration's CPU time alike."""
    os.sched_setaffinity(0, {BENCH_CPU})


BENCH_CPU = min(os.sched_getaffinity(0))


def rotated(configs, trial):
    """Each trial starts with a different configuration, so no one of them
    always runs first (after the idle gap) or after the same neighbour."""
    k = trial % len(configs)
    return configs[k:] + configs[:k]


def timed(args, env):
    p = subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{args[0]} failed: {p.stderr.strip()}")


def dig_run(port, env, batch, queries, per_process):
    if not per_process:
        timed(["dig", "@127.0.0.1", "-p", str(port), "-f", str(batch)], env)
        return
    for _ in range(queries):
        p = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "example.test", "+tries=1", "+time=2", "+short"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if p.returncode != 0 or "10.1.2.3" not in p.stdout:
            raise SystemExit(f"dig failed: {p.stdout}{p.stderr}")


def reference_preloads(work):
    """(name, env) of two reference LD_PRELOAD libraries built from
    tools/preload_baseline.c: an empty one and plain pass-through wrappers."""
    out = []
    for name, flags in (("empty preload", ["-DEMPTY"]), ("pass-through", [])):
        lib = work / (name.replace(" ", "-") + ".so")
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", *flags, "-o", str(lib),
                        str(ROOT / "tools" / "preload_baseline.c"), "-ldl"], check=True)
        out.append((name, {**os.environ, "LD_PRELOAD": str(lib)}))
    return out


def dns_bench(work, agent, counts, trials, per_process, attribution=False, control=False, other=None):
    """{queries: {configuration: [(wall, cpu, client cpu, server cpu)]}} for each query count."""
    plain = os.environ.copy()
    tapped = agent.env()
    others = [(OTHER, {**tapped, "LD_PRELOAD": str(pathlib.Path(other).resolve())})] if other else []
    references = reference_preloads(work) if attribution else []
    batches = {}
    for queries in counts:
        batches[queries] = work / f"batch-{queries}"
        # Distinct names, as in the dissertation (dnsmasq answers every name
        # under example.test with the same address, cache off). +tries=1
        # +time=2: a lost query would show as a 2 s stall, not hide.
        batches[queries].write_text(
            "".join(f"q{i}.example.test A +tries=1 +time=2 +short\n" for i in range(queries)))
    configs = configs_of(control, references, plain, tapped) + others
    results = {queries: {name: [] for name, _ in configs} for queries in counts}
    # One port per configuration, kept by each of its servers (the front
    # tag's server-side rule names it).
    ports = {}
    for name, _ in configs:
        while (p := free_udp_tcp_port()) in ports.values():
            pass
        ports[name] = p
    port_ft = ports["front tag"]
    if others:
        ports[OTHER] = port_ft  # the same rules apply to it
    agent.edit(
        module(1, "dns-front-tag", 10,
               f"<protocol>udp</protocol><destination-port>{port_ft}</destination-port><process-name>dig</process-name>"),
        module(2, "dns-front-tag", 10,
               f"<protocol>udp</protocol><source-port>{port_ft}</source-port><process-name>dnsmasq</process-name>"))
    for trial in range(trials):
        for name, env in rotated(configs, trial):
            # A fresh server per trial and configuration: one long-lived
            # server per configuration would carry its own memory layout's
            # luck into every trial (two identical plain servers differ by
            # up to 0.5 %, see --control); fresh ones make it noise that
            # the trials average out. One query first, unmeasured, so the
            # server's one-time set-up is not billed to the run.
            d = work / f"{name.replace(' ', '-')}-{trial}"
            d.mkdir()
            # No query log: it would add two writes per query to every baseline.
            server = Dnsmasq(d, env=env, port=ports[name], log_queries=False)
            try:
                os.sched_setaffinity(server.proc.pid, {BENCH_CPU})
                dig_run(server.port, env, batches[1] if 1 in batches else warmup(work), 1, False)
                for queries in counts:
                    with Meter(server.proc.pid) as m:
                        dig_run(server.port, env, batches[queries], queries, per_process)
                    results[queries][name].append((m.wall, m.cpu, m.client, m.server, m.faults))
            finally:
                server.stop()
    # Every tagged query reached dnsmasq tagged and was stripped there.
    mods, _ = agent.state()
    assert int(mods[2]["messages-received"]) >= sum(counts) * trials, mods
    return results


def configs_of(control, references, plain, tapped):
    controls = [("baseline B", plain)] if control else []
    return [("baseline", plain), *controls, *references, ("tapped", tapped), ("front tag", tapped)]


OTHER = "front tag, other library"


def compare(results):
    """The front tag through this library over the other library, per trial."""
    ours, other = results["front tag"], results[OTHER]
    cells = []
    for k, what in ((0, "wall"), (1, "CPU")):
        med, lo, hi = median_ci(a[k] / b[k] for a, b in zip(ours, other))
        cells.append(f"paired {what} ratio {med:.4f} [{lo:.4f}, {hi:.4f}]")
    print("front tag, this library / other library: " + ", ".join(cells))


def warmup(work):
    path = work / "warmup"
    if not path.exists():
        path.write_text("w.example.test A +tries=1 +time=2 +short\n")
    return path


def http_bench(work, agent, mbytes, trials):
    www = work / "www"
    www.mkdir()
    size = mbytes * 1024 * 1024
    with open(www / "f", "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(mbytes):
            f.write(block)
    plain = os.environ.copy()
    tapped = agent.env()
    servers = {}
    for name, env in (("baseline", plain), ("tapped", tapped), ("stream tag", tapped)):
        port = free_port()
        p = subprocess.Popen([sys.executable, "-c", HTTP_SERVER, str(port), str(www)], env=env,
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        os.sched_setaffinity(p.pid, {BENCH_CPU})
        servers[name] = (port, p)
    port_st = servers["stream tag"][0]
    agent.edit(
        module(3, "stream-tag", 10, f"<protocol>tcp</protocol><source-port>{port_st}</source-port>",
               "<stream-tag><interval>1000</interval></stream-tag>"),
        module(4, "stream-tag", 10,
               f"<protocol>tcp</protocol><destination-port>{port_st}</destination-port><process-name>curl</process-name>",
               "<stream-tag><interval>1000</interval></stream-tag>"))
    results = {name: [] for name in servers}
    try:
        configs = [("baseline", plain), ("tapped", tapped), ("stream tag", tapped)]
        for trial in range(trials):
            for name, env in rotated(configs, trial):
                port, proc = servers[name]
                out = work / "out"
                with Meter(proc.pid) as m:
                    timed(["curl", "-sS", "-o", str(out), f"http://127.0.0.1:{port}/f"], env)
                results[name].append((m.wall, m.cpu))
                assert out.stat().st_size == size, f"{name}: got {out.stat().st_size} bytes"
        mods, _ = agent.state()
        assert int(mods[4]["bytes-received"]) >= size * trials, mods
    finally:
        for _, p in servers.values():
            p.terminate()
            p.wait()
    return results


def median_ci(values):
    """The median and a distribution-free ~95 % confidence interval for it
    (order statistics of the binomial(n, 1/2) bounds)."""
    v = sorted(values)
    n = len(v)
    half = 0.98 * n ** 0.5
    lo = max(0, int(n / 2 - half))
    hi = min(n - 1, int(n / 2 + half + 1))
    return statistics.median(v), v[lo], v[hi]


def report(title, results):
    """Medians, and each configuration's paired ratio: per trial, its time
    over the baseline's in the same trial (adjacent runs), so drifts in the
    machine's speed between trials cancel."""
    base = results["baseline"]
    base_wall = statistics.median(r[0] for r in base)
    base_cpu = statistics.median(r[1] for r in base)
    print(f"\n{title}")
    print(f"{'configuration':<14} {'wall s':>8} {'min s':>8} {'ratio':>7} {'CPU s':>8} {'CPU ratio':>9}"
          f" {'paired wall ratio [95 % CI]':>28} {'paired CPU ratio [95 % CI]':>27}")
    for name, runs in results.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        wmed, wlo, whi = median_ci(r[0] / b[0] for r, b in zip(runs, base))
        med, lo, hi = median_ci(r[1] / b[1] for r, b in zip(runs, base))
        print(f"{name:<14} {wall:8.3f} {min(r[0] for r in runs):8.3f} {wall / base_wall:7.3f} "
              f"{cpu:8.3f} {cpu / base_cpu:9.3f} {wmed:10.4f} [{wlo:.4f}, {whi:.4f}]"
              f" {med:9.4f} [{lo:.4f}, {hi:.4f}]")
    if len(base[0]) == 5:
        # Which process the extra CPU time is in: paired differences per
        # trial; and the clients' extra page faults (minor, per run).
        print(f"{'':<14} {'client Δ ms [95 % CI]':>30} {'server Δ ms [95 % CI]':>30} {'client faults Δ':>16}")
        for name, runs in results.items():
            if name == "baseline":
                continue
            parts = []
            for k in (2, 3):
                med, lo, hi = median_ci((r[k] - b[k]) * 1e3 for r, b in zip(runs, base))
                parts.append(f"{med:8.3f} [{lo:7.3f}, {hi:7.3f}]")
            faults = statistics.median(r[4] - b[4] for r, b in zip(runs, base))
            print(f"{name:<14} {parts[0]:>30} {parts[1]:>30} {faults:>16.0f}")


def split(counts, results):
    """The tap's extra CPU per process and per query, from one query and N."""
    one, n = counts
    med = {(q, name): statistics.median(r[1] for r in results[q][name])
           for q in counts for name in results[q]}
    print(f"\nCost split (CPU, from 1 and {n} queries; medians)")
    print(f"{'configuration':<14} {'per process ms':>15} {'per query µs':>13}")
    for name in ("tapped", "front tag"):
        fixed = med[(one, name)] - med[(one, "baseline")]
        per_query = ((med[(n, name)] - med[(n, "baseline")]) - fixed) / (n - one)
        print(f"{name:<14} {fixed * 1e3:15.3f} {per_query * 1e6:13.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--mbytes", type=int, default=1024)
    ap.add_argument("--trials", type=int, default=15)
    ap.add_argument("--dig-per-query", action="store_true",
                    help="one dig process per query instead of one dig -f for all of them")
    ap.add_argument("--split", action="store_true",
                    help="also run one-query batches and split the cost per process / per query")
    ap.add_argument("--only", choices=("dns", "http"), help="run one of the two benchmarks")
    ap.add_argument("--attribution", action="store_true",
                    help="DNS: also run dig and dnsmasq under an empty and a pass-through preload "
                         "library (tools/preload_baseline.c): what any LD_PRELOAD costs")
    ap.add_argument("--control", action="store_true",
                    help="DNS: also run a second, identical baseline: the noise floor of the ratios")
    ap.add_argument("--compare-preload", metavar="PATH",
                    help="DNS: also run the front tag with this preload library instead, and report "
                         "this library's paired ratio over it")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        agent = TapAgent(work / "agent")
        pin()
        try:
            dns = http = None
            if args.only != "http":
                counts = [1, args.queries] if args.split else [args.queries]
                dns = dns_bench(work, agent, counts, args.trials, args.dig_per_query, args.attribution,
                                args.control, args.compare_preload)
            if args.only != "dns":
                http = http_bench(work, agent, args.mbytes, args.trials)
        finally:
            agent.stop()
    mode = "one dig per query" if args.dig_per_query else "one dig -f"
    if dns:
        for queries, results in dns.items():
            report(f"DNS: {queries} sequential queries dig → dnsmasq ({mode}), {args.trials} trials", results)
            if OTHER in results:
                compare(results)
        if args.split:
            split(list(dns), dns)
    if http:
        report(f"HTTP: {args.mbytes} MiB python http.server → curl, {args.trials} trials", http)


if __name__ == "__main__":
    main()
