#!/usr/bin/env python3
"""Figures 3.5, 5.5, 5.6, 5.7 and (reduced) 4.5/4.6 with the kernel tap,
in the qemu VM of kmod/vm-test.sh (TCG, no KVM; docs/kernel-tap.md), in one
boot: `L45_TESTS=0 L45_VM_TESTS=<a copy of kmod/vm/experiments-lifecycle.sh
with this mode's sizes> kmod/vm-test.sh`. In the VM, on the benchmark
kernel, on its loopback:

  3.5  challenge-response rounds through l45-agent (kernel backend) over
       NETCONF: `l45-ktest netconf-challenge`, each round a whole ssh
       session, the challenge RPC, the kernel's AES-256-GCM answer and its
       verification; then one under a wrong key, which must fail;
  5.5  `l45-ktest dns-timeline`: one query every INTERVAL to dnsmasq, each
       query's outcome with its time; a dns-front-tag module attached
       immediately to dnsmasq's live socket (the client sends untagged
       queries, so they are dropped), later revoked;
  5.6  a TCP download with a 100 ms-per-send rate limit on the server,
       registered deactivated, then activated;
  5.7  H1, a connection made while two stream-tag modules (both ends) are
       current; the modules deprecated; H2, a connection made after; both
       transfers checksum-checked, H1's tags counted;
  4.5/4.6  HTTPS (openssl s_server -WWW / s_client, the VM's TLS pair) of a
       random file, unloaded (no kernel module), tapped (pass-through
       modules) and stream-tagged (the client's tap buffers what it receives
       until a tag is whole), SHA-256 checked, interleaved rounds.

Times are guest time (qemu -icount: instructions the guest ran, so a busy
host stretches the run, not the figures), read in the VM with busybox
adjtimex. vm-test.sh ends with "the benchmark did not complete": this
script prints no BENCH lines (its own are LIFE lines); completion is its
"LIFE done" line. Writes kernel_lifecycle.json, kernel_lifecycle.png and
kernel_lifecycle-{challenge,attach,events,flows,https}.csv."""
import os
import pathlib
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import l45exp as x  # noqa: E402

SCRIPT = x.ROOT / "kmod" / "vm" / "experiments-lifecycle.sh"
CONFIGS = ("unloaded", "tapped", "tagged")


def main():
    args = x.parse_args(__doc__)
    sizes = {
        "L45_LIFE_CHALLENGES": x.pick(args, 20, 20, 3),
        "L45_LIFE_INTERVAL_MS": x.pick(args, 1000, 500, 200),
        "L45_LIFE_PHASE_MS": x.pick(args, 30000, 8000, 1000),
        "L45_LIFE_ACT_BYTES": x.pick(args, 3_700_000, 1_000_000, 100_000),
        "L45_LIFE_TCP_BYTES": x.pick(args, 100_000_000, 20_000_000, 1_000_000),
        # (HTTPS in a reduced size even in full mode: the file and the
        # received copy sit in the VM's 1 GiB of RAM, and 30 runs of
        # openssl under TCG take long)
        "L45_LIFE_TLS_BYTES": x.pick(args, 16_000_000, 4_000_000, 300_000),
        "L45_LIFE_TLS_ROUNDS": x.pick(args, 10, 3, 1),
    }
    out = x.Output("kernel_lifecycle", args)
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        # the sizes reach the VM inside its test script (vm-test.sh passes
        # only its own variables on the kernel command line)
        script = work / "experiments-lifecycle.sh"
        body = SCRIPT.read_text().split("\n", 1)
        script.write_text(body[0] + "\n" + "".join(f"{k}={v}\n" for k, v in sizes.items()) + body[1])
        env = {**os.environ, "L45_TESTS": "0", "L45_VM_TESTS": str(script),
               "L45_KBENCH_OUT": str(work / "kbench.txt")}
        log = work / "vm-test.log"
        with open(log, "w") as f:
            subprocess.run([str(x.ROOT / "kmod" / "vm-test.sh")], env=env, stdout=subprocess.PIPE, stderr=f)
        console = log.read_text()
    # the VM's console reaches vm-test.sh's stderr as "  bench| LINE"
    lines = [line.split("| ", 1)[1] for line in console.splitlines() if line.startswith("  bench| ")]
    life = [line[5:] for line in lines if line.startswith("LIFE ")]
    problems = [line[4:] for line in lines if line.startswith("EXP ")]
    timings = [line for line in console.splitlines() if "timings:" in line]
    if "done" not in life:
        sys.stderr.write(console[-4000:])
        raise SystemExit(f"the lifecycle VM did not finish ({len(life)} LIFE lines)")
    for key, value in sizes.items():
        out.figure(key.removeprefix("L45_LIFE_").lower().replace("_", " "), value)
    challenge(out, life)
    events = attach(out, life)
    flows(out, life)
    https = tls(out, life)
    out.figure("problems reported in the VM", problems or "none")
    out.figure("vm-test.sh timings", timings[-1].split("timings: ", 1)[1] if timings else "?")
    plot(out, life, events, https, sizes)
    out.done()


