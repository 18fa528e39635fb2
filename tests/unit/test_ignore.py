"""Unit tests for `pybuild.context.ignore` beyond upstream's tables: Go helpers, fast paths, pruning."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pybuild.context.ignore import (
    MatchInfo,
    PatternMatcher,
    filepath_match,
    go_clean,
    read_ignore_file,
)
from pybuild.errors import ContextError, InternalError


@pytest.mark.parametrize(
    ("path", "expected"),
    [("", "."), ("a/../..", ".."), ("//a//b/", "/a/b"), ("./a/./b", "a/b"), ("/..", "/"), ("a/", "a")],
)
def test_go_clean(path: str, expected: str) -> None:
    assert go_clean(path) == expected


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [("*", "a/b", False), ("a/*", "a/b", True), ("[]a]x", "]x", None), ("a\\", "a", None),
     ("[a-", "a", None), ("*[", "abc", None), ("a*", "abc", True), ("?", "é", True)],
)
def test_filepath_match(pattern: str, name: str, expected: bool | None) -> None:
    if expected is None:
        with pytest.raises(ContextError, match="syntax error in pattern"):
            filepath_match(pattern, name)
    else:
        assert filepath_match(pattern, name) is expected


def test_read_ignore_file_details() -> None:
    text = b"\xef\xbb\xbf/a\r\n  # not a comment\n#comment\n!  /b/../c \n\xff\n  \n"
    assert read_ignore_file(text) == ["a", "# not a comment", "!c", "\udcff"]
    assert read_ignore_file("") == []


def test_constructor_trims_after_bang_and_rejects_lone_bang() -> None:
    matcher = PatternMatcher(["docs", "!  docs/README.md  ", "   "])
    assert matcher.patterns == ("docs", "!docs/README.md")
    assert matcher.exclusions
    assert not matcher.matches("docs/README.md")
    with pytest.raises(ContextError, match='illegal exclusion pattern: "!"'):
        PatternMatcher(["a", "! "])


def test_bad_pattern_at_construction_names_it() -> None:
    with pytest.raises(ContextError, match=r"invalid pattern 'a\['"):
        PatternMatcher(["a["])


def test_uncompilable_class_fails_only_when_reached() -> None:
    """Upstream compiles lazily: a pattern that is never evaluated never fails."""
    matcher = PatternMatcher(["x", "[z-a]"])
    assert matcher.matches("x") is True  # the bad inclusion is skipped once something matched
    with pytest.raises(ContextError):
        matcher.matches("y")


def test_match_info_length_checked() -> None:
    with pytest.raises(InternalError):
        PatternMatcher(["a", "b"]).matches_using_parent_results("a/b", MatchInfo((True,)))


@pytest.mark.parametrize(
    ("pattern", "directory", "expected"),
    [("bar/foo", "bar", True), ("bar/foo", "baz", False), ("b*/f*", "bar", True), ("b*/f*", "car", False),
     ("**/x", "any/where", True), ("a/**", "a", True), ("a", "a", False), ("a/b", "a/b/c", False),
     ("a?/b", "ab", True), ("[ab]/c", "z", True), ("a\\*/b", "z", True)],
)
def test_could_match_below(pattern: str, directory: str, expected: bool) -> None:
    assert PatternMatcher([pattern]).could_match_below(directory) is expected
    assert PatternMatcher(["x", "!" + pattern]).could_match_below(directory, exceptions=True) is expected


def test_exceptions_polarity_in_could_match_below() -> None:
    matcher = PatternMatcher(["a/**", "!b/c"])
    assert matcher.could_match_below("a") is True
    assert matcher.could_match_below("a", exceptions=True) is False
    assert matcher.could_match_below("b", exceptions=True) is True


# --- property tests: the fast paths and pruning agree with the plain algorithm -------------------------

SEGMENTS = st.sampled_from(["a", "b", "ab", "*", "**", "?", "a*", "*b", ".", "c.d", "a**", "[ab]"])
PATTERNS = st.lists(SEGMENTS, min_size=1, max_size=4).map("/".join)
NAMES = st.sampled_from(["a", "b", "ab", "c.d", "bb", "a.b", ".a"])
PATHS = st.lists(NAMES, min_size=1, max_size=5).map("/".join)
NEVER = "!\x00never"  # an exception that matches nothing: forces the general (non-fast) algorithm


def _top_down(matcher: PatternMatcher, path: str) -> bool:
    parts = path.split("/")
    info = MatchInfo()
    result = False
    for depth in range(1, len(parts) + 1):
        result, info = matcher.matches_using_parent_results("/".join(parts[:depth]), info)
    return result


@settings(max_examples=300, deadline=None)
@given(st.lists(PATTERNS, min_size=1, max_size=4), PATHS)
def test_fast_path_agrees_with_general_algorithm(patterns: list[str], path: str) -> None:
    fast, slow = PatternMatcher(patterns), PatternMatcher([*patterns, NEVER])
    expected = slow.matches(path)
    assert fast.matches(path) is expected
    assert _top_down(fast, path) is expected
    assert _top_down(slow, path) is expected


@settings(max_examples=300, deadline=None)
@given(PATTERNS, PATHS, st.integers(min_value=1, max_value=4))
def test_could_match_below_is_sound(pattern: str, path: str, depth: int) -> None:
    """If a pattern matches a path directly, it must be able to match below each of its ancestors."""
    parts = path.split("/")
    matcher = PatternMatcher([pattern])
    if depth >= len(parts) or not matcher.matches_using_parent_results(path, MatchInfo((False,)))[0]:
        return
    assert matcher.could_match_below("/".join(parts[:depth]))
