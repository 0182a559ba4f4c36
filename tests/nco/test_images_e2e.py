"""Module images end to end: the NCO builds the example kind
(`modules/examples/udp-xor-mask`) into a signed image, installs it on two
devices running the user-space tap and deploys a module of that kind to
both; dig → dnsmasq works through it and the queries on the wire carry the
kind's masking, not the application's bytes."""
import base64
import os
import pathlib

from taplab import BASE, NS, Capture, Dnsmasq, dig

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "modules" / "examples" / "udp-xor-mask"
KEY = bytes.fromhex("5aa5c33c")


def trust(dev, public_key):
    """Adds the NCO's signing key (`images key`: `ed25519:BASE64`) to the
    device's trusted signers."""
    algorithm, b64 = public_key.split(":", 1)
    assert algorithm == "ed25519" and len(base64.b64decode(b64)) == 32
    dev.nc.edit_config(target="running", config=(
        f'<config xmlns="{BASE}"><images xmlns="{NS}"><trusted-signer><name>nco</name>'
        f"<public-key>{b64}</public-key></trusted-signer></images></config>"))


def test_example_kind_built_signed_installed_and_customizing_dns(nco, make_tap, tmp_path, cleanup):
    client_dev, server_dev = make_tap(), make_tap()
    # dnsmasq drops to its own user before it reads the published image:
    # as in /dev/shm (the agent's default), that user may enter the
    # directory of the control file (the test's is private by default).
    os.chmod(server_dev.shm_dir, 0o755)
    dns = Dnsmasq(tmp_path, env=server_dev.env())
    cleanup.append(dns)
    nco.add_tap_device("client", client_dev, role="client")
    nco.add_tap_device("server", server_dev, role="server")

    built = nco.json("images", "build", EXAMPLE, "--out", tmp_path / "images")
    built = built[0] if isinstance(built, list) else built
    assert built["kind"] == "udp-xor-mask" and built["target"].startswith("userspace-"), built
    public_key = nco.json("images", "key")["public_key"]
    for dev in (client_dev, server_dev):
        trust(dev, public_key)
    pushed = nco.json("images", "push", built["path"], "--device", "client", "--device", "server")
    assert sorted(p["device"] for p in pushed if p["ok"]) == ["client", "server"], pushed

    rule = ["--name", "xor", "--kind", "udp-xor-mask", "--priority", "10", "--protocol", "udp",
            "--param", f"key={KEY.hex()}"]
    nco.json("modules", "deploy", "--device", "client", *rule, "--dst-port", str(dns.port))
    nco.json("modules", "deploy", "--device", "server", *rule, "--src-port", str(dns.port))

    capture = Capture(tmp_path / "dns.pcap", f"udp port {dns.port}")
    try:
        results = [dig(dns.port, env=client_dev.env()) for _ in range(3)]
    finally:
        packets = capture.stop()
    assert all(ok for ok, _ in results), results[-1][1]
    queries = [payload for proto, _, dport, payload in packets if proto == "udp" and dport == dns.port]
    assert len(queries) >= 3, packets
    for q in queries:
        # MARKER ‖ (query XOR key): the DNS header's flags byte (0x01, RD)
        # is not on the wire as the application wrote it.
        assert q[:4] == b"L45x", q[:16]
        body = bytes(b ^ KEY[i % len(KEY)] for i, b in enumerate(q[4:]))
        assert body[4:6] == b"\x00\x01" and body != q[4:], body[:12]
