"""The stat cache: unchanged files are never read again, changed files always are, the file on disk survives
corruption and is written atomically and only when it changed, and fresh ("racy") entries are not trusted.

Files made by a test are seconds old, so the racy-clean guard would refuse to persist them. Tests that are
not about that guard give the Checksummer a clock one minute ahead (`LATER`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pybuild.context import statcache
from pybuild.context.checksum import READS, Checksummer, TreeChecksums
from pybuild.context.statcache import MAGIC, StatCache, cache_path
from tests.unit.test_checksum import scan


def LATER() -> int:
    return time.time_ns() + 60_000_000_000


def run(root: Path, clock: object = LATER) -> tuple[TreeChecksums, StatCache]:
    """One pass as a build does it: load the cache, checksum everything, prune, save; reset READS first."""
    READS.reset()
    cache = StatCache.load(str(root))
    result = Checksummer(str(root), cache, clock=clock).tree(scan(root))  # type: ignore[arg-type]
    cache.prune()
    cache.save()
    return result, cache


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "a").mkdir(parents=True)
    for i in range(5):
        (root / "a" / f"f{i}").write_bytes(os.urandom(100 + i))
    (root / "big").write_bytes(os.urandom(300_000))
    os.symlink("a/f0", root / "link")
    return root


def test_warm_pass_reads_nothing(ctx: Path) -> None:
    cold, _ = run(ctx)
    assert READS.files == 6 and READS.bytes == 300_000 + sum(100 + i for i in range(5))
    warm, cache = run(ctx)
    assert READS.files == 0 and READS.bytes == 0
    assert warm == cold
    assert not cache.dirty


def test_changed_file_is_reread_even_with_same_size_and_mtime(ctx: Path) -> None:
    cold, _ = run(ctx)
    path = ctx / "a" / "f2"
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # hide the change from mtime; ctime still moves
    after, _ = run(ctx)
    assert READS.paths == ["a/f2"]
    assert after.of("a/f2") != cold.of("a/f2")
    assert after.checksum != cold.checksum


def test_touch_rereads_but_keeps_checksum(ctx: Path) -> None:
    cold, _ = run(ctx)
    os.utime(ctx / "big", ns=(1, 1_000_000_000))
    touched, _ = run(ctx)
    assert READS.paths == ["big"]
    assert touched == cold
    run(ctx)
    assert READS.files == 0


def test_chmod_misses_and_changes(ctx: Path) -> None:
    cold, _ = run(ctx)
    os.chmod(ctx / "a" / "f1", 0o600)
    after, _ = run(ctx)
    assert READS.paths == ["a/f1"]
    assert after.of("a/f1") != cold.of("a/f1")


def test_replaced_file_misses(ctx: Path) -> None:
    """Same content, same times, a new inode (an editor's save-by-rename): read again, same checksum."""
    cold, _ = run(ctx)
    path = ctx / "a" / "f3"
    st = os.stat(path)
    tmp = ctx / "a" / ".f3.tmp"
    tmp.write_bytes(path.read_bytes())
    os.chmod(tmp, st.st_mode)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)
    after, _ = run(ctx)
    assert READS.paths == ["a/f3"]
    assert after == cold


def test_racy_entries_are_not_persisted(ctx: Path) -> None:
    """With the real clock every file here is racy: used in this pass, hashed again in the next."""
    first, cache = run(ctx, clock=time.time_ns)
    assert cache.racy >= 6
    second, _ = run(ctx, clock=time.time_ns)
    assert READS.files == 6
    assert second == first


def test_racy_boundary() -> None:
    from pybuild.context.entry import Entry

    now = 100 * 10**9
    old = now - statcache.RACY_WINDOW_NS - 1
    cache = StatCache(None, "/x")
    cache.store(Entry("old", "file", 0o100644, 0, 0, 1, old, old, 1, 1, 1), b"1" * 16, now)
    cache.store(Entry("fresh-m", "file", 0o100644, 0, 0, 1, old + 1, old, 1, 2, 1), b"2" * 16, now)
    cache.store(Entry("fresh-c", "file", 0o100644, 0, 0, 1, old, old + 1, 1, 3, 1), b"3" * 16, now)
    cache.store(Entry("future", "file", 0o100644, 0, 0, 1, now * 2, now * 2, 1, 4, 1), b"4" * 16, now)
    assert set(cache.rows) == {"old"}
    assert cache.racy == 3


