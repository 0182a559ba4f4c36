"""The Debian packages (packaging/build-debs.sh, docs/service.md
"Packages") installed into a throwaway Debian root with apt, the agent
started from the installed unit and configuration, a NETCONF get-config
through it; then dpkg --remove keeps configuration, state and users, and
dpkg --purge leaves the root as it was before the install.

Users are created by systemd-sysusers where it exists and by useradd
otherwise: both paths run (the second with systemd-standalone-sysusers
purged from the root first)."""
import os
import shutil
import subprocess

import pytest
from ncclient import manager

from debroot import PACKAGES, Unit, accounts, file_tree, free_port, in_root

NACM_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-acm"


def control(deb, field):
    return subprocess.run(["dpkg-deb", "--field", str(deb), field], capture_output=True, text=True,
                          check=True).stdout.strip()


def contents(deb):
    out = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True,
                         check=True).stdout
    return {line.split()[5].lstrip(".") for line in out.splitlines()}


def test_packages_hold_their_files(debs):
    agent, nco, tap = contents(debs["l45-agent"]), contents(debs["l45-nco"]), contents(debs["l45-tap"])
    for path in ("/usr/bin/l45-agent", "/lib/systemd/system/l45-agent.service",
                 "/lib/systemd/system/l45-agent-kernel.service", "/usr/lib/sysusers.d/l45-agent.conf",
                 "/etc/l45/agent.env", "/usr/share/bash-completion/completions/l45-agent",
                 "/usr/share/zsh/vendor-completions/_l45-agent",
                 "/usr/share/fish/vendor_completions.d/l45-agent.fish",
                 "/usr/share/man/man1/l45-agent.1.gz"):
        assert path in agent, (path, sorted(agent))
    for path in ("/usr/bin/l45-nco", "/usr/bin/l45-dissector", "/lib/systemd/system/l45-nco.service",
                 "/usr/lib/sysusers.d/l45-nco.conf", "/etc/l45/nco.env",
                 "/usr/share/bash-completion/completions/l45-nco",
                 "/usr/share/bash-completion/completions/l45-dissector",
                 "/usr/share/zsh/vendor-completions/_l45-dissector",
                 "/usr/share/man/man1/l45-nco-serve.1.gz", "/usr/share/man/man1/l45-dissector.1.gz"):
        assert path in nco, (path, sorted(nco))
    assert "/usr/lib/l45/libl45tap.so" in tap
    # Nothing of one package in another (they install side by side).
    files = lambda c: {p for p in c if not p.endswith("/")}
    assert not files(agent) & files(nco) and not files(agent) & files(tap) and not files(nco) & files(tap)
    # The environment files are conffiles: an operator's edit survives upgrades.
    for pkg, conffile in (("l45-agent", "/etc/l45/agent.env"), ("l45-nco", "/etc/l45/nco.env")):
        r = subprocess.run(["dpkg-deb", "--info", str(debs[pkg]), "conffiles"], capture_output=True,
                           text=True, check=True)
        assert r.stdout.split() == [conffile]
    assert "l45-tap" in control(debs["l45-agent"], "Recommends")


def configure_agent(root, key_pub):
    """What an operator does before starting the agent: a key file, and
    (here) a free port in agent.env."""
    (root / "etc/l45/authorized_keys").write_text(key_pub)
    os.chmod(root / "etc/l45/authorized_keys", 0o644)
    port = free_port()
    env_path = root / "etc/l45/agent.env"
    env_path.write_text(env_path.read_text().replace("L45_LISTEN=127.0.0.1:8830",
                                                     f"L45_LISTEN=127.0.0.1:{port}"))
    return port


def keypair(tmp_path):
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key, (tmp_path / "key.pub").read_text()


