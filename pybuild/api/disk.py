"""The store's disk commands: du (with --verify) and prune.

`prune` takes its limits as the command line spells them (`10GB`, `until=24h`) and checks them before the
store opens; its store, cache-index, snapshot and executor modules are imported when it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pybuild.api.opening import Warn, open_store
from pybuild.errors import ConfigError
from pybuild.record import record
from pybuild.units import human_size

if TYPE_CHECKING:
    from pybuild.store.store import Problem, Usage

__all__ = ["DuRequest", "DuResult", "PruneRequest", "PruneResult", "du", "human_size", "parse_size", "prune"]


@record(kw_only=True)
class DuRequest:
    """`pybuild du`; `verify` also re-hashes every blob and checks the index."""

    verify: bool = False
    store_root: str | None = None


@record(kw_only=True)
class DuResult:
    """Blob counts and bytes; `problems` what `verify` found (empty without it)."""

    usage: Usage
    problems: tuple[Problem, ...]


def du(request: DuRequest, warn: Warn | None = None) -> DuResult:
    """The store's disk usage."""
    with open_store(request.store_root, warn) as store:
        usage = store.du()
        problems = store.verify_all() if request.verify else []
    return DuResult(usage=usage, problems=tuple(problems))


@record(kw_only=True)
class PruneRequest:
    """`pybuild prune`: `keep_storage` a size (`10GB`), `filters` `until=DURATION` specs (`24h`), `all` also
    drops every build cache entry."""

    keep_storage: str | None = None
    filters: tuple[str, ...] = ()
    all: bool = False
    store_root: str | None = None


@record(kw_only=True)
class PruneResult:
    """What went: cache entries, blobs and snapshots, the bytes reclaimed and what the store now holds."""

    cache_entries: int
    blobs: int
    snapshots: int
    reclaimed: int
    after: int


def prune(request: PruneRequest, warn: Warn | None = None,
          on_wait: Callable[[str], None] | None = None) -> PruneResult:
    """Remove unreferenced blobs (least recently used cache entries first, down to `keep_storage`), and
    snapshots and containers no build uses; `on_wait` is told when it waits for a build's lock."""
    keep = parse_size(request.keep_storage) if request.keep_storage is not None else None
    until: float | None = None
    for item in request.filters:
        key, sep, value = item.partition("=")
        if key.strip().lower() != "until" or not sep:
            raise ConfigError(f"invalid prune filter {item!r}", hint="the filter prune takes is until=DURATION")
        until = _parse_until(value.strip())
    from pybuild.cache.index import CacheIndex
    from pybuild.worker.snapshots import Snapshots

    with open_store(request.store_root, warn) as store:
        dropped: list[str] = []
        if keep is not None or request.all:
            # cache entries go least recently used first until their layers fit (all of them with --all)
            dropped = CacheIndex(store).prune_lru(0 if request.all else keep or 0)
        report = store.prune(keep_storage=keep, until_seconds=until, on_wait=on_wait)
        with store.exclusive_lock():
            from pybuild.worker.executor import reap_stale_runs

            reap_stale_runs(store.root)
            snapshots = Snapshots.open(store).prune(store)
    return PruneResult(cache_entries=len(dropped), blobs=len(report.removed), snapshots=snapshots,
                       reclaimed=report.reclaimed, after=report.after)


_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
               "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def parse_size(text: str) -> int:
    """`10GB`, `512MiB`, `1.5g`, `100` (bytes) → bytes; ConfigError when unreadable."""
    import re

    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise ConfigError(f"invalid size {text!r}", hint="e.g. 500MB, 10GB, 2GiB or a number of bytes")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def _parse_until(text: str) -> float:
    """A Go duration (`24h`, `90m`) in seconds; ConfigError when unreadable."""
    from pybuild.dockerfile.durations import SECOND, parse_duration
    from pybuild.errors import DockerfileError

    try:
        nanos = parse_duration(text)
    except DockerfileError as exc:
        raise ConfigError(f"invalid prune filter until={text!r}: {exc.message}") from None
    if nanos < 0:
        raise ConfigError(f"invalid prune filter until={text!r}: negative duration")
    return nanos / SECOND
