"""store.private: store directories are created 0700 whatever the umask, and repaired when found open."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.store.private import make_private_dir, secure_dirs, too_open
from pybuild.store.store import PRIVATE_DIRS, Store


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o000, 0o022, 0o077, 0o277])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """The process umask for the test (0o277 even takes the owner's write bit)."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077])
def test_a_new_store_and_its_missing_parents_are_private_whatever_the_umask(tmp_path: Path, mask: int) -> None:
    old = os.umask(mask)
    try:
        check_new_store(tmp_path)
    finally:
        os.umask(old)


def check_new_store(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir(mode=0o755)
    base.chmod(0o755)
    root = base / "share" / "pybuild"
    with Store.open(str(root)) as store:
        assert store.warnings == ()
    assert mode(base) == 0o755  # a parent that was there is left alone
    assert mode(base / "share") == 0o700  # one made on the way is private (XDG's mode for data dirs)
    for sub in PRIVATE_DIRS:
        assert mode(root / sub) == 0o700, sub
    with Store.open(str(root)) as store:
        assert store.warnings == ()


def test_make_private_dir_creates_with_the_mode_in_one_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           umask: int) -> None:
    """No window where the directory is wider: mkdir gets 0700, and a chmod (if any) only adds owner bits."""
    seen: list[tuple[str, int]] = []
    real_mkdir, real_chmod = os.mkdir, os.chmod

    def mkdir(path: str, mode: int = 0o777, **kwargs: object) -> None:
        seen.append(("mkdir", mode))
        real_mkdir(path, mode)

    def chmod(path: str, mode: int, **kwargs: object) -> None:
        seen.append(("chmod", mode))
        real_chmod(path, mode)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "chmod", chmod)
    assert make_private_dir(str(tmp_path / "a" / "b"))
    assert not make_private_dir(str(tmp_path / "a" / "b"))
    assert {m for _, m in seen} == {0o700}
    assert mode(tmp_path / "a") == mode(tmp_path / "a" / "b") == 0o700


def test_open_directories_are_repaired_and_named_in_one_line(tmp_path: Path) -> None:
    root = tmp_path / "store"
    Store.open(str(root)).close()
    root.chmod(0o755)
    (root / "snapshots").chmod(0o711)
    (root / "run").chmod(0o750)
    with Store.open(str(root)) as store:
        assert len(store.warnings) == 1
        text = store.warnings[0]
    assert "\n" not in text
    assert text.startswith("store directories were open to other users")
    assert text.endswith(f"made them 0700: {root} (was 0755), {root}/snapshots (was 0711), {root}/run (was 0750)")
    assert mode(root) == mode(root / "snapshots") == mode(root / "run") == 0o700


def test_group_traverse_is_accepted_only_for_the_root_group(tmp_path: Path) -> None:
    """docker's 0710: the root group has no one untrusted; any other group is repaired."""
    path = tmp_path / "d"
    path.mkdir()
    path.chmod(0o710)
    st = path.stat()
    assert too_open(st) == (st.st_gid != 0)
    if os.geteuid() == 0:
        os.chown(path, 0, 0)
        assert secure_dirs([str(path)]) is None and mode(path) == 0o710
        os.chown(path, 0, 12345)
        assert secure_dirs([str(path)]) is not None and mode(path) == 0o700
    path.chmod(0o701)
    assert too_open(path.stat())


def test_a_directory_that_cannot_be_repaired_is_said_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "d"
    path.mkdir()
    path.chmod(0o755)

    def refuse(path: str, mode: int, **kwargs: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refuse)
    text = secure_dirs([str(path)])
    assert text is not None and text.endswith(f"cannot make them 0700: {path} (was 0755): Operation not permitted")