@pytest.mark.parametrize("user_tool", ["systemd-sysusers", "useradd"])
def test_install_run_remove_purge(debs, root, tmp_path, user_tool):
    if user_tool == "useradd":
        in_root(root, "dpkg", "--purge", "systemd-standalone-sysusers")
        assert in_root(root, "sh", "-c", "command -v systemd-sysusers", check=False).returncode != 0
    else:
        in_root(root, "sh", "-c", "command -v systemd-sysusers")
    before_tree, before_accounts = file_tree(root), accounts(root)

    # apt, as the README says, from the packages' files.
    (root / "tmp/debs").mkdir()
    for deb in debs.values():
        shutil.copy(deb, root / "tmp/debs")
    r = in_root(root, "apt-get", "install", "-y", "--no-install-recommends",
                *(f"/tmp/debs/{p.name}" for p in debs.values()))
    assert "l45-agent" in r.stdout
    shutil.rmtree(root / "tmp/debs")
    passwd = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    for user, home in (("l45", "/var/lib/l45-agent"), ("l45-nco", "/var/lib/l45-nco")):
        assert user in passwd, f"{user} not created"
        assert int(passwd[user][2]) < 1000 and passwd[user][5] == home
        assert passwd[user][6].endswith("nologin")
    for path in ("usr/bin/l45-agent", "usr/bin/l45-nco", "usr/bin/l45-dissector", "usr/lib/l45/libl45tap.so",
                 "etc/l45/agent.env", "etc/l45/nco.env", "usr/share/man/man1/l45-agent.1.gz"):
        assert (root / path).exists(), path

    # `systemctl enable l45-agent` (README) makes the link [Install]
    # WantedBy= names; purge must take it away.
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "l45-agent.service").symlink_to("/lib/systemd/system/l45-agent.service")

    # The agent from the installed unit and configuration; a client logs in.
    key, key_pub = keypair(tmp_path)
    port = configure_agent(root, key_pub)
    agent = Unit(root, "l45-agent.service", tmp_path)
    nco = None
    try:
        assert agent.argv[0] == "/usr/bin/l45-agent" and f"127.0.0.1:{port}" in agent.argv, agent.argv
        agent.wait_ready()
        with manager.connect(host="127.0.0.1", port=port, username="admin", key_filename=str(key),
                             hostkey_verify=False, look_for_keys=False, allow_agent=False,
                             timeout=30) as m:
            reply = m.get_config(source="running").data_xml
        assert "<data" in reply and NACM_NS in reply, reply[:2000]
        state = root / "var/lib/l45-agent"
        assert state.stat().st_uid == int(passwd["l45"][2]) and state.stat().st_mode & 0o777 == 0o700
        assert any(state.iterdir()), "the agent wrote nothing into its state directory"
        # The scheduler from its unit (READY=1 once the CIB is open), the CLI
        # as l45-nco on the same CIB, the dissector, the tap library in a
        # program of the root.
        nco = Unit(root, "l45-nco.service", tmp_path)
        nco.wait_ready()
        assert (root / "var/lib/l45-nco/cib.sqlite").exists()
        # An operator deploys a module to the agent with the CLI, as
        # l45-nco on the service's CIB, the device key in /etc/l45/nco/.
        in_root(root, "install", "-d", "-m", "0700", "-o", "l45-nco", "-g", "l45-nco", "/etc/l45/nco")
        in_root(root, "install", "-m", "0600", "-o", "l45-nco", "-g", "l45-nco", "/dev/stdin",
                "/etc/l45/nco/dev1_key", input=key.read_text())
        cli = ["l45-nco", "--cib", "/var/lib/l45-nco/cib.sqlite"]
        in_root(root, *cli, "devices", "add", "dev1", "--address", f"127.0.0.1:{port}",
                "--key", "/etc/l45/nco/dev1_key", user="l45-nco")
        deployed = in_root(root, *cli, "modules", "deploy", "--device", "dev1", "--name", "m1",
                           "--kind", "dns-front-tag", "--dst-port", "53", user="l45-nco")
        assert "confirmed" in deployed.stdout, deployed.stdout
        with manager.connect(host="127.0.0.1", port=port, username="admin", key_filename=str(key),
                             hostkey_verify=False, look_for_keys=False, allow_agent=False,
                             timeout=30) as m:
            running = m.get_config(source="running").data_xml
        assert "<name>m1</name>" in running and "dns-front-tag" in running, running[:3000]
        lua = in_root(root, "l45-dissector", "dns-front-tag", "tag=abc")
        assert 'Proto("l45_dns_front_tag"' in lua.stdout
        # The tap library loads into a program of the root (grep reads its
        # own memory map).
        maps = in_root(root, "grep", "-c", "/usr/lib/l45/libl45tap.so", "/proc/self/maps",
                       env={"LD_PRELOAD": "/usr/lib/l45/libl45tap.so", "L45_TAP_SHM": "/run/l45/tap"})
        assert int(maps.stdout) > 0 and "cannot be preloaded" not in maps.stderr, maps
    finally:
        agent.stop()
        if nco:
            nco.stop()

    # remove: binaries go; configuration (with the operator's edit), state and users stay.
    in_root(root, "dpkg", "--remove", *PACKAGES)
    for path in ("usr/bin/l45-agent", "usr/bin/l45-nco", "usr/bin/l45-dissector", "usr/lib/l45/libl45tap.so",
                 "lib/systemd/system/l45-agent.service"):
        assert not (root / path).exists(), path
    assert f"127.0.0.1:{port}" in (root / "etc/l45/agent.env").read_text()
    assert (root / "etc/l45/authorized_keys").exists() and (root / "var/lib/l45-agent").is_dir()
    assert (root / "var/lib/l45-nco/cib.sqlite").exists()
    assert "l45:" in (root / "etc/passwd").read_text()
    # The enabled unit, its file gone, is masked until purge (deb-systemd-helper).
    assert os.readlink(root / "etc/systemd/system/l45-agent.service") == "/dev/null"

    # purge: the root is as it was before the install.
    in_root(root, "dpkg", "--purge", *PACKAGES)
    after_tree = file_tree(root)
    added = sorted(set(after_tree) - set(before_tree))
    removed = sorted(set(before_tree) - set(after_tree))
    changed = sorted(p for p in set(after_tree) & set(before_tree) if after_tree[p] != before_tree[p])
    assert (added, removed, changed) == ([], [], []), f"added {added}\nremoved {removed}\nchanged {changed}"
    assert accounts(root) == before_accounts


def test_lintian(debs):
    """lintian's report on the packages (printed; run with -s to read it).
    Errors fail the test; warnings and notes are reported, not gated."""
    if not shutil.which("lintian"):
        pytest.skip("lintian is not installed")
    r = subprocess.run(["lintian", "--no-tag-display-limit", *map(str, debs.values())],
                       capture_output=True, text=True, timeout=600)
    print(r.stdout)
    errors = [line for line in r.stdout.splitlines() if line.startswith("E:")]
    assert not errors, "\n".join(errors)
