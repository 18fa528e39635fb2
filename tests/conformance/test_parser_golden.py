"""BuildKit's parser golden files: testfiles (dump equality), testfiles-negative, testfile-line."""

from __future__ import annotations

import json

import pytest

from pybuild.dockerfile.ast import dump
from pybuild.dockerfile.parser import parse
from pybuild.errors import DockerfileError
from tests.conftest import conformance_path


def _cases(folder: str) -> list[str]:
    return sorted(path.name for path in conformance_path("buildkit-parser", folder).iterdir())


@pytest.mark.parametrize("case", _cases("testfiles"))
def test_golden_dump(case: str) -> None:
    folder = conformance_path("buildkit-parser", "testfiles", case)
    expected = (folder / "result").read_bytes().decode("utf-8", "surrogateescape")
    result = parse((folder / "Dockerfile").read_bytes())
    assert dump(result) == expected


@pytest.mark.parametrize("case", _cases("testfiles-negative"))
def test_negative(case: str) -> None:
    dockerfile = conformance_path("buildkit-parser", "testfiles-negative", case, "Dockerfile")
    with pytest.raises(DockerfileError) as info:
        parse(dockerfile.read_bytes())
    assert info.value.span is not None
    assert info.value.source is not None


def test_line_numbers() -> None:
    cases = json.loads(
        conformance_path("buildkit-parser", "extracted", "parser_unit_cases.json").read_text("utf-8")
    )["line_numbers"]
    result = parse(conformance_path("buildkit-parser", cases["dockerfile"]).read_bytes())
    assert result.start_line == cases["ast_start_line"]
    assert result.end_line == cases["ast_end_line"]
    assert [[node.start_line, node.end_line] for node in result.nodes] == cases["children"]
