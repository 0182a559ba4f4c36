"""The README is executable: every command of its ```sh blocks runs as
written, in order, as one shell session would run them (background `&`
commands stay up until the end), on loopback — except the two main
commands, tools/lab.sh (tests/lab runs it) and tools/test.sh (the suite
itself).

The commands are relative to the repository root (`target/release/…`,
`.venv/bin/…`). They run in a scratch directory holding symlinks to the
repository's `target` and `.venv`, so what they generate (`nco_key`, the
CIB) lands there, not in the repository; `cargo` lines run in the
repository (they write only under target/). Every background process is
started in its own process group and stopped by the test, by that group;
nothing else on the machine is touched. A port or the default tap control
file the README uses that is busy fails the test with a message instead."""
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAIN_COMMANDS = ("tools/lab.sh", "tools/test.sh")
TAP_SHM = pathlib.Path("/dev/shm/l45-tap")     # the agent's default --tap-shm
PORT = re.compile(r"(?:127\.0\.0\.1:|http\.server )(\d+)")
STATE_DIR = re.compile(r"--state-dir (\S+)")
GENERATED = ("nco_key", "nco_key.pub", "l45-cib.sqlite")    # what the commands write into their directory


def strip_comment(line):
    """The line without a trailing shell comment (a # outside quotes that
    starts a word)."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def readme_commands():
    """The commands of every ```sh block, in order: continuation lines
    joined, comments dropped."""
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", README.read_text(), re.S | re.M):
        pending = ""
        for raw in block.splitlines():
            line = strip_comment(raw)
            if line.endswith("\\"):
                pending += line[:-1].rstrip() + " "
                continue
            line = (pending + line.strip()).strip()
            pending = ""
            if line:
                commands.append(line)
    return commands


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def mapped_by():
    """Processes that have the default tap control file mapped."""
    users = []
    for maps in pathlib.Path("/proc").glob("[0-9]*/maps"):
        try:
            if f" {TAP_SHM}\n" in maps.read_text():
                users.append(maps.parent.name)
        except OSError:
            pass
    return users


class Session:
    """The README's shell session: foreground commands run to completion,
    background ones are kept (each its own process group) until stop()."""

    def __init__(self, scratch):
        self.scratch = scratch
        self.env = {k: v for k, v in os.environ.items() if k not in ("L45_CIB", "L45_TAP_SHM", "LD_PRELOAD")}
        self.env["PWD"] = str(scratch)
        self.background = []

    def run(self, command):
        cwd = ROOT if command.startswith("cargo ") else self.scratch
        p = subprocess.run(["bash", "-c", command], cwd=cwd, env={**self.env, "PWD": str(cwd)},
                           capture_output=True, text=True, timeout=1800 if command.startswith("cargo ") else 120)
        assert p.returncode == 0, f"{command}\nexit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        return p.stdout

    def start(self, command):
        n = len(self.background)
        out = open(self.scratch / f"background-{n}.log", "wb")
        p = subprocess.Popen(["bash", "-c", command], cwd=self.scratch, env=self.env, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.background.append((command, p, out))
        ports = [int(x) for x in PORT.findall(command)]
        deadline = time.monotonic() + 30
        while not all(port_open(x) for x in ports):
            if p.poll() is not None or time.monotonic() > deadline:
                log = (self.scratch / f"background-{n}.log").read_text(errors="replace")
                pytest.fail(f"{command}\ndid not come up on {ports} (exit {p.poll()}):\n{log[-3000:]}")
            time.sleep(0.05)
        return p

    def stop(self):
        for _, p, out in reversed(self.background):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
            out.close()


def check(command, out, session):
    """What a command must show, beyond exiting 0 (foreground) or coming
    up on its port (background). Returns the name of the check made."""
    scratch = session.scratch
    if command.startswith("ssh-keygen"):
        assert (scratch / "nco_key").is_file() and (scratch / "nco_key.pub").is_file()
        return "key"
    if "netconf-console2" in command and "--get-config" in command:
        assert "<data" in out and "</data>" in out, out
        return "get-config"
    if "l45-nco devices add dev1" in command:
        assert (scratch / "l45-cib.sqlite").is_file(), "the CIB is not in the working directory"
        return "devices add"
    if "l45-nco modules deploy" in command:
        assert "confirmed" in out, out
        return "deploy"
    if command.endswith("l45-nco status"):
        header, *rows = out.splitlines()
        status = {row.split()[0]: dict(zip(re.split(r"\s{2,}", header.strip()), row.split())) for row in rows}
        assert status.get("dev1", {}).get("DEPLOYED") == "1" and status["dev1"].get("FAILED") == "0", out
        return "status"
    if "http.server" in command:
        _, p, _ = session.background[-1]
        maps = "".join(pathlib.Path(f"/proc/{c}/maps").read_text() for c in [p.pid, *children(p.pid)])
        assert "libl45tap.so" in maps, "http.server runs without the tap library"
        return "tapped server"
    if "curl" in command:
        assert "<html" in out.lower(), out
        return "curl through the tap"
    return None


def children(pid):
    try:
        return [int(c) for c in pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def test_readme_commands_run_as_written():
    commands = readme_commands()
    for main in MAIN_COMMANDS:
        assert sum(c.split()[0] == main for c in commands) == 1, f"{main} is not in the README once"
    commands = [c for c in commands if c.split()[0] not in MAIN_COMMANDS]
    before = {p for p in GENERATED if (ROOT / p).exists()}

    busy = [x for x in sorted({int(x) for c in commands for x in PORT.findall(c)}) if not port_free(x)]
    assert not busy, f"ports the README uses are in use on this machine: {busy}; free them to run this test"
    users = mapped_by()
    assert not users, f"{TAP_SHM} (the README's tap control file) is in use by pids {users}"
    created = [p for p in [TAP_SHM, *(pathlib.Path(m) for c in commands for m in STATE_DIR.findall(c))]
               if not p.exists()]

    with tempfile.TemporaryDirectory(prefix="l45-readme-") as tmp:
        scratch = pathlib.Path(tmp)
        for name in ("target", ".venv"):
            (scratch / name).symlink_to(ROOT / name)
        session = Session(scratch)
        checked = []
        try:
            for command in commands:
                if command.endswith("&"):
                    session.start(command[:-1].rstrip())
                    out = ""
                else:
                    out = session.run(command)
                checked.append(check(command, out, session))
        finally:
            session.stop()
            for path in created:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                elif path.exists():
                    path.unlink()
    assert all(p.poll() is not None for _, p, _ in session.background)
    for name in ("key", "get-config", "devices add", "deploy", "status", "tapped server", "curl through the tap"):
        assert name in checked, f"the README no longer has the command checked as {name!r}"
    left = [p for p in GENERATED if (ROOT / p).exists() and p not in before]
    assert not left, f"files left in the repository: {left}"
