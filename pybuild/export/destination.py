"""All-or-nothing export destinations: an output appears whole at its path, or not at all.

Who uses it: the exporters (`exporters.py`: `-o type=oci|docker|tar|local`, `pybuild save -o`).

- A file output is written to a temp file `.pybuild-export-XXXXXXXX` beside its destination, fsynced and
  renamed into place at the end; a directory output is built in such a temp directory and renamed. A failure
  removes the temp.
- A kill -9 cannot remove it, so every export first sweeps the partials beside its destination that no live
  writer holds: the writer keeps an exclusive flock on its temp (the file, or the directory itself) until it
  is renamed or removed, as the store's blob temps are kept (`store/orphans.py`). A writer checks, once locked,
  that its temp is still linked, which closes the window between making the temp and locking it.
  Why not O_TMPFILE + linkat for files: it leaves directory outputs (tar=false, type=local) to this sweep
  anyway, linkat cannot replace an existing destination (a named temp and a rename again), and some
  filesystems (NFS, FUSE) refuse O_TMPFILE; one mechanism covers both kinds everywhere.
- OS errors at the destination (a full or failing disk, no permission, a missing parent directory, a
  directory where a file is wanted, a read-only filesystem) are one-line ConfigErrors naming the destination,
  with the free space there when the disk is full or failing (`dest_error`). Writes go through `DestFile`,
  which says its errors so, while errors reading the store keep their own messages.
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, BinaryIO

from pybuild.errors import ConfigError
from pybuild.store.diskspace import free_space
from pybuild.store.orphans import remove_if_orphaned

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["PREFIX", "DestError", "DestFile", "dest_error", "new_dir", "new_file", "standard_output",
           "sweep_partials"]

PREFIX = ".pybuild-export-"
_PARTIAL = re.compile(re.escape(PREFIX) + r"[A-Za-z0-9_]{8}")  # what mkstemp/mkdtemp make with PREFIX
_DISK = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded", errno.EIO: "I/O error"}
_REASONS = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
            errno.EROFS: "read-only file system", errno.EISDIR: "it is a directory",
            errno.ENOTDIR: "a parent is not a directory", errno.ENAMETOOLONG: "file name too long"}


class DestError(ConfigError):
    """An OS error at an output destination, said in one line (see `dest_error`)."""

    def __init__(self, message: str, os_error: OSError, dest: str, what: str,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.os_error, self.dest, self.what = os_error, dest, what


def dest_error(exc: OSError, dest: str, what: str = "") -> DestError:
    """The one-line error for `exc` at output `dest` (`what`: the entry being written, if any; `-` is
    standard output). A full or failing disk says the free space there: `new_file`/`new_dir` say it again
    once the partial output is gone, so it is what the whole export could have used."""
    code = exc.errno or 0
    if dest == "-":
        reason = (exc.strerror or str(exc)).lower()
        return DestError(f"cannot write output to standard output: {reason}", exc, dest, what)
    where = f"cannot write output {dest}" + (f" ({what})" if what else "")
    parent = os.path.dirname(os.path.abspath(dest))
    if code in _DISK:
        hint = "the disk may be full or failing (see `dmesg`)" if code == errno.EIO else \
            "free some space there, or export somewhere else"
        return DestError(f"{where}: {_DISK[code]} ({free_space(parent)} in {parent})", exc, dest, what, hint)
    if code == errno.ENOENT and not os.path.isdir(parent):
        return DestError(f"{where}: directory {parent} does not exist", exc, dest, what, "create it first")
    reason = _REASONS.get(code) or (exc.strerror or str(exc)).lower()
    return DestError(f"{where}: {reason}", exc, dest, what)


class DestFile(io.FileIO):
    """The temp file of a file output (unbuffered; every write is whole): an OS error is said as the
    destination's, so errors reading the store keep their own messages."""

    def __init__(self, fd: int, dest: str) -> None:
        super().__init__(fd, "wb", closefd=True)
        self.dest = dest

    def write(self, data: ReadableBuffer, /) -> int:
        view = memoryview(data).cast("B")
        total = len(view)
        try:
            while view:
                view = view[super().write(view) or 0:]
        except OSError as exc:
            raise dest_error(exc, self.dest) from exc
        return total


