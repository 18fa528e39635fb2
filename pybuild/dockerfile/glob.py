"""A linear-time matcher for the shell patterns of `${v#p}`, `${v%p}` and `${v/p/r}` (`shell_pattern.py`).

BuildKit turns such a pattern into a Go regexp, and Go's regexps run in linear time. The same regexp in
Python's backtracking `re` does not: `.*x` searched in a value with no `x` tries every start and scans to
the end of the line from each, so a 1 MiB value stalls the planner for minutes, and every further `*` can
multiply that. This module gives the answers of the leftmost-first regexp (Go's and `re`'s semantics) without
backtracking, for the only shapes these patterns have: literal characters, `?` (one character) and `*`
(any run), neither of which matches a newline.

Why it is exact: cut the pattern at its stars into segments S1..Sk. A match lies within one line. In a
line, the earliest start that matches is the first occurrence of S1 (or the current position when the
pattern starts with `*`), because a later start leaves less room for the rest; the rest fits exactly when
placing S2..Sk each at its first occurrence after the previous one succeeds. Greedy stars then end the
match as late as the line allows: at the line's end after a trailing `*`, else at the last occurrence of
Sk that still follows the earliest placement of S1..Sk-1. Lazy stars end it at the earliest placement.
A pattern holding a literal newline is left to `re` (a word cannot hold one, so this is for completeness).
"""

from __future__ import annotations

import re

__all__ = ["Glob"]

_STAR = object()


class _Segment:
    """A run of literal characters and `?` wildcards between two stars."""

    __slots__ = ("text", "regex", "size")

    def __init__(self, items: list[str | None]) -> None:
        self.size = len(items)
        if None in items:
            self.text = None
            self.regex: re.Pattern[str] | None = re.compile(
                "".join("." if ch is None else re.escape(ch) for ch in items))
        else:
            self.text = "".join(ch for ch in items if ch is not None)
            self.regex = None

    def at(self, value: str, pos: int, end: int) -> bool:
        """Does the segment occur at `pos`, within `value[:end]`?"""
        if self.regex is None:
            assert self.text is not None
            return value.startswith(self.text, pos, end)
        return self.regex.match(value, pos, end) is not None

    def first(self, value: str, lo: int, hi: int) -> int:
        """The first start >= lo of an occurrence ending <= hi, or -1."""
        if self.regex is None:
            assert self.text is not None
            return value.find(self.text, lo, hi)
        found = self.regex.search(value, lo, hi)
        return found.start() if found else -1

    def last(self, value: str, lo: int, hi: int) -> int:
        """The last start >= lo of an occurrence ending <= hi, or -1."""
        if self.regex is None:
            assert self.text is not None
            return value.rfind(self.text, lo, hi)
        for pos in range(hi - self.size, lo - 1, -1):
            if self.regex.match(value, pos, hi):
                return pos
        return -1


def _regex(items: list[object], star: str) -> re.Pattern[str]:
    return re.compile("".join(star if i is _STAR else "." if i is None else re.escape(str(i)) for i in items))


class Glob:
    """A parsed pattern: `items` holds characters, None for `?` and `Glob.STAR` for `*`."""

    STAR = _STAR

    def __init__(self, items: list[object]) -> None:
        # a literal newline: `re` answers (a word never holds one; this keeps the matcher total)
        self._fallback = (_regex(items, ".*"), _regex(items, ".*?")) if "\n" in items else None
        self.lead = bool(items) and items[0] is _STAR
        self.trail = bool(items) and items[-1] is _STAR
        self.segments: list[_Segment] = []
        run: list[str | None] = []
        for item in [*items, _STAR]:
            if item is _STAR:
                if run:
                    self.segments.append(_Segment(run))
                run = []
            else:
                run.append(item)  # type: ignore[arg-type]
        self.starred = _STAR in items

    def search(self, value: str, pos: int = 0) -> tuple[int, int] | None:
        """(start, end) of the leftmost-first greedy match at or after `pos`, as `re.search` gives it."""
        if self._fallback is not None:
            hit = self._fallback[0].search(value, pos)
            return hit.span() if hit else None
        size = len(value)
        start = pos
        while start <= size:
            end = value.find("\n", start)
            end = size if end < 0 else end
            found = self._in_line(value, start, end, anchored=False, greedy=True)
            if found is not None:
                return found
            start = end + 1
        return None

    def match_end(self, value: str, greedy: bool) -> int | None:
        """The end of the match anchored at 0 (`re.match` of `^pattern`), or None."""
        if self._fallback is not None:
            hit = self._fallback[0 if greedy else 1].match(value)
            return hit.end() if hit else None
        end = value.find("\n")
        found = self._in_line(value, 0, len(value) if end < 0 else end, anchored=True, greedy=greedy)
        return found[1] if found else None

    def _in_line(self, value: str, lo: int, hi: int, *, anchored: bool,
                 greedy: bool) -> tuple[int, int] | None:
        """The match in `value[lo:hi]` (a line, or its tail) starting as early as possible."""
        segments = self.segments
        if not segments:
            return (lo, hi if self.starred and greedy else lo)
        first = segments[0]
        if self.lead:
            start = lo
            placed = first.first(value, lo, hi)
        else:
            placed = (lo if first.at(value, lo, hi) else -1) if anchored else first.first(value, lo, hi)
            start = placed
        if placed < 0:
            return None
        ends = [placed + first.size]
        for segment in segments[1:]:
            placed = segment.first(value, ends[-1], hi)
            if placed < 0:
                return None
            ends.append(placed + segment.size)
        if not greedy:
            return (start, ends[-1])
        if self.trail:
            return (start, hi)
        if len(segments) == 1 and not self.lead:
            return (start, ends[0])
        last = segments[-1]
        floor = ends[-2] if len(segments) > 1 else lo
        return (start, last.last(value, floor, hi) + last.size)
