"""moby/patternmatcher's tables (README section 3) run through `pybuild.context.ignore` and the walker.

Single and multi cases go through both entry points, "check one path" (`PatternMatcher.matches`) and the
top-down API the walker uses (`matches_using_parent_results`, with and without parent context), and then
through `walk()` itself on a real tree, because upstream requires the two to agree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pybuild.context.ignore import (
    MatchInfo,
    PatternMatcher,
    _translate,
    filepath_match,
    matches,
    read_ignore_file,
)
from pybuild.context.walk import walk
from pybuild.errors import ContextError
from tests.conftest import conformance_path

CASES = conformance_path("patternmatcher", "patternmatcher_cases.json")

# Known extraction error in the extracted data: upstream patternmatcher_test.go has `{"[]a]", "]", false,
# ErrBadPattern}` (Go's filepath.Match table) where the JSON says "LIST]". "LIST]" is a valid pattern under
# upstream rules (a `]` outside a class is a literal), so we run the upstream pattern.
ERRATA = {"LIST]": "[]a]"}


def _params(section: str, key: str | None = None) -> list[Any]:
    data = json.loads(CASES.read_text(encoding="utf-8"))[section]
    cases = data[key] if key else data
    return [pytest.param(case, id=f"{section[:6]}{i:02d}:{_label(case)}") for i, case in enumerate(cases)]


def _label(case: dict[str, Any]) -> str:
    if "pattern" in case:
        return str(case["pattern"])
    if "patterns" in case:
        return ",".join(case["patterns"]) + ("~" + case["path"] if "path" in case else "")
    return repr(case.get("content"))[:30]


def _load(case: Any) -> dict[str, Any]:
    assert isinstance(case, dict)
    return case


def _top_down(matcher: PatternMatcher, path: str) -> bool:
    """Match `path` the way a walker does: each ancestor first, passing its MatchInfo down."""
    parts = path.split("/")
    info = MatchInfo()
    result = False
    for depth in range(1, len(parts) + 1):
        result, info = matcher.matches_using_parent_results("/".join(parts[:depth]), info)
    return result


@pytest.mark.parametrize("case", _params("single_pattern_cases") + _params("multi_pattern_cases"))
def test_match_apis_agree(case: Any) -> None:
    case = _load(case)
    matcher = PatternMatcher(case["patterns"])
    assert matcher.matches(case["path"]) is case["expected"]
    assert _top_down(matcher, case["path"]) is case["expected"]
    assert matcher.matches_using_parent_results(case["path"])[0] is case["expected"]


@pytest.mark.parametrize("case", _params("single_pattern_cases") + _params("multi_pattern_cases"))
def test_walker_agrees(case: Any, tmp_path: Path) -> None:
    """The walker with `excludes=patterns` drops exactly the paths the matcher says are excluded."""
    case = _load(case)
    path = case["path"].strip("/")
    if not path:  # "/": the context root itself is never walked, so only the matcher can answer
        assert PatternMatcher(case["patterns"]).matches(case["path"]) is case["expected"]
        return
    target = tmp_path / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("x")
    walked = {entry.path for entry in walk(str(tmp_path), excludes=case["patterns"])}
    excluded = PatternMatcher(case["patterns"]).matches(path)
    assert (path not in walked) is excluded
    if path == case["path"]:
        assert excluded is case["expected"]


@pytest.mark.parametrize("case", _params("filepath_match_cases"))
def test_filepath_match_cases(case: Any) -> None:
    """Go's filepath.Match table, run through the legacy `Matches` API as upstream does."""
    case = _load(case)
    patterns = [ERRATA.get(p, p) for p in case["patterns"]]
    if case["error"]:
        with pytest.raises(ContextError, match="syntax error in pattern"):
            matches(case["path"], patterns)
        with pytest.raises(ContextError):
            filepath_match(patterns[0], case["path"])
        return
    assert matches(case["path"], patterns) is case["expected"]
    if "/" not in case["path"]:  # without a `/`, Go's filepath.Match itself gives the same answer
        assert filepath_match(patterns[0], case["path"]) is case["expected"]


@pytest.mark.parametrize("case", _params("legacy_matches_cases"))
def test_legacy_matches_cases(case: Any) -> None:
    case = _load(case)
    if case.get("error"):
        with pytest.raises(ContextError) as info:
            matches(case["path"], case["patterns"])
        if case["error"].startswith("illegal"):
            assert str(info.value) == case["error"]
        return
    assert matches(case["path"], case["patterns"]) is case["expected"]


@pytest.mark.parametrize("case", _params("constructor_cases"))
def test_constructor_cases(case: Any) -> None:
    case = _load(case)
    if case.get("error"):
        with pytest.raises(ContextError, match=r'illegal exclusion pattern: "!"'):
            PatternMatcher(case["patterns"])
        return
    matcher = PatternMatcher(case["patterns"])
    if "cleaned_count" in case:
        assert len(matcher) == case["cleaned_count"]
        assert matcher.exclusions is case["exclusions"]
    if case.get("match_error"):
        for _ in range(3):  # repeatable: every call fails the same way, none crashes
            with pytest.raises(ContextError, match="syntax error in pattern"):
                matcher.matches(case["match_error"]["path"])
            with pytest.raises(ContextError, match="syntax error in pattern"):
                matcher.matches_using_parent_results(case["match_error"]["path"])


@pytest.mark.parametrize("case", _params("compile_cases"))
def test_compile_classification(case: Any) -> None:
    """Optional performance reference: we classify patterns as upstream does (exact/prefix/suffix/regexp)."""
    case = _load(case)
    kind, _ = _translate(case["pattern"])
    assert f"{kind}Match" == case["match_type"]


@pytest.mark.parametrize("case", _params("ignorefile_readall", "cases"))
def test_ignorefile_readall(case: Any) -> None:
    case = _load(case)
    content = case["content"]
    assert read_ignore_file(content) == case["expected"]
    if content is not None:
        assert read_ignore_file(content.encode()) == case["expected"]
        assert read_ignore_file("\ufeff" + content) == case["expected"]
        assert read_ignore_file(content.replace("\n", "\r\n")) == case["expected"]


def test_errata_pattern_is_valid_upstream() -> None:
    """Guard for ERRATA: "LIST]" really is a valid pattern (so the data, not the matcher, is off)."""
    assert matches("LIST]", ["LIST]"]) is True
    with pytest.raises(ContextError):
        matches("]", ["[]a]"])
