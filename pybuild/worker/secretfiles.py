"""The host side of RUN `--mount=type=secret` files: memory that no path on disk names, gone with pybuild.

Made by `mounts._Preparer` (one `SecretFiles` per RUN, closed with the RUN's other mounts); `sweep_stale`
is called by `executor.reap_stale_runs`, so by every build that runs a step and by `pybuild prune`.

    files = SecretFiles()
    source = files.add(value, mode=0o400, uid=0, gid=0)   # what the runtime bind-mounts (read-only)
    ... run the container ...
    files.close()

Where the values live:

* A detached tmpfs: `fsopen`/`fsconfig`/`fsmount` make a tmpfs that is mounted nowhere, known only by a
  descriptor of this process (close-on-exec, so no child holds it). Each secret is a file in it, and the
  source the runtime bind-mounts is `/proc/<pybuild pid>/fd/<fd>/<n>`: runc and crun resolve it on the host
  side while they set up the container. No directory in any mount namespace leads to it: when the
  descriptor is closed (the end of the RUN) or pybuild dies (any signal, kill -9 included), the tmpfs goes.
  A container that outlives a killed pybuild keeps only its own read-only bind of the file, which goes
  when the container does (the next build reaps it).
* Where the kernel refuses a bind mount from a detached mount (older kernels: only mounts of the caller's
  namespace could be bound), or fsopen is missing or not permitted (not root, a seccomp filter): a 0700 dir
  `pybuild-secrets-XXXX` in /dev/shm (a tmpfs, so never on disk; the system temp dir when /dev/shm is
  missing) with an `owner` file locked while the RUN lives (`ownerlock`). It is removed when the RUN ends;
  one left by a killed pybuild has a free lock, and `sweep_stale` removes it.

Which one is used is settled once per process by a probe: cloning (`open_tree(OPEN_TREE_CLONE)`) a file of
a detached tmpfs, which passes the kernel's check a bind mount of it does (`may_copy_tree`), and reaching it
through /proc/<pid>/fd (/proc may belong to another pid namespace).
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import tempfile

from pybuild.worker import ownerlock

PREFIX = "pybuild-secrets-"
_OWNER = "owner"
_UNOWNED_GRACE = 60.0  # seconds; see ownerlock.take_over

# Linux syscall numbers: the same on every architecture for the calls added since 5.2.
_SYS_OPEN_TREE, _SYS_FSOPEN, _SYS_FSCONFIG, _SYS_FSMOUNT = 428, 430, 431, 432
_FSOPEN_CLOEXEC = _FSMOUNT_CLOEXEC = 1
_FSCONFIG_SET_STRING, _FSCONFIG_CMD_CREATE = 1, 6
_MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV, _MOUNT_ATTR_NOEXEC = 0x2, 0x4, 0x8
_OPEN_TREE_CLONE = 1


class SecretFiles:
    """The secret files of one RUN (see the module docstring). Not thread-safe: one preparer uses it."""

    def __init__(self) -> None:
        self._mount = -1
        """The detached tmpfs (-1: none yet, or the fallback dir is used)."""
        self._dir = ""
        """The fallback dir ('' when not used)."""
        self._owner = -1
        self._root = ""
        self._count = 0

    @property
    def detached(self) -> bool:
        """True when the files live in a detached tmpfs (False before the first `add` or in the fallback)."""
        return self._mount >= 0

    def add(self, value: bytes, *, mode: int, uid: int, gid: int) -> str:
        """Store one value as a file with `mode` and owner; returns the path the runtime binds (valid until
        `close`)."""
        if not self._root:
            self._open()
        path = os.path.join(self._root, str(self._count))
        self._count += 1
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o400)
        try:
            view = memoryview(value)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)
            if uid or gid:
                os.fchown(fd, uid, gid)
        finally:
            os.close(fd)
        return path

    def _open(self) -> None:
        if detached_mounts_work():
            try:
                self._mount = _detached_tmpfs()
                self._root = f"/proc/{os.getpid()}/fd/{self._mount}"
                return
            except OSError:
                pass
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self._dir = tempfile.mkdtemp(prefix=PREFIX, dir=base)  # mode 0700
        try:
            self._owner = ownerlock.claim(self._dir, _OWNER, str(os.getpid()).encode())
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self._root = self._dir

    def close(self) -> None:
        """Drop every file (idempotent). Call it once the container is gone."""
        if self._mount >= 0:
            os.close(self._mount)
            self._mount = -1
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = ""
        if self._owner >= 0:
            os.close(self._owner)  # after the removal: a sweeper never races a live removal
            self._owner = -1
        self._root = ""


def sweep_stale() -> int:
    """Remove the fallback secret dirs of processes that died (in /dev/shm and the temp dir); returns how
    many. Dirs of live processes and of other users are left alone."""
    removed = 0
    bases = {"/dev/shm", tempfile.gettempdir()}
    for base in sorted(bases):
        try:
            names = [name for name in os.listdir(base) if name.startswith(PREFIX)]
        except OSError:
            continue
        for name in names:
            path = os.path.join(base, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
                continue
            removed += ownerlock.remove_if_dead(path, _OWNER, _UNOWNED_GRACE)
    return removed


# --- detached tmpfs -----------------------------------------------------------------------------------


def _syscall(number: int, *args: int | bytes | None) -> int:
    import ctypes  # only where secret files are made: a sweep needs none of it

    libc = ctypes.CDLL(None, use_errno=True)
    converted = [ctypes.c_long(arg) if isinstance(arg, int) else arg for arg in args]
    result: int = libc.syscall(ctypes.c_long(number), *converted)
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def _detached_tmpfs() -> int:
    """A new tmpfs (root dir 0700; nosuid, nodev, noexec) mounted nowhere; its descriptor (close-on-exec)."""
    context = _syscall(_SYS_FSOPEN, b"tmpfs", _FSOPEN_CLOEXEC)
    try:
        _syscall(_SYS_FSCONFIG, context, _FSCONFIG_SET_STRING, b"mode", b"0700", 0)
        _syscall(_SYS_FSCONFIG, context, _FSCONFIG_CMD_CREATE, None, None, 0)
        return _syscall(_SYS_FSMOUNT, context, _FSMOUNT_CLOEXEC,
                        _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV | _MOUNT_ATTR_NOEXEC)
    finally:
        os.close(context)


@functools.cache
def proc_is_ours() -> bool:
    """Whether /proc/<our pid> is this process (not so when /proc belongs to another pid namespace): the
    runtime reaches our memfd and detached tmpfs through it."""
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return False


@functools.cache
def detached_mounts_work() -> bool:
    """Whether a file of a detached tmpfs can be bind-mounted from `/proc/<pid>/fd/<fd>/<name>` (probed once
    per process)."""
    if not proc_is_ours():
        return False
    try:
        mount = _detached_tmpfs()
    except OSError:
        return False
    try:
        fd = os.open("probe", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600, dir_fd=mount)
        try:
            made, seen = os.fstat(fd), os.stat(f"/proc/{os.getpid()}/fd/{mount}/probe")
        finally:
            os.close(fd)
        os.close(_syscall(_SYS_OPEN_TREE, mount, b"probe", _OPEN_TREE_CLONE | os.O_CLOEXEC))
        return (made.st_dev, made.st_ino) == (seen.st_dev, seen.st_ino)
    except OSError:
        return False
    finally:
        os.close(mount)
