""".dockerignore patterns: the moby/patternmatcher rules BuildKit (through fsutil) and the docker CLI use.

Who uses it: `walk.py` filters the context top-down with `PatternMatcher.matches_using_parent_results`;
callers that check one path use `PatternMatcher.matches`; `read_ignore_file` turns a `.dockerignore` into
patterns.

Behaviour taken from upstream (moby/patternmatcher `patternmatcher.go`, `ignorefile/ignorefile.go`):

* Patterns are cleaned like Go's `filepath.Clean`; `!` marks an exception; the last matching pattern wins.
* A path matches when it or any parent directory matches (`MatchesOrParentMatches`).
* `**` matches any number of segments (including none), `*` and `?` never match `/`, `[...]` is a class,
  `\\` escapes, and regexp metacharacters are literal. `dir/**` does not match `dir` itself.
* Syntax is checked with Go's `filepath.Match` rules when the matcher is made; a pattern that passes that
  check but cannot be compiled (`[Local-Only]`: the range `l-O` is backwards) fails on every match call.
* Each pattern is compiled once and classified as upstream does: exact, prefix (`dir/**`), suffix (`**/x`)
  or regexp, so the common shapes cost a string comparison rather than a regexp run.

Deliberate differences: whitespace after `!` is trimmed in the constructor too (upstream only trims it in the
ignore-file reader); errors are `ContextError`. Upstream's regexps are Go RE2; ours are Python `re` with the
same text. They agree on everything `filepath.Match` accepts except exotic backslash escapes of letters
(`\\z`, `\\Q`, `\\p`), which are undefined in one or the other. Like RE2 without `(?s)`, a `**` does not
match across a newline in a name.
"""

from __future__ import annotations

import posixpath
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from pybuild.errors import ContextError, InternalError
from pybuild.record import record

__all__ = [
    "MatchInfo",
    "PatternMatcher",
    "filepath_match",
    "go_clean",
    "matches",
    "read_ignore_file",
]

_BAD_PATTERN: Final = "syntax error in pattern"
_REGEX_META: Final = frozenset(".+()|{}$")
"""Characters that are special in a regexp but plain in a `filepath.Match` pattern (upstream's escape set)."""

EXACT, PREFIX, SUFFIX, REGEXP, BAD = "exact", "prefix", "suffix", "regexp", "bad"

_Matcher = Callable[[str], object]


# ---------------------------------------------------------------------------------------------------------
# Go path helpers


def go_clean(path: str) -> str:
    """Go's `filepath.Clean` on unix: the shortest equivalent path; "" becomes "."."""
    cleaned = posixpath.normpath(path) if path else "."
    if cleaned.startswith("//"):  # POSIX keeps a leading "//"; Go does not
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def _go_dir(path: str) -> str:
    """Go's `filepath.Dir`: everything before the last `/`, cleaned ("." when there is no `/`)."""
    return go_clean(path[: path.rfind("/") + 1])


# ---------------------------------------------------------------------------------------------------------
# Go filepath.Match (used for syntax checks and by `filepath_match`)


def _bad(pattern: str) -> ContextError:
    return ContextError(f"invalid pattern {pattern!r}: {_BAD_PATTERN}")


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    """Split off leading stars and the chunk up to the next star outside a class."""
    stripped = pattern.lstrip("*")
    star = len(stripped) != len(pattern)
    in_class = False
    i = 0
    while i < len(stripped):
        ch = stripped[i]
        if ch == "\\":
            i += 1 if i + 1 < len(stripped) else 0
        elif ch == "[":
            in_class = True
        elif ch == "]":
            in_class = False
        elif ch == "*" and not in_class:
            break
        i += 1
    return star, stripped[:i], stripped[i:]


def _class_char(chunk: str, pos: int) -> tuple[str, int] | None:
    """One (possibly escaped) character of a class at `pos`, and the position after it; None if malformed."""
    if pos >= len(chunk) or chunk[pos] in "-]":
        return None
    if chunk[pos] == "\\":
        pos += 1
        if pos >= len(chunk):
            return None
    if pos + 1 >= len(chunk):  # a class must still be closed after this character
        return None
    return chunk[pos], pos + 1


