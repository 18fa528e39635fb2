"""Snapshots: image layers unpacked once, shared read-only as overlay lowerdirs; build steps on top.

Who makes them: the worker, for every FROM image and RUN step. Who uses them: the executor (the mounted
rootfs), file ops (write into the upper through the mount), the exporter (`export_layer`, lazily).

Layout under `<store root>/snapshots/` (it and its directories but `empty/` mode 0700, `store.private`: the
layers keep their setuid files and device nodes, which no other local user may reach):

    layers/<chain hex>/fs         one unpacked layer, keyed by its OCI chainID; overlay whiteouts (0/0 char
                                  devices) and opaque xattrs stand for the layer's `.wh.` entries
    layers/<chain hex>/meta.json  {"chain_id", "diff_id", "parent"}
    steps/<id>/fs                 a committed step: the upperdir of its run, kept as is (never re-extracted)
    steps/<id>/meta.json          {"parents": [...]} and, once computed, {"layers": {args: [diff_id, size]}}
    active/<id>/{upper,work,rootfs,lock}   a prepared step: fresh upper + work, overlay mounted at rootfs
    tmp/<chain hex>.<rand>/       an unpack in progress
    locks/<chain hex>.lock        per-snapshot flock held while unpacking
    empty/                        the lowerdir of a FROM scratch step
    lock                          shared while creating tmp/active entries, exclusive while cleaning them

Durability: a layer is unpacked into tmp/, flushed with one syncfs(2), then renamed into layers/; the rename
is the record that it is complete, so a crash mid-unpack leaves only a tmp/ entry, removed by the next
`Snapshots.open`. Concurrent unpackers of one chainID (threads or processes) serialize on its flock; the
loser finds the finished snapshot and reuses it. Active entries hold their own flock for their lifetime, so
cleaning never touches a live one; a dead process's mount is unmounted before its directory is removed.

Ids: layer snapshots are their chainID (`sha256:...`), step snapshots `step-<16 hex>`. Parent chains are
tuples of ids bottom-most first (the order of an image's diff_ids); overlay gets them reversed.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import hashlib
import json
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

from pybuild.atomic import write_atomic
from pybuild.digest import digest_parts
from pybuild.errors import InternalError, StoreError
from pybuild.record import record
from pybuild.rootless import in_userns
from pybuild.store.apply import _Applier, _components
from pybuild.store.compress import Writable
from pybuild.store.diskspace import disk_fault, disk_faults
from pybuild.store.private import make_private_dir
from pybuild.store.store import Store
from pybuild.store.tarlayer import iter_layer
from pybuild.worker import overlay
from pybuild.worker.diff import layer_from_upper

_OPAQUE_XATTR = "trusted.overlay.opaque"
_USERNS_OPAQUE_XATTR = "user.overlay.opaque"  # rootless: overlay is mounted with userxattr (overlay.py)
_libc = ctypes.CDLL(None, use_errno=True)


@record
class Snapshot:
    """A read-only snapshot usable as a lowerdir: an unpacked layer or a committed step."""

    id: str
    path: str
    """The directory overlay stacks (`.../fs`)."""
    kind: str
    """"layer" or "step"."""


@record
class ActiveSnapshot:
    """A prepared step: `rootfs` is the overlay of `parents` with the fresh `upper` (when mounted)."""

    id: str
    parents: tuple[str, ...]
    root: str
    upper: str
    work: str
    rootfs: str


def chain_ids(diff_ids: Sequence[str]) -> tuple[str, ...]:
    """OCI chainIDs of a layer stack: chain(L0) = diffID0, chain(Ln) = sha256(chain(Ln-1) + " " + diffIDn)."""
    out: list[str] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest())
    return tuple(out)


def _hex(digest: str) -> str:
    parts = digest_parts(digest, ("sha256",))
    if parts is None:
        raise StoreError(f"bad snapshot id: {digest!r}")
    return parts[1]


def _syncfs(path: str) -> None:
    """Flush the filesystem of `path`; an error writing it back (EIO, ENOSPC: Linux 5.8+) is an OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _libc.syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), path)
    finally:
        os.close(fd)


