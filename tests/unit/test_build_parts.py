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
from pybuild.ops import key_input, step_names
from pybuild.ops.naming import stage_labels, stage_ops
from pybuild.plan.convert import convert
from pybuild.plan.ops import ContextSourceOp, ExecOp, FileOp, Plan
from pybuild.planmemo import PlanMemo, load_memo, memo_key, save_memo
from pybuild.solve.runner import StepRunner

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


PINNED_TEXT = """\
FROM busybox AS base
RUN --mount=type=cache,target=/c --mount=type=bind,source=src,target=/s echo hi
FROM scratch
WORKDIR /app
COPY src/ ./
ADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 https://example.com/f /f
COPY --from=base /etc /etc
"""

# The cache key of one op of each kind, as `pybuild build` computes it today. Existing caches must keep
# hitting: a change here is a cache-format change, not a refactor.
PINNED_KEYS = {
    "context:2:default": "sha256:b5967ea69bcaa405b2b0d8d485abcb2a30d4bdf6b38d30744fcd5a234c8a64b9",
    "context:2:none": "sha256:b5967ea69bcaa405b2b0d8d485abcb2a30d4bdf6b38d30744fcd5a234c8a64b9",
    "context:5:default": "sha256:f5397a13d195c7e36d0b146d67ddc56deef897243d37af3a75d76e42ee15a24b",
    "context:5:none": "sha256:f5397a13d195c7e36d0b146d67ddc56deef897243d37af3a75d76e42ee15a24b",
    "exec:2:default": "sha256:0867183ef67aa0c8c0bf36793181af94bef8edc758f64d5465f5c5776857ecfd",
    "exec:2:none": "sha256:cda95999fa97e32819bf1feaafd98e949f77dcaba5d628e5cae69624e6edb18b",
    "file:add:6:default": "sha256:65f5286178102772776a3fd158143b6b81b81f27d93636a10a086c73f8d39105",
    "file:add:6:none": "sha256:1d457803344a4d25b0f06002579d8a95b6987564d87f4c12700c8f75620ce09b",
    "file:copy:5:default": "sha256:918c4f0a19a38db7452da265f2c4c1e09a6137225ef4b49cfddad89126e5f6bc",
    "file:copy:5:none": "sha256:a1c04b0fd56decc531a4ccfb7db53a936523e3555fbeb3e6b2421858798696c4",
    "file:copy:7:default": "sha256:1f49a3a0e32d124df0eead0dee2bdb4b71b8718f3c0eba4a3f0d2dc2743306b9",
    "file:copy:7:none": "sha256:5d6b8211d513fe9f3087a94b3c03270a6eb2aeaedc619fa2aeb283fab2846bf3",
    "file:mkdir-workdir:4:default": "sha256:47d4c05433e20b798b2eff57f312e81b21f3849f869bfd3b0d50dd039640be43",
    "file:mkdir-workdir:4:none": "sha256:8c23c2db7f378f5421e2cea8ad6f4d1d502310d5b19a258a95f709e456c72bb3",
    "image:1:default": "sha256:97a47aaf739391ac0dce1108f43944d5787b569dc555f4c22e91308ec6732175",
    "image:1:none": "sha256:97a47aaf739391ac0dce1108f43944d5787b569dc555f4c22e91308ec6732175",
    "scratch:3:default": "sha256:27703c018df2f8caa7c55f030f0d21021c6a39b22c397652ef8275ce4def1d97",
    "scratch:3:none": "sha256:27703c018df2f8caa7c55f030f0d21021c6a39b22c397652ef8275ce4def1d97",
}


def test_cache_keys_are_pinned(tmp_path: Path) -> None:
    from types import SimpleNamespace
    from typing import Any

    from pybuild.context.context import open_context

    (tmp_path / "src").mkdir()
    (tmp_path / "src/x.txt").write_bytes(b"pinned\n")
    os.chmod(tmp_path / "src/x.txt", 0o644)
    os.chmod(tmp_path / "src", 0o755)
    plan, _, _ = planned(PINNED_TEXT)
    image: Any = SimpleNamespace(manifest_digest="sha256:" + "a" * 64, diff_ids=())
    never: Any = None  # nothing runs and nothing is looked up: no store, no worker, no cache index
    keys: dict[str, str] = {}
    for network, epoch in (("default", None), ("none", 0)):
        ctx = open_context(str(tmp_path), require_dockerfile=False)
        runner = StepRunner(never, lambda: never, never, ctx, epoch=epoch, network=network,
                            resolve_image=lambda op: image)
        for digest, key in runner.plan_keys(plan.ops, plan.target).items():
            op = plan.ops[digest]
            what = op.kind + (f":{op.action}" if isinstance(op, FileOp) else "")
            keys[f"{what}:{op.spans[0].line}:{network}"] = key
    assert keys == PINNED_KEYS
