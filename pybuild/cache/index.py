"""The local cache index: cache key → step result, in the store's SQLite index (`index.db`).

Made by the solver with `CacheIndex(store)`; `lookup` before running a step, `record` after. Each entry
holds the result (a layer diffID and/or a snapshot id, plus the step's JSON config delta), its size, when
it was created and last used, and the step's `keys.describe()` output (read back by `explain.py`).

Liveness: an entry with a layer owns the store root `("cache", key) → diff_id`, so the store's prune keeps
the layer while the entry exists. `prune_lru` removes entries (and their roots) least recently used first;
the store's prune then frees the blobs. The root row is written in the same transaction as the entry
(a direct statement on the store's `refs` table rather than `Index.add_root`, which opens its own
transaction): an entry and its root appear and disappear together, even when a `record` in one process
races a `prune_lru` in another.

Concurrency: every write is one `BEGIN IMMEDIATE` transaction (see `store/index.py`). `record` is
idempotent: when the key is already there (another process ran the same step), the first result stays
and is returned, so every process goes on with the same layer.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

from pybuild.digest import canonical_json, parse_digest
from pybuild.errors import InternalError
from pybuild.record import record
from pybuild.store.store import Store

__all__ = ["ROOT_KIND", "CacheEntry", "CacheIndex", "CacheResult"]

ROOT_KIND: Final = "cache"

_SCHEMA: Final[tuple[tuple[str, ...], ...]] = (
    (  # version 1
        """CREATE TABLE cache_entries (key TEXT PRIMARY KEY, step_id TEXT NOT NULL, kind TEXT NOT NULL,
                                       diff_id TEXT, snapshot TEXT, config TEXT NOT NULL,
                                       size INTEGER NOT NULL, description TEXT NOT NULL,
                                       created REAL NOT NULL, last_used REAL NOT NULL)""",
        "CREATE INDEX cache_entries_step ON cache_entries (step_id, last_used)",
        "CREATE INDEX cache_entries_used ON cache_entries (last_used)",
    ),
)

_COLUMNS: Final = "key, step_id, kind, diff_id, snapshot, config, size, description, created, last_used"


@record
class CacheResult:
    """What a cached step produced: a layer `diff_id` and/or a `snapshot` id, the canonical JSON of its
    image-config delta (`config`) and the layer's uncompressed `size` (0: look it up in the store)."""

    diff_id: str | None = None
    snapshot: str | None = None
    config: str = "{}"
    size: int = 0

    @staticmethod
    def make(diff_id: str | None = None, snapshot: str | None = None,
             config: Mapping[str, Any] | None = None, size: int = 0) -> CacheResult:
        """A result with `config` given as a mapping (stored as canonical JSON)."""
        return CacheResult(diff_id, snapshot, canonical_json(dict(config or {})).decode(), size)

    def config_delta(self) -> dict[str, Any]:
        """The config delta as a dict."""
        value = json.loads(self.config)
        return value if isinstance(value, dict) else {}


@record
class CacheEntry:
    """One row of the cache index."""

    key: str
    step_id: str
    kind: str
    result: CacheResult
    description: str
    created: float
    last_used: float

    def described(self) -> dict[str, Any]:
        """The stored `keys.describe()` output."""
        value = json.loads(self.description)
        return value if isinstance(value, dict) else {}


