"""Unit tests for the blob store (pybuild.store.cas) and the store lock (pybuild.store.lock)."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pybuild.errors import StoreError
from pybuild.store.cas import BlobStore, parse_digest
from pybuild.store.lock import StoreLock


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(str(tmp_path / "root"))


def test_put_bytes_and_read_back(blobs: BlobStore) -> None:
    digest, size = blobs.put_bytes(b"hello")
    assert (digest, size) == (sha(b"hello"), 5)
    assert blobs.exists(digest)
    assert blobs.size(digest) == 5
    assert blobs.read_bytes(digest) == b"hello"
    with blobs.open(digest) as f:
        assert f.read() == b"hello"
    assert blobs.path(digest) == os.path.join(blobs.root, "blobs", "sha256", digest[7:])
    assert list(blobs.iter_digests()) == [digest]
    assert os.listdir(blobs.tmp_dir) == []


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=5000))
def test_put_bytes_round_trip_property(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    store = BlobStore(str(tmp_path_factory.mktemp("prop")))
    digest, size = store.put_bytes(data)
    assert digest == sha(data) and size == len(data)
    assert store.read_bytes(digest) == data
    assert store.verify(digest)


def test_put_is_idempotent_and_never_rewrites(blobs: BlobStore) -> None:
    digest, _ = blobs.put_bytes(b"same")
    inode = os.stat(blobs.path(digest)).st_ino
    blobs.put_bytes(b"same")
    with blobs.writer() as w:
        w.write(b"sa")
        w.write(b"me")
        assert w.commit() == (digest, 4)
    blobs.put_file(io.BytesIO(b"same"))
    assert os.stat(blobs.path(digest)).st_ino == inode
    assert os.listdir(blobs.tmp_dir) == []


def test_writer_streams_in_chunks(blobs: BlobStore) -> None:
    chunk = os.urandom(1 << 16)
    h = hashlib.sha256()
    with blobs.writer() as w:
        for _ in range(40):
            w.write(chunk)
            h.update(chunk)
        assert w.size == 40 << 16
        digest, size = w.commit()
    assert digest == "sha256:" + h.hexdigest() and size == 40 << 16
    assert blobs.verify(digest)


def test_writer_expected_digest(blobs: BlobStore) -> None:
    with blobs.writer() as w:
        w.write(b"abc")
        assert w.commit(sha(b"abc"))[0] == sha(b"abc")
    with blobs.writer() as w:
        w.write(b"abc")
        with pytest.raises(StoreError, match="digest mismatch: expected sha256:0+, content is sha256:"):
            w.commit("sha256:" + "0" * 64)
    assert not blobs.exists("sha256:" + "0" * 64)
    assert os.listdir(blobs.tmp_dir) == []
    with pytest.raises(StoreError, match="digest mismatch"):
        blobs.put_bytes(b"x", expected=sha(b"y"))
    assert not blobs.exists(sha(b"x"))
    with pytest.raises(StoreError, match="digest mismatch"):
        blobs.put_file(io.BytesIO(b"x"), expected=sha(b"y"))
    assert not blobs.exists(sha(b"x"))


def test_writer_aborts_on_exception_or_without_commit(blobs: BlobStore) -> None:
    with pytest.raises(RuntimeError):
        with blobs.writer() as w:
            w.write(b"partial")
            assert len(os.listdir(blobs.tmp_dir)) == 1
            raise RuntimeError("boom")
    with blobs.writer() as w:
        w.write(b"never committed")
    assert os.listdir(blobs.tmp_dir) == []
    assert list(blobs.iter_digests()) == []
    with pytest.raises(StoreError, match="already committed or aborted"):
        w.write(b"more")


def test_put_file_from_path(blobs: BlobStore, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x" * 3_000_000)
    digest, size = blobs.put_file(str(src))
    assert size == 3_000_000 and digest == sha(src.read_bytes())
    digest2, _ = blobs.put_file(src)
    assert digest2 == digest


def test_missing_blob_and_bad_digest(blobs: BlobStore) -> None:
    missing = sha(b"nope")
    with pytest.raises(StoreError, match=f"blob not found: {missing}"):
        blobs.open(missing)
    with pytest.raises(StoreError, match="blob not found"):
        blobs.read_bytes(missing)
    with pytest.raises(StoreError, match="blob not found"):
        blobs.size(missing)
    assert not blobs.exists(missing)
    assert blobs.delete(missing) is False
    for bad in ("sha256:abc", "md5:" + "0" * 64, "0" * 64, "sha256:" + "A" * 64, "sha256:../" + "0" * 61):
        with pytest.raises(StoreError, match="bad digest"):
            blobs.path(bad)
    assert parse_digest("sha256:" + "a" * 64) == "a" * 64


def test_corrupt_blob_is_detected(blobs: BlobStore) -> None:
    digest, _ = blobs.put_bytes(b"good content")
    path = blobs.path(digest)
    os.chmod(path, 0o644)
    with open(path, "wb") as f:
        f.write(b"evil content")
    assert blobs.verify(digest) is False
    with pytest.raises(StoreError, match=f"corrupt blob: {digest} at {path}"):
        blobs.read_bytes(digest)
    assert blobs.read_bytes(digest, verify=False) == b"evil content"
    with blobs.open(digest, verify=True) as f:
        with pytest.raises(StoreError, match="corrupt blob"):
            f.read()
    good, _ = blobs.put_bytes(b"fine")
    with blobs.open(good, verify=True) as f:
        assert f.read() == b"fine"


def test_delete(blobs: BlobStore) -> None:
    digest, _ = blobs.put_bytes(b"bye")
    assert blobs.delete(digest) is True
    assert not blobs.exists(digest)
    assert list(blobs.iter_digests()) == []


@pytest.mark.parametrize("code,text", [(errno.ENOSPC, "no space left on device"),
                                       (errno.EDQUOT, "disk quota exceeded"), (errno.EIO, "I/O error")])
def test_no_space_is_clear_and_leaves_nothing(
    blobs: BlobStore, monkeypatch: pytest.MonkeyPatch, code: int, text: str
) -> None:
    def full(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StoreError) as info:
        blobs.put_bytes(b"data" * 1000)
    assert re.fullmatch(rf"{text} while committing blob to {re.escape(blobs.root)} \([0-9.]+ [KMGT]?i?B free\)",
                        str(info.value)), str(info.value)
    assert "prune" in (info.value.hint or "")
    assert os.listdir(blobs.tmp_dir) == []
    assert list(blobs.iter_digests()) == []


def test_no_space_during_write(blobs: BlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    with blobs.writer() as w:
        real = w._file

        class Full(io.RawIOBase):
            def write(self, data: object) -> int:
                raise OSError(errno.ENOSPC, "No space left on device")

            def close(self) -> None:
                real.close()

        w._file = Full()  # type: ignore[assignment]
        with pytest.raises(StoreError, match=f"no space left on device while writing blob to {blobs.root}"):
            w.write(b"x")
    assert os.listdir(blobs.tmp_dir) == []


def test_clean_temps_spares_live_writers(blobs: BlobStore) -> None:
    dead = os.path.join(blobs.tmp_dir, "blob-dead")
    with open(dead, "wb") as f:
        f.write(b"left by kill -9")
    with blobs.writer() as w:
        w.write(b"in progress")
        assert blobs.temp_usage()[0] == 2
        assert blobs.clean_temps() == 1
        assert not os.path.exists(dead)
        assert len(os.listdir(blobs.tmp_dir)) == 1  # the live writer's temp survives
        digest, _ = w.commit()
    assert blobs.read_bytes(digest) == b"in progress"
    assert blobs.clean_temps() == 0


def test_clean_temps_races_with_many_writers(blobs: BlobStore) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []

    def clean() -> None:
        while not stop.is_set():
            blobs.clean_temps()

    def write(n: int) -> None:
        try:
            for i in range(50):
                data = f"{n}-{i}".encode() * 100
                assert blobs.put_bytes(data)[0] == sha(data)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    cleaner = threading.Thread(target=clean)
    cleaner.start()
    writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    cleaner.join()
    assert errors == []
    assert len(list(blobs.iter_digests())) == 200
    assert all(blobs.verify(d) for d in blobs.iter_digests())


# lock


def test_shared_locks_coexist_and_exclusive_waits(tmp_path: Path) -> None:
    lock = StoreLock(str(tmp_path / "lock"))
    messages: list[str] = []
    with lock.shared(), lock.shared(timeout=0.1):
        start = time.monotonic()
        with pytest.raises(StoreError, match="timed out after 0.2s waiting for running builds") as info:
            with lock.exclusive(timeout=0.2, on_wait=messages.append):
                pass
        assert time.monotonic() - start >= 0.2
        assert str(tmp_path / "lock") in str(info.value)
    assert messages == [f"waiting for running builds to release the store lock at {tmp_path / 'lock'}"]
    with lock.exclusive(timeout=0.1, on_wait=messages.append):
        with pytest.raises(StoreError, match="waiting for a running prune"):
            with lock.shared(timeout=0.1):
                pass
    assert len(messages) == 1  # no wait reported when the lock was free


def test_exclusive_gets_the_lock_when_builds_finish(tmp_path: Path) -> None:
    lock = StoreLock(str(tmp_path / "lock"))
    held = threading.Event()
    release = threading.Event()

    def build() -> None:
        with lock.shared():
            held.set()
            release.wait(5)

    t = threading.Thread(target=build)
    t.start()
    held.wait(5)
    waited: list[str] = []
    threading.Timer(0.2, release.set).start()
    with lock.exclusive(timeout=5, on_wait=waited.append):
        assert release.is_set()
    t.join()
    assert len(waited) == 1
