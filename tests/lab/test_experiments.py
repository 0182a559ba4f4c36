"""The experiment scripts (tools/experiments, docs/experiments.md) still run:
run_all.py in its smoke mode on two small experiments, into a temporary
directory, and the CSV, PNG and JSON they write are there and plausible.
The figures of a smoke run mean nothing; the committed ones come from
--quick or full runs. Needs root (network namespaces, tc, tcpdump) and the
release binaries (L45_AGENT, L45_PRELOAD, L45_DISSECTOR)."""
import csv
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
RUN_ALL = ROOT / "tools" / "experiments" / "run_all.py"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the experiments need root (namespaces, tc)")


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_smoke_run_writes_plausible_csv_png_and_json(tmp_path):
    p = subprocess.run([sys.executable, str(RUN_ALL), "--smoke", "--only", "dns_overhead", "dissector",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    for name in ("dns_overhead", "dissector"):
        png = (tmp_path / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000, name
        summary = json.loads((tmp_path / f"{name}.json").read_text())
        assert summary["mode"] == "smoke" and summary["figures"], summary

    dns = rows(tmp_path / "dns_overhead.csv")
    assert {r["configuration"] for r in dns} == {"baseline", "tapped", "front tag"}
    # every trial timed each configuration, and 50 queries take real time
    assert len(dns) == 3 * 2
    assert all(0.0 < float(r["seconds"]) < 60 for r in dns), dns

    packets = rows(tmp_path / "dissector.csv")
    queries = [r for r in packets if r["dns.flags.response"] in ("0", "False")]
    # the inverse module flags exactly the tagged program's queries, and
    # every query (tagged or not) is still decoded as DNS
    assert queries and all(bool(r["l45_app_id.name"]) == (r["sent by"] == "dig") for r in queries), queries
    assert sum(r["sent by"] == "dig" for r in queries) == 3
    assert all(r["dns.qry.name"] for r in queries)
