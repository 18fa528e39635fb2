"""Planner fuzzing: whatever Dockerfile comes in, the way from bytes to cache keys raises a UserError or nothing.

The parser's fuzzer (`test_fuzz.py`) stops at `to_stages`. This one goes on the way a build does, short of
running a step: `parse` → `to_stages` → `convert` (the Plan: op digests, image config, history) → step
names and stage labels (`pybuild.ops`) → the cache key of every op the target needs
(`StepRunner.plan_keys`: base images resolved, context selections listed and checksummed) → the key
descriptions the cache index stores, the image config bytes an export writes, `Plan.to_json`.

Inputs are mutants of the fixtures and of planner seeds (multi-stage, `--from`, `--mount`, heredocs,
expansion in every place), with edits that insert bytes that are not UTF-8 and expansion-heavy fragments
(`$a$a`, `${a//x/$a$a}`), plus generated ARG/ENV doubling chains. Each mutant gets random build args
(some not UTF-8), a target, a platform and one of several base configs (ONBUILD triggers, env with
undecodable bytes, none). Besides "only UserError escapes": the image config is valid UTF-8 JSON and every
key is a sha256 digest.

Real components throughout: a store in a temp dir holding one imported image (every `FROM` name that
parses as a reference resolves to it: that is the resolver's job, not the planner's), and a real context
directory with a file whose name is not UTF-8.

`PYBUILD_FUZZ_PLAN_EXAMPLES` sets the number of mutants (default 1000; `make fuzz` runs 20,000), with the
parser fuzzer's seed (`PYBUILD_FUZZ_SEED`, default 0); a failure message holds the input.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pybuild.errors import UserError
from tests.conftest import REPO

EXAMPLES = int(os.environ.get("PYBUILD_FUZZ_PLAN_EXAMPLES", "1000"))
SEED = int(os.environ.get("PYBUILD_FUZZ_SEED", "0"))
CHUNK = 250
SLOW_SECONDS = 10.0  # one input taking this long is a bug (an expansion or a regex without a bound)

PLAN_SEEDS: list[bytes] = [
    b"FROM busybox AS build\nARG V=1\nRUN echo $V > /v\nFROM busybox\nCOPY --from=build /v /v\n",
    b"ARG BASE=busybox\nARG TAG=latest\nFROM ${BASE}:${TAG} AS a\nFROM a\nRUN --mount=type=bind,from=a,"
    b"source=/,target=/a ls /a\n",
    b"FROM busybox\nWORKDIR /app\nCOPY --chown=1:1 --chmod=644 a.txt dir/ ./\nADD --checksum=sha256:"
    b"0000000000000000000000000000000000000000000000000000000000000000 http://example.com/x /x\n",
    b"FROM busybox\nRUN --mount=type=cache,target=/c,id=$X --mount=type=secret,id=s,env=S "
    b"--mount=type=ssh --mount=type=tmpfs,target=/t,size=1m true\n",
    b"FROM busybox\nCOPY <<EOF /etc/x\n$HOME ${A:-d}\nEOF\nRUN <<EOF\n#!/bin/sh\necho hi\nEOF\n"
    b"RUN <<A <<B cat\na\nA\nb\nB\n",
    b"FROM --platform=$BUILDPLATFORM busybox AS b\nARG TARGETARCH\nRUN echo $TARGETARCH\nFROM scratch\n"
    b"COPY --from=b --parents /a/./b /\nCOPY --exclude=*.md --link . /src\n",
    b"FROM busybox\nENV A=1 B=\"$A $A\"\nLABEL l=$B k=\"${B//1/22}\"\nUSER ${A}:${A}\nEXPOSE ${A}000/udp 80-82\n"
    b"VOLUME [\"/v$A\"]\nSTOPSIGNAL SIG$A\nHEALTHCHECK --interval=5s CMD true\nSHELL [\"/bin/sh\",\"-ec\"]\n"
    b"ONBUILD RUN echo $A\nCMD echo $A\nENTRYPOINT [\"/bin/sh\"]\n",
    b"FROM busybox AS s0\nFROM busybox AS s1\nCOPY --from=0 / /\nRUN --network=none --security=insecure true\n"
    b"FROM s1\nCOPY --from=s0 /x /y\nCOPY --from=other/image:1 /z /z\n",
    b"FROM busybox\nARG a0=ab\nARG a1=$a0$a0\nARG a2=$a1$a1\nARG a3=$a2$a2\nENV e=${a3}${a3}\n"
    b"RUN echo $e\nCOPY $a3 /d/\n",
    b"FROM busybox\nCOPY n\xff /x\nRUN echo \xff\xfe\nLABEL a=\xff b=\xc3\nENV E=\xe2\x82\nCMD [\"\xff\"]\n",
]
SEEDS: list[bytes] = [path.read_bytes() for path in sorted((REPO / "fixtures").glob("*/Dockerfile"))]
SEEDS += PLAN_SEEDS

# Inserted inside a word (anywhere, so the instruction keeps its shape).
WORD_TOKENS = [
    b"\xff", b"\xfe\xfd", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf", b"\x00", b"\\", b"$a",
    b"$a$a$a$a", b"${a}", b"${a:-$a$a}", b"${a//?/$a$a}", b"${a/%x/$a}", b"${a#*}", b"${a%%x*}", b"${a:+$a}",
    b"${a?e}", b"$$", b"$1", b"\"", b"'", b"=", b"/", b"..", b"*", b"?", b"[", b"$BUILDPLATFORM",
]
# Inserted as lines of their own.
LINE_TOKENS = [
    b"\nARG a=$a$a$a$a\n", b"\nENV a=$a$a$a$a\n", b"\nARG a=\xff$a$a\n", b"\nARG a\n", b"\nENV a=\n",
    b"\nFROM busybox AS a\n", b"\nFROM $a\n", b"\nFROM scratch\n", b"\nFROM a\n", b"\nFROM --platform=$a b\n",
    b"\nCOPY --from=a / /\n", b"\nCOPY --from=0 /x /\n", b"\nCOPY --from=a /$a /$a\n", b"\nCOPY . .\n",
    b"\nRUN --mount=type=bind,from=a,target=/m true\n", b"\nRUN --mount=type=bind,source=$a,target=/$a x\n",
    b"\nRUN --mount=type=cache,target=$a x\n", b"\nRUN --mount=type=secret,id=$a,env=$a x\n",
    b"\nRUN --mount=from=$a,target=/x x\n", b"\nCOPY <<EOF /$a\n$a$a\nEOF\n", b"\nRUN <<EOF\n#!/bin/sh\n$a\nEOF\n",
    b"\nRUN <<\xff\n#!x\n\xff\n", b"\nLABEL $a=$a\n", b"\nWORKDIR $a\n", b"\nUSER $a\n", b"\nEXPOSE $a\n",
    b"\nVOLUME $a\n", b"\nSTOPSIGNAL $a\n", b"\nADD $a /\n", b"\nADD http://h/$a /\n",
    b"\nADD --checksum=$a http://h/x /\n", b"\nCOPY --chmod=$a --chown=$a a.txt /\n",
    b"\nCOPY --parents --link --exclude=$a ./d*/ /\n", b"\nRUN --network=none x\n", b"\nONBUILD RUN $a\n",
    b"\nONBUILD COPY . /\n", b"\nSHELL [\"$a\"]\n", b"\nCMD $a\n", b"\nRUN [\"$a\", \"\xff\"]\n",
    b"\nCOPY n\xff d\xfe/ /\n", b"\nCOPY $a* /\n", b"\nHEALTHCHECK CMD $a\n", b"\n",
]
TOKENS = WORD_TOKENS + LINE_TOKENS


def _boundary(rng: random.Random, buf: bytearray, token: bytes) -> int:
    """Where to insert `token`: a line end for a line of its own, else inside or at the end of a word."""
    if token.startswith(b"\n"):
        spots = [index for index, byte in enumerate(buf) if byte == 0x0A]
    else:  # not in an instruction's keyword: after the first blank of a line, in or after a word
        spots, past_keyword = [], False
        for index, byte in enumerate(buf):
            past_keyword = byte in b" \t" or (past_keyword and byte != 0x0A)
            if past_keyword and byte not in b" \t":
                spots.append(index + 1)
    return rng.choice(spots) if spots else len(buf)


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four random edits of `data`, most of them planner tokens inserted inside a word or as a line
    (so most mutants still parse and get to the planner)."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(14)
        pos = rng.randint(0, len(buf))
        if op <= 9:
            token = rng.choice(TOKENS)
            pos = _boundary(rng, buf, token)
            buf[pos:pos] = token
        elif op == 10 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 11:
            del buf[pos : pos + rng.randint(1, 16)]
        elif op == 12 and buf:
            start = rng.randrange(len(buf))
            buf[pos:pos] = buf[start : start + rng.randint(1, 64)]
        else:
            buf[pos:pos] = rng.choice(TOKENS)
    return bytes(buf)


_PLACES = [
    "FROM {w}", "COPY {w} /dst/", "COPY --from={w} /a /b", "ADD {w} /",
    "LABEL l={w}", "ENV x={w}", "ARG y={w}", "WORKDIR /{w}", "USER {w}", "EXPOSE {w}", "VOLUME /{w}",
    "STOPSIGNAL {w}", "RUN --mount=type=cache,target=/{w} true", "RUN echo {w}",
    "COPY <<EOF /f\n{w}\nEOF", "COPY --chmod={w} a.txt /", "FROM --platform={w} busybox",
]


def _expansion_heavy(rng: random.Random) -> bytes:
    """An ARG or ENV doubling chain (sometimes not UTF-8), its values used in random places."""
    kind = rng.choice(["ARG", "ENV"])
    first = rng.choice(["xy", "\udcff", "a b", "*", "/", "é\udcc3"])
    lines = ([f"ARG g0={first}"] if rng.random() < 0.3 else []) + ["FROM busybox AS base", f"{kind} a0={first}"]
    for index in range(1, rng.randint(2, 45)):
        prev = f"a{index - 1}"
        body = rng.choice([f"${prev}${prev}", f"${{{prev}}}${{{prev}}}", f"\"${prev} ${prev}\"",
                           f"${{{prev}//?/${prev}}}", f"${{{prev}:-x}}${prev}${prev}", f"${prev}${prev}${prev}"])
        lines.append(f"{kind} a{index}={body}")
        if rng.random() < 0.2:
            lines.append(rng.choice(_PLACES).format(w=f"${{a{index}}}"))
    lines += [rng.choice(_PLACES).format(w=f"$a{rng.randrange(len(lines))}") for _ in range(rng.randint(1, 4))]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def _input(index: int) -> tuple[bytes, dict[str, Any]]:
    """Fuzz input number `index` (deterministic for a given seed): Dockerfile bytes and convert options."""
    rng = random.Random(f"plan:{SEED}:{index}")
    kind = rng.randrange(10)
    if kind < 2:
        data = _expansion_heavy(rng)
    elif kind == 2:
        data = b"FROM busybox AS a" + b"".join(rng.choice(LINE_TOKENS) for _ in range(rng.randint(1, 30)))
    else:
        data = _mutate(rng, rng.choice(SEEDS))
    options = {
        "build_args": rng.choice([{}, {}, {}, {"a": "x"}, {"a": "\udcff\udcfe"}, {"A": "$a", "HTTP_PROXY": "p"},
                                  {"SOURCE_DATE_EPOCH": rng.choice(["0", "1700000000", "1700000000", "x"])},
                                  {"BASE": "busybox", "V": "2", "unused": "1"}]),
        "target": rng.choice([None] * 6 + [0, 1, 2, "0", "\udcff"]),  # an int: one of the stage names
        "platform": rng.choice(["linux/amd64", "linux/amd64", "linux/amd64", "linux/arm64/v8", "windows/amd64"]),
        "epoch": rng.choice([None, None, 0]),
        "base": rng.choice([0, 0, 0, 1, 1, 1, 2, 3]),
        "network": rng.choice(["default", "default", "none", "host"]),
    }
    return data, options


# -- the real components: a store with one image, a context directory ---------------------------------


class _World:
    """What the pipeline reads besides the Dockerfile: the store's one image, base configs, a context."""

    def __init__(self, root: Path) -> None:
        from pybuild.context.context import open_context
        from pybuild.image.config import ImageConfig
        from pybuild.store.images import import_rootfs, resolve_image
        from pybuild.store.store import Store

        rootfs = root / "rootfs.tar"
        with tarfile.open(rootfs, "w") as tar:
            info = tarfile.TarInfo("bin/sh")
            info.size, info.mode = 3, 0o755
            tar.addfile(info, io.BytesIO(b"#!\n"))
        self.store = Store.open(str(root / "store"))
        import_rootfs(self.store, str(rootfs), "busybox:latest")
        self.image = resolve_image(self.store, "busybox:latest")
        plain = ImageConfig.from_dict(self.image.config)
        def config(on_build: list[str]) -> ImageConfig:
            """A base config with undecodable bytes in its values and these ONBUILD triggers."""
            return ImageConfig.from_dict({
                "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
                "config": {"Env": ["PATH=/bin", "B=\udcff", "E"], "User": "1:\udcfe", "WorkingDir": "w",
                           "Labels": {"\udcff": "\udcfe"}, "Shell": ["/bin/sh", "-c"], "OnBuild": on_build}})

        self.configs: list[Any] = [
            plain,
            config(["RUN echo $B", "COPY . /\udcff", "ARG B=$B$B", "RUN <<EOF\n#!/bin/sh\nEOF\n", "ENV C=$B"]),
            None,
            config(["ONBUILD RUN x", "FROM x", "COPY --from=0 / /", "RUN ${B//?/$B$B}"]),
        ]
        context = root / "context"
        (context / "dir").mkdir(parents=True)
        (context / "Dockerfile").write_bytes(b"FROM busybox\n")
        (context / "a.txt").write_text("a\n")
        (context / "dir" / "b.txt").write_text("b\n")
        (context / ".dockerignore").write_text("*.md\n!keep.md\n")
        (context / "keep.md").write_text("k\n")
        os.symlink("a.txt", context / "link")
        (context / os.fsdecode(b"n\xff")).write_bytes(b"\xff\n")
        (context / os.fsdecode(b"d\xfe")).mkdir()
        (context / os.fsdecode(b"d\xfe") / "c").write_text("c\n")
        self.context = open_context(str(context))

    def resolve(self, op: Any) -> Any:
        """The image an image-source op names: the store's one image for any valid reference."""
        from pybuild.image.reference import parse_reference

        parse_reference(op.ref)
        return self.image

    def close(self) -> None:
        self.store.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_World]:
    made = _World(tmp_path_factory.mktemp("plan-fuzz"))
    yield made
    made.close()