def test_corrupt_cache_is_recovered(ctx: Path) -> None:
    cold, _ = run(ctx)
    path = cache_path(str(ctx))
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the payload
    Path(path).write_bytes(bytes(data))
    after, cache = run(ctx)
    assert cache.recovered
    assert READS.files == 6
    assert after == cold
    _, healed = run(ctx)
    assert not healed.recovered and READS.files == 0


@pytest.mark.parametrize("content", [b"", b"garbage", MAGIC, MAGIC + b"\0" * 8 + b"x", b"\xff" * 4096])
def test_garbage_cache_loads_empty(ctx: Path, content: bytes) -> None:
    path = Path(cache_path(str(ctx)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    cache = StatCache.load(str(ctx))
    assert cache.rows == {} and cache.recovered


def test_cache_of_another_context_is_not_used(ctx: Path, tmp_path: Path) -> None:
    """A file holding another context's rows (a hash collision, a copied store) is ignored."""
    run(ctx)
    other = tmp_path / "other"
    other.mkdir()
    Path(cache_path(str(other))).write_bytes(Path(cache_path(str(ctx))).read_bytes())
    assert StatCache.load(str(other)).recovered


def test_missing_cache_and_store(ctx: Path) -> None:
    cache = StatCache.load(str(ctx))
    assert cache.rows == {} and not cache.recovered and not cache.dirty


def test_saved_only_when_changed_and_atomically(ctx: Path) -> None:
    run(ctx)
    path = Path(cache_path(str(ctx)))
    ino = path.stat().st_ino
    _, cache = run(ctx)
    assert path.stat().st_ino == ino, "an unchanged cache must not be rewritten"
    (ctx / "a" / "f0").write_bytes(b"new content")
    run(ctx)
    assert path.stat().st_ino != ino, "a changed cache is replaced by rename"
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temp files left behind"


def test_unwritable_store_is_ignored(ctx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"")
    monkeypatch.setenv("PYBUILD_ROOT", str(blocker))
    result, cache = run(ctx)
    assert cache.dirty  # could not save, still usable
    assert result.checksum


def test_concurrent_replace_is_tolerated(ctx: Path) -> None:
    """Two sessions on one context: each saves a whole file; a reader sees one of them, never a mix."""
    run(ctx)
    a = StatCache.load(str(ctx))
    b = StatCache.load(str(ctx))
    Checksummer(str(ctx), a, clock=LATER).tree(scan(ctx))
    (ctx / "a" / "f4").write_bytes(b"changed by b")
    Checksummer(str(ctx), b, clock=LATER).tree(scan(ctx))
    assert b.save()
    a.forget("big")
    assert a.save()  # last writer wins
    loaded = StatCache.load(str(ctx))
    assert not loaded.recovered and "big" not in loaded.rows
    after, _ = run(ctx)  # a's row for the old f4 no longer matches f4's stat: f4 and big are read again
    assert sorted(READS.paths) == ["a/f4", "big"]


def test_prune_drops_deleted_paths(ctx: Path) -> None:
    run(ctx)
    os.unlink(ctx / "a" / "f4")
    _, cache = run(ctx)
    assert "a/f4" not in cache.rows
    assert "a/f4" not in StatCache.load(str(ctx)).rows


def test_odd_names_round_trip(tmp_path: Path) -> None:
    base = os.fsencode(tmp_path)
    for name in (b"sp ace", b"new\nline", b"bad\xffbyte"):
        with open(os.path.join(base, name), "wb") as handle:
            handle.write(name)
    cold, _ = run(tmp_path)
    warm, _ = run(tmp_path)
    assert READS.files == 0 and warm == cold


def test_cache_lives_under_store_root(ctx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / "store"))
    path = cache_path(str(ctx))
    assert path.startswith(str(tmp_path / "store" / "statcache") + os.sep)
    assert cache_path(str(ctx) + "/") == path  # the real path is hashed
