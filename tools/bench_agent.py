"""Benchmark: bulk load, full get-config, small edit and memory of l45-agent,
driven by ncclient over SSH on loopback (recording tap backend).

Usage: .venv/bin/python tools/bench_agent.py [N ...]   (default 10000 100000)

Prints seconds per step and the agent's RSS (VmRSS, VmHWM from /proc).
The issue's reference server (yuma123 netconfd) is not measured yet: it
needs an OpenSSH sshd with its netconf subsystem, which this script does not
set up.
"""
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from ncclient import manager

ROOT = pathlib.Path(__file__).resolve().parents[1]
AGENT = os.environ.get("L45_AGENT", str(ROOT / "target" / "release" / "l45-agent"))
NS = "urn:layer45:params:xml:ns:yang:layer45-customization"
BASE = "urn:ietf:params:xml:ns:netconf:base:1.0"


def rss(pid):
    out = {}
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(("VmRSS", "VmHWM")):
            k, v = line.split(":")
            out[k] = int(v.split()[0]) // 1024
    return out


def load_xml(n, start=1):
    mods = "".join(f"<module><id>{i}</id><name>m{i}</name><kind>l45:dns-front-tag</kind><priority>{i % 1000}</priority></module>"
                   for i in range(start, start + n))
    return f'<config xmlns="{BASE}"><customizations xmlns="{NS}" xmlns:l45="{NS}">{mods}</customizations></config>'


def timed(f):
    t = time.perf_counter()
    r = f()
    return time.perf_counter() - t, r


def run(n):
    d = pathlib.Path(tempfile.mkdtemp())
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "k")], check=True)
    p = subprocess.Popen([AGENT, "--listen", "127.0.0.1:0", "--state-dir", str(d / "s"), "--authorized-keys", f"admin:{d}/k.pub",
                          "--max-message-size", str(512 << 20)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
    idle = rss(p.pid)
    with manager.connect(host="127.0.0.1", port=port, username="admin", key_filename=str(d / "k"), hostkey_verify=False,
                         allow_agent=False, look_for_keys=False, timeout=600) as m:
        xml = load_xml(n)
        t_load, _ = timed(lambda: m.edit_config(target="running", config=xml))
        t_get, r = timed(lambda: m.get_config("running"))
        assert r.data_xml.count("<module>") == n
        small = load_xml(1, start=n // 2)
        t_small, _ = timed(lambda: m.edit_config(target="running", config=small))
        peak = rss(p.pid)
        t_del, _ = timed(lambda: m.edit_config(target="running", config=f'<config xmlns="{BASE}"><customizations xmlns="{NS}" xmlns:nc="{BASE}" nc:operation="remove"/></config>'))
        after = rss(p.pid)
    p.terminate()
    p.wait()
    print(f"N={n:>7}: load {t_load:.3f} s, get-config {t_get:.3f} s, small edit {t_small * 1000:.1f} ms, "
          f"delete-all {t_del:.3f} s; RSS idle {idle['VmRSS']} MB, peak {peak['VmHWM']} MB, after delete {after['VmRSS']} MB")


for n in [int(a) for a in sys.argv[1:]] or [10000, 100000]:
    run(n)