class CacheIndex:
    """The cache entries of one store (thread-safe and multi-process safe, like the store index)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._index = store.index
        self._index.migrate("cache", _SCHEMA)

    def lookup(self, key: str, *, touch: bool = True) -> CacheResult | None:
        """The result recorded under `key` (marking it used now), or None on a miss."""
        if not touch:
            rows = self._index.query(f"SELECT {_COLUMNS} FROM cache_entries WHERE key = ?", (key,))
            return _entry(rows[0]).result if rows else None
        with self._index.transaction() as c:
            row = c.execute(f"SELECT {_COLUMNS} FROM cache_entries WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            c.execute("UPDATE cache_entries SET last_used = ? WHERE key = ?", (time.time(), key))
        return _entry(row).result

    def touch(self, keys: Iterable[str]) -> None:
        """Mark `keys` used now, in one transaction (after lookups made with `touch=False`)."""
        now = time.time()
        with self._index.transaction() as c:
            c.executemany("UPDATE cache_entries SET last_used = ? WHERE key = ?", [(now, k) for k in keys])

    def record(self, key: str, result: CacheResult, description: Mapping[str, Any], *,
               replace: bool = False) -> CacheResult:
        """Record `result` under `key`; returns the result now stored: the earlier one if the key existed
        (concurrent builders share the first result), unless `replace` (a step run with `--no-cache`: its
        fresh result is what the build asked for)."""
        parse_digest(key)
        if result.diff_id is not None:
            parse_digest(result.diff_id)
        size = result.size
        if not size and result.diff_id is not None:
            size = self._index.layer_size(result.diff_id) or 0
        text = canonical_json(dict(description)).decode()
        step_id = str(description.get("step_id", ""))
        kind = str(description.get("kind", ""))
        now = time.time()
        with self._index.transaction() as c:
            row = c.execute(f"SELECT {_COLUMNS} FROM cache_entries WHERE key = ?", (key,)).fetchone()
            if row is not None and replace:
                _remove(c, key)
            elif row is not None:
                c.execute("UPDATE cache_entries SET last_used = ? WHERE key = ?", (now, key))
                return _entry(row).result
            c.execute(f"INSERT INTO cache_entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (key, step_id, kind, result.diff_id, result.snapshot, result.config, size, text,
                       now, now))
            if result.diff_id is not None:
                _add_root(c, key, result.diff_id, now)
        return CacheResult(result.diff_id, result.snapshot, result.config, size)

    def remove(self, key: str) -> bool:
        """Forget `key` and drop its root; False if it was not there."""
        with self._index.transaction() as c:
            return _remove(c, key)

    def entry(self, key: str) -> CacheEntry | None:
        rows = self._index.query(f"SELECT {_COLUMNS} FROM cache_entries WHERE key = ?", (key,))
        return _entry(rows[0]) if rows else None

    def entries(self) -> list[CacheEntry]:
        """Every entry, least recently used first."""
        rows = self._index.query(f"SELECT {_COLUMNS} FROM cache_entries ORDER BY last_used, key")
        return [_entry(r) for r in rows]

    def entries_for_step(self, step_id: str, limit: int = 50) -> list[CacheEntry]:
        """Entries recorded for step `step_id`, most recently used first (what explain compares with)."""
        rows = self._index.query(f"""SELECT {_COLUMNS} FROM cache_entries WHERE step_id = ?
                                     ORDER BY last_used DESC, key LIMIT ?""", (step_id, limit))
        return [_entry(r) for r in rows]

    def total_bytes(self) -> int:
        """Bytes the entries' layers take, each distinct layer counted once."""
        rows = self._index.query("""SELECT coalesce(sum(size), 0) FROM (SELECT max(size) AS size
                                    FROM cache_entries WHERE diff_id IS NOT NULL GROUP BY diff_id)""")
        return int(rows[0][0])

    def prune_lru(self, keep_bytes: int) -> list[str]:
        """Drop entries least recently used first until their layers take at most `keep_bytes` (a layer
        shared by several entries counts once, and is freed only with the last of them). Returns the
        removed keys; the store's prune then frees the blobs no root keeps."""
        if keep_bytes < 0:
            raise InternalError(f"prune_lru: negative keep_bytes {keep_bytes}")
        removed: list[str] = []
        with self._index.transaction() as c:
            rows = c.execute("""SELECT key, diff_id, size FROM cache_entries
                                ORDER BY last_used, key""").fetchall()
            users: dict[str, int] = {}
            sizes: dict[str, int] = {}
            for _, diff_id, size in rows:
                if diff_id is not None:
                    users[diff_id] = users.get(diff_id, 0) + 1
                    sizes[diff_id] = max(sizes.get(diff_id, 0), size)
            total = sum(sizes.values())
            for key, diff_id, _ in rows:
                if total <= keep_bytes:
                    break
                _remove(c, key)
                removed.append(key)
                if diff_id is not None:
                    users[diff_id] -= 1
                    if users[diff_id] == 0:
                        total -= sizes[diff_id]
        return removed


def _add_root(c: sqlite3.Connection, key: str, digest: str, now: float) -> None:
    # Same statement as Index.add_root, inside the caller's transaction (see the module docstring).
    c.execute("""INSERT INTO refs VALUES (?, ?, ?, ?)
                 ON CONFLICT (kind, key) DO UPDATE SET digest = excluded.digest""",
              (ROOT_KIND, key, digest, now))


def _remove(c: sqlite3.Connection, key: str) -> bool:
    gone = c.execute("DELETE FROM cache_entries WHERE key = ?", (key,)).rowcount > 0
    c.execute("DELETE FROM refs WHERE kind = ? AND key = ?", (ROOT_KIND, key))
    return gone


def _entry(row: tuple[Any, ...]) -> CacheEntry:
    key, step_id, kind, diff_id, snapshot, config, size, description, created, last_used = row
    return CacheEntry(key, step_id, kind, CacheResult(diff_id, snapshot, config, size), description,
                      created, last_used)
