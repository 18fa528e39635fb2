"""The pieces around a build that need no runtime: step names, stage membership, the plan memo, step cache
keys, docker-build flag parsing and the bare `pybuild -t ...` form."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pybuild.cache.keys import cache_key
from pybuild.cli.buildcmd import build_args, labels
from pybuild.cli.main import _with_command, build_parser
from pybuild.dockerfile.ast import ParseResult
from pybuild.dockerfile.instructions import Stages, to_stages
from pybuild.dockerfile.parser import parse
from pybuild.errors import ConfigError
from pybuild.image.spec import Platform
from pybuild.names import stage_labels, stage_ops, step_names
from pybuild.plan.convert import convert
from pybuild.plan.ops import ContextSourceOp, ExecOp, FileOp, Plan
from pybuild.planmemo import PlanMemo, load_memo, memo_key, save_memo
from pybuild.steps import key_input

PLATFORM = Platform("linux", "amd64")

TEXT = """\
FROM busybox AS a
RUN echo a > /a
FROM busybox
WORKDIR /app
COPY --from=a /a /a
COPY src/ ./
"""


def planned(text: str = TEXT) -> tuple[Plan, Stages, ParseResult]:
    source = parse(text)
    stages = to_stages(source)
    plan = convert(stages, build_args={}, target=None, platform=PLATFORM, base_configs=lambda ref: None,
                   build_platform=PLATFORM)
    return plan, stages, source


def test_step_names_follow_buildkit() -> None:
    plan, stages, source = planned()
    names = sorted(step_names(plan, stages, source).values())
    assert names == ["[a 1/2] FROM busybox", "[a 2/2] RUN echo a > /a", "[internal] load build context: src/",
                     "[stage-1 2/4] WORKDIR /app", "[stage-1 3/4] COPY --from=a /a /a",
                     "[stage-1 4/4] COPY src/ ./"]


def test_stage_membership_for_no_cache_filter() -> None:
    plan, stages, _ = planned()
    membership = stage_labels(plan, stages)
    in_a = stage_ops(membership, ["A"])
    assert {type(plan.ops[d]).__name__ for d in in_a} == {"ImageSourceOp", "ExecOp"}  # FROM busybox is shared
    in_last = stage_ops(membership, ["1"])
    assert any(isinstance(plan.ops[d], FileOp) for d in in_last)
    assert not any(isinstance(plan.ops[d], ExecOp) for d in in_last)
    assert stage_ops(membership, []) == set()


def test_key_input_replaces_input_digests_by_input_keys() -> None:
    plan, _, _ = planned()
    run = next(op for op in plan.ops.values() if isinstance(op, ExecOp))
    one = cache_key(key_input(run, ("sha256:" + "1" * 64,)))
    two = cache_key(key_input(run, ("sha256:" + "2" * 64,)))
    assert one != two
    item = key_input(run, ("k",))
    assert "input" not in item.definition and item.definition["build_args"] == {}
    assert item.step_id == "exec:Dockerfile:2"
    epoch = key_input(run, ("k",), epoch=0)
    assert cache_key(epoch) != cache_key(item)  # clamped file times make another layer


def test_context_content_is_the_key_not_the_patterns() -> None:
    plan, _, _ = planned()
    context = next(op for op in plan.ops.values() if isinstance(op, ContextSourceOp))
    a = key_input(context, (), content=(("", "xxh3:1"), ("src/x", "xxh3:2")))
    b = key_input(context, (), content=(("", "xxh3:1"), ("src/x", "xxh3:3")))
    assert cache_key(a) != cache_key(b)


def test_plan_memo_round_trip_and_key(tmp_path: Path) -> None:
    plan, stages, source = planned()
    memo = PlanMemo(plan, step_names(plan, stages, source), stage_labels(plan, stages),
                    (("busybox", "sha256:" + "0" * 64),))
    key = memo_key(TEXT.encode(), "Dockerfile", {}, None, "linux/amd64", {}, None)
    assert load_memo(str(tmp_path), key) is None
    save_memo(str(tmp_path), key, memo)
    assert load_memo(str(tmp_path), key) == memo
    others = [memo_key(TEXT.encode() + b"\n", "Dockerfile", {}, None, "linux/amd64", {}, None),
              memo_key(TEXT.encode(), "Dockerfile", {"A": "1"}, None, "linux/amd64", {}, None),
              memo_key(TEXT.encode(), "Dockerfile", {}, "a", "linux/amd64", {}, None),
              memo_key(TEXT.encode(), "Dockerfile", {}, None, "linux/amd64", {"l": "1"}, None),
              memo_key(TEXT.encode(), "Dockerfile", {}, None, "linux/amd64", {}, 0)]
    assert key not in others and len(set(others)) == len(others)
    (tmp_path / "plans" / key).write_bytes(b"not a pickle")
    assert load_memo(str(tmp_path), key) is None


def test_build_arg_and_label_flags() -> None:
    assert build_args(["A=1", "B=", "C", "D"], {"C": "from-env"}) == {"A": "1", "B": "", "C": "from-env"}
    assert labels(["a=1", "b"]) == {"a": "1", "b": ""}
    with pytest.raises(ConfigError):
        build_args(["=x"])
    with pytest.raises(ConfigError):
        labels(["=x"])


def test_bare_form_means_build(tmp_path: Path) -> None:
    os.chdir(tmp_path)
    assert _with_command(["-t", "app:v1", "-f", "Dockerfile", "."]) == ["build", "-t", "app:v1", "-f",
                                                                          "Dockerfile", "."]
    assert _with_command(["--debug", "."]) == ["--debug", "build", "."]
    assert _with_command(["images"]) == ["images"]
    assert _with_command(["--help"]) == ["--help"]
    assert _with_command(["imgaes"]) == ["imgaes"]  # not a path: argparse names the commands
    args = build_parser("build").parse_args(["build", "-t", "a", "-t", "b", "--build-arg", "X=1", "--no-cache",
                                             "--target", "t", "-o", "type=tar,dest=-", "--progress=plain", "."])
    assert args.tags == ["a", "b"] and args.build_args == ["X=1"] and args.no_cache and args.target == "t"
    assert args.outputs == ["type=tar,dest=-"] and args.progress == "plain" and args.context == "."
