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
file the README uses that is busy fails the test with a message instead.

The section "Install on a host" is run as written too, but not on this
machine: `packaging/build-debs.sh` runs in the repository (it writes only
under target/), and the commands a host's root would run (apt install,
install into /etc/l45) run as root in a throwaway Debian root
(tests/packages/debroot.py, a cached debootstrap minbase), in a directory
holding copies of target/debian/*.deb and of what the earlier commands
generated (nco_key.pub). `systemctl` needs a running systemd, which these
machines lack: a systemctl line is checked to name a unit the packages
installed into that root, and tests/packages starts that unit's ExecStart
from the installed unit and /etc/l45 configuration as the unit's user and
logs in with a NETCONF client."""
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "packages"))
import debroot  # noqa: E402  (tests/packages/debroot.py)

README = ROOT / "README.md"
MAIN_COMMANDS = ("tools/lab.sh", "tools/test.sh")
TAP_SHM = pathlib.Path("/dev/shm/l45-tap")     # the agent's default --tap-shm
PORT = re.compile(r"(?:127\.0\.0\.1:|http\.server )(\d+)")
STATE_DIR = re.compile(r"--state-dir (\S+)")
GENERATED = ("nco_key", "nco_key.pub", "l45-cib.sqlite")    # what the commands write into their directory
INSTALL_SECTION = "Install on a host"   # run in a throwaway root, see above
IN_REPOSITORY = ("cargo ", "packaging/")  # commands that run in the repository
HOST_DIR = "/root/readme"                 # the commands' directory in the throwaway root


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
    """(section, command) of every command of every ```sh block, in order:
    continuation lines joined, comments dropped; section is the heading
    the block is under."""
    commands = []
    text = README.read_text()
    for m in re.finditer(r"^```sh\n(.*?)^```", text, re.S | re.M):
        headings = re.findall(r"^## (.+)$", text[:m.start()], re.M)
        section = headings[-1].strip() if headings else ""
        pending = ""
        for raw in m.group(1).splitlines():
            line = strip_comment(raw)
            if line.endswith("\\"):
                pending += line[:-1].rstrip() + " "
                continue
            line = (pending + line.strip()).strip()
            pending = ""
            if line:
                commands.append((section, line))
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
        self.host = None    # the throwaway root of the install section

    def run(self, command):
        cwd = ROOT if command.startswith(IN_REPOSITORY) else self.scratch
        p = subprocess.run(["bash", "-c", command], cwd=cwd, env={**self.env, "PWD": str(cwd)},
                           capture_output=True, text=True,
                           timeout=3600 if command.startswith(IN_REPOSITORY) else 120)
        assert p.returncode == 0, f"{command}\nexit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        return p.stdout

    def run_on_host(self, command):
        """COMMAND as root in the throwaway root, in HOST_DIR holding the
        packages and the files the session generated; a systemctl line is
        checked, not run (see the module's docstring)."""
        if self.host is None:
            if os.geteuid() != 0:
                pytest.fail("the README's install section runs in a throwaway root: run this test as root")
            self.host = debroot.extract(debroot.base_tarball(), self.scratch / "host-root")
        host_dir = self.host / HOST_DIR.lstrip("/")
        (host_dir / "target" / "debian").mkdir(parents=True, exist_ok=True)
        for deb in (ROOT / "target" / "debian").glob("*.deb"):
            shutil.copy(deb, host_dir / "target" / "debian")
        for name in GENERATED:
            if (self.scratch / name).is_file():
                shutil.copy(self.scratch / name, host_dir)
        words = command.split()
        if words[0] == "systemctl":
            assert words[1:3] == ["enable", "--now"] and len(words) == 4, command
            unit = words[3] if words[3].endswith(".service") else words[3] + ".service"
            assert (self.host / "lib/systemd/system" / unit).is_file(), f"{command}: {unit} is not installed"
            return ""
        return debroot.in_root(self.host, "bash", "-c", f"cd {HOST_DIR} && {command}").stdout

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
    if command.startswith("packaging/build-debs.sh"):
        debroot.packages_in(ROOT / "target" / "debian")
        return "build packages"
    if command.startswith("apt install"):
        for path in ("usr/bin/l45-agent", "usr/lib/l45/libl45tap.so", "etc/l45/agent.env"):
            assert (session.host / path).exists(), f"{command}: no /{path}"
        return "install packages"
    if command.startswith("install ") and " /etc/l45/" in command:
        target = command.split()[-1]
        assert (session.host / target.lstrip("/")).is_file(), f"{command}: no {target}"
        return "host configuration"
    if command.startswith("systemctl"):
        return "systemctl"
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
    sections = readme_commands()
    for main in MAIN_COMMANDS:
        assert sum(c.split()[0] == main for _, c in sections) == 1, f"{main} is not in the README once"
    sections = [(s, c) for s, c in sections if c.split()[0] not in MAIN_COMMANDS]
    commands = [c for _, c in sections]
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
            for section, command in sections:
                if section == INSTALL_SECTION and not command.startswith(IN_REPOSITORY):
                    assert not command.endswith("&"), command
                    out = session.run_on_host(command)
                elif command.endswith("&"):
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
    for name in ("key", "get-config", "devices add", "deploy", "status", "tapped server", "curl through the tap",
                 "build packages", "install packages", "host configuration", "systemctl"):
        assert name in checked, f"the README no longer has the command checked as {name!r}"
    left = [p for p in GENERATED if (ROOT / p).exists() and p not in before]
    assert not left, f"files left in the repository: {left}"
