"""Caps on what a Dockerfile can make the planner hold: one expanded word (`shell.MAX_EXPANSION`, 1 MiB
more than written), the whole plan (`convert_args.MAX_PLAN`, 128 MiB), ONBUILD nesting. Each is a one-line
DockerfileError naming the line, never a MemoryError or a RecursionError."""

from __future__ import annotations

import time
from collections.abc import Mapping

import pytest

from pybuild.dockerfile.instructions import to_stages
from pybuild.dockerfile.parser import parse
from pybuild.errors import DockerfileError
from pybuild.image.spec import Platform
from pybuild.plan.convert import convert
from pybuild.plan.ops import FileOp, Plan

PLATFORM = Platform("linux", "amd64")


def plan(text: str, build_args: Mapping[str, str] | None = None) -> Plan:
    return convert(to_stages(parse(text)), build_args=build_args or {}, target=None, platform=PLATFORM,
                   base_configs=lambda ref: None, build_platform=PLATFORM)


def bomb(kind: str, lines: int = 40, where: str = "FROM scratch\n") -> str:
    """`kind a0=xx` then `kind aN=$a(N-1)$a(N-1)`: 2**41 characters at the end, uncapped."""
    chain = "".join(f"{kind} a{i}=$a{i - 1}$a{i - 1}\n" for i in range(1, lines + 1))
    return f"{where}{kind} a0=xx\n{chain}RUN true\n"


def fails_at(text: str, line: int, match: str = "over 1 MiB larger than written") -> DockerfileError:
    started = time.perf_counter()
    with pytest.raises(DockerfileError, match=match) as info:
        plan(text)
    assert time.perf_counter() - started < 10
    assert info.value.span is not None and info.value.span.line == line, str(info.value)
    assert "\n" not in str(info.value)
    return info.value


def test_arg_expansion_bomb_stops_at_the_line_that_passes_1_mib() -> None:
    # line 21: a19 holds 2**20 characters (1 MiB), fine; line 22: a20 would hold 2 MiB
    error = fails_at(bomb("ARG"), line=22)
    assert str(error).startswith('Dockerfile:22:1: failed to process "$a19$a19"')


def test_env_expansion_bomb() -> None:
    fails_at(bomb("ENV"), line=22)


def test_global_arg_bomb_used_by_from() -> None:
    text = "ARG a0=xx\n" + "".join(f"ARG a{i}=$a{i - 1}$a{i - 1}\n" for i in range(1, 41)) + "FROM $a40\n"
    fails_at(text, line=21)


# `$big` just over half a MiB (lines stay under BuildKit's 64 KiB): two of them pass the cap
BIG = "ARG b=" + "x" * 32768 + "\nARG big=" + "${b}" * 16 + "y" * 100 + "\n"


@pytest.mark.parametrize("use", [
    "COPY $big$big /x", "LABEL l=$big$big", "WORKDIR /$big$big", "USER $big$big", "EXPOSE $big$big",
    "RUN --mount=type=cache,target=/$big$big true", "COPY <<EOF /f\n$big$big\nEOF", 'ENV e="$big $big"',
    "ADD --checksum=$big$big http://example.com/x /x", "ARG c=${nothing:-$big$big}",
    "ARG c=${big//?/$big}", "ARG c=${big/x/$big$big}", "VOLUME /$big$big", "STOPSIGNAL $big$big",
])
def test_every_place_that_expands_is_capped(use: str) -> None:
    fails_at(f"FROM scratch\n{BIG}{use}\n", line=4)


def test_up_to_the_cap_expands() -> None:
    p = plan("FROM scratch\nARG b=" + "x" * 32768 + "\nARG big=" + "$b" * 16 + "\nLABEL l=$big$big\n")
    assert dict(p.image.config.labels)["l"] == "x" * (1 << 20)


def test_literal_text_is_never_refused() -> None:
    body = ("y" * 1000 + "\n") * 2100  # a 2 MiB heredoc, with a variable in it
    p = plan(f"FROM scratch\nARG v=1\nCOPY <<EOF /f\n${{v}}{body}EOF\n")
    op = p.ops[p.target]
    assert isinstance(op, FileOp) and op.contents[0][1] == "1" + body


def test_the_plan_is_capped_where_lines_copy_big_values() -> None:
    # every line is under the word cap, but each ENV adds 1 MiB to every later step's environment
    lines = "".join(f"ENV e{i}=$big$big\n" for i in range(200))
    with pytest.raises(DockerfileError, match="the build plan holds over 128 MiB") as info:
        plan("FROM scratch\nARG b=" + "x" * 32768 + "\nARG big=" + "$b" * 16 + f"\n{lines}RUN true\n")
    assert info.value.span is not None and 60 < info.value.span.line < 200


def test_2000_nested_onbuild_is_buildkits_error_not_a_recursion_error() -> None:
    text = "FROM scratch\n" + "ONBUILD " * 2000 + "RUN x\n"
    with pytest.raises(DockerfileError) as info:
        plan(text)
    assert info.value.message == "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    assert info.value.span is not None and info.value.span.line == 2


def test_a_few_nested_onbuild_still_parse_as_buildkit_nests_them() -> None:
    result = parse("FROM scratch\nONBUILD ONBUILD ONBUILD RUN x\n")
    node = result.nodes[1]
    depth = 0
    while node.inner is not None:
        node, depth = node.inner, depth + 1
    assert depth == 3 and node.keyword.upper() == "RUN"
    with pytest.raises(DockerfileError, match="Chaining ONBUILD"):
        to_stages(result)
