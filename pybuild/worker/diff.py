"""Turn an overlayfs upperdir into an OCI layer diff (the changes of one build step).

Who uses it: `snapshots.py` (`Snapshots.export_layer`) and the exporter, when a step's layer is first needed.

The upperdir alone describes the change because the mount sets `redirect_dir=off,metacopy=off,index=off`
(overlay.py): every changed file, and every file whose mode/owner/xattrs changed, is copied up whole, and a
renamed lower directory is copied up rather than redirected. Mapping (OCI image spec, "Representing changes"):
- a 0/0 character device is overlayfs's whiteout → a `.wh.<name>` entry;
- a directory with `trusted.overlay.opaque=y` → the directory entry plus `.wh..wh..opq`; everything it
  should still contain is in the upper, since overlay hides all lower content below an opaque dir;
- anything else → a normal entry. Type replacements need nothing special: the upper entry wins when applied
  (apply removes what was there), and a directory that replaced a lower file or directory was created over
  a whiteout, which overlay marks opaque, so the old children do not come back.
- `trusted.overlay.*` xattrs are overlay's bookkeeping and never written; other xattrs are kept.
- files sharing an inode inside the upper become hardlink entries (tarlayer's `inode` field).
- `exclude`: container paths (`/etc/hosts`, ...) dropped when their upper entry is only a mount point the
  runtime created: an empty regular file or an empty directory.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Iterator

from pybuild.errors import StoreError
from pybuild.store.compress import Writable
from pybuild.store.tarlayer import Kind, LayerEntry, write_entries

_OVERLAY_XATTR = "trusted.overlay."
_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
_KINDS: dict[int, Kind] = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
                           stat.S_IFCHR: "char", stat.S_IFBLK: "block", stat.S_IFIFO: "fifo"}


def _xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    found = []
    for name in sorted(names):
        if name.startswith(_OVERLAY_XATTR) or name.startswith("user.overlay."):
            continue
        try:
            found.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError:
            continue
    return tuple(found)


def is_opaque(path: str) -> bool:
    """Whether the upper directory `path` carries overlay's opaque mark."""
    for name in _OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def is_whiteout(st: os.stat_result) -> bool:
    """Whether `st` is overlayfs's whiteout: a character device 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _entry(full: str, path: str, st: os.stat_result) -> LayerEntry | None:
    kind = _KINDS.get(stat.S_IFMT(st.st_mode))
    if kind is None:
        return None  # sockets have no tar form
    dev = kind in ("char", "block")
    return LayerEntry(
        path=path, kind=kind, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
        mtime=st.st_mtime_ns // 1_000_000_000, size=st.st_size if kind == "file" else 0,
        link_target=os.readlink(full) if kind == "symlink" else "", xattrs=_xattrs(full),
        devmajor=os.major(st.st_rdev) if dev else 0, devminor=os.minor(st.st_rdev) if dev else 0,
        source=full if kind == "file" else None,
        inode=(st.st_dev, st.st_ino) if kind == "file" and st.st_nlink > 1 else None,
    )


def _excluded(path: str, st: os.stat_result, full: str, exclude: Collection[str]) -> bool:
    if "/" + path not in exclude:
        return False
    if stat.S_ISREG(st.st_mode):
        return st.st_size == 0
    if stat.S_ISDIR(st.st_mode):
        return not os.listdir(full)
    return False


def diff_entries(upper: str, exclude: Collection[str] = ()) -> Iterator[LayerEntry]:
    """The layer entries of the changes recorded in `upper` (not sorted into layer order)."""
    if not os.path.isdir(upper):
        raise StoreError(f"upper directory not found: {upper}")
    todo = [("", upper)]
    while todo:
        rel, dirpath = todo.pop()
        try:
            with os.scandir(dirpath) as it:
                children = [(c.name, c.path, c.stat(follow_symlinks=False)) for c in it]
        except OSError as exc:
            raise StoreError(f"cannot read directory {dirpath}: {exc.strerror}") from exc
        for name, full, st in children:
            path = f"{rel}/{name}" if rel else name
            if is_whiteout(st):
                yield LayerEntry(path=path, kind="whiteout")
                continue
            if exclude and _excluded(path, st, full, exclude):
                continue
            entry = _entry(full, path, st)
            if entry is None:
                continue
            yield entry
            if entry.kind == "dir":
                if is_opaque(full):
                    yield LayerEntry(path=path, kind="opaque")
                todo.append((path, full))


def layer_from_upper(upper: str, out: Writable, clamp_mtime: int | None = None,
                     exclude: Collection[str] = ()) -> tuple[str, int]:
    """Write the OCI layer tar of the changes in `upper` to `out`; return (diffID, size)."""
    return write_entries(diff_entries(upper, exclude), out, clamp_mtime=clamp_mtime)
