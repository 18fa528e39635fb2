"""Context patterns never backtrack exponentially (`ignore._without_backtracking`): a COPY source or an
ignore pattern with many `*` against a long name is matched in linear-ish time, with the same answers as
the plain translation (checked exhaustively over short patterns and names)."""

from __future__ import annotations

import itertools
import re
import time

import pytest

from pybuild.context.ignore import PatternMatcher, _translate


def plain(pattern: str) -> re.Pattern[str]:
    """The translation without the atomic groups (what upstream's regexp means)."""
    body = _translate(pattern)[1]
    body = re.sub(r"\(\?>\[\^/\]\*\?(.*?)\)", r"[^/]*\1", body)
    return re.compile(body)


def test_same_answers_as_the_plain_translation() -> None:
    names = ["".join(chars) for size in range(7) for chars in itertools.product("ab/", repeat=size)]
    checked = 0
    for size in range(1, 7):
        for chars in itertools.product("ab*?/", repeat=size):
            pattern = "".join(chars)
            kind, body = _translate(pattern)
            if "(?>" not in body:
                continue
            ours, theirs = re.compile(body), plain(pattern)
            for name in names:
                assert bool(ours.fullmatch(name)) == bool(theirs.fullmatch(name)), (pattern, name)
            checked += 1
    assert checked > 500


@pytest.mark.parametrize("pattern", ["a*a*a*a*a*a*a*a*a*a*a*a*b", "**/a*a*a*a*a*a*a*a*a*a*a*a*b",
                                     "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*"])
def test_many_stars_against_a_long_name_is_fast(pattern: str) -> None:
    matcher = PatternMatcher([pattern])
    started = time.perf_counter()
    assert not matcher.matches("a" * 200) or pattern.endswith("*")
    assert time.perf_counter() - started < 1.0
