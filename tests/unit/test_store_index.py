"""Unit tests for the SQLite index (pybuild.store.index) and the Store (du, verify_all, prune)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.errors import StoreError
from pybuild.store.index import CompressedRow, Index
from pybuild.store.store import Store

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


def sha(data: bytes | str) -> str:
    return "sha256:" + hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    idx = Index(str(tmp_path / "index.db"))
    yield idx
    idx.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(str(tmp_path / "store"))
    yield s
    s.close()


# index


def test_tags(index: Index) -> None:
    assert index.get_tag("app:1") is None
    index.set_tag("app:1", sha("a"))
    first = index.tag("app:1")
    assert first is not None and first.digest == sha("a") and first.created == first.updated
    time.sleep(0.01)
    index.set_tag("app:1", sha("b"))
    second = index.tag("app:1")
    assert second is not None and second.digest == sha("b")
    assert second.created == first.created and second.updated > first.updated
    index.set_tag("app:0", sha("c"))
    assert [t.name for t in index.list_tags()] == ["app:0", "app:1"]
    assert index.remove_tag("app:1") is True
    assert index.remove_tag("app:1") is False
    assert index.get_tag("app:1") is None


@pytest.mark.parametrize("name", ["", "has space", "tab\there", "nul\x00"])
def test_bad_tag_name(index: Index, name: str) -> None:
    with pytest.raises(StoreError, match="bad tag name"):
        index.set_tag(name, sha("a"))


def test_bad_digest_rejected(index: Index) -> None:
    with pytest.raises(StoreError, match="bad digest"):
        index.set_tag("x", "latest")


def test_images_layers_compressed(index: Index) -> None:
    index.record_image(sha("m"), sha("c"), "linux/amd64", 1234)
    row = index.get_image(sha("m"))
    assert row is not None and (row.config, row.platform, row.size, row.media_type) == (
        sha("c"), "linux/amd64", 1234, MANIFEST)
    assert [i.digest for i in index.images()] == [sha("m")]
    index.record_layer(sha("diff"), 100)
    index.record_layer(sha("diff"), 101)
    assert index.layer_size(sha("diff")) == 101
    assert index.layer_size(sha("other")) is None
    index.record_compressed(sha("diff"), "gzip", 6, sha("gz"), 40)
    index.record_compressed(sha("diff"), "zstd", 3, sha("zst"), 30)
    expected = CompressedRow(sha("diff"), "gzip", 6, sha("gz"), 40)
    assert index.find_compressed(sha("diff"), "gzip", 6) == expected
    assert index.find_compressed(sha("diff"), "gzip", 1) is None
    assert index.diff_id_of(sha("zst")) == sha("diff")
    assert len(index.compressed_rows()) == 2


def test_blobs_and_touch(index: Index) -> None:
    index.record_blob(sha("b"), 10, MANIFEST)
    index.record_blob(sha("b"), 10)  # keeps the known media type
    row = index.blob_row(sha("b"))
    assert row is not None and row.media_type == MANIFEST and row.size == 10
    index.touch(sha("b"), sha("unknown"), when=5.0)
    row = index.blob_row(sha("b"))
    assert row is not None and row.last_used == 5.0
    assert [r.digest for r in index.blob_rows()] == [sha("b")]


def test_roots(index: Index) -> None:
    index.add_root("cache", "key1", sha("r1"))
    index.add_root("cache", "key1", sha("r2"))
    index.add_root("build", "x", sha("r3"))
    index.set_tag("t", sha("t"))
    assert [(r.kind, r.key, r.digest) for r in index.roots()] == [
        ("build", "x", sha("r3")), ("cache", "key1", sha("r2"))]
    assert [r.key for r in index.roots("cache")] == ["key1"]
    assert index.root_digests() == {sha("r2"), sha("r3"), sha("t")}
    assert index.remove_root("cache", "key1") is True
    assert index.remove_root("cache", "key1") is False


def test_schema_is_versioned_and_extensible(tmp_path: Path) -> None:
    path = str(tmp_path / "index.db")
    idx = Index(path)
    idx.migrate("cache", [["CREATE TABLE cache_keys (key TEXT PRIMARY KEY)"]])
    idx.migrate("cache", [["CREATE TABLE cache_keys (key TEXT PRIMARY KEY)"],
                          ["ALTER TABLE cache_keys ADD COLUMN digest TEXT"]])
    with idx.transaction() as conn:
        conn.execute("INSERT INTO cache_keys VALUES ('k', 'd')")
    assert idx.query("SELECT * FROM schema ORDER BY component") == [("cache", 2), ("store", 2)]
    assert idx.query("PRAGMA journal_mode") == [("wal",)]
    idx.close()
    again = Index(path)  # reopening does not re-run migrations
    assert again.query("SELECT * FROM cache_keys") == [("k", "d")]
    with pytest.raises(StoreError, match="newer than this pybuild knows"):
        again.migrate("cache", [["SELECT 1"]])
    again.close()


def test_transaction_rolls_back(index: Index) -> None:
    with pytest.raises(RuntimeError):
        with index.transaction() as conn:
            conn.execute("INSERT INTO tags VALUES ('x', 'd', 0, 0)")
            raise RuntimeError
    assert index.get_tag("x") is None
    with pytest.raises(StoreError, match="store index error"):
        with index.transaction() as conn:
            conn.execute("INSERT INTO nosuch VALUES (1)")


def test_threads_share_an_index(index: Index) -> None:
    def work(n: int) -> None:
        for i in range(25):
            index.set_tag(f"t{n}-{i}", sha(f"{n}-{i}"))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(index.list_tags()) == 100


def _hammer(path: str, n: int, rounds: int) -> None:
    idx = Index(path)
    for i in range(rounds):
        idx.set_tag(f"p{n}/img:{i}", sha(f"{n}-{i}"))
        idx.set_tag("shared:latest", sha(f"{n}-{i}"))
        idx.record_image(sha(f"m{n}-{i}"), sha(f"c{n}-{i}"), "linux/amd64", i)
        idx.record_layer(sha(f"d{n}-{i}"), i)
        idx.record_compressed(sha(f"d{n}-{i}"), "gzip", 6, sha(f"gz{n}-{i}"), i)
        idx.record_blob(sha(f"b{n}-{i}"), i)
        idx.touch(sha(f"b{n}-{i}"))
        idx.add_root("cache", f"{n}-{i}", sha(f"r{n}-{i}"))
        assert idx.get_tag(f"p{n}/img:{i}") == sha(f"{n}-{i}")
    idx.close()


def test_four_processes_write_concurrently(tmp_path: Path) -> None:
    path = str(tmp_path / "index.db")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_hammer, args=(path, n, 40)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    idx = Index(path)
    tags = {t.name: t.digest for t in idx.list_tags()}
    assert len(tags) == 4 * 40 + 1
    assert all(tags[f"p{n}/img:{i}"] == sha(f"{n}-{i}") for n in range(4) for i in range(40))
    assert len(idx.images()) == 160 and len(idx.compressed_rows()) == 160
    assert len(idx.blob_rows()) == 160 and len(idx.roots("cache")) == 160
    assert idx.query("PRAGMA integrity_check") == [("ok",)]
    idx.close()


def test_index_error_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match=f"store index error in {path}"):
        Index(str(path))


# store


def _image(store: Store, name: str | None, layer: bytes, extra: bytes = b"") -> dict[str, str]:
    """An image with one gzip layer (and its uncompressed diff) stored; tagged when `name` is given."""
    diff, diff_size = store.put_bytes(layer, "application/vnd.oci.image.layer.v1.tar")
    gz, gz_size = store.put_bytes(b"gz:" + layer, "application/vnd.oci.image.layer.v1.tar+gzip")
    store.index.record_layer(diff, diff_size)
    store.index.record_compressed(diff, "gzip", 6, gz, gz_size)
    config, _ = store.put_bytes(json.dumps({"rootfs": {"diff_ids": [diff]}, "config": {},
                                            "x": extra.decode()}).encode(),
                                "application/vnd.oci.image.config.v1+json")
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST,
                           "config": {"digest": config, "size": 1},
                           "layers": [{"digest": gz, "size": gz_size}]}).encode()
    m, size = store.put_bytes(manifest, MANIFEST)
    store.index.record_image(m, config, "linux/amd64", size)
    if name:
        store.index.set_tag(name, m)
    return {"diff": diff, "gz": gz, "config": config, "manifest": m}


def test_open_creates_layout_and_cleans_temps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "env-root"
    monkeypatch.setenv("PYBUILD_ROOT", str(root))
    with Store.open() as s:
        assert s.root == str(root)
        with open(os.path.join(s.blobs.tmp_dir, "blob-stale"), "wb") as f:
            f.write(b"x")
    for name in ("blobs/sha256", "tmp", "index.db", "lock"):
        assert (root / name).exists() or name == "lock"
    with Store.open() as s:
        assert os.listdir(s.blobs.tmp_dir) == []


def test_open_reports_an_unusable_root(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StoreError, match="cannot create the store at"):
        Store.open(str(tmp_path / "file" / "store"))


def test_referenced_follows_index_manifest_config_and_layers(store: Store) -> None:
    a = _image(store, "a:1", b"layer-a")
    b = _image(store, None, b"layer-b")
    platform_index = json.dumps({"mediaType": INDEX, "manifests": [{"digest": b["manifest"]}]}).encode()
    idx, _ = store.put_bytes(platform_index, INDEX)
    store.index.add_root("cache", "k", idx)
    live = store.referenced()
    assert set(a.values()) <= live and set(b.values()) <= live and idx in live
    store.index.remove_root("cache", "k")
    live = store.referenced()
    assert set(a.values()) <= live and not set(b.values()) & live


def test_du(store: Store) -> None:
    a = _image(store, "a:1", b"layer-a")
    junk, junk_size = store.put_bytes(b"junk")
    usage = store.du()
    sizes = {d: store.blobs.size(d) for d in store.blobs.iter_digests()}
    assert usage.count == 5 and usage.bytes == sum(sizes.values())
    assert usage.referenced_count == 4 and usage.referenced_bytes == sum(sizes[d] for d in a.values())
    assert usage.unreferenced_count == 1 and usage.unreferenced_bytes == junk_size
    kinds = {k.kind: (k.count, k.bytes) for k in usage.kinds}
    assert kinds["layer"][0] == 2 and kinds["manifest"][0] == 1 and kinds["config"][0] == 1
    assert kinds["other"] == (1, junk_size)
    assert usage.temp_count == 0


def test_verify_all(store: Store) -> None:
    a = _image(store, "a:1", b"layer-a")
    assert store.verify_all() == []
    with open(store.blobs.path(a["config"]), "wb") as f:
        f.write(b"tampered")
    os.unlink(store.blobs.path(a["gz"]))
    store.index.set_tag("ghost:1", sha("ghost"))
    problems = store.verify_all()
    assert {(p.kind, p.digest) for p in problems} == {
        ("corrupt", a["config"]), ("missing", a["gz"]), ("missing", sha("ghost"))}
    messages = "\n".join(p.message for p in problems)
    assert "tag ghost:1 points at missing blob" in messages
    assert f"layer {a['diff']} (gzip level 6) points at missing blob {a['gz']}" in messages
    assert f"corrupt blob: {a['config']}" in messages


def test_prune_removes_only_unreferenced(store: Store) -> None:
    a = _image(store, "a:1", b"layer-a")
    b = _image(store, None, b"layer-b")
    report = store.prune()
    assert set(report.removed) == set(b.values())
    assert report.reclaimed == report.before - report.after > 0
    assert all(store.blobs.exists(d) for d in a.values())
    assert not any(store.blobs.exists(d) for d in b.values())
    assert store.index.get_image(b["manifest"]) is None
    assert store.index.find_compressed(b["diff"], "gzip", 6) is None
    assert store.index.layer_size(b["diff"]) is None
    assert store.index.get_image(a["manifest"]) is not None
    assert store.verify_all() == []
    assert store.prune().removed == ()


def test_prune_keep_storage_removes_least_recently_used_first(store: Store) -> None:
    digests = [store.put_bytes(bytes([i]) * 100)[0] for i in range(5)]
    for i, d in enumerate(digests):
        store.index.touch(d, when=1000.0 + (4 - i))  # digests[4] is the least recently used
        os.utime(store.blobs.path(d), (1.0, 1.0))
    kept = _image(store, "kept:1", b"k" * 1000)
    total = store.du().bytes
    report = store.prune(keep_storage=total - 250)
    assert report.removed == (digests[4], digests[3], digests[2])
    assert report.after == total - 300 <= total - 250
    assert all(store.blobs.exists(d) for d in kept.values())
    report = store.prune(keep_storage=0)  # referenced blobs stay, whatever keep_storage says
    assert set(report.removed) == {digests[0], digests[1]}
    assert all(store.blobs.exists(d) for d in kept.values())


def test_prune_until_spares_recently_used(store: Store) -> None:
    old, _ = store.put_bytes(b"old")
    new, _ = store.put_bytes(b"new")
    past = time.time() - 7200
    store.index.touch(old, when=past)
    os.utime(store.blobs.path(old), (past, past))
    unrecorded = store.blobs.put_bytes(b"no row, old mtime")[0]
    os.utime(store.blobs.path(unrecorded), (past, past))
    report = store.prune(until_seconds=3600)
    assert set(report.removed) == {old, unrecorded}
    assert store.blobs.exists(new)


def test_prune_waits_for_builds(store: Store) -> None:
    store.put_bytes(b"junk")
    waited: list[str] = []
    with store.shared_lock():
        with pytest.raises(StoreError, match="timed out .* waiting for running builds"):
            store.prune(timeout=0.1, on_wait=waited.append)
    assert len(waited) == 1 and store.blobs.exists(sha(b"junk"))
    assert store.prune(timeout=1).removed == (sha(b"junk"),)


def test_index_is_a_plain_sqlite_file(store: Store) -> None:
    # the index file is a plain SQLite database other tools can read
    conn = sqlite3.connect(store.index.path)
    assert ("tags",) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    conn.close()
