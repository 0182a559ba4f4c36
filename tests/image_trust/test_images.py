"""Module images end to end: l45-nco builds and signs a real shared object,
pushes it to a real agent over NETCONF; the agent verifies before it
stores anything, keeps images owner-only, lists them, refuses every bad
image with an rpc-error, guards the trusted-signer list with NACM, keeps
images across a restart and refuses removing an image in use."""
import base64
import hashlib
import os
import pathlib
import stat
import subprocess

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization
from lxml import etree
from ncclient.operations.rpc import RPCError
from ncclient.xml_ import to_ele

from conftest import BASE, NS

NSMAP = {"l": NS}


def public_bytes(private):
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(pub):
    return hashlib.sha256(pub).hexdigest()[:16]


def nco_private(world):
    return Ed25519PrivateKey.from_private_bytes(world["nco"].key.read_bytes())


def trust(nc, name, pub):
    nc.edit_config(target="running", config=(
        f'<config xmlns="{BASE}"><images xmlns="{NS}"><trusted-signer><name>{name}</name>'
        f"<public-key>{base64.b64encode(pub).decode()}</public-key></trusted-signer></images></config>"))


def trust_nco(world, nc):
    trust(nc, "nco", public_bytes(nco_private(world)))


def manifest(image, private, kind="udp-xor-mask", abi=1, target="userspace-x86_64", size=None, sha=None,
             signer=None):
    return (f"l45-image-manifest 1\nkind {kind}\nabi-version {abi}\ntarget {target}\n"
            f"sha256 {sha or hashlib.sha256(image).hexdigest()}\nsize {len(image) if size is None else size}\n"
            f"built-at 2026-12-06T03:40:00Z\nsigner {signer or key_id(public_bytes(private))}\n")


def install(nc, image_b64, manifest_text, signature):
    from xml.sax.saxutils import escape
    return nc.dispatch(to_ele(
        f'<install-module xmlns="{NS}"><image>{image_b64}</image><manifest>{escape(manifest_text)}</manifest>'
        f"<signature>{base64.b64encode(signature).decode()}</signature></install-module>"))


def images_state(nc):
    reply = nc.get(filter=("subtree", f'<images xmlns="{NS}"><image/></images>'))
    root = etree.fromstring(reply.xml.encode())
    return {i.findtext("l:sha256", namespaces=NSMAP): i for i in root.iterfind(".//l:image", NSMAP)}


def stored(agent):
    d = agent.state / "images"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def as_nobody(args):
    return subprocess.run(["runuser", "-u", "nobody", "--", *args], capture_output=True, text=True)


def test_build_writes_a_signed_image_and_an_owner_only_key(world):
    built, nco = world["built"], world["nco"]
    image = pathlib.Path(built["path"])
    data = image.read_bytes()
    assert data[:4] == b"\x7fELF"
    assert built["kind"] == "udp-xor-mask" and built["target"] == f"userspace-{os.uname().machine}"
    assert built["sha256"] == hashlib.sha256(data).hexdigest()
    text = pathlib.Path(str(image) + ".manifest").read_bytes()
    sig = pathlib.Path(str(image) + ".sig").read_bytes()
    # The signature verifies over the manifest's exact bytes with the key
    # `images key` prints.
    key = nco.json("images", "key")
    pub = base64.b64decode(key["public_key"].removeprefix("ed25519:"))
    assert key["key_id"] == key_id(pub) and f"signer {key['key_id']}\n".encode() in text
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    Ed25519PublicKey.from_public_bytes(pub).verify(sig, text)
    assert stat.S_IMODE(nco.key.stat().st_mode) == 0o600
    assert as_nobody(["cat", str(nco.key)]).returncode != 0
    # A key file others may read is refused, not used.
    os.chmod(nco.key, 0o640)
    try:
        p = nco.run("images", "key", check=False)
        assert p.returncode != 0 and "mode 0640" in p.stderr, p.stderr
    finally:
        os.chmod(nco.key, 0o600)


def test_a_crate_without_the_entry_symbol_is_refused(world, tmp_path):
    crate = tmp_path / "nosym"
    (crate / "src").mkdir(parents=True)
    toml = (world["crate"] / "Cargo.toml").read_text().replace("l45-test-kind", "l45-test-nosym")
    (crate / "Cargo.toml").write_text(toml)
    (crate / "src" / "lib.rs").write_text("#[no_mangle]\npub extern \"C\" fn something_else() {}\n")
    p = world["nco"].run("images", "build", crate, "--out", tmp_path / "out", check=False)
    assert p.returncode != 0 and "does not export l45_kind_v1" in p.stderr, p.stderr
    assert not (tmp_path / "out").exists()


