"""Fixtures for the user-space tap tests (helpers: taplab.py)."""
import subprocess
import tempfile

import pytest

from taplab import TapAgent


@pytest.fixture
def make_agent(tmp_path):
    made = []

    def make():
        a = TapAgent(tempfile.mkdtemp(dir=tmp_path))
        made.append(a)
        return a
    yield make
    for a in made:
        a.stop()


@pytest.fixture
def tap(make_agent):
    return make_agent()


@pytest.fixture
def procs():
    """Processes a test starts; terminated at the end."""
    started = []
    yield started
    for p in started:
        stop = getattr(p, "stop", None)
        if stop:
            stop()
        elif p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
