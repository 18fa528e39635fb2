"""The fused whole-context checksum equals the general walk + tree path, entry for entry, and reads
nothing when nothing changed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pybuild.context import statcache
from pybuild.context.checksum import READS, Checksummer
from pybuild.context.context import checksum_context, open_context
from pybuild.context.ignore import PatternMatcher
from pybuild.context.statcache import StatCache
from pybuild.context.walk import walk
from pybuild.context.wholetree import checksum_whole_tree


def make_tree(root: Path) -> Path:
    (root / "src/pkg/deep").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "src/a.py").write_text("print('a')\n")
    (root / "src/pkg/b.py").write_text("b = 1\n")
    (root / "src/pkg/deep/c.txt").write_bytes(os.urandom(5000))
    (root / "README.md").write_text("hello\n")
    (root / "with space.txt").write_text("s\n")
    (root / "src/link").symlink_to("a.py")
    (root / "abs-link").symlink_to("/etc/passwd")
    os.mkfifo(root / "fifo")
    (root / os.fsdecode(b"bad-\xff-name")).write_text("x\n")
    (root / "Ünïcode").write_text("u\n")
    (root / "node_modules/x").mkdir(parents=True)
    (root / "node_modules/x/index.js").write_text("js\n")
    return root


def general(root: Path, excludes: tuple[str, ...]) -> dict[str, bytes]:
    result = Checksummer(str(root)).tree(walk(str(root), excludes=excludes))
    return dict(result.nodes)


def fused(root: Path, excludes: tuple[str, ...], cache: StatCache | None = None) -> dict[str, bytes]:
    matcher = PatternMatcher(excludes) if excludes else None
    result = checksum_whole_tree(Checksummer(str(root), cache), matcher.matches if matcher else None)
    return dict(result.nodes)


@pytest.mark.parametrize("excludes", [(), ("node_modules",), ("**/*.py", "README.md"), ("src/pkg",)])
def test_fused_equals_general(tmp_path: Path, excludes: tuple[str, ...]) -> None:
    root = make_tree(tmp_path / "ctx")
    assert fused(root, excludes) == general(root, excludes)


def test_equal_after_changes_and_through_the_stat_cache(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx")
    cache = StatCache.load(str(root), str(tmp_path / "store"))
    first = fused(root, (), cache)
    assert first == general(root, ())
    (root / "src/pkg/b.py").write_text("b = 2\n")
    (root / "src/new.py").write_text("new\n")
    os.remove(root / "README.md")
    again = fused(root, (), cache)
    assert again == general(root, ())
    assert again[""] != first[""] and again["src/pkg/b.py"] != first["src/pkg/b.py"]
    assert again["src/a.py"] == first["src/a.py"]


def test_warm_pass_reads_nothing_and_touch_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / "store"))
    monkeypatch.setattr(statcache, "RACY_WINDOW_NS", 0)  # the files were just made; don't wait 3 s
    root = make_tree(tmp_path / "ctx")
    ctx = open_context(str(root), require_dockerfile=False)
    cold = checksum_context(ctx)
    READS.reset()
    warm = checksum_context(ctx)
    assert READS.files == 0 and warm.checksum == cold.checksum
    os.utime(root / "src/a.py")  # touch: mtime only
    assert checksum_context(ctx).checksum == cold.checksum


def test_special_files_are_reported(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx")
    skipped: list[tuple[str, str]] = []
    result = checksum_whole_tree(Checksummer(str(root)), None, lambda p, r: skipped.append((p, r)))
    assert [p for p, _ in skipped] == ["fifo"] and "fifo" not in result.nodes


def test_dockerignore_with_exceptions_uses_the_general_path(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx")
    (root / ".dockerignore").write_text("src\n!src/pkg/b.py\n")
    ctx = open_context(str(root), require_dockerfile=False)
    nodes = dict(checksum_context(ctx).nodes)
    assert nodes == general(root, ("src", "!src/pkg/b.py"))
    assert "src/pkg/b.py" in nodes and "src/a.py" not in nodes