def test_kernel_target_needs_a_built_kernel_tree(world, tmp_path):
    p = world["nco"].run("images", "build", world["crate"], "--kernel-tree", tmp_path,
                         "--out", tmp_path / "out", check=False)
    assert p.returncode != 0, p.stdout
    assert "kernel" in p.stderr and str(tmp_path) in p.stderr, p.stderr
    assert not list((tmp_path / "out").glob("*.ko*")) if (tmp_path / "out").exists() else True


def test_push_install_deploy_restart_remove(world, agent):
    nco, built = world["nco"], world["built"]
    nco.run("devices", "add", f"dev{agent.port}", "--address", f"127.0.0.1:{agent.port}", "--key", agent.key)
    with agent.connect() as nc:
        trust_nco(world, nc)
    device = f"dev{agent.port}"
    out = nco.json("images", "push", built["path"], "--device", device)
    assert out == [{"device": device, "ok": True, "sha256": built["sha256"], "error": None}], out
    sha = built["sha256"]
    assert stored(agent) == [sha]
    d = agent.state / "images" / sha
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for f in ("image", "manifest", "signature", "meta"):
        assert stat.S_IMODE((d / f).stat().st_mode) == 0o600, f
    assert (d / "image").read_bytes() == pathlib.Path(built["path"]).read_bytes()
    assert as_nobody(["cat", str(d / "image")]).returncode != 0
    listed = nco.json("images", "list")
    assert [(i["sha256"], i["devices"]) for i in listed] == [(sha, [device])]

    # A module of the installed kind, deployed through the NCO.
    nco.json("modules", "deploy", "--device", device, "--name", "xor", "--kind", "udp-xor-mask",
             "--param", "mask=5a", "--param", "offset=0")
    with agent.connect() as nc:
        cfg = etree.fromstring(nc.get_config(source="running", filter=(
            "subtree", f'<customizations xmlns="{NS}"/>')).xml.encode())
        assert cfg.findtext(".//l:installed/l:kind-name", namespaces=NSMAP) == "udp-xor-mask"
        assert cfg.findtext(".//l:installed/l:arguments", namespaces=NSMAP) == "mask=5a;offset=0"
        img = images_state(nc)[sha]
        assert img.findtext("l:kind", namespaces=NSMAP) == "udp-xor-mask"
        assert img.findtext("l:signer", namespaces=NSMAP) == "nco"
        assert img.findtext("l:size", namespaces=NSMAP) == str(built["size"])
        mid = cfg.findtext(".//l:module/l:id", namespaces=NSMAP)
        assert [u.text for u in img.iterfind("l:used-by", NSMAP)] == [mid]
        # In use: removal is refused and nothing is deleted.
        with pytest.raises(RPCError) as e:
            nc.dispatch(to_ele(f'<remove-image xmlns="{NS}"><sha256>{sha}</sha256></remove-image>'))
        assert (e.value.tag, e.value.app_tag) == ("in-use", "image-in-use"), e.value.message
        assert stored(agent) == [sha]

    # Restart: the image is verified and loaded again before the stored
    # configuration, so the module using it comes back.
    agent.stop()
    agent.start()
    log = (agent.dir / "agent.log").read_text()
    assert "stored module image loaded" in log
    with agent.connect() as nc:
        assert sha in images_state(nc)
        cfg = nc.get_config(source="running", filter=("subtree", f'<customizations xmlns="{NS}"/>')).xml
        assert "udp-xor-mask" in cfg
        # Module gone → the image can go.
        nc.edit_config(target="running", config=(
            f'<config xmlns="{BASE}"><customizations xmlns="{NS}" xmlns:nc="{BASE}">'
            f'<module nc:operation="delete"><id>{mid}</id></module></customizations></config>'))
        nc.dispatch(to_ele(f'<remove-image xmlns="{NS}"><sha256>{sha}</sha256></remove-image>'))
        assert images_state(nc) == {}
    assert stored(agent) == []


