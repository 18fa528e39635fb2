"""Owner files for per-run scratch dirs (bundle dirs, secret dirs): a dir whose owner file is not locked
belongs to a process that died without cleaning up, and any later process may remove it.

    fd = claim(path, "owner.json", data)          # the creator; holds fd (the flock) while the dir is in use
    ...
    remove_if_dead(path, "owner.json", 60.0, stop)  # a sweeper: False while the owner lives

`claim` writes the owner file under a temporary name, locks it and only then renames it into place, so a
sweeper never sees an owner file that is not locked yet. A dir without an owner file is a crash between its
`mkdtemp` and `claim`: it is only taken over once it is older than `grace` seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Callable

_SUFFIX = ".new"


def claim(directory: str, name: str, data: bytes = b"") -> int:
    """Create `directory/name` holding `data`, locked; returns its descriptor (close it to release)."""
    temp = os.path.join(directory, name + _SUFFIX)
    fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if data:
            os.write(fd, data)
        os.rename(temp, os.path.join(directory, name))
    except BaseException:
        os.close(fd)
        raise
    return fd


def take_over(directory: str, name: str, grace: float) -> int | None:
    """When the owner of `directory` is gone: its owner file opened and locked (read it, remove the dir, then
    close it), or -1 when it never got one and is older than `grace` seconds. None while the owner lives,
    while an owner-less dir is younger than `grace`, or when the dir cannot be looked at."""
    try:
        fd = os.open(os.path.join(directory, name), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        try:
            old = time.time() - os.stat(directory).st_mtime > grace
        except OSError:
            return None
        return -1 if old else None
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: a live process holds it
        os.close(fd)
        return None
    return fd


def remove_if_dead(directory: str, name: str, grace: float,
                   before: Callable[[bytes], None] | None = None) -> bool:
    """Remove `directory` when its owner is gone (see `take_over`), first calling `before` with the owner
    file's data (b'' when it had none or it cannot be read); True when it was removed."""
    fd = take_over(directory, name, grace)
    if fd is None:
        return False
    try:
        if before is not None:
            data = b""
            if fd >= 0:
                with contextlib.suppress(OSError):
                    data = os.read(fd, 65536)
            before(data)
        shutil.rmtree(directory, ignore_errors=True)
    finally:
        if fd >= 0:
            os.close(fd)
    return True
