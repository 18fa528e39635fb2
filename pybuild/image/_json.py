"""Reading and writing JSON documents for `pybuild.image.spec` (private).

`Ctx` reads typed fields out of a parsed JSON object and raises StoreError naming the field's path in the
document (`invalid manifest: field 'layers[1].size' ...`); the rest are small helpers for pairs (hashable
mappings) and unknown fields kept for round trips.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from pybuild.digest import canonical_json, parse_digest
from pybuild.errors import StoreError

Pairs = tuple[tuple[str, str], ...]
"""A string mapping as sorted `(key, value)` pairs (annotations, labels): hashable, unlike a dict."""


def to_pairs(mapping: Mapping[str, str] | Iterable[tuple[str, str]]) -> Pairs:
    """Sorted pairs of a mapping (or of pairs; a later duplicate key wins)."""
    items = mapping.items() if isinstance(mapping, Mapping) else mapping
    return tuple(sorted(dict(items).items()))


def kind_of(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    names: dict[type, str] = {str: "string", list: "array", dict: "object"}
    return names.get(type(value), type(value).__name__)


class Ctx:
    """Where we are in a document being read, for error messages."""

    __slots__ = ("kind", "prefix")

    def __init__(self, kind: str, prefix: str = "") -> None:
        self.kind = kind
        self.prefix = prefix

    def child(self, key: str) -> Ctx:
        return Ctx(self.kind, f"{self.prefix}{key}.")

    def fail(self, key: str, problem: str) -> NoReturn:
        raise StoreError(f"invalid {self.kind}: field '{self.prefix}{key}' {problem}")

    def obj(self, value: object, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(key, f"must be an object, got {kind_of(value)}")
        return value

    def str_(self, data: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                self.fail(key, "is required")
            return None
        if not isinstance(value, str):
            self.fail(key, f"must be a string, got {kind_of(value)}")
        return value

    def req_str(self, data: Mapping[str, Any], key: str) -> str:
        value = self.str_(data, key, required=True)
        assert value is not None
        return value

    def int_(self, data: Mapping[str, Any], key: str, *, required: bool = False, minimum: int = 0) -> int:
        value = data.get(key)
        if value is None:
            if required:
                self.fail(key, "is required")
            return 0
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(key, f"must be an integer >= {minimum}, got {kind_of(value)}")
        if value < minimum:
            self.fail(key, f"must be an integer >= {minimum}, got {value}")
        return value

    def bool_(self, data: Mapping[str, Any], key: str) -> bool:
        value = data.get(key, False)
        if value is None:
            return False
        if not isinstance(value, bool):
            self.fail(key, f"must be a boolean, got {kind_of(value)}")
        return value

    def str_list(self, data: Mapping[str, Any], key: str, *, single: bool = False) -> tuple[str, ...]:
        """An array of strings (missing/null → empty); `single` also takes one string (docker's strslice)."""
        value = data.get(key)
        if value is None:
            return ()
        if single and isinstance(value, str):
            return (value,)
        if not isinstance(value, list):
            self.fail(key, f"must be an array of strings, got {kind_of(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.fail(f"{key}[{i}]", f"must be a string, got {kind_of(item)}")
        return tuple(value)

    def str_map(self, data: Mapping[str, Any], key: str) -> Pairs:
        value = data.get(key)
        if value is None:
            return ()
        for name, item in self.obj(value, key).items():
            if not isinstance(item, str):
                self.fail(f"{key}.{name}", f"must be a string, got {kind_of(item)}")
        return to_pairs(value)

    def key_set(self, data: Mapping[str, Any], key: str) -> tuple[str, ...]:
        """A JSON object used as a set (`{"80/tcp": {}}`): its keys."""
        value = data.get(key)
        return () if value is None else tuple(sorted(self.obj(value, key)))

    def digest(self, data: Mapping[str, Any], key: str) -> str:
        value = self.req_str(data, key)
        try:
            parse_digest(value)
        except StoreError as exc:
            self.fail(key, f"is not a valid digest: {exc.message}")
        return value


def extra_fields(data: Mapping[str, Any], known: Iterable[str]) -> Pairs:
    """The unknown fields of `data`, as (name, canonical JSON text) pairs."""
    names = set(known)
    return tuple(sorted((k, canonical_json(v).decode()) for k, v in data.items() if k not in names))


def put_extra(out: dict[str, Any], extra: Pairs) -> dict[str, Any]:
    for key, text in extra:
        out.setdefault(key, json.loads(text))
    return out


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def load_object(data: bytes, kind: str) -> dict[str, Any]:
    try:
        value = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreError(f"invalid {kind}: not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise StoreError(f"invalid {kind}: expected a JSON object, got {kind_of(value)}")
    return value


def set_field(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def top_object(data: object, ctx: Ctx) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise StoreError(f"invalid {ctx.kind}: expected a JSON object, got {kind_of(data)}")
    return data
