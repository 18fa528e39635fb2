"""Content digests and canonical JSON bytes.

Who uses it: the image spec (descriptors, manifest and config digests), the store (blob names), the cache
(keys) and the exporters. Imports nothing from pybuild but the error tree. A value
`canonical_json` cannot encode is a bug (InternalError); a malformed digest is bad input (StoreError).

`canonical_json` is pybuild's one way of turning a JSON value into bytes: keys sorted, no insignificant
whitespace, UTF-8 with non-ASCII characters written as themselves (`ensure_ascii=False`), NaN and infinities
refused. The same value always gives the same bytes, so a manifest or config built twice from the same
inputs has the same digest. It is not byte-identical to what Go's `encoding/json` writes for docker (Go
keeps struct field order and escapes `<`, `>`, `&`); nothing needs that: a document is always addressed by
the digest of the bytes actually stored or pushed, never re-serialised before it is verified.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Final

from pybuild.errors import InternalError, StoreError

__all__ = ["canonical_json", "digest_hex", "parse_digest", "sha256_digest", "validate_digest"]

# OCI image-spec descriptor.md: algorithm and encoded parts of a digest.
_DIGEST_RE: Final = re.compile(r"([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)")
# Registered algorithms and the exact form of their encoded part (lower-case hex of a fixed length).
_HEX_LENGTHS: Final[dict[str, int]] = {"sha256": 64, "sha512": 128}
_HEX_RE: Final = re.compile(r"[0-9a-f]+")


def sha256_digest(data: bytes) -> str:
    """The OCI digest string of `data`: `sha256:<64 lower-case hex>`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_digest(text: str) -> tuple[str, str]:
    """Split and validate a digest: `"sha256:ab…"` → `("sha256", "ab…")`.

    Only registered algorithms (sha256, sha512) are accepted, with lower-case hex of the right length;
    anything else is a StoreError saying why.
    """
    if not isinstance(text, str):
        raise StoreError(f"invalid digest: expected a string, got {type(text).__name__}")
    match = _DIGEST_RE.fullmatch(text)
    if match is None:
        raise StoreError(f"invalid digest format: {text!r}")
    algorithm, encoded = match.group(1), match.group(2)
    length = _HEX_LENGTHS.get(algorithm)
    if length is None:
        raise StoreError(f"unsupported digest algorithm: {algorithm!r} in {text!r}")
    if len(encoded) != length or _HEX_RE.fullmatch(encoded) is None:
        raise StoreError(f"invalid digest {text!r}: {algorithm} needs {length} lower-case hex characters")
    return algorithm, encoded


def validate_digest(text: str) -> str:
    """`text` itself if it is a valid digest (see `parse_digest`), else StoreError."""
    parse_digest(text)
    return text


def digest_hex(digest: str) -> str:
    """The encoded (hex) part of a valid digest: `"sha256:ab…"` → `"ab…"`."""
    return parse_digest(digest)[1]


def canonical_json(obj: object) -> bytes:
    """Deterministic JSON bytes of `obj` (sorted keys, compact, UTF-8; see the module docstring)."""
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InternalError(f"cannot encode as JSON: {exc}") from exc
    return text.encode("utf-8")
