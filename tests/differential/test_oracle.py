"""Differential test: pybuild's parser against BuildKit's, through the PyPI `dockerfile` package.

The package wraps BuildKit's Go parser (a test-only oracle; product code never imports it). For every input,
`to_json(parse(x))` must agree with the package's `Command`s on cmd, sub_cmd, json, original, start/end line,
flags, value and heredocs (name, file descriptor, content); when one side raises, the other must too.

Inputs: the fixtures under `fixtures/`, BuildKit's golden Dockerfiles, a list of regressions (each once a
difference), and 2,000 generated Dockerfiles (`strategies.dockerfiles`, derandomized so CI is reproducible).

The oracle's documented gap is its C boundary: it drops everything after a NUL byte (inputs with NUL are not
compared; the generator never makes them), and when Go splits a multi-byte character into invalid UTF-8
(HEALTHCHECK splitting on the byte 0x85 of U+0085) the wrapper raises UnicodeDecodeError instead of
answering; such inputs are not compared either.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from pybuild.errors import DockerfileError
from tests.conftest import CONFORMANCE, REPO
from tests.differential.strategies import dockerfiles

pytestmark = pytest.mark.oracle

FIXTURES = sorted((REPO / "fixtures").glob("*/Dockerfile"))
GOLDEN = sorted((CONFORMANCE / "buildkit-parser").glob("testfile*/**/Dockerfile"))

# Inputs that once differed (see the report in .helpers/diffs.md); each must keep agreeing.
REGRESSIONS = [
    "RUN a\\\nRUN b\n",
    "RUN a \\",
    "RUN x\r\nRUN y\r\n",
    "FOO bar\nFOO\n",
    "ONBUILD\n",
    "ONBUILD ONBUILD RUN x\n",
    "onbuild --f RUN <<EOF\nhi\nEOF\n",
    "ONBUILD ENV a=b c=d\n",
    "ENV a= b=\n",
    "ENV =a\n",
    "LABEL a=b=c\n",
    "ENV a\\ b=c\n",
    "RUN\u00a0a\n",
    "RUN a\u2028b\n",
    "RUN a\x0bb\x0c\n",
    "RUN a\rb\n",
    "RUN a\x85b\n",
    "RUN a\x1cb\n",
    "CMD [\"a\"] x\n",
    "CMD []\n",
    "CMD [1]\n",
    "RUN --a=\"b c\" --b='d e' --c=f\\ g -- x\n",
    "RUN -a b\n",
    "--x RUN y\n",
    "HEALTHCHECK FOO bar baz\n",
    "HEALTHCHECK CMD\n",
    "RUN <<-EOF\n\tx\n\tEOF\n",
    "RUN <<EOF\r\nx\r\nEOF\r\n",
    "RUN <<EOF 3<<-'B'\nx\nEOF\n\tq\nB\n",
    "RUN <<\"\"\nx\n\n",
    "RUN <<E<F\n1\nE<F\n",
    "RUN <<EOF\\\nx\nEOF\n",
    "COPY <<a\\ b /x\nq\na b\n",
    "RUN <<\"E\"OF\n$x\nEOF\n",
    "USER <<EOF\nx\nEOF\n",
    "RUN [\"a\", <<EOF]\nx\nEOF\n",
    "RUN <<EOF\nEOF",
    "RUN <<EOF\n",
    "# escape=`\nRUN <<EOF `\n  x\n1\nEOF\n",
    "# escape=`\nRUN a ``\nRUN b\n",
    "# syntax=x\n# escape=`\nRUN a `\n b\n",
    "# foo=bar\n# escape=`\nRUN a `\n b\n",
    "\n# escape=`\nRUN a `\n b\n",
    "# ESCAPE = ` \nRUN a `\n b\n",
    "# escape=`\n# escape=`\nRUN a\n",
    "# escape=x\nRUN a\n",
    "\ufeffRUN a\n",
    "\\\nRUN b\n",
    "  \\  \nRUN b\n",
    "RUN a \\\n\n  # c\n b\n",
    "ENV a\n",
    "ENV a=b c\n",
    "\n",
    "# only a comment\n",
    # found by the generator (see .helpers/diffs.md)
    "CMD [\"a\"]]\n",
    "CMD [ ]x\n",
    "RUN [1] x\n",
    "CMD [\"\\ud800\"]\n",
    "CMD [1e999]\n",
    "CMD [NaN]\n",
    "RUN <<'' a\n",
    "HEALTHCHECK cmD \xa0\x0c@\xa0x\r\xa0\n",
    "HEALTHCHECK CMD\t\x0b [\"a\"] x\n",
    "\\",
    "\\\n#-run ",
    "RUN <<EOF \u2029x\nx\nEOF\n",
    "RUN <<-|c\u2029fU\nx\n|c\n",
    "RUN <<EOF ${a\nx\nEOF\n",
    "RUN <<EOF ${}\nx\nEOF\n",
    "RUN <<EOF ${a x}\nx\nEOF\n",
    "RUN <<EOF ${a:-${b}\nx\nEOF\n",
    "RUN <<EOF ${a:-${b}} \"${c:-\\\"}\"} '${d'\nx\nEOF\n",
    "RUN <<EOF ${1x} $(x\nx\nEOF\n",
    "RUN <<EOF ${a:-x y} ${@} ${中} $\nx\nEOF\n",
    "COPY <<\ufeff",
    "COPY <<\ufeffA /x\nq\nA\n",
]

# Where BuildKit changed after v0.12.5 (the oracle) and pybuild follows the newer BuildKit that the
# conformance data comes from: each input with what pybuild must make of it, as (cmd, value, heredoc names)
# per instruction. The oracle must still disagree (else the entry is stale), and the generator avoids these
# spots (strategies._avoid_version_gaps).
VERSION_GAPS = [
    # blanks after `<<` (conformance heredoc_token: "<< EOF" is a heredoc): v0.12.5 sees two words
    ("RUN << EOF\nx\nEOF\n", [("RUN", ["<< EOF"], ["EOF"])]),
    ("RUN <<- EOF\n\tx\n\tEOF\n", [("RUN", ["<<- EOF"], ["EOF"])]),
    # `${v#p}`, `${v%p}`, `${v/p/r}` are valid now; v0.12.5's lexer fails on them and drops the heredocs
    ("RUN <<EOF ${a#b}\nx\nEOF\n", [("RUN", ["<<EOF ${a#b}"], ["EOF"])]),
    ("RUN <<EOF ${a%b} ${a/b/c}\nx\nEOF\n", [("RUN", ["<<EOF ${a%b} ${a/b/c}"], ["EOF"])]),
    # ... and `${v:#p}` became an error, so that line opens no heredoc any more
    ("RUN <<EOF ${a:#b}\nx\nEOF\n", [("RUN", ["<<EOF ${a:#b}"], []), ("x", [""], []), ("EOF", [""], [])]),
    # `check` is a directive now: it no longer ends the directive block before `escape`
    ("# check=skip=all\n# escape=`\nRUN a `\n b\n", [("RUN", ["a  b"], [])]),
    # the directive key may follow any Unicode blank (TrimLeftFunc(unicode.IsSpace)), not just RE2's \s
    ("#\u00a0escape=`\nRUN a `\n b\n", [("RUN", ["a  b"], [])]),
    ("#\x0bescape=`\nRUN a `\n b\n", [("RUN", ["a  b"], [])]),
]


def _oracle() -> ModuleType:
    """The `dockerfile` package; missing fails in CI and skips elsewhere."""
    if os.environ.get("CI"):
        try:
            return importlib.import_module("dockerfile")
        except ImportError as exc:  # pragma: no cover - CI installs it
            pytest.fail(f"the oracle (PyPI `dockerfile`) is required in CI: {exc}")
    reason = "the oracle (PyPI `dockerfile`) is not installed"
    module: ModuleType = pytest.importorskip("dockerfile", reason=reason)
    return module


def _c_string(value: Any) -> Any:
    """`value` as it comes through the oracle's C boundary: every string cut at its first NUL."""
    if isinstance(value, str):
        return value.split("\x00", 1)[0]
    if isinstance(value, (list, tuple)):
        return type(value)(_c_string(item) for item in value)
    if isinstance(value, dict):
        return {key: _c_string(item) for key, item in value.items()}
    return value


