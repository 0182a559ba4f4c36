"""Fixtures of the package tests: the .deb files packaging/build-debs.sh
builds and a fresh throwaway Debian root per test (debroot.py)."""
import pytest

from debroot import base_tarball, build_debs, extract


@pytest.fixture(scope="session")
def debs(tmp_path_factory):
    return build_debs(tmp_path_factory.mktemp("debs"))


@pytest.fixture(scope="session")
def base():
    return base_tarball()


@pytest.fixture
def root(base, tmp_path):
    return extract(base, tmp_path / "root")
