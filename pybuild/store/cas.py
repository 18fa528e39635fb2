"""Content-addressed blobs under `<root>/blobs/sha256/<hex>`.

A write goes to a temp file in `<root>/tmp/` (same filesystem), is hashed with sha256 in the same pass,
fsynced, then `os.replace`d to its final name and the directory fsynced. A named blob is never rewritten:
when it exists already the temp is discarded. So a reader sees a whole blob or none, even after kill -9 or
power loss, and a full or failing disk (ENOSPC/EDQUOT/EIO) leaves nothing but a clear `StoreError` naming the
store and the free space (`store.diskspace`).

Every writer holds an exclusive `flock` on its temp file until it is committed or removed; `clean_temps`
removes only temps it can lock itself, so it never takes a file from a live writer (a temp left by a killed
process has no lock holder). A writer checks, once locked, that its temp is still linked, which closes the
window between creating the file and locking it.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import tempfile
from collections.abc import Iterator
from types import TracebackType
from typing import BinaryIO

from pybuild.atomic import fsync_dir
from pybuild.digest import digest_parts
from pybuild.errors import StoreError
from pybuild.store.diskspace import disk_fault
from pybuild.store.orphans import remove_if_orphaned

CHUNK = 1 << 20


def parse_digest(digest: str) -> str:
    """The hex part of a `sha256:<hex>` digest (the only kind the store names blobs by); StoreError for
    anything else."""
    parts = digest_parts(digest, ("sha256",))
    if parts is None:
        raise StoreError(f"bad digest: {digest!r} (want sha256:<64 lowercase hex digits>)")
    return parts[1]


class BlobWriter:
    """One blob being written. Made by `BlobStore.writer()`; use it as a context manager.

    `write()` streams bytes (hashed as they go), `commit()` names the blob and returns `(digest, size)`.
    Leaving the block without a commit, or with an exception, discards the temp file.

    `hashed=False` is for a caller that checks the bytes itself as it writes them (the registry client
    verifies every download): nothing is hashed here, and `commit` must be given the digest to name the
    blob by.
    """

    def __init__(self, store: BlobStore, hashed: bool = True) -> None:
        self._store = store
        self._hash = hashlib.sha256() if hashed else None
        self._size = 0
        self._synced = -1  # the size at the last `sync`
        self._done = False
        self._path, self._file = self._create_locked_temp()

    def _create_locked_temp(self) -> tuple[str, BinaryIO]:
        while True:
            try:
                fd, path = tempfile.mkstemp(prefix="blob-", dir=self._store.tmp_dir)
            except OSError as exc:
                raise self._store.translate(exc, "creating a temp file") from exc
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                linked = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                linked = False
            if linked:
                return path, io.open(fd, "wb", buffering=CHUNK)
            os.close(fd)  # a cleaner took it between mkstemp and flock: make another

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        """Append `data` to the blob; returns its length (a file's `write`, so writers can target a blob)."""
        if self._done:
            raise StoreError("write to a blob writer that is already committed or aborted")
        try:
            self._file.write(data)
        except OSError as exc:
            self.abort()
            raise self._store.translate(exc, "writing blob") from exc
        if self._hash is not None:
            self._hash.update(data)
        self._size += len(data)
        return len(data)

    def digest(self) -> str:
        """The digest of the bytes written so far (the name `commit` will give the blob)."""
        if self._hash is None:
            raise StoreError("digest() of a blob writer that does not hash")
        return "sha256:" + self._hash.hexdigest()

    def sync(self) -> None:
        """Make the bytes written so far durable now (a writer thread can, before `commit` on another)."""
        if self._done:
            raise StoreError("sync of a blob writer that is already committed or aborted")
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            self.abort()
            raise self._store.translate(exc, "writing blob") from exc
        self._synced = self._size

    def commit(self, expected_digest: str | None = None, *, sync_dir: bool = True) -> tuple[str, int]:
        """Name the blob; StoreError (and nothing stored) if its digest is not `expected_digest`.
        `sync_dir=False` leaves the rename to be made durable by the caller (`fsync_dir` of the blob
        directory, once for many commits, before anything refers to the blobs)."""
        if self._done:
            raise StoreError("commit of a blob writer that is already committed or aborted")
        if self._hash is None:
            if expected_digest is None:
                raise StoreError("commit of a blob writer that does not hash needs the digest")
            parse_digest(expected_digest)
            digest = expected_digest  # the caller checked the bytes (see the class docstring)
        else:
            digest = "sha256:" + self._hash.hexdigest()
            if expected_digest is not None and expected_digest != digest:
                parse_digest(expected_digest)
                self.abort()
                raise StoreError(f"digest mismatch: expected {expected_digest}, content is {digest}")
        final = self._store.path(digest)
        if os.path.exists(final):
            self.abort()  # never rewrite a named blob
            return digest, self._size
        try:
            if self._synced != self._size:
                self._file.flush()
                os.fsync(self._file.fileno())
            os.replace(self._path, final)
            self._done = True
            self._file.close()  # releases the flock only once the temp name is gone
            if sync_dir:
                fsync_dir(self._store.blob_dir)
        except OSError as exc:
            self.abort()
            raise self._store.translate(exc, "committing blob") from exc
        return digest, self._size

    def abort(self) -> None:
        """Discard the temp file (idempotent)."""
        if self._done:
            return
        self._done = True
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            pass
        try:
            self._file.close()
        except OSError:
            pass  # a failed flush of data we are throwing away (ENOSPC) does not matter

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.abort()


class _VerifyingReader(io.RawIOBase):
    """A blob file that hashes what is read and raises StoreError at EOF when the digest is wrong."""

    def __init__(self, file: io.BufferedReader, digest: str, path: str) -> None:
        self._file = file
        self._digest = digest
        self._path = path
        self._hash = hashlib.sha256()
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n: int = self._file.readinto(buffer)
        if n:
            self._hash.update(buffer[:n])
        elif not self._checked:
            self._checked = True
            actual = "sha256:" + self._hash.hexdigest()
            if actual != self._digest:
                raise StoreError(f"corrupt blob: {self._digest} at {self._path} has content {actual}")
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


class BlobStore:
    """The blob directory of a store. Made by `Store.open`; used by every module that keeps content."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.blob_dir = os.path.join(root, "blobs", "sha256")
        self.tmp_dir = os.path.join(root, "tmp")
        # `Store.open` made them private (`store.private`) already; an OCI layout (a cache export) keeps
        # the umask's modes, as any output
        os.makedirs(self.blob_dir, exist_ok=True)
        os.makedirs(self.tmp_dir, exist_ok=True)

    def translate(self, exc: OSError, doing: str) -> StoreError:
        """A StoreError for an OS error while writing (a full or failing disk said plainly, with the free
        space)."""
        fault = disk_fault(exc, self.root, f"{doing} to")
        return fault or StoreError(f"error while {doing} to {self.root}: {exc}")

    # writing

    def writer(self, hashed: bool = True) -> BlobWriter:
        """A new BlobWriter (use it as a context manager); see BlobWriter for `hashed`."""
        return BlobWriter(self, hashed)

    def put_bytes(self, data: bytes, expected: str | None = None) -> tuple[str, int]:
        """Store `data`; returns `(digest, size)`. Nothing is written when the blob exists already."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if expected is not None and expected != digest:
            parse_digest(expected)
            raise StoreError(f"digest mismatch: expected {expected}, content is {digest}")
        if os.path.exists(self.path(digest)):
            return digest, len(data)
        with self.writer() as w:
            w.write(data)
            return w.commit(digest)

    def put_file(
        self, source: str | os.PathLike[str] | BinaryIO, expected: str | None = None
    ) -> tuple[str, int]:
        """Store a file (by path) or a binary stream, read in 1 MiB chunks; returns `(digest, size)`."""
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                return self.put_file(f, expected)
        with self.writer() as w:
            while chunk := source.read(CHUNK):
                w.write(chunk)
            return w.commit(expected)

    # reading

    def path(self, digest: str) -> str:
        """The path where blob `digest` lives (whether or not it exists)."""
        return os.path.join(self.blob_dir, parse_digest(digest))

    def exists(self, digest: str) -> bool:
        return os.path.exists(self.path(digest))

    def size(self, digest: str) -> int:
        try:
            return os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            raise self._missing(digest) from None

    def open(self, digest: str, verify: bool = False) -> BinaryIO:
        """The blob as a binary file; with `verify`, reading to EOF raises StoreError on a digest mismatch."""
        path = self.path(digest)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise self._missing(digest) from None
        if verify:
            return io.BufferedReader(_VerifyingReader(f, digest, path), CHUNK)
        return f

    def read_bytes(self, digest: str, verify: bool = True) -> bytes:
        """The whole blob (for manifests and configs). Verified by default: the bytes are in memory anyway,
        and sha256 of a small blob costs microseconds."""
        with self.open(digest) as f:
            data = f.read()
        if verify:
            actual = "sha256:" + hashlib.sha256(data).hexdigest()
            if actual != digest:
                raise StoreError(f"corrupt blob: {digest} at {self.path(digest)} has content {actual}")
        return data

    def verify(self, digest: str) -> bool:
        """Re-hash the whole blob: True when its content matches its name."""
        h = hashlib.sha256()
        with self.open(digest) as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return "sha256:" + h.hexdigest() == digest

    def iter_digests(self) -> Iterator[str]:
        """Every blob in the store (names that are not sha256 hex are ignored)."""
        with os.scandir(self.blob_dir) as entries:
            for entry in entries:
                if digest_parts("sha256:" + entry.name, ("sha256",)) is not None:
                    yield "sha256:" + entry.name

    def delete(self, digest: str) -> bool:
        """Remove a blob (prune only); False when it was not there."""
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            return False
        return True

    # temp files

    def clean_temps(self) -> int:
        """Remove temp files that no live writer holds (left by a killed process); returns how many."""
        removed = 0
        try:
            names = os.listdir(self.tmp_dir)
        except FileNotFoundError:
            return 0
        for name in names:
            if self._remove_if_unlocked(os.path.join(self.tmp_dir, name)):
                removed += 1
        return removed

    def temp_usage(self) -> tuple[int, int]:
        """(count, bytes) of files in the temp directory."""
        count = size = 0
        with os.scandir(self.tmp_dir) as entries:
            for entry in entries:
                try:
                    size += entry.stat(follow_symlinks=False).st_size
                    count += 1
                except FileNotFoundError:
                    pass
        return count, size

    @staticmethod
    def _remove_if_unlocked(path: str) -> bool:
        return remove_if_orphaned(path, os.unlink)

    def _missing(self, digest: str) -> StoreError:
        return StoreError(f"blob not found: {digest} (expected at {self.path(digest)})")