def _match_class(chunk: str, pos: int, ch: str | None) -> tuple[bool, int] | None:
    """Match `ch` against the class starting after `[` at `pos`; None if the class is malformed."""
    negated = pos < len(chunk) and chunk[pos] == "^"
    pos += negated
    hit = False
    ranges = 0
    while not (pos < len(chunk) and chunk[pos] == "]" and ranges):
        low = _class_char(chunk, pos)
        if low is None:
            return None
        lo, pos = low
        hi = lo
        if chunk[pos] == "-":
            high = _class_char(chunk, pos + 1)
            if high is None:
                return None
            hi, pos = high
        hit = hit or (ch is not None and lo <= ch <= hi)
        ranges += 1
    return hit != negated, pos + 1


def _match_chunk(chunk: str, name: str) -> str | None:
    """Match `chunk` (no stars) at the start of `name`: the rest of `name`, or None. Raises on bad syntax.

    Like Go, the whole chunk is checked for syntax even after the match has failed.
    """
    failed = False
    pos = 0
    while pos < len(chunk):
        failed = failed or not name
        ch = chunk[pos]
        if ch == "[":
            current = None if failed else name[0]
            name = name[1:]
            result = _match_class(chunk, pos + 1, current)
            if result is None:
                raise _bad(chunk)
            ok, pos = result
            failed = failed or not ok
            continue
        if ch == "?":
            failed = failed or name[0] == "/"
        elif ch == "\\":
            pos += 1
            if pos >= len(chunk):
                raise _bad(chunk)
            failed = failed or chunk[pos] != name[0]
        else:
            failed = failed or ch != name[0]
        name = name[1:]
        pos += 1
    return None if failed else name


def _check_syntax(pattern: str) -> None:
    """Raise ContextError if Go's `filepath.Match` would reject `pattern` (upstream calls Match(p, "."))."""
    rest = pattern
    while rest:
        _, chunk, rest = _scan_chunk(rest)
        _match_chunk(chunk, "")


def filepath_match(pattern: str, name: str) -> bool:
    """Go's `path/filepath.Match` on unix: does the whole of `name` match the shell `pattern`?

    `*` and `?` never match `/`. A malformed pattern raises ContextError even when the match fails early.
    """
    try:
        return _filepath_match(pattern, name)
    except ContextError:
        raise _bad(pattern) from None


def _filepath_match(pattern: str, name: str) -> bool:
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and not chunk:
            return "/" not in name
        rest = _match_chunk(chunk, name)
        if rest is not None and (not rest or pattern):
            name = rest
            continue
        skipped = _match_after_star(chunk, name, last=not pattern) if star else None
        if skipped is not None:
            name = skipped
            continue
        _check_syntax(pattern)
        return False
    return not name


def _match_after_star(chunk: str, name: str, *, last: bool) -> str | None:
    """Try `chunk` after skipping 1.. leading characters of `name` (never a `/`)."""
    for i, ch in enumerate(name):
        if ch == "/":
            break
        rest = _match_chunk(chunk, name[i + 1:])
        if rest is not None and not (last and rest):
            return rest
    return None


# ---------------------------------------------------------------------------------------------------------
# One compiled pattern


def _translate(text: str) -> tuple[str, str]:
    """Classify a cleaned pattern as upstream does and build its regexp body (without anchors)."""
    out: list[str] = []
    kind = EXACT
    i, n = 0, len(text)
    first = True
    while i < n:
        ch = text[i]
        i += 1
        if ch == "*" and i < n and text[i] == "*":
            i += 1
            if i < n and text[i] == "/":  # "**/" is treated as "**"
                i += 1
            if i < n:
                out.append("(?:.*/)?")  # zero or more whole segments
                kind = REGEXP
            elif kind == EXACT:
                kind = PREFIX
            else:
                out.append(".*")
                kind = REGEXP
            if first:
                kind = SUFFIX
        elif ch in "*?":
            out.append("[^/]*" if ch == "*" else "[^/]")
            kind = REGEXP
        elif ch in _REGEX_META:
            out.append("\\" + ch)
        elif ch == "\\":
            if i < n:
                out.append("\\" + text[i])
                i += 1
                kind = REGEXP
            else:
                out.append("\\\\")
        else:
            out.append(ch)
            if ch in "[]":
                kind = REGEXP
        first = False
    return kind, "".join(_without_backtracking(out) if "[" not in text and "]" not in text and "^" not in text
                         else out)


