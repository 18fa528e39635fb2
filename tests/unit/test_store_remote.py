"""store.remote: blobs the store knows of but does not hold, fetched once on first use; and how prune,
verify and reachability treat them."""

from __future__ import annotations

import gzip
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.errors import StoreError
from pybuild.image.spec import layer_media_type
from pybuild.store import remote
from pybuild.store.cas import BlobWriter
from pybuild.store.images import LOADED_LEVEL
from pybuild.store.layerread import layer_present, read_layer
from pybuild.store.remote import RemoteBlob, blob_size, ensure_blob, has_blob, open_blob, record_remote
from pybuild.store.store import Store

PLAIN = b"layer tar bytes, for these tests\n" * 1000
PACKED = gzip.compress(PLAIN, mtime=0)
SERVED: dict[str, bytes] = {}  # what the test fetcher serves, by digest
CALLS: list[str] = []
_lock = threading.Lock()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def fetch(blob: RemoteBlob, out: BlobWriter) -> None:
    """The fetcher of kind `test` (a `remote.BlobFetcher`, as `registry.blobsource.fetch` is for `registry`)."""
    with _lock:
        CALLS.append(blob.digest)
    out.write(SERVED[blob.digest])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    SERVED.clear()
    CALLS.clear()
    with Store.open(str(tmp_path / "store"), fetchers={"test": fetch}) as s:
        yield s


def remote_layer(store: Store) -> tuple[str, str]:
    """A gzip layer the store knows only as remote (as a registry cache hit leaves it)."""
    digest, diff_id = sha(PACKED), sha(PLAIN)
    SERVED[digest] = PACKED
    record_remote(store, [RemoteBlob(digest, len(PACKED), layer_media_type("gzip"), "test:somewhere")])
    store.index.record_compressed(diff_id, "gzip", LOADED_LEVEL, digest, len(PACKED))
    return digest, diff_id


def test_a_remote_blob_counts_as_there_and_is_fetched_once_when_read(store: Store) -> None:
    digest, diff_id = remote_layer(store)
    assert has_blob(store, digest) and blob_size(store, digest) == len(PACKED) and not store.blobs.exists(digest)
    assert layer_present(store, diff_id) and CALLS == []
    barrier = threading.Barrier(4)

    def read() -> None:
        barrier.wait()
        with read_layer(store, diff_id) as layer:
            assert layer.read() == PLAIN

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert CALLS == [digest] and store.blobs.read_bytes(digest) == PACKED
    with open_blob(store, digest) as f:
        assert f.read() == PACKED
    assert CALLS == [digest] and store.index.blob_row(digest) is not None


def test_a_short_fetch_stores_nothing(store: Store) -> None:
    digest, _ = remote_layer(store)
    SERVED[digest] = PACKED[:-10]
    with pytest.raises(StoreError, match=f"blob {digest} from somewhere is {len(PACKED) - 10} bytes, expected"):
        ensure_blob(store, digest)
    assert not store.blobs.exists(digest) and list(Path(store.blobs.tmp_dir).iterdir()) == []


def test_a_kind_nobody_fetches_and_an_unknown_blob_are_errors(store: Store) -> None:
    record_remote(store, [RemoteBlob(sha(b"x"), 1, "application/octet-stream", "carrier-pigeon:coop")])
    with pytest.raises(StoreError, match="is at carrier-pigeon:coop, which this pybuild cannot fetch from"):
        ensure_blob(store, sha(b"x"))
    with pytest.raises(StoreError, match="blob not found"):
        ensure_blob(store, sha(b"nowhere"))


def test_verify_reachability_and_prune_know_remote_layers(store: Store) -> None:
    digest, diff_id = remote_layer(store)
    other = sha(b"unreferenced")
    record_remote(store, [RemoteBlob(other, 12, "application/octet-stream", "test:somewhere")])
    store.index.add_root("cache", "some-step", diff_id)  # a cache entry keeps its layer alive by diffID
    assert store.verify_all() == []  # remote is not missing; the diffID is there through its remote form
    assert {digest, diff_id} <= store.referenced()
    ensure_blob(store, digest)
    store.prune()
    assert store.blobs.exists(digest)  # a diffID reached whose tar is not held keeps its compressed form
    assert remote.remote_blob(store, other) is None and remote.remote_blob(store, digest) is not None