def kv(text):
    """`a=1 b=x` → {"a": "1", "b": "x"}"""
    return dict(m.groups() for m in re.finditer(r"(\w+)=(\S+)", text))


def challenge(out, life):
    rows = []
    for line in life:
        m = re.match(r"challenge (\d+) (.*)", line)
        if m:
            f = kv(m.group(2))
            rows.append([int(m.group(1)), int(f["us"]) / 1e6, int(f["passed"])])
    out.csv(["round", "seconds", "passed"], rows, part="challenge")
    secs = [r[1] for r in rows]
    out.figure("challenge rounds", len(rows))
    out.figure("challenge passed", sum(r[2] for r in rows))
    if secs:
        out.figure("challenge median s", round(x.median(secs), 4))
        out.figure("challenge min s", round(min(secs), 4))
        out.figure("challenge max s", round(max(secs), 4))
    wrong = next((kv(line) for line in life if line.startswith("wrongkey ")), {})
    out.figure("challenge under a wrong key", f"passed={wrong.get('passed', '?')}, "
               f"rpc-error in the reply: {wrong.get('error', '?') != '0'}")


def attach(out, life):
    events = [(int(kv(line)["t_us"]), line.split(" ", 2)[2]) for line in life if line.startswith("event ")]
    t0 = events[0][0] if events else 0
    rows = []
    for line in life:
        m = re.match(r"attach query (\d+) (.*)", line)
        if m:
            f = kv(m.group(2))
            rows.append([int(m.group(1)), round((int(f["t_us"]) - t0) / 1e6, 3), int(f["answered"]),
                         int(f["rtt_us"])])
    out.csv(["query", "t_s", "answered", "rtt_us"], rows, part="attach")
    out.csv(["t_s", "event"], [[round((t - t0) / 1e6, 3), e] for t, e in events], part="events")
    mark = {e: (t - t0) / 1e6 for t, e in events}
    t_attach = next((v for k, v in mark.items() if "attach immediate" in k), None)
    t_revoke = next((v for k, v in mark.items() if k == "module revoked"), None)
    if t_attach is None or t_revoke is None:
        out.figure("attach", "the attach or revoke mark is missing")
        return events
    before = [r for r in rows if r[1] < t_attach]
    during = [r for r in rows if t_attach <= r[1] < t_revoke]
    after = [r for r in rows if r[1] >= t_revoke]
    out.figure("attach queries", len(rows))
    out.figure("attach answered before the attach", f"{sum(r[2] for r in before)} of {len(before)}")
    out.figure("attach answered while attached", f"{sum(r[2] for r in during)} of {len(during)}")
    out.figure("attach answered after the revoke", f"{sum(r[2] for r in after)} of {len(after)}")
    first_drop = next((r for r in during if not r[2]), None)
    out.figure("attach first dropped query, s after the registration",
               round(first_drop[1] - t_attach, 3) if first_drop else "none")
    chains = [line.split(" ", 2)[2] for line in life if line.startswith("sockets attached ")]
    out.figure("attach dnsmasq socket chain while attached",
               [c for c in chains if "5370" in c and "Udp" in c] or "no socket on port 5370 listed")
    stats = next((kv(line) for line in life if line.startswith("stats attach ")), {})
    out.figure("attach module drops", stats.get("drops", "?"))
    return events


