"""Word and variable expansion for Dockerfile instructions: BuildKit's `shell.Lex` rules.

`Lexer` is made by the instruction layer (one per escape character) and called for every ENV, ARG, LABEL,
FROM, COPY, WORKDIR, ... word. It removes quotes and escapes and expands `$v`, `${v}`, `${v:-w}`, `${v-w}`,
`${v:+w}`, `${v+w}`, `${v:?m}`, `${v?m}`, `${v#p}`, `${v##p}`, `${v%p}`, `${v%%p}`, `${v/p/r}` and
`${v//p/r}`, exactly as BuildKit's frontend/dockerfile/shell/lex.go does, including its quirks:

* positional and special parameters (`$1`, `$@`, `$$`, `$#`, ...) are looked up like names and are never
  defined, so they expand to empty (`$999aaa` -> `aaa`);
* inside double quotes the escape character escapes only `"`, `$` and itself;
* an escape character at the very end of the word is dropped;
* `${v:=w}`, `${v=w}`, `${v:#p}` and other forms are errors;
* with duplicate definitions the last one wins.

Every call reports which variables it referenced: `matched` (defined, even if empty) and `unmatched`
(undefined). The instruction layer uses them for ARG cache keys, lint uses them for UndefinedVar.

Unlike BuildKit's `Lex`, a `Lexer` keeps no per-call state, so one instance may be shared between threads.
Every failure is a `DockerfileError`.

A size cap BuildKit does not have: an expanded word may be at most `MAX_EXPANSION` (1 MiB, counted in
characters) longer than the word as written, whatever the expansions in it (`$a$a`, `${v//x/$big}`). Forty
lines of `ARG aN=$a(N-1)$a(N-1)` would otherwise need 2**40 characters; they stop at the line that passes
1 MiB, with "failed to process ...: the expanded word is over 1 MiB larger than written". Literal text is
never refused (a 2 MiB heredoc expands as long as its variables add less than 1 MiB).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Final, TypeAlias

from pybuild.record import record

if TYPE_CHECKING:
    from dataclasses import (
        KW_ONLY,  # only a marker for mypy; `record` reads the annotation text
    )

from pybuild.dockerfile.shell_pattern import replace_pattern, trim_prefix, trim_suffix
from pybuild.errors import DockerfileError, InternalError

__all__ = ["MAX_EXPANSION", "Env", "Expansion", "Lexer", "build_env_map", "split_words"]

MAX_EXPANSION: Final = 1 << 20
"""How much longer than written an expanded word may be (characters; see the module docstring)."""

Env: TypeAlias = Mapping[str, str] | Sequence[str] | Sequence[tuple[str, str]]
"""An environment: a mapping, or an ordered sequence of `"K=V"` strings (a bare `"K"` means empty) or pairs."""

# Go's unicode.IsSpace: Latin-1 spaces plus the Unicode White_Space property (Python's isspace() also
# counts U+001C..U+001F, which Go does not).
_SPACES = "\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_SPACE_RUN = re.compile(f"[{_SPACES}]+")
_ASCII_NAME = re.compile(r"[A-Za-z0-9_]*")
_ASCII_DIGITS = re.compile(r"[0-9]*")
# POSIX special parameters; `0` is caught earlier as a digit.
_SPECIAL_PARAMS = frozenset("@*#?-$!0")


@lru_cache(maxsize=32)
def _specials(escape: str) -> re.Pattern[str]:
    """Characters that make a word need the slow path."""
    return re.compile(f"[$'\"{re.escape(escape)}]")


@lru_cache(maxsize=32)
def _plain_run(escape: str, stop: str) -> re.Pattern[str]:
    """A run of characters that `_Scan.until` copies unchanged (no `$`, quote, escape or stop char)."""
    return re.compile(f"[^$'\"{re.escape(escape)}{re.escape(stop)}]+")


@lru_cache(maxsize=32)
def _double_quoted_run(escape: str) -> re.Pattern[str]:
    return re.compile(f"[^$\"{re.escape(escape)}]+")


def _run_end(pattern: re.Pattern[str], text: str, pos: int) -> int:
    """End of the (possibly empty) ASCII run at `pos`; non-ASCII name characters are checked one by one."""
    match = pattern.match(text, pos)
    return match.end() if match is not None else pos


def _is_name_char(ch: str) -> bool:
    # Go's unicode.IsLetter / unicode.IsDigit are categories L* / Nd: Python's isalpha / isdecimal.
    return ch.isalpha() or ch.isdecimal() or ch == "_"


def split_words(text: str) -> list[str]:
    """Split unquoted text on whitespace (Go's unicode.IsSpace), dropping empty words."""
    return [word for word in _SPACE_RUN.split(text) if word]


def build_env_map(env: Env, *, case_insensitive: bool = False) -> dict[str, str]:
    """Turn an environment into a dict; the last definition of a name wins (BuildKit's BuildEnvs).

    With `case_insensitive` (Windows), keys are lower-cased, so `Path` and `PATH` are one variable.
    """
    if isinstance(env, str):
        raise InternalError("environment must be a mapping or a sequence, not a string")
    if isinstance(env, Mapping):
        pairs = env.items()
        if case_insensitive:
            return {key.lower(): value for key, value in pairs}
        return dict(pairs)
    result: dict[str, str] = {}
    for entry in env:
        if isinstance(entry, str):
            key, _, value = entry.partition("=")
        else:
            key, value = entry
        result[key.lower() if case_insensitive else key] = value
    return result


@record
class Expansion:
    """The result of expanding one word: made by `Lexer`, read by instructions, cache keys and lint.

    `words` holds exactly one word for single-word processing, and the split words (possibly none) for
    multi-word processing. `matched` names referenced variables that are defined (even if empty);
    `unmatched` names referenced variables that are not defined. Names are as written in the word.
    """

    words: tuple[str, ...]
    matched: frozenset[str]
    unmatched: frozenset[str]


_EMPTY: frozenset[str] = frozenset()


@record
class Lexer:
    """BuildKit's word expander (`shell.Lex`), configured once and reused for many words.

    `escape` is the Dockerfile's escape character (`\\` or a backtick). `raw_quotes` keeps quote characters
    in the output (they still group words), `skip_unset` leaves references to undefined variables as they
    were written, `raw_escapes` keeps escape characters in the output, and `case_insensitive` makes names
    match regardless of case (Windows platforms).
    """

    escape: str = "\\"
    _: KW_ONLY
    raw_quotes: bool = False
    skip_unset: bool = False
    case_insensitive: bool = False
    raw_escapes: bool = False

    def __post_init__(self) -> None:
        if len(self.escape) != 1:
            raise DockerfileError(f"invalid escape token {self.escape!r}: must be a single character")

    def process_word(self, word: str, env: Env) -> str:
        """Expand `word` into one string (BuildKit's ProcessWord); spaces inside are kept."""
        if _specials(self.escape).search(word) is None:
            return word
        return self._run(word, env, want_words=False).words[0]

    def process_words(self, word: str, env: Env) -> list[str]:
        """Expand `word` and split it into words (BuildKit's ProcessWords), e.g. for `COPY $SRCS /dst`."""
        if _specials(self.escape).search(word) is None:
            return split_words(word)
        return list(self._run(word, env, want_words=True).words)

    def process_word_with_matches(self, word: str, env: Env) -> Expansion:
        """Like `process_word`, and report the variables referenced."""
        if _specials(self.escape).search(word) is None:
            return Expansion((word,), _EMPTY, _EMPTY)
        return self._run(word, env, want_words=False)

    def process_words_with_matches(self, word: str, env: Env) -> Expansion:
        """Like `process_words`, and report the variables referenced."""
        if _specials(self.escape).search(word) is None:
            return Expansion(tuple(split_words(word)), _EMPTY, _EMPTY)
        return self._run(word, env, want_words=True)

    def _run(self, word: str, env: Env, *, want_words: bool) -> Expansion:
        scan = _Scan(self, word, env)
        words = _Words() if want_words else None
        try:
            result = scan.until("", self.raw_escapes, words)
        except DockerfileError as exc:
            raise DockerfileError(f"failed to process {_go_quote(word)}: {exc.message}") from None
        found = tuple(words.finish()) if words is not None else (result,)
        return Expansion(found, frozenset(scan.matched), frozenset(scan.unmatched))


def _go_quote(text: str) -> str:
    """Quote like Go's %q closely enough for an error message."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


class _Words:
    """Collects the words of multi-word processing (BuildKit's wordsStruct).

    Text from unquoted, unescaped characters and from `$` expansions splits on whitespace; quoted text and
    escaped characters join the current word as they are. Empty words are dropped.
    """

    __slots__ = ("current", "words")

    def __init__(self) -> None:
        self.current: list[str] = []
        self.words: list[str] = []

    def add_split(self, text: str) -> None:
        parts = _SPACE_RUN.split(text)
        self.current.append(parts[0])
        for part in parts[1:]:
            self._flush()
            self.current.append(part)

    def add_raw(self, text: str) -> None:
        self.current.append(text)

    def _flush(self) -> None:
        word = "".join(self.current)
        if word:
            self.words.append(word)
        self.current.clear()

    def finish(self) -> list[str]:
        self._flush()
        return self.words


class _Scan:
    """The state of one expansion: the text, the position, the environment and the names seen."""

    __slots__ = ("lex", "text", "pos", "env", "env_map", "matched", "unmatched", "raw_escapes", "limit")

    def __init__(self, lex: Lexer, text: str, env: Env) -> None:
        self.lex = lex
        self.text = text
        self.limit = len(text) + MAX_EXPANSION
        self.pos = 0
        self.env = env
        self.env_map: Mapping[str, str] | None = None
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()
        self.raw_escapes = lex.raw_escapes

    def lookup(self, name: str) -> str | None:
        """The value of `name`, or None if undefined; records the name as matched or unmatched."""
        if self.env_map is None:
            self.env_map = self._make_env_map()
        key = name.lower() if self.lex.case_insensitive else name
        value = self.env_map.get(key)
        (self.unmatched if value is None else self.matched).add(name)
        return value

    def _make_env_map(self) -> Mapping[str, str]:
        # A plain dict needs no copy in the common case-sensitive lookup.
        if isinstance(self.env, dict) and not self.lex.case_insensitive:
            return self.env
        return build_env_map(self.env, case_insensitive=self.lex.case_insensitive)

    def until(self, stop: str, raw_escapes: bool, words: _Words | None) -> str:
        """Expand up to the unescaped, unquoted `stop` character (consumed), or to the end if `stop` is ""."""
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        try:
            return self._until(stop, words)
        finally:
            self.raw_escapes = saved

    def _until(self, stop: str, words: _Words | None) -> str:
        text, end, escape = self.text, len(self.text), self.lex.escape
        plain = _plain_run(escape, stop)
        out: list[str] = []
        size = 0
        while self.pos < end:
            run = plain.match(text, self.pos)
            if run is not None:
                out.append(run.group())
                if words is not None:
                    words.add_split(run.group())
                self.pos = run.end()
                continue
            ch = text[self.pos]
            if ch == stop:
                self.pos += 1
                return "".join(out)
            if ch == "$":
                value = self.dollar()
                size = self.grow(size, value)
                if words is not None:
                    words.add_split(value)
            elif ch in "'\"":
                value = self.single_quote() if ch == "'" else self.double_quote()
                if words is not None:
                    words.add_raw(value)
            else:
                value = self.escaped()
                if words is not None:
                    words.add_raw(value)
            out.append(value)
        if stop:
            raise DockerfileError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(out)

    def grow(self, size: int, value: str) -> int:
        """`size` plus an expanded `value`; DockerfileError past the cap (`MAX_EXPANSION`)."""
        size += len(value)
        if size > self.limit:
            raise _too_large()
        return size

    def escaped(self) -> str:
        """The escape character and what follows: the next character, kept literally."""
        self.pos += 1
        prefix = self.lex.escape if self.raw_escapes else ""
        if self.pos >= len(self.text):
            return prefix  # an escape at the end of the word is dropped
        self.pos += 1
        return prefix + self.text[self.pos - 1]

    def single_quote(self) -> str:
        """Everything up to the next `'`, literally; no escapes inside."""
        close = self.text.find("'", self.pos + 1)
        if close < 0:
            raise DockerfileError("unexpected end of statement while looking for matching single-quote")
        start = self.pos if self.lex.raw_quotes else self.pos + 1
        self.pos = close + 1
        return self.text[start : close + 1] if self.lex.raw_quotes else self.text[start:close]

    def double_quote(self) -> str:
        """Up to the next unescaped `"`; `$` expands, the escape character escapes `"`, `$` and itself."""
        text, end, escape = self.text, len(self.text), self.lex.escape
        plain = _double_quoted_run(escape)
        out = ['"'] if self.lex.raw_quotes else []
        size = 0
        self.pos += 1
        while True:
            if self.pos >= end:
                raise DockerfileError("unexpected end of statement while looking for matching double-quote")
            run = plain.match(text, self.pos)
            if run is not None:
                out.append(run.group())
                self.pos = run.end()
                continue
            ch = text[self.pos]
            if ch == '"':
                self.pos += 1
                if self.lex.raw_quotes:
                    out.append('"')
                return "".join(out)
            if ch == "$":
                value = self.dollar()
                size = self.grow(size, value)
                out.append(value)
                continue
            out.append(self._double_quoted_escape())

    def _double_quoted_escape(self) -> str:
        self.pos += 1
        escape = self.lex.escape
        prefix = escape if self.raw_escapes else ""
        if self.pos >= len(self.text):
            return prefix  # then the missing closing quote is reported
        nxt = self.text[self.pos]
        if nxt in ('"', "$", escape):
            self.pos += 1
            return prefix + nxt
        return prefix + escape  # any other escape stays literal

    def name(self) -> str:
        """A variable name: digits only (positional), one special character, or letters, digits and `_`."""
        text, pos = self.text, self.pos
        if pos >= len(text):
            return ""
        first = text[pos]
        if first.isdecimal():
            end = _run_end(_ASCII_DIGITS, text, pos)
            while end < len(text) and text[end].isdecimal():
                end += 1
        elif first in _SPECIAL_PARAMS:
            end = pos + 1
        else:
            end = _run_end(_ASCII_NAME, text, pos)
            while end < len(text) and _is_name_char(text[end]):
                end += 1
        self.pos = end
        return text[pos:end]

    def dollar(self) -> str:
        """Expand the `$...` at the current position."""
        self.pos += 1
        if self.pos >= len(self.text) or self.text[self.pos] != "{":
            name = self.name()
            if not name:
                return "$"
            value = self.lookup(name)
            if value is None:
                return "$" + name if self.lex.skip_unset else ""
            return value
        return self.braced()

    def braced(self) -> str:
        """Expand `${...}`; the position is on the `{`."""
        self.pos += 1
        if self.pos >= len(self.text):
            raise DockerfileError("syntax error: missing '}'")
        if self.text[self.pos] in "{}:":
            raise DockerfileError("syntax error: bad substitution")
        name = self.name()
        if self.pos >= len(self.text):
            raise DockerfileError("syntax error: missing '}'")
        op = self.text[self.pos]
        self.pos += 1
        if op == "}":
            value = self.lookup(name)
            if value is None:
                return "${" + name + "}" if self.lex.skip_unset else ""
            return value
        if op == ":":
            if self.pos >= len(self.text):
                raise DockerfileError("syntax error: missing '}'")
            self.pos += 1
            return self.modifier(name, self.text[self.pos - 1], ":" + self.text[self.pos - 1])
        if op in "+-?#%":
            return self.modifier(name, op, op)
        if op == "/":
            return self.substitute(name)
        raise DockerfileError(f"unsupported modifier ({op}) in substitution")

    def until_brace(self, raw_escapes: bool) -> str:
        """The rest of a `${...}` operand, up to the closing brace."""
        try:
            return self.until("}", raw_escapes, None)
        except DockerfileError:
            if self.pos >= len(self.text):
                raise DockerfileError("syntax error: missing '}'") from None
            raise

    def modifier(self, name: str, op: str, spelled: str) -> str:
        """`${name<spelled>word}` where `spelled` is `op` or `:op`; a colon makes empty count as unset."""
        word = self.until_brace(op in "#%")
        value = self.lookup(name)
        if value is None and self.lex.skip_unset:
            return "${" + name + spelled + word + "}"
        unset = value is None or (spelled[0] == ":" and value == "")
        if op == "-":
            return word if unset else (value or "")
        if op == "+":
            return "" if unset else word
        if op == "?":
            if unset:
                fallback = "is not allowed to be unset" if value is None else "is not allowed to be empty"
                raise DockerfileError(f"{name}: {word or fallback}")
            return value or ""
        if op in "#%" and spelled[0] != ":":
            greedy = word.startswith(op)
            pattern = word[1:] if greedy else word
            trim = trim_prefix if op == "#" else trim_suffix
            return trim(pattern, value or "", greedy)
        raise DockerfileError(f"unsupported modifier ({spelled}) in substitution")

    def substitute(self, name: str) -> str:
        """`${name/pattern/replacement}` and `${name//pattern/replacement}`; the first `/` is consumed."""
        replace_all = self.pos < len(self.text) and self.text[self.pos] == "/"
        if replace_all:
            self.pos += 1
        try:
            pattern = self.until("/", True, None)
        except DockerfileError:
            if self.pos >= len(self.text):
                raise DockerfileError("syntax error: missing '/' in ${}") from None
            raise
        replacement = self.until_brace(True)
        value = self.lookup(name)
        if value is None and self.lex.skip_unset:
            # BuildKit writes a single `/` back even for `//`; kept for identical output.
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        result = replace_pattern(value or "", pattern, replacement, replace_all, self.limit)
        if result is None:
            raise _too_large()
        return result


def _too_large() -> DockerfileError:
    return DockerfileError(f"the expanded word is over {MAX_EXPANSION >> 20} MiB larger than written (pybuild's "
                           "limit on one expansion)")
