"""Unit tests for `pybuild.context.walk`: symlinks, special files, errors, odd names, pruning, fast Entry."""

from __future__ import annotations

import os
import pickle
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pybuild.context.entry import Entry, entry_from_stat
from pybuild.context.ignore import MatchInfo, PatternMatcher
from pybuild.context.walk import WalkFilter, walk, walk_chain
from pybuild.errors import ContextError


def _paths(root: Path, **kwargs: Any) -> list[str]:
    return [entry.path for entry in walk(str(root), **kwargs)]


def _tree(root: Path, *paths: str) -> None:
    for path in paths:
        target = root / path
        if path.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path)


@pytest.fixture
def scandir_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every directory the walk reads (a counting wrapper around the real os.scandir)."""
    calls: list[str] = []
    real = os.scandir

    def counting(path: Any) -> Any:
        calls.append(os.fsdecode(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", counting)
    return calls


def _deny(monkeypatch: pytest.MonkeyPatch, denied: Path) -> None:
    """Fault injection: reading `denied` fails with EACCES (root ignores mode 000, so chmod cannot)."""
    real = os.scandir

    def guarded(path: Any) -> Any:
        if os.fsdecode(path) == str(denied):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", guarded)


def test_order_is_per_directory_sorted_parents_first(tmp_path: Path) -> None:
    _tree(tmp_path, "a-b", "a/x", "a/b/", "B", "a.c")
    assert _paths(tmp_path) == ["B", "a", "a/b", "a/x", "a-b", "a.c"]


def test_entries_carry_lstat_fields(tmp_path: Path) -> None:
    _tree(tmp_path, "d/f")
    os.chmod(tmp_path / "d/f", 0o4755)
    entries = list(walk(str(tmp_path)))
    expected = [entry_from_stat("d", os.lstat(tmp_path / "d"), "dir"),
                entry_from_stat("d/f", os.lstat(tmp_path / "d/f"), "file")]
    assert entries == expected
    assert all(type(e) is Entry for e in entries)
    assert entries[1].perm == 0o4755
    assert hash(entries[1]) == hash(expected[1])
    assert pickle.loads(pickle.dumps(entries[1])) == expected[1]
    with pytest.raises(AttributeError):
        entries[1].path = "x"  # type: ignore[misc]


def test_symlinks_are_reported_never_followed(tmp_path: Path, scandir_calls: list[str]) -> None:
    outside = tmp_path / "outside"
    outside.write_text("secret")
    root = tmp_path / "ctx"
    root.mkdir()
    os.symlink("/etc", root / "etc")
    os.symlink(str(outside), root / "file")
    os.symlink("missing/target", root / "dangling")
    entries = {e.path: e for e in walk(str(root))}
    assert {p: (e.kind, e.link_target) for p, e in entries.items()} == {
        "dangling": ("symlink", "missing/target"), "etc": ("symlink", "/etc"),
        "file": ("symlink", str(outside)),
    }
    assert entries["file"].size == len(str(outside))  # the link's own lstat, not the target's
    assert scandir_calls == [str(root)]


def test_fifo_and_socket_are_skipped_and_reported(tmp_path: Path) -> None:
    _tree(tmp_path, "a", "z")
    os.mkfifo(tmp_path / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "sock"))
        skipped: list[tuple[str, str]] = []
        assert _paths(tmp_path, on_skip=lambda p, r: skipped.append((p, r))) == ["a", "z"]
    finally:
        sock.close()
    assert skipped == [("pipe", "fifo skipped"), ("sock", "socket skipped")]


def test_excluded_fifo_is_not_reported(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    skipped: list[tuple[str, str]] = []
    assert _paths(tmp_path, excludes=["pipe"], on_skip=lambda p, r: skipped.append((p, r))) == []
    assert skipped == []


def test_odd_names(tmp_path: Path) -> None:
    root = os.fsencode(tmp_path)
    for name in (b"with space", b"new\nline", b"bad\xffbyte", b"\xc3\xa9t\xc3\xa9", b"z"):
        with open(os.path.join(root, name), "w") as fh:
            fh.write("x")
    paths = _paths(tmp_path)
    assert [os.fsencode(p) for p in paths] == [b"bad\xffbyte", b"new\nline", b"with space", b"z",
                                                b"\xc3\xa9t\xc3\xa9"]  # sorted by bytes, like Go
    assert _paths(tmp_path, excludes=["*\n*", "with*"]) == ["bad\udcffbyte", "z", "été"]


def test_missing_and_non_directory_root(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="context directory not found: .*nope"):
        walk(str(tmp_path / "nope"))  # at call time, before iterating
    (tmp_path / "file").write_text("x")
    with pytest.raises(ContextError, match="is not a directory"):
        walk(str(tmp_path / "file"))


def test_bad_pattern_fails_at_call_time(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="invalid exclude patterns"):
        walk(str(tmp_path), excludes=["a["])
    with pytest.raises(ContextError, match="invalid include patterns"):
        walk(str(tmp_path), includes=["!"])


def test_unreadable_directory_that_matters_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tree(tmp_path, "a/secret/f", "b")
    _deny(monkeypatch, tmp_path / "a/secret")
    with pytest.raises(ContextError, match="cannot read directory a/secret: Permission denied"):
        list(walk(str(tmp_path)))
    with pytest.raises(ContextError, match="a/secret"):
        list(walk(str(tmp_path), includes=["a/secret/f"]))


def test_unreadable_directory_in_unused_part_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tree(tmp_path, "unused/secret/f", "src/main.c", "node_modules/x/y")
    _deny(monkeypatch, tmp_path / "unused/secret")
    assert _paths(tmp_path, includes=["src"]) == ["src", "src/main.c"]
    assert _paths(tmp_path, excludes=["unused"]) == ["node_modules", "node_modules/x", "node_modules/x/y",
                                                     "src", "src/main.c"]
    assert _paths(tmp_path, includes=["s*/*.c"]) == ["src", "src/main.c"]


def test_unreadable_speculative_directory_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Entered only because an exception might re-include something: fsutil ignores the error."""
    _tree(tmp_path, "a/secret/f", "a/keep", "b")
    _deny(monkeypatch, tmp_path / "a/secret")
    assert _paths(tmp_path, excludes=["a", "!a/*/f", "!a/keep"]) == ["a", "a/keep", "b"]


