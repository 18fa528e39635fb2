"""Staging one layer into the store: stream it in, check it, commit it only when all is checked.

Who uses it: `store/archive.py` (`pybuild load`), the build cache import (`cache/transfer.py`) and
`registry/pull.py` (`pybuild pull`, FROM). Each gets a layer as a byte stream (an archive member, a
download) with the descriptor the manifest gives and the diffID the config gives.

- `stage_layer` (load, cache import) streams it into two uncommitted blob writers (the bytes as given, and
  the uncompressed tar) while hashing both, and checks the compression against the media type, the digest
  and size against the descriptor and the uncompressed digest against the diffID.
- `stage_download` (pull) keeps only the bytes as given, checked by the registry client as they arrive;
  the diffID is checked when the layer is first decompressed (`store/layerread.py`), as containerd does.
  A pull so writes and hashes each byte once and decompresses nothing (it was 3-4x slower than skopeo's
  copy when it decompressed).

What comes back is a `StagedLayer`: `commit()` names the blobs and records the `layers` and `compressed`
rows (the blob taken as-is gets level `LOADED_LEVEL`), `abort()` (or the caller's ExitStack) throws the
temps away. A caller stages every layer of an image first and commits them only once all of them passed,
so a bad layer anywhere stores nothing.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import IO, TYPE_CHECKING, Any, cast

from pybuild.errors import StoreError
from pybuild.image.spec import Descriptor, layer_compression, layer_media_type
from pybuild.record import record

if TYPE_CHECKING:
    from pybuild.store.cas import BlobWriter
    from pybuild.store.store import Store

__all__ = ["DownloadSink", "StagedDownload", "StagedLayer", "commit_downloads", "layer_known",
           "stage_download", "stage_layer"]

_CHUNK = 1 << 20


@record
class StagedLayer:
    """A layer read and checked: `digest`/`size` of the bytes as given, their `compression`, the `diff_id`;
    `commit()` stores it."""

    digest: str
    size: int
    compression: str
    diff_id: str
    commit: Callable[[], None]


def layer_known(store: Store, desc: Descriptor | None, diff_id: str) -> bool:
    """True when the store holds the blob `desc` names and knows it is layer `diff_id` (the blob is the
    uncompressed tar, or a compressed form of it; `store.layerread` checks the diffID when it is read)."""
    return desc is not None and store.blobs.exists(desc.digest) and (
        desc.digest == diff_id or store.index.diff_id_of(desc.digest) == diff_id)


@record
class StagedDownload:
    """A downloaded layer, durable in its temp file (`writer`) but not named yet: `commit_downloads`."""

    desc: Descriptor
    diff_id: str
    compression: str
    writer: BlobWriter


def stage_download(store: Store, desc: Descriptor, diff_id: str, stack: ExitStack,
                   fill: Callable[[DownloadSink], object], *, where: str, name: str) -> StagedDownload:
    """Stage layer `desc` as the bytes `fill(out)` writes, kept exactly as they come (a pull).

    `fill` must check the bytes against `desc`'s digest and size as it writes them (the registry client
    does), so they are hashed once; here the magic bytes are checked against the media type. A compressed
    layer's diffID is checked when it is first decompressed (`store.layerread`), not here: a pull only
    writes and hashes the bytes it downloads. An uncompressed one must be named by its diffID. The bytes
    are fsynced here, in the caller's (download) thread, so `commit_downloads` only renames.
    """
    compression = layer_compression(desc.media_type)
    if compression == "uncompressed" and desc.digest != diff_id:
        raise StoreError(f"{where}: layer {name} does not match its diffID {diff_id} "
                         f"(content is {desc.digest})")
    writer = stack.enter_context(store.blobs.writer(hashed=False))
    out = DownloadSink(writer, compression, f"{where}: layer {name}", desc.media_type)
    fill(out)
    out.close()
    writer.sync()
    return StagedDownload(desc, diff_id, compression, writer)


def commit_downloads(store: Store, staged: Sequence[StagedDownload]) -> None:
    """Name every staged download, make the renames durable (one directory fsync), then record their rows
    (one index transaction): a pull of 20 layers pays two fsyncs here instead of eighty."""
    from pybuild.atomic import fsync_dir
    from pybuild.store.images import LOADED_LEVEL

    blobs: list[tuple[str, int, str | None]] = []
    layers: list[tuple[str, int]] = []
    compressed: list[tuple[str, str, int, str, int]] = []
    for layer in staged:
        digest, size = layer.writer.commit(layer.desc.digest, sync_dir=False)
        blobs.append((digest, size, layer_media_type(layer.compression)))
        if layer.compression == "uncompressed":
            layers.append((layer.diff_id, size))
        else:
            compressed.append((layer.diff_id, layer.compression, LOADED_LEVEL, digest, size))
    if staged:
        fsync_dir(store.blobs.blob_dir)
        store.index.record_many(blobs=blobs, layers=layers, compressed=compressed)


class DownloadSink:
    """What `stage_download`'s `fill` writes to: the blob writer, with the first bytes checked against the
    magic of `compression`."""

    def __init__(self, out: BlobWriter, compression: str, what: str, media_type: str) -> None:
        self.out, self.compression, self.what, self.media_type = out, compression, what, media_type
        self.head = b""

    def write(self, data: bytes) -> int:
        if len(self.head) < 4:
            self.head += bytes(data[:4 - len(self.head)])
            if len(self.head) == 4:
                self._check()
        return self.out.write(data)

    def close(self) -> None:
        if len(self.head) < 4:
            self._check()

    def _check(self) -> None:
        from pybuild.store.compress import compression_mismatch

        wrong = compression_mismatch(self.head, self.compression)
        if wrong is not None:
            raise StoreError(f"{self.what} {wrong} (its media type says {self.media_type})")


def stage_layer(store: Store, raw: IO[bytes], desc: Descriptor | None, diff_id: str, stack: ExitStack, *,
                where: str, name: str) -> StagedLayer:
    """Stream the layer `raw` reads into writers held by `stack` and check it (see the module docstring).

    `desc` None (a docker-archive layer) takes the compression from the magic bytes and checks no digest.
    Errors are StoreErrors `"{where}: layer {name} ..."` (`where`: "cannot load x.tar", "cannot pull REF").
    Callers skip layers the store has already (`layer_known`) before opening them.
    """
    from pybuild.store.compress import compression_mismatch, decompress_stream, detect_compression

    head = raw.read(4)
    compression = detect_compression(head)
    wrong = compression_mismatch(head, layer_compression(desc.media_type)) if desc is not None else None
    if desc is not None and wrong is not None:
        raise StoreError(f"{where}: layer {name} {wrong} (its media type says {desc.media_type})")
    packed = stack.enter_context(store.blobs.writer()) if compression != "uncompressed" else None
    plain = stack.enter_context(store.blobs.writer())
    tee = _Tee(head, raw, packed)
    try:
        unpacked = decompress_stream(cast(IO[bytes], tee), compression) if packed is not None else tee
        while chunk := unpacked.read(_CHUNK):
            plain.write(chunk)
        tee.drain()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise StoreError(f"{where}: layer {name} is truncated ({exc})") from None
    except StoreError as exc:
        raise StoreError(f"{where}: layer {name}: {exc.message}") from None
    # the writers hash what they write: each byte is hashed once (the compressed copy's or the plain's)
    digest = packed.digest() if packed is not None else plain.digest()
    if desc is not None and (digest != desc.digest or tee.size != desc.size):
        raise StoreError(f"{where}: digest mismatch for layer {name}: expected {desc.digest} ({desc.size} "
                         f"bytes), got {digest} ({tee.size} bytes)")
    if plain.digest() != diff_id:
        raise StoreError(f"{where}: layer {name} does not match its diffID {diff_id} "
                         f"(content is {plain.digest()})")
    return StagedLayer(digest, tee.size, compression, diff_id,
                       lambda: _commit_layer(store, plain, packed, diff_id, digest, compression))


def _commit_layer(store: Store, plain: BlobWriter, packed: BlobWriter | None, diff_id: str, digest: str,
                  compression: str) -> None:
    from pybuild.store.images import LOADED_LEVEL

    _, size = plain.commit(diff_id)
    blobs: list[tuple[str, int, str | None]] = [(diff_id, size, layer_media_type("uncompressed"))]
    compressed: list[tuple[str, str, int, str, int]] = []
    if packed is not None:
        _, packed_size = packed.commit(digest)
        blobs.append((digest, packed_size, layer_media_type(compression)))
        compressed.append((diff_id, compression, LOADED_LEVEL, digest, packed_size))
    store.index.record_many(blobs=blobs, layers=[(diff_id, size)], compressed=compressed)


class _Tee(io.RawIOBase):
    """Reads `head` then `src`, counting the bytes and copying them into `copy` (when not None)."""

    def __init__(self, head: bytes, src: IO[bytes], copy: BlobWriter | None) -> None:
        self.head, self.src, self.copy = head, src, copy
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.head:
            data, self.head = (self.head, b"") if size < 0 or size >= len(self.head) else \
                (self.head[:size], self.head[size:])
        else:
            data = self.src.read(size if size >= 0 else _CHUNK)
        self.size += len(data)
        if self.copy is not None and data:
            self.copy.write(data)
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass
