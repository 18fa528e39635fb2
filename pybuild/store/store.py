"""`Store`: the blob store, the index and the lock of one store root, tied together.

Layout under the root ($PYBUILD_ROOT or ~/.local/share/pybuild):

    blobs/sha256/<hex>   content-addressed blobs (cas.py)
    tmp/                 temp files of blobs being written (same filesystem, so os.replace is atomic)
    index.db             the SQLite index (index.py)
    lock                 the flock builds share and prune takes exclusively (lock.py)
    snapshots/           unpacked layers and build steps (worker/snapshots.py)
    cache-mounts/, run/  RUN --mount=type=cache directories; the OCI bundles and runtime state of RUN steps

The root and the directories that hold image filesystems are 0700, created so and repaired on open
(`private.py`): an image's setuid files and device nodes must not be reachable by other local users.

Reachability (prune, du): a blob is referenced when a tag or a root reaches it through manifests and
indexes: `config`, `layers`, `manifests` and `blobs` descriptors of any JSON blob reached; a layer blob also
keeps its uncompressed diff (the blob named by its diffID) through the `compressed` rows, and a diffID
reached whose blob is not held keeps its compressed forms (a pulled or remote layer). Prune only ever
removes unreferenced blobs (and the `remote_blobs` rows, `remote.py`, of unreferenced blobs).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING

from pybuild.errors import StoreError
from pybuild.paths import store_root
from pybuild.record import record
from pybuild.store.cas import BlobStore
from pybuild.store.diskspace import disk_fault
from pybuild.store.index import Index
from pybuild.store.lock import StoreLock
from pybuild.store.private import secure_dirs

if TYPE_CHECKING:
    from pybuild.store.remote import BlobFetcher

# Manifests, indexes and configs are small; bigger blobs are layers and never parsed for children.
_PARSE_LIMIT = 4 << 20
# Made 0700 on open (the root first): every directory that holds, or holds a way to, image filesystems.
PRIVATE_DIRS = ("", "blobs", "blobs/sha256", "tmp", "snapshots", "snapshots/layers", "snapshots/steps",
                "snapshots/active", "snapshots/tmp", "cache-mounts", "run")


@record
class KindUsage:
    """Blob count and bytes of one kind (`manifest`, `config`, `layer`, `other`)."""

    kind: str
    count: int
    bytes: int


@record
class Usage:
    """What `Store.du()` reports."""

    count: int
    bytes: int
    referenced_count: int
    referenced_bytes: int
    unreferenced_count: int
    unreferenced_bytes: int
    temp_count: int
    temp_bytes: int
    kinds: tuple[KindUsage, ...]


@record
class Problem:
    """A finding of `Store.verify_all()`: `kind` is `corrupt`, `missing`, `unreadable` or `broken` (a tagged
    image with a layer the store cannot give)."""

    kind: str
    digest: str
    message: str


@record
class PruneReport:
    """What `Store.prune()` removed."""

    removed: tuple[str, ...]
    reclaimed: int
    before: int
    after: int


@record
class _BlobInfo:
    digest: str
    size: int
    last_used: float


class Store:
    """One store root: `.blobs` (BlobStore), `.index` (Index), `.lock` (StoreLock). Made by `Store.open`.

    `warnings`: lines for the user about what opening it found and repaired (directories open to other
    users); whoever opened it shows them (the CLI on stderr, a build as warnings).

    `fetchers`: how to fetch a remote blob of each source kind (`remote.py`), given by whoever opened it;
    a remote blob of a kind with no fetcher cannot be read (StoreError).
    """

    def __init__(self, root: str, blobs: BlobStore, index: Index, lock: StoreLock,
                 warnings: tuple[str, ...] = (), fetchers: Mapping[str, BlobFetcher] | None = None) -> None:
        self.root = root
        self.blobs = blobs
        self.index = index
        self.lock = lock
        self.warnings = warnings
        self.fetchers: Mapping[str, BlobFetcher] = dict(fetchers or {})

    @classmethod
    def open(cls, root: str | None = None, fetchers: Mapping[str, BlobFetcher] | None = None) -> Store:
        """Open (creating it if needed) the store at `root` (default `store_root()`); makes its directories
        private (`PRIVATE_DIRS`, repaired with a warning when found open); removes temp files left by
        killed writers. `fetchers`: see the class docstring."""
        root = os.path.abspath(root or store_root())
        try:
            warning = secure_dirs(os.path.join(root, sub) if sub else root for sub in PRIVATE_DIRS)
            blobs = BlobStore(root)
        except OSError as exc:
            fault = disk_fault(exc, root, "creating the store at")
            raise fault or StoreError(f"cannot create the store at {root}: {exc.strerror or exc}") from exc
        blobs.clean_temps()
        return cls(root, blobs, Index(os.path.join(root, "index.db")), StoreLock(os.path.join(root, "lock")),
                   (warning,) if warning else (), fetchers)

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # locks

    def shared_lock(self, timeout: float | None = None,
                    on_wait: Callable[[str], None] | None = None) -> AbstractContextManager[None]:
        """Hold for a whole build: keeps prune away from blobs that are not tagged yet."""
        return self.lock.shared(timeout, on_wait)

    def exclusive_lock(self, timeout: float | None = None,
                       on_wait: Callable[[str], None] | None = None) -> AbstractContextManager[None]:
        """Hold for prune: waits for running builds (reported through `on_wait`)."""
        return self.lock.exclusive(timeout, on_wait)

    # convenience writes that also record the blob row

    def put_bytes(
        self, data: bytes, media_type: str | None = None, expected: str | None = None
    ) -> tuple[str, int]:
        """Store `data` and record its blob row; returns `(digest, size)`."""
        digest, size = self.blobs.put_bytes(data, expected)
        self.index.record_blob(digest, size, media_type)
        return digest, size

    def put_file(
        self, source: str, media_type: str | None = None, expected: str | None = None
    ) -> tuple[str, int]:
        """Store a file and record its blob row; returns `(digest, size)`."""
        digest, size = self.blobs.put_file(source, expected)
        self.index.record_blob(digest, size, media_type)
        return digest, size

    # reachability

    def referenced(self) -> set[str]:
        """Every digest reachable from a tag or a root (whether or not the blob is present)."""
        diff_ids: dict[str, list[str]] = {}
        forms: dict[str, list[str]] = {}  # diffID → its compressed blobs
        for row in self.index.compressed_rows():
            diff_ids.setdefault(row.digest, []).append(row.diff_id)
            forms.setdefault(row.diff_id, []).append(row.digest)
        layers = {d for ds in diff_ids.values() for d in ds} | set(diff_ids)
        seen: set[str] = set()
        todo = list(self.index.root_digests())
        while todo:
            digest = todo.pop()
            if digest in seen:
                continue
            seen.add(digest)
            todo.extend(diff_ids.get(digest, ()))
            if digest in forms and not self.blobs.exists(digest):
                todo.extend(forms[digest])  # a layer kept only compressed (pulled, or remote) lives in them
            if digest not in layers:
                todo.extend(self._children(digest))
        return seen

    def _children(self, digest: str) -> Iterator[str]:
        try:
            if self.blobs.size(digest) > _PARSE_LIMIT:
                return
            data = self.blobs.read_bytes(digest)
        except StoreError:
            return  # missing or corrupt: verify_all reports it; nothing more is reachable through it
        if not data.lstrip()[:1] == b"{":
            return
        try:
            doc = json.loads(data)
        except ValueError:
            return
        if isinstance(doc, dict):
            yield from _descriptor_digests(doc)

    def _blob_infos(self) -> list[_BlobInfo]:
        rows = {row.digest: row for row in self.index.blob_rows()}
        infos = []
        for digest in self.blobs.iter_digests():
            try:
                st = os.stat(self.blobs.path(digest))
            except FileNotFoundError:
                continue
            row = rows.get(digest)
            # the file's mtime is when it was first stored (blobs are never rewritten)
            last_used = max(row.last_used, st.st_mtime) if row else st.st_mtime
            infos.append(_BlobInfo(digest, st.st_size, last_used))
        return infos

    def _kinds(self) -> dict[str, str]:
        kinds: dict[str, str] = {}
        for row in self.index.compressed_rows():
            kinds[row.digest] = kinds[row.diff_id] = "layer"
        for d, in self.index.query("SELECT diff_id FROM layers"):
            kinds[d] = "layer"
        for image in self.index.images():
            kinds[image.digest] = "manifest"
            kinds[image.config] = "config"
        for blob in self.index.blob_rows():
            if blob.media_type and blob.digest not in kinds:
                kinds[blob.digest] = _kind_of(blob.media_type)
        return kinds

    # du, verify, prune

    def du(self) -> Usage:
        """Counts and bytes of the blobs: total, referenced, unreferenced, temp files, and per kind."""
        infos = self._blob_infos()
        live = self.referenced()
        kinds = self._kinds()
        per_kind: dict[str, list[int]] = {}
        for info in infos:
            entry = per_kind.setdefault(kinds.get(info.digest, "other"), [0, 0])
            entry[0] += 1
            entry[1] += info.size
        ref = [i for i in infos if i.digest in live]
        temp_count, temp_bytes = self.blobs.temp_usage()
        total = sum(i.size for i in infos)
        ref_bytes = sum(i.size for i in ref)
        return Usage(len(infos), total, len(ref), ref_bytes, len(infos) - len(ref), total - ref_bytes,
                     temp_count, temp_bytes,
                     tuple(KindUsage(k, c, b) for k, (c, b) in sorted(per_kind.items())))

    def verify_all(self) -> list[Problem]:
        """Re-hash every blob and check that every index row names a present blob (`pybuild du --verify`)."""
        problems: list[Problem] = []
        present = set()
        for digest in self.blobs.iter_digests():
            present.add(digest)
            try:
                ok = self.blobs.verify(digest)
            except (StoreError, OSError) as exc:
                problems.append(Problem("unreadable", digest, f"cannot read blob {digest}: {exc}"))
                continue
            if not ok:
                where = self.blobs.path(digest)
                problems.append(Problem("corrupt", digest,
                                        f"corrupt blob: {digest} at {where} does not match its digest"))
        # a remote blob is fetched on first use; a layer kept only compressed is read from that form
        available = present | {d for d, in self.index.query("SELECT digest FROM remote_blobs")}
        available |= {row.diff_id for row in self.index.compressed_rows() if row.digest in available}
        for where, digest in self._index_references():
            if digest not in available:
                problems.append(Problem("missing", digest, f"{where} points at missing blob {digest}"))
        problems.extend(self._broken_images(available))
        return problems

    def _broken_images(self, available: set[str]) -> Iterator[Problem]:
        """A tagged image with a layer the store cannot give (no tar, no compressed form, no remote row):
        a layer dropped after failing its check, or blobs removed behind the store's back."""
        from pybuild.store.imageread import familiar_name, read_image

        for tag in self.index.list_tags():
            try:
                image = read_image(self, tag.digest)
            except StoreError:
                continue  # a missing or corrupt manifest or config: reported as a blob problem
            for diff_id in image.diff_ids:
                if diff_id not in available:
                    yield Problem("broken", diff_id,
                                  f"image {familiar_name(tag.name)} ({tag.digest}) is not whole: the store has "
                                  f"no form of its layer {diff_id} (pull or build it again)")

    def _index_references(self) -> Iterable[tuple[str, str]]:
        for tag in self.index.list_tags():
            yield f"tag {tag.name}", tag.digest
        for image in self.index.images():
            yield f"image {image.digest}", image.digest
            yield f"image {image.digest} config", image.config
        for row in self.index.compressed_rows():
            yield f"layer {row.diff_id} ({row.compression} level {row.level})", row.digest
        for blob in self.index.blob_rows():
            yield "blob row", blob.digest
        for root in self.index.roots():
            yield f"root {root.kind}:{root.key}", root.digest

    def prune(self, keep_storage: int | None = None, until_seconds: float | None = None,
              timeout: float | None = None, on_wait: Callable[[str], None] | None = None) -> PruneReport:
        """Remove unreferenced blobs, least recently used first, under the exclusive lock.

        `keep_storage`: stop once the blobs take at most that many bytes. `until_seconds`: only remove blobs
        unused for longer than that. Referenced blobs are never removed, whatever `keep_storage` says.
        """
        with self.exclusive_lock(timeout, on_wait):
            self.blobs.clean_temps()
            infos = self._blob_infos()
            before = total = sum(i.size for i in infos)
            live = self.referenced()
            cutoff = None if until_seconds is None else time.time() - until_seconds
            candidates = sorted((i for i in infos if i.digest not in live
                                 and (cutoff is None or i.last_used <= cutoff)),
                                key=lambda i: (i.last_used, i.digest))
            removed: list[str] = []
            for info in candidates:
                if keep_storage is not None and total <= keep_storage:
                    break
                if self.blobs.delete(info.digest):
                    removed.append(info.digest)
                    total -= info.size
            if removed:
                self.index.forget_blobs(removed)
            with self.index.transaction() as c:  # where unreferenced remote blobs were: nobody asks now
                stale = [d for d, in c.execute("SELECT digest FROM remote_blobs") if d not in live]
                c.executemany("DELETE FROM remote_blobs WHERE digest = ?", [(d,) for d in stale])
            return PruneReport(tuple(removed), before - total, before, total)


def _descriptor_digests(doc: dict[str, object]) -> Iterator[str]:
    """Digests of the descriptors an OCI/Docker manifest or index points at."""
    config = doc.get("config")
    if isinstance(config, dict) and isinstance(config.get("digest"), str):
        yield config["digest"]
    for key in ("layers", "manifests", "blobs"):
        items = doc.get(key)
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("digest"), str):
                    yield item["digest"]


def _kind_of(media_type: str) -> str:
    if "manifest" in media_type or "index" in media_type:
        return "manifest"
    if "config" in media_type:
        return "config"
    if "layer" in media_type or "tar" in media_type:
        return "layer"
    return "other"