def test_vanished_entry_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tree(tmp_path, "a", "gone")
    real = os.scandir

    class Vanishing:
        def __init__(self, path: Any) -> None:
            self.entries = list(real(path))
            os.unlink(tmp_path / "gone")

        def __enter__(self) -> Iterator[os.DirEntry[str]]:
            return iter(self.entries)

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(os, "scandir", Vanishing)
    with pytest.raises(ContextError, match="gone: vanished"):
        list(walk(str(tmp_path)))


def test_huge_unused_subtree_is_not_entered(tmp_path: Path, scandir_calls: list[str]) -> None:
    for i in range(30):
        _tree(tmp_path, f"vendor/pkg{i}/sub/file", f"other{i}/x")
    _tree(tmp_path, "app/src/main.py", "app/README")
    assert _paths(tmp_path, includes=["app/src"]) == ["app", "app/src", "app/src/main.py"]
    assert scandir_calls == [str(tmp_path), str(tmp_path / "app"), str(tmp_path / "app/src")]
    scandir_calls.clear()
    assert _paths(tmp_path, includes=["**/main.py"], excludes=["vendor", "other*"]) == [
        "app", "app/src", "app/src/main.py"]
    assert scandir_calls == [str(tmp_path), str(tmp_path / "app"), str(tmp_path / "app/src")]


