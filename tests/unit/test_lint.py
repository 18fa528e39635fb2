"""Build-check rules: each rule fires on a bad Dockerfile, stays quiet on a good one, and the check
directive skips rules or makes them errors."""

from __future__ import annotations

import pytest

from pybuild.dockerfile.lint import lint, parse_check_directive
from pybuild.dockerfile.parser import parse
from pybuild.errors import DockerfileError


def rules(text: str) -> list[tuple[str, int]]:
    return [(d.rule, d.span.line) for d in lint(parse(text)).warnings]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FROM a AS Builder\n", [("StageNameCasing", 1)]),
        ("FROM a as b\n", [("FromAsCasing", 1)]),
        ("from a AS b\n", [("FromAsCasing", 1)]),
        ("FROM a\nrun x\nRUN y\n", [("ConsistentInstructionCasing", 2)]),
        ("FROM a AS x\nFROM b AS x\n", [("DuplicateStageName", 2)]),
        ("FROM a AS scratch\n", [("ReservedStageName", 1)]),
        ("FROM a\nCMD echo hi\n", [("JSONArgsRecommended", 2)]),
        ("FROM a\nENTRYPOINT run.sh\n", [("JSONArgsRecommended", 2)]),
        ("FROM a\nMAINTAINER me\n", [("MaintainerDeprecated", 2)]),
        ("FROM $BASE\n", [("UndefinedArgInFrom", 1)]),
        ("FROM a\nWORKDIR app\n", [("WorkdirRelativePath", 2)]),
        ('FROM a\nCMD ["a"]\nCMD ["b"]\n', [("MultipleInstructionsDisallowed", 2)]),
        ("FROM a\nENV k v\n", [("LegacyKeyValueFormat", 2)]),
        ("FROM a\nLABEL k v\n", [("LegacyKeyValueFormat", 2)]),
        ("FROM a\nARG API_TOKEN\n", [("SecretsUsedInArgOrEnv", 2)]),
        ("FROM a\nENV DB_PASSWORD=x\n", [("SecretsUsedInArgOrEnv", 2)]),
        ("FROM a\nEXPOSE 80/TCP\n", [("ExposeProtoCasing", 2)]),
        ("FROM --platform=linux/amd64 a\n", [("FromPlatformFlagConstDisallowed", 1)]),
        ("FROM --platform=$TARGETPLATFORM a\n", [("RedundantTargetPlatform", 1)]),
        ("FROM a\nRUN a \\\n\n  b\n", [("NoEmptyContinuation", 4)]),
    ],
)
def test_rule_fires(text: str, expected: list[tuple[str, int]]) -> None:
    assert rules(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "ARG BASE=a\nFROM $BASE AS b\nWORKDIR /app\nWORKDIR sub\nCMD [\"x\"]\n",
        "FROM --platform=$BUILDPLATFORM a AS build\nENV PUBLIC_KEY=x\nEXPOSE 80/tcp 443\n",
        "from a as b\nrun x\n",
        "FROM ${TARGETPLATFORM:-x}\n",
    ],
)
def test_good_dockerfiles_are_quiet(text: str) -> None:
    assert rules(text) == []


def test_warning_carries_link_and_span() -> None:
    (warning,) = lint(parse("FROM a\nMAINTAINER me\n", "df")).warnings
    assert str(warning.span) == "df:2:1"
    assert warning.url == "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/"


def test_check_directive_skip_and_error() -> None:
    text = "# check=skip=JSONArgsRecommended\nFROM a\nCMD x\nMAINTAINER me\n"
    assert [d.rule for d in lint(parse(text)).warnings] == ["MaintainerDeprecated"]
    assert lint(parse("# check=skip=all\nFROM a\nCMD x\n")).warnings == ()
    failing = lint(parse("# check=error=true\nFROM a\nCMD x\n"))
    assert failing.failed and len(failing.warnings) == 1
    assert not lint(parse("# check=error=true\nFROM a\nCMD [\"x\"]\n")).failed


@pytest.mark.parametrize("value", ["skip", "error=maybe", "colour=red"])
def test_bad_check_directive(value: str) -> None:
    with pytest.raises(DockerfileError):
        parse_check_directive(value)
