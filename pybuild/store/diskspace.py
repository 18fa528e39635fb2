"""A full or failing disk said plainly: one line naming the path and the free space, and a hint.

Who uses it: the store's own writes (blobs in `cas`, the SQLite `index`, snapshot unpacking and step
directories in `worker/snapshots`). Anything else that writes where a disk can fill up can use
`disk_fault` the same way: it returns None for errors that are not about the disk, which the caller then
reports as it did before.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from pybuild.errors import StoreError
from pybuild.units import human_size

__all__ = ["DISK_ERRNOS", "FULL_HINT", "IO_HINT", "disk_fault", "disk_faults", "free_bytes", "free_space"]

_WHAT = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded", errno.EIO: "I/O error"}
DISK_ERRNOS = frozenset(_WHAT)
FULL_HINT = "free some space, or run `pybuild prune`"
IO_HINT = "the disk may be full (free some space, or run `pybuild prune`) or failing (see `dmesg`)"




def free_bytes(path: str) -> int | None:
    """Bytes free for an unprivileged writer on the filesystem of `path` (or of its nearest existing
    parent); None when statvfs fails all the way up."""
    current = os.path.abspath(path)
    while True:
        try:
            st = os.statvfs(current)
            return st.f_bavail * st.f_frsize
        except OSError:
            parent = os.path.dirname(current)
            if parent == current:
                return None
            current = parent


def free_space(path: str) -> str:
    """`12.0 MiB free` (see `free_bytes`), or `free space unknown`."""
    size = free_bytes(path)
    return "free space unknown" if size is None else f"{human_size(size)} free"


def disk_fault(exc: OSError, path: str, doing: str) -> StoreError | None:
    """`StoreError("no space left on device while {doing} {path} (N free)")` for ENOSPC, EDQUOT and EIO;
    None for any other error."""
    what = _WHAT.get(exc.errno or 0)
    if what is None:
        return None
    return StoreError(f"{what} while {doing} {path} ({free_space(path)})",
                      hint=IO_HINT if exc.errno == errno.EIO else FULL_HINT)


@contextmanager
def disk_faults(path: str, doing: str) -> Iterator[None]:
    """Turn a disk fault raised in the block into `disk_fault`'s StoreError; other errors pass."""
    try:
        yield
    except OSError as exc:
        error = disk_fault(exc, path, doing)
        if error is None:
            raise
        raise error from exc