_STAR = "[^/]*"


def _without_backtracking(out: list[str]) -> list[str]:
    """The regexp fragments of `_translate` with each `*` that another `*` follows later in its segment
    matched atomically up to the first match of the characters between them: `a*b*c` → `a(?>[^/]*?b)[^/]*c`.

    The same language: each fragment between two such stars is a fixed run of single characters without a
    `/`, and the star after it can take whatever an earlier match leaves, so the earliest match is always as
    good as any. The plain regexp backtracks over every split of a name between the stars: `a*a*...a*b`
    (ten stars) against a 40-character name took seconds in `re`, where Go's regexp (BuildKit's) is linear.
    Only for patterns without `[`, `]` or `^` (a class or an anchor is not one fixed character)."""
    out = list(out)
    stars = [index for index, fragment in enumerate(out) if fragment == _STAR]
    for this, following in zip(stars, stars[1:]):
        between = out[this + 1:following]
        if between and "/" not in between and all(fragment not in ("(?:.*/)?", ".*") for fragment in between):
            out[this] = "(?>[^/]*?"
            out[following - 1] += ")"
    return out


def _compile(body: str) -> re.Pattern[str] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "possible nested set" for `[[`: valid, just unusual
            return re.compile(body)
    except re.error:
        return None


class _Pattern:
    """One cleaned, compiled pattern (upstream's `Pattern`)."""

    __slots__ = ("text", "exclusion", "kind", "match", "ndirs", "segments")

    def __init__(self, text: str, exclusion: bool) -> None:
        self.text = text
        self.exclusion = exclusion
        self.ndirs = text.count("/") + 1
        kind, body = _translate(text)
        match: _Matcher
        if kind == EXACT:
            match = text.__eq__
        elif kind == PREFIX:
            match = _starts(text[:-2])
        elif kind == SUFFIX:
            match = _ends(text[2:])
        else:
            regex = _compile(body)
            match = regex.fullmatch if regex is not None else self._fail
            kind = REGEXP if regex is not None else BAD
        self.kind = kind
        self.match = match
        self.segments = _segments(text)

    def _fail(self, path: str) -> bool:
        raise ContextError(f"invalid pattern {self.text!r}: {_BAD_PATTERN}")

    def match_or_parent(self, path: str, parents: Sequence[str]) -> bool:
        """Does the pattern match `path` or one of `parents` (its ancestors, shortest first)?"""
        if self.match(path):
            return True
        return any(self.match(parent) for parent in parents)


def _starts(prefix: str) -> _Matcher:
    return lambda path: path.startswith(prefix)


def _ends(suffix: str) -> _Matcher:
    # "**/foo" also matches "foo" itself (upstream).
    bare = suffix[1:] if suffix.startswith("/") else None
    return lambda path: path.endswith(suffix) or path == bare


def _segments(text: str) -> tuple[_Matcher | None, ...] | None:
    """Per-segment matchers for `could_match_below`; None (= may match anything) when that is not sound.

    A `**` segment is None (matches any depth). Classes and escapes can make a regexp match across a `/`,
    so patterns with `[` or `\\` are treated as able to match anywhere.
    """
    if "[" in text or "\\" in text:
        return None
    parts: list[_Matcher | None] = []
    for segment in text.split("/"):
        if "**" in segment:
            parts.append(None)
        elif "*" in segment or "?" in segment:
            regex = _compile(_translate(segment)[1])
            if regex is None:
                return None
            parts.append(regex.fullmatch)
        else:
            parts.append(segment.__eq__)
    return tuple(parts)


def _may_match_below(segments: tuple[_Matcher | None, ...] | None, dir_parts: Sequence[str]) -> bool:
    """Could a pattern with these segments match a path strictly below the directory `dir_parts`?"""
    if segments is None:
        return True
    if len(segments) <= len(dir_parts) and None not in segments[: len(dir_parts)]:
        return False
    for segment, part in zip(segments, dir_parts):
        if segment is None:
            return True
        if not segment(part):
            return False
    return True


