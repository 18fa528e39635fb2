"""Blobs the store knows of but does not hold yet: where each one is, and fetching it on first use.

Who uses it: the registry build cache (`cache/registrycache.py`) records the layers of the cache entries a
build hits as remote blobs instead of downloading them; every reader of layer blob bytes goes through
`open_blob` / `ensure_blob` (exports, `cache/transfer.py`, `store/layerread.py` for unpacking) and every
reader of their size through `blob_size`; `has_blob` is what "the store has this layer" means.

So a fully cached `--cache-from type=registry` build makes its image without moving the layer bytes, as
BuildKit's lazy blobs do: `--push` to the same registry mounts them (`registry/push.py` finds the cache
repository in `BlobLocations`), and whatever needs the bytes later (a RUN on top, an OCI export, `pybuild
save`) downloads each blob once, into the store, where it stays.

A row is `(digest, size, media_type, source)`; `source` is `KIND:WHERE`. The only kind is `registry`
(`registry:HOST/REPO`), or `registry-insecure` when the build was told `--insecure-registry HOST` (so a
later fetch by another command reaches it the same way; the digest check makes plain HTTP safe for
content). The store fetches nothing itself: whoever opens it gives it one `BlobFetcher` per kind
(`Store.open(fetchers=...)`; the API and the CLI pass `registry.blobsource.FETCHERS`, whose function
imports the registry client, and httpx, only when a blob is fetched), so the store imports no registry
code. A fetched blob is checked against its digest by the fetcher as it is written
(`BlobWriter(hashed=False)`, committed under that digest only then), so a bad download stores nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, BinaryIO, Protocol

from pybuild.errors import StoreError
from pybuild.record import record

if TYPE_CHECKING:
    from pybuild.store.cas import BlobWriter
    from pybuild.store.store import Store

__all__ = ["BlobFetcher", "RemoteBlob", "blob_size", "ensure_blob", "has_blob", "open_blob", "record_remote",
           "remote_blob"]

_locks_guard = threading.Lock()
_locks: dict[str, threading.Lock] = {}


@record
class RemoteBlob:
    """A blob the store does not hold, and where it is (`source`: `KIND:WHERE`, see the module docstring)."""

    digest: str
    size: int
    media_type: str
    source: str

    @property
    def kind(self) -> str:
        return self.source.partition(":")[0]

    @property
    def where(self) -> str:
        return self.source.partition(":")[2]


class BlobFetcher(Protocol):
    """Writes remote blob `blob` into `out`, checking its digest and size as it goes (the store commits
    `out` under the digest once it returns); raises on any failure."""

    def __call__(self, blob: RemoteBlob, out: BlobWriter, /) -> None: ...


def record_remote(store: Store, blobs: Iterable[RemoteBlob]) -> None:
    """Remember where `blobs` are (one transaction); a blob the store holds needs no row but gets none
    in the way either."""
    now = time.time()
    rows = [(b.digest, b.size, b.media_type, b.source, now) for b in blobs]
    with store.index.transaction() as c:
        c.executemany("INSERT OR REPLACE INTO remote_blobs VALUES (?, ?, ?, ?, ?)", rows)


def remote_blob(store: Store, digest: str) -> RemoteBlob | None:
    rows = store.index.query("SELECT digest, size, media_type, source FROM remote_blobs WHERE digest = ?",
                             (digest,))
    return RemoteBlob(*rows[0]) if rows else None


def has_blob(store: Store, digest: str) -> bool:
    """True when the store holds blob `digest` or knows where to fetch it."""
    return store.blobs.exists(digest) or remote_blob(store, digest) is not None


def blob_size(store: Store, digest: str) -> int:
    """The size of blob `digest`, held or remote (StoreError when it is neither)."""
    if not store.blobs.exists(digest):
        remote = remote_blob(store, digest)
        if remote is not None:
            return remote.size
    return store.blobs.size(digest)


def ensure_blob(store: Store, digest: str) -> None:
    """Make sure the store holds blob `digest`: fetch it from where it is known to be, once per process
    (threads asking for the same blob wait for the one fetching it)."""
    if store.blobs.exists(digest):
        return
    with _locks_guard:
        lock = _locks.setdefault(digest, threading.Lock())
    with lock:
        if store.blobs.exists(digest):
            return
        remote = remote_blob(store, digest)
        if remote is None:
            store.blobs.size(digest)  # raises the store's "blob not found" error
            return
        fetch = _fetcher(store, remote)
        with store.blobs.writer(hashed=False) as writer:
            fetch(remote, writer)
            if writer.size != remote.size:
                raise StoreError(f"blob {digest} from {remote.where} is {writer.size} bytes, expected "
                                 f"{remote.size}")
            writer.commit(digest)
        store.index.record_blob(digest, remote.size, remote.media_type)


def open_blob(store: Store, digest: str, verify: bool = False) -> BinaryIO:
    """Blob `digest` as a binary file, fetched first when it is remote (see `BlobStore.open` for
    `verify`)."""
    ensure_blob(store, digest)
    return store.blobs.open(digest, verify=verify)


def _fetcher(store: Store, remote: RemoteBlob) -> BlobFetcher:
    fetch = store.fetchers.get(remote.kind)
    if fetch is None:
        raise StoreError(f"blob {remote.digest} is at {remote.source}, which this pybuild cannot fetch from")
    return fetch
