#!/usr/bin/env python3
"""A kind from a module image against a built-in kind, on the DNS benchmark
of tools/bench_tap.py (N sequential queries, one dig -f → dnsmasq, cache
off; interleaved trials with the order rotated; client and server on one
CPU; CPU time of both; paired ratios over the same trial's baseline).

Configurations:
  baseline     no tap
  end tag      the built-in dns-end-tag (a copy through the module on the
               client's send and the server's receive)
  xor image    the example kind udp-xor-mask loaded from its image (a copy
               and an XOR through the image's C ABI, same directions)
  xor built in the same kind's code linked into the preload library (built
               with the feature bench-builtin-xor: L45_PRELOAD_TWIN, or built
               here), its table used directly: no file read, no digest, no
               memfd, no dlopen; the same module table as "xor image"
Each tapped configuration has its own control area, written by
tap/userspace/examples/image_tap.rs (the tap's own load_kind, as the agent
calls it after install-module, without an agent and its NETCONF session
in the measured machine), with one module on every UDP socket of dig and
dnsmasq.
Before the trials, one query of each tapped configuration goes to an
untapped listener, which checks that it left customized.

Usage: .venv/bin/python tools/bench_image.py [--queries 1000] [--trials 31]
Needs the release libl45tap.so (L45_PRELOAD), and builds the image, the
built-in twin library and image_tap with cargo unless L45_KIND_IMAGE /
L45_PRELOAD_TWIN / L45_IMAGE_TAP name them.
"""
import argparse
import hashlib
import os
import pathlib
import socket
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests" / "tap"))
import bench_tap  # noqa: E402
from bench_tap import Meter, dig_run, pin, report, rotated, BENCH_CPU  # noqa: E402
from taplab import PRELOAD, Dnsmasq, free_udp_tcp_port, shm_root  # noqa: E402

TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target")))
KEY = "a55a01"
END_TAG = b"XTAGXdig"


def built_image():
    given = os.environ.get("L45_KIND_IMAGE")
    if given:
        return pathlib.Path(given)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path",
                    str(ROOT / "modules/examples/udp-xor-mask/Cargo.toml"),
                    "--target-dir", str(TARGET / "kinds")], check=True)
    return TARGET / "kinds" / "release" / "libudp_xor_mask.so"


def built_twin():
    """libl45tap.so with udp-xor-mask linked in (feature bench-builtin-xor),
    in its own target directory: it must not replace the release library."""
    given = os.environ.get("L45_PRELOAD_TWIN")
    if given:
        return given
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "l45-tap-preload",
                    "--features", "bench-builtin-xor", "--target-dir", str(TARGET / "bench-twin")],
                   check=True, cwd=ROOT)
    return str(TARGET / "bench-twin" / "release" / "libl45tap.so")


def built_image_tap():
    given = os.environ.get("L45_IMAGE_TAP")
    if given:
        return given
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "l45-tap-userspace",
                    "--example", "image_tap"], check=True, cwd=ROOT)
    return str(TARGET / "release" / "examples" / "image_tap")


class Control:
    """One control area with one module, held by an image_tap process."""

    def __init__(self, image_tap, path, *args):
        self.path = path
        self.proc = subprocess.Popen([image_tap, str(path), *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            self.stop()
            raise SystemExit(f"image_tap {args} did not start")

    def env(self, preload=PRELOAD):
        return {**os.environ, "LD_PRELOAD": preload, "L45_TAP_SHM": str(self.path)}

    def stop(self):
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)


def first_datagram(env):
    """What one dig query under `env` puts on the wire (an untapped listener)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        dig = subprocess.Popen(["dig", "@127.0.0.1", "-p", str(s.getsockname()[1]),
                                "example.test", "+tries=1", "+time=1"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            return s.recvfrom(65536)[0]
        finally:
            dig.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--trials", type=int, default=31)
    args = ap.parse_args()
    image = built_image()
    twin = built_twin()
    image_tap = built_image_tap()
    with tempfile.TemporaryDirectory(dir=shm_root()) as tmp:
        work = pathlib.Path(tmp)
        os.chmod(work, 0o755)  # mkdtemp's 0700 would hide `shared` from dnsmasq's user
        state = work / "state"
        state.mkdir(mode=0o700)
        stored = state / "udp-xor-mask.so"
        fd = os.open(stored, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(image.read_bytes())
        sha = hashlib.sha256(stored.read_bytes()).hexdigest()
        # dnsmasq drops to its own user before its first query: the control
        # areas and the published image go where every user can read them.
        shared = work / "shared"
        shared.mkdir(mode=0o755)
        end = Control(image_tap, shared / "end-tap", "dns-end-tag")
        xor = Control(image_tap, shared / "xor-tap", "--image", str(stored), "udp-xor-mask", sha,
                      "udp-xor-mask", f"key={KEY}")
        try:
            assert first_datagram(end.env()).endswith(END_TAG), "end tag not applied"
            assert first_datagram(xor.env()).startswith(b"L45x"), "xor image not applied"
            for preload in (PRELOAD, twin):
                sent = first_datagram(xor.env(preload))
                assert sent.startswith(b"L45x"), f"xor not applied by {preload}"
                key = bytes.fromhex(KEY)
                query = bytes(b ^ key[i % len(key)] for i, b in enumerate(sent[4:]))
                assert b"\x07example\x04test" in query, f"{preload} masked something else"
            pin()
            configs = [("baseline", os.environ.copy()), ("end tag", end.env()), ("xor image", xor.env()),
                       ("xor built in", xor.env(twin))]
            batch = work / "batch"
            batch.write_text("".join(f"q{i}.example.test A +tries=1 +time=2 +short\n"
                                     for i in range(args.queries)))
            results = {name: [] for name, _ in configs}
            for trial in range(args.trials):
                for name, env in rotated(configs, trial):
                    d = work / f"{name.replace(' ', '-')}-{trial}"
                    d.mkdir()
                    server = Dnsmasq(d, env=env, port=free_udp_tcp_port(), log_queries=False)
                    try:
                        os.sched_setaffinity(server.proc.pid, {BENCH_CPU})
                        dig_run(server.port, env, bench_tap.warmup(work), 1, False)
                        with Meter(server.proc.pid) as m:
                            dig_run(server.port, env, batch, args.queries, False)
                        results[name].append((m.wall, m.cpu, m.client, m.server, m.faults))
                    finally:
                        server.stop()
        finally:
            end.stop()
            xor.stop()
    report(f"DNS: {args.queries} sequential queries dig → dnsmasq, {args.trials} trials, "
           f"built-in kind vs kind from a module image", results)
    for a, b in (("xor image", "end tag"), ("xor image", "xor built in"), ("xor built in", "end tag")):
        med, lo, hi = bench_tap.median_ci(x[1] / y[1] for x, y in zip(results[a], results[b]))
        print(f"{a} / {b}, paired CPU ratio {med:.4f} [{lo:.4f}, {hi:.4f}]")


if __name__ == "__main__":
    main()
