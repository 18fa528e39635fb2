"""Unit tests for the Dockerfile parser: grammar, table cache, scanner rules, errors, robustness."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pybuild.dockerfile import parser as parser_module
from pybuild.dockerfile.ast import dump
from pybuild.dockerfile.parser import build_lark, grammar_path, parse, parse_words
from pybuild.dockerfile.scanner import scan_directives
from pybuild.dockerfile.words import split_command
from pybuild.errors import DockerfileError

REPO = Path(__file__).resolve().parents[2]


def test_grammar_builds_strict() -> None:
    lark = build_lark(strict=True)  # a shift/reduce or reduce/reduce conflict raises here
    assert lark.options.parser == "lalr"


def test_grammar_found_in_checkout() -> None:
    assert grammar_path() == str(REPO / "grammar" / "dockerfile.lark")


def test_lark_and_cached_driver_agree() -> None:
    from lark import Token

    tree = build_lark().parse([Token("ONBUILD", "x"), Token("RUN", "y"), Token("TEXT", "z"), Token("EOL", "")])
    assert tree.children[0].data == "onbuild"
    assert dump(parse("ONBUILD RUN z")) == '(onbuild (run "z"))\n'


def test_table_cache_written_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    parser_module.load_table()
    files = list((tmp_path / "pybuild").glob("dockerfile-lalr-*.json"))
    assert len(files) == 1
    files[0].write_text("{not json")  # corrupt: rebuilt, not fatal
    table = parser_module.load_table()
    assert json.loads(files[0].read_text())["format"] == "1"
    assert table.states


def test_table_cache_unwritable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # mkdir under a file fails
    assert parser_module.load_table().states


def test_warm_start_does_not_import_lark(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    code = (
        "import sys\nfrom pybuild.dockerfile.parser import parse\nparse('FROM a\\nRUN b')\n"
        "print('lark' in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("from a", '(from "a")\n'),
        ("FOO bar baz", '(foo "")\n'),
        ("FROM a\nFOO", '(from "a")\n(foo "")\n'),
        ("COPY --from=b --chown=1:1 x y", '(copy ["--from=b" "--chown=1:1"] "x" "y")\n'),
        ("COPY --x='a b' -- --y c", '(copy ["--x=a b"] "--y" "c")\n'),
        ("COPY --x=\u00e9 d", '(copy ["--x=\u00c3\u00a9"] "d")\n'),
        ("ONBUILD RUN echo hi", '(onbuild (run "echo hi"))\n'),
        ("ONBUILD", "(onbuild)\n"),
        ("HEALTHCHECK NONE", '(healthcheck "NONE")\n'),
        ('HEALTHCHECK --interval=5s CMD ["a", "b"]', '(healthcheck ["--interval=5s"] "CMD" "a" "b")\n'),
        ("ENV A=1 B='x y'", "(env \"A\" \"1\" \"=\" \"B\" \"'x y'\" \"=\")\n"),
        ("ENV A hello world", '(env "A" "hello world" "")\n'),
        ('ARG a="1 2" b', '(arg "a=\\"1 2\\"" "b")\n'),
        # BuildKit decodes the first JSON value and ignores what follows (json.Decoder, not Unmarshal)
        ("CMD [\"a\"] trailing", '(cmd "a")\n'),
        ("CMD [\"a\", tail", '(cmd "[\\"a\\", tail")\n'),
        ("RUN a \\\n  # comment\n  b", '(run "a   b")\n'),
        ("# escape=`\nRUN a `\n b", '(run "a  b")\n'),
        ("RUN a \\\\", '(run "a \\\\\\\\")\n'),
        ("VOLUME [\"/a\", \"/b\"]", '(volume "/a" "/b")\n'),
        ("EXPOSE 80\t443", '(expose "80" "443")\n'),
    ],
)
def test_dump_shapes(text: str, expected: str) -> None:
    assert dump(parse(text)) == expected


def test_node_fields() -> None:
    text = "# doc one\n# doc two\n  run --mount=type=cache,target=/x \\\n    make\nCOPY <<EOF /d\nhi\nEOF\n"
    run, copy = parse(text).nodes
    assert (run.keyword, run.cmd, run.flags) == ("run", "run", ("--mount=type=cache,target=/x",))
    assert (run.span.line, run.span.col, run.span.end_line) == (3, 3, 4)
    assert run.comments == ("doc one", "doc two")
    assert run.original == "run --mount=type=cache,target=/x     make"
    assert (copy.span.line, copy.span.end_line) == (5, 7)
    assert copy.heredocs[0].content == "hi\n"
    assert copy.original == "COPY <<EOF /d\nhi\nEOF\n"


def test_onbuild_heredoc() -> None:
    node = parse("ONBUILD RUN <<EOF\nhi\nEOF\n").nodes[0]
    assert node.inner is not None and node.inner.cmd == "run"
    assert [doc.name for doc in node.heredocs] == ["EOF"]
    assert node.span.end_line == 3


def test_heredoc_only_for_capable_instructions() -> None:
    nodes = parse("USER <<X\nX\n").nodes
    assert [node.cmd for node in nodes] == ["user", "x"]


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("FROM a\nRUN <<EOF\nno end\n", "unterminated heredoc", 2),
        ("# escape=\\\n# escape=`\nFROM a", "only one escape parser directive can be used", 2),
        ("# syntax=a\n# SYNTAX=b\nFROM a", "only one syntax parser directive can be used", 2),
        ("# escape=x\nFROM a", "invalid escape token", 1),
        ("FROM a\nENV PATH", "ENV must have two arguments", 2),
        ("FROM a\nLABEL a=b c", "can't find =", 2),
        ('FROM a\nCMD ["a", 1]', "not a string array", 2),
        ("\n\n# only\n", "file with no instructions", 4),
        ("FROM a\nRUN " + "x" * 70000, "max allowed size of 65535", 2),
    ],
)
def test_errors_have_location(text: str, message: str, line: int) -> None:
    with pytest.raises(DockerfileError, match=message) as info:
        parse(text)
    assert info.value.span is not None and info.value.span.line == line
    assert info.value.source is not None and info.value.source.name == "Dockerfile"


def test_directives() -> None:
    result = parse("#Syntax=docker/dockerfile:1\n# ESCAPE=`\n#check=skip=all\nFROM a")
    assert result.directives.syntax == "docker/dockerfile:1"
    assert result.directives.escape == "`"
    assert result.directives.check == "skip=all"
    assert parse("FROM a\n# escape=`\nRUN a \\\nb").directives.escape == "\\"
    assert parse("\n# escape=`\nFROM a").directives.escape == "\\"
    assert scan_directives("# escape=`\n").escape == "`"


def test_bytes_bom_and_invalid_utf8() -> None:
    result = parse(b"\xef\xbb\xbfFROM a\nRUN echo \xff\x00")
    assert dump(result) == '(from "a")\n(run "echo \\xff\\x00")\n'


def test_empty_continuation_warning() -> None:
    warnings = parse("FROM a\nRUN a \\\n\n b\n").warnings
    assert len(warnings) == 1
    assert warnings[0].rule == "NoEmptyContinuation"
    assert warnings[0].message == "Empty continuation line found in: RUN a  b"


def test_split_command_and_words() -> None:
    assert split_command("COPY --a=1 -- --b x") == ("COPY", ("--a=1",), "--b x")
    assert split_command("RUN --") == ("RUN", (), "")
    assert parse_words("a `b c", "`") == ["a", "`b", "c"]
    assert parse_words("a\\") == ["a"]
    assert parse_words("'open quote") == ["'open quote"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_bytes_parse_or_dockerfile_error(data: bytes) -> None:
    try:
        parse(data)
    except DockerfileError:
        pass


_ALPHABET = st.sampled_from(
    ["FROM ", "RUN ", "COPY ", "ENV ", "ONBUILD ", "HEALTHCHECK ", "a", "=", " ", "\\", "\n", "#", "'", '"',
     "<<EOF", "EOF", "--x", "[", "]", '"s"', ",", "<<-", "\t", "`", "\r"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ALPHABET, max_size=40).map("".join))
def test_dockerfile_like_text_parse_or_dockerfile_error(text: str) -> None:
    try:
        result = parse(text)
    except DockerfileError:
        return
    for node in result.nodes:
        assert node.span.line <= node.span.end_line


@pytest.mark.oracle
@pytest.mark.parametrize(
    "text",
    [
        "FROM a AS b\nRUN x \\\n  y\nCOPY --from=b /a /b\nCMD [\"a\", \"b\"]\nUSER me",
        "FROM a\nRUN <<EOF cat\nhi\nEOF\nCOPY <<A <<B /x\na\nA\nb\nB\n",
        "# c\nFROM a\n\n# d\nLABEL a=b c='d e'\nEXPOSE 1 2\nHEALTHCHECK CMD x\nFOO bar",
    ],
)
def test_matches_buildkit_oracle(text: str) -> None:
    dockerfile = pytest.importorskip("dockerfile")
    theirs = [(c.cmd, c.flags, c.json, c.start_line, c.end_line) for c in dockerfile.parse_string(text)]
    ours = [(n.keyword, n.flags, n.json, n.start_line, n.end_line) for n in parse(text).nodes]
    assert ours == theirs
