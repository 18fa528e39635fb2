"""The store lock: one `flock` on `<root>/lock`, shared for builds, exclusive for prune.

Builds hold the shared lock for their whole run, so a blob a build wrote but has not tagged yet is never
pruned. Prune takes the exclusive lock and waits for running builds; it reports that it is waiting (through
`on_wait`) and gives up with a clear `StoreError` after `timeout` seconds.

Each acquisition opens its own file description, so flock semantics are per acquisition: one process holding
the shared lock that asks for the exclusive one waits for itself (it would time out, not corrupt anything).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pybuild.errors import StoreError

_POLL = 0.05


class StoreLock:
    """The flock on one lock file. Made by `Store.open`; used by builds (shared) and prune (exclusive)."""

    def __init__(self, path: str) -> None:
        self.path = path

    @contextmanager
    def shared(
        self, timeout: float | None = None, on_wait: Callable[[str], None] | None = None
    ) -> Iterator[None]:
        """Hold the lock shared (builds) for the duration of the block."""
        with self._hold(fcntl.LOCK_SH, "shared", timeout, on_wait):
            yield

    @contextmanager
    def exclusive(
        self, timeout: float | None = None, on_wait: Callable[[str], None] | None = None
    ) -> Iterator[None]:
        """Hold the lock exclusively (prune) for the duration of the block."""
        with self._hold(fcntl.LOCK_EX, "exclusive", timeout, on_wait):
            yield

    @contextmanager
    def _hold(
        self, mode: int, name: str, timeout: float | None, on_wait: Callable[[str], None] | None
    ) -> Iterator[None]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            self._acquire(fd, mode, name, timeout, on_wait)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _acquire(
        self, fd: int, mode: int, name: str, timeout: float | None, on_wait: Callable[[str], None] | None
    ) -> None:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        holders = "running builds" if mode == fcntl.LOCK_EX else "a running prune"
        if on_wait is not None:
            on_wait(f"waiting for {holders} to release the store lock at {self.path}")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise StoreError(
                        f"timed out after {timeout:g}s waiting for {holders} to release the store lock "
                        f"at {self.path} ({name} lock wanted)",
                        hint="try again when the other pybuild processes have finished",
                    ) from None
                time.sleep(_POLL)