# ---------------------------------------------------------------------------------------------------------
# The matcher


@record
class MatchInfo:
    """What the matcher learnt about a directory, passed down to its children (upstream's `MatchInfo`).

    `MatchInfo()` means "no parent context": the path's parents are then checked like `matches` does.
    Made by `PatternMatcher.matches_using_parent_results`; opaque to callers.
    """

    parent_matched: tuple[bool, ...] = ()


_NO_CONTEXT: Final = MatchInfo()


class PatternMatcher:
    """An ordered list of `.dockerignore`-style patterns, compiled once (upstream's `PatternMatcher`).

    Made from `.dockerignore` lines (`read_ignore_file`) or a build's include paths; used by `walk.py`.
    Raises ContextError for a lone `!` or a pattern Go's `filepath.Match` rejects.
    """

    __slots__ = ("_patterns", "_exclusions", "_fast", "_simple", "_exact", "_prefixes", "_suffixes", "_bare",
                 "_regex", "_all_true", "_all_false")

    def __init__(self, patterns: Iterable[str]) -> None:
        compiled: list[_Pattern] = []
        for raw in patterns:
            text = raw.strip()
            if not text:
                continue
            text = go_clean(text)
            exclusion = text.startswith("!")
            if exclusion:
                text = text[1:].strip()
                if not text:
                    raise ContextError('illegal exclusion pattern: "!"')
            _check_syntax_of(text)
            compiled.append(_Pattern(text, exclusion))
        self._patterns = tuple(compiled)
        self._exclusions = any(p.exclusion for p in compiled)
        self._all_true = MatchInfo((True,) * len(compiled))
        self._all_false = MatchInfo((False,) * len(compiled))
        self._prepare_fast_path()

    def _prepare_fast_path(self) -> None:
        """Group the patterns by kind so that "does any pattern match this path?" costs a few C-level calls.

        Without exceptions that question is the whole answer; with them, a "no" still settles a path whose
        parent matched nothing, which is most of a context.
        """
        self._fast = all(p.kind != BAD for p in self._patterns)
        self._simple = self._fast and not self._exclusions
        self._exact = frozenset(p.text for p in self._patterns if p.kind == EXACT)
        self._prefixes = tuple(p.text[:-2] for p in self._patterns if p.kind == PREFIX)
        self._suffixes = tuple(p.text[2:] for p in self._patterns if p.kind == SUFFIX)
        self._bare = frozenset(s[1:] for s in self._suffixes if s.startswith("/"))
        regexps = [_translate(p.text)[1] for p in self._patterns if p.kind == REGEXP]
        self._regex = _compile("|".join(f"(?:{body})" for body in regexps)) if regexps else None

    @property
    def patterns(self) -> tuple[str, ...]:
        """The cleaned patterns, exceptions with their `!`."""
        return tuple(("!" if p.exclusion else "") + p.text for p in self._patterns)

    @property
    def exclusions(self) -> bool:
        """True if any pattern is a `!` exception."""
        return self._exclusions

    def __len__(self) -> int:
        return len(self._patterns)

    def _direct(self, path: str) -> bool:
        """Does any pattern (inclusion or exception) match `path` itself?"""
        if path in self._exact or path in self._bare:
            return True
        if self._prefixes and path.startswith(self._prefixes):
            return True
        if self._suffixes and path.endswith(self._suffixes):
            return True
        return self._regex is not None and self._regex.fullmatch(path) is not None

    def matches(self, path: str) -> bool:
        """Is the slash-separated `path` (or one of its parents) excluded? (`MatchesOrParentMatches`)"""
        parent = _go_dir(path)
        parents = _prefixes_of(parent) if parent != "." else ()
        if self._simple:
            return self._direct(path) or any(self._direct(p) for p in parents)
        matched = False
        for pattern in self._patterns:
            # An inclusion cannot change a match, nor an exception a non-match: skip them (upstream).
            if pattern.exclusion != matched:
                continue
            if pattern.match_or_parent(path, parents):
                matched = not pattern.exclusion
        return matched

    def matches_using_parent_results(
        self, path: str, parent: MatchInfo = _NO_CONTEXT
    ) -> tuple[bool, MatchInfo]:
        """Top-down matching for walks (`MatchesUsingParentResults`): pass each directory's result down.

        Give `MatchInfo()` for entries whose parent was not matched through this call (e.g. the top level).
        """
        flags = parent.parent_matched
        if flags and len(flags) != len(self._patterns):
            raise InternalError("wrong number of values in MatchInfo")
        if self._fast and (flags or "/" not in path):  # without context, a top-level path has no parents
            if parent is self._all_false or True not in flags:
                if not self._direct(path):
                    return False, self._all_false
                if self._simple:
                    return True, self._all_true
            elif self._simple:
                return True, self._all_true
        return self._top_down(path, flags)

    def _top_down(self, path: str, flags: tuple[bool, ...]) -> tuple[bool, MatchInfo]:
        parents: Sequence[str] | None = None
        matched = False
        result: list[bool] = []
        for i, pattern in enumerate(self._patterns):
            hit = flags[i] if flags else False
            if not hit:
                if pattern.exclusion != matched:
                    result.append(False)
                    continue
                if flags:
                    hit = bool(pattern.match(path))
                else:
                    if parents is None:
                        parent = _go_dir(path)
                        parents = _prefixes_of(parent) if parent != "." else ()
                    hit = pattern.match_or_parent(path, parents)
            result.append(hit)
            if hit:
                matched = not pattern.exclusion
        return matched, MatchInfo(tuple(result)) if True in result else self._all_false

    def legacy_matches(self, path: str) -> bool:
        """Upstream's deprecated `Matches`: checks one parent, cut to the pattern's depth."""
        parent = _go_dir(path)
        parent_dirs = parent.split("/")
        matched = False
        for pattern in self._patterns:
            if pattern.exclusion != matched:
                continue
            hit = bool(pattern.match(path))
            if not hit and parent != "." and pattern.ndirs <= len(parent_dirs):
                hit = _quiet_match(pattern, "/".join(parent_dirs[: pattern.ndirs]))
            if hit:
                matched = not pattern.exclusion
        return matched

    def could_match_below(self, directory: str, *, exceptions: bool = False) -> bool:
        """Could a pattern (an exception if `exceptions`) match some path strictly below `directory`?

        Conservative: True unless no such path can match. The walker uses it to skip directories that
        cannot contain anything included (or re-included), which is what lets it leave unused parts of a
        large context unread.
        """
        parts = directory.split("/")
        return any(_may_match_below(p.segments, parts) for p in self._patterns if p.exclusion == exceptions)


