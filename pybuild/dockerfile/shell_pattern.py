"""Shell patterns inside `${v#p}`, `${v%p}`, `${v/p/r}`: BuildKit's glob-to-regex rules.

Used only by `pybuild.dockerfile.shell`. BuildKit (frontend/dockerfile/shell/lex.go) turns a pattern into a
Go regexp: `*` is any run of characters (shortest or longest), `?` is one character, a backslash escapes
`*`, `?` or a backslash, and `\\}` / `\\/` stand for `}` / `/`. Every other character is literal, including
`[` and `]`: BuildKit supports no bracket expressions, so neither do we. Matching follows Go's regexp
(leftmost-first; `.` excludes only `\\n`) in linear time, as Go's does: `glob.py` (Python's backtracking `re`
took minutes on a 1 MiB value). Parsed patterns are cached by their text.
"""

from __future__ import annotations

from functools import lru_cache

from pybuild.dockerfile.glob import Glob
from pybuild.errors import DockerfileError

__all__ = ["replace_pattern", "trim_prefix", "trim_suffix"]


def _invalid(pattern: str, reason: str) -> DockerfileError:
    return DockerfileError(f"invalid pattern ({pattern}) in substitution: {reason}")


@lru_cache(maxsize=512)
def _compile(pattern: str) -> Glob:
    """Parse a shell pattern once (cached by text): characters, None for `?`, `Glob.STAR` for `*`."""
    items: list[object] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            items.append(Glob.STAR)
        elif ch == "?":
            items.append(None)
        elif ch == "\\":
            # `\}` and `\/` only keep `}` and `/` from ending the ${...}; the backslash is not part of the pattern.
            if i < n and pattern[i] in "}/":
                continue
            if i >= n:
                raise _invalid(pattern, "trailing escape character")
            if pattern[i] not in "*?\\":
                raise _invalid(pattern, f"invalid escape '\\{pattern[i]}'")
            items.append(pattern[i])
            i += 1
        else:
            items.append(ch)
    return Glob(items)


def _reverse_pattern(pattern: str) -> str:
    """Reverse a pattern but keep each `\\x` pair in order (`a\\*c` -> `c\\*a`)."""
    pieces: list[str] = []
    i, last = 0, len(pattern) - 1
    while i <= last:
        if pattern[i] == "\\" and i != last:
            pieces.append(pattern[i : i + 2])
            i += 2
        else:
            pieces.append(pattern[i])
            i += 1
    return "".join(reversed(pieces))


def trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    """`${v#p}` (shortest) / `${v##p}` (greedy): drop the matching prefix of `value`."""
    end = _compile(pattern).match_end(value, greedy)
    return value if end is None else value[end:]


def trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    """`${v%p}` / `${v%%p}`: as BuildKit does, reverse both sides so the suffix becomes a prefix."""
    return trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


def replace_pattern(value: str, pattern: str, replacement: str, replace_all: bool,
                    limit: int | None = None) -> str | None:
    """`${v/p/r}` replaces the first (longest) match literally; `${v//p/r}` replaces every match.

    BuildKit uses Go's `ReplaceAllString` for `//`, so there the replacement is a Go template: `$$` is `$`,
    `$0`/`${0}` is the match, other group references are empty. The single form is a plain splice.
    None when the result would be longer than `limit` characters (it is never built).
    """
    glob = _compile(pattern)
    if not replace_all:
        span = glob.search(value)
        if span is None:
            return value
        start, end = span
        if limit is not None and len(value) - (end - start) + len(replacement) > limit:
            return None
        return value[:start] + replacement + value[end:]
    try:
        return _replace_all(glob, value, replacement, limit)
    except _TooLong:
        return None


class _TooLong(Exception):
    """A template expansion passed the limit (turned into None by `replace_pattern`)."""


def _replace_all(glob: Glob, value: str, replacement: str, limit: int | None) -> str | None:
    """Go's ReplaceAll loop: an empty match right after a previous match is not replaced (Python's is)."""
    template = "$" in replacement
    out: list[str] = []
    size = 0
    last = pos = 0
    while pos <= len(value):
        span = glob.search(value, pos)
        if span is None:
            break
        start, end = span
        out.append(value[last:start])
        size += start - last
        if end > last or start == 0:
            text = _expand_template(replacement, value[start:end], limit) if template else replacement
            out.append(text)
            size += len(text)
        if limit is not None and size > limit:
            return None
        last = end
        pos = max(pos + 1, end)
    out.append(value[last:])
    if limit is not None and size + len(value) - last > limit:
        return None
    return "".join(out)


def _expand_template(template: str, matched: str, limit: int | None) -> str:
    """Go's `Regexp.Expand` for a regex whose only group is group 0 (the whole match); `_TooLong` when
    the text would pass `limit` characters."""
    out: list[str] = []
    size = 0
    while True:
        head, dollar, template = template.partition("$")
        out.append(head)
        if not dollar:
            return "".join(out)
        if template.startswith("$"):
            out.append("$")
            template = template[1:]
            continue
        parsed = _template_ref(template)
        if parsed is None:
            out.append("$")
            continue
        name, template = parsed
        if name == "0":
            out.append(matched)
            size += len(matched)
            if limit is not None and size > limit:
                raise _TooLong


def _template_ref(text: str) -> tuple[str, str] | None:
    """Split `name rest` or `{name} rest` off `text`; None if there is no valid reference."""
    brace = text.startswith("{")
    i = start = 1 if brace else 0
    while i < len(text) and (text[i].isalpha() or text[i].isdecimal() or text[i] == "_"):
        i += 1
    if i == start:
        return None
    name = text[start:i]
    if brace:
        if i >= len(text) or text[i] != "}":
            return None
        i += 1
    return name, text[i:]
