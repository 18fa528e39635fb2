"""Overlayfs mounts through the mount syscalls (ctypes): no `mount` subprocess on the hot path.

Who uses it: `snapshots.py` (prepare/release of build-step rootfs mounts) and its tests.

Two ways to mount, chosen once per process:
- the new mount API (fsopen/fsconfig/fsmount/move_mount) with one `lowerdir+` per layer (Linux >= 6.8).
  Each fsconfig string is limited to 256 bytes, but there is no limit on the number of calls, so the only
  bound is overlayfs's own stack limit (500 lowers). Measured here: ~1 ms mount+umount, 130 layers fine.
- classic mount(2) with a `lowerdir=a:b:c` option string, bounded by one page (4095 bytes). Long lists are
  shortened by passing each lowerdir as `/proc/self/fd/<n>` of an O_PATH descriptor (~17 bytes, about 230
  layers), which plays the role of docker's `l/<short id>` symlink directory without a chdir (cwd is
  process-wide and we mount from worker threads).
A path longer than 255 bytes is passed the same `/proc/self/fd/<n>` way with the new API.

Rootless (`pybuild.rootless`): inside the user namespace overlay is mounted with `userxattr` (its marks are
`user.overlay.*`) and `redirect_dir=nofollow`; where the kernel refuses it, `fuseoverlay.py` mounts
fuse-overlayfs instead.

Options always set: `redirect_dir=off`, `metacopy=off`, `index=off`. A renamed lower directory or a chmod of
a lower file must then copy everything up, so the upperdir alone describes the step's changes
(`diff.py` depends on this, as docker's "naive diff" check does).
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

from pybuild.errors import StoreError
from pybuild.rootless import in_userns
from pybuild.worker import fuseoverlay as fuse

MAX_LOWERS = 500  # overlayfs OVL_MAX_STACK
_PAGE = 4095
_FSCONFIG_STRING_MAX = 255
_FSOPEN_CLOEXEC = 1
_FSCONFIG_SET_FLAG = 0
_FSCONFIG_SET_STRING = 1
_FSCONFIG_CMD_CREATE = 6
_FSMOUNT_CLOEXEC = 1
_MOVE_MOUNT_F_EMPTY_PATH = 4
_AT_FDCWD = -100
_MNT_DETACH = 2
_OPTIONS: tuple[tuple[str, str | None], ...] = (("redirect_dir", "off"), ("metacopy", "off"), ("index", "off"))
# in a user namespace overlay keeps its marks in user.overlay.* xattrs (`userxattr`), which rules out
# redirect_dir=off (it would follow redirects); nofollow creates none either
_USERNS_OPTIONS: tuple[tuple[str, str | None], ...] = (
    ("redirect_dir", "nofollow"), ("metacopy", "off"), ("index", "off"), ("userxattr", None))

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_NEW_API = all(hasattr(_libc, n) for n in ("fsopen", "fsconfig", "fsmount", "move_mount"))
if _NEW_API:
    _libc.fsopen.argtypes = [ctypes.c_char_p, ctypes.c_uint]
    _libc.fsconfig.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
    _libc.fsmount.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint]
    _libc.move_mount.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]

_lowerdir_plus: bool | None = None


def _options() -> tuple[tuple[str, str | None], ...]:
    return _USERNS_OPTIONS if in_userns() else _OPTIONS


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), what)
    return result


def supports_lowerdir_plus() -> bool:
    """Whether the new mount API accepts overlayfs's `lowerdir+` here (probed once, cached)."""
    global _lowerdir_plus
    if _lowerdir_plus is None:
        _lowerdir_plus = False
        if _NEW_API:
            fd = _libc.fsopen(b"overlay", _FSOPEN_CLOEXEC)
            if fd >= 0:
                try:
                    _lowerdir_plus = _libc.fsconfig(fd, _FSCONFIG_SET_STRING, b"lowerdir+", b"/", 0) == 0
                finally:
                    os.close(fd)
    return _lowerdir_plus


def _fs_log(fd: int) -> str:
    """The messages the kernel queued on an fs context (overlayfs explains refusals there)."""
    lines = []
    os.set_blocking(fd, False)
    for _ in range(16):
        try:
            data = os.read(fd, 1024)
        except OSError:
            break
        if not data:
            break
        lines.append(data.decode(errors="replace").strip())
    return "; ".join(lines)


def _short_paths(paths: Sequence[str], stack: ExitStack, limit: int) -> list[str]:
    """`paths`, each longer than `limit` replaced by `/proc/self/fd/<n>` of an O_PATH fd (closed by stack)."""
    out = []
    for path in paths:
        if len(os.fsencode(path)) > limit:
            fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            stack.callback(os.close, fd)
            path = f"/proc/self/fd/{fd}"
        out.append(path)
    return out


