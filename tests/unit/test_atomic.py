"""atomic: a file replaced whole (temp beside it, fsync, os.replace, fsync of the directory), the temp file
never left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pybuild.atomic import AtomicFile, write_atomic


def test_write_atomic_replaces_the_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "index.json"
    path.write_bytes(b"old")
    write_atomic(str(path), b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["index.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    write_atomic(str(path), b"again", mode=0o644)
    assert path.read_bytes() == b"again" and stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_failed_block_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), AtomicFile(str(path), prefix=".config.json-") as out:
        out.write(b"half")
        assert [n for n in os.listdir(tmp_path) if n.startswith(".config.json-")]
        raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["config.json"]


def test_a_failed_replace_removes_the_temp(tmp_path: Path) -> None:
    target = tmp_path / "dir"
    target.mkdir()
    (target / "x").write_bytes(b"")  # os.replace of a file onto a non-empty directory fails
    with pytest.raises(OSError):
        write_atomic(str(target), b"data")
    assert sorted(os.listdir(tmp_path)) == ["dir"]


def test_making_the_temp_fails_before_anything(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        AtomicFile(str(tmp_path / "missing" / "file"))
