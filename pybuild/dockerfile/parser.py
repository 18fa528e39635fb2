"""The Dockerfile parser: `parse()` turns Dockerfile text into a `ParseResult` (BuildKit's AST shape).

Two halves. `scanner.scan()` does what is not context-free (directives, continuations, comments, heredoc
bodies) and emits a few coarse tokens per instruction. The LALR(1) grammar in grammar/dockerfile.lark
gives those tokens their structure; reductions build `Node`s directly (no parse tree), splitting each
instruction's arguments the way BuildKit's dispatch table does.

Start-up: importing lark costs ~100 ms, too much for `pybuild check`. Lark is used only to compute the
LALR table from the grammar (with `strict=True`, so a conflict is an error). The table is cached as JSON
in `$XDG_CACHE_HOME/pybuild` (or `~/.cache/pybuild`), keyed by a hash of the grammar text and the lark
version, written atomically; later runs load it and drive it with the small LALR loop below, without
importing lark. A corrupt cache is rebuilt; an unwritable one falls back to an in-memory table.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pybuild.dockerfile.ast import Heredoc, Node, ParseResult
from pybuild.dockerfile.heredoc import (
    chomp_heredoc_content,
    heredocs_from_line,
    parse_heredoc,
)
from pybuild.dockerfile.scanner import (
    DirectiveMatch,
    Head,
    Token,
    detect_syntax,
    parse_directive,
    parse_directives,
    scan,
    scan_directives,
)
from pybuild.dockerfile.words import (
    parse_json_array,
    parse_name_val,
    parse_words,
    split_whitespace,
)
from pybuild.errors import DockerfileError, PybuildError
from pybuild.record import record
from pybuild.source import SourceFile, Span

__all__ = [
    "DirectiveMatch",
    "build_lark",
    "chomp_heredoc_content",
    "detect_syntax",
    "grammar_path",
    "heredocs_from_line",
    "parse",
    "parse_directive",
    "parse_directives",
    "parse_heredoc",
    "parse_json_array",
    "parse_words",
    "scan_directives",
]

_TABLE_FORMAT = "1"
_VERSION_LINE = re.compile(r"^__version__\s*[:=][^'\"]*['\"]([^'\"]+)['\"]", re.MULTILINE)


# --- the grammar and its cached LALR table ------------------------------------------------------


def grammar_path() -> str:
    """grammar/dockerfile.lark: inside the installed package (wheel) or at the checkout's root.

    os.path rather than pathlib: pathlib's import costs ~3 ms of `pybuild check`'s start-up.
    """
    package = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    installed = os.path.join(package, "grammar", "dockerfile.lark")
    if os.path.isfile(installed):
        return installed
    return os.path.join(os.path.dirname(package), "grammar", "dockerfile.lark")


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def build_lark(strict: bool = True) -> Any:
    """A `lark.Lark` LALR parser for the grammar, fed by the scanner's tokens (imports lark)."""
    import lark
    from lark.lexer import Lexer

    class _Feed(Lexer):  # the scanner is the lexer: tokens arrive ready-made
        def __init__(self, conf: object) -> None:
            pass

        def lex(self, lexer_state: Any, parser_state: Any = None) -> Any:
            return iter(lexer_state)

    return lark.Lark(_read(grammar_path()), parser="lalr", lexer=_Feed, strict=strict)


@record
class _Table:
    states: tuple[dict[str, int], ...]
    """Per state: terminal or rule name → next state (>= 0, shift/goto) or ~rule index (reduce)."""
    rules: tuple[tuple[str, int], ...]
    """Per rule: (origin name, number of symbols)."""
    start: int
    end: int


def _table_from_lark() -> dict[str, Any]:
    parse_table = build_lark(strict=True).parser.parser.parser.parse_table
    rules: dict[Any, int] = {}
    states: list[dict[str, int]] = [{} for _ in range(len(parse_table.states))]
    for state, actions in parse_table.states.items():
        for symbol, (action, arg) in actions.items():
            if action.name == "Shift":
                states[state][symbol] = arg
            else:
                index = rules.setdefault(arg, len(rules))
                states[state][symbol] = ~index
    return {
        "format": _TABLE_FORMAT,
        "states": states,
        "rules": [[rule.origin.name, len(rule.expansion)] for rule in rules],
        "start": parse_table.start_states["start"],
        "end": parse_table.end_states["start"],
    }


def _lark_version() -> str:
    """lark's version read from its source, so that computing the cache key does not import lark."""
    for entry in sys.path:
        candidate = os.path.join(entry or ".", "lark", "__init__.py")
        try:
            match = _VERSION_LINE.search(_read(candidate))
        except OSError:
            continue
        return match.group(1) if match else "unknown"
    return "missing"


def _cache_file(grammar: str) -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = hashlib.sha256(f"{_TABLE_FORMAT}\0{_lark_version()}\0{grammar}".encode()).hexdigest()[:24]
    return os.path.join(base, "pybuild", f"dockerfile-lalr-{key}.json")


def _to_table(data: dict[str, Any]) -> _Table:
    if data.get("format") != _TABLE_FORMAT:
        raise ValueError("unknown table format")
    states = tuple(dict(state) for state in data["states"])
    rules = tuple((str(origin), int(size)) for origin, size in data["rules"])
    return _Table(states, rules, int(data["start"]), int(data["end"]))


def _write_atomic(path: str, text: str) -> None:
    from pybuild.atomic import write_atomic  # only when the cache is (re)built

    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, text.encode("utf-8"), prefix=".tmp-")


