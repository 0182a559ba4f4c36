"""Matching on facts the tap looks up only when a rule needs them (thread
name, our own port): a real tapped process, datagrams checked as they
arrive at an untapped receiver."""
import pathlib
import socket
import subprocess
import sys

from taplab import dns_query, module

CLIENT = r"""
import ctypes, socket, sys, threading
port, bound, query = int(sys.argv[1]), int(sys.argv[2]), bytes.fromhex(sys.argv[3])
libc = ctypes.CDLL(None, use_errno=True)

def send(s, close=True):
    s.sendto(query, ("127.0.0.1", port))
    if close:
        s.close()

send(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))   # main thread, ephemeral port

kept = []
def named():
    assert libc.prctl(15, b"l45-probe", 0, 0, 0) == 0      # PR_SET_NAME
    kept.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    send(kept[0], close=False)                           # stays open: see the socket table
t = threading.Thread(target=named)
t.start()
t.join()

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", bound))
send(s)
print("sent", flush=True)
sys.stdin.readline()
"""


def tag_params(tag):
    return f"<dns-tag><tag>{tag}</tag></dns-tag>"


def bound_udp():
    """A UDP socket bound to a free loopback port, and that port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(10)
    return s, s.getsockname()[1]


def test_thread_name_and_source_port_rules_pick_exactly_their_sockets(tap):
    rx, port = bound_udp()
    spare, bound = bound_udp()
    spare.close()  # the client binds this port itself
    with rx:
        tap.edit(
            module(1, "dns-front-tag", 10, "<protocol>udp</protocol><thread-name>l45-probe</thread-name>",
                   tag_params("THREADxx")),
            module(2, "dns-front-tag", 10, f"<protocol>udp</protocol><source-port>{bound}</source-port>",
                   tag_params("SRCPORTx")))
        query = dns_query()
        p = subprocess.Popen([sys.executable, "-c", CLIENT, str(port), str(bound), query.hex()],
                             env=tap.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            assert p.stdout.readline().strip() == "sent", p.stderr.read()
            got = [rx.recvfrom(4096) for _ in range(3)]
            _, socks = tap.state()
        finally:
            p.communicate("\n", timeout=30)
        assert p.returncode == 0, p.stderr

    payloads = [data for data, _ in got]
    assert payloads[0] == query, "main thread, ephemeral port: no rule names it"
    assert payloads[1] == b"THREADxx" + query, "the thread named l45-probe"
    assert payloads[2] == b"SRCPORTx" + query and got[2][1][1] == bound, "the socket bound to the rule's port"
    mods, _ = tap.state()
    assert int(mods[1]["messages-sent"]) == 1 and int(mods[2]["messages-sent"]) == 1, mods
    # The thread's socket as `get` shows it: its port was not needed for
    # matching (the rule names the thread), so the agent read it from /proc.
    probe_port = str(got[1][1][1])
    assert [s for s in socks if s["modules"] == [1]] == [
        {"process": pathlib.Path(sys.executable).name[:15], "modules": [1], "protocol": "udp", "source-port": probe_port,
         "thread": "l45-probe", "destination": "127.0.0.1"}], socks


CONNECTED_CLIENT = r"""
import socket, sys
port, query = int(sys.argv[1]), bytes.fromhex(sys.argv[2])
live = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
live.connect(("127.0.0.1", port))
for line in sys.stdin:
    if line.strip() == "new":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("127.0.0.1", port))
        s.send(query)
        s.close()
    else:
        live.send(query)
    print("sent", flush=True)
