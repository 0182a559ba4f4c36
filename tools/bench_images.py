#!/usr/bin/env python3
"""Module-image push benchmark: a signed image of about 600 KB installed
on N emulated devices (`l45-agent --emulate N`, one process, loopback,
recording tap) with one `l45-nco images push`, timed from the command's
start to its exit (every device verified, stored and loaded the image and
the CIB recorded every install). Ratios are per-device time against the
smallest N of the same run (the goal: it does not grow with N).

The devices trust the NCO's key from their first start
(`--trusted-signer`); the image is the test kind crate
(tests/fixtures/kind-crate) built with `l45-nco images build`, padded to
the size asked with a non-loaded ELF section, so it is a real, signed
shared object.

Usage: .venv/bin/python tools/bench_images.py [--kb 600] [N ...]   (default 10 50 100 250 1000)
Needs target/release/l45-agent and l45-nco (cargo build --release -p l45-agent -p l45-nco).
"""
import argparse
import json
import os
import pathlib
import shutil
import sqlite3
import subprocess
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
AGENT = os.environ.get("L45_AGENT", str(ROOT / "target" / "release" / "l45-agent"))
NCO = os.environ.get("L45_NCO", str(ROOT / "target" / "release" / "l45-nco"))


def build_image(work, kb, env):
    """The fixture kind crate, padded with a static array so the built
    library is about `kb` KiB, built and signed by the NCO: (image path,
    its size). The unpadded library is built first to learn its size."""
    crate = work / "kind-crate"
    shutil.copytree(ROOT / "tests" / "fixtures" / "kind-crate", crate)
    lib = crate / "src" / "lib.rs"
    source = lib.read_text()

    def build():
        p = subprocess.run([NCO, "--json", "images", "build", str(crate), "--out", str(work / "out")],
                           env=env, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"images build failed:\n{p.stderr[-3000:]}")
        built = json.loads(p.stdout)[0]
        return built["path"], built["size"]

    _, base = build()
    pad = max(0, kb * 1024 - base)
    # A kept, exported table: the library grows by `pad` bytes.
    lib.write_text(source + f"\n#[no_mangle]\npub static L45_BENCH_PADDING: [u8; {pad}] = [0x5a; {pad}];\n")
    return build()


def reuse_signing_key(env, secret):
    """Gives the fresh CIB named by env["L45_CIB"] the signing key of an
    earlier one (its secret bytes), created owner-only (0600) as the NCO
    creates its own, so one signed image serves every run."""
    key_file = pathlib.Path(env["L45_CIB"] + ".image-key")
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secret)
    finally:
        os.close(fd)


def public_key(env):
    """The NCO's image-signing public key (base64) for the CIB in env."""
    p = subprocess.run([NCO, "--json", "images", "key"], env=env, check=True, capture_output=True, text=True)
    return json.loads(p.stdout)["public_key"]


def cpu_seconds(pid):
    """User + system CPU seconds of a running process."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu():
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_one(n, work, image, public_key, env):
    key = work / "nco_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    log = open(work / "emulator.log", "wb")
    emu = subprocess.Popen([AGENT, "--listen", "127.0.0.1:0", "--state-dir", str(work / "state"),
                            "--authorized-keys", f"admin:{key}.pub", "--emulate", str(n),
                            "--trusted-signer", f"nco={public_key}", "--max-sessions", "8"],
                           stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        devices = []
        for _ in range(n):
            line = emu.stdout.readline()
            assert "listening on" in line, line
            parts = line.split()
            devices.append((parts[-1], parts[3], parts[5]))
        for name, addr, fp in devices:
            subprocess.run([NCO, "devices", "add", name, "--address", addr, "--key", str(key), "--host-key", fp],
                           env=env, check=True, stdout=subprocess.DEVNULL)
        args = [NCO, "--json", "images", "push", image, "--all"]
        # CPU time as well as wall time: on a shared host the wall time
        # moves with other load, the CPU seconds spent per device much less.
        agent_cpu0 = cpu_seconds(emu.pid)
        nco_cpu0 = children_cpu()
        t0 = time.perf_counter()
        p = subprocess.run(args, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
        agent_cpu = cpu_seconds(emu.pid) - agent_cpu0
        nco_cpu = children_cpu() - nco_cpu0
        if p.returncode != 0:
            raise SystemExit(f"push failed ({p.returncode}): {p.stdout[-2000:]} {p.stderr[-2000:]}")
        outcomes = json.loads(p.stdout)
        assert len(outcomes) == n and all(o["ok"] for o in outcomes), outcomes[:3]
        with sqlite3.connect(env["L45_CIB"]) as db:
            installs = db.execute("SELECT count(*) FROM image_install").fetchone()[0]
        assert installs == n, f"CIB shows {installs} of {n} installs"
        # Every device stored it (one directory per device's state).
        stored = len(list((work / "state").glob("dev-*/images/*/meta")))
        assert stored == n, f"{stored} of {n} devices stored the image"
        return elapsed, agent_cpu, nco_cpu
    finally:
        emu.terminate()
        emu.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kb", type=int, default=600, help="image size in KiB (default 600)")
    ap.add_argument("ns", nargs="*", type=int, default=[10, 50, 100, 250, 1000])
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as top:
        top = pathlib.Path(top)
        results = []
        for n in a.ns:
            work = top / f"n{n}"
            work.mkdir()
            env = {**os.environ, "L45_CIB": str(work / "cib.sqlite")}
            if n == a.ns[0] or not (top / "image").exists():
                image, size = build_image(top, a.kb, env)
                (top / "image").write_text(image)
                key_file = pathlib.Path(str(work / "cib.sqlite") + ".image-key")
                (top / "key").write_bytes(key_file.read_bytes())
                print(f"image {image}: {size} bytes", flush=True)
            else:
                # The same signing key for every run's CIB.
                reuse_signing_key(env, (top / "key").read_bytes())
            image = (top / "image").read_text()
            public = public_key(env)
            t, agent_cpu, nco_cpu = run_one(n, work, image, public, env)
            results.append((n, t, agent_cpu, nco_cpu))
            print(f"N={n:5}: {t:7.3f} s  ({1000 * t / n:6.2f} ms/device)", flush=True)
    base = results[0][1] / results[0][0]
    print(f"\n{'devices':>7} {'seconds':>8} {'ms/device':>9} {'per-device ratio':>17}"
          f" {'agent CPU ms/dev':>17} {'NCO CPU ms/dev':>15}")
    for n, t, a, c in results:
        print(f"{n:7} {t:8.3f} {1000 * t / n:9.2f} {(t / n) / base:17.2f} {1000 * a / n:17.2f} {1000 * c / n:15.2f}")
    print("\ngoal: 250 <= 3 s, 1000 <= 10 s, per-device cost flat in N")


if __name__ == "__main__":
    main()