def load_table() -> _Table:
    """The grammar's LALR table: from the cache if valid, else computed with lark (and cached)."""
    grammar = _read(grammar_path())
    path = _cache_file(grammar)
    try:
        return _to_table(json.loads(_read(path)))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        pass
    data = _table_from_lark()
    try:
        _write_atomic(path, json.dumps(data, separators=(",", ":")))
    except OSError:
        pass  # read-only or full cache: use the in-memory table
    return _to_table(data)


_TABLE: _Table | None = None


def _table() -> _Table:
    global _TABLE
    if _TABLE is None:
        _TABLE = load_table()
    return _TABLE


# --- the LALR driver ------------------------------------------------------------------------------


def _drive(table: _Table, tokens: Sequence[Token], reduce: Callable[[str, list[Any]], Any]) -> list[Any]:
    """Run the LALR table over `tokens`; `reduce(origin, children)` builds each named rule's value.

    Values of rules whose name starts with `_` (inlined, as in Lark's trees) are spliced into the parent.
    """
    states, rules, end = table.states, table.rules, table.end
    state_stack = [table.start]
    values: list[Any] = []
    for kind, value in (*tokens, ("$END", None)):
        while True:
            action = states[state_stack[-1]].get(kind)
            if action is None:
                raise DockerfileError(f"unexpected {kind.lower()} token")
            if action >= 0:
                state_stack.append(action)
                values.append((kind, value))
                break
            origin, size = rules[~action]
            popped = values[len(values) - size :] if size else []
            del state_stack[len(state_stack) - size :]
            del values[len(values) - size :]
            if popped and type(popped[0]) is list and origin[0] == "_":
                children = popped[0]  # left recursion (`x*`): grow the list in place, not O(n^2)
                popped = popped[1:]
            else:
                children = []
            for item in popped:
                if type(item) is list:
                    children += item
                else:
                    children.append(item)
            state_stack.append(states[state_stack[-1]][origin])
            values.append(children if origin[0] == "_" or origin == "start" else reduce(origin, children))
            if kind == "$END" and state_stack[-1] == end:
                result: list[Any] = values[-1]
                return result
    raise DockerfileError("unexpected end of file")


# --- building nodes -------------------------------------------------------------------------------

_SHELL_STRING = frozenset({"run", "cmd", "entrypoint", "shell", "user", "workdir", "stopsignal", "maintainer"})
_WHITESPACE_LIST = frozenset({"from", "copy", "add", "volume", "expose"})


class _Builder:
    """Turns one reduced instruction rule into a `Node` (BuildKit's per-instruction arg parsers)."""

    def __init__(self, source: SourceFile, escape: str) -> None:
        self.source = source
        self.escape = escape

    def __call__(self, origin: str, children: list[Any]) -> Node:
        head: Head = children[0][1]
        flags: tuple[str, ...] = ()
        args: tuple[str, ...] = ()
        is_json = False
        heredocs: list[Heredoc] = []
        inner: Node | None = None
        for child in children[1:]:
            if isinstance(child, Node):
                inner = child
                heredocs += child.heredocs
                continue
            kind, value = child
            if kind == "FLAGS":
                flags = value
            elif kind == "EXEC":
                args, is_json = args + value, True
            elif kind == "TEXT":
                args += self._text_args(origin, value, head)
            elif kind == "KIND":
                args = (value,)
            elif kind == "HEREDOC":
                heredocs.append(value)
        if origin == "unknown":
            args = ("",)
        span = Span(self.source.name, head.line, head.col, head.end_line)
        return Node(
            head.keyword, args, flags, is_json, head.original, span, tuple(heredocs), inner, head.comments
        )

    def _text_args(self, origin: str, text: str, head: Head) -> tuple[str, ...]:
        if origin in _SHELL_STRING or origin == "healthcheck":
            return (text,)
        if origin in _WHITESPACE_LIST:
            return tuple(split_whitespace(text))
        if origin == "arg":
            return tuple(parse_words(text, self.escape))
        if origin in ("env", "label"):
            try:
                return parse_name_val(text, origin.upper(), self.escape)
            except DockerfileError as exc:
                exc.span = Span(self.source.name, head.line, head.col, head.end_line)
                exc.source = self.source
                raise
        return ()


# --- the front door -------------------------------------------------------------------------------


def decode(data: str | bytes) -> str:
    """Dockerfile bytes as text: UTF-8, undecodable bytes kept as surrogates, a leading BOM removed."""
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    return text.removeprefix("\ufeff")


def parse(data: str | bytes, name: str = "Dockerfile") -> ParseResult:
    """Parse a Dockerfile into its instructions, directives and warnings.

    Raises DockerfileError (with a span and the source) for anything wrong; nothing else escapes.
    """
    text = decode(data)
    source = SourceFile(name, text)
    try:
        scanned = scan(text, source)
        nodes = [
            item
            for item in _drive(_table(), scanned.tokens, _Builder(source, scanned.directives.escape))
            if isinstance(item, Node)
        ]
    except PybuildError as exc:
        if not isinstance(exc, DockerfileError):
            raise DockerfileError(exc.message, span=exc.span, source=source) from exc
        exc.source = exc.source or source
        exc.span = exc.span or Span(name, 1)
        raise
    except Exception as exc:  # a bug must not leak as IndexError & co. from the parser's boundary
        raise DockerfileError(f"cannot parse Dockerfile: {exc!r}", span=Span(name, 1), source=source) from exc
    if not nodes:
        last = text.count("\n") + 1
        raise DockerfileError("file with no instructions", span=Span(name, last), source=source)
    return ParseResult(tuple(nodes), scanned.directives, source, tuple(scanned.warnings))
