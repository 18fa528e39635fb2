"""Apply a layer tar onto a directory (unpacking base images), never writing outside it.

Who uses it: base-image unpacking into a snapshot directory; each layer is applied once over the previous.

Safety model (the tar is untrusted, the target directory is ours and nobody else writes into it meanwhile):
- entry paths and hardlink targets must be relative and free of '..' (StoreError naming the entry);
- every parent component is checked with lstat to be a real directory inside the target; a symlink (or
  anything else) used as a path component is refused with StoreError, so no symlink is ever followed while
  creating, linking or deleting. Checked directories are remembered and forgotten again when a later entry
  replaces or deletes them, so the check costs one lstat per new directory, not per file.
  BuildKit/containerd resolve such symlinks inside the root instead; layers written by docker, BuildKit and
  pybuild never route paths through symlinks, so refusing is the simpler and safer choice.
- the final component is created with O_NOFOLLOW / O_EXCL after removing whatever was there (never through it).
Semantics (OCI image spec, as containerd applies it): `.wh.<name>` deletes <name>; `.wh..wh..opq` empties the
directory of everything lower layers put there (entries this layer already wrote stay); a directory over an
existing directory keeps its contents and takes the new metadata; parents missing from the tar are created
0755 root. Owners are set with lchown when running as root, then modes (after chown, which clears setuid),
xattrs best effort (filesystems refusing `trusted.*`/`security.*` are skipped), and mtimes (directories at
the end, deepest first, since creating children changes them). The root entry ('./') is skipped.
"""

from __future__ import annotations

import os
import shutil
import stat
from typing import IO

from pybuild.errors import StoreError
from pybuild.rootless import in_userns
from pybuild.store.diskspace import disk_fault
from pybuild.store.tarlayer import LayerContent, LayerEntry, iter_layer

_CHUNK = 1 << 20


def _components(path: str, what: str, name: str) -> list[str]:
    if path.startswith("/"):
        raise StoreError(f"unsafe layer entry {name!r}: absolute {what}")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise StoreError(f"unsafe layer entry {name!r}: '..' in {what}")
    return parts


