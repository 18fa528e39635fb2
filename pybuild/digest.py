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

Bytes that are not UTF-8. A Dockerfile, a build arg or a file name may hold them; pybuild keeps them in a
`str` as surrogate escapes (`\udc80`-`\udcff`, Python's `surrogateescape`), so the text round-trips to the
original bytes. Two encodings follow from that:

- `canonical_json` writes documents (configs, manifests, indexes) that must be valid UTF-8 JSON. It does
  what Go's `encoding/json` does with invalid UTF-8 in a string (BuildKit and docker are Go): each byte that
  is not part of a valid sequence becomes U+FFFD (`go_text`). A `LABEL a=\xff` gives `"a": "\ufffd"`, as
  BuildKit's image config does.
- `key_json` writes the same JSON for hashing only (op digests, cache keys): escaped bytes are written back
  as themselves, so the bytes hashed are the bytes a step reads, and two different byte strings never share
  a digest. It is not valid UTF-8 then, and is never stored as a document.

Any other lone surrogate (only a JSON `\ud800`-style escape in a stored document can make one) becomes
U+FFFD in both, as Go's decoder would have made it when it read the document.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Final

from pybuild.errors import InternalError, StoreError

__all__ = ["OCI_ALGORITHMS", "canonical_json", "digest_hex", "digest_parts", "go_text", "key_json",
           "parse_digest", "sha256_digest", "validate_digest"]

# OCI image-spec descriptor.md: algorithm and encoded parts of a digest.
_DIGEST_RE: Final = re.compile(r"([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)")
# Algorithms and the exact form of their encoded part (lower-case hex of a fixed length): go-digest's.
_HEX_LENGTHS: Final[dict[str, int]] = {"sha256": 64, "sha384": 96, "sha512": 128}
# The ones the OCI image spec registers (descriptor.md): what a document, blob or cache key may use.
OCI_ALGORITHMS: Final = ("sha256", "sha512")
_HEX_RE: Final = re.compile(r"[0-9a-f]+")
# Lone surrogates that are not surrogate escapes of a byte (those are \udc80-\udcff).
_LONE: Final = re.compile("[\ud800-\udc7f\udd00-\udfff]")
_ESCAPED: Final = re.compile("[\udc80-\udcff]")


def sha256_digest(data: bytes) -> str:
    """The OCI digest string of `data`: `sha256:<64 lower-case hex>`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _check(text: object, algorithms: tuple[str, ...]) -> tuple[str, str] | str:
    """(algorithm, encoded) of a valid digest, else why it is not one. pybuild's one digest validator:
    every other check (`parse_digest`, `digest_parts`, the store's and the snapshots' sha256-only names,
    the registry client, ADD --checksum) goes through here."""
    if not isinstance(text, str):
        return f"invalid digest: expected a string, got {type(text).__name__}"
    match = _DIGEST_RE.fullmatch(text)
    if match is None:
        return f"invalid digest format: {text!r}"
    algorithm, encoded = match.group(1), match.group(2)
    length = _HEX_LENGTHS.get(algorithm) if algorithm in algorithms else None
    if length is None:
        return f"unsupported digest algorithm: {algorithm!r} in {text!r}"
    if len(encoded) != length or _HEX_RE.fullmatch(encoded) is None:
        return f"invalid digest {text!r}: {algorithm} needs {length} lower-case hex characters"
    return algorithm, encoded


def parse_digest(text: str) -> tuple[str, str]:
    """Split and validate a digest: `"sha256:ab…"` → `("sha256", "ab…")`.

    Only registered algorithms (sha256, sha512) are accepted, with lower-case hex of the right length;
    anything else is a StoreError saying why.
    """
    checked = _check(text, OCI_ALGORITHMS)
    if isinstance(checked, str):
        raise StoreError(checked)
    return checked


def digest_parts(text: str, algorithms: tuple[str, ...] = OCI_ALGORITHMS) -> tuple[str, str] | None:
    """`parse_digest` for a caller with its own error: (algorithm, hex) of a valid digest using one of
    `algorithms` (any of sha256, sha384, sha512), else None."""
    checked = _check(text, algorithms)
    return None if isinstance(checked, str) else checked


def validate_digest(text: str) -> str:
    """`text` itself if it is a valid digest (see `parse_digest`), else StoreError."""
    parse_digest(text)
    return text


def digest_hex(digest: str) -> str:
    """The encoded (hex) part of a valid digest: `"sha256:ab…"` → `"ab…"`."""
    return parse_digest(digest)[1]


def _dumps(obj: object) -> str:
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InternalError(f"cannot encode as JSON: {exc}") from exc


def go_text(text: str) -> str:
    """`text` as valid Unicode, the way Go's `encoding/json` writes a string of invalid UTF-8: every byte
    that is not part of a valid UTF-8 sequence becomes U+FFFD (one per byte). Escaped bytes that together
    form a valid sequence become that character, as they would in Go's byte string."""
    if _LONE.search(text) is not None:
        text = _LONE.sub("\ufffd", text)
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")
    return _ESCAPED.sub("\ufffd", text)


def canonical_json(obj: object) -> bytes:
    """Deterministic JSON bytes of `obj` (sorted keys, compact, UTF-8; invalid UTF-8 as Go writes it, see
    the module docstring)."""
    text = _dumps(obj)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return go_text(text).encode("utf-8")


def key_json(obj: object) -> bytes:
    """`canonical_json` for hashing: undecodable bytes written back as themselves (lossless; see the module
    docstring). Equal to `canonical_json(obj)` whenever every string is valid Unicode."""
    text = _dumps(obj)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _LONE.sub("\ufffd", text).encode("utf-8", "surrogateescape")
