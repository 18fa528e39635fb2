"""Every section of extracted/parser_unit_cases.json (BuildKit parser unit-test tables)."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest

from pybuild.dockerfile.ast import Heredoc
from pybuild.dockerfile.parser import (
    chomp_heredoc_content,
    detect_syntax,
    heredocs_from_line,
    parse,
    parse_directive,
    parse_directives,
    parse_heredoc,
    parse_json_array,
    parse_words,
)
from pybuild.errors import DockerfileError
from tests.conftest import conformance_path

_FILE = ("buildkit-parser", "extracted", "parser_unit_cases.json")


@cache
def _load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(conformance_path(*_FILE).read_text("utf-8"))
    return data


def _section(key: str, sub: str | None = None) -> list[Any]:
    """Cases for parametrize at collection time."""
    data = _load()[key]
    if sub is not None:
        data = data.get(sub, []) if isinstance(data, dict) else []
    elif isinstance(data, dict):
        data = data.get("cases", [])
    assert data, f"no cases in {key}" + (f".{sub}" if sub else "")
    return list(data)


@pytest.mark.parametrize("case", _section("parse_words"))
def test_parse_words(case: dict[str, Any]) -> None:
    assert parse_words(case["input"]) == case["expected"]


@pytest.mark.parametrize("case", _section("json_arrays", "valid"))
def test_json_valid(case: dict[str, Any]) -> None:
    assert parse_json_array(case["input"]) == case["expected"]


@pytest.mark.parametrize("text", _section("json_arrays", "invalid"))
def test_json_invalid(text: str) -> None:
    with pytest.raises(DockerfileError, match="string"):
        parse_json_array(text)


def test_empty_continuation_warnings() -> None:
    case = _load()["empty_continuation_warnings"]
    result = parse(case["dockerfile"])
    assert len(result.warnings) == case["expected_warning_count"]
    for warning, needles in zip(result.warnings, case["warnings_contain"], strict=True):
        assert warning.rule == "NoEmptyContinuation"
        assert warning.message.startswith("Empty continuation line found in")
        for needle in needles:
            assert needle in warning.message


@pytest.mark.parametrize("size", [65536, 70000])
def test_max_line_length(size: int) -> None:
    expected = _load()["max_line_length"]["expected_error"]
    with pytest.raises(DockerfileError, match=expected):
        parse("FROM busybox\nRUN echo " + "x" * (size - 9) + "\n")


def test_line_just_under_max_length() -> None:
    _load()
    result = parse("FROM busybox\nRUN " + "x" * (65535 - 4) + "\n")
    assert len(result.nodes[1].args[0]) == 65531


def _heredoc(doc: dict[str, Any]) -> Heredoc:
    return Heredoc(doc["Name"], doc["FileDescriptor"], doc["Expand"], doc["Chomp"], doc["Content"])


@pytest.mark.parametrize("case", _section("heredoc_extraction"))
def test_heredoc_extraction(case: dict[str, Any]) -> None:
    nodes = parse(_load()["heredoc_extraction"]["dockerfile"]).nodes
    expected = tuple(_heredoc(doc) for doc in case["heredocs"] or ())
    assert nodes[case["child_index"]].heredocs == expected


def test_heredoc_extraction_count() -> None:
    section = _load()["heredoc_extraction"]
    assert len(parse(section["dockerfile"]).nodes) == len(section["cases"]) + 1


def test_heredoc_json_form() -> None:
    nodes = parse(_load()["heredoc_json_form"]["dockerfile"]).nodes
    assert [node.heredocs for node in nodes[1:4]] == [(), (), ()]
    assert all(node.json for node in nodes[1:4])


def test_heredoc_chomp() -> None:
    case = _load()["heredoc_chomp"]
    assert chomp_heredoc_content(case["input"]) == case["expected"]


@pytest.mark.parametrize("word", _section("heredoc_token", "valid"))
def test_heredoc_token_valid(word: str) -> None:
    doc = parse_heredoc(word)
    assert doc is not None and doc.name == "EOF"


@pytest.mark.parametrize("word", _section("heredoc_token", "invalid"))
def test_heredoc_token_invalid(word: str) -> None:
    with pytest.raises(DockerfileError):
        parse_heredoc(word)


@pytest.mark.parametrize("word", _section("heredoc_token", "not_heredoc"))
def test_heredoc_token_not_heredoc(word: str) -> None:
    assert parse_heredoc(word) is None


@pytest.mark.parametrize("case", _section("heredocs_from_line"))
def test_heredocs_from_line(case: dict[str, Any]) -> None:
    assert [doc.name for doc in heredocs_from_line(case["line"])] == case["names"]


@pytest.mark.parametrize("case", _section("directives", "escape_cases"))
def test_escape_directives(case: dict[str, Any]) -> None:
    found = [{"name": match.name, "value": match.cmdline} for match in parse_directives(case["input"])]
    assert found == case["expected"]


def _input(case: dict[str, Any]) -> str | bytes:
    text: str = case["input"]
    if case.get("input_bytes_prefix_utf8_bom"):
        return b"\xef\xbb\xbf" + text.encode()
    return text


@pytest.mark.parametrize("case", _section("directives", "detect_syntax_cases"))
def test_detect_syntax(case: dict[str, Any]) -> None:
    match = detect_syntax(_input(case))
    assert (match is not None) == case["found"]
    if match is not None:
        assert match.value == case["ref"]
        if "cmdline" in case:
            assert match.cmdline == case["cmdline"]
        if "line" in case:
            assert match.line == case["line"]
    elif "ref" in case:
        assert case["ref"] == ""


@pytest.mark.parametrize("case", _section("directives", "check_directive_cases"))
def test_check_directive(case: dict[str, Any]) -> None:
    match = parse_directive("check", _input(case))
    assert (match is not None) == case["found"]
    if match is not None:
        assert match.cmdline.split(" ", 1)[0] == case["value"]
        if "cmdline" in case:
            assert match.cmdline == case["cmdline"]
        if "line" in case:
            assert match.line == case["line"]


@pytest.mark.parametrize("case", _section("name_val"))
def test_name_val(case: dict[str, Any]) -> None:
    text = f"FROM scratch\n{case['instruction']} {case['input']}\n"
    if case.get("expected_error"):
        with pytest.raises(DockerfileError):
            parse(text)
        return
    assert list(parse(text).nodes[1].args) == case["expected_nodes"]
