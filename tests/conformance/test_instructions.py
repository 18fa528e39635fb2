"""Conformance: BuildKit's instruction-level cases (`instructions/parse_test.go`, `parse_heredoc_test.go`).

Dockerfile cases go through the real parser and `to_stages`; `ast_args` cases build the node by hand,
as BuildKit's tests do.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest

from pybuild.dockerfile.ast import Node, ParseResult
from pybuild.dockerfile.commands import ArgCommand, CopyCommand, HealthcheckCommand, RunCommand
from pybuild.dockerfile.instructions import parse_instruction, to_stages
from pybuild.errors import DockerfileError
from pybuild.source import Span
from tests.conftest import conformance_path


@cache
def _cases() -> dict[str, Any]:
    path = conformance_path("buildkit-parser", "extracted", "instruction_cases.json")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def cases(section: str) -> Any:
    return _cases()[section]


def _params(section: str, case_id: Callable[[dict[str, Any]], str]) -> list[Any]:
    """Parametrize over `section`."""
    return [pytest.param(case, id=case_id(case)) for case in cases(section)]


def parse(text: str) -> ParseResult:
    from pybuild.dockerfile.parser import parse as parse_text

    return parse_text(text)


def first_command(text: str) -> Any:
    """The typed first instruction of `text`."""
    result = parse(text)
    return parse_instruction(result.nodes[0], result.source)


def expect_error(text: str) -> DockerfileError:
    result = parse(text)  # the parser must accept it: these are instruction-level errors
    with pytest.raises(DockerfileError) as info:
        to_stages(result)
    return info.value


def hand_node(instruction: str, args: list[str], *, json_form: bool = False) -> Node:
    return Node(
        keyword=instruction, args=tuple(args), flags=(), json=json_form, original=instruction,
        span=Span("Dockerfile", 1, 1),
    )


@pytest.mark.parametrize("case", _params("arity_errors", lambda c: c["dockerfile"]))
def test_arity_errors(case: dict[str, Any]) -> None:
    err = expect_error("FROM scratch\n" + case["dockerfile"] + "\n")
    assert case["expected_error"] in err.message
    assert err.span is not None and err.span.line == 2


@pytest.mark.parametrize("case", _params("node_level_errors", lambda c: c["instruction"] + repr(c["ast_args"])))
def test_node_level_errors(case: dict[str, Any]) -> None:
    with pytest.raises(DockerfileError) as info:
        parse_instruction(hand_node(case["instruction"], case["ast_args"]))
    assert case["expected_error"] in info.value.message


@pytest.mark.parametrize("case", _params("error_cases", lambda c: c["name"] + ":" + c["dockerfile"][:12]))
def test_error_cases(case: dict[str, Any]) -> None:
    err = expect_error("FROM scratch\n" + case["dockerfile"] + "\n")
    assert case["expected_error"] in err.message
    assert err.span is not None and err.source is not None


def test_healthcheck_shell_form() -> None:
    case = cases("healthcheck_shell_form")
    command = parse_instruction(hand_node("HEALTHCHECK", case["ast_args"]))
    assert isinstance(command, HealthcheckCommand)
    assert list(command.test) == case["expected_test"]


def test_healthcheck_shell_form_parsed() -> None:
    command = first_command("HEALTHCHECK CMD hello world\n")
    assert isinstance(command, HealthcheckCommand)
    assert list(command.test) == cases("healthcheck_shell_form")["expected_test"]


@pytest.mark.parametrize("case", _params("healthcheck_interval", lambda c: c["value"]))
def test_healthcheck_interval(case: dict[str, Any]) -> None:
    text = f"HEALTHCHECK --interval={case['value']} CMD true\n"
    if case.get("ok"):
        assert isinstance(first_command(text), HealthcheckCommand)
    else:
        assert case["expected_error_contains"] in expect_error("FROM scratch\n" + text).message


def test_run_flags_used() -> None:
    case = cases("run_flags_used")
    command = first_command(case["dockerfile"] + "\n")
    assert isinstance(command, RunCommand)
    assert sorted(command.flags_used) == sorted(case["flags_used"])


def test_doc_comments() -> None:
    case = cases("doc_comments")
    stages = to_stages(parse(case["dockerfile"]))
    expected = case["expected"]
    assert stages.stages[0].doc == expected["stage0_doc"]
    meta = [{"key": a.key, "doc": a.doc} for cmd in stages.meta_args for a in cmd.args]
    assert meta == expected["meta_args"]
    stage_args = [
        {"key": a.key, "doc": a.doc}
        for cmd in stages.stages[0].commands if isinstance(cmd, ArgCommand) for a in cmd.args
    ]
    assert stage_args == expected["stage0_args"]


@pytest.mark.parametrize("case", _params("copy_heredoc_cases", lambda c: c["dockerfile"][:30]))
def test_copy_heredoc_cases(case: dict[str, Any]) -> None:
    command = first_command(case["dockerfile"] + "\n")
    assert isinstance(command, CopyCommand)
    assert command.dest == case["dest"]
    assert list(command.sources) == case["source_paths"]
    contents = [{"Path": c.path, "Data": c.data, "Expand": c.expand} for c in command.source_contents]
    assert contents == case["source_contents"]


@pytest.mark.parametrize("case", _params("run_heredoc_cases", lambda c: c["dockerfile"][:30]))
def test_run_heredoc_cases(case: dict[str, Any]) -> None:
    command = first_command(case["dockerfile"] + "\n")
    assert isinstance(command, RunCommand)
    assert command.prepend_shell is case["prepend_shell"]
    assert list(command.cmd_line) == case["cmdline"]
    files = [{"Name": f.name, "Data": f.data, "Chomp": f.chomp} for f in command.files]
    assert files == case["files"]