class _Applier:
    def __init__(self, target: str) -> None:
        self.root = os.path.abspath(target)
        self.safe_dirs: set[str] = {""}
        self.written: set[str] = set()
        self.dir_times: list[tuple[str, int]] = []
        self.as_root = os.geteuid() == 0

    def full(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def ensure_parents(self, parts: list[str], name: str, create: bool = True) -> bool:
        """Check (and create) the parent dirs of `parts`; False when missing and `create` is off."""
        rel = ""
        for part in parts[:-1]:
            rel = f"{rel}/{part}" if rel else part
            if rel in self.safe_dirs:
                continue
            try:
                st = os.lstat(self.full(rel))
            except FileNotFoundError:
                if not create:
                    return False
                os.mkdir(self.full(rel), 0o755)
                self.safe_dirs.add(rel)
                continue
            if not stat.S_ISDIR(st.st_mode):
                kind = "symlink" if stat.S_ISLNK(st.st_mode) else "non-directory"
                raise StoreError(f"unsafe layer entry {name!r}: path goes through a {kind} at {rel!r}")
            self.safe_dirs.add(rel)
        return True

    def forget(self, rel: str) -> None:
        """`rel` is replaced or deleted: it and everything below stop being known-safe directories."""
        if rel in self.safe_dirs:
            prefix = rel + "/"
            self.safe_dirs = {d for d in self.safe_dirs if d != rel and not d.startswith(prefix)}

    def remove(self, rel: str) -> None:
        path = self.full(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        self.forget(rel)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)  # fd-based on Linux: does not follow symlinks inside
        else:
            os.unlink(path)

    def apply(self, entry: LayerEntry, content: LayerContent | None) -> None:
        parts = _components(entry.path, "path", entry.path)
        if not parts:
            return  # the root entry: the target keeps its own metadata
        rel = "/".join(parts)
        if entry.kind == "whiteout":
            if self.ensure_parents(parts, entry.path, create=False):
                self.remove(rel)
            return
        if entry.kind == "opaque":
            self.ensure_parents([*parts, ""], entry.path)
            self.clear_dir(rel, entry.path)
            return
        self.ensure_parents(parts, entry.path)
        self.make(entry, rel, content)
        self.written.add(rel)

    def clear_dir(self, rel: str, name: str) -> None:
        try:
            names = os.listdir(self.full(rel))
        except FileNotFoundError:
            return
        for child in names:
            child_rel = f"{rel}/{child}" if rel else child
            if child_rel not in self.written:
                self.remove(child_rel)

    def make(self, entry: LayerEntry, rel: str, content: LayerContent | None) -> None:
        path = self.full(rel)
        try:
            existing = os.lstat(path)
        except FileNotFoundError:
            existing = None
        if existing is not None and not (entry.kind == "dir" and stat.S_ISDIR(existing.st_mode)):
            self.remove(rel)
        kind = entry.kind
        if kind == "file":
            self.make_file(entry, path, content)
            return
        if kind == "dir":
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                os.mkdir(path, 0o700)
            self.safe_dirs.add(rel)
        elif kind == "symlink":
            os.symlink(entry.link_target, path)
        elif kind == "hardlink":
            self.make_link(entry, path)
            return  # a hardlink shares the target's inode and metadata
        elif kind in ("char", "block"):
            if in_userns():
                return  # rootless: mknod is refused in a user namespace (a RUN's /dev is a tmpfs anyway)
            fmt = stat.S_IFCHR if kind == "char" else stat.S_IFBLK
            os.mknod(path, fmt | 0o600, os.makedev(entry.devmajor, entry.devminor))
        elif kind == "fifo":
            os.mkfifo(path, 0o600)
        self.set_meta(entry, path, rel)

    def make_file(self, entry: LayerEntry, path: str, content: LayerContent | None) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            if content is not None:
                while chunk := content.read(_CHUNK):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
            if self.as_root:
                os.fchown(fd, entry.uid, entry.gid)
            os.fchmod(fd, entry.mode & 0o7777)
            _set_xattrs(fd, entry)
            os.utime(fd, (entry.mtime, entry.mtime))
        finally:
            os.close(fd)

    def make_link(self, entry: LayerEntry, path: str) -> None:
        target_parts = _components(entry.link_target, "hardlink target", entry.path)
        if not target_parts:
            raise StoreError(f"unsafe layer entry {entry.path!r}: hardlink to the root")
        if not self.ensure_parents(target_parts, entry.path, create=False):
            raise StoreError(f"layer entry {entry.path!r}: hardlink target {entry.link_target!r} not found")
        target = self.full("/".join(target_parts))
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            raise StoreError(
                f"layer entry {entry.path!r}: hardlink target {entry.link_target!r} not found") from None
        if stat.S_ISDIR(st.st_mode):
            raise StoreError(f"unsafe layer entry {entry.path!r}: hardlink to a directory")
        os.link(target, path, follow_symlinks=False)

    def set_meta(self, entry: LayerEntry, path: str, rel: str) -> None:
        if self.as_root:
            os.lchown(path, entry.uid, entry.gid)
        if entry.kind != "symlink":
            os.chmod(path, entry.mode & 0o7777)  # not a symlink: we just made it ourselves
        _set_xattrs(path, entry)
        if entry.kind == "dir":
            self.dir_times.append((rel, entry.mtime))
        else:
            os.utime(path, (entry.mtime, entry.mtime), follow_symlinks=False)

    def finish(self) -> None:
        for rel, mtime in sorted(self.dir_times, key=lambda item: item[0].count("/"), reverse=True):
            if rel in self.safe_dirs:  # still a directory we made or checked
                os.utime(self.full(rel), (mtime, mtime), follow_symlinks=False)


def _set_xattrs(target: int | str, entry: LayerEntry) -> None:
    for name, value in entry.xattrs:
        try:
            if isinstance(target, int):
                os.setxattr(target, name, value)
            else:
                os.setxattr(target, name, value, follow_symlinks=False)
        except OSError:
            continue  # best effort: tmpfs refuses user.*, unprivileged runs refuse trusted.*


class TargetError(StoreError):
    """An entry could not be written into the target directory: `os_error` says why, `entry` names it.
    (Errors reading the layer are plain StoreErrors, so an exporter can tell its destination's apart.)"""

    def __init__(self, message: str, os_error: OSError, entry: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.os_error = os_error
        self.entry = entry


def _target_error(exc: OSError, target: str, entry: str) -> TargetError:
    """The TargetError for `exc` writing `entry` into `target`: a full or failing disk with the free space."""
    fault = disk_fault(exc, target, f"applying layer entry {entry!r} to")
    if fault is not None:
        return TargetError(fault.message, exc, entry, fault.hint)
    return TargetError(f"cannot apply layer entry {entry!r}: {exc.strerror or exc}", exc, entry)


def apply_layer(tar_stream: IO[bytes], target_dir: str) -> None:
    """Apply the layer in `tar_stream` (gzip/zstd/plain) onto `target_dir`; StoreError on unsafe entries
    (TargetError when writing into `target_dir` fails).

    An unsafe entry stops the apply where it is: entries before it stay applied (the caller discards the
    half-made directory), and nothing is ever written outside `target_dir`.
    """
    if not os.path.isdir(target_dir):
        raise StoreError(f"layer target is not a directory: {target_dir}")
    applier = _Applier(target_dir)
    for entry, content in iter_layer(tar_stream):
        try:
            applier.apply(entry, content)
        except OSError as exc:
            raise _target_error(exc, target_dir, entry.path) from exc
    try:
        applier.finish()
    except OSError as exc:
        raise _target_error(exc, target_dir, "directory times") from exc
