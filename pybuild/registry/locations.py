"""Where blobs were seen: (digest, registry host, repository) rows in the store's SQLite index.

Who uses it: `pull.py` records every blob of an image it pulled, `push.py` every blob it pushed (or found
there), and asks, for a blob a repository lacks, which other repositories of the same registry had it, so
the blob is mounted (`POST /v2/REPO/blobs/uploads/?mount=DIGEST&from=OTHER`) rather than uploaded again,
as docker's and containerd's pushers do with their "distribution source" metadata.

A row is only a hint: the registry may have lost the blob since, or the caller may not be allowed to read
the other repository; the mount then fails and the pusher uploads. Rows are never needed for correctness,
so they are not pruned with blobs (they are small, and a later push may still mount from them).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pybuild.store.store import Store

__all__ = ["BlobLocations"]

_SCHEMA: Final[tuple[tuple[str, ...], ...]] = (
    (  # version 1
        """CREATE TABLE registry_blobs (digest TEXT NOT NULL, host TEXT NOT NULL, repo TEXT NOT NULL,
                                        seen REAL NOT NULL, PRIMARY KEY (digest, host, repo))""",
    ),
)


class BlobLocations:
    """The registry rows of one store (thread-safe and multi-process safe, like the store index)."""

    def __init__(self, store: Store) -> None:
        self._index = store.index
        self._index.migrate("registry", _SCHEMA)

    def record(self, host: str, repo: str, digests: Iterable[str]) -> None:
        """Remember that `host/repo` holds every blob in `digests` (one transaction)."""
        now = time.time()
        rows = [(digest, host, repo, now) for digest in dict.fromkeys(digests)]
        with self._index.transaction() as c:
            c.executemany("""INSERT INTO registry_blobs VALUES (?, ?, ?, ?)
                             ON CONFLICT (digest, host, repo) DO UPDATE SET seen = excluded.seen""", rows)

    def repos_with(self, host: str, digest: str) -> list[str]:
        """The repositories of `host` that held blob `digest`, most recently seen first."""
        rows = self._index.query("SELECT repo FROM registry_blobs WHERE digest = ? AND host = ? "
                                 "ORDER BY seen DESC, repo", (digest, host))
        return [repo for repo, in rows]
