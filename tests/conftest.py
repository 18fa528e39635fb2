"""Shared test fixtures.

The conformance data lives in `../shared/conformance` beside the repository. Tests that need it use
`conformance_path()`: it fails the test when the data is absent in CI (CI=true) and skips it with a reason
elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFORMANCE = Path(os.environ.get("PYBUILD_CONFORMANCE", REPO.parent / "shared" / "conformance"))


def conformance_path(*parts: str) -> Path:
    """Path of a file under the shared conformance data; fails in CI and skips elsewhere when missing."""
    path = CONFORMANCE.joinpath(*parts)
    if not path.exists():
        message = f"conformance data missing: {path}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache dir for the session, so compiled-parser caches are made once, not per test."""
    return tmp_path_factory.mktemp("xdg-cache")


@pytest.fixture(autouse=True)
def _isolate_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, _session_cache: Path
) -> None:
    """Keep tests away from the real HOME, XDG dirs and store root."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(_session_cache))
    monkeypatch.setenv("PYBUILD_ROOT", str(home / ".local/share/pybuild"))
