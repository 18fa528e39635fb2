"""Opening the store for a command, with its repair warnings reported as it opens."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pybuild.store.store import Store

Warn = Callable[[str], None]


def open_store(root: str | None, warn: Warn | None) -> Store:
    """The store at `root` (None: the default one); `warn` gets each thing opening it repaired (store
    directories open to other users), before the command does anything else. A blob a registry cache hit
    left remote is fetched from its registry when read (`registry.blobsource.FETCHERS`)."""
    from pybuild.registry.blobsource import FETCHERS
    from pybuild.store.store import Store

    store = Store.open(root, FETCHERS)
    for warning in store.warnings:
        if warn is not None:
            warn(warning)
    return store
