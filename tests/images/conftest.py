"""Fixtures for the module-image tests: the example kind built as a real
image, the test stand-in that loads it into a user-space tap
(`tap/userspace/examples/image_tap.rs`), and the preload library."""
import hashlib
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PRELOAD = os.environ.get("L45_PRELOAD", str(ROOT / "target" / "release" / "libl45tap.so"))
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target")))


@pytest.fixture(scope="session")
def xor_image():
    """The udp-xor-mask image (L45_KIND_IMAGE, or built here with cargo)."""
    given = os.environ.get("L45_KIND_IMAGE")
    if given:
        return pathlib.Path(given)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path",
                    str(ROOT / "modules/examples/udp-xor-mask/Cargo.toml"),
                    "--target-dir", str(TARGET / "kinds")], check=True)
    return TARGET / "kinds" / "release" / "libudp_xor_mask.so"


@pytest.fixture(scope="session")
def image_tap():
    """The stand-in for the agent's image path (L45_IMAGE_TAP, or built)."""
    given = os.environ.get("L45_IMAGE_TAP")
    if given:
        return given
    subprocess.run(["cargo", "build", "--quiet", "-p", "l45-tap-userspace",
                    "--example", "image_tap"], check=True, cwd=ROOT)
    return str(TARGET / "debug" / "examples" / "image_tap")


@pytest.fixture
def stored_image(tmp_path, xor_image):
    """The image stored as the agent stores it (owner-only), and its digest."""
    data = xor_image.read_bytes()
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    path = state / "udp-xor-mask.so"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path, hashlib.sha256(data).hexdigest()
