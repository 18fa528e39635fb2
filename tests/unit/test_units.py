"""The one byte-size formatter (`pybuild.units.human_size`)."""

from __future__ import annotations

import pytest

from pybuild.units import human_size


@pytest.mark.parametrize(("size", "text", "trimmed"), [
    (0, "0 B", "0 B"), (1023, "1023 B", "1023 B"), (1024, "1.0 KiB", "1 KiB"), (1536, "1.5 KiB", "1.5 KiB"),
    (64 << 20, "64.0 MiB", "64 MiB"), (200 << 20, "200.0 MiB", "200 MiB"), (3 << 40, "3.0 TiB", "3 TiB"),
    (5 << 50, "5120.0 TiB", "5120 TiB"),
])
def test_human_size(size: int, text: str, trimmed: str) -> None:
    assert human_size(size) == text
    assert human_size(size, trim=True) == trimmed