def test_push_refuses_a_device_whose_target_has_no_image(world, agent, tmp_path):
    nco = world["nco"]
    # An image signed for another target only.
    private = nco_private(world)
    data = b"\x7fELF not for this device"
    img = tmp_path / "k.ko"
    img.write_bytes(data)
    text = manifest(data, private, target="kernel-6.12.118-x86_64")
    pathlib.Path(str(img) + ".manifest").write_text(text)
    pathlib.Path(str(img) + ".sig").write_bytes(private.sign(text.encode()))
    device = f"dev{agent.port}"
    nco.run("devices", "add", device, "--address", f"127.0.0.1:{agent.port}", "--key", agent.key)
    out = nco.json("images", "push", img, "--device", device, check=False)
    assert out[0]["ok"] is False
    err = out[0]["error"]
    assert f"device {device}" in err and f"userspace-{os.uname().machine}" in err \
        and "kernel-6.12.118-x86_64" in err, err
    assert stored(agent) == []


def bad_cases():
    """(name, build(world, private) → (image b64, manifest, signature) or
    a setup step, the expected error-tag and error-app-tag)."""
    other = Ed25519PrivateKey.generate()
    image = b"\x7fELF a test image " * 8

    def b64(d):
        return base64.b64encode(d).decode()

    def signed(private, **kw):
        text = manifest(image, private, **kw)
        return b64(image), text, private.sign(text.encode())

    def unknown_signer(p):
        return signed(other)

    def bad_signature(p):
        i, t, s = signed(p)
        return i, t, bytes([s[0] ^ 1]) + s[1:]

    def digest_mismatch(p):
        i, t, s = signed(p)
        return b64(image[:-1] + b"X"), t, s

    def wrong_abi(p):
        return signed(p, abi=2)

    def wrong_target(p):
        return signed(p, target="kernel-6.12.118-x86_64")

    def malformed(p):
        text = manifest(image, p).replace("kind ", "kind  ")
        return b64(image), text, p.sign(text.encode())

    def oversized(p):
        return signed(p)

    return [
        ("unknown-signer", unknown_signer, "invalid-value", "signer-not-trusted", None),
        ("bad-signature", bad_signature, "invalid-value", "signature-invalid", None),
        ("digest-mismatch", digest_mismatch, "invalid-value", "image-digest-mismatch", None),
        ("wrong-abi", wrong_abi, "invalid-value", "abi-unsupported", None),
        ("wrong-target", wrong_target, "invalid-value", "target-mismatch", None),
        ("malformed-manifest", malformed, "invalid-value", "manifest-malformed", None),
        ("oversized", oversized, "too-big", "image-too-large", 64),
    ]


@pytest.mark.parametrize("name,make,tag,app_tag,limit", bad_cases(), ids=[c[0] for c in bad_cases()])
def test_bad_images_are_refused_and_nothing_is_stored(world, agent, name, make, tag, app_tag, limit):
    with agent.connect() as nc:
        trust_nco(world, nc)
        if limit:
            nc.edit_config(target="running", config=(
                f'<config xmlns="{BASE}"><images xmlns="{NS}"><max-image-size>{limit}</max-image-size>'
                "</images></config>"))
        image_b64, text, sig = make(nco_private(world))
        with pytest.raises(RPCError) as e:
            install(nc, image_b64, text, sig)
        assert (e.value.tag, e.value.app_tag) == (tag, app_tag), (name, e.value.message)
        assert e.value.message
        assert images_state(nc) == {}
    assert stored(agent) == []


def test_truncated_base64_is_an_rpc_error(world, agent):
    with agent.connect() as nc:
        trust_nco(world, nc)
        private = nco_private(world)
        data = b"\x7fELF truncated"
        text = manifest(data, private)
        cut = base64.b64encode(data).decode()[:-3]
        with pytest.raises(RPCError) as e:
            install(nc, cut, text, private.sign(text.encode()))
        assert e.value.tag in ("invalid-value", "bad-element"), e.value.tag
        assert images_state(nc) == {}
    assert stored(agent) == []


def test_a_reader_cannot_see_or_change_trust_nor_install(world, agent):
    with agent.connect() as nc:
        trust_nco(world, nc)
        assert "trusted-signer" in nc.get_config(source="running").xml
    private = nco_private(world)
    data = b"\x7fELF by a reader"
    text = manifest(data, private)
    with agent.connect("operator") as reader:
        assert "trusted-signer" not in reader.get_config(source="running").xml
        assert "trusted-signer" not in reader.get(filter=("subtree", f'<images xmlns="{NS}"/>')).xml
        with pytest.raises(RPCError) as e:
            trust(reader, "mine", public_bytes(Ed25519PrivateKey.generate()))
        assert e.value.tag == "access-denied"
        with pytest.raises(RPCError) as e:
            install(reader, base64.b64encode(data).decode(), text, private.sign(text.encode()))
        assert e.value.tag == "access-denied"
    assert stored(agent) == []
