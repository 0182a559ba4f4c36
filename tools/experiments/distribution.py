#!/usr/bin/env python3
"""Figure 3.1: time for the NCO to distribute one new module to 10, 50,
100, 175 and 250 devices, 15 rounds each. As in the dissertation the
devices are emulated on one machine: one `l45-agent --emulate N --tap
recording` process serves N NETCONF devices on loopback (each its own
SSH listener, datastores and recording tap; no real tap registration,
which the dissertation simulated too). A round is one `l45-nco modules
deploy --report` to all N devices with a fresh CIB, timed until the
command returns with the CIB showing the module registered on every
device (tools/bench_nco.py's `run_one`).

What is sent: the NCO has no module images yet (no 600 KB binary): each
device gets one edit-config with the module entry (kind dns-front-tag,
its parameters, match, priority and a fresh 256-bit key; well under 1 KB)
followed by a report RPC. Writes distribution.csv and distribution.png."""
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import l45exp as x  # noqa: E402

sys.path.insert(0, str(x.ROOT / "tools"))
import bench_nco  # noqa: E402


def main():
    args = x.parse_args(__doc__)
    counts = x.pick(args, [10, 50, 100, 175, 250], [10, 50, 100, 175, 250], [10])
    rounds = x.pick(args, 15, 3, 1)
    out = x.Output("distribution", args)
    rows = []
    for n in counts:
        for r in range(rounds):
            with tempfile.TemporaryDirectory() as tmp:
                t = bench_nco.run_one(n, pathlib.Path(tmp))
            rows.append((n, r, round(t, 5)))
        ts = [t for m, _, t in rows if m == n]
        print(f"{n:4} devices: mean {x.mean(ts):.3f} s over {rounds} rounds", flush=True)
        out.figure(f"{n} devices mean s", round(x.mean(ts), 3))
    out.csv(["devices", "round", "seconds"], rows)
    out.figure("rounds", rounds)
    plt = x.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    data = [[t for m, _, t in rows if m == n] for n in counts]
    ax.boxplot(data, positions=range(len(counts)), tick_labels=[str(n) for n in counts], showmeans=True)
    for i, d in enumerate(data):
        ax.annotate(f"{x.mean(d):.2f}", (i, x.mean(d)), color="green", fontsize=8, xytext=(8, 0),
                    textcoords="offset points")
    ax.set_xlabel("devices")
    ax.set_ylabel("seconds to deploy and confirm")
    ax.set_title(f"NCO distribution of one module, {rounds} rounds ({out.mode})")
    ax.grid(axis="y", alpha=0.3)
    out.plot(fig)
    out.done()


if __name__ == "__main__":
    main()
