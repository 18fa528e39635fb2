"""Argument splitting for Dockerfile instructions, as BuildKit's parser does it.

The scanner and the parser call these on one joined instruction line: `split_command` (keyword, builder
flags, rest), `parse_json_array` (exec form), `parse_words` (ARG, ENV/LABEL words; quotes kept),
`split_whitespace` (FROM, COPY, ...) and `parse_name_val` (ENV/LABEL triples). The semantics, quirks
included, are those of BuildKit's `frontend/dockerfile/parser` (split_command.go, line_parsers.go); the
code is our own and uses compiled regexes instead of per-character loops on the hot path.
"""

from __future__ import annotations

import json
import math
import re

from pybuild.errors import DockerfileError

GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
"""The characters Go's `unicode.IsSpace` accepts (Python's `str.isspace` also takes \\x1c-\\x1f)."""

_WS_CLASS = r"\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_TOKEN_WS = re.compile(r"[\t\v\f\r ]+")  # BuildKit's reWhitespace / tokenWhitespace
_NON_WS = re.compile(f"[^{_WS_CLASS}]+")
_NOT_STRING_ARRAY = "not a string array: when using JSON array syntax, arrays must be comprised of strings only"


def _word_regex(esc: str) -> re.Pattern[str]:
    e = re.escape(esc)
    # a word: escaped chars, quoted runs (an unterminated quote runs to the end), plain chars;
    # an escape char at the very end of the input is dropped (groups `a`/`b` mark that case)
    return re.compile(
        rf"(?:{e}(?P<a>\Z)|{e}.|\"(?:{e}(?P<b>\Z)|{e}.|[^\"{e}])*\"?|'[^']*'?|[^{_WS_CLASS}\"'{e}])+",
        re.DOTALL,
    )


_WORD_RES = {"\\": _word_regex("\\"), "`": _word_regex("`")}
_SPECIAL = {"\\": re.compile(r"[\"'\\]"), "`": re.compile(r"[\"'`]")}


def parse_words(text: str, escape: str = "\\") -> list[str]:
    """Split `text` into words like BuildKit's parseWords: quotes and escapes kept, whitespace separates."""
    if _SPECIAL[escape].search(text) is None:
        return _NON_WS.findall(text)
    words = []
    for match in _WORD_RES[escape].finditer(text):
        word = match.group(0)
        if match.group("a") is not None or match.group("b") is not None:
            word = word[:-1]
        if word:
            words.append(word)
    return words


def split_whitespace(text: str) -> list[str]:
    """BuildKit's parseStringsWhitespaceDelimited: split on runs of space, tab, \\v, \\f, \\r."""
    if not text:
        return []
    return _TOKEN_WS.split(text)


def split_command(line: str) -> tuple[str, tuple[str, ...], str]:
    """Split one instruction line into (keyword as written, builder flags, trimmed rest)."""
    parts = _TOKEN_WS.split(line.strip(GO_SPACE), 1)
    if len(parts) < 2:
        return parts[0], (), ""
    rest = parts[1]
    if not rest.lstrip(GO_SPACE).startswith("--"):
        return parts[0], (), rest.strip(GO_SPACE)
    rest, flags = extract_builder_flags(rest)
    return parts[0], flags, rest.strip(GO_SPACE)


def extract_builder_flags(text: str) -> tuple[str, tuple[str, ...]]:
    """Take the leading `--flag[=value]` words off `text`; return (rest, flags). A bare `--` ends them.

    BuildKit walks this part byte by byte, so non-ASCII text is handled as Latin-1 bytes: a multi-byte
    character in a flag comes out as its bytes (`é` → `Ã©`), exactly as BuildKit prints it.
    """
    wide = not text.isascii()
    if wide:
        text = text.encode("utf-8", "surrogateescape").decode("latin-1")
    rest, flags = _extract_flags(text)
    if wide:
        rest = rest.encode("latin-1").decode("utf-8", "surrogateescape")
    return rest, tuple(flags)


def _skip_space(text: str, pos: int) -> int:
    end = len(text)
    while pos < end and text[pos] in GO_SPACE:
        pos += 1
    return pos


def _extract_flags(text: str) -> tuple[str, list[str]]:
    flags: list[str] = []
    end = len(text)
    pos = _skip_space(text, 0)
    while pos < end:
        if not text.startswith("--", pos):
            return text[pos:], flags
        word, blank_ok, pos = _flag_word(text, pos)
        if pos >= end:
            if word != "--" and (blank_ok or word):
                flags.append(word)
            return "", flags
        if word == "--":
            return text[pos:], flags
        if blank_ok or word:
            flags.append(word)
        pos = _skip_space(text, pos)
    return "", flags


def _flag_word(text: str, pos: int) -> tuple[str, bool, int]:
    """Read one flag word from `pos`: quotes removed, backslash escapes taken; stop at a space."""
    out: list[str] = []
    blank_ok = False
    quote = ""
    end = len(text)
    while pos < end:
        ch = text[pos]
        if quote:
            if ch == quote:
                quote = ""
                pos += 1
                continue
        elif ch in GO_SPACE:
            break
        elif ch in "'\"":
            quote, blank_ok = ch, True
            pos += 1
            continue
        if ch == "\\":
            if pos + 1 == end:
                pos += 1
                break
            pos += 1
            ch = text[pos]
        out.append(ch)
        pos += 1
    return "".join(out), blank_ok, pos


def _reject_constant(name: str) -> object:
    raise ValueError(name)  # Go's encoding/json has no NaN/Infinity


def _go_float(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        raise ValueError(text)  # Go cannot store it in a float64: a decode error, so shell form
    return value


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_go_float)
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_json_array(text: str) -> list[str] | None:
    """Decode an exec-form argument: a list of strings, or None when `text` is not a JSON array at all.

    Valid JSON that is not an array of strings raises DockerfileError (BuildKit does not fall back to
    the shell form then). Like BuildKit's `json.NewDecoder(...).Decode`, only the first JSON value counts:
    whatever follows the array is ignored (`CMD ["a"] x` is `["a"]`). Lone surrogates (from `\\ud800`
    escapes or undecodable bytes) become U+FFFD, as Go's decoder makes them.
    """
    text = text.lstrip(GO_SPACE)
    if not text.startswith("["):
        return None
    try:
        value, _ = _DECODER.raw_decode(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, list):
        return None
    for item in value:
        if not isinstance(item, str):
            raise DockerfileError(_NOT_STRING_ARRAY)
    return [_SURROGATE.sub("\ufffd", item) if _SURROGATE.search(item) else item for item in value]


def parse_name_val(text: str, key: str, escape: str = "\\") -> tuple[str, ...]:
    """ENV/LABEL arguments as flat (name, value, separator) triples, quotes kept (BuildKit parseNameVal).

    `NAME value...` is the legacy form (separator ""); `a=b c=d` the current one (separator "=").
    """
    words = parse_words(text, escape)
    if not words:
        return ()
    if "=" not in words[0]:
        parts = _TOKEN_WS.split(text, 1)
        if len(parts) < 2:
            raise DockerfileError(f"{key} must have two arguments")
        return (parts[0], parts[1], "")
    out: list[str] = []
    for word in words:
        name, sep, value = word.partition("=")
        if not sep:
            raise DockerfileError(
                f"Syntax error - can't find = in \"{word}\". Must be of the form: name=value"
            )
        out += (name, value, "=")
    return tuple(out)