def _write_json(path: str, doc: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(doc, sort_keys=True).encode("utf-8"), mode=0o644)


def _rmtree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        raise StoreError(f"cannot remove {path}")


def unpack_layer(stream: IO[bytes], target: str) -> None:
    """Unpack one layer tar into the empty dir `target` as an overlay lowerdir: `.wh.` entries become 0/0
    character devices and `.wh..wh..opq` the `trusted.overlay.opaque` xattr. Same safety as apply_layer."""
    applier = _Applier(target)  # pybuild-internal: reuse apply's path checks and metadata handling
    for entry, content in iter_layer(stream):
        try:
            if entry.kind == "whiteout":
                parts = _components(entry.path, "path", entry.path)
                if not parts:
                    raise StoreError(f"unsafe layer entry {entry.path!r}: whiteout of the root")
                applier.ensure_parents(parts, entry.path)
                rel = "/".join(parts)
                applier.remove(rel)
                os.mknod(applier.full(rel), stat.S_IFCHR | 0o600, os.makedev(0, 0))
            elif entry.kind == "opaque":
                parts = _components(entry.path, "path", entry.path)
                applier.ensure_parents([*parts, ""], entry.path)
                os.setxattr(applier.full("/".join(parts)), _USERNS_OPAQUE_XATTR if in_userns() else _OPAQUE_XATTR,
                            b"y", follow_symlinks=False)
            else:
                applier.apply(entry, content)
        except OSError as exc:
            fault = disk_fault(exc, target, f"unpacking layer entry {entry.path!r} into")
            message = f"cannot unpack layer entry {entry.path!r}: {exc.strerror or exc}"
            raise fault or StoreError(message) from exc
    with disk_faults(target, "unpacking a layer into"):
        applier.finish()


def open_layer(store: Store, diff_id: str) -> IO[bytes]:
    """The layer `diff_id` from the store, its diffID checked as it is read (`store.layerread`)."""
    from pybuild.store.layerread import read_layer

    return read_layer(store, diff_id)


class _Flock:
    def __init__(self, path: str, mode: int, block: bool = True) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self.fd, mode | (0 if block else fcntl.LOCK_NB))
        except BaseException:
            os.close(self.fd)
            raise

    def close(self) -> None:
        os.close(self.fd)  # closing the last descriptor releases the flock


