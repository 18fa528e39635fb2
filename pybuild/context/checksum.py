"""Content checksums of context entries and Merkle checksums of directories and selections (xxh3-128).

These are cache keys: what a COPY or ADD reads from the context. Every checksum is 16 bytes of XXH3-128.

Entry header (little-endian; `u32`/`u64` are unsigned integers, `bytes` are raw, never decoded)::

    header = b"pbck1" kind:1 perm:u32 uid:u64 gid:u64 size:u64 len(target):u32 target
             n_xattrs:u32 { len(name):u32 name len(value):u32 value }*   (xattrs sorted by name)

`kind` is `F` (regular file), `L` (symlink) or `D` (directory); `perm` is `st_mode & 0o7777`; `size` is the
number of content bytes hashed for a file, the target's length for a symlink and 0 for a directory (its
st_size depends on the filesystem); `target` is the symlink's target as stored (never resolved), empty
otherwise. xattrs are read with follow_symlinks=False; a filesystem without xattrs gives none.

    file      = XXH3-128(header || XXH3-128(content))      content streamed in 1 MiB chunks
    symlink   = XXH3-128(header)
    directory = XXH3-128(XXH3-128(header) || n:u32 || { name 0x00 }* || { checksum }*)

A directory's children are the `n` entries of the selection directly inside it, sorted by their names'
bytes; each name is written followed by 0x00 (a name never holds NUL or `/`), then the children's own
checksums (16 bytes each) in the same order. So a directory's checksum covers its metadata, its children's
names and, recursively, everything below it. The root of a selection is the directory the selection was
walked from (the context root): its checksum covers every selected entry, its path and its metadata, so
it is the checksum of the selection. A parent directory the walk did not report is lstat'ed and takes part
like any other directory. Times of directories are not covered either: adding a file changes the
directory's checksum through its children, not through its mtime.

Never covered: mtime, atime, ctime, the inode and device numbers, the link count. Touching a file leaves
every checksum unchanged; the stat cache (`statcache.py`) uses those fields only to decide whether to read
a file again.

`Checksummer` reads entries (through the stat cache when it has one) and counts what it reads in `READS`,
so tests and the benchmark can see that an unchanged file is not read again. One thread: on this 2-vCPU
machine two hashing threads made 20,000 small files 2.3x slower (GIL hand-offs), and one thread already
hashes at the disk's speed for big files.
"""

from __future__ import annotations

import errno
import os
import stat as statmod
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

from pybuild.context.entry import Entry, entry_from_stat, kind_of
from pybuild.context.statcache import KEY
from pybuild.errors import ContextError
from pybuild.record import record

if TYPE_CHECKING:
    from pybuild.context.statcache import StatCache

CHUNK = 1 << 20
_HEAD = struct.Struct("<6sIQQQI")
_U32 = struct.Struct("<I")
_KIND = {"file": b"F", "symlink": b"L", "dir": b"D"}
_NO_XATTRS = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA})
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
# O_NONBLOCK: a FIFO swapped in after the walk must not hang the build (fstat then rejects it).


class ReadCounter:
    """What checksumming read from disk: files opened for content and content bytes (all threads' sum)."""

    __slots__ = ("files", "bytes", "paths")

    def __init__(self) -> None:
        self.files = 0
        self.bytes = 0
        self.paths: list[str] = []

    def reset(self) -> None:
        """Start counting from zero."""
        self.files = self.bytes = 0
        self.paths = []


READS = ReadCounter()
"""Module-wide read counter: tests and the benchmark reset it and check what a pass read."""


@record
class TreeChecksums:
    """Checksums of a selection, made by `Checksummer.tree` and read by the planner and `pybuild context`.

    `nodes` maps every path of the selection (`""` is the root) to its checksum: the file or symlink
    checksum, or the Merkle checksum of a directory. `checksum` is the root's, i.e. the selection's.
    """

    checksum: bytes
    nodes: Mapping[str, bytes]

    def of(self, path: str) -> bytes:
        """The checksum of `path` (relative to the root, `""` for the root)."""
        return self.nodes[path]