def flows(out, life):
    rows = []
    for line in life:
        m = re.match(r"flow (\w+) (.*)", line)
        if m:
            f = kv(m.group(2))
            rows.append([m.group(1), int(f["rc"]), int(f["us"]) / 1e6])
    out.csv(["flow", "exit status", "seconds"], rows, part="flows")
    by = {r[0]: r for r in rows}
    stats = {}
    for line in life:
        m = re.match(r"stats (\w+) (\d+) (.*)", line)
        if m and m.group(1) in ("deactivated", "activated", "deprecated"):
            stats[(m.group(1), m.group(2))] = kv(m.group(3))
    for name, label in (("inactive", "activate: download, module deactivated"),
                        ("active", "activate: download, module activated")):
        r = by.get(name)
        out.figure(f"{label} s", round(r[2], 3) if r and r[1] == 0 else f"failed ({r})")
    # (a rate limit changes no byte, so the module's byte and message
    # counters stay at zero: the delay is what shows it acted)
    act_bytes = int(next((kv(line) for line in life if line.startswith("sizes ")), {}).get("act_bytes", 0))
    sends = -(-act_bytes // 16384)
    out.figure("activate: sends of 16 KiB and their delay if every one waits 100 ms",
               f"{sends} sends, {sends * 0.1:.1f} s")
    for name, label in (("h1", "deprecate: H1 (connected before the deprecation)"),
                        ("h2", "deprecate: H2 (connected after)")):
        r = by.get(name)
        out.figure(f"{label} s", round(r[2], 3) if r and r[1] == 0 else f"failed ({r})")
        out.figure(f"{label} intact", bool(r and r[1] == 0))
    chains = [line.split(" ", 2)[2] for line in life if line.startswith("sockets deprecated ")]
    out.figure("deprecate: the flows' chains after the deprecation", [c for c in chains if "7031" in c])
    tcp_bytes = int(next((kv(line) for line in life if line.startswith("sizes ")), {}).get("tcp_bytes", 0))
    sent = int(stats.get(("deprecated", "163"), {}).get("bytes_sent", -1))
    # a 32-byte tag every 1000 bytes of one flow: H1 alone accounts for it all
    one_flow = tcp_bytes + 32 * (tcp_bytes // 1000)
    out.figure("deprecate: tagged bytes the server's module sent",
               f"{sent} (one flow of {tcp_bytes} bytes with its tags: {one_flow})")
    out.figure("deprecate: only H1 customized", sent == one_flow)


def tls(out, life):
    rows = []
    for line in life:
        m = re.match(r"https (\w+) (\d+) (.*)", line)
        if m:
            f = kv(m.group(3))
            rows.append([m.group(1), int(m.group(2)), int(f["us"]) / 1e6, int(f["intact"])])
    out.csv(["configuration", "round", "seconds", "intact"], rows, part="https")
    base = x.mean([r[2] for r in rows if r[0] == "unloaded" and r[3]]) if rows else 0
    for cfg in CONFIGS:
        mine = [r for r in rows if r[0] == cfg]
        ts = [r[2] for r in mine if r[3]]
        out.figure(f"https {cfg} intact", f"{sum(r[3] for r in mine)} of {len(mine)}")
        if ts:
            out.figure(f"https {cfg} mean s", round(x.mean(ts), 4))
            if cfg != "unloaded" and base > 0:
                out.figure(f"https {cfg} mean overhead %", round(100 * (x.mean(ts) / base - 1), 1))
    counters = {}
    for line in life:
        m = re.match(r"stats https (\d+) (.*)", line)
        if m:
            f = kv(m.group(2))
            counters[f"module {m.group(1)}"] = {k: int(f.get(k, -1)) for k in
                                                ("bytes_sent", "bytes_received", "messages_sent",
                                                 "messages_received")}
    out.figure("https tagged module counters after the last tagged run", counters or "none reported")
    return rows


def plot(out, life, events, https, sizes):
    plt = x.pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    ch = [r for r in (re.match(r"challenge (\d+) us=(\d+)", line) for line in life) if r]
    a = axes[0][0]
    a.plot([int(m.group(1)) for m in ch], [int(m.group(2)) / 1000 for m in ch], "o-", ms=4)
    a.set_xlabel("round")
    a.set_ylabel("ms per challenge (guest time)")
    a.set_title("3.5: challenge-response through the agent", fontsize=9)
    a.grid(alpha=0.3)
    a = axes[0][1]
    t0 = events[0][0] if events else 0
    q = [kv(line) for line in life if line.startswith("attach query ")]
    ok = [(int(f["t_us"]) - t0) / 1e6 for f in q if f["answered"] == "1"]
    bad = [(int(f["t_us"]) - t0) / 1e6 for f in q if f["answered"] != "1"]
    a.scatter(ok, [1] * len(ok), marker="o", color="tab:green", s=14, label=f"answered ({len(ok)})")
    a.scatter(bad, [0] * len(bad), marker="x", color="tab:red", s=18, label=f"dropped ({len(bad)})")
    for t, text in events:
        if "attach" in text or "revoked" in text:
            a.axvline((t - t0) / 1e6, color="grey", ls=":", lw=0.8)
            a.annotate("attach" if "attach" in text else "revoke", ((t - t0) / 1e6, 1.25), fontsize=8)
    a.set_ylim(-0.5, 1.4)
    a.set_yticks([0, 1], ["dropped", "answered"])
    a.set_xlabel("seconds (guest time)")
    a.set_title(f"5.5: immediate attach, one query every {sizes['L45_LIFE_INTERVAL_MS']} ms", fontsize=9)
    a.legend(fontsize=7, loc="center right")
    a = axes[1][0]
    fl = {m.group(1): int(m.group(2)) / 1e6 for m in
          (re.match(r"flow (\w+) rc=0 us=(\d+)", line) for line in life) if m}
    names = [("inactive", "5.6 deactivated"), ("active", "5.6 activated"), ("h1", "5.7 H1"), ("h2", "5.7 H2")]
    a.bar([label for _, label in names], [fl.get(n, 0) for n, _ in names],
          color=["tab:grey", "tab:orange", "tab:orange", "tab:grey"])
    a.set_yscale("log")
    a.set_ylabel("seconds (guest time, log)")
    a.set_title(f"5.6: {sizes['L45_LIFE_ACT_BYTES'] / 1e6:g} MB, 100 ms/send rate limit; "
                f"5.7: {sizes['L45_LIFE_TCP_BYTES'] / 1e6:g} MB, stream tag", fontsize=9)
    a.grid(axis="y", alpha=0.3)
    a = axes[1][1]
    data = [[r[2] for r in https if r[0] == cfg and r[3]] for cfg in CONFIGS]
    a.boxplot(data, showmeans=True)
    a.set_xticks(range(1, len(CONFIGS) + 1), CONFIGS)
    a.set_ylabel("seconds (guest time)")
    a.set_title(f"4.5/4.6: HTTPS, {sizes['L45_LIFE_TLS_BYTES'] / 1e6:g} MB, openssl", fontsize=9)
    a.grid(alpha=0.3)
    fig.suptitle(f"Kernel tap in the qemu VM (TCG, qemu -icount guest time) ({out.mode})", fontsize=10)
    fig.tight_layout()
    out.plot(fig)


if __name__ == "__main__":
    main()