def _mount_new_api(target: str, lowers: Sequence[str], upper: str, work: str) -> None:
    with ExitStack() as stack:
        fd = _check(_libc.fsopen(b"overlay", _FSOPEN_CLOEXEC), "fsopen")
        stack.callback(os.close, fd)
        try:
            for lower in _short_paths(lowers, stack, _FSCONFIG_STRING_MAX):
                _check(_libc.fsconfig(fd, _FSCONFIG_SET_STRING, b"lowerdir+", os.fsencode(lower), 0),
                       f"lowerdir+ {lower}")
            for key, value in (("upperdir", upper), ("workdir", work)):
                short = _short_paths([value], stack, _FSCONFIG_STRING_MAX)[0]
                _check(_libc.fsconfig(fd, _FSCONFIG_SET_STRING, key.encode(), os.fsencode(short), 0), key)
            for key, option in _options():
                if option is None:
                    _check(_libc.fsconfig(fd, _FSCONFIG_SET_FLAG, key.encode(), None, 0), key)
                else:
                    _check(_libc.fsconfig(fd, _FSCONFIG_SET_STRING, key.encode(), option.encode(), 0), key)
            _check(_libc.fsconfig(fd, _FSCONFIG_CMD_CREATE, None, None, 0), "create")
            mfd = _check(_libc.fsmount(fd, _FSMOUNT_CLOEXEC, 0), "fsmount")
            stack.callback(os.close, mfd)
            _check(_libc.move_mount(mfd, b"", _AT_FDCWD, os.fsencode(target), _MOVE_MOUNT_F_EMPTY_PATH),
                   "move_mount")
        except OSError as exc:
            log = _fs_log(fd)
            raise OSError(exc.errno, f"{exc.strerror} ({exc.filename}{': ' + log if log else ''})") from None


def _escape(path: str) -> str:
    # overlayfs splits lowerdir on ':' and the option string on ','; both accept a backslash escape
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def _mount_classic(target: str, lowers: Sequence[str], upper: str, work: str) -> None:
    with ExitStack() as stack:
        options = ",".join(k if v is None else f"{k}={v}" for k, v in _options())
        tail = f",upperdir={_escape(upper)},workdir={_escape(work)},{options}"
        data = "lowerdir=" + ":".join(_escape(p) for p in lowers) + tail
        if len(os.fsencode(data)) > _PAGE:
            data = "lowerdir=" + ":".join(_short_paths(lowers, stack, 0)) + tail
        if len(os.fsencode(data)) > _PAGE:
            raise OSError(errno.E2BIG, f"{len(lowers)} lowerdirs do not fit one page of mount(2) options "
                                       "and this kernel has no overlayfs lowerdir+")
        _check(_libc.mount(b"overlay", os.fsencode(target), b"overlay", 0, os.fsencode(data)), "mount")


def mount_overlay(target: str, lowers: Sequence[str], upper: str, work: str) -> None:
    """Mount overlayfs at `target`: `lowers` top-most first, `upper`/`work` on one filesystem.

    Inside a rootless build's user namespace, fuse-overlayfs stands in when the kernel refuses (or when
    PYBUILD_OVERLAY=fuse-overlayfs asks for it). Raises StoreError naming the target and the layer count
    when neither works.
    """
    if not lowers:
        raise StoreError(f"cannot mount overlay at {target}: no lower directories")
    if len(lowers) > MAX_LOWERS:
        raise StoreError(f"cannot mount overlay at {target}: {len(lowers)} layers exceed overlayfs's limit "
                         f"of {MAX_LOWERS}")
    if in_userns() and os.environ.get("PYBUILD_OVERLAY") == fuse.FUSE_OVERLAYFS:
        fuse.mount(target, lowers, upper, work)
        return
    try:
        if supports_lowerdir_plus():
            _mount_new_api(target, lowers, upper, work)
        else:
            _mount_classic(target, lowers, upper, work)
    except OSError as exc:
        if in_userns() and exc.errno in (errno.EPERM, errno.EINVAL, errno.ENODEV):
            fuse.mount(target, lowers, upper, work, refused=exc.strerror or str(exc))
            return
        hint = ("overlay mounts need root or a user namespace: the `pybuild build` command enters one for a "
                "non-root user (pybuild.rootless.enter)") if exc.errno == errno.EPERM else None
        raise StoreError(f"cannot mount overlay at {target} ({len(lowers)} layers): {exc.strerror}",
                         hint=hint) from exc


def unmount(target: str) -> None:
    """Unmount `target`; a busy mount is detached lazily (it vanishes once its last user goes).
    Not mounted is fine. Raises StoreError on other failures."""
    path = os.fsencode(target)
    if _libc.umount2(path, 0) == 0:
        fuse.unmounted(target)
        return
    code = ctypes.get_errno()
    if code == errno.EINVAL and not is_mounted(target):
        return
    if code == errno.ENOENT:
        return
    if code == errno.EBUSY and _libc.umount2(path, _MNT_DETACH) == 0:
        fuse.unmounted(target)
        return
    code = ctypes.get_errno() if code == errno.EBUSY else code
    raise StoreError(f"cannot unmount {target}: {os.strerror(code)}",
                     hint="something may still use it (a process with its cwd inside?)")


def _unescape_mountinfo(field: str) -> str:
    return (field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            .replace("\\134", "\\"))


def mount_points(prefix: str = "/") -> list[str]:
    """Mount points in /proc/self/mountinfo at or under `prefix` (tests and leak checks)."""
    prefix = prefix.rstrip("/") or "/"
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
        for line in info:
            point = _unescape_mountinfo(line.split(" ", 5)[4])
            if prefix == "/" or point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def is_mounted(path: str) -> bool:
    """Whether `path` is a mount point."""
    path = os.path.abspath(path)
    return path in mount_points(path)


@contextmanager
def overlay_mount(target: str, lowers: Sequence[str], upper: str, work: str) -> Iterator[str]:
    """Mount for the duration of the block; always unmounted in `finally`."""
    mount_overlay(target, lowers, upper, work)
    try:
        yield target
    finally:
        unmount(target)
