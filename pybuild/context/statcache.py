"""The persistent stat cache: checksums of context entries, trusted while their lstat fields are unchanged.

One file per context directory, `<store root>/statcache/<xxh3-64 of the context's real path>`. It maps a
path (relative to the context) to a 56-byte row: the stat key `(dev, ino, size, mtime_ns, ctime_ns)`
packed little-endian (`KEY`, 40 bytes) followed by the 16-byte checksum. A lookup hits only
when all five stat fields equal the entry's, so an unchanged file is never read again and any change the
kernel records (content, size, mode, owner, xattrs all move ctime; a replaced file moves ino) forces a
re-read. A touch moves mtime and ctime: the file is re-read and its checksum comes out the same, because
checksums never cover times (see `checksum.py`).

Format and why: `MAGIC`, an 8-byte xxh3-64 of the payload, then the payload, `marshal` of
`(VERSION, context_path, rows)`. The warm path of a cached rebuild loads the whole cache with one `read` and
one `marshal.loads`: 4.5 ms for 20,000 rows as packed bytes, against 17 ms for rows of Python ints (every
int is an object to allocate); SQLite would cost a query per file. A lookup packs the entry's stat key and
compares bytes with `startswith`. The digest catches a
truncated or bit-flipped file, which `marshal` alone could load as wrong-but-valid rows. Anything wrong
(missing, corrupt, another version, another context) loads as an empty cache: it is only a cache.

Writes go to a temporary file in the same directory, are fsync'd and renamed over the old one with
`os.replace`, and happen only when something changed. Two builds writing at once: the last rename wins and
each reader sees one whole file. A store that cannot be written is ignored.

The racy-clean guard (git's "racy git" problem): a file changed twice within one timestamp tick keeps the
same stat fields, so a checksum taken between the two changes would be trusted forever. A row is therefore
persisted only when the entry's mtime and ctime are older than `RACY_WINDOW_NS` before the moment its
content was read; younger entries are used for this build but hashed again next time. The window is wider
than any filesystem's timestamp granularity (FAT: 2 s) plus the coarse kernel clock's lag. Files with
times in the future (clock skew, unpacked archives) stay racy and are re-read each build: correct, slower.
"""

from __future__ import annotations

import marshal
import os
import struct
from typing import TYPE_CHECKING

from pybuild.atomic import write_atomic
from pybuild.paths import store_root

if TYPE_CHECKING:
    from pybuild.context.entry import Entry

MAGIC = b"PBSTAT1\n"
VERSION = 1
RACY_WINDOW_NS = 3_000_000_000
"""Entries whose mtime or ctime is this close to (or after) the time they were hashed are not persisted."""

KEY = struct.Struct("<QQQqq")
"""The stat key of a row: dev, ino, size, mtime_ns, ctime_ns."""

Row = bytes
"""KEY.pack(dev, ino, size, mtime_ns, ctime_ns) + checksum (16 bytes)."""


def stat_key(entry: Entry) -> bytes:
    """The packed stat key of `entry`."""
    return KEY.pack(entry.dev, entry.ino, entry.size, entry.mtime_ns, entry.ctime_ns)


def cache_path(context_root: str, store: str | None = None) -> str:
    """Where the stat cache of `context_root` lives under the store root."""
    import xxhash

    real = os.fsencode(os.path.realpath(context_root))
    return os.path.join(store or store_root(), "statcache", xxhash.xxh3_64_hexdigest(real))


class StatCache:
    """The rows of one context's stat cache, loaded once, updated in memory, saved once.

    Made by `StatCache.load` (or empty for tests); `checksum.Checksummer` looks entries up and stores
    fresh checksums; the owner calls `save` at the end. Not thread-safe: one build uses it from one thread.
    """

    __slots__ = ("path", "context_path", "rows", "seen", "dirty", "recovered", "racy")

    def __init__(self, path: str | None, context_path: str, rows: dict[str, Row] | None = None) -> None:
        self.path = path
        self.context_path = context_path
        self.rows: dict[str, Row] = rows if rows is not None else {}
        self.seen: set[str] = set()
        self.dirty = False
        self.recovered = False
        """True when a cache file existed but could not be used (corrupt, other version, other context)."""
        self.racy = 0
        """How many entries were too fresh to persist in this session."""

    @classmethod
    def load(cls, context_root: str, store: str | None = None) -> StatCache:
        """The cache of `context_root`; empty when there is none or it cannot be used."""
        context_path = os.path.realpath(context_root)
        path = cache_path(context_root, store)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError:
            return cls(path, context_path)
        rows = _decode(data, context_path)
        cache = cls(path, context_path, rows)
        if rows is None:
            cache.recovered = cache.dirty = True
        return cache

    def lookup(self, entry: Entry) -> bytes | None:
        """The cached checksum of `entry` when its stat fields are unchanged, else None."""
        path = entry.path
        self.seen.add(path)
        row = self.rows.get(path)
        if row is not None and row.startswith(stat_key(entry)):
            return row[KEY.size:]
        return None

    def store(self, entry: Entry, checksum: bytes, hashed_at_ns: int) -> None:
        """Remember `checksum` for `entry`, unless the entry is racy (see the module docstring)."""
        path = entry.path
        self.seen.add(path)
        limit = hashed_at_ns - RACY_WINDOW_NS
        if entry.mtime_ns >= limit or entry.ctime_ns >= limit:
            # An old row for this path stays: its stat key no longer matches, so it can never hit, and not
            # rewriting the cache (an fsync, ~70 ms here) keeps a one-file edit cheap.
            self.racy += 1
            return
        row = stat_key(entry) + checksum
        if self.rows.get(path) != row:
            self.rows[path] = row
            self.dirty = True

    def forget(self, path: str) -> None:
        """Drop the row of `path` (its content changed while it was read)."""
        if self.rows.pop(path, None) is not None:
            self.dirty = True

    def prune(self) -> None:
        """Drop rows of paths not looked up or stored this session (call after a walk of the whole context)."""
        if len(self.seen) < len(self.rows):
            stale = self.rows.keys() - self.seen
            if stale:
                for path in stale:
                    del self.rows[path]
                self.dirty = True

    def save(self) -> bool:
        """Write the cache atomically when it changed; True when a file was written. Errors are ignored."""
        if not self.dirty or self.path is None:
            return False
        payload = marshal.dumps((VERSION, self.context_path, self.rows))
        try:
            _write_atomic(self.path, MAGIC + _digest(payload) + payload)
        except OSError:
            return False
        self.dirty = False
        return True


def _digest(payload: bytes) -> bytes:
    import xxhash

    return xxhash.xxh3_64_digest(payload)


def _decode(data: bytes, context_path: str) -> dict[str, Row] | None:
    """The rows stored in `data`, or None when it is not a valid cache of `context_path`."""
    head = len(MAGIC) + 8
    if len(data) < head or not data.startswith(MAGIC):
        return None
    payload = data[head:]
    if _digest(payload) != data[len(MAGIC):head]:
        return None
    try:
        value = marshal.loads(payload)
    except (ValueError, EOFError, TypeError):
        return None
    if not (isinstance(value, tuple) and len(value) == 3 and value[0] == VERSION):
        return None
    if value[1] != context_path or not isinstance(value[2], dict):
        return None
    rows: dict[str, Row] = value[2]
    return rows


def _write_atomic(path: str, data: bytes) -> None:
    """`atomic.write_atomic` (temp file → fsync → os.replace → fsync of the directory), the directory made
    first."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, data, prefix=".statcache-")
