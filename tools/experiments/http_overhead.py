#!/usr/bin/env python3
"""Figures 3.4 / 4.5 / 4.6: overhead of the user-space tap on one long-lived
flow. One file (3 GB in the dissertation) from python http.server on the
server host to curl on the client host, over the 1 Gbit/s link, in plain
HTTP and in HTTPS (the server's TLS in Python's ssl module, curl -k).
Configurations, interleaved per trial: baseline (no LD_PRELOAD), tapped
(no module matches), stream tag (the server's tap inserts a 32-byte tag
every 1000 payload bytes, curl's tap strips them; in HTTPS the tags sit
in the TCP stream around the TLS records, and the receive-side buffering
gives TLS the records back intact). Every download is checked byte for
byte (SHA-256) against the file. Writes http_overhead.csv and
http_overhead.png (box plots, HTTP and HTTPS side by side)."""
import hashlib
import pathlib
import statistics
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import l45exp as x  # noqa: E402

CONFIGS = ("baseline", "tapped", "stream tag")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def main():
    def sizes(ap):
        ap.add_argument("--mbytes", type=int, help="file size in MiB (default: 3072 full, 100 quick)")
        ap.add_argument("--trials", type=int, help="trials (default: 15 full, 5 quick)")
    args = x.parse_args(__doc__, sizes)
    mbytes = args.mbytes or x.pick(args, 3072, 100, 4)
    trials = args.trials or x.pick(args, 15, 5, 1)
    out = x.Output("http_overhead", args)
    if args.mode == "full" and (mbytes, trials) != (3072, 15):
        # not the dissertation's sizes: the label says so
        out.mode = out.summary["mode"] = "reduced"

    def checkpoint(rows, done):
        """The outputs as of `done` finished trials, written after every
        trial: a run stopped early (hours on a shared machine) still
        leaves its figures, labelled with how many trials they hold."""
        out.csv(["trial", "protocol", "configuration", "mbytes", "seconds"], rows)
        out.figure("mbytes", mbytes)
        out.figure("trials", done)
        out.figure("trials asked", trials)
        report(out, rows, mbytes, done)
        out.summary["complete"] = done == trials
        out.done()

    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        work = pathlib.Path(tmp)
        bed = x.Testbed(work)
        servers = []
        try:
            run(bed, work, mbytes, trials, servers, checkpoint)
        finally:
            for s in servers:
                s.close()
            bed.close()


def run(bed, work, mbytes, trials, servers, checkpoint):
    www = work / "www"
    www.mkdir()
    x.random_file(www / "f", mbytes << 20)
    digest = sha256(www / "f")
    tls = x.self_signed(work)
    host = bed.addr("server")
    plan = {}
    port = 8080
    mods = {"client": [], "server": []}
    for proto in ("http", "https"):
        for name in CONFIGS:
            port += 1
            tapped = name != "baseline"
            s = x.HttpServer(www, host, port, bed.env("server") if tapped else None, bed.prefix("server"),
                             tls=tls if proto == "https" else None)
            servers.append(s)
            plan[(proto, name)] = s
            if name == "stream tag":
                mid = len(mods["server"]) + 1
                params = "<stream-tag><interval>1000</interval></stream-tag>"
                mods["server"].append(x.module(mid, "stream-tag", 10,
                                               f"<protocol>tcp</protocol><source-port>{port}</source-port>", params))
                mods["client"].append(x.module(mid, "stream-tag", 10,
                                               f"<protocol>tcp</protocol><destination-port>{port}</destination-port>"
                                               "<process-name>curl</process-name>", params))
    for role in ("client", "server"):
        bed.devices[role].edit(*mods[role])
    rows = []
    dl = work / "out"
    for trial in range(trials):
        for proto in ("http", "https"):
            k = trial % len(CONFIGS)
            for name in CONFIGS[k:] + CONFIGS[:k]:
                env = bed.env("client") if name != "baseline" else dict(x.os.environ)
                secs, size = x.curl(plan[(proto, name)].url("f"), dl, env, bed.prefix("client"))
                if size != mbytes << 20 or sha256(dl) != digest:
                    raise RuntimeError(f"{proto} {name}: the download differs from the file")
                rows.append((trial, proto, name, mbytes, round(secs, 6)))
                dl.unlink()
            print(f"trial {trial + 1}/{trials} {proto}: "
                  + ", ".join(f"{r[2]} {r[4]:.3f} s" for r in rows[-3:]), flush=True)
        # Every tagged download so far went through curl's tap's de-tagging.
        state, _ = bed.devices["client"].state()
        got = sum(int(state[m]["bytes-received"]) for m in state)
        assert got >= 2 * (trial + 1) * (mbytes << 20), f"client tap de-tagged only {got} bytes"
        checkpoint(rows, trial + 1)
    return rows


def report(out, rows, mbytes, trials):
    plt = x.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, proto in zip(axes, ("http", "https")):
        by = {c: [r[4] for r in rows if r[1] == proto and r[2] == c] for c in CONFIGS}
        base = x.mean(by["baseline"])
        for c in CONFIGS:
            out.figure(f"{proto} {c} mean s", round(x.mean(by[c]), 4))
            out.figure(f"{proto} {c} MB/s", round(mbytes * 1.048576 / x.mean(by[c]), 1))
            if c != "baseline":
                out.figure(f"{proto} {c} mean overhead %", round(100 * (x.mean(by[c]) / base - 1), 2))
                # the same trial's baseline as reference: how far single
                # trials scatter says what difference the means can resolve
                paired = [100 * (t / b - 1) for t, b in zip(by[c], by["baseline"])]
                if len(paired) > 1:
                    out.figure(f"{proto} {c} per-trial ratio sd %", round(statistics.stdev(paired), 2))
        ax.boxplot([by[c] for c in CONFIGS], tick_labels=["Linux baseline", "Layer 4.5 tap", "tap + stream tag"],
                   showmeans=True)
        ax.set_ylabel(f"seconds for {mbytes} MiB")
        ax.set_title(f"{proto.upper()}: {mbytes} MiB, {trials} trials ({out.mode})")
        ax.grid(axis="y", alpha=0.3)
    out.plot(fig)


if __name__ == "__main__":
    main()
