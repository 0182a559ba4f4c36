"""Benchmark: what an on-change YANG-push subscription costs l45-agent with N
module entries (recording tap), driven by ncclient over SSH on loopback.

Usage: .venv/bin/python tools/bench_push.py [N ...]   (default 100000)

For each N: loads N entries, then measures the agent's CPU time (utime +
stime from /proc) over L45_BENCH_SECONDS (default 10) seconds idle without
a subscription, then with an on-change subscription to every module's
state (sync-on-start false: no change, so nothing is sent), then the time
to the first push-update of an on-change subscription with sync-on-start
(every module's state) and of a periodic one, and the time from one edit
to its push-change-update.
"""
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

from ncclient import manager
from ncclient.xml_ import to_ele

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_agent import AGENT, BASE, NS, free_port, load_xml  # noqa: E402

SN = "urn:ietf:params:xml:ns:yang:ietf-subscribed-notifications"
YP = "urn:ietf:params:xml:ns:yang:ietf-yang-push"
DS = "urn:ietf:params:xml:ns:yang:ietf-datastores"
SECONDS = float(os.environ.get("L45_BENCH_SECONDS", "10"))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def cpu_over(pid, seconds):
    before = cpu_s(pid)
    time.sleep(seconds)  # the measured interval itself, not a synchronisation
    return (cpu_s(pid) - before) / seconds


def establish(m, trigger):
    m.dispatch(to_ele(
        f'<establish-subscription xmlns="{SN}"><datastore xmlns="{YP}" xmlns:ds="{DS}">ds:operational</datastore>'
        f'<datastore-xpath-filter xmlns="{YP}" xmlns:l45="{NS}">/l45:customizations/l45:module/l45:state'
        f'</datastore-xpath-filter>{trigger}</establish-subscription>'))


def first_notification(m, timeout=600):
    n = m.take_notification(block=True, timeout=timeout)
    assert n is not None, "no notification"
    return n.notification_xml


def run(n):
    with tempfile.TemporaryDirectory() as d:
        key = pathlib.Path(d) / "key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        port = free_port()
        proc = subprocess.Popen([AGENT, "--listen", f"127.0.0.1:{port}", "--state-dir", f"{d}/state",
                                 "--authorized-keys", f"admin:{key}.pub"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert "listening on" in proc.stdout.readline()

            def connect():
                return manager.connect(host="127.0.0.1", port=port, username="admin", key_filename=str(key),
                                       hostkey_verify=False, allow_agent=False, look_for_keys=False, timeout=600)
            with connect() as m:
                t = time.monotonic()
                m.edit_config(target="running", config=load_xml(n))
                print(f"N={n}: loaded in {time.monotonic() - t:.1f} s", flush=True)
                idle = cpu_over(proc.pid, SECONDS)
                establish(m, f'<on-change xmlns="{YP}"><sync-on-start>false</sync-on-start></on-change>')
                sub = cpu_over(proc.pid, SECONDS)
                print(f"N={n}: agent CPU idle {idle * 100:.1f} %, with an on-change subscription "
                      f"(no changes) {sub * 100:.1f} % of one core", flush=True)
                t = time.monotonic()
                m.edit_config(target="running", config=load_xml(1, start=n + 1))
                x = first_notification(m)
                assert "push-change-update" in x and f"module={n + 1}/state" in x, x[:500]
                print(f"N={n}: edit to push-change-update {(time.monotonic() - t) * 1000:.0f} ms", flush=True)
            with connect() as m:
                t = time.monotonic()
                establish(m, f'<on-change xmlns="{YP}"><sync-on-start>true</sync-on-start></on-change>')
                x = first_notification(m)
                assert "push-update" in x and len(re.findall("<socket-count>", x)) == n + 1
                print(f"N={n}: on-change sync-on-start push-update ({len(x) / 1e6:.1f} MB) after "
                      f"{time.monotonic() - t:.2f} s", flush=True)
            with connect() as m:
                t = time.monotonic()
                establish(m, f'<periodic xmlns="{YP}"><period>100</period></periodic>')
                x = first_notification(m)
                assert "push-update" in x and len(re.findall("<socket-count>", x)) == n + 1
                print(f"N={n}: first periodic push-update (1 s period) after {time.monotonic() - t:.2f} s",
                      flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main():
    for n in [int(a) for a in sys.argv[1:]] or [100000]:
        run(n)


if __name__ == "__main__":
    main()
