#!/usr/bin/env python3
"""Size and time of one scrape of `l45-agent --metrics` with N modules
(recording tap), for the cardinality figures in docs/service.md:

    L45_AGENT=target/release/l45-agent .venv/bin/python tools/bench_metrics.py 1000:1000 10000:10000 100000:1000

Each argument is MODULES:LIMIT (`--metrics-module-limit`). The agent is
started and stopped here; the modules are written in one edit-config."""
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from ncclient import manager

AGENT = os.environ.get("L45_AGENT", "target/release/l45-agent")
NS = "urn:layer45:params:xml:ns:yang:layer45-customization"
BASE = "urn:ietf:params:xml:ns:netconf:base:1.0"


def scrape(addr):
    with socket.create_connection(addr, timeout=60) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        out = b""
        while chunk := s.recv(1 << 20):
            out += chunk
    return out


def run(n, limit):
    d = tempfile.mkdtemp()
    p = None
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{d}/key"], check=True)
        p = subprocess.Popen(
            [AGENT, "--listen", "127.0.0.1:0", "--state-dir", f"{d}/state",
             "--authorized-keys", f"admin:{d}/key.pub", "--metrics", "127.0.0.1:0",
             "--metrics-module-limit", str(limit)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        host, port = p.stdout.readline().split()[-1].rsplit(":", 1)
        netconf_port = int(p.stdout.readline().split()[3].rsplit(":", 1)[1])
        m = manager.connect(host="127.0.0.1", port=netconf_port, username="admin",
                            key_filename=f"{d}/key", hostkey_verify=False, allow_agent=False,
                            look_for_keys=False, timeout=600)
        mods = "".join(f"<module><id>{i}</id><name>m{i}</name><kind>l45:dns-front-tag</kind></module>"
                       for i in range(1, n + 1))
        m.edit_config(target="running", config=(
            f'<config xmlns="{BASE}"><customizations xmlns="{NS}" xmlns:l45="{NS}">'
            f"{mods}</customizations></config>"))
        times, page = [], b""
        for _ in range(5):
            t = time.perf_counter()
            page = scrape((host, int(port)))
            times.append(time.perf_counter() - t)
        m.close_session()
        print(f"modules={n} limit={limit} page_bytes={len(page)} "
              f"scrape_ms_median={statistics.median(times) * 1e3:.1f} min={min(times) * 1e3:.1f}")
    finally:
        if p:
            p.terminate()
            p.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["1000:1000"]:
        n, limit = map(int, arg.split(":"))
        run(n, limit)
