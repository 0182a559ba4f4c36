"""The README's main command: tools/lab.sh runs the whole lab and tears it
down — also when interrupted."""
import os
import pathlib
import signal
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def leftovers():
    """Lab processes or network namespaces still around."""
    procs = subprocess.run(["pgrep", "-af", "tap.shm|dnsmasq.conf"], capture_output=True, text=True).stdout
    procs = [line for line in procs.splitlines() if "pgrep" not in line]
    spaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout if os.geteuid() == 0 else ""
    return procs, [s for s in spaces.split() if s.startswith("l45-")]


def test_lab_runs_end_to_end():
    p = subprocess.run([str(ROOT / "tools" / "lab.sh")], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = p.stdout
    assert "query on the wire: 58 54 41 47 58 64 69 67" in out          # "XTAGXdig" up front
    assert "compressed query on the wire:" in out and " a5 07 65 78 61" in out
    assert ", 0 failed during the rotation" in out
    assert out.count("answer authentic") == 2
    assert leftovers() == ([], [])


def test_lab_interrupted_tears_everything_down():
    # The demo waits mid-rotation (agents, dnsmasq and the dig loop all
    # running) until the interrupt: sent any earlier or later, it could
    # land after the demo had finished.
    p = subprocess.Popen([sys.executable, str(ROOT / "tools" / "lab_demo.py")], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, "PYTHONUNBUFFERED": "1", "L45_LAB_PAUSE_MID_ROTATION": "1"})
    seen = []
    for line in p.stdout:
        seen.append(line)
        if "paused mid-rotation" in line:
            break
    p.send_signal(signal.SIGINT)
    rest, _ = p.communicate(timeout=60)
    assert p.returncode == 130, "".join(seen) + rest
    assert "interrupted: everything stopped" in rest
    assert leftovers() == ([], [])
