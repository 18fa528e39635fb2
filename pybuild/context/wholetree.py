"""The checksum of a whole context in one pass: walk, stat cache and Merkle hashing fused.

Why a second path next to `walk()` + `Checksummer.tree()`: a build whose COPY reads the whole context
(`COPY . /app`) needs only the selection's checksum to key its cache, and when nothing changed that is the
hot path of a cached rebuild. The general path builds an `Entry` per file and groups children in dicts
before hashing, about 2 µs per file over the bare `scandir` + `lstat` that cannot be avoided; this one
compares each file's stat key with its stat-cache row straight from the `DirEntry` and hashes each
directory as soon as its children are done, so it stays close to a stat-only walk. Entries are only built
for files whose row does not match (they are read through `Checksummer.own`, as on the general path).

It covers the whole context less a `.dockerignore` without `!` exceptions: an excluded directory is then
never entered and an excluded file never listed, exactly as `walk()` does (fsutil semantics). With include
patterns or `!` exceptions, use `walk()` + `tree()`. The results are identical to that path's (tested):
same entry checksums, same Merkle layout (see `checksum.py`), same stat-cache rows.
"""

from __future__ import annotations

import os
import stat as statmod
import struct
from collections.abc import Callable

from pybuild.context.checksum import Checksummer, TreeChecksums, display_path
from pybuild.context.entry import entry_from_stat
from pybuild.context.statcache import KEY
from pybuild.context.walk import read_dir
from pybuild.errors import ContextError

_IFMT = 0o170000
_KINDS = {statmod.S_IFREG: "file", statmod.S_IFDIR: "dir", statmod.S_IFLNK: "symlink"}
_U32 = struct.Struct("<I")


def checksum_whole_tree(checksummer: Checksummer, excluded: Callable[[str], bool] | None = None,
                        on_skip: Callable[[str, str], None] | None = None) -> TreeChecksums:
    """Checksums of every entry under `checksummer.root` not `excluded` (a path predicate that never
    re-includes), the root's being the selection's; sockets, FIFOs and devices go to `on_skip`."""
    import xxhash

    walker = _Walker(checksummer, excluded, on_skip, xxhash.xxh3_128_digest)
    root_entry = checksummer._lstat("")  # noqa: SLF001 - the same root handling as `tree()`
    total = walker.directory(checksummer.root, "", checksummer.own(root_entry))
    walker.nodes[""] = total
    if checksummer.cache is not None:
        checksummer.cache.seen.update(walker.nodes)
    return TreeChecksums(total, walker.nodes)


class _Walker:
    __slots__ = ("checksummer", "excluded", "on_skip", "digest", "nodes", "get", "pack")

    def __init__(self, checksummer: Checksummer, excluded: Callable[[str], bool] | None,
                 on_skip: Callable[[str, str], None] | None, digest: Callable[[bytes], bytes]) -> None:
        self.checksummer = checksummer
        self.excluded = excluded
        self.on_skip = on_skip
        self.digest = digest
        self.nodes: dict[str, bytes] = {}
        cache = checksummer.cache
        self.get = (cache.rows if cache is not None else {}).get
        self.pack = KEY.pack

    def directory(self, host: str, prefix: str, own: bytes) -> bytes:
        """The Merkle checksum of the directory at `host` (`prefix` is its path + "/", or "")."""
        names: list[str] = []
        sums: list[bytes] = []
        get, pack, nodes, excluded = self.get, self.pack, self.nodes, self.excluded
        for de in read_dir(host, prefix.rstrip("/")):
            path = prefix + de.name
            if excluded is not None and excluded(path):
                continue
            try:
                st = de.stat(follow_symlinks=False)
            except OSError as exc:
                raise _error(path, exc) from exc
            kind = _KINDS.get(st.st_mode & _IFMT)
            row = get(path)
            if row is not None and row.startswith(pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                                                       st.st_ctime_ns)):
                checksum = row[40:]
            elif kind is None:
                if self.on_skip is not None:
                    self.on_skip(path, "special file skipped")
                continue
            else:
                checksum = self._compute(path, de.path, st, kind)
            if kind == "dir":
                checksum = self.directory(de.path, path + "/", checksum)
            nodes[path] = checksum
            names.append(de.name)
            sums.append(checksum)
        return self._merkle(own, names, sums)

    def _compute(self, path: str, host: str, st: os.stat_result, kind: str) -> bytes:
        target = None
        if kind == "symlink":
            try:
                target = os.readlink(host)
            except OSError as exc:
                raise _error(path, exc) from exc
        return self.checksummer.own(entry_from_stat(path, st, kind, target))  # type: ignore[arg-type]

    def _merkle(self, own: bytes, names: list[str], sums: list[bytes]) -> bytes:
        digest = self.digest
        if not names:
            return digest(digest(own) + _U32.pack(0))
        try:
            joined = "\0".join(names).encode()
        except UnicodeEncodeError:
            joined = "\0".join(names).encode("utf-8", "surrogateescape")
        return digest(digest(own) + _U32.pack(len(names)) + joined + b"\0" + b"".join(sums))


def _error(path: str, exc: OSError) -> ContextError:
    if isinstance(exc, FileNotFoundError):
        return ContextError(f"{display_path(path)}: vanished while reading the context")
    return ContextError(f"cannot read {display_path(path)}: {exc.strerror}")
