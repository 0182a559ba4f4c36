#!/usr/bin/env python3
"""Figure 3.5: the NCO's challenge-response security check. The NCO (with
its SQLite CIB) registers the server host's device, deploys a DNS front-tag
module (the NCO makes a fresh 256-bit key for it), then runs 20 rounds of
`l45-nco security-check` (AES-256-GCM: a fresh random challenge and nonce
from the NCO, the module's answer under a fresh nonce, carrying the
challenge and the module id). Each round's time is the whole command: NCO
start, SSH session to the device, the challenge RPC, verification, the
CIB update. Then a module whose key the device does not hold (its entry
rewritten on the device behind the NCO's back) must fail and be revoked.
Writes challenge.csv (round, seconds, passed, detail) and challenge.png
(latency per round and its distribution)."""
import base64
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import l45exp as x  # noqa: E402


def main():
    args = x.parse_args(__doc__)
    rounds = x.pick(args, 20, 20, 3)
    out = x.Output("challenge", args)
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        dev = None
        try:
            dev = x.TapAgent(work / "device")
            rows, tamper = run(dev, work, rounds)
        finally:
            if dev:
                dev.stop()
    out.csv(["round", "seconds", "passed", "detail"], rows)
    secs = [r[1] for r in rows]
    out.figure("rounds", len(rows))
    out.figure("passed", sum(r[2] for r in rows))
    out.figure("median s", round(x.median(secs), 4))
    out.figure("min s", round(min(secs), 4))
    out.figure("max s", round(max(secs), 4))
    out.figure("tampered key", tamper)
    plt = x.pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5), gridspec_kw={"width_ratios": [2, 1]})
    a.plot([r[0] for r in rows], [s * 1000 for s in secs], "o-", ms=4)
    a.set_xlabel("round")
    a.set_ylabel("ms per security-check")
    a.set_title(f"{len(rows)} challenge-response rounds, all passed: {all(r[2] for r in rows)} ({out.mode})")
    a.grid(alpha=0.3)
    b.boxplot([[s * 1000 for s in secs]], tick_labels=["security-check"], showmeans=True)
    b.set_ylabel("ms")
    b.grid(axis="y", alpha=0.3)
    out.plot(fig)
    out.done()


def nco(env, *args):
    p = subprocess.run([x.NCO, "--json", *map(str, args)], env=env, capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def run(dev, work, rounds):
    env = {**os.environ, "L45_CIB": str(work / "cib.sqlite")}
    rc, o, e = nco(env, "devices", "add", "dns1", "--address", f"{dev.host}:{dev.port}", "--key", dev.key,
                   "--role", "server")
    assert rc == 0, e
    rc, o, e = nco(env, "modules", "deploy", "--device", "dns1", "--name", "m1", "--kind", "dns-front-tag",
                   "--param", "tag=XTAGXdig", "--priority", "10", "--protocol", "udp", "--src-port", "53", "--report")
    assert rc == 0, e
    rows = []
    for r in range(1, rounds + 1):
        t0 = time.perf_counter()
        rc, o, e = nco(env, "security-check")
        dt = time.perf_counter() - t0
        res = json.loads(o) if o.strip() else []
        passed = rc == 0 and len(res) == 1 and res[0]["passed"]
        rows.append((r, round(dt, 5), int(passed), res[0]["detail"] if res else e.strip()[-200:]))
        print(f"round {r}: {dt * 1000:.1f} ms passed={passed}", flush=True)
    # The device's copy of the key replaced behind the NCO's back: the next
    # check must fail and the NCO must revoke the module.
    state, _ = dev.state()
    mid = next(iter(state))
    dev.nc.edit_config(target="running", config=(
        f'<config xmlns="{x.taplab.BASE}"><customizations xmlns="{x.taplab.NS}"><module><id>{mid}</id>'
        f"<security><key>{base64.b64encode(b'A' * 32).decode()}</key></security></module></customizations></config>"))
    rc, o, e = nco(env, "security-check")
    res = json.loads(o) if o.strip() else []
    left, _ = dev.state()
    tamper = {"exit": rc, "passed": bool(res and res[0]["passed"]), "detail": res[0]["detail"] if res else e[-200:],
              "module still on the device": mid in left}
    return rows, tamper


if __name__ == "__main__":
    main()
