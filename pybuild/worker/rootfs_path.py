"""Safe path resolution inside a root directory (a step's rootfs, a stage's rootfs, an archive's target).

Who uses it: `fileops` (COPY/ADD/WORKDIR write into a rootfs and read from a context or stage) and
`addsource` (archive extraction). Nothing here ever resolves a path on the host's terms.

Rules (continuity's `fs.RootPath`, which BuildKit uses for COPY destinations):
- a container path is walked one component at a time from an open directory fd of the root;
- a symlink met on the way is read (`readlinkat`) and expanded in place: an absolute target restarts at
  the root, `..` stops at the root; so `/etc/link -> /` sends `COPY x /etc/link/` to the rootfs's `/`;
- every directory is opened with `openat(O_DIRECTORY | O_NOFOLLOW)` relative to its parent's fd, so a
  component swapped for a symlink between the check and the open fails (ELOOP) instead of escaping;
  `..` never opens anything: it pops back to the parent fd we already hold. Callers then create, link or
  remove the final component relative to the parent fd (`*at` calls), never through a host path string;
- more than 255 symlink expansions is a loop (the kernel's MAXSYMLINKS).

Missing parents are created on request with mode 0755 and the owner the caller passes (BuildKit's
`MkdirAll(destPath, 0755, chownUser, ...)` for COPY's CreateDestPath and WORKDIR's `Mkdir(WithUser)`:
created parents belong to the --chown / USER user, root otherwise).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from types import TracebackType

from pybuild.context.sources import clean_rel
from pybuild.errors import StepFailed
from pybuild.record import record

__all__ = ["Resolved", "RootDir", "clean_path", "host_path", "secure_join"]

_MAX_HOPS = 255
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

DirMaker = Callable[[int, str], None]
"""`make(parent_fd, name)`: create directory `name` in `parent_fd` (mode, owner, mtime as the caller wants)."""


def clean_path(path: str) -> str:
    """`path` cleaned as an absolute container path ('..' stops at '/')."""
    return "/" + clean_rel(path)


def secure_join(root: str, path: str) -> str:
    """The absolute container path `path` names inside `root`, symlinks resolved as if `root` were `/`.

    Lexical, like securejoin: an absolute link restarts at `root`, `..` never goes above it, missing
    components are kept literally. For paths nobody else is changing (a rootfs before its container runs,
    files read from it); `RootDir` is the fd-based walk for paths a concurrent writer could swap.
    Raises StepFailed on a symlink loop. The host path is `host_path(root, result)`.
    """
    pending = [part for part in path.split("/") if part and part != "."]
    pending.reverse()
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        host = os.path.join(root, *resolved, part)
        try:
            info = os.lstat(host)
        except (FileNotFoundError, NotADirectoryError):
            resolved.append(part)
            continue
        if not stat.S_ISLNK(info.st_mode):
            resolved.append(part)
            continue
        hops += 1
        if hops > _MAX_HOPS:
            raise StepFailed(f"too many levels of symbolic links resolving {path}")
        link = os.readlink(host)
        if link.startswith("/"):
            resolved = []
        pending.extend(reversed([part for part in link.split("/") if part and part != "."]))
    return "/" + "/".join(resolved)


def host_path(root: str, container_path: str) -> str:
    """`root` joined with an already resolved absolute container path."""
    return os.path.join(root, container_path.lstrip("/")) if container_path != "/" else root


@record
class Resolved:
    """Where a container path lands: an open fd of its parent directory (the caller closes it), the final
    name in it ('' when the path resolved to a directory that `dir_fd` itself is), and the canonical path."""

    dir_fd: int
    name: str
    path: str


class RootDir:
    """An open root directory; every lookup below it goes through directory fds (see the module docstring).

    Use as a context manager, or call `close()`. `RootDir.from_fd` wraps an fd without taking ownership.
    """

    def __init__(self, host_path: str) -> None:
        self.host_path = os.path.abspath(host_path)
        try:
            self.fd = os.open(self.host_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise StepFailed(f"cannot open root directory {self.host_path}: {exc.strerror}") from None
        self._owned = True

    @classmethod
    def from_fd(cls, fd: int, shown: str) -> RootDir:
        """A RootDir over an already open directory fd (not closed by `close()`)."""
        obj = cls.__new__(cls)
        obj.host_path = shown
        obj.fd = fd
        obj._owned = False
        return obj

    def close(self) -> None:
        if self._owned and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> RootDir:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ walking

    def walk(self, path: str, *, follow_last: bool = True, make_dir: DirMaker | None = None) -> Resolved:
        """Resolve container `path`: every component but the last must be (or, with `make_dir`, becomes) a
        directory; the last is followed only when it is a symlink and `follow_last`. It may be missing.

        Raises StepFailed when a component is not a directory, is missing (without `make_dir`), or links
        loop.
        """
        pending = [seg for seg in reversed(path.split("/")) if seg not in ("", ".")]
        stack = [os.dup(self.fd)]
        names: list[str] = []
        hops = 0
        try:
            while pending:
                seg = pending.pop()
                if seg == "..":
                    if names:
                        os.close(stack.pop())
                        names.pop()
                    continue
                last = not pending
                st = _lstat_at(stack[-1], seg)
                if st is not None and stat.S_ISLNK(st.st_mode) and (follow_last or not last):
                    hops += 1
                    if hops > _MAX_HOPS:
                        raise StepFailed(f'too many levels of symbolic links resolving "{path}"')
                    target = os.readlink(seg, dir_fd=stack[-1])
                    if target.startswith("/"):
                        while len(stack) > 1:
                            os.close(stack.pop())
                        names.clear()
                    pending.extend(s for s in reversed(target.split("/")) if s not in ("", "."))
                    continue
                if last:
                    return Resolved(os.dup(stack[-1]), seg, _join(names, seg))
                if st is None:
                    if make_dir is None:
                        raise StepFailed(f'"{_join(names, seg)}" does not exist (resolving "{path}")')
                    make_dir(stack[-1], seg)
                elif not stat.S_ISDIR(st.st_mode):
                    raise StepFailed(f'"{_join(names, seg)}" is not a directory (resolving "{path}")')
                stack.append(_open_dir(stack[-1], seg, _join(names, seg)))
                names.append(seg)
            return Resolved(os.dup(stack[-1]), "", _join(names, ""))
        finally:
            for fd in stack:
                os.close(fd)

    def open_dir(self, path: str, *, make_dir: DirMaker | None = None) -> tuple[int, str, bool]:
        """(fd, canonical path, created) of directory `path`, following links inside the root and creating
        it (and its parents) with `make_dir` when missing. StepFailed when it is not a directory."""
        res = self.walk(path, make_dir=make_dir)
        try:
            if not res.name:
                return os.dup(res.dir_fd), res.path, False
            st = _lstat_at(res.dir_fd, res.name)
            created = st is None
            if st is None:
                if make_dir is None:
                    raise StepFailed(f'"{res.path}" does not exist')
                make_dir(res.dir_fd, res.name)
            elif not stat.S_ISDIR(st.st_mode):
                raise StepFailed(f'"{res.path}" is not a directory')
            return _open_dir(res.dir_fd, res.name, res.path), res.path, created
        finally:
            os.close(res.dir_fd)

    def lstat(self, path: str, *, follow_last: bool = True) -> os.stat_result | None:
        """The stat of `path` resolved inside the root (None when it or a parent is missing)."""
        try:
            res = self.walk(path, follow_last=follow_last)
        except StepFailed:
            return None
        try:
            return os.stat(res.dir_fd) if not res.name else _lstat_at(res.dir_fd, res.name)
        finally:
            os.close(res.dir_fd)

    def read_file(self, path: str, limit: int = 1 << 24) -> bytes | None:
        """The content of regular file `path` inside the root (links followed inside it), or None."""
        try:
            res = self.walk(path)
        except StepFailed:
            return None
        try:
            if not res.name:
                return None
            fd = os.open(res.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=res.dir_fd)
        except OSError:
            return None
        finally:
            os.close(res.dir_fd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            with os.fdopen(os.dup(fd), "rb") as handle:
                return handle.read(limit)
        finally:
            os.close(fd)


def _join(names: list[str], last: str) -> str:
    return "/" + "/".join([*names, last] if last else names)


def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None


def _open_dir(parent_fd: int, name: str, shown: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:  # ELOOP: swapped for a symlink after our check; ENOTDIR: for a file
        raise StepFailed(f'cannot open directory "{shown}": {exc.strerror}') from None