def _norm(commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("cmd", "sub_cmd", "json", "original", "start_line", "end_line", "flags", "value")
    return [
        {key: cmd[key] for key in keys}
        | {"heredocs": [(doc["name"], doc["file_descriptor"], doc["content"]) for doc in cmd["heredocs"]]}
        for cmd in commands
    ]


def oracle_view(oracle: ModuleType, text: str) -> list[dict[str, Any]] | str | None:
    """What the oracle makes of `text`: normalized commands, "error: ...", or None when it cannot say."""
    try:
        commands = oracle.parse_string(text)
    except oracle.GoParseError as exc:
        return f"error: {exc}"
    except UnicodeDecodeError:
        # Go split a multi-byte character (HEALTHCHECK splits on the byte 0x85 of U+0085) and the
        # wrapper cannot turn the invalid UTF-8 into a str: the C-boundary gap again, not a parse result.
        return None
    return _norm(
        [
            cmd._asdict()
            | {
                "flags": list(cmd.flags),
                "value": list(cmd.value),
                "heredocs": [doc._asdict() for doc in cmd.heredocs],
            }
            for cmd in commands
        ]
    )


def pybuild_view(data: str | bytes) -> list[dict[str, Any]] | str:
    """What pybuild makes of `data`, in the same shape."""
    from pybuild.dockerfile.astjson import to_json
    from pybuild.dockerfile.parser import parse

    try:
        result = parse(data)
    except DockerfileError as exc:
        return f"error: {exc}"
    # The oracle cuts strings at NUL (JSON "\u0000" decodes to one); model that, and only that.
    commands: list[dict[str, Any]] = _c_string(_norm(to_json(result)))
    return commands


def assert_agree(oracle: ModuleType, text: str, data: str | bytes | None = None) -> None:
    expected = oracle_view(oracle, text)
    if expected is None:
        return
    actual = pybuild_view(text if data is None else data)
    if isinstance(expected, str) or isinstance(actual, str):
        # Both must fail (messages may differ), or neither.
        assert isinstance(expected, str) == isinstance(actual, str), (
            f"input {text!r}\n oracle: {expected}\npybuild: {actual}"
        )
        return
    assert actual == expected, f"input {text!r}"


@pytest.mark.parametrize("path", FIXTURES, ids=[path.parent.name for path in FIXTURES])
def test_fixture(path: Path) -> None:
    oracle = _oracle()
    data = path.read_bytes()
    text = data.decode("utf-8")
    assert "\x00" not in text
    assert_agree(oracle, text, data)
    result = oracle.parse_string(text)
    known = set(oracle.all_cmds())
    # Fixtures are realistic: BuildKit parses them and every instruction is a real one.
    unknown = [cmd.cmd for cmd in result if cmd.cmd.lower() not in known]
    assert not unknown, f"unknown instructions in {path}: {unknown}"


def test_fixture_count() -> None:
    assert len(FIXTURES) >= 16, [path.parent.name for path in FIXTURES]


@pytest.mark.parametrize("path", GOLDEN, ids=[f"{p.parent.parent.name}/{p.parent.name}" for p in GOLDEN])
def test_golden(path: Path) -> None:
    oracle = _oracle()
    data = path.read_bytes()
    text = data.decode("utf-8", "surrogateescape")
    assert "\x00" not in text  # no golden file holds a raw NUL, which the oracle's C boundary would cut
    assert_agree(oracle, text, data)


@pytest.mark.parametrize("text", REGRESSIONS)
def test_regression(text: str) -> None:
    assert_agree(_oracle(), text)


@pytest.mark.parametrize(("text", "expected"), VERSION_GAPS)
def test_version_gap(text: str, expected: list[tuple[str, list[str], list[str]]]) -> None:
    """pybuild keeps the newer behaviour, and the oracle still shows the old one (else: drop the entry)."""
    actual = pybuild_view(text)
    assert not isinstance(actual, str), actual
    assert [(cmd["cmd"], cmd["value"], [doc[0] for doc in cmd["heredocs"]]) for cmd in actual] == expected
    assert oracle_view(_oracle(), text) != actual


@settings(
    max_examples=2000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
@given(text=dockerfiles())
def test_generated(text: str) -> None:
    assert_agree(_oracle(), text)