"""


def test_connected_udp_socket_sighted_with_nothing_attached_keeps_first_sight_semantics(tap):
    """A connected UDP socket that attached nothing at connect is settled
    without a lock or a record. After a configuration change it must still
    behave as an already-sighted live socket: a new module does not attach
    to it, an immediate one does, and a new socket gets the new module."""
    rx, port = bound_udp()
    other, other_port = bound_udp()
    with rx, other:
        # A rule for UDP from this process, for another port: first sight
        # has a candidate to check, and it does not match.
        tap.edit(module(1, "dns-front-tag", 10,
                        f"<protocol>udp</protocol><destination-port>{other_port}</destination-port>",
                        tag_params("OTHERxxx")))
        query = dns_query()
        p = subprocess.Popen([sys.executable, "-c", CONNECTED_CLIENT, str(port), query.hex()],
                             env=tap.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)

        def send(what="live"):
            p.stdin.write(what + "\n")
            p.stdin.flush()
            assert p.stdout.readline().strip() == "sent", p.stderr.read()
            return rx.recvfrom(4096)[0]

        try:
            assert send() == query, "nothing attached at connect"
            tap.edit(module(2, "dns-front-tag", 10, f"<protocol>udp</protocol><destination-port>{port}</destination-port>",
                            tag_params("NEWSOCKx")))
            assert send() == query, "a live socket does not take a new, non-immediate module"
            tap.edit(module(3, "dns-front-tag", 20, f"<protocol>udp</protocol><destination-port>{port}</destination-port>",
                            tag_params("IMMEDIAT"), extra="<attach>immediate</attach>"))
            assert send() == b"IMMEDIAT" + query, "an immediate module attaches to the live socket"
            assert send("new") == b"NEWSOCKx" + query, "a new socket: first sight, priority 10 first"
        finally:
            p.communicate("", timeout=30)
        assert p.returncode == 0, p.stderr
    mods, _ = tap.state()
    assert int(mods[1]["messages-sent"]) == 0, mods


CYCLING_CLIENT = r"""
import socket, sys
ports, query = [int(p) for p in sys.argv[1:3]], bytes.fromhex(sys.argv[3])
for line in sys.stdin:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("127.0.0.1", ports[int(line)]))
    s.send(query)
    print(s.fileno(), flush=True)
    s.close()
