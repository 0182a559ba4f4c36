"""A short soak (tools/soak.py): mixed real traffic — dig/dnsmasq, curl
from nginx (or Python's http.server), Node.js and asyncio streams — through
DNS rotations and live chain changes on every stream socket; no corrupted,
failed, lost or hung transfer, and the agent's socket list agrees with
/proc at the end. The ten-minute form is `tools/soak.py`."""
import sys

from taplab import ROOT

sys.path.insert(0, str(ROOT / "tools"))
from soak import Soak  # noqa: E402


def test_short_soak_through_rotations_and_revokes(tmp_path):
    soak = Soak(tmp_path)
    try:
        assert soak.run(seconds=45, round_seconds=9), "soak failed (see its summary above)"
    finally:
        soak.stop()
