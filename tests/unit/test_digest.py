"""`digest.canonical_json` (documents: invalid UTF-8 as Go writes it) and `digest.key_json` (hashing:
lossless), on text holding bytes that are not UTF-8 (surrogate escapes)."""

from __future__ import annotations

import json

import pytest

from pybuild.digest import canonical_json, digest_parts, go_text, key_json


def undecodable(data: bytes) -> str:
    """Bytes as pybuild holds them in a str (the parser's and `os.fsdecode`'s surrogateescape)."""
    return data.decode("utf-8", "surrogateescape")


def test_valid_text_is_the_same_in_both() -> None:
    value = {"b": ["é", "\u2028", "<&>"], "a": 1}
    assert canonical_json(value) == key_json(value) == '{"a":1,"b":["é","\u2028","<&>"]}'.encode()


def test_document_replaces_each_invalid_byte_with_u_fffd_as_go_does() -> None:
    # Go's encoding/json: every byte that is not part of a valid sequence becomes one U+FFFD
    value = {"label": undecodable(b"x\xff\xfey"), "cut": undecodable(b"\xe2\x82"), "ok": undecodable(b"\xc3\xa9")}
    data = canonical_json(value)
    assert json.loads(data.decode("utf-8")) == {"label": "x\ufffd\ufffdy", "cut": "\ufffd\ufffd", "ok": "é"}


def test_escaped_bytes_that_join_into_a_character_are_that_character() -> None:
    # `ENV a=\xc3` then `ENV b=${a}\xa9`: Go's byte string is "é"
    assert go_text(undecodable(b"\xc3") + undecodable(b"\xa9")) == "é"


def test_json_escaped_lone_surrogates_become_u_fffd() -> None:
    # only a `\ud800` escape in a stored document makes one; Go's decoder made it U+FFFD
    assert canonical_json(["a\ud800b"]) == key_json(["a\ud800b"]) == '["a\ufffdb"]'.encode()


def test_key_json_keeps_the_bytes() -> None:
    assert key_json([undecodable(b"echo \xff\xfe")]) == b'["echo \xff\xfe"]'


@pytest.mark.parametrize(("one", "other"), [(b"\xff", b"\xfe"), (b"\xff", b"\xff\xff"), (b"\xff", b"?"),
                                            (b"\xe2\x82", b"\xe2\x83"), (b"\xff", "\ufffd".encode())])
def test_different_bytes_never_share_key_bytes(one: bytes, other: bytes) -> None:
    assert key_json({"run": undecodable(one)}) != key_json({"run": undecodable(other)})


def test_documents_may_share_bytes_where_keys_do_not() -> None:
    # Go writes both as U+FFFD: that is why keys are not made from documents
    assert canonical_json([undecodable(b"\xff")]) == canonical_json([undecodable(b"\xfe")])


def test_digest_parts_is_parse_digest_without_the_error() -> None:
    good = "sha256:" + "a" * 64
    assert digest_parts(good) == ("sha256", "a" * 64)
    assert digest_parts("sha512:" + "b" * 128) == ("sha512", "b" * 128)
    assert digest_parts("sha512:" + "b" * 128, ("sha256",)) is None  # the store names blobs by sha256 only
    assert digest_parts("sha384:" + "c" * 96) is None  # not an OCI algorithm
    assert digest_parts("sha384:" + "c" * 96, ("sha256", "sha384", "sha512")) == ("sha384", "c" * 96)  # ADD
    for bad in ("sha256:" + "A" * 64, "sha256:" + "a" * 63, "sha256", "", "md5:" + "a" * 32, " " + good):
        assert digest_parts(bad) is None