def display_path(path: str) -> str:
    """`path` printable on one line: names with newlines, control characters or undecodable bytes escaped."""
    if path.isprintable():
        return path
    raw = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in raw)


def hex_checksum(checksum: bytes) -> str:
    """The form shown to users: `xxh3:` and 32 hex digits."""
    return "xxh3:" + checksum.hex()


def encode_header(kind: str, perm: int, uid: int, gid: int, size: int, target: bytes,
                  xattrs: list[tuple[bytes, bytes]]) -> bytes:
    """The entry header defined in the module docstring."""
    parts = [_HEAD.pack(b"pbck1" + _KIND[kind], perm, uid, gid, size, len(target)), target,
             _U32.pack(len(xattrs))]
    for name, value in xattrs:
        parts += (_U32.pack(len(name)), name, _U32.pack(len(value)), value)
    return b"".join(parts)


def read_xattrs(target: int | str, display: str) -> list[tuple[bytes, bytes]]:
    """The xattrs of an open fd or (not followed) path, sorted by name; none where unsupported."""
    follow = isinstance(target, int)
    try:
        names = os.listxattr(target, follow_symlinks=follow)
    except OSError as exc:
        if exc.errno in _NO_XATTRS:
            return []
        raise ContextError(f"cannot read extended attributes of {display}: {exc.strerror}") from None
    if not names:
        return []
    out: list[tuple[bytes, bytes]] = []
    for name in names:
        try:
            out.append((os.fsencode(name), os.getxattr(target, name, follow_symlinks=follow)))
        except OSError as exc:
            if exc.errno not in _NO_XATTRS:
                raise ContextError(f"cannot read extended attributes of {display}: {exc.strerror}") from None
    out.sort()
    return out


