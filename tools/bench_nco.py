#!/usr/bin/env python3
"""NCO deployment benchmark: deploy one module to N emulated devices
(`l45-agent --emulate N`, one process, loopback) with one
`l45-nco modules deploy --report` and time it until the CIB shows the
module registered on every device. Ratios are per-device time against the
smallest N of the same run (the goal: it does not grow with N).

Usage: .venv/bin/python tools/bench_nco.py [N ...]   (default 10 50 100 250 1000)
Needs target/release/l45-agent and l45-nco (cargo build --release).
"""
import os
import pathlib
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
AGENT = os.environ.get("L45_AGENT", str(ROOT / "target" / "release" / "l45-agent"))
NCO = os.environ.get("L45_NCO", str(ROOT / "target" / "release" / "l45-nco"))


def run_one(n, work):
    key = work / "nco_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    log = open(work / "emulator.log", "wb")
    emu = subprocess.Popen([AGENT, "--listen", "127.0.0.1:0", "--state-dir", str(work / "state"),
                            "--authorized-keys", f"admin:{key}.pub", "--emulate", str(n),
                            "--max-sessions", "8"], stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        devices = []
        for _ in range(n):
            line = emu.stdout.readline()
            assert "listening on" in line, line
            parts = line.split()
            devices.append((parts[-1], parts[3], parts[5]))
        cib = work / "cib.sqlite"
        env = {**os.environ, "L45_CIB": str(cib)}
        for name, addr, fp in devices:
            subprocess.run([NCO, "devices", "add", name, "--address", addr, "--key", str(key), "--host-key", fp],
                           env=env, check=True, stdout=subprocess.DEVNULL)
        args = [NCO, "--json", "modules", "deploy", "--name", "tag", "--kind", "dns-front-tag", "--report"]
        for name, _, _ in devices:
            args += ["--device", name]
        t0 = time.perf_counter()
        p = subprocess.run(args, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
        if p.returncode != 0:
            raise SystemExit(f"deploy failed: {p.stderr[-2000:]}")
        with sqlite3.connect(cib) as db:
            registered = db.execute(
                "SELECT count(*) FROM deployment WHERE state IN ('registered', 'active')").fetchone()[0]
        assert registered == n, f"CIB shows {registered} of {n} registered"
        return elapsed
    finally:
        emu.terminate()
        emu.wait()


def main():
    ns = [int(a) for a in sys.argv[1:]] or [10, 50, 100, 250, 1000]
    results = []
    for n in ns:
        with tempfile.TemporaryDirectory() as tmp:
            t = run_one(n, pathlib.Path(tmp))
        results.append((n, t))
        print(f"N={n:5}: {t:7.3f} s  ({1000 * t / n:6.2f} ms/device)", flush=True)
    base = results[0][1] / results[0][0]
    print(f"\n{'devices':>7} {'seconds':>8} {'ms/device':>9} {'per-device ratio':>17}")
    for n, t in results:
        print(f"{n:7} {t:8.3f} {1000 * t / n:9.2f} {(t / n) / base:17.2f}")
    print("\nprototype (dissertation): 250 devices 8.48 s, linear; goal: 250 <= 1.5 s, 1000 <= 5 s")


if __name__ == "__main__":
    main()
