"""The linear shell-pattern matcher agrees with the leftmost-first regexp BuildKit builds (Python's `re`
is the oracle here: same answers, but backtracking), and stays linear on values of a MiB."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from pybuild.dockerfile.shell_pattern import _compile, replace_pattern, trim_prefix, trim_suffix


def oracle(pattern: str, greedy: bool, anchored: bool) -> re.Pattern[str]:
    star = ".*" if greedy else ".*?"
    body = "".join(star if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile(("^" if anchored else "") + body)


def check(pattern: str, value: str, pos: int) -> None:
    glob = _compile(pattern)
    found = oracle(pattern, True, False).search(value, pos)
    assert glob.search(value, pos) == (found.span() if found else None), (pattern, value, pos)
    for greedy in (True, False):
        found = oracle(pattern, greedy, True).match(value)
        assert glob.match_end(value, greedy) == (found.end() if found else None), (pattern, value, greedy)


def test_exhaustive_small_patterns_and_values() -> None:
    patterns = ["".join(p) for n in range(5) for p in itertools.product("ab*?", repeat=n)]
    values = ["".join(v) for n in range(6) for v in itertools.product("ab\n", repeat=n)]
    for pattern in patterns:
        for value in values:
            for pos in range(len(value) + 1):
                check(pattern, value, pos)


@pytest.mark.parametrize("seed", range(2))
def test_random_longer_patterns(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(20_000):
        pattern = "".join(rng.choice("ab*?c") for _ in range(rng.randint(0, 8)))
        value = "".join(rng.choice("abc\n") for _ in range(rng.randint(0, 14)))
        check(pattern, value, rng.randint(0, len(value)))


def test_a_pattern_with_a_literal_newline_still_matches() -> None:
    check("a\n*b", "xa\nzzb\nb", 0)
    check("*\n", "ab\ncd\n", 1)


def test_a_mib_value_with_stars_is_answered() -> None:
    """These took minutes with the backtracking translation (every start scanned to the end of the line)."""
    value = "a" * (1 << 20)
    assert replace_pattern(value, "*x", "y", True) == value
    assert replace_pattern(value, "a*b*c", "y", True) == value
    assert trim_prefix("*a*b", value, True) == value
    assert trim_suffix("b*a*", value, False) == value
    tail = "ab" + "a" * 200_000
    assert replace_pattern(tail, "*a*b", "X", True) == "X" + "a" * 200_000
    lines = "\n".join(["ab" * 50] * 10_000)
    assert replace_pattern(lines, "b*", "-", True) == "\n".join(["a-"] * 10_000)