"""


def test_a_closed_sockets_chain_serves_the_next_socket_on_its_number_only_if_first_sight_agrees(tap):
    """dig opens a socket per query, and it gets the same descriptor number
    each time: the tap keeps a closed connected-UDP socket's chain for the
    next socket on the number that connects to the same port at the same
    generation. Every socket must still see exactly what first sight would
    give it: another port, or a configuration change in between, match
    anew; module socket counts and the socket table show live sockets only."""
    rx, port = bound_udp()
    other, other_port = bound_udp()
    with rx, other:
        tap.edit(module(1, "dns-front-tag", 10, f"<protocol>udp</protocol><destination-port>{port}</destination-port>",
                        tag_params("CYCLEDxx")))
        query = dns_query()
        p = subprocess.Popen([sys.executable, "-c", CYCLING_CLIENT, str(port), str(other_port), query.hex()],
                             env=tap.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)

        def cycle(which):
            p.stdin.write(f"{which}\n")
            p.stdin.flush()
            fd = p.stdout.readline().strip()
            assert fd, p.stderr.read()
            return fd, (rx if which == 0 else other).recvfrom(4096)[0]

        try:
            runs = [cycle(0) for _ in range(4)]
            assert len({fd for fd, _ in runs}) == 1, f"one descriptor number, reused: {runs}"
            assert all(data == b"CYCLEDxx" + query for _, data in runs), runs
            mods, socks = tap.state()
            assert mods[1]["socket-count"] == "0" and mods[1]["messages-sent"] == "4", mods
            assert not [s for s in socks if s["modules"]], "closed sockets are not listed"
            assert cycle(1)[1] == query, "another port: no module"
            assert cycle(0)[1] == b"CYCLEDxx" + query, "back to the rule's port: attached again"
            # Module 1 deprecated, module 2 deployed for the same port: a kept
            # chain would carry module 1 over (live sockets keep deprecated
            # modules); first sight gives module 2 alone.
            tap.edit(module(1, "dns-front-tag", 10, f"<protocol>udp</protocol><destination-port>{port}</destination-port>",
                            tag_params("CYCLEDxx"), extra="<deprecated>true</deprecated>"),
                     module(2, "dns-front-tag", 20, f"<protocol>udp</protocol><destination-port>{port}</destination-port>",
                            tag_params("SECONDxx")))
            assert cycle(0)[1] == b"SECONDxx" + query, "a new generation: matched anew"
            assert cycle(0)[1] == b"SECONDxx" + query
            tap.set_leaf(2, "activated", "false")
            assert cycle(0)[1] == query, "deactivated: attached, passes through"
            tap.revoke(2)
            tap.revoke(1)
            assert cycle(0)[1] == query, "revoked: nothing attaches"
        finally:
            p.communicate("", timeout=30)
        assert p.returncode == 0, p.stderr
    mods, socks = tap.state()
    assert 1 not in mods and 2 not in mods and not [s for s in socks if s["modules"]], (mods, socks)


RECONNECTING_CLIENT = r"""
import socket, sys
first, second, query = int(sys.argv[1]), int(sys.argv[2]), bytes.fromhex(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(query, ("127.0.0.1", first))   # first sight here, at the first send
s.connect(("127.0.0.1", second))        # not a first sight: the chain stays
s.send(query)
fd = s.fileno()
s.close()
t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
t.connect(("127.0.0.1", second))        # first sight, at connect
t.send(query)
print(fd, t.fileno(), flush=True)
t.close()
"""


def test_a_chain_from_an_earlier_first_sight_is_not_kept_for_a_later_connects_port(tap):
    """A UDP socket first seen at a send to one port keeps that chain when
    it later connects elsewhere; the next socket on its descriptor number
    that connects to that other port must get its own first sight, not the
    first socket's chain."""
    rx_a, port_a = bound_udp()
    rx_b, port_b = bound_udp()
    with rx_a, rx_b:
        tap.edit(module(1, "dns-front-tag", 10, f"<protocol>udp</protocol><destination-port>{port_a}</destination-port>",
                        tag_params("PORTAxxx")),
                 module(2, "dns-front-tag", 20, "<protocol>udp</protocol>", tag_params("ANYPORTx")))
        query = dns_query()
        p = subprocess.run([sys.executable, "-c", RECONNECTING_CLIENT, str(port_a), str(port_b), query.hex()],
                           env=tap.env(), capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        first_fd, second_fd = p.stdout.split()
        assert first_fd == second_fd, "the second socket reuses the number"
        assert rx_a.recvfrom(4096)[0] == b"PORTAxxx" + query
        assert rx_b.recvfrom(4096)[0] == b"PORTAxxx" + query, "the chain is the first sight's"
        assert rx_b.recvfrom(4096)[0] == b"ANYPORTx" + query, "a new socket: its own first sight"
    mods, _ = tap.state()
    assert mods[1]["socket-count"] == "0" and mods[2]["socket-count"] == "0", mods


HOLDING_CLIENT = r"""
import socket, sys
port, query = int(sys.argv[1]), bytes.fromhex(sys.argv[2])
held = []
for _ in range(2):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("127.0.0.1", port))
    s.send(query)
    held.append(s)
print("holding", flush=True)
sys.stdin.readline()
"""


def test_socket_counts_drop_when_a_tapped_process_is_killed(tap):
    """Socket counts are made from the socket table: a process killed with
    its tapped sockets open stops counting (a counter the process kept
    itself would stay up for ever)."""
    rx, port = bound_udp()
    with rx:
        tap.edit(module(1, "dns-front-tag", 10, f"<protocol>udp</protocol><destination-port>{port}</destination-port>",
                        tag_params("HELDxxxx")))
        query = dns_query()
        p = subprocess.Popen([sys.executable, "-c", HOLDING_CLIENT, str(port), query.hex()],
                             env=tap.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert p.stdout.readline().strip() == "holding"
            assert rx.recvfrom(4096)[0] == b"HELDxxxx" + query
            assert rx.recvfrom(4096)[0] == b"HELDxxxx" + query
            mods, socks = tap.state()
            assert mods[1]["socket-count"] == "2", mods
            assert len([s for s in socks if s["modules"]]) == 2, socks
        finally:
            p.kill()
            p.wait()
        mods, socks = tap.state()
        assert mods[1]["socket-count"] == "0", mods
        assert not [s for s in socks if s["modules"]], socks
        assert mods[1]["messages-sent"] == "2", mods


SAME_NUMBER_CLIENT = r"""
import ctypes, socket, sys, threading
port, tcp_port, query = int(sys.argv[1]), int(sys.argv[2]), bytes.fromhex(sys.argv[3])
libc = ctypes.CDLL(None, use_errno=True)
live = []

def udp(host, connect=True):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if connect:
        s.connect((host, port))
        s.send(query)
    else:
        s.sendto(query, (host, port))
    live.append(s)

done = threading.Event()

def named(host, ready):
    assert libc.prctl(15, b"l45-other", 0, 0, 0) == 0      # PR_SET_NAME
    udp(host)
    ready.set()
    done.wait()                                          # alive while listed

threads = []
for line in sys.stdin:
    what, *arg = line.split()
    if what == "close":
        live.pop().close()
        done.set()
        for t in threads:
            t.join()
        threads.clear()
        done.clear()
        print("closed", flush=True)
        continue
    if what == "udp":
        udp(arg[0])
    elif what == "sendto":
        udp(arg[0], connect=False)
    elif what == "thread":
        ready = threading.Event()
        threads.append(threading.Thread(target=named, args=(arg[0], ready)))
        threads[-1].start()
        ready.wait()
    elif what == "tcp":
        s = socket.create_connection(("127.0.0.1", tcp_port))
        live.append(s)
    elif what == "bare":
        live.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    print(live[-1].fileno(), flush=True)
"""


def test_a_record_kept_for_the_next_socket_on_its_number_shows_that_socket(tap):
    """A closed connected-UDP socket's record is kept whole for the next
    socket on its descriptor number that connects with the same key (dig's
    socket per query). Whatever differs must not carry over: another peer
    address or thread is listed as itself; a TCP socket, or a UDP socket
    that sends before it connects, gets its own first sight; closed
    sockets are never listed."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("0.0.0.0", 0))          # both 127.0.0.1 and 127.0.0.2
    rx.settimeout(10)
    port = rx.getsockname()[1]
    listener = socket.create_server(("127.0.0.1", 0))
    with rx, listener:
        tap.edit(module(1, "dns-front-tag", 10, f"<protocol>udp</protocol><destination-port>{port}</destination-port>",
                        tag_params("KEPTxxxx")))
        query = dns_query()
        p = subprocess.Popen([sys.executable, "-c", SAME_NUMBER_CLIENT, str(port), str(listener.getsockname()[1]),
                              query.hex()], env=tap.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)

        def say(line):
            p.stdin.write(line + "\n")
            p.stdin.flush()
            out = p.stdout.readline().strip()
            assert out, p.stderr.read()
            return out

        def listed():
            return [s for s in tap.state()[1] if s["modules"]]

        def use(line, peer="127.0.0.1", thread=None):
            fd = say(line)
            assert rx.recvfrom(4096)[0] == b"KEPTxxxx" + query, line
            socks = listed()
            assert len(socks) == 1 and socks[0]["destination"] == peer, (line, socks)
            if thread:
                assert socks[0]["thread"] == thread, (line, socks)
            assert tap.state()[0][1]["socket-count"] == "1"
            assert say("close") == "closed"
            assert not listed(), f"{line}: a closed socket is not listed"
            assert tap.state()[0][1]["socket-count"] == "0"
            return fd

        try:
            fds = {use("udp 127.0.0.1") for _ in range(3)}
            fds.add(use("udp 127.0.0.2", peer="127.0.0.2"))
            fds.add(use("udp 127.0.0.1"))
            fds.add(use("thread 127.0.0.1", thread="l45-other"))
            fds.add(use("udp 127.0.0.1"))
            assert len(fds) == 1, f"one descriptor number throughout: {fds}"
            # A TCP socket on the number: no rule names TCP, nothing listed.
            assert say("tcp") in fds
            conn, _ = listener.accept()
            conn.close()
            assert not listed()
            assert say("close") == "closed"
            fds.add(use("udp 127.0.0.1"))
            # A UDP socket on the number that closes before it connects.
            assert say("bare") in fds
            assert say("close") == "closed"
            assert not listed() and tap.state()[0][1]["socket-count"] == "0"
            fds.add(use("udp 127.0.0.1"))
            # First sight at a send (no connect) on the number.
            fds.add(use("sendto 127.0.0.2", peer="127.0.0.2"))
            fds.add(use("udp 127.0.0.1"))
            assert len(fds) == 1, fds
        finally:
            p.communicate("", timeout=30)
        assert p.returncode == 0, p.stderr
    mods, _ = tap.state()
    assert mods[1]["messages-sent"] == "11", mods