@contextmanager
def new_file(dest: str) -> Iterator[DestFile]:
    """A locked temp file beside `dest`, renamed to `dest` when the block succeeds, removed when it fails."""
    if os.path.isdir(dest):
        raise ConfigError(f"cannot write output {dest}: it is a directory",
                          hint="give a file name, or use tar=false")
    with _partial(dest, lambda parent: tempfile.mkstemp(prefix=PREFIX, dir=parent)) as (fd, tmp):
        with DestFile(fd, dest) as out:  # closing it releases the lock, after the rename
            yield out

            def publish() -> None:
                os.fsync(fd)
                os.fchmod(fd, 0o644)
                os.replace(tmp, dest)

            _finish(dest, publish)


@contextmanager
def standard_output(stdout: BinaryIO) -> Iterator[BinaryIO]:
    """`stdout` for an output to `-`, written whole through its own descriptor after a flush: a pipe or a
    full disk may take part of a write, which an unbuffered stdout (PYTHONUNBUFFERED) would lose, and a
    buffered one would only fail in the flush at exit. A stream without a descriptor is used as it is."""
    try:
        stdout.flush()
        fd = os.dup(stdout.fileno())
    except OSError:  # io.UnsupportedOperation: no descriptor (a test's BytesIO)
        yield stdout
        return
    with DestFile(fd, "-") as out:
        yield out


@contextmanager
def new_dir(dest: str) -> Iterator[str]:
    """A locked temp directory beside `dest`, renamed to `dest` at the end; `dest` must be absent or an
    empty directory."""
    if os.path.lexists(dest):
        if os.path.islink(dest) or not os.path.isdir(dest):
            raise ConfigError(f"cannot write output {dest}: it exists and is not a directory",
                              hint="remove it or pick another")
        if os.listdir(dest):
            raise ConfigError(f"output directory {dest} exists and is not empty",
                              hint="remove it or pick another")
    with _partial(dest, _mkdtemp) as (fd, tmp):
        try:
            yield tmp

            def publish() -> None:
                os.chmod(tmp, 0o755)
                if os.path.isdir(dest):
                    os.rmdir(dest)
                os.rename(tmp, dest)

            _finish(dest, publish)
        finally:
            os.close(fd)  # the lock goes with it, after the rename


@contextmanager
def _partial(dest: str, make: Callable[[str], tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """A temp beside `dest`, made by `make(parent)` once the parent's dead partials are swept, and locked:
    (fd, path). Removed when the block fails."""
    parent = os.path.dirname(os.path.abspath(dest))
    sweep_partials(parent)
    fd, tmp = _locked(dest, lambda: make(parent))
    try:
        yield fd, tmp
    except BaseException as exc:
        _remove(tmp)
        if isinstance(exc, DestError) and exc.os_error.errno in _DISK:  # said again with the space freed
            raise dest_error(exc.os_error, exc.dest, exc.what) from exc.os_error
        raise


def _finish(dest: str, steps: Callable[[], None]) -> None:
    """Run the last `steps` of an output (sync, mode, rename): their OS errors are the destination's."""
    try:
        steps()
    except OSError as exc:
        raise dest_error(exc, dest) from exc


def _mkdtemp(parent: str) -> tuple[int, str]:
    path = tempfile.mkdtemp(prefix=PREFIX, dir=parent)
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC), path
    except OSError:
        _remove(path)
        raise


def _locked(dest: str, make: Callable[[], tuple[int, str]]) -> tuple[int, str]:
    """`make()` → (fd, path) of a new temp, flocked and still linked (a sweeper may take it before the
    lock)."""
    while True:
        try:
            fd, path = make()
        except OSError as exc:
            raise dest_error(exc, dest) from exc
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            linked = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            linked = False
        if linked:
            return fd, path
        os.close(fd)


def sweep_partials(parent: str) -> int:
    """Remove the `.pybuild-export-*` temps in `parent` that no live writer holds (a killed export's);
    returns how many. Best effort: what cannot be opened or locked is left alone."""
    try:
        names = [name for name in os.listdir(parent) if _PARTIAL.fullmatch(name)]
    except OSError:
        return 0
    return sum(1 for name in names if remove_if_orphaned(os.path.join(parent, name), _remove))


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
