"""Shell completions and man pages generated from the clap definitions."""
import os
import subprocess

import pytest

from conftest import have


def read(out, rel):
    return (out / rel).read_text()


def test_files_for_every_binary_and_shell(assets):
    out, files = assets
    names = {f.relative_to(out).as_posix() for f in files}
    for b in ("l45-agent", "l45-nco", "l45-dissector"):
        for f in (f"completions/{b}.bash", f"completions/_{b}", f"completions/{b}.fish",
                  f"man/man1/{b}.1"):
            assert f in names, f"{f} not in {sorted(names)}"
    # One page per subcommand, nested ones included.
    for page in ("l45-nco-serve.1", "l45-nco-devices.1", "l45-nco-devices-add.1",
                 "l45-nco-modules-deploy.1"):
        assert f"man/man1/{page}" in names
    # The generating option is in no help, completion or page.
    for f in files:
        assert "generate-cli-assets" not in f.read_text(), f


@pytest.mark.parametrize("shell_file", ["{b}.bash", "_{b}", "{b}.fish"])
def test_completions_name_real_options_and_subcommands(assets, shell_file):
    out, _ = assets
    agent = read(out, "completions/" + shell_file.format(b="l45-agent"))
    for opt in ("authorized-keys", "state-dir", "tap-shm", "log-format", "max-sessions"):
        assert opt in agent, opt
    assert "journal" in agent and "userspace" in agent  # value lists
    nco = read(out, "completions/" + shell_file.format(b="l45-nco"))
    for word in ("serve", "devices", "deploy", "security-check", "cib", "rotate"):
        assert word in nco, word
    dissector = read(out, "completions/" + shell_file.format(b="l45-dissector"))
    assert "port" in dissector and "all" in dissector
    # The module kinds, where clap_complete completes positional values
    # (bash and zsh; its fish script completes options only).
    if not shell_file.endswith(".fish"):
        for kind in ("dns-front-tag", "dns-clearance-filter", "rate-limit"):
            assert kind in dissector, kind


def test_bash_completion_completes(assets):
    """bash itself, with the generated script, completes `l45-nco ser` to
    `serve`."""
    if not have("bash"):
        pytest.skip("no bash")
    out, _ = assets
    script = f"""
source {out}/completions/l45-nco.bash
COMP_WORDS=(l45-nco ser); COMP_CWORD=1; COMP_LINE='l45-nco ser'; COMP_POINT=11
_l45__nco l45-nco ser l45-nco
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert r.stdout.split() == ["serve"], r.stdout + r.stderr


def test_bash_completes_dissector_kinds(assets):
    """`l45-dissector dns-f` completes to the kind dns-front-tag: the kinds
    come from the binary's clap definition, which takes them from the
    module catalogue."""
    if not have("bash"):
        pytest.skip("no bash")
    out, _ = assets
    script = f"""
source {out}/completions/l45-dissector.bash
COMP_WORDS=(l45-dissector dns-f); COMP_CWORD=1; COMP_LINE='l45-dissector dns-f'; COMP_POINT=19
_l45__dissector l45-dissector dns-f l45-dissector
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert r.stdout.split() == ["dns-front-tag"], r.stdout + r.stderr


@pytest.mark.skipif(not have("man"), reason="man is not installed")
def test_man_renders_the_pages(assets):
    out, _ = assets
    env = dict(os.environ, MANPAGER="cat", MANWIDTH="100", LC_ALL="C")
    agent = subprocess.run(["man", "-l", str(out / "man/man1/l45-agent.1")], capture_output=True,
                           text=True, env=env, timeout=30)
    assert agent.returncode == 0, agent.stderr
    assert "--authorized-keys" in agent.stdout and "NETCONF" in agent.stdout
    serve = subprocess.run(["man", "-l", str(out / "man/man1/l45-nco-serve.1")],
                           capture_output=True, text=True, env=env, timeout=30)
    assert "--sec-check-window" in serve.stdout
    dissector = subprocess.run(["man", "-l", str(out / "man/man1/l45-dissector.1")],
                               capture_output=True, text=True, env=env, timeout=30)
    assert dissector.returncode == 0, dissector.stderr
    assert "--port" in dissector.stdout and "dns-clearance-filter" in dissector.stdout
