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
import shutil
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


def run_script(name, *args, timeout=600):
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "experiments" / f"{name}.py"), *args],
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]


def test_gateway_dropping_udp53_fails_every_scheme_and_passes_on_5353_and_tcp(tmp_path):
    """Table 5.1's Hawaii row: a real nftables drop rule on the middlebox."""
    run_script("middlebox_dns", "--smoke", "--box", "gateway", "--out", str(tmp_path))
    (row,) = rows(tmp_path / "middlebox_dns.csv")
    assert row["middlebox"] == "gateway dropping UDP/53"
    assert [row[s] for s in ("base", "front", "middle", "end", "compress")] == ["FAIL"] * 5, row
    checks = {r["check"]: r["result"] for r in rows(tmp_path / "middlebox_dns-gateway.csv")}
    assert checks["UDP queries to port 53 that reached the server (capture on its link)"] == "0"
    # what the firewall counted: every query dig sent to port 53 (2 per scheme) and the size probe
    dropped = [v for k, v in checks.items() if k.startswith("UDP/53 datagrams the gateway's drop rule counted")]
    assert dropped[0] == dropped[1] and int(dropped[0]) >= 5 * 2, checks
    for scheme in ("base", "front", "middle", "end", "compress"):
        assert checks[f"{scheme} scheme, dnsmasq on port 5353"] == "PASS", checks
    assert checks["base queries over TCP to port 53 answered"] == "2 of 2", checks


def test_rotation_under_impairment_with_overlap_loses_nothing_to_the_rotation(tmp_path):
    """rotation_two --impair: the impairing bridge really delays, reorders
    and drops, and with --overlap every query that reached the server was
    answered by it (failures, if any, are the link's loss)."""
    run_script("rotation_two", "--smoke", "--impair", "--overlap", "2s", "--out", str(tmp_path))
    summary = json.loads((tmp_path / "rotation_two_impaired.json").read_text())
    frames = summary["figures"]["overlap 2s: impairment frames"]
    assert frames["frames"] > 20 and frames["delayed"] > 0 and frames["reordered"] > 0, frames
    assert frames["sent"] + frames["dropped"] <= frames["frames"], frames  # (frames held at the end are not sent)
    queries = rows(tmp_path / "rotation_two_impaired.csv")
    assert len(queries) > 10
    reached_unanswered = [q for q in queries if q["form on the wire"] != "not seen" and q["server replied"] == "0"]
    assert not reached_unanswered, reached_unanswered
    # the rotation happened: queries arrived under both modules
    forms = {q["form on the wire"] for q in queries}
    assert {"front tag (M1)", "compression (M2)"} <= forms, forms


def test_distribution_pushes_a_signed_600_kib_image_to_every_emulated_device(tmp_path):
    """Figure 3.1's round: a real image built and signed by the NCO,
    installed through `images push` on every emulated device (run_one
    checks the CIB's install rows and every device's image store)."""
    run_script("distribution", "--smoke", "--out", str(tmp_path))
    (row,) = rows(tmp_path / "distribution.csv")
    assert int(row["devices"]) == 3
    assert int(row["image bytes"]) >= 600 * 1024, row
    assert 0.0 < float(row["seconds"]) < 60, row
    summary = json.loads((tmp_path / "distribution.json").read_text())
    assert summary["mode"] == "smoke" and summary["host load"]["end"]["cpus"] >= 1, summary
@pytest.mark.skipif(not shutil.which("qemu-system-x86_64"), reason="kmod/vm-test.sh needs qemu")
def test_kernel_lifecycle_in_the_vm_attaches_activates_and_deprecates(tmp_path):
    """kernel_lifecycle.py --smoke: one boot of the kernel-tap VM
    (kmod/vm/experiments-lifecycle.sh). The module attached immediately to
    dnsmasq's live socket drops the queries, and only while attached; the
    activated rate limit delays the download; after the deprecation only
    the flow connected before it is tagged; challenges through the agent
    pass and the wrong key fails; HTTPS through the stream tag arrives
    intact."""
    run_script("kernel_lifecycle", "--smoke", "--out", str(tmp_path), timeout=1800)
    f = json.loads((tmp_path / "kernel_lifecycle.json").read_text())["figures"]
    assert f["problems reported in the VM"] == "none", f
    assert f["challenge passed"] == f["challenge rounds"] == 3, f
    assert f["challenge under a wrong key"] == "passed=0, rpc-error in the reply: True", f
    queries = rows(tmp_path / "kernel_lifecycle-attach.csv")
    events = {r["event"]: float(r["t_s"]) for r in rows(tmp_path / "kernel_lifecycle-events.csv")}
    attach = next(t for e, t in events.items() if "attach immediate" in e)
    revoke = events["module revoked"]
    before = [q["answered"] for q in queries if float(q["t_s"]) < attach]
    during = [q["answered"] for q in queries if attach + 0.05 < float(q["t_s"]) < revoke]
    after = [q["answered"] for q in queries if float(q["t_s"]) > revoke]
    assert before and during and after, queries
    assert set(before) == {"1"} and set(during) == {"0"} and set(after) == {"1"}, queries
    # 100000 bytes in 16 KiB sends: 7 sends, each delayed 100 ms once activated
    assert f["activate: download, module deactivated s"] < 0.3, f
    assert f["activate: download, module activated s"] >= 0.6, f
    assert f["deprecate: H1 (connected before the deprecation) intact"], f
    assert f["deprecate: H2 (connected after) intact"], f
    assert f["deprecate: only H1 customized"] is True, f
    for cfg in ("unloaded", "tapped", "tagged"):
        assert f[f"https {cfg} intact"] == "1 of 1", f
