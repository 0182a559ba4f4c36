#!/usr/bin/env python3
"""Call-home benchmark (RFC 8071): N emulated devices (`l45-agent --emulate
N --call-home`, one process, each with its own host key and one-time
enrollment token) call one `l45-nco serve`. Measures

  check-in: the N devices are up and calling (retrying at most every
            second) before serve starts; from serve's start until the CIB
            holds N enrolled devices with their check-in data (an NCO
            restart with the whole fleet calling back);
  deploy:   one `l45-nco modules deploy --report` of one module to all N,
            carried out through serve's relay on the devices' own
            connections, until the CIB shows it registered everywhere;
  queued:   one `modules deploy --no-wait` to all N carried out by serve
            itself, until the CIB shows every request confirmed.

Usage: .venv/bin/python tools/bench_callhome.py [N]   (default 1000)
Needs target/release/l45-agent and l45-nco (cargo build --release).
"""
import os
import pathlib
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
AGENT = os.environ.get("L45_AGENT", str(ROOT / "target" / "release" / "l45-agent"))
NCO = os.environ.get("L45_NCO", str(ROOT / "target" / "release" / "l45-nco"))


def count(cib, sql):
    try:
        with sqlite3.connect(cib, timeout=10) as db:
            return db.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def wait_count(cib, sql, n, limit, what):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if count(cib, sql) >= n:
            return
        time.sleep(0.02)
    raise SystemExit(f"timed out: {what}: {count(cib, sql)} of {n}")


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    work = pathlib.Path(tempfile.mkdtemp(prefix="l45-bench-callhome-"))
    key = work / "nco_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    cib = work / "cib.sqlite"
    env = {**os.environ, "L45_CIB": str(cib)}
    names = [f"dev-{i:04}" for i in range(1, n + 1)]
    tokens = []
    for name in names:
        p = subprocess.run([NCO, "devices", "enroll", name], env=env, check=True,
                           capture_output=True, text=True)
        tokens.append(p.stdout.strip())
    token_file = work / "tokens"
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, ("\n".join(tokens) + "\n").encode())
    os.close(fd)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    addr = f"127.0.0.1:{probe.getsockname()[1]}"
    probe.close()
    serve_log = open(work / "serve.log", "wb")
    serve = None
    t0 = time.perf_counter()
    emu = subprocess.Popen([AGENT, "--listen", "127.0.0.1:0", "--state-dir", str(work / "state"),
                            "--authorized-keys", f"admin:{key}.pub", "--emulate", str(n),
                            "--call-home", addr, "--call-home-max-backoff", "1",
                            "--enrollment-token-file", str(token_file)],
                           stdout=subprocess.PIPE, stderr=open(work / "emulator.log", "wb"), text=True)
    try:
        for _ in range(n):
            assert "listening on" in emu.stdout.readline()
        print(f"{n} emulated devices started in {time.perf_counter() - t0:.2f} s, calling {addr}")
        t0 = time.perf_counter()
        serve = subprocess.Popen([NCO, "serve", "--call-home-listen", addr, "--call-home-key", str(key),
                                  "--state-req-window", "3600", "--sec-check-window", "3600"],
                                 env=env, stdout=serve_log, stderr=subprocess.PIPE, text=True)
        line = serve.stderr.readline()
        assert "call home on" in line, line
        subprocess.Popen(["cat"], stdin=serve.stderr, stdout=serve_log)
        wait_count(cib, "SELECT count(*) FROM device_data", n, 120, "check-ins")
        checked_in = time.perf_counter() - t0
        print(f"all {n} checked in {checked_in:.2f} s after serve started")
        args = [NCO, "--json", "modules", "deploy", "--name", "tag", "--kind", "dns-front-tag", "--report"]
        for name in names:
            args += ["--device", name]
        t1 = time.perf_counter()
        p = subprocess.run(args, env=env, capture_output=True, text=True)
        deploy = time.perf_counter() - t1
        if p.returncode != 0:
            raise SystemExit(f"deploy failed: {p.stderr[-2000:]}")
        registered = count(cib, "SELECT count(*) FROM deployment WHERE state IN ('registered', 'active')")
        assert registered == n, f"{registered} of {n} registered"
        print(f"one deploy to all {n} through serve's relay: {deploy:.2f} s")
        args = [NCO, "--json", "modules", "deploy", "--name", "tag2", "--kind", "stream-tag", "--no-wait"]
        for name in names:
            args += ["--device", name]
        t2 = time.perf_counter()
        subprocess.run(args, env=env, check=True, capture_output=True)
        wait_count(cib, "SELECT count(*) FROM request r JOIN module m ON m.id = r.module_row "
                   "WHERE m.name = 'tag2' AND r.state = 'confirmed'", n, 120, "queued deploy")
        queued = time.perf_counter() - t2
        print(f"one deploy to all {n} queued and carried out by serve: {queued:.2f} s")
    finally:
        emu.terminate()
        emu.wait()
        if serve:
            serve.terminate()
            serve.wait()


if __name__ == "__main__":
    main()