def _check_syntax_of(text: str) -> None:
    try:
        _check_syntax(text)
    except ContextError:
        raise _bad(text) from None


def _prefixes_of(parent: str) -> tuple[str, ...]:
    """"a/b/c" -> ("a", "a/b", "a/b/c")."""
    dirs = parent.split("/")
    return tuple("/".join(dirs[: i + 1]) for i in range(len(dirs)))


def _quiet_match(pattern: _Pattern, path: str) -> bool:
    """A parent check whose error upstream ignores (the path itself was checked first)."""
    try:
        return bool(pattern.match(path))
    except ContextError:
        return False


def matches(path: str, patterns: Iterable[str]) -> bool:
    """Upstream's deprecated package-level `Matches(file, patterns)`; "." never matches."""
    matcher = PatternMatcher(patterns)
    cleaned = go_clean(path)
    if cleaned == ".":
        return False  # upstream: do not let a pattern exclude the whole context
    return matcher.legacy_matches(cleaned)


# ---------------------------------------------------------------------------------------------------------
# .dockerignore files

_BOM: Final = "\ufeff"


def read_ignore_file(data: bytes | str | None) -> list[str]:
    """Patterns of a `.dockerignore` file (upstream `ignorefile.ReadAll`).

    A UTF-8 BOM is dropped, lines starting with `#` are comments, lines are trimmed and blank ones skipped,
    paths are cleaned and lose a leading `/`, and a `!` prefix is kept. A lone `!` is kept here; the
    matcher rejects it.
    """
    if data is None:
        return []
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    text = text.removeprefix(_BOM)
    patterns: list[str] = []
    for line in text.split("\n"):
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append("!" + pattern if invert else pattern)
    return patterns
