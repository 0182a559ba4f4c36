"""`--metrics`: a real Prometheus (Debian's /usr/bin/prometheus) scrapes
l45-agent (user-space tap, a tapped dig → dnsmasq exchange, RPCs done over
ncclient) and `l45-nco serve` (with the agent as its device), and its query
API returns series that reflect what the test did. Also: the endpoint
refuses what is not `GET /metrics` with a 4xx and the agent goes on
serving NETCONF."""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import pytest

from conftest import AGENT, NCO, ROOT, have

sys.path.insert(0, str(ROOT / "tests" / "tap"))
from taplab import Dnsmasq, dig, module, shm_root, stop_process  # noqa: E402

PROMETHEUS = os.environ.get("L45_PROMETHEUS", "/usr/bin/prometheus")
NS = "urn:layer45:params:xml:ns:yang:layer45-customization"
BASE = "urn:ietf:params:xml:ns:netconf:base:1.0"
GET_CONFIGS = 5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(cond, timeout, what):
    """Polls a condition that has no event to wait on, with a deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = cond()
        except Exception as e:  # noqa: BLE001 - not up yet; tried again
            v, last = None, e
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")


def http(addr, raw):
    """Sends raw bytes to addr and returns the whole response."""
    with socket.create_connection(addr, timeout=10) as s:
        try:
            s.sendall(raw)
        except OSError:
            pass
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
    return out


def scrape(addr):
    return http(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").decode()


class Agent:
    """l45-agent with the user-space tap and --metrics on a free port."""

    def __init__(self, tmp):
        self.dir = pathlib.Path(tmp)
        self.shm_dir = pathlib.Path(tempfile.mkdtemp(prefix="l45-test-", dir=shm_root()))
        self.shm = self.shm_dir / "tap.shm"
        self.key = self.dir / "key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True)
        self.port = free_port()
        self.log = open(self.dir / "agent.log", "ab")
        self.proc = subprocess.Popen(
            [AGENT, "--listen", f"127.0.0.1:{self.port}", "--state-dir", str(self.dir / "state"),
             "--authorized-keys", f"admin:{self.key}.pub", "--tap", "userspace",
             "--tap-shm", str(self.shm), "--metrics", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        first = self.proc.stdout.readline()
        assert first.startswith("l45-agent metrics on "), f"agent did not start: {first!r}"
        host, port = first.split()[-1].rsplit(":", 1)
        self.metrics = (host, int(port))
        line = self.proc.stdout.readline()
        assert "listening on" in line, f"agent did not start: {line!r}"

    def connect(self):
        from ncclient import manager
        return manager.connect(host="127.0.0.1", port=self.port, username="admin",
                               key_filename=str(self.key), hostkey_verify=False,
                               allow_agent=False, look_for_keys=False, timeout=30)

    def env(self):
        preload = os.environ.get("L45_PRELOAD", str(ROOT / "target" / "release" / "libl45tap.so"))
        return {**os.environ, "LD_PRELOAD": preload, "L45_TAP_SHM": str(self.shm)}

    def stop(self):
        stop_process(self.proc)
        self.log.close()
        import shutil
        shutil.rmtree(self.shm_dir, ignore_errors=True)


class NcoService:
    """`l45-nco serve --metrics` on its own CIB, with `agent` as device d1."""

    def __init__(self, tmp, agent):
        self.dir = pathlib.Path(tmp)
        self.env = {**os.environ, "L45_CIB": str(self.dir / "cib.sqlite")}
        subprocess.run([NCO, "devices", "add", "d1", "--address", f"127.0.0.1:{agent.port}",
                        "--key", str(agent.key)], env=self.env, check=True, capture_output=True,
                       timeout=60)
        self.log = open(self.dir / "serve.log", "ab")
        self.proc = subprocess.Popen(
            [NCO, "serve", "--state-req-window", "1", "--metrics", "127.0.0.1:0"],
            env=self.env, stdout=self.log, stderr=subprocess.PIPE, text=True)
        first = self.proc.stderr.readline()
        assert first.startswith("l45-nco metrics on "), f"nco serve did not start: {first!r}"
        host, port = first.split()[-1].rsplit(":", 1)
        self.metrics = (host, int(port))
        line = self.proc.stderr.readline()
        assert "serving" in line, f"nco serve did not start: {line!r}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        stop_process(self.proc)
        self.log.close()


class Prometheus:
    """Debian's Prometheus scraping `targets` (job → host:port) every second,
    with its own config, TSDB directory and port."""

    def __init__(self, tmp, targets):
        self.dir = pathlib.Path(tmp)
        self.port = free_port()
        jobs = "".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: ['{host}:{port}']\n"
            for job, (host, port) in targets.items())
        conf = self.dir / "prometheus.yml"
        conf.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                        f"scrape_configs:\n{jobs}")
        self.log = open(self.dir / "prometheus.log", "ab")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={conf}", f"--storage.tsdb.path={self.dir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=self.log)
        poll(lambda: urllib.request.urlopen(self.url("/-/ready"), timeout=2).status == 200,
             60, "Prometheus ready")

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def query(self, expr):
        """The instant vector of `expr`: [(labels, value)]."""
        q = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(self.url(f"/api/v1/query?{q}"), timeout=5) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return [(s["metric"], float(s["value"][1])) for s in body["data"]["result"]]

    def wait_value(self, expr, cond, what, timeout=60):
        """Polls the query API until one series of `expr` satisfies `cond`."""
        return poll(lambda: [s for s in self.query(expr) if cond(s[1])], timeout,
                    f"{what}: {expr}")

    def stop(self):
        stop_process(self.proc)
        self.log.close()


@pytest.fixture
def stack(tmp_path):
    started = []
    yield started
    for thing in reversed(started):
        thing.stop()


def config(*modules):
    return (f'<config xmlns="{BASE}"><customizations xmlns="{NS}" xmlns:l45="{NS}">'
            f"{''.join(modules)}</customizations></config>")


@pytest.mark.skipif(not os.path.exists(PROMETHEUS), reason="prometheus is installed by tools/install-deps.sh")
@pytest.mark.skipif(not have("dnsmasq") or not have("dig"), reason="dnsmasq and dig: tools/install-deps.sh")
def test_prometheus_scrapes_the_agent_and_the_nco(tmp_path, stack):
    agent = Agent(tmp_path)
    stack.append(agent)
    nc = agent.connect()
    dns = Dnsmasq(tmp_path, env=agent.env(), log_queries=False)
    stack.append(dns)
    client = f"<protocol>udp</protocol><destination-port>{dns.port}</destination-port><process-name>dig</process-name>"
    server = f"<protocol>udp</protocol><source-port>{dns.port}</source-port>"
    tag = "<dns-tag><tag>XMETRICSX</tag></dns-tag>"
    nc.edit_config(target="running", config=config(
        module(7, "dns-front-tag", 10, client, tag), module(8, "dns-front-tag", 10, server, tag)))
    answered, out = dig(dns.port, env=agent.env())
    assert answered, f"tapped dig through tapped dnsmasq failed:\n{out}"
    for _ in range(GET_CONFIGS):
        nc.get_config(source="running")
    with pytest.raises(Exception):
        nc.get_config(source="nosuch")

    nco = NcoService(tmp_path, agent)
    stack.append(nco)
    prom = Prometheus(tmp_path, {"agent": agent.metrics, "nco": nco.metrics})
    stack.append(prom)

    for job in ("agent", "nco"):
        prom.wait_value(f'up{{job="{job}"}}', lambda v: v == 1, f"{job} scraped")
    ok = prom.wait_value('l45_agent_rpcs_total{operation="get-config",outcome="ok"}',
                         lambda v: v >= GET_CONFIGS, "get-config counted")
    assert ok[0][0]["job"] == "agent"
    prom.wait_value('l45_agent_rpcs_total{operation="get-config",outcome="error"}',
                    lambda v: v >= 1, "the failed get-config counted")
    prom.wait_value('l45_agent_rpc_duration_seconds_count{operation="edit-config"}',
                    lambda v: v >= 1, "edit-config timed")
    prom.wait_value('l45_agent_commits_total{source="running",outcome="ok"}',
                    lambda v: v >= 1, "the edit's commit counted")
    prom.wait_value("l45_agent_sessions_open", lambda v: v >= 1, "the open session")
    # dig's query went through module 7 (sent) and reached dnsmasq's module 8.
    sent = prom.wait_value('l45_agent_tap_module_bytes_total{module_id="7",direction="sent"}',
                           lambda v: v > 0, "module 7's customized bytes")
    assert sent[0][0]["kind"] == "dns-front-tag", sent
    prom.wait_value('l45_agent_tap_module_messages_total{module_id="8",direction="received"}',
                    lambda v: v >= 1, "module 8's customized messages")
    prom.wait_value('l45_agent_tap_modules{state="active"}', lambda v: v >= 1, "active modules")
    prom.wait_value('l45_agent_tap_backend_errors_total{backend="userspace"}', lambda v: v == 0,
                    "the user-space backend's error counter")
    # The NCO connects to its device on its first monitor round (every 1 s).
    prom.wait_value('l45_nco_devices{state="connected"}', lambda v: v == 1, "the NCO's device")
    prom.wait_value('l45_nco_requests{state="pending"}', lambda v: v == 0, "requests by state")
    prom.wait_value('l45_nco_security_checks_total{result="failed"}', lambda v: v == 0,
                    "security checks")
    prom.wait_value("l45_nco_cib_up", lambda v: v == 1, "the CIB read")

    # Bad requests get a 4xx; NETCONF and the endpoint go on.
    for raw, status in [
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi", b"405"),
        (b"GET / HTTP/1.1\r\n\r\n", b"404"),
        (b"\x00\xffgarbage\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 100_000 + b"\r\n\r\n", b"431"),
    ]:
        reply = http(agent.metrics, raw)
        assert reply.startswith(b"HTTP/1.1 " + status), (raw[:30], reply[:80])
    assert "l45_agent_sessions_open" in scrape(agent.metrics)
    assert "<customizations" in nc.get_config(source="running").data_xml
    nc.close_session()


def test_a_port_in_use_is_a_clear_error(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    try:
        r = subprocess.run(
            [AGENT, "--listen", "127.0.0.1:0", "--state-dir", str(tmp_path / "state"),
             "--authorized-keys", f"admin:{key}.pub", "--metrics", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60)
    finally:
        taken.close()
    assert r.returncode != 0
    assert f"metrics endpoint: cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr, r.stderr