# -- the pipeline --------------------------------------------------------------------------------------


def plan_pipeline(world: _World, data: bytes, options: dict[str, Any]) -> None:
    """Bytes to cache keys as a build does it, short of running a step; raises what the code raises."""
    from pybuild.cache.index import CacheIndex
    from pybuild.cache.keys import cache_key, describe
    from pybuild.digest import canonical_json
    from pybuild.dockerfile.instructions import to_stages
    from pybuild.dockerfile.parser import parse
    from pybuild.image.spec import parse_platform
    from pybuild.ops import step_names
    from pybuild.ops.naming import stage_labels
    from pybuild.plan.convert import convert
    from pybuild.plan.ops import op_inputs
    from pybuild.planmemo import PlanMemo
    from pybuild.solve.scheduler import needed
    from pybuild.solve.runner import StepRunner

    source = parse(data)
    stages = to_stages(source)
    config = world.configs[options["base"]]
    target = options["target"]
    if isinstance(target, int):
        names = [stage.name for stage in stages.stages if stage.name is not None]
        target = names[target % len(names)] if names else None
    plan = convert(stages, build_args=options["build_args"], target=target,
                   platform=parse_platform(options["platform"]), base_configs=lambda ref: config,
                   escape=source.directives.escape, epoch=options["epoch"])
    memo = PlanMemo(plan, step_names(plan, stages, source), stage_labels(plan, stages), ())
    pickle.loads(pickle.dumps(memo, protocol=pickle.HIGHEST_PROTOCOL))
    document = plan.image.to_bytes()
    json.loads(document.decode("utf-8"))  # valid UTF-8 JSON, whatever the Dockerfile's bytes
    plan.to_json()

    def never() -> Any:
        raise AssertionError("planning must not start a worker")

    runner = StepRunner(world.store, never, CacheIndex(world.store), world.context, epoch=options["epoch"],
                        network=options["network"], resolve_image=world.resolve)
    keys = runner.plan_keys(plan.ops, plan.target)
    assert set(keys) == set(needed(plan.ops, plan.target)[0])
    for digest, key in keys.items():
        assert key.startswith("sha256:") and len(key) == 71, key
        op = plan.ops[digest]
        item = runner.key_item(digest, op, tuple(keys[d] for d in op_inputs(op)))
        assert cache_key(item) == key
        canonical_json(describe(item)).decode("utf-8")  # what the cache index stores


