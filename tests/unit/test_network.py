"""The isolated RUN network's set-up errors (worker/network.py): a one-line UserError, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from pybuild.errors import UserError
from pybuild.worker import network


def test_missing_slirp4netns_is_a_clear_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no slirp4netns anywhere
    with pytest.raises(UserError) as caught:
        network.prepare()
    assert "slirp4netns" in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.hint is not None and "--network none" in caught.value.hint


def test_a_closed_pool_keeps_nothing_ready() -> None:
    pool = network.Pool()
    pool.close()
    pool._refill_locked()  # a closed pool never prepares ahead
    assert pool.ready == [] and pool.filling == 0
