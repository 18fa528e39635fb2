"""Unit tests for pybuild.cache.keys: determinism, what enters a key and what never does."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pybuild.cache.keys import (
    PROXY_ARGS,
    CacheKeyInput,
    cache_key,
    content_from,
    describe,
    is_secret_name,
    select_build_args,
)
from pybuild.errors import InternalError

PARENT = "sha256:" + "1" * 64
ARGS = {"VERSION": "1.0", "UNUSED": "x", "HTTP_PROXY": "http://proxy:3128", "no_proxy": "localhost",
        "API_TOKEN": "s3cr3t-value"}


def run_input(args: dict[str, str] | None = None, used: tuple[str, ...] = ("VERSION",), **extra: Any
              ) -> CacheKeyInput:
    definition: dict[str, Any] = {
        "command": ["/bin/sh", "-c", "make install VERSION=$VERSION"], "env": {"PATH": "/usr/bin"},
        "user": "", "workdir": "/src", "network": "default", "security": "sandbox",
        "mounts": [{"type": "secret", "id": "npmrc", "target": "/run/secrets/npmrc"}],
        "build_args": select_build_args(ARGS if args is None else args, used)}
    definition.update(extra)
    return CacheKeyInput("exec", definition, (PARENT,), step_id="stage0/2")


def test_key_is_deterministic_and_prefixed() -> None:
    a, b = cache_key(run_input()), cache_key(run_input())
    assert a == b and a.startswith("sha256:") and len(a) == 71


def test_key_ignores_mapping_order() -> None:
    one = CacheKeyInput("exec", {"a": 1, "b": {"x": 1, "y": 2}})
    two = CacheKeyInput("exec", {"b": {"y": 2, "x": 1}, "a": 1})
    assert cache_key(one) == cache_key(two)


def test_unused_and_proxy_args_do_not_change_key() -> None:
    base = cache_key(run_input())
    assert cache_key(run_input({**ARGS, "UNUSED": "other"})) == base
    assert cache_key(run_input({**ARGS, "HTTP_PROXY": "http://other:8080", "no_proxy": "*"})) == base
    # Even when a caller says a step uses a proxy arg, it stays out of the key.
    assert cache_key(run_input(used=("VERSION", "HTTP_PROXY"))) == base
    raw = CacheKeyInput("exec", {"build_args": {"VERSION": "1.0", "https_proxy": "http://p"}})
    assert cache_key(raw) == cache_key(CacheKeyInput("exec", {"build_args": {"VERSION": "1.0"}}))
    assert "https_proxy" not in json.dumps(describe(raw))


def test_select_build_args() -> None:
    assert select_build_args(ARGS, ["VERSION", "MISSING", *PROXY_ARGS]) == {"VERSION": "1.0"}


def test_used_arg_changes_key() -> None:
    assert cache_key(run_input({**ARGS, "VERSION": "2.0"})) != cache_key(run_input())
    assert cache_key(run_input(used=("VERSION", "UNUSED"))) != cache_key(run_input())


@pytest.mark.parametrize("field, value", [
    ("command", ["/bin/sh", "-c", "make"]), ("env", {"PATH": "/bin"}), ("user", "app"), ("workdir", "/"),
    ("network", "none"), ("security", "insecure"), ("mounts", []),
])
def test_each_definition_field_changes_key(field: str, value: object) -> None:
    extra: dict[str, Any] = {field: value}
    assert cache_key(run_input(**extra)) != cache_key(run_input())


def test_parent_and_kind_change_key() -> None:
    item = run_input()
    other_parent = CacheKeyInput(item.kind, item.definition, ("sha256:" + "2" * 64,))
    assert cache_key(other_parent) != cache_key(item)
    assert cache_key(CacheKeyInput("file", item.definition, item.inputs)) != cache_key(item)


def test_step_id_is_not_in_key() -> None:
    item = run_input()
    moved = CacheKeyInput(item.kind, item.definition, item.inputs, item.content, "stage3/7")
    assert cache_key(moved) == cache_key(item)
    assert describe(moved)["step_id"] == "stage3/7"


def copy_input(content: tuple[tuple[str, str], ...]) -> CacheKeyInput:
    return CacheKeyInput("file", {"action": "copy", "dest": "/app/"}, (PARENT,), content, "stage0/3")


def test_content_checksum_changes_key() -> None:
    base = copy_input((("a.txt", "xxh3:" + "0" * 32), ("b.txt", "xxh3:" + "1" * 32)))
    changed = copy_input((("a.txt", "xxh3:" + "0" * 32), ("b.txt", "xxh3:" + "2" * 32)))
    extra = copy_input(base.content + (("c.txt", "xxh3:" + "3" * 32),))
    assert len({cache_key(base), cache_key(changed), cache_key(extra)}) == 3


def test_content_from_checksum_paths_output() -> None:
    assert content_from({"a": b"\x01" * 16}) == (("a", "xxh3:" + "01" * 16),)


def test_no_time_field_anywhere() -> None:
    # There is no field a time could go in: the record takes exactly these, and describe() holds no time.
    fields = CacheKeyInput.__record_fields__  # type: ignore[attr-defined]
    assert fields == ("kind", "definition", "inputs", "content", "step_id")
    with pytest.raises(TypeError):
        CacheKeyInput("file", {}, (), (), "s", 123.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        CacheKeyInput("file", {}, mtime=1.0)  # type: ignore[call-arg]
    text = json.dumps(describe(copy_input((("a", "xxh3:" + "0" * 32),))))
    for word in ("time", "mtime", "created", "modified"):
        assert word not in text
    assert set(describe(run_input())) == {"version", "key", "step_id", "kind", "definition", "inputs",
                                          "content"}


def test_content_rejects_bad_shapes() -> None:
    with pytest.raises(InternalError):
        cache_key(copy_input((("a", "x"), ("a", "y"))))
    with pytest.raises(InternalError):
        cache_key(copy_input((("a", "x", 1.0),)))  # type: ignore[arg-type]
    with pytest.raises(InternalError):
        cache_key(CacheKeyInput("", {}))


def test_secret_mount_keyed_by_id_only() -> None:
    with_value = run_input(mounts=[{"type": "secret", "id": "npmrc", "target": "/run/secrets/npmrc",
                                    "value": "hunter2", "src": "/home/me/.npmrc"}])
    assert cache_key(with_value) == cache_key(run_input())
    text = json.dumps(describe(with_value))
    assert "hunter2" not in text and "/home/me" not in text and "npmrc" in text
    assert cache_key(run_input(mounts=[{"type": "secret", "id": "other", "target": "/run/secrets/npmrc"}])
                     ) != cache_key(run_input())


def test_secret_looking_arg_value_hidden_in_describe() -> None:
    item = run_input(used=("VERSION", "API_TOKEN"))
    described = describe(item)
    assert "s3cr3t-value" not in json.dumps(described)
    assert described["definition"]["build_args"]["VERSION"] == "1.0"
    assert described["key"] == cache_key(item)
    # The value still keys the step: a new token is a new key (like any used arg).
    new_token = run_input({**ARGS, "API_TOKEN": "new"}, used=("VERSION", "API_TOKEN"))
    assert cache_key(new_token) != cache_key(item)


@pytest.mark.parametrize("name, secret", [("API_TOKEN", True), ("db_password", True), ("KEY", True),
                                          ("AWS_SECRET_ACCESS_KEY", True), ("PUBLIC_KEY", False),
                                          ("VERSION", False), ("MONKEY", False), ("AUTHOR", False)])
def test_is_secret_name(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_key_input_is_a_frozen_record() -> None:
    item = run_input()
    with pytest.raises(AttributeError):
        item.kind = "file"  # type: ignore[misc]
