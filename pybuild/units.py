"""Byte sizes for people: the one formatter every message and listing uses (a leaf: imports nothing)."""

from __future__ import annotations

__all__ = ["human_size"]


def human_size(size: int, *, trim: bool = False) -> str:
    """`1023 B`, `1.5 KiB`, `200.0 MiB`, `3.0 TiB`: binary units, one decimal; `trim` drops a `.0` (`64 MiB`)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            if unit == "B":
                return f"{size} B"
            text = f"{value:.1f}"
            return f"{text.removesuffix('.0') if trim else text} {unit}"
        value /= 1024
    raise AssertionError("unreachable: the loop returns at TiB")
