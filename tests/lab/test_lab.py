"""The README's main command: tools/lab.sh runs the whole lab and tears it
down — also when interrupted.

"Torn down" is checked on the lab's own processes only: each run starts in
its own session with a unique marker in its environment, which every
process the lab starts inherits (agents, dnsmasq, dig, tcpdump, also those
under `ip netns exec`). Other l45-agents, dnsmasqs or tests on the machine
are neither counted nor touched."""
import os
import pathlib
import signal
import subprocess
import sys
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
from lab_demo import BRIDGE, SPACES  # noqa: E402

MARK = "L45_LAB_TEST_RUN"
NAMESPACES = {ns for ns, _ in SPACES.values()} | {"l45-probe"}


class Lab:
    """One lab run: its own session (so its process group and session id are
    its pid) and marker."""

    def __init__(self, args, **env):
        self.run_id = uuid.uuid4().hex
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", MARK: self.run_id, **env})

    def ours(self, pid):
        """True if the process belongs to this run: in its session, or
        carrying its marker (should anything have left the session)."""
        try:
            stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
            session = int(stat.rsplit(")", 1)[1].split()[3])
            if session == self.proc.pid:
                return True
            environ = pathlib.Path(f"/proc/{pid}/environ").read_bytes()
        except (OSError, ValueError, IndexError):
            return False    # gone, or not ours to read
        return f"{MARK}={self.run_id}".encode() in environ.split(b"\0")

    def processes(self):
        """This run's processes still alive (zombies excluded), as
        "pid command line"."""
        found = []
        for entry in pathlib.Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in (os.getpid(), self.proc.pid):
                continue
            pid = int(entry.name)
            if not self.ours(pid):
                continue
            try:
                if pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
                cmd = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue
            found.append(f"{pid} {cmd}")
        return found

    def leftovers(self):
        """This run's processes, and the lab's network namespaces and bridge,
        still around after it ended."""
        spaces, links = [], []
        if os.geteuid() == 0:
            listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
            spaces = sorted(set(listed) & NAMESPACES)
            shown = subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True, text=True)
            links = [BRIDGE] if shown.returncode == 0 else []
        return self.processes(), spaces, links

    def stop(self):
        """Stops what is left of this run (after a failure or timeout): the
        lab's process group first, then any straggler of this run, by pid."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for line in self.processes():
            try:
                os.kill(int(line.split()[0]), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_lab_runs_end_to_end():
    lab = Lab([str(ROOT / "tools" / "lab.sh")])
    try:
        out, _ = lab.proc.communicate(timeout=600)
        assert lab.proc.returncode == 0, out[-6000:]
        assert "query on the wire: 58 54 41 47 58 64 69 67" in out          # "XTAGXdig" up front
        assert "compressed query on the wire:" in out and " a5 07 65 78 61" in out
        assert ", 0 failed during the rotation" in out
        assert out.count("answer authentic") == 2
        assert lab.leftovers() == ([], [], [])
    finally:
        lab.stop()


def test_lab_interrupted_tears_everything_down():
    # The demo waits mid-rotation (agents, dnsmasq and the dig loop all
    # running) until the interrupt: sent any earlier or later, it could
    # land after the demo had finished.
    lab = Lab([sys.executable, str(ROOT / "tools" / "lab_demo.py")], L45_LAB_PAUSE_MID_ROTATION="1")
    try:
        seen = []
        for line in lab.proc.stdout:
            seen.append(line)
            if "paused mid-rotation" in line:
                break
        # While paused, the lab's processes are found as its own: the
        # check below is not vacuous.
        running = lab.processes()
        assert any("l45-agent" in p for p in running) and any("dnsmasq" in p for p in running), running
        lab.proc.send_signal(signal.SIGINT)
        rest, _ = lab.proc.communicate(timeout=60)
        assert lab.proc.returncode == 130, "".join(seen) + rest
        assert "interrupted: everything stopped" in rest
        assert lab.leftovers() == ([], [], [])
    finally:
        lab.stop()
