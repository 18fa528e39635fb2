"""`COPY --chmod` of a directory source: the mode goes to what is copied, not to the destination directory
(BuildKit creates that one 0755, or leaves an existing one alone). Temp dirs only; no root needed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pybuild.context.sources import EntryView
from pybuild.context.walk import walk
from pybuild.worker.fileops import copy_sources


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    ctx, rootfs = tmp_path / "ctx", tmp_path / "rootfs"
    (ctx / "dir" / "sub").mkdir(parents=True)
    (ctx / "dir" / "x.txt").write_text("x")
    (ctx / "dir" / "sub" / "y.txt").write_text("y")
    (ctx / "dir" / "lnk").symlink_to("x.txt")
    for path in (ctx / "dir", ctx / "dir" / "sub"):
        path.chmod(0o755)
    rootfs.mkdir()
    return ctx, rootfs


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.parametrize(("source", "dest"), [
    ("dir", "/chmoddir/"), ("dir/", "/chmoddir"), ("dir", "/chmoddir"),
])
def test_chmod_spares_the_destination_directory(trees: tuple[Path, Path], source: str, dest: str) -> None:
    ctx, rootfs = trees
    copy_sources(str(rootfs), [source], dest, view=EntryView(walk(str(ctx))), source_root=str(ctx),
                 chmod="0750")
    assert _mode(rootfs / "chmoddir") == 0o755
    assert _mode(rootfs / "chmoddir" / "sub") == 0o750
    assert _mode(rootfs / "chmoddir" / "x.txt") == 0o750
    assert _mode(rootfs / "chmoddir" / "sub" / "y.txt") == 0o750
    assert (rootfs / "chmoddir" / "lnk").is_symlink()


def test_chmod_leaves_an_existing_destination_alone(trees: tuple[Path, Path]) -> None:
    ctx, rootfs = trees
    (rootfs / "existing").mkdir()
    (rootfs / "existing").chmod(0o700)
    copy_sources(str(rootfs), ["dir"], "/existing/", view=EntryView(walk(str(ctx))), source_root=str(ctx),
                 chmod="0640")
    assert _mode(rootfs / "existing") == 0o700
    assert _mode(rootfs / "existing" / "x.txt") == 0o640
