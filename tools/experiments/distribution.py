#!/usr/bin/env python3
"""Figure 3.1: time for the NCO to distribute one new 600 KB customization
module to 10, 50, 100, 175 and 250 devices, 15 rounds each.

The module is a real module image: the test kind crate
(tests/fixtures/kind-crate) built by `l45-nco images build` into an ELF
shared object padded to 600 KiB and signed with the NCO's Ed25519 key
(tools/bench_images.py's `build_image`), built once per run, as the
dissertation built its module before the rounds ("prior to distribution
testing, the customization module was constructed … and stored in the
CIB").

As in the dissertation the devices are emulated on one machine: one
`l45-agent --emulate N --tap recording` process serves N NETCONF devices on
loopback, each with its own SSH listener, datastores, image store and
recording tap, trusting the NCO's key. A round is one `l45-nco images push
IMAGE --all` with a fresh CIB (the N devices registered, untimed), timed
from the command's start to its exit: every device got `install-module`
with the image, checked its size, SHA-256 and signature, stored it and
loaded it into its tap, and the NCO recorded every install in the CIB
(bench_images.run_one checks the CIB's rows and the devices' stores).
The dissertation simulated the devices' registration; here every
emulated device verifies and stores the real image, but its recording tap
does not map it into an application.

Writes distribution.csv (one row per round) and distribution.png."""
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import l45exp as x  # noqa: E402  (sets L45_AGENT / L45_NCO before bench_images reads them)

sys.path.insert(0, str(x.ROOT / "tools"))
import bench_images  # noqa: E402

IMAGE_KIB = 600


def main():
    args = x.parse_args(__doc__)
    counts = x.pick(args, [10, 50, 100, 175, 250], [10, 50, 100, 175, 250], [3])
    rounds = x.pick(args, 15, 3, 1)
    out = x.Output("distribution", args)
    with tempfile.TemporaryDirectory() as top:
        top = pathlib.Path(top)
        rows, image_bytes = run(top, counts, rounds)
    out.csv(["devices", "round", "seconds", "ms per device", "agent CPU s", "NCO CPU s", "image bytes"], rows)
    report(out, rows, counts, rounds, image_bytes)
    out.done()


def run(top, counts, rounds):
    """Builds and signs the image once, then times `rounds` pushes to each
    number of devices; returns (rows, image size in bytes)."""
    (top / "build").mkdir()
    build_env = {**x.os.environ, "L45_CIB": str(top / "build" / "cib.sqlite")}
    image, size = bench_images.build_image(top / "build", IMAGE_KIB, build_env)
    # The signing key's secret stays in memory; every round's fresh CIB
    # gets it in a file created owner-only.
    secret = pathlib.Path(build_env["L45_CIB"] + ".image-key").read_bytes()
    public = bench_images.public_key(build_env)
    print(f"image {image}: {size} bytes, signed by {public}", flush=True)
    rows = []
    for n in counts:
        for r in range(rounds):
            work = top / f"n{n}-r{r}"
            work.mkdir()
            env = {**x.os.environ, "L45_CIB": str(work / "cib.sqlite")}
            bench_images.reuse_signing_key(env, secret)
            t, agent_cpu, nco_cpu = bench_images.run_one(n, work, image, public, env)
            rows.append((n, r, round(t, 5), round(1000 * t / n, 3), round(agent_cpu, 3), round(nco_cpu, 3), size))
            print(f"{n:4} devices, round {r + 1}/{rounds}: {t:.3f} s", flush=True)
    return rows, size


def report(out, rows, counts, rounds, image_bytes):
    out.figure("image bytes", image_bytes)
    out.figure("rounds", rounds)
    by = {n: [r[2] for r in rows if r[0] == n] for n in counts}
    for n in counts:
        out.figure(f"{n} devices mean s", round(x.mean(by[n]), 3))
        out.figure(f"{n} devices median s", round(x.median(by[n]), 3))
        out.figure(f"{n} devices ms per device", round(1000 * x.mean(by[n]) / n, 2))
        # CPU time moves far less with the shared host's load than wall time
        cpu = [r[4] + r[5] for r in rows if r[0] == n]
        out.figure(f"{n} devices CPU ms per device (agent + NCO)", round(1000 * x.mean(cpu) / n, 2))
    if len(counts) > 1:
        # least-squares line through every round: seconds = a + b × devices
        pts = [(r[0], r[2]) for r in rows]
        mx = x.mean([p[0] for p in pts])
        my = x.mean([p[1] for p in pts])
        b = sum((p[0] - mx) * (p[1] - my) for p in pts) / sum((p[0] - mx) ** 2 for p in pts)
        a = my - b * mx
        ss_res = sum((p[1] - (a + b * p[0])) ** 2 for p in pts)
        ss_tot = sum((p[1] - my) ** 2 for p in pts)
        out.figure("linear fit ms per device", round(1000 * b, 2))
        out.figure("linear fit intercept s", round(a, 3))
        out.figure("linear fit r squared", round(1 - ss_res / ss_tot, 3) if ss_tot else None)
        first, last = counts[0], counts[-1]
        out.figure(f"mean {last} over mean {first}", round(x.mean(by[last]) / x.mean(by[first]), 2))
    plt = x.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    data = [by[n] for n in counts]
    ax.boxplot(data, positions=range(len(counts)), tick_labels=[str(n) for n in counts], showmeans=True)
    for i, d in enumerate(data):
        ax.annotate(f"{x.mean(d):.2f}", (i, x.mean(d)), color="green", fontsize=8, xytext=(8, 0),
                    textcoords="offset points")
    ax.set_xlabel("devices")
    ax.set_ylabel("seconds to install on every device")
    ax.set_title(f"NCO: one signed {image_bytes // 1024} KiB module image to N devices, "
                 f"{rounds} rounds ({out.mode})", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    out.plot(fig)


if __name__ == "__main__":
    main()
