"""The lab: two devices on loopback, each an l45-agent with the user-space
tap; a real dnsmasq on the server device and a dig loop on the client
device run under the tap. Over NETCONF (ncclient, standing in for the NCO
until it lands) it deploys a DNS front tag, shows it on the wire, rotates
the live traffic to DNS compression in the order of dissertation figure 5.3,
and revokes the old module — counting failed queries all along."""
import pathlib
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "tap"))
from taplab import Capture, Dnsmasq, TapAgent, dig, module  # noqa: E402

FRONT = "<dns-tag><tag>XTAGXdig</tag></dns-tag>"
COMP = "<dns-compression><recursion-desired>true</recursion-desired></dns-compression>"


def table(title, dev):
    mods, socks = dev.state()
    print(f"\n  [{dev.name}] {title}")
    print(f"    {'id':>3} {'state':<11} {'sockets':>7} {'msgs out':>8} {'msgs in':>8}")
    for mid, st in sorted(mods.items()):
        print(f"    {mid:>3} {st['state']:<11} {st['socket-count']:>7} {st['messages-sent']:>8} {st['messages-received']:>8}")
    for s in socks:
        print(f"    socket: {s['protocol']} {s['process']} modules {s['modules']}")


class Loop(threading.Thread):
    def __init__(self, port, env):
        super().__init__(daemon=True)
        self.port, self.env, self.ok, self.failed = port, env, 0, 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            if dig(self.port, env=self.env, timeout=2)[0]:
                self.ok += 1
            else:
                self.failed += 1
            self.stop.wait(0.05)

    def settle(self, n=10):
        target = self.ok + n
        while self.ok < target and not self.stop.is_set():
            time.sleep(0.02)


def step(text):
    print(f"\n== {text}")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        client = TapAgent(work / "client-device")
        server = TapAgent(work / "server-device")
        client.name, server.name = "client device", "server device"
        procs = [client, server]
        try:
            print(f"client device: NETCONF on 127.0.0.1:{client.port}, tap {client.shm}")
            print(f"server device: NETCONF on 127.0.0.1:{server.port}, tap {server.shm}")
            (work / "dns").mkdir()
            dns = Dnsmasq(work / "dns", env=server.env())
            procs.append(dns)
            print(f"dnsmasq (tapped) on 127.0.0.1:{dns.port}; dig loop every 50 ms (tapped) on the client device")
            to_srv = f"<protocol>udp</protocol><destination-port>{dns.port}</destination-port>"
            at_srv = f"<protocol>udp</protocol><source-port>{dns.port}</source-port>"

            step("deploy M1 = DNS front tag (priority 10) on both devices")
            client.edit(module(1, "dns-front-tag", 10, to_srv, FRONT))
            server.edit(module(1, "dns-front-tag", 10, at_srv, FRONT))
            cap = Capture(work / "wire.pcap", f"udp dst port {dns.port}")
            answered, _ = dig(dns.port, env=client.env())
            packets = cap.stop()
            print(f"  tapped dig answered: {answered}; query on the wire: {packets[0][3][:24].hex(' ') if packets else '-'} …")
            plain, _ = dig(dns.port, timeout=1)
            print(f"  a dig without the module is dropped by the server: answered={plain}")

            loop = Loop(dns.port, client.env())
            loop.start()
            procs.append(loop)
            loop.settle()
            step("deploy M2 = DNS compression (priority 20, attach immediate) on both devices")
            imm = "<attach>immediate</attach>"
            server.edit(module(2, "dns-compression", 20, at_srv, COMP, extra=imm))
            client.edit(module(2, "dns-compression", 20, to_srv, COMP, extra=imm))
            loop.settle()
            step("raise M2 above M1 on the receiver (server device) first …")
            server.set_leaf(2, "priority", "5")
            loop.settle()
            step("… then on the sender (client device): queries are compressed now")
            client.set_leaf(2, "priority", "5")
            loop.settle()
            step("revoke M1 on both devices")
            server.revoke(1)
            client.revoke(1)
            loop.settle()
            loop.stop.set()
            loop.join()
            cap = Capture(work / "wire2.pcap", f"udp dst port {dns.port}")
            answered, _ = dig(dns.port, env=client.env())
            packets = cap.stop()
            print(f"  tapped dig answered: {answered}; compressed query on the wire: "
                  f"{packets[0][3].hex(' ') if packets else '-'}")
            table("after the rotation", server)
            table("after the rotation", client)
            print(f"\n== dig loop: {loop.ok} answered, {loop.failed} failed during the whole rotation")
            return 0 if loop.failed == 0 else 1
        finally:
            for p in reversed(procs):
                if isinstance(p, Loop):
                    p.stop.set()
                    p.join()
                else:
                    p.stop()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: everything stopped")
        sys.exit(130)
