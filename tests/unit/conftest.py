"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.registry.blobsource import FETCHERS
from pybuild.store.store import Store


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    """Two fresh stores, A and B: two machines (the cache transfer tests fill A and import into B)."""
    a, b = Store.open(str(tmp_path / "a"), FETCHERS), Store.open(str(tmp_path / "b"), FETCHERS)
    yield a, b
    a.close()
    b.close()