class Snapshots:
    """The snapshot directory of one store. Thread-safe; made by `Snapshots.open(store)`."""

    def __init__(self, root: str) -> None:
        self.root = root
        make_private_dir(root)  # 0700: the image filesystems below keep their own modes (`store.private`)
        for sub in ("layers", "steps", "active", "tmp", "locks"):
            make_private_dir(os.path.join(root, sub))
        os.makedirs(os.path.join(root, "empty"), exist_ok=True)
        self._active_locks: dict[str, _Flock] = {}

    @classmethod
    def open(cls, store: Store | str) -> Snapshots:
        """The snapshots of `store` (or of the store root path); removes leftovers of dead processes."""
        root = os.path.join(store.root if isinstance(store, Store) else store, "snapshots")
        try:
            snaps = cls(root)
        except OSError as exc:
            raise StoreError(f"cannot create the snapshot directory {root}: {exc.strerror}") from exc
        snaps.clean()
        return snaps

    # --- lookup -------------------------------------------------------------------------------------

    def path(self, snapshot_id: str) -> str:
        """The lowerdir of snapshot `snapshot_id` (it may not exist)."""
        if snapshot_id.startswith("step-"):
            if "/" in snapshot_id or snapshot_id in ("step-.", "step-.."):
                raise StoreError(f"bad snapshot id: {snapshot_id!r}")
            return os.path.join(self.root, "steps", snapshot_id, "fs")
        return os.path.join(self.root, "layers", _hex(snapshot_id), "fs")

    def get(self, snapshot_id: str) -> Snapshot:
        """The snapshot `snapshot_id`; StoreError when it is not there (or not complete)."""
        path = self.path(snapshot_id)
        if not os.path.isdir(path):
            raise StoreError(f"snapshot not found: {snapshot_id}")
        return Snapshot(snapshot_id, path, "step" if snapshot_id.startswith("step-") else "layer")

    def exists(self, snapshot_id: str) -> bool:
        return os.path.isdir(self.path(snapshot_id))

    # --- layers -------------------------------------------------------------------------------------

    def ensure_layer(self, parent: str | None, diff_id: str, opener: Callable[[], IO[bytes]]) -> Snapshot:
        """The snapshot of layer `diff_id` on chain `parent`, unpacked from `opener()` (a binary stream)
        unless some thread or process already did."""
        chain = chain_ids([parent, diff_id])[1] if parent else diff_id
        hexid = _hex(chain)
        final = os.path.join(self.root, "layers", hexid)
        if os.path.isdir(final):
            return self.get(chain)
        lock = _Flock(os.path.join(self.root, "locks", hexid + ".lock"), fcntl.LOCK_EX)
        try:
            if not os.path.isdir(final):
                self._unpack(final, hexid, opener, {"chain_id": chain, "diff_id": diff_id, "parent": parent})
        finally:
            lock.close()
        return self.get(chain)

    def _unpack(self, final: str, hexid: str, opener: Callable[[], IO[bytes]], meta: dict[str, Any]) -> None:
        guard = _Flock(os.path.join(self.root, "lock"), fcntl.LOCK_SH)
        try:
            tmp = os.path.join(self.root, "tmp", f"{hexid}.{secrets.token_hex(4)}")
            with disk_faults(self.root, "unpacking a layer into"):
                os.mkdir(tmp)
        finally:
            guard.close()
        try:
            os.mkdir(os.path.join(tmp, "fs"), 0o755)
            with opener() as stream:
                unpack_layer(stream, os.path.join(tmp, "fs"))
            _write_json(os.path.join(tmp, "meta.json"), meta)
            _syncfs(tmp)
            os.rename(tmp, final)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            diff_id = meta["diff_id"]
            fault = disk_fault(exc, tmp, f"unpacking layer {diff_id} into")
            raise fault or StoreError(f"cannot unpack layer {diff_id}: {exc.strerror or exc}") from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def ensure_layers(self, store: Store, diff_ids: Sequence[str]) -> tuple[str, ...]:
        """Unpack every missing layer of a stack from `store`; returns the chainIDs, bottom-most first."""
        chains = chain_ids(diff_ids)
        parent: str | None = None
        for chain, diff_id in zip(chains, diff_ids):
            if not self.exists(chain):
                self.ensure_layer(parent, diff_id, functools.partial(open_layer, store, diff_id))
            parent = chain
        return chains

    # --- steps --------------------------------------------------------------------------------------

    def prepare(self, parents: Sequence[str], *, mount: bool = True) -> ActiveSnapshot:
        """A fresh upper + work dir over `parents` (snapshot ids, bottom-most first; empty = scratch),
        overlay-mounted at `.rootfs` unless `mount` is False. Pair with `release` or `commit`."""
        lowers = [self.get(p).path for p in reversed(parents)] or [os.path.join(self.root, "empty")]
        active_id = "step-" + secrets.token_hex(8)
        root = os.path.join(self.root, "active", active_id)
        guard = _Flock(os.path.join(self.root, "lock"), fcntl.LOCK_SH)
        try:
            with disk_faults(self.root, "preparing a build step in"):
                os.mkdir(root)
                self._active_locks[active_id] = _Flock(os.path.join(root, "lock"), fcntl.LOCK_EX)
        finally:
            guard.close()
        active = ActiveSnapshot(active_id, tuple(parents), root, os.path.join(root, "upper"),
                                os.path.join(root, "work"), os.path.join(root, "rootfs"))
        try:
            with disk_faults(self.root, "preparing a build step in"):
                for path in (active.upper, active.work, active.rootfs):
                    os.mkdir(path, 0o755)
            if mount:
                overlay.mount_overlay(active.rootfs, lowers, active.upper, active.work)
        except BaseException:
            self._discard(active)
            raise
        return active

    def mount(self, active: ActiveSnapshot) -> None:
        """Mount `active` again (after `prepare(mount=False)` or `unmount`)."""
        lowers = [self.get(p).path for p in reversed(active.parents)] or [os.path.join(self.root, "empty")]
        overlay.mount_overlay(active.rootfs, lowers, active.upper, active.work)

    def unmount(self, active: ActiveSnapshot) -> None:
        overlay.unmount(active.rootfs)

    def commit(self, active: ActiveSnapshot) -> Snapshot:
        """Unmount `active` and keep its upperdir as step snapshot `active.id` (a lowerdir for later
        steps). The layer tar is made only when asked (`export_layer`)."""
        if active.id not in self._active_locks:
            raise InternalError(f"snapshot {active.id} is not active")
        overlay.unmount(active.rootfs)
        step = os.path.join(self.root, "steps", active.id)
        with disk_faults(self.root, "committing a build step in"):
            os.mkdir(step)
            _write_json(os.path.join(step, "meta.json"), {"parents": list(active.parents)})
            os.rename(active.upper, os.path.join(step, "fs"))
        self._discard(active)
        return self.get(active.id)

    def adopt(self, step_id: str, parent: str | None, diff_id: str) -> Snapshot:
        """Turn committed step `step_id` into the layer snapshot of `diff_id` on chain `parent`.

        A step's upperdir holds its changes in overlay form (whiteout devices, opaque xattrs), which is
        exactly how an unpacked layer is kept, so the directory is renamed rather than re-extracted. Its
        results are then named by chainID like any image layer: a later build (or a cache hit in another
        process) finds it by the layer stack alone. When another thread or process got there first, its
        snapshot wins and this step's directory is removed.
        """
        chain = chain_ids([parent, diff_id])[1] if parent else diff_id
        hexid = _hex(chain)
        final = os.path.join(self.root, "layers", hexid)
        step = os.path.join(self.root, "steps", step_id)
        lock = _Flock(os.path.join(self.root, "locks", hexid + ".lock"), fcntl.LOCK_EX)
        try:
            if os.path.isdir(final):
                self.remove(step_id)
            else:
                with disk_faults(self.root, "committing a build step in"):
                    _write_json(os.path.join(step, "meta.json"),
                                {"chain_id": chain, "diff_id": diff_id, "parent": parent})
                    _syncfs(step)
                    os.rename(step, final)
        finally:
            lock.close()
        return self.get(chain)

    def release(self, active: ActiveSnapshot) -> None:
        """Unmount `active` and remove its directories (the step is thrown away). Idempotent."""
        if active.id in self._active_locks:
            self._discard(active)

    def _discard(self, active: ActiveSnapshot) -> None:
        """Unmount and remove `active`. When unmounting fails the directory stays (never delete through a
        mount) and its lock is dropped, so the next `clean` retries."""
        lock = self._active_locks.pop(active.id, None)
        try:
            overlay.unmount(active.rootfs)
            _rmtree(active.root)
        finally:
            if lock is not None:
                lock.close()

    @contextmanager
    def mounted_rootfs(self, parents: Sequence[str]) -> Iterator[ActiveSnapshot]:
        """`prepare(parents)` for the block; always unmounted and removed in `finally` (commit inside the
        block keeps the upper: release is then a no-op)."""
        active = self.prepare(parents)
        try:
            yield active
        finally:
            self.release(active)

    def parents_of(self, snapshot_id: str) -> tuple[str, ...]:
        """The parent chain of a snapshot (bottom-most first), itself not included."""
        if snapshot_id.startswith("step-"):
            with open(os.path.join(self.root, "steps", snapshot_id, "meta.json"), encoding="utf-8") as f:
                return tuple(json.load(f)["parents"])
        chain: list[str] = []
        current: str | None = snapshot_id
        while current:
            with open(os.path.join(self.root, "layers", _hex(current), "meta.json"), encoding="utf-8") as f:
                current = json.load(f)["parent"]
            if current:
                chain.append(current)
        return tuple(reversed(chain))

    def export_layer(self, snapshot: Snapshot | ActiveSnapshot, out: Writable, *,
                     clamp_mtime: int | None = None, exclude: Collection[str] = ()) -> tuple[str, int]:
        """Write the OCI layer tar of a step's changes to `out`; return (diffID, size)."""
        upper = snapshot.upper if isinstance(snapshot, ActiveSnapshot) else snapshot.path
        if isinstance(snapshot, Snapshot) and snapshot.kind != "step":
            raise InternalError(f"export_layer needs a step snapshot, not layer {snapshot.id}")
        return layer_from_upper(upper, out, clamp_mtime, exclude)

    # --- removal and cleaning -----------------------------------------------------------------------

    def remove(self, snapshot_id: str) -> None:
        """Remove a snapshot. Layers are shared: only call under the store's exclusive lock (prune)."""
        path = os.path.dirname(self.path(snapshot_id))
        if os.path.isdir(path):
            trash = os.path.join(self.root, "tmp", f"rm-{secrets.token_hex(6)}")
            os.rename(path, trash)  # gone from view at once; the slow delete comes after
            _rmtree(trash)

    def prune(self, store: Store) -> int:
        """Remove layer snapshots whose layer the store no longer holds, and steps never adopted (a build
        killed between commit and adopt). Only under the store's exclusive lock. Returns how many."""
        compressed = {row.diff_id for row in store.index.compressed_rows() if store.blobs.exists(row.digest)}
        removed = 0
        for name in os.listdir(os.path.join(self.root, "layers")):
            try:
                with open(os.path.join(self.root, "layers", name, "meta.json"), encoding="utf-8") as f:
                    diff_id = json.load(f)["diff_id"]
            except (OSError, ValueError, KeyError):
                diff_id = None
            if diff_id is None or (diff_id not in compressed and not store.blobs.exists(diff_id)):
                self.remove("sha256:" + name)
                removed += 1
        for name in os.listdir(os.path.join(self.root, "steps")):
            self.remove(name)
            removed += 1
        return removed

    def clean(self) -> int:
        """Remove tmp and active entries no live owner holds (unmounting leftovers); returns how many."""
        try:
            guard = _Flock(os.path.join(self.root, "lock"), fcntl.LOCK_EX, block=False)
        except BlockingIOError:
            return 0  # someone is creating entries right now; the next open cleans
        removed = 0
        try:
            for name in os.listdir(os.path.join(self.root, "tmp")):
                path = os.path.join(self.root, "tmp", name)
                lock_path = os.path.join(self.root, "locks", name.split(".")[0] + ".lock")
                if not name.startswith("rm-") and not self._free(lock_path):
                    continue
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
            for name in os.listdir(os.path.join(self.root, "active")):
                path = os.path.join(self.root, "active", name)
                if name in self._active_locks or not self._free(os.path.join(path, "lock")):
                    continue
                try:
                    for point in sorted(overlay.mount_points(path), reverse=True):
                        overlay.unmount(point)
                except StoreError:
                    continue  # never delete through a mount
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        finally:
            guard.close()
        return removed

    @staticmethod
    def _free(lock_path: str) -> bool:
        if not os.path.exists(lock_path):
            return True
        try:
            _Flock(lock_path, fcntl.LOCK_EX, block=False).close()
        except BlockingIOError:
            return False
        return True
