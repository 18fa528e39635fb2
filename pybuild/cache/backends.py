"""The two kinds of build cache behind one entry point: `export_cache` for `--cache-to`, `open_cache_source`
for `--cache-from`. A `type=local` spec goes to `transfer` (a directory), a `type=registry` one to
`registrycache` (a registry tag; imported only then, as it loads the registry client and httpx).

Here, above both, so that neither kind imports the other: `registrycache` builds on `transfer`'s format.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pybuild.cache.transfer import CacheSpec, ImportedCache, LocalCacheSource, export_local_cache

if TYPE_CHECKING:
    from pybuild.store.store import Store

__all__ = ["export_cache", "open_cache_source"]


def export_cache(store: Store, spec: CacheSpec, entries: Sequence[tuple[str, str]]) -> int:
    """Write `entries` ((cache key, layer diffID) pairs, already chosen by `spec.mode`) as the cache
    `spec` names: a directory (`transfer`) or a registry tag (`registrycache`); returns the number of
    entries written."""
    if spec.type == "registry":
        from pybuild.cache.registrycache import export_registry_cache

        return export_registry_cache(store, spec, entries)
    return export_local_cache(store, spec, entries)


def open_cache_source(spec: CacheSpec) -> ImportedCache:
    """The source of a parsed `--cache-from`: a ConfigError when it is plainly not there (the caller warns
    and builds without it); a registry is not asked anything until the first `fetch`."""
    if spec.type == "registry":
        from pybuild.cache.registrycache import RegistryCacheSource

        return RegistryCacheSource(spec)
    return LocalCacheSource(spec)
