"""Link impairment between the two hosts: loss, delay and reordering in
the middlebox namespace of a `MiddleboxBed`, both directions.

`tc netem` is the tool for this, but this host's kernel has no netem
(`CONFIG_NET_SCH_NETEM is not set` in /proc/config.gz). So `Impairment`
uses netem where the kernel has it (on the middlebox's two interfaces,
under their 1 Gbit/s HTB class, in a routed bed) and otherwise a
user-space bridge with netem's semantics in a `wire` bed: an AF_PACKET
socket on each of the middlebox's interfaces,
every frame copied to the other one after a delay drawn from
DELAY ± JITTER, a fraction LOSS dropped and a fraction REORDER sent at
once, overtaking the delayed ones (netem's `reorder`). `how()` says which
ran; the bridge's counts are in `stats()`.

    bed = x.MiddleboxBed(work, mode=impair.bed_mode())
    with impair.Impairment(bed, loss=0.01, delay=0.15, jitter=0.1, reorder=0.25) as imp:
        ...
"""
import json
import os
import signal
import subprocess
import sys

import l45exp as x

BRIDGE = r"""
import heapq, json, random, select, signal, socket, sys, time
loss, delay, jitter, reorder, seed, stats_path = (float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]),
                                                  float(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
PACKET_OUTGOING = 4
rng = random.Random(seed)
socks = {}
for dev in ("eth0", "eth1"):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.bind((dev, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    socks[dev] = s
other = {socks["eth0"]: socks["eth1"], socks["eth1"]: socks["eth0"]}
stats = {"frames": 0, "dropped": 0, "reordered": 0, "delayed": 0, "sent": 0}
held, seq, running = [], 0, True
def stop(*_):
    global running
    running = False
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
print("ready", flush=True)
while running:
    now = time.monotonic()
    while held and held[0][0] <= now:
        _, _, out, frame = heapq.heappop(held)
        out.send(frame)
        stats["sent"] += 1
    timeout = min(0.05, max(0.0, held[0][0] - now)) if held else 0.05
    try:
        readable, _, _ = select.select(list(socks.values()), [], [], timeout)
    except InterruptedError:
        continue
    for s in readable:
        frame, addr = s.recvfrom(65535)
        if addr[2] == PACKET_OUTGOING:  # our own copy going out
            continue
        stats["frames"] += 1
        if rng.random() < loss:
            stats["dropped"] += 1
            continue
        if rng.random() < reorder:
            stats["reordered"] += 1
            other[s].send(frame)
            stats["sent"] += 1
            continue
        stats["delayed"] += 1
        seq += 1
        heapq.heappush(held, (time.monotonic() + max(0.0, rng.uniform(delay - jitter, delay + jitter)), seq,
                              other[s], frame))
with open(stats_path, "w") as f:
    json.dump(stats, f)
"""


def netem_available():
    """Whether this kernel has the netem qdisc (tried on a throw-away
    namespace's loopback)."""
    ns = f"{x.NS_PREFIX}-netem-probe"
    x.sh("ip", "netns", "add", ns)
    try:
        return x.sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
                    check=False).returncode == 0
    finally:
        x.sh("ip", "netns", "del", ns, check=False)


def bed_mode():
    """The `MiddleboxBed` mode `Impairment` needs on this kernel."""
    return "routed" if netem_available() else "wire"


class Impairment:
    """Loss, delay ± jitter and reordering on the middlebox of `bed`, both
    directions, until `close()`. The defaults: 1 % loss and 150 ± 100 ms
    one way, a long and jittery path, so that at a rotation many datagrams
    in the old format are still in flight; 25 % overtake the rest."""

    def __init__(self, bed, loss=0.01, delay=0.15, jitter=0.1, reorder=0.25, seed=4545):
        self.bed, self.params = bed, {"loss": loss, "delay_s": delay, "jitter_s": jitter, "reorder": reorder}
        self.proc, self.netem = None, bed.mode == "routed"
        self.stats_path = bed.work / "impairment-stats.json"
        prefix = ["ip", "netns", "exec", bed.hosts["mbox"][0]]
        if self.netem:
            for dev in ("eth0", "eth1"):
                x.sh(*prefix, "tc", "qdisc", "add", "dev", dev, "parent", "1:10", "handle", "10:", "netem",
                     "delay", f"{delay * 1000:g}ms", f"{jitter * 1000:g}ms", "loss", f"{loss * 100:g}%",
                     "reorder", f"{reorder * 100:g}%")
        else:
            if bed.mode != "wire":
                raise RuntimeError("no netem in this kernel: the user-space bridge needs a `wire` MiddleboxBed")
            self.proc = subprocess.Popen([*prefix, sys.executable, "-c", BRIDGE, str(loss), str(delay), str(jitter),
                                          str(reorder), str(seed), str(self.stats_path)],
                                         stdout=subprocess.PIPE, text=True)
            line = self.proc.stdout.readline().strip()
            if line != "ready":
                x.stop_process(self.proc)
                raise RuntimeError(f"impairing bridge did not start: {line!r}")

    def how(self):
        p = self.params
        what = (f"{p['loss'] * 100:g} % loss, {p['delay_s'] * 1000:g} ± {p['jitter_s'] * 1000:g} ms delay, "
                f"{p['reorder'] * 100:g} % sent at once (reordered), both directions")
        return f"tc netem on the middlebox: {what}" if self.netem else \
            f"user-space bridge on the middlebox (no netem in this kernel): {what}"

    def stats(self):
        """The bridge's frame counts (after `close()`); {} for netem."""
        if self.stats_path.exists():
            return json.loads(self.stats_path.read_text())
        return {}

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                x.stop_process(self.proc)
        self.proc = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


if __name__ == "__main__":
    print("netem available" if os.geteuid() == 0 and netem_available() else "no netem (or not root)")
