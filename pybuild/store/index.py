"""The store index: SQLite (stdlib `sqlite3`) at `<root>/index.db`.

Tables: tags (name → manifest digest), images (manifest → config, platform, size), layers (diffID →
uncompressed size), compressed (diffID, compression, level → blob), blobs (size, media type, last use) and
refs (generic roots that keep blobs alive; the cache adds its kinds). Versions per component live in the
`schema` table; other modules add their own tables with `Index.migrate(component, steps)`.

Concurrency: WAL mode (readers never block the writer), `busy_timeout` so writers queue instead of failing,
and every write is one `BEGIN IMMEDIATE` transaction (taking the write lock up front, so two processes never
deadlock upgrading a read to a write). Each thread uses its own connection; a forked child opens new ones.
`synchronous=FULL`: a tag that was reported set survives a power loss.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pybuild.errors import StoreError
from pybuild.record import record
from pybuild.store.cas import parse_digest
from pybuild.store.diskspace import FULL_HINT, IO_HINT, free_bytes, free_space

BUSY_TIMEOUT_MS = 60_000
_NEARLY_FULL = 1 << 20  # bytes free under which SQLite's "disk I/O error" is taken for a full disk

_STORE_SCHEMA: tuple[tuple[str, ...], ...] = (
    (  # version 1
        """CREATE TABLE tags (name TEXT PRIMARY KEY, digest TEXT NOT NULL,
                              created REAL NOT NULL, updated REAL NOT NULL)""",
        """CREATE TABLE images (digest TEXT PRIMARY KEY, config TEXT NOT NULL, platform TEXT NOT NULL,
                                size INTEGER NOT NULL, media_type TEXT NOT NULL, created REAL NOT NULL)""",
        "CREATE TABLE layers (diff_id TEXT PRIMARY KEY, size INTEGER NOT NULL, created REAL NOT NULL)",
        """CREATE TABLE compressed (diff_id TEXT NOT NULL, compression TEXT NOT NULL, level INTEGER NOT NULL,
                                    digest TEXT NOT NULL, size INTEGER NOT NULL, created REAL NOT NULL,
                                    PRIMARY KEY (diff_id, compression, level))""",
        "CREATE INDEX compressed_digest ON compressed (digest)",
        """CREATE TABLE blobs (digest TEXT PRIMARY KEY, size INTEGER NOT NULL, media_type TEXT,
                               created REAL NOT NULL, last_used REAL NOT NULL)""",
        """CREATE TABLE refs (kind TEXT NOT NULL, key TEXT NOT NULL, digest TEXT NOT NULL,
                              created REAL NOT NULL, PRIMARY KEY (kind, key))""",
        "CREATE INDEX refs_digest ON refs (digest)",
    ),
    (  # version 2: blobs known to be elsewhere, fetched on first use (store/remote.py)
        """CREATE TABLE remote_blobs (digest TEXT PRIMARY KEY, size INTEGER NOT NULL,
                                      media_type TEXT NOT NULL, source TEXT NOT NULL, created REAL NOT NULL)""",
    ),
)


@record
class Tag:
    """A tag row: `name` points at manifest (or index) `digest`."""

    name: str
    digest: str
    created: float
    updated: float


@record
class ImageRow:
    """An image the store built or pulled: manifest digest → config digest, platform, total size."""

    digest: str
    config: str
    platform: str
    size: int
    media_type: str
    created: float


@record
class CompressedRow:
    """A compressed form of layer `diff_id`, stored as blob `digest`."""

    diff_id: str
    compression: str
    level: int
    digest: str
    size: int


@record
class BlobRow:
    """What the index knows about a blob (a blob may exist without a row; prune then uses its mtime)."""

    digest: str
    size: int
    media_type: str | None
    created: float
    last_used: float


@record
class Root:
    """A root that keeps `digest` (and everything reachable from it) alive: `(kind, key)` is unique."""

    kind: str
    key: str
    digest: str
    created: float


def check_name(name: str, what: str = "tag") -> str:
    """`name` if it is a usable tag/root name; StoreError otherwise."""
    if not name or len(name) > 4096 or any(c.isspace() or ord(c) < 32 or c == "\x7f" for c in name):
        raise StoreError(f"bad {what} name: {name!r}")
    return name


class Index:
    """The SQLite index of one store. Made by `Store.open`; thread-safe and multi-process safe."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self._pid = os.getpid()
        self.migrate("store", _STORE_SCHEMA)

    # connections and transactions

    def _conn(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # forked: never share the parent's connections
            self._local = threading.local()
            self._all = []
            self._pid = os.getpid()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._guard:
                self._all.append(conn)
        return conn

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._wal(conn)
            conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        return conn

    @staticmethod
    def _wal(conn: sqlite3.Connection) -> None:
        """Put the database in WAL mode. Switching skips the busy handler (SQLite answers "database is
        locked" at once while another process opens or checkpoints it), so a busy switch is retried, and
        a database already in WAL mode (every open but the first) is not switched at all."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _error(self, exc: sqlite3.Error) -> StoreError:
        """A StoreError for a SQLite error: a full disk (SQLITE_FULL, or SQLITE_IOERR with under 1 MiB free:
        what SQLite says when its shared-memory file cannot grow) and any other failed read or write
        (SQLITE_IOERR) name the index and the free space, with a hint."""
        text = str(exc)
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary code of an extended one
        if code == sqlite3.SQLITE_IOERR:  # SQLite does not say the errno: a (nearly) full disk is the usual one
            free = free_bytes(self.path)
            if free is not None and free < _NEARLY_FULL:
                code = sqlite3.SQLITE_FULL
            else:
                return StoreError(f"disk I/O error in the store index {self.path} ({free_space(self.path)})",
                                  hint=IO_HINT)
        if code == sqlite3.SQLITE_FULL or "disk is full" in text:
            return StoreError(f"no space left on device while writing the store index {self.path} "
                              f"({free_space(self.path)})", hint=FULL_HINT)
        return StoreError(f"store index error in {self.path}: {text}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE … COMMIT); rolled back on an exception."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite rolled back itself (a full disk, an I/O error); `exc` says why
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc) from exc
            raise

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read-only statement."""
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def migrate(self, component: str, steps: Sequence[Sequence[str]]) -> None:
        """Bring `component`'s tables to version `len(steps)`; step i holds the statements of version i+1.
        Every open asks this, so an index already at that version is only read (no write transaction, no
        fsync)."""
        try:
            found = self.query("SELECT version FROM schema WHERE component = ?", (component,))
        except StoreError:
            found = []  # no schema table yet
        if found and found[0][0] == len(steps):
            return
        with self.transaction() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema (component TEXT PRIMARY KEY, version INTEGER)")
            row = conn.execute("SELECT version FROM schema WHERE component = ?", (component,)).fetchone()
            version = row[0] if row else 0
            if version > len(steps):
                raise StoreError(f"store index {self.path} has {component} schema version {version}, "
                                 f"newer than this pybuild knows ({len(steps)})")
            for statements in steps[version:]:
                for sql in statements:
                    conn.execute(sql)
            conn.execute("INSERT OR REPLACE INTO schema VALUES (?, ?)", (component, len(steps)))

    def close(self) -> None:
        """Close every connection this Index opened (in this process)."""
        with self._guard:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    # tags

    def set_tag(self, name: str, digest: str) -> None:
        check_name(name)
        parse_digest(digest)
        now = time.time()
        with self.transaction() as c:
            c.execute("""INSERT INTO tags VALUES (?, ?, ?, ?)
                         ON CONFLICT (name) DO UPDATE SET
                         digest = excluded.digest, updated = excluded.updated""",
                      (name, digest, now, now))

    def get_tag(self, name: str) -> str | None:
        rows = self.query("SELECT digest FROM tags WHERE name = ?", (name,))
        return rows[0][0] if rows else None

    def tag(self, name: str) -> Tag | None:
        rows = self.query("SELECT * FROM tags WHERE name = ?", (name,))
        return Tag(*rows[0]) if rows else None

    def remove_tag(self, name: str) -> bool:
        with self.transaction() as c:
            return c.execute("DELETE FROM tags WHERE name = ?", (name,)).rowcount > 0

    def list_tags(self) -> list[Tag]:
        return [Tag(*r) for r in self.query("SELECT * FROM tags ORDER BY name")]

    # images and layers

    def record_image(self, digest: str, config: str, platform: str, size: int,
                     media_type: str = "application/vnd.oci.image.manifest.v1+json") -> None:
        parse_digest(digest)
        parse_digest(config)
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?, ?)",
                      (digest, config, platform, size, media_type, time.time()))

    def get_image(self, digest: str) -> ImageRow | None:
        rows = self.query("SELECT * FROM images WHERE digest = ?", (digest,))
        return ImageRow(*rows[0]) if rows else None

    def images(self) -> list[ImageRow]:
        return [ImageRow(*r) for r in self.query("SELECT * FROM images ORDER BY digest")]

    def record_layer(self, diff_id: str, size: int) -> None:
        """Record the uncompressed size of layer `diff_id`."""
        self.record_many(layers=[(diff_id, size)])

    def record_many(self, *, blobs: Sequence[tuple[str, int, str | None]] = (),
                    layers: Sequence[tuple[str, int]] = (),
                    compressed: Sequence[tuple[str, str, int, str, int]] = ()) -> None:
        """`record_blob`, `record_layer` and `record_compressed` of many rows, in one transaction (one
        fsync: a pull of 20 layers records them all at once)."""
        for digest, *_ in blobs:
            parse_digest(digest)
        for diff_id, *_ in layers:
            parse_digest(diff_id)
        for diff_id, _, _, digest, _ in compressed:
            parse_digest(diff_id)
            parse_digest(digest)
        now = time.time()
        with self.transaction() as c:
            c.executemany("""INSERT INTO blobs VALUES (?, ?, ?, ?, ?) ON CONFLICT (digest) DO UPDATE SET
                             size = excluded.size,
                             media_type = coalesce(excluded.media_type, blobs.media_type),
                             last_used = excluded.last_used""",
                          [(digest, size, media_type, now, now) for digest, size, media_type in blobs])
            c.executemany("INSERT INTO layers VALUES (?, ?, ?) "
                          "ON CONFLICT (diff_id) DO UPDATE SET size = excluded.size",
                          [(diff_id, size, now) for diff_id, size in layers])
            c.executemany("INSERT OR REPLACE INTO compressed VALUES (?, ?, ?, ?, ?, ?)",
                          [(*row, now) for row in compressed])

    def layer_size(self, diff_id: str) -> int | None:
        rows = self.query("SELECT size FROM layers WHERE diff_id = ?", (diff_id,))
        return rows[0][0] if rows else None

    def record_compressed(self, diff_id: str, compression: str, level: int, digest: str, size: int) -> None:
        """Record that blob `digest` is `diff_id` compressed with `compression` at `level`."""
        self.record_many(compressed=[(diff_id, compression, level, digest, size)])

    def find_compressed(self, diff_id: str, compression: str, level: int) -> CompressedRow | None:
        rows = self.query("""SELECT diff_id, compression, level, digest, size FROM compressed
                             WHERE diff_id = ? AND compression = ? AND level = ?""",
                          (diff_id, compression, level))
        return CompressedRow(*rows[0]) if rows else None

    def compressed_forms(self, diff_id: str) -> list[CompressedRow]:
        """The stored compressed forms of layer `diff_id`."""
        return [CompressedRow(*r) for r in
                self.query("""SELECT diff_id, compression, level, digest, size FROM compressed
                              WHERE diff_id = ? ORDER BY compression, level""", (diff_id,))]

    def compressed_rows(self) -> list[CompressedRow]:
        return [CompressedRow(*r) for r in
                self.query("SELECT diff_id, compression, level, digest, size FROM compressed")]

    def forget_compressed(self, digest: str) -> None:
        """Drop the rows saying blob `digest` is a compressed layer (it did not decompress to its diffID)."""
        with self.transaction() as c:
            c.execute("DELETE FROM compressed WHERE digest = ?", (digest,))

    def diff_id_of(self, digest: str) -> str | None:
        """The diffID whose compressed form is blob `digest`, if the index knows it."""
        rows = self.query("SELECT diff_id FROM compressed WHERE digest = ? LIMIT 1", (digest,))
        return rows[0][0] if rows else None

    # blobs

    def record_blob(self, digest: str, size: int, media_type: str | None = None) -> None:
        """Record a blob's size and media type (keeps a known media type when given None); marks it used."""
        self.record_many(blobs=[(digest, size, media_type)])

    def touch(self, *digests: str, when: float | None = None) -> None:
        """Mark blobs as used now (for LRU pruning); unknown digests are ignored."""
        now = time.time() if when is None else when
        with self.transaction() as c:
            c.executemany("UPDATE blobs SET last_used = ? WHERE digest = ?",
                          [(now, d) for d in digests])

    def blob_row(self, digest: str) -> BlobRow | None:
        rows = self.query("SELECT * FROM blobs WHERE digest = ?", (digest,))
        return BlobRow(*rows[0]) if rows else None

    def blob_rows(self) -> list[BlobRow]:
        return [BlobRow(*r) for r in self.query("SELECT * FROM blobs")]

    def forget_blobs(self, digests: Sequence[str]) -> None:
        """Drop every row that names a removed blob (prune): blob, image, compressed and orphan layer rows."""
        with self.transaction() as c:
            for d in digests:
                c.execute("DELETE FROM blobs WHERE digest = ?", (d,))
                c.execute("DELETE FROM images WHERE digest = ?", (d,))
                c.execute("DELETE FROM compressed WHERE digest = ?", (d,))
            c.execute("""DELETE FROM layers WHERE diff_id NOT IN (SELECT diff_id FROM compressed)
                         AND diff_id NOT IN (SELECT digest FROM blobs)""")

    # roots

    def add_root(self, kind: str, key: str, digest: str) -> None:
        """Keep `digest` alive under `(kind, key)` (replacing what that key kept before)."""
        check_name(kind, "root kind")
        parse_digest(digest)
        with self.transaction() as c:
            c.execute("""INSERT INTO refs VALUES (?, ?, ?, ?)
                         ON CONFLICT (kind, key) DO UPDATE SET digest = excluded.digest""",
                      (kind, key, digest, time.time()))

    def remove_root(self, kind: str, key: str) -> bool:
        with self.transaction() as c:
            return c.execute("DELETE FROM refs WHERE kind = ? AND key = ?", (kind, key)).rowcount > 0

    def roots(self, kind: str | None = None) -> list[Root]:
        if kind is None:
            return [Root(*r) for r in self.query("SELECT * FROM refs ORDER BY kind, key")]
        return [Root(*r) for r in self.query("SELECT * FROM refs WHERE kind = ? ORDER BY key", (kind,))]

    def root_digests(self) -> set[str]:
        """Every digest a tag or a root keeps alive directly."""
        return {r[0] for r in self.query("SELECT digest FROM tags UNION SELECT digest FROM refs")}
