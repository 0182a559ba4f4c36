"""A throwaway Debian root to install the packages into, and running a
unit's ExecStart by hand in it the way systemd would (there is no running
systemd on the machines these tests run on). Used by tests/packages and
tests/readme.

The root is a debootstrap minbase of the host's release (so the packages'
dependencies, computed against the host's libraries, are satisfied), plus
systemd-standalone-sysusers; it is built once and cached as a tarball under
~/.cache/l45/ (about 2.5 minutes cold, 200 MB), and every test extracts a
fresh copy. Commands run in it with `unshare --mount --pid --fork
--mount-proc` + `chroot`: the root gets its own /proc, and nothing is
mounted on the host."""
import fcntl
import hashlib
import os
import pathlib
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
CACHE = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "l45"
MIRROR = os.environ.get("L45_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ("l45-agent", "l45-nco", "l45-tap")


def host_codename():
    for line in pathlib.Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip('"')
    pytest.skip("the host names no Debian release (VERSION_CODENAME)")


def base_tarball():
    """The cached minbase tarball, built with debootstrap if missing (under
    a lock, so concurrent runs build it once)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (debootstrap, chroot, unshare), as tools/test.sh runs")
    suite = host_codename()
    args = ["--variant=minbase", "--include=systemd-standalone-sysusers", suite]
    key = hashlib.sha256(" ".join([*args, MIRROR]).encode()).hexdigest()[:12]
    tarball = CACHE / f"rootfs-{suite}-{key}.tar"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "rootfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists():
            return tarball
        if not shutil.which("debootstrap"):
            pytest.fail("debootstrap is not installed (tools/install-deps.sh installs it)")
        build = CACHE / f"rootfs-{key}.build"
        shutil.rmtree(build, ignore_errors=True)
        r = subprocess.run(["debootstrap", *args, str(build), MIRROR], capture_output=True,
                           text=True, timeout=1200)
        if r.returncode != 0:
            shutil.rmtree(build, ignore_errors=True)
            pytest.fail(f"debootstrap failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(build), "-cf", str(partial), "."], check=True, timeout=600)
        partial.rename(tarball)
        shutil.rmtree(build)
        return tarball



def extract(tarball, path):
    """A fresh root from the base tarball."""
    path.mkdir()
    subprocess.run(["tar", "-C", str(path), "--numeric-owner", "-xf", str(tarball)], check=True,
                   timeout=600)
    return path


def build_debs(out):
    """{package: path} of the packages packaging/build-debs.sh builds into OUT."""
    r = subprocess.run([str(REPO / "packaging" / "build-debs.sh"), str(out)], capture_output=True,
                       text=True, timeout=3600)
    assert r.returncode == 0, f"build-debs.sh failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return packages_in(out)


def packages_in(out):
    found = {}
    for deb in pathlib.Path(out).glob("*.deb"):
        name = subprocess.run(["dpkg-deb", "--field", str(deb), "Package"], capture_output=True,
                              text=True, check=True).stdout.strip()
        found[name] = deb
    assert sorted(found) == sorted(PACKAGES), found
    return found


def in_root(root, *cmd, user=None, env=None, check=True, timeout=300, **kw):
    """Runs CMD in ROOT (its own mount and pid namespace, /proc mounted)."""
    argv = in_root_argv(root, *cmd, user=user, env=env)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check:
        assert r.returncode == 0, f"{shlex.join(cmd)}\nexit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def in_root_argv(root, *cmd, user=None, env=None):
    chroot = ["chroot"] + ([f"--userspec={user}:{user}"] if user else []) + [str(root)]
    base_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root",
                "DEBIAN_FRONTEND": "noninteractive"}
    return ["unshare", "--mount", "--pid", "--fork", f"--mount-proc={root}/proc", *chroot,
            "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in {**base_env, **(env or {})}.items()), *cmd]


# ----- what systemd would do with a unit -----

def unit_settings(text):
    """[Service] of a unit file: key → list of values (continuations joined)."""
    settings, section, pending = {}, None, ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") and not pending:
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = (pending + line).strip(), ""
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line:
            k, v = line.split("=", 1)
            settings.setdefault(k.strip(), []).append(v.strip())
    return settings


def env_file(text):
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            env[k.strip()] = v.strip().strip('"')
    return env


def exec_start(root, unit_name):
    """(argv, settings, environment) of UNIT_NAME installed in ROOT, with its
    Environment=, EnvironmentFile= and specifiers resolved as systemd does."""
    settings = unit_settings((root / "lib/systemd/system" / unit_name).read_text())
    specifiers = {"%S": "/var/lib", "%t": "/run", "%%": "%"}

    def resolve(text):
        for s, v in specifiers.items():
            text = text.replace(s, v)
        return text

    env = {}
    for assignment in settings.get("Environment", []):
        for word in shlex.split(assignment):
            k, v = word.split("=", 1)
            env[k] = resolve(v)
    for path in settings.get("EnvironmentFile", []):
        optional = path.startswith("-")
        f = root / path.lstrip("-").lstrip("/")
        if f.exists():
            env.update(env_file(f.read_text()))
        else:
            assert optional, f"{unit_name}: EnvironmentFile {path} is missing"
    (line,) = settings["ExecStart"]
    line = resolve(line)
    # ${VAR} is one word; $VAR is split on whitespace (systemd.service(5)).
    argv = []
    for word in shlex.split(line):
        m = re.fullmatch(r"\$\{(\w+)\}", word)
        if m:
            argv.append(env.get(m.group(1), ""))
        elif re.fullmatch(r"\$(\w+)", word):
            argv.extend(env.get(word[1:], "").split())
        else:
            argv.append(word)
    return argv, settings, env


def make_unit_dirs(root, settings):
    """StateDirectory= and RuntimeDirectory=, owned by User= with their modes."""
    user = settings["User"][0]
    made = []
    for kind, base_dir in (("StateDirectory", "var/lib"), ("RuntimeDirectory", "run")):
        for name in settings.get(kind, []):
            mode = settings.get(f"{kind}Mode", ["0755"])[0]
            path = f"/{base_dir}/{name}"
            in_root(root, "install", "-d", "-m", mode, "-o", user, "-g", user, path)
            made.append((kind, root / base_dir / name))
    return made


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Unit:
    """A unit of ROOT run by hand as systemd would run it: ExecStart with
    Environment=/EnvironmentFile=, as User= with UMask=, after creating
    StateDirectory=/RuntimeDirectory=; Type=notify's readiness comes on a
    NOTIFY_SOCKET the test binds inside the root. stop() ends it (SIGTERM
    to its process group) and removes RuntimeDirectory= as systemd does."""

    def __init__(self, root, name, log_dir):
        self.root, self.name = root, name
        self.argv, self.settings, self.env = exec_start(root, name)
        self.dirs = make_unit_dirs(root, self.settings)
        self.notify_path = root / "run" / f"notify-{name}"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        os.chmod(self.notify_path, 0o666)   # the unit's user sends to it
        self.log = log_dir / f"{name}.log"
        umask = int(self.settings.get("UMask", ["0022"])[0], 8)
        env = {**self.env, "NOTIFY_SOCKET": f"/run/notify-{name}"}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                in_root_argv(root, *self.argv, user=self.settings["User"][0], env=env),
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=lambda: os.umask(umask))

    def wait_ready(self, deadline=30):
        """Until the service sends READY=1 (Type=notify)."""
        assert self.settings["Type"] == ["notify"], self.settings["Type"]
        self.notify.settimeout(0.2)
        end = time.monotonic() + deadline
        while time.monotonic() < end and self.proc.poll() is None:
            try:
                if "READY=1" in self.notify.recv(4096).decode().split("\n"):
                    return
            except socket.timeout:
                pass
        pytest.fail(f"{self.name} sent no READY=1 (exit {self.proc.poll()}):\n{self.log.read_text()[-3000:]}")

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.notify.close()
        self.notify_path.unlink()
        for kind, path in self.dirs:
            if kind == "RuntimeDirectory":
                shutil.rmtree(path)


def file_tree(root):
    """Every path under ROOT with its type, mode and owner, except what the
    package manager and the shadow tools keep for themselves (dpkg's and
    apt's databases and logs, /etc/*- backups, the password-file lock)."""
    skip_dirs = {"proc", "sys", "dev", "tmp", "var/lib/dpkg", "var/lib/apt", "var/log",
                 "var/cache/apt", "var/cache/debconf", "var/cache/ldconfig"}
    tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = [d for d in dirnames
                       if os.path.normpath(os.path.join(rel_dir, d)) not in skip_dirs]
        for name in dirnames + filenames:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel.startswith("etc/") and (rel.endswith("-") or rel == "etc/.pwd.lock"):
                continue
            st = os.lstat(os.path.join(dirpath, name))
            tree[rel] = (st.st_mode, st.st_uid, st.st_gid)
    return tree


def accounts(root):
    return {f: sorted((root / "etc" / f).read_text().splitlines())
            for f in ("passwd", "group", "shadow", "gshadow")}