class Checksummer:
    """Checksums entries under one root, reading each file only when the stat cache cannot vouch for it.

    Made by `context.py` (one per build context) or directly by tests; `cache` is optional.
    """

    def __init__(self, root: str, cache: StatCache | None = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.root = os.path.abspath(root)
        self.cache = cache
        self.clock = clock
        """Wall clock in ns, read before each content read (the racy-clean guard); tests move it."""
        self._buffer = bytearray(CHUNK)
        self._flags = _OPEN_FLAGS | getattr(os, "O_NOATIME", 0)

    def own(self, entry: Entry) -> bytes:
        """The entry's own checksum: a file's or symlink's checksum, a directory's header digest."""
        cache = self.cache
        if cache is not None:
            cached = cache.lookup(entry)
            if cached is not None:
                return cached
        hashed_at = self.clock()
        checksum, stable = self._compute(entry)
        if cache is not None:
            if stable:
                cache.store(entry, checksum, hashed_at)
            else:
                cache.forget(entry.path)
        return checksum

    def tree(self, entries: Iterable[Entry]) -> TreeChecksums:
        """Checksums of `entries` (paths relative to the root) and the Merkle checksums of their directories.

        This is the warm path of a cached rebuild, so the stat-cache lookup is inlined and children are
        grouped in the same pass.
        """
        own: dict[str, bytes] = {}
        kids: dict[str, list[str]] = {"": []}
        dirs = [""]
        rows: dict[str, bytes] = self.cache.rows if self.cache is not None else {}
        get = rows.get
        pack = KEY.pack
        for entry in entries:
            path = entry.path
            if not path:
                continue  # the root is added below
            row = get(path)
            if row is not None and row.startswith(pack(entry.dev, entry.ino, entry.size, entry.mtime_ns,
                                                       entry.ctime_ns)):
                own[path] = row[40:]
            else:
                own[path] = self.own(entry)
            if entry.kind == "dir":
                dirs.append(path)
                kids.setdefault(path, [])
            cut = path.rfind("/")
            try:
                kids[path[:cut] if cut > 0 else ""].append(path)
            except KeyError:  # the parent was not reported (or not yet): filled in by _add_parents
                kids[path[:cut]] = [path]
        if self.cache is not None:
            self.cache.seen.update(own)
        self._add_parents(own, kids, dirs)
        own[""] = self.own(self._lstat(""))
        return TreeChecksums(*_merkle(own, kids, dirs))

    def _add_parents(self, own: dict[str, bytes], kids: dict[str, list[str]], dirs: list[str]) -> None:
        """lstat the parent directories the walk did not report, so that they take part like the others."""
        pending = [parent for parent in kids if parent and parent not in own]
        while pending:
            path = pending.pop()
            if path in own:
                continue
            own[path] = self.own(self._lstat(path))
            dirs.append(path)
            cut = path.rfind("/")
            parent = path[:cut] if cut > 0 else ""
            kids.setdefault(parent, []).append(path)
            if parent and parent not in own:
                pending.append(parent)

    def _lstat(self, path: str) -> Entry:
        """An Entry for `path` from lstat (the root, or a parent directory the walk left out)."""
        try:
            st = os.lstat(self._abs(path))
        except OSError as exc:
            raise ContextError(f"cannot read {display_path(path or '.')}: {exc.strerror}") from None
        kind = kind_of(st.st_mode)
        if kind != "dir":
            raise ContextError(f"not a directory: {display_path(path or '.')}")
        return entry_from_stat(path, st, kind)

    def _abs(self, path: str) -> str:
        return os.path.join(self.root, path) if path else self.root

    def _compute(self, entry: Entry) -> tuple[bytes, bool]:
        """(checksum, stable): `stable` is False when the entry changed between the walk and the read."""
        import xxhash

        if entry.kind == "file":
            return self._file(entry)
        display = display_path(entry.path or ".")
        xattrs = read_xattrs(self._abs(entry.path), display)
        if entry.kind == "dir":
            return xxhash.xxh3_128_digest(encode_header("dir", entry.perm, entry.uid, entry.gid, 0, b"",
                                                        xattrs)), True
        target = self._link_target(entry)
        header = encode_header("symlink", entry.perm, entry.uid, entry.gid, len(target), target, xattrs)
        return xxhash.xxh3_128_digest(header), True

    def _link_target(self, entry: Entry) -> bytes:
        if entry.link_target is not None:
            return os.fsencode(entry.link_target)
        try:
            return os.readlink(os.fsencode(self._abs(entry.path)))
        except OSError as exc:
            raise ContextError(f"cannot read symlink {display_path(entry.path)}: {exc.strerror}") from None

    def _open(self, entry: Entry) -> int:
        path = self._abs(entry.path)
        try:
            return os.open(path, self._flags)
        except PermissionError:
            if not self._flags & getattr(os, "O_NOATIME", 0):
                raise ContextError(f"cannot read {display_path(entry.path)}: permission denied") from None
            self._flags &= ~os.O_NOATIME  # O_NOATIME needs ownership; fall back for good
            return self._open(entry)
        except OSError as exc:
            raise ContextError(f"cannot read {display_path(entry.path)}: {exc.strerror}") from None

    def _file(self, entry: Entry) -> tuple[bytes, bool]:
        import xxhash

        fd = self._open(entry)
        try:
            st = os.fstat(fd)
            if not statmod.S_ISREG(st.st_mode):
                raise ContextError(f"{display_path(entry.path)}: changed while reading: no longer a regular file")
            content, size = self._stream(fd, entry, st)
            xattrs = read_xattrs(fd, display_path(entry.path))
        finally:
            os.close(fd)
        header = encode_header("file", statmod.S_IMODE(st.st_mode), st.st_uid, st.st_gid, size, b"", xattrs)
        stable = (size == entry.size == st.st_size and st.st_ino == entry.ino and st.st_dev == entry.dev
                  and st.st_mtime_ns == entry.mtime_ns and st.st_ctime_ns == entry.ctime_ns)
        return xxhash.xxh3_128_digest(header + content), stable

    def _stream(self, fd: int, entry: Entry, st: os.stat_result) -> tuple[bytes, int]:
        """XXH3-128 of the content and its length, read in CHUNK pieces into one reused buffer.

        Holes of a sparse file are hashed as zeros without reading them: reading a hole makes the kernel
        fill the page cache with zero pages (2.6 s for a 2 GiB hole here, against 0.05 s to hash zeros).
        """
        import xxhash

        hasher = xxhash.xxh3_128()
        view = memoryview(self._buffer)
        try:
            total = 0
            if st.st_blocks * 512 < st.st_size and hasattr(os, "SEEK_DATA"):
                total = self._stream_sparse(fd, st.st_size, hasher, view)
                os.lseek(fd, total, os.SEEK_SET)
            while n := os.readv(fd, [view]):  # to EOF: a file that grew since the walk is read whole
                hasher.update(view[:n])
                total += n
        except OSError as exc:
            raise ContextError(f"cannot read {display_path(entry.path)}: {exc.strerror}") from None
        finally:
            view.release()
        READS.files += 1
        READS.bytes += total
        READS.paths.append(entry.path)
        return hasher.digest(), total

    def _stream_sparse(self, fd: int, size: int, hasher: Hasher, view: memoryview) -> int:
        """Hash the first `size` bytes extent by extent (SEEK_DATA/SEEK_HOLE); return how many were hashed."""
        offset = 0
        while offset < size:
            try:
                data = min(os.lseek(fd, offset, os.SEEK_DATA), size)
            except OSError as exc:
                if exc.errno == errno.EINVAL and offset == 0:
                    return 0  # no SEEK_DATA on this filesystem: read it all
                if exc.errno != errno.ENXIO:
                    raise
                data = size  # no data after offset: the rest is a hole
            _hash_zeros(hasher, data - offset)
            offset = data
            if offset < size:
                end = min(os.lseek(fd, offset, os.SEEK_HOLE), size)
                os.lseek(fd, offset, os.SEEK_SET)
                got = _hash_range(fd, end - offset, hasher, view)
                offset += got
                if offset < end:
                    break  # truncated under us: the caller reads on to EOF
        return offset


class Hasher(Protocol):
    """The part of an xxhash hasher the streaming code uses."""

    def update(self, data: bytes | memoryview, /) -> None: ...


_ZEROS = bytes(CHUNK)


def _hash_zeros(hasher: Hasher, count: int) -> None:
    while count > 0:
        step = min(count, CHUNK)
        hasher.update(_ZEROS[:step] if step < CHUNK else _ZEROS)
        count -= step


def _hash_range(fd: int, count: int, hasher: Hasher, view: memoryview) -> int:
    """Read and hash up to `count` bytes from the current offset; return how many were read."""
    done = 0
    while done < count:
        n = os.readv(fd, [view[:min(CHUNK, count - done)]])
        if not n:
            break
        hasher.update(view[:n])
        done += n
    return done


def _depth(path: str) -> int:
    return path.count("/") if path else -1


def _merkle(own: dict[str, bytes], kids: dict[str, list[str]], dirs: list[str]) -> tuple[bytes, dict[str, bytes]]:
    """The root's checksum and every node's (directories bottom-up, as the module docstring defines).

    Children are kept as full paths: within one directory they share the prefix, so sorting the paths
    sorts the names.
    """
    import xxhash

    digest = xxhash.xxh3_128_digest
    full = own
    for path in sorted(dirs, key=_depth, reverse=True):
        children = kids.get(path)
        if not children:
            full[path] = digest(digest(own[path]) + _EMPTY_DIR)
            continue
        children.sort()
        start = len(path) + 1 if path else 0
        try:
            names = "\0".join([child[start:] for child in children]).encode()
        except UnicodeEncodeError:  # undecodable bytes (surrogates) sort differently from their bytes
            children.sort(key=_path_bytes)
            names = "\0".join([child[start:] for child in children]).encode("utf-8", "surrogateescape")
        sums = b"".join([full[child] for child in children])
        full[path] = digest(digest(own[path]) + _U32.pack(len(children)) + names + b"\0" + sums)
    return full[""], full


_EMPTY_DIR = _U32.pack(0)


def _path_bytes(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")
