"""The lab: two devices, each an l45-agent with the user-space tap — in their
own network namespaces with their own addresses when run as root (a bridge
joins them and the NCO), on loopback otherwise. A real dnsmasq runs on the
server device, a dig loop on the client device, both under the tap. The NCO
(l45-nco, with its CIB) deploys a DNS front tag, the lab shows it on the
wire, the NCO rotates the live traffic to DNS compression (dissertation
figure 5.3), runs a security check and shows its status. Everything stops
cleanly at the end, on error and on Ctrl-C."""
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "tap"))
from taplab import Capture, Dnsmasq, TapAgent, dig, free_port  # noqa: E402

NCO = os.environ.get("L45_NCO", str(ROOT / "target" / "release" / "l45-nco"))
BRIDGE, NET = "l45br0", "10.45.0"
SPACES = {"client": ("l45-client", f"{NET}.1"), "server": ("l45-server", f"{NET}.2")}


def sh(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def namespaces_possible():
    if os.geteuid() != 0 or not shutil.which("ip"):
        return False
    probe = subprocess.run(["ip", "netns", "add", "l45-probe"], capture_output=True)
    if probe.returncode != 0:
        return False
    subprocess.run(["ip", "netns", "del", "l45-probe"], capture_output=True)
    return True


def netns_up():
    netns_down()
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "addr", "add", f"{NET}.254/24", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")
    for role, (ns, addr) in SPACES.items():
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", f"veth-{role[0]}", "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", f"veth-{role[0]}", "master", BRIDGE)
        sh("ip", "link", "set", f"veth-{role[0]}", "up")
        sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")


def netns_down():
    """Removes the lab's namespaces and links, also what a killed lab left:
    processes still inside a namespace would keep it (and its veth) alive
    after `ip netns del`."""
    for role, (ns, _) in SPACES.items():
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", f"veth-{role[0]}"], capture_output=True)
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)


class Loop(threading.Thread):
    """dig every 50 ms from the client device, counting answers."""

    def __init__(self, **dig_args):
        super().__init__(daemon=True)
        self.dig_args, self.ok, self.failed = dig_args, 0, 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            if dig(timeout=2, **self.dig_args)[0]:
                self.ok += 1
            else:
                self.failed += 1
            self.stop.wait(0.05)

    def settle(self, n=10):
        target = self.ok + n
        while self.ok < target and not self.stop.is_set():
            self.stop.wait(0.02)


def step(text):
    print(f"\n== {text}", flush=True)


def nco(env, *args):
    print(f"$ l45-nco {' '.join(map(str, args))}", flush=True)
    subprocess.run([NCO, *map(str, args)], env=env, check=True)


def main():
    use_ns = namespaces_possible()
    stop_list = []
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        try:
            if use_ns:
                netns_up()
                stop_list.append(netns_down)
                prefix = {role: ["ip", "netns", "exec", ns] for role, (ns, _) in SPACES.items()}
                host = {role: addr for role, (_, addr) in SPACES.items()}
                ports = {"client": 830, "server": 830}
                dns_port = 53
                print(f"network namespaces: client {host['client']}, server {host['server']} on bridge {BRIDGE}")
            else:
                prefix = {"client": [], "server": []}
                host = {"client": "127.0.0.1", "server": "127.0.0.1"}
                ports = {"client": free_port(), "server": free_port()}
                dns_port = None
                print("not root (or no network namespaces): both devices on loopback")
            devices = {}
            for role in ("client", "server"):
                devices[role] = TapAgent(work / f"{role}-device", host=host[role], port=ports[role],
                                         prefix=prefix[role])
                stop_list.append(devices[role].stop)
                print(f"{role} device: l45-agent on {host[role]}:{ports[role]} (tap {devices[role].shm})")
            (work / "dns").mkdir()
            dns = Dnsmasq(work / "dns", env=devices["server"].env(), host=host["server"], port=dns_port,
                          prefix=prefix["server"])
            stop_list.append(dns.stop)
            print(f"dnsmasq (tapped) on the server device, {host['server']}:{dns.port}")
            dig_args = dict(port=dns.port, env=devices["client"].env(), server=host["server"],
                            prefix=prefix["client"])

            env = {**os.environ, "L45_CIB": str(work / "cib.sqlite")}
            step("NCO: register the devices (host keys pinned on first contact)")
            for role, d in devices.items():
                nco(env, "devices", "add", role, "--address", f"{d.host}:{d.port}", "--key", d.key, "--role", role)
            step("NCO: deploy M1 = DNS front tag (priority 10) on both devices")
            nco(env, "modules", "deploy", "--device", "client", "--name", "m1", "--kind", "dns-front-tag",
                "--param", "tag=XTAGXdig", "--priority", "10", "--protocol", "udp", "--dst-port", dns.port)
            nco(env, "modules", "deploy", "--device", "server", "--name", "m1", "--kind", "dns-front-tag",
                "--param", "tag=XTAGXdig", "--priority", "10", "--protocol", "udp", "--src-port", dns.port)
            iface = "eth0" if use_ns else "lo"
            cap = Capture(work / "wire.pcap", f"udp dst port {dns.port}", iface=iface, prefix=prefix["server"])
            answered, _ = dig(**dig_args)
            packets = cap.stop()
            print(f"  tapped dig answered: {answered}; query on the wire: "
                  f"{packets[0][3][:24].hex(' ') if packets else '-'} …")
            plain, _ = dig(port=dns.port, server=host["server"], prefix=prefix["client"], timeout=1)
            print(f"  a dig without the tap is dropped by the server: answered={plain}")

            step("dig loop every 50 ms on the client device; NCO rotates m1 → m2 (compression) live")
            loop = Loop(**dig_args)
            loop.start()
            stop_list.append(lambda: (loop.stop.set(), loop.join()))
            loop.settle()
            if os.environ.get("L45_LAB_PAUSE_MID_ROTATION"):
                # For the test of an interrupted lab: everything is up and
                # the dig loop runs; wait here until the signal comes.
                print("paused mid-rotation, waiting for an interrupt", flush=True)
                signal.pause()
            nco(env, "rotate", "--from", "m1", "--to-name", "m2", "--to-kind", "dns-compression")
            loop.settle()
            loop.stop.set()
            loop.join()
            cap = Capture(work / "wire2.pcap", f"udp dst port {dns.port}", iface=iface, prefix=prefix["server"])
            answered, _ = dig(**dig_args)
            packets = cap.stop()
            print(f"  tapped dig answered: {answered}; compressed query on the wire: "
                  f"{packets[0][3].hex(' ') if packets else '-'}")
            print(f"  dig loop: {loop.ok} answered, {loop.failed} failed during the rotation")

            step("NCO: security check (AES-256-GCM challenge-response with every module)")
            nco(env, "security-check")
            step("NCO: state reports and status")
            nco(env, "monitor")
            nco(env, "modules", "list")
            nco(env, "status")
            return 0 if loop.failed == 0 and answered and not plain else 1
        finally:
            for stop in reversed(stop_list):
                try:
                    stop()
                except Exception as e:  # keep tearing down
                    print(f"teardown: {e}", file=sys.stderr)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Interruptible even when started with SIGINT ignored (a background job
    # of a non-interactive shell is; Python then installs no handler).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: everything stopped")
        sys.exit(130)
