"""Temp files (and directories) that their writer holds with an exclusive flock until it is done with them:
one whose writer is gone (a kill -9) is removed by the next sweep, one a live writer holds never is.

Who uses it: the store's blob temps (`cas.BlobStore.clean_temps`) and the partials of exports beside their
destination (`export.destination.sweep_partials`). The writer's side: make the temp, flock it, then check that
it is still linked (a sweep may have taken it between the two) and make another if not.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable

__all__ = ["remove_if_orphaned"]


def remove_if_orphaned(path: str, remove: Callable[[str], None]) -> bool:
    """`remove(path)` when no live writer holds `path` (never following a symlink); whether it was removed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a live writer holds it
        try:
            if os.stat(path, follow_symlinks=False).st_ino != os.fstat(fd).st_ino:
                return False  # renamed away and the name reused meanwhile
            remove(path)
        except FileNotFoundError:
            return False
        return True
    finally:
        os.close(fd)
