"""Reading a layer's uncompressed tar out of the store with its diffID checked: `read_layer`.

Who uses it: snapshot unpacking (`worker/snapshots.open_layer`), `images.apply_image` (flat exports) and
`images.layer_blob` (compressing a layer anew, or writing out its uncompressed blob).

A layer is in the store as its uncompressed blob (named by its diffID: built and imported layers) and/or
as compressed blobs (`compressed` rows). A pulled layer is kept only as the registry sent it, so a pull
writes and hashes just those bytes, as containerd's content store does. Its blob digest was checked when it
came in; its diffID (the digest of the decompressed tar, which the image config promises) is checked here,
by whichever reader decompresses it first and every one after: the bytes are hashed as they are read, and
at the end of the stream a mismatch is a StoreError naming the layer. The reader's maker throws away what
it was making (a snapshot, an export), and the compressed row is dropped, so the store no longer counts
the layer as present and the next pull downloads it again. The same goes for a compressed form whose first
bytes are not what its row says (a remote blob is fetched without a look at them) and for a corrupt or
truncated stream. When the store has no other form of the layer, the images using it are untagged (the
error names them): an image that cannot be had whole does not stay listed, and a build on its name pulls
it again. A check that passed records the `layers` row (the uncompressed size).

A reader that stops early (a tar reader stops at the end-of-archive blocks) still has the whole blob
checked: leaving its `with` block without an error reads the rest first.
"""

from __future__ import annotations

import hashlib
import io
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from pybuild.errors import StoreError

if TYPE_CHECKING:
    from pybuild.store.store import Store

__all__ = ["LayerReader", "layer_present", "read_layer"]

_DRAIN = 1 << 20


def _compressed_source(store: Store, diff_id: str) -> tuple[str, str] | None:
    """(blob digest, compression) of a compressed form of `diff_id`: a held blob before a remote one
    (`store.remote`, fetched when read), zstd before gzip (faster to read)."""
    from pybuild.store.remote import remote_blob

    forms = store.index.compressed_forms(diff_id)
    rows = [row for row in forms if store.blobs.exists(row.digest)] or \
        [row for row in forms if remote_blob(store, row.digest) is not None]
    rows.sort(key=lambda row: row.compression != "zstd")
    return (rows[0].digest, rows[0].compression) if rows else None


def layer_present(store: Store, diff_id: str) -> bool:
    """True when the store can give layer `diff_id`'s tar: its uncompressed blob or a compressed form
    (held, or remote and fetched when read)."""
    return store.blobs.exists(diff_id) or _compressed_source(store, diff_id) is not None


def read_layer(store: Store, diff_id: str) -> LayerReader:
    """A reader of layer `diff_id`'s uncompressed tar, checked against `diff_id` (see the module
    docstring); StoreError when the store has no form of it."""
    from pybuild.store.compress import compression_mismatch, decompress_stream
    from pybuild.store.remote import open_blob

    if store.blobs.exists(diff_id):
        return LayerReader(store, diff_id, store.blobs.open(diff_id), None)
    found = _compressed_source(store, diff_id)
    if found is None:
        raise StoreError(f"layer not found in the store: {diff_id}")
    digest, compression = found
    raw = open_blob(store, digest)
    try:
        wrong = compression_mismatch(raw.peek(4)[:4], compression)  # type: ignore[attr-defined]
        if wrong is not None:  # a remote blob is fetched without a look at its first bytes
            raise _broken(store, diff_id, digest, f"blob {digest} {wrong}")
        return LayerReader(store, diff_id, decompress_stream(raw, compression), digest)
    except BaseException:
        raw.close()
        raise


def _broken(store: Store, diff_id: str, blob: str, why: str) -> StoreError:
    """Drop the compressed form `blob` of layer `diff_id`, which failed its check, and untag the images
    that use the layer: without it they are not whole, and a tag that stays would hide that (a build on
    it would fail again, `pybuild images` would list it). The error says so and to pull them again."""
    from pybuild.store.imageread import familiar_name, untag_layer_users

    store.index.forget_compressed(blob)
    untagged = untag_layer_users(store, diff_id) if not layer_present(store, diff_id) else []
    lost = f"; untagged {', '.join(map(familiar_name, untagged))}" if untagged else ""
    return StoreError(f"layer {diff_id} {why} (the layer is dropped{lost})",
                      hint=f"pull the {'images' if len(untagged) > 1 else 'image'} again")


class LayerReader(io.RawIOBase, BinaryIO):  # BinaryIO: typed as the binary file it is
    """The uncompressed bytes of one layer, hashed as they are read (made by `read_layer`). Use it as a
    context manager: a clean exit reads to the end, so the diffID is always checked."""

    def __init__(self, store: Store, diff_id: str, source: IO[bytes], blob: str | None) -> None:
        self._store, self._diff_id, self._source, self._blob = store, diff_id, source, blob
        self._hash = hashlib.sha256()
        self._size = 0
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            n = self._source.readinto(view)  # type: ignore[attr-defined]
        except StoreError as exc:  # a corrupt or truncated compressed stream: the blob is no good
            if self._blob is None or self._checked:
                raise
            self._checked = True
            raise _broken(self._store, self._diff_id, self._blob, f"cannot be read: blob {self._blob} is a "
                          f"{exc.message}") from None
        if n:
            self._hash.update(view[:n])
            self._size += n
        elif not self._checked:
            self._checked = True
            self._check()
        return int(n or 0)

    def _check(self) -> None:
        actual = "sha256:" + self._hash.hexdigest()
        store = self._store
        if actual != self._diff_id:
            if self._blob is None:
                raise StoreError(f"corrupt blob: {self._diff_id} at {store.blobs.path(self._diff_id)} has "
                                 f"content {actual}")
            raise _broken(store, self._diff_id, self._blob,
                          f"does not match its diffID: blob {self._blob} decompresses to {actual}")
        if self._blob is not None and store.index.layer_size(self._diff_id) is None:
            store.index.record_layer(self._diff_id, self._size)

    def finish(self) -> None:
        """Read the rest of the stream, so the diffID check runs (a StoreError when it fails)."""
        buffer = bytearray(_DRAIN)
        while self.readinto(buffer):
            pass

    def close(self) -> None:
        if not self.closed:
            self._source.close()
        super().close()

    def __enter__(self) -> LayerReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if kind is None:
                self.finish()
        finally:
            self.close()
