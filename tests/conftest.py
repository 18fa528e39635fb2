"""Shared test fixtures.

The conformance data (BuildKit's, moby/patternmatcher's and fsutil's test tables, with their licences) lives
in `tests/conformance/data/`; its README says where each file comes from. Tests that need a file use
`conformance_path()`, which fails the test when the file is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFORMANCE = REPO / "tests" / "conformance" / "data"


def conformance_path(*parts: str) -> Path:
    """Path of a file under the conformance data; fails the test when it is missing."""
    path = CONFORMANCE.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"conformance data missing: {path}")
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