def test_excluded_directory_with_exception_is_entered_and_emitted_only_if_needed(tmp_path: Path) -> None:
    _tree(tmp_path, "foo/bar", "foo/baz", "foo2/bar")
    assert _paths(tmp_path, excludes=["foo*", "!foo/bar"]) == ["foo", "foo/bar"]
    assert _paths(tmp_path, excludes=["foo*", "!foo/nothing"]) == []


def test_doublestar_include_only_under(tmp_path: Path) -> None:
    _tree(tmp_path, "a/foo/x", "foo/bar/bee", "foo2", "b/foo")
    expected = ["a", "a/foo", "a/foo/x", "foo", "foo/bar", "foo/bar/bee"]
    assert _paths(tmp_path, includes=["**/foo/**"]) == expected


def test_walk_chain_any_layer_excludes(tmp_path: Path) -> None:
    _tree(tmp_path, "src/a.py", "src/a.pyc", "docs/x")
    layers = [WalkFilter(includes=("src", "docs")), WalkFilter(excludes=("**/*.pyc",)), WalkFilter()]
    assert [e.path for e in walk_chain(str(tmp_path), layers)] == ["docs", "docs/x", "src", "src/a.py"]
    assert [e.path for e in walk_chain(str(tmp_path), [])] == _paths(tmp_path)


# --- differential: the pruning walk equals a brute-force fsutil reference --------------------------------

NAMES = st.sampled_from(["a", "b", "ab", "c.d", "x"])
TREES = st.lists(st.lists(NAMES, min_size=1, max_size=4).map("/".join), min_size=1, max_size=8)
SEGMENTS = st.sampled_from(["a", "b", "ab", "*", "**", "?", "a*", "c.d", "x"])
PATTERN = st.tuples(st.booleans(), st.lists(SEGMENTS, min_size=1, max_size=3).map("/".join))
PATTERNS = st.lists(PATTERN, max_size=3).map(lambda ps: [("!" if neg else "") + p for neg, p in ps])


def _reference(root: str, includes: list[str], excludes: list[str]) -> list[str]:
    """fsutil without its shortcuts: visit everything, keep what passes, then add the parents."""
    inc = PatternMatcher(includes) if includes else None
    exc = PatternMatcher(excludes) if excludes else None
    order: list[str] = []
    kept: set[str] = set()

    def visit(rel: str, infos: tuple[MatchInfo, MatchInfo]) -> None:
        for name in sorted(os.listdir(os.path.join(root, rel) if rel else root)):
            path = f"{rel}/{name}" if rel else name
            ok, child_inc, child_exc = True, MatchInfo(), MatchInfo()
            if inc is not None:
                hit, child_inc = inc.matches_using_parent_results(path, infos[0])
                ok = ok and hit
            if exc is not None:
                hit, child_exc = exc.matches_using_parent_results(path, infos[1])
                ok = ok and not hit
            order.append(path)
            if ok:
                kept.add(path)
            if os.path.isdir(os.path.join(root, path)):
                visit(path, (child_inc, child_exc))

    visit("", (MatchInfo(), MatchInfo()))
    for path in list(kept):
        parts = path.split("/")
        kept.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return [p for p in order if p in kept]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(TREES, PATTERNS, PATTERNS)
def test_walk_matches_brute_force_reference(tmp_path_factory: pytest.TempPathFactory, tree: list[str],
                                            includes: list[str], excludes: list[str]) -> None:
    root = tmp_path_factory.mktemp("tree")
    for path in tree:
        parent = root
        for part in path.split("/")[:-1]:
            parent = parent / part
            if parent.is_file():
                break
            parent.mkdir(exist_ok=True)
        else:
            target = root / path
            if not target.exists():
                target.write_text("x")
    walked = _paths(root, includes=includes, excludes=excludes)
    assert walked == _reference(str(root), includes, excludes)


def test_on_skip_is_optional(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "p")
    callback: Callable[[str, str], None] | None = None
    assert _paths(tmp_path, on_skip=callback) == []