def check(world: _World, data: bytes, options: dict[str, Any]) -> None:
    """`plan_pipeline`, failing on anything but a UserError and on a slow input."""
    started = time.perf_counter()
    try:
        plan_pipeline(world, data, options)
    except UserError:
        pass
    except Exception as exc:  # noqa: BLE001 - that is the point of the test
        pytest.fail(f"{type(exc).__name__}: {exc}\ninput: {data!r}\noptions: {options!r}")
    elapsed = time.perf_counter() - started
    assert elapsed < SLOW_SECONDS, f"took {elapsed:.1f}s\ninput: {data!r}\noptions: {options!r}"


@pytest.mark.parametrize("chunk", range((EXAMPLES + CHUNK - 1) // CHUNK))
def test_plan_mutants(world: _World, chunk: int) -> None:
    for index in range(chunk * CHUNK, min(EXAMPLES, (chunk + 1) * CHUNK)):
        data, options = _input(index)
        check(world, data, options)


def test_inputs_are_deterministic_and_varied() -> None:
    assert _input(11) == _input(11)
    inputs = [_input(index)[0] for index in range(200)]
    assert len(set(inputs)) > 180
    assert sum(1 for data in inputs if b"\xff" in data or b"\xfe" in data) > 20  # not UTF-8
    assert sum(1 for data in inputs if b"a2=" in data and b"$a1" in data) > 10  # doubling chains


@pytest.mark.parametrize("index", range(len(PLAN_SEEDS)))
def test_plan_seeds_plan(world: _World, index: int) -> None:
    """The planner seeds are realistic: each plans and keys without an error (undecodable bytes too)."""
    plan_pipeline(world, PLAN_SEEDS[index], {"build_args": {}, "target": None, "platform": "linux/amd64",
                                             "epoch": None, "base": 0, "network": "default"})
