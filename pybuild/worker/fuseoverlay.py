"""fuse-overlayfs: the rootless fallback where the kernel refuses overlayfs in a user namespace.

Who uses it: `overlay.mount_overlay`/`unmount`, only inside a rootless build's user namespace
(`pybuild.rootless`), when the kernel refuses the mount (EPERM, EINVAL, ENODEV: kernels before 5.11, or
overlayfs disabled for user namespaces) or when `PYBUILD_OVERLAY=fuse-overlayfs` asks for it.

fuse-overlayfs (Debian package fuse-overlayfs, /dev/fuse usable by the user) reads the same lower layout
the kernel does: 0/0 character-device whiteouts and `user.overlay.opaque` directories. Its upperdir
differs in two ways, which `unmounted` rewrites into the kernel's form once the mount is gone, so the
snapshot diff (`diff.py`) and later mounts see one format:
- it marks every directory it makes opaque (`.wh..wh..opq`, a `.wh..opq` device, maybe
  `user.fuseoverlayfs.opaque`); the kernel marks only a directory made over an entry or whiteout of the
  lowers: those get the `user.overlay.opaque` xattr, the others no mark;
- where it cannot make a device, a whiteout is a `.wh.NAME` file: it becomes the 0/0 device NAME;
- its own `user.fuseoverlayfs.*` xattrs are dropped, so they never land in a layer.

fuse-overlayfs runs as a daemon in pybuild's mount namespace and exits when its mount is unmounted. A
pybuild killed with SIGKILL while such a mount is up leaves that daemon (and the namespace it holds)
behind; with the kernel's overlayfs nothing is left.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Sequence

from pybuild.errors import ConfigError, StoreError

FUSE_OVERLAYFS = "fuse-overlayfs"
_OPAQUE_XATTR = "user.overlay.opaque"
_OWN_XATTRS = "user.fuseoverlayfs."
_WHITEOUT = ".wh."
_OPAQUE_FILES = (".wh..wh..opq", ".wh..opq")

_uppers: dict[str, tuple[str, tuple[str, ...]]] = {}  # mount point -> (upperdir, lowers) of our mounts
_lock = threading.Lock()


def mount(target: str, lowers: Sequence[str], upper: str, work: str, refused: str = "") -> None:
    """Mount fuse-overlayfs at `target` (`lowers` top-most first). ConfigError when it is not installed,
    StoreError when it fails; `refused` is the kernel's reason, for the messages."""
    why = (f"the kernel refused overlayfs in the user namespace ({refused})" if refused
           else "PYBUILD_OVERLAY=fuse-overlayfs")
    binary = shutil.which(FUSE_OVERLAYFS)
    if binary is None:
        raise ConfigError(f"rootless build: cannot mount overlay at {target}: {why}, and fuse-overlayfs is "
                          "not installed", hint="install fuse-overlayfs (Debian: apt-get install fuse-overlayfs)")
    for path in (*lowers, upper, work):
        if ":" in path or "," in path:
            raise StoreError(f"cannot mount fuse-overlayfs at {target}: the path {path!r} holds ':' or ','",
                             hint="use a store path without them (PYBUILD_ROOT)")
    options = f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work}"
    result = subprocess.run([binary, "-o", options, target], stdin=subprocess.DEVNULL, capture_output=True,
                            timeout=60)
    if result.returncode != 0:
        lines = [ln for ln in result.stderr.decode(errors="replace").splitlines()
                 if ln.strip() and "unknown argument ignored" not in ln]
        detail = lines[-1].strip() if lines else f"exit status {result.returncode}"
        raise StoreError(f"cannot mount fuse-overlayfs at {target} ({len(lowers)} layers; {why}): {detail}",
                         hint="/dev/fuse must be readable and writable by the user (mode 0666)")
    with _lock:
        _uppers[os.path.abspath(target)] = (upper, tuple(lowers))


def unmounted(target: str) -> None:
    """`target` was unmounted: when it was a fuse-overlayfs mount, rewrite its upperdir into the kernel's
    overlay form (see the module docstring)."""
    with _lock:
        found = _uppers.pop(os.path.abspath(target), None)
    if found is not None:
        normalize_upper(*found)


def _drop_own_xattrs(path: str) -> bool:
    """Remove fuse-overlayfs's xattrs from `path`; whether it marked `path` opaque."""
    opaque = False
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return False
    for name in names:
        if name.startswith(_OWN_XATTRS):
            if name.endswith(".opaque"):
                opaque = os.getxattr(path, name, follow_symlinks=False) == b"y"
            os.removexattr(path, name, follow_symlinks=False)
    return opaque


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, _OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _lowers_hold(lowers: Sequence[str], parts: Sequence[str]) -> bool:
    """Whether overlay's lookup of `parts` in the merged `lowers` (top-most first) finds an entry or a
    whiteout: where the kernel makes a new directory opaque (it was created over something)."""
    layers = list(lowers)
    for depth in range(1, len(parts) + 1):
        rel = os.path.join(*parts[:depth])
        dirs: list[str] = []
        for layer in layers:
            try:
                info = os.lstat(os.path.join(layer, rel))
            except OSError:
                continue
            if depth == len(parts):
                return True
            if not stat.S_ISDIR(info.st_mode):
                break  # a whiteout or a file hides this name, and everything below, in the lower layers
            dirs.append(layer)
            if _is_opaque(os.path.join(layer, rel)):
                break
        if not dirs:
            return False
        layers = dirs
    return False


def normalize_upper(upper: str, lowers: Sequence[str]) -> None:
    """Rewrite a fuse-overlayfs upperdir (over `lowers`, top-most first) into the kernel overlayfs form,
    in place. fuse-overlayfs marks every directory it makes opaque; the kernel only one made over an
    entry or a whiteout of the lowers (and not inside an opaque directory), so only those keep the mark."""
    opaque_dirs: list[str] = []
    for dirpath, _dirnames, filenames in os.walk(upper):
        rel = os.path.relpath(dirpath, upper)
        marked = _drop_own_xattrs(dirpath)
        for name in _OPAQUE_FILES:
            if name in filenames:
                os.unlink(os.path.join(dirpath, name))
                marked = True
        if marked and rel != ".":
            inside = any(rel.startswith(d + "/") for d in opaque_dirs)
            if not inside and _lowers_hold(lowers, rel.split("/")):
                os.setxattr(dirpath, _OPAQUE_XATTR, b"y", follow_symlinks=False)
                opaque_dirs.append(rel)
            else:
                try:
                    os.removexattr(dirpath, _OPAQUE_XATTR, follow_symlinks=False)
                except OSError:
                    pass
        for name in filenames:
            if name in _OPAQUE_FILES:
                continue
            path = os.path.join(dirpath, name)
            if name.startswith(_WHITEOUT) and stat.S_ISREG(os.lstat(path).st_mode):
                os.unlink(path)
                hidden = os.path.join(dirpath, name[len(_WHITEOUT):])
                if not os.path.lexists(hidden):
                    os.mknod(hidden, stat.S_IFCHR | 0o600, os.makedev(0, 0))
            else:
                _drop_own_xattrs(path)
