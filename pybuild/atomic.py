"""Replacing a file whole: a reader sees the old content or the new, never part of it, and a crash leaves
one or the other (plus at most a temp file beside it).

Who uses it: every small file pybuild rewrites in place: a cache directory's `index.json` and
`oci-layout` (`cache/transfer.py`), docker's `config.json` (`registry/dockerconfig.py`), the plan memo
(`planmemo.py`), the stat cache (`context/statcache.py`), the parser's table cache
(`dockerfile/parser.py`), snapshot metadata (`worker/snapshots.py`) and a runtime's state file
(`worker/executor.py`). Blobs (`store/cas.py`, streamed and named by their digest) and exports
(`export/destination.py`, streamed under a lock) have writers of their own; they end the same way
(fsync, rename, `fsync_dir`).

The steps: a temp file in the same directory (so the rename stays on one filesystem), the data, fsync,
`os.replace`, fsync of the directory (so the rename itself survives a crash). The temp file never
outlives a failure. Errors are OSErrors, for the caller to word: each knows what the file is to the user.
"""

from __future__ import annotations

import os
from contextlib import suppress
from types import TracebackType

__all__ = ["AtomicFile", "fsync_dir", "write_atomic"]


def fsync_dir(path: str) -> None:
    """Make a rename or unlink in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicFile:
    """A temp file beside `path`, made (mode `mode`, 0600 by default) when this is constructed, which
    raises the OSError of making it; `write` adds to it; `commit` puts it in place, `discard` removes it.
    As a context manager: committed when the block succeeds, discarded when it raises."""

    def __init__(self, path: str, *, mode: int = 0o600, prefix: str | None = None) -> None:
        import tempfile  # only when something is written: not on a cached rebuild's path

        self.path = path
        self.directory = os.path.dirname(path) or "."
        fd, self.temp = tempfile.mkstemp(prefix=prefix or f".{os.path.basename(path)}.", suffix=".tmp",
                                         dir=self.directory)
        self._file = open(fd, "wb")  # noqa: SIM115 - closed by commit or discard
        try:
            if mode != 0o600:
                os.fchmod(fd, mode)
        except BaseException:
            self.discard()
            raise

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def commit(self) -> None:
        """fsync, `os.replace` onto `path`, fsync of the directory; the temp file is removed on failure."""
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self.temp, self.path)
        except BaseException:
            self.discard()
            raise
        fsync_dir(self.directory)

    def discard(self) -> None:
        self._file.close()
        with suppress(OSError):
            os.unlink(self.temp)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


def write_atomic(path: str, data: bytes, *, mode: int = 0o600, prefix: str | None = None) -> None:
    """Replace `path` with `data` (see the module docstring); OSError on failure, `path` untouched then
    (unless only the final directory fsync failed)."""
    with AtomicFile(path, mode=mode, prefix=prefix) as out:
        out.write(data)
