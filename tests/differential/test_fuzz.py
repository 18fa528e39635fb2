"""Fuzzing: whatever bytes come in, `parse()` and `to_stages()` raise DockerfileError or nothing else.

Inputs are mutants of real Dockerfiles (the fixtures and BuildKit's golden files): byte flips, insertions of
the characters that steer the parser (escape, `<<`, `[`, quotes, NUL, line ends), deletions, truncation,
duplicated and spliced chunks, random bytes; plus Hypothesis `binary()` and `text()` inputs.

`PYBUILD_FUZZ_EXAMPLES` sets the number of mutants (default 2000; `make fuzz` runs 100,000); Hypothesis adds
a quarter as many. The seed is fixed (`PYBUILD_FUZZ_SEED`, default 0), so a failure reproduces; the failure
message holds the input.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pybuild.errors import DockerfileError
from tests.conftest import CONFORMANCE, REPO

EXAMPLES = int(os.environ.get("PYBUILD_FUZZ_EXAMPLES", "2000"))
SEED = int(os.environ.get("PYBUILD_FUZZ_SEED", "0"))
CHUNK = 250
SLOW_SECONDS = 5.0  # one input taking this long is a bug (pathological backtracking), not a slow machine

SEEDS: list[bytes] = [
    path.read_bytes()
    for path in sorted((REPO / "fixtures").glob("*/Dockerfile"))
    + sorted((CONFORMANCE / "buildkit-parser").glob("testfile*/**/Dockerfile"))
] or [b"FROM busybox\nRUN echo hi\n"]

TOKENS = [
    b"\\", b"\\\n", b"`", b"`\n", b"<<", b"<<EOF", b"<<-EOF\n\tx\n\tEOF\n", b"3<<'EOF'", b"\nEOF\n", b"[",
    b"]", b'["a", "b"]', b'"', b"'", b"\x00", b"\n", b"\r\n", b"\r", b" ", b"\t", b"#", b"# escape=`\n",
    b"# escape=\\\n", b"# syntax=x\n", b"--", b"--mount=type=cache,target=/x ", b"=", b"${", b"$",
    b"\xef\xbb\xbf", b"\xff", b"\xc3", b"\xe2\x80\xa8", b"\xc2\x85", b"ONBUILD ", b"HEALTHCHECK ", b"ENV ",
    b"LABEL ", b"COPY ",
    b"RUN ", b"FROM ", b"ARG ", b"SHELL ", b"CMD ", b"ONBUILD ONBUILD ", b"\\ ", b"\\\r\n",
]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """One to eight random edits of `data`."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        pos = rng.randint(0, len(buf))
        op = rng.randrange(9)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op <= 3:
            buf[pos:pos] = rng.choice(TOKENS)
        elif op == 4:
            del buf[pos : pos + rng.randint(1, 16)]
        elif op == 5:
            del buf[pos:]
        elif op == 6:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 7 and buf:
            start = rng.randrange(len(buf))
            buf[pos:pos] = buf[start : start + rng.randint(1, 64)]
        else:
            other = rng.choice(SEEDS)
            cut = rng.randint(0, len(other))
            buf[pos:] = other[cut:]
    return bytes(buf)


def _input(index: int) -> bytes:
    """Fuzz input number `index` (deterministic for a given seed)."""
    rng = random.Random(f"{SEED}:{index}")
    kind = rng.randrange(10)
    if kind == 0:
        return rng.randbytes(rng.randint(0, 200))
    if kind == 1:  # random lines of tokens: structure without a seed
        return b"".join(rng.choice(TOKENS) for _ in range(rng.randint(1, 40)))
    return _mutate(rng, rng.choice(SEEDS))


def _pipeline() -> list[tuple[str, Callable[[Any], Any]]]:
    """The stages after parse() that must only raise DockerfileError: to_json, to_stages (when present)."""
    from pybuild.dockerfile.astjson import to_json

    steps: list[tuple[str, Callable[[Any], Any]]] = [("to_json", to_json)]
    try:
        from pybuild.dockerfile.instructions import to_stages
    except ImportError:  # the typed layer is not there yet: cover parse() and to_json() only
        return steps
    steps.append(("to_stages", to_stages))
    return steps


def check(data: bytes | str) -> None:
    """Run `data` through parse() and the later stages; anything but DockerfileError fails."""
    from pybuild.dockerfile.parser import parse

    started = time.perf_counter()
    try:
        result = parse(data)
    except DockerfileError:
        return
    except Exception as exc:  # noqa: BLE001 - that is the point of the test
        pytest.fail(f"parse() raised {type(exc).__name__}: {exc}\ninput: {data!r}")
    for name, step in _pipeline():
        try:
            step(result)
        except DockerfileError:
            return
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"{name}() raised {type(exc).__name__}: {exc}\ninput: {data!r}")
    elapsed = time.perf_counter() - started
    assert elapsed < SLOW_SECONDS, f"took {elapsed:.1f}s\ninput: {data!r}"


@pytest.mark.parametrize("chunk", range((EXAMPLES + CHUNK - 1) // CHUNK))
def test_mutants(chunk: int) -> None:
    for index in range(chunk * CHUNK, min(EXAMPLES, (chunk + 1) * CHUNK)):
        check(_input(index))


@settings(
    max_examples=max(1, EXAMPLES // 8),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.binary(max_size=512))
def test_binary(data: bytes) -> None:
    check(data)


@settings(
    max_examples=max(1, EXAMPLES // 8),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(text=st.text(st.sampled_from("RUNCOPYENVonbuild \t\n\r\\`<<-EOF[]\"'=#$\x00é\u2028"), max_size=200))
def test_text(text: str) -> None:
    check(text)


def test_inputs_are_deterministic() -> None:
    assert _input(7) == _input(7)
    assert len({_input(index) for index in range(50)}) > 40


def test_max_line_length() -> None:
    """A physical line of 65536 bytes or more is a DockerfileError (BuildKit's scanner limit), not a crash."""
    check(b"FROM busybox\nRUN " + b"x" * 70000 + b"\n")


FIXTURES = sorted((REPO / "fixtures").glob("*/Dockerfile"))


@pytest.mark.parametrize("path", FIXTURES, ids=[path.parent.name for path in FIXTURES])
def test_fixtures_are_valid(path: Path) -> None:
    """The seeds from fixtures/ are realistic: they get through parse() and to_stages() without an error."""
    from pybuild.dockerfile.parser import parse

    result = parse(path.read_bytes(), str(path))
    try:
        from pybuild.dockerfile.instructions import to_stages
    except ImportError:  # pragma: no cover - the typed layer is not there yet
        return
    assert to_stages(result)
