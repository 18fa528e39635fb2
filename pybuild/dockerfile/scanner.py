"""The hand-written half of the Dockerfile parser: everything that is not context-free.

`scan()` walks the physical lines once, as BuildKit's `parser.Parse` does: parser directives at the top,
comment lines (kept as the next instruction's `comments`), `\\` (or backtick) continuations joined with
comment lines dropped and empty lines warned about, the instruction word and builder flags split off,
exec vs shell form decided, and heredoc bodies read. It returns coarse tokens, a handful per instruction,
for the LALR parser in `parser.py` (grammar/dockerfile.lark), plus the directives and warnings.

`parse_directives`, `detect_syntax` and `parse_directive` are BuildKit's directives.go: the `#` block at
the top of a file, and for `syntax` also `//` comments and a JSON first line.
"""

from __future__ import annotations

import json
import re

from pybuild.dockerfile.ast import Directives, Heredoc
from pybuild.dockerfile.heredoc import heredocs_from_line
from pybuild.dockerfile.words import GO_SPACE, parse_json_array, split_command
from pybuild.errors import DockerfileError
from pybuild.record import record
from pybuild.source import Diagnostic, SourceFile, Span

MAX_LINE_BYTES = 65535
_DIRECTIVE = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*\Z")
_VALID_DIRECTIVES = frozenset({"syntax", "escape", "check"})
_EMPTY_CONTINUATION_URL = "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/"

KEYWORDS = {
    name.lower(): name
    for name in (
        "FROM RUN CMD ENTRYPOINT SHELL COPY ADD VOLUME HEALTHCHECK ENV LABEL ARG EXPOSE USER "
        "WORKDIR STOPSIGNAL MAINTAINER ONBUILD"
    ).split()
}
"""Lower-case instruction word → grammar terminal; any other word is the terminal UNKNOWN."""
_MAYBE_JSON = frozenset({"run", "cmd", "entrypoint", "shell", "copy", "add", "volume"})
_HEREDOC_CAPABLE = frozenset({"run", "copy", "add"})

Token = tuple[str, object]


class Head:
    """What the parser needs about one instruction besides its arguments (value of a keyword token).

    Mutable (the scanner fills in `end_line` late) and internal to the parser, so a plain slotted class.
    """

    __slots__ = ("keyword", "original", "line", "col", "end_line", "comments")

    def __init__(self, keyword: str, original: str, line: int, col: int, end_line: int = 0,
                 comments: tuple[str, ...] = ()) -> None:
        self.keyword = keyword
        self.original = original
        self.line = line
        self.col = col
        self.end_line = end_line
        self.comments = comments


@record
class DirectiveMatch:
    """A directive found by `detect_syntax`/`parse_directive`/`parse_directives` (1-based `line`)."""

    name: str
    value: str
    cmdline: str
    line: int


class Scan:
    """The scanner's output: tokens for the grammar, the directives, the warnings (internal, mutable)."""

    __slots__ = ("tokens", "directives", "warnings")

    def __init__(self, tokens: list[Token], directives: Directives,
                 warnings: list[Diagnostic] | None = None) -> None:
        self.tokens = tokens
        self.directives = directives
        self.warnings: list[Diagnostic] = [] if warnings is None else warnings


# --- directives ---------------------------------------------------------------------------------


def _match_directive(text: str, prefix: str) -> tuple[str, str] | None:
    if not text.startswith(prefix):
        return None
    match = _DIRECTIVE.match(text[len(prefix) :].lstrip(GO_SPACE))
    if match is None or match.group(1).lower() not in _VALID_DIRECTIVES:
        return None
    return match.group(1).lower(), match.group(2)


def parse_directives(text: str, prefix: str = "#", first_line: int = 1) -> list[DirectiveMatch]:
    """The directive block at the top of `text` (BuildKit DirectiveParser.ParseAll; a repeat stops it)."""
    found: list[DirectiveMatch] = []
    seen: set[str] = set()
    for number, line in enumerate(text.split("\n"), start=first_line):
        hit = _match_directive(line.removesuffix("\r"), prefix)
        if hit is None or hit[0] in seen:
            break
        seen.add(hit[0])
        found.append(DirectiveMatch(hit[0], hit[1].split(" ", 1)[0], hit[1], number))
    return found


def scan_directives(text: str) -> Directives:
    """The `#` parser directives at the top of a Dockerfile as a `Directives` record."""
    values = {match.name: match.cmdline for match in parse_directives(text.removeprefix("\ufeff"))}
    return Directives(
        escape=values.get("escape", "\\"), syntax=values.get("syntax"), check=values.get("check")
    )


def parse_directive(key: str, data: str | bytes, any_format: bool = False) -> DirectiveMatch | None:
    """Find directive `key` (BuildKit ParseDirective; with `any_format` also `//key=` and JSON)."""
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    text = text.removeprefix("\ufeff")
    first_line = 1
    head, newline, rest = text.partition("\n")
    if head.startswith("#!"):
        text, first_line = rest, 2
    for prefix in ("#", "//") if any_format else ("#",):
        for match in parse_directives(text, prefix, first_line):
            if match.name == key:
                return match
    if any_format:
        return _json_directive(key, text, first_line - 1)
    return None


def _json_directive(key: str, text: str, line: int) -> DirectiveMatch | None:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if isinstance(value, dict) and isinstance(value.get(key), str):
        return DirectiveMatch(key, value[key], value[key], line)
    return None


def detect_syntax(data: str | bytes) -> DirectiveMatch | None:
    """The frontend image named by `# syntax=`, `//syntax=` or a JSON `{"syntax": ...}` first line."""
    return parse_directive("syntax", data, any_format=True)


# --- instruction scanning -----------------------------------------------------------------------


class _Lines:
    """Physical lines plus the position of the next one (1-based numbers = index + 1)."""

    __slots__ = ("lines", "pos", "newline_at_end", "name", "source")

    def __init__(self, text: str, source: SourceFile) -> None:
        self.lines = text.split("\n")
        self.newline_at_end = self.lines[-1] == ""
        if self.newline_at_end:
            self.lines.pop()
        self.pos = 0
        self.name = source.name
        self.source = source

    def error(self, message: str, line: int, end_line: int = 0, col: int = 0) -> DockerfileError:
        span = Span(self.name, line, col, end_line or line)
        return DockerfileError(message, span=span, source=self.source)


def check_line_lengths(lines: list[str], source: SourceFile) -> None:
    """Reject a physical line of 65536 bytes or more, as BuildKit's line scanner does."""
    if not lines or max(map(len, lines)) * 4 <= MAX_LINE_BYTES:
        return
    for number, line in enumerate(lines, start=1):
        if len(line) * 4 > MAX_LINE_BYTES and len(line.encode("utf-8", "surrogateescape")) > MAX_LINE_BYTES:
            message = f"dockerfile line greater than max allowed size of {MAX_LINE_BYTES}"
            raise DockerfileError(message, span=Span(source.name, number, 0, number), source=source)


def scan(text: str, source: SourceFile) -> Scan:
    """Turn the decoded Dockerfile `text` (BOM removed) into grammar tokens; see the module docstring."""
    src = _Lines(text, source)
    check_line_lengths(src.lines, source)
    lines = src.lines
    count = len(lines)
    tokens: list[Token] = []
    warnings: list[Diagnostic] = []
    comments: list[str] = []
    seen: dict[str, str] = {}
    escape = "\\"
    in_directives = True
    while src.pos < count:
        body = lines[src.pos].rstrip("\r")
        src.pos += 1
        stripped = body.lstrip(GO_SPACE)
        if in_directives:
            hit = _match_directive(stripped, "#")
            if hit is None:
                in_directives = False
            else:
                escape = _record_directive(src, seen, hit, escape)
        if not stripped:
            continue
        if stripped[0] == "#":
            comment = body[1:].strip(GO_SPACE)  # BuildKit drops the first byte, whatever it is
            comments = comments + [comment] if comment else []
            continue
        tokens += _scan_instruction(src, stripped, len(body) - len(stripped) + 1, escape, comments, warnings)
        comments = []
    return Scan(tokens, Directives(escape, seen.get("syntax"), seen.get("check")), warnings)


def _record_directive(src: _Lines, seen: dict[str, str], hit: tuple[str, str], escape: str) -> str:
    key, value = hit
    if key in seen:
        raise src.error(f"only one {key} parser directive can be used", src.pos)
    seen[key] = value
    if key != "escape":
        return escape
    if value not in ("\\", "`"):
        raise src.error(f"invalid escape token '{value}' does not match ` or \\", src.pos)
    return value


def _trim_continuation(line: str, escape: str) -> tuple[str, bool]:
    """Remove a trailing escape char (plus spaces/tabs); the bool says whether the line continues."""
    last = line[-1:]
    if last != escape and last != " " and last != "\t":
        return line, False  # the common case, without building a new string
    end = line.rstrip(" \t")
    if end.endswith(escape) and (len(end) == 1 or end[-2] != escape):
        return end[:-1], True
    return line, False


def _join_continuation(src: _Lines, first: str, escape: str) -> tuple[str, bool]:
    """Join continuation lines onto `first`; returns the logical line and whether a blank line was seen."""
    line, more = _trim_continuation(first, escape)
    if not more:
        return line, False
    parts = [line]
    lines, count = src.lines, len(src.lines)
    empty = False
    while more and src.pos < count:
        body = lines[src.pos].rstrip("\r")
        src.pos += 1
        stripped = body.lstrip(GO_SPACE)
        if not stripped:
            empty = True
        elif stripped[0] != "#":
            part, more = _trim_continuation(body, escape)
            parts.append(part)
    return "".join(parts), empty


def _scan_instruction(
    src: _Lines, first: str, col: int, escape: str, comments: list[str], warnings: list[Diagnostic]
) -> list[Token]:
    start = src.pos
    line, empty = _join_continuation(src, first, escape)
    if empty:
        span = Span(src.name, src.pos, 0, src.pos)
        message = "Empty continuation line found in: " + line
        warnings.append(Diagnostic("NoEmptyContinuation", message, span, _EMPTY_CONTINUATION_URL))
    head = Head("", line, start, col, comments=tuple(comments))
    try:
        tokens, capable = _instruction_tokens(head, line)
        heredocs = _read_heredocs(src, line, start) if capable and "<<" in line else []
    except DockerfileError as exc:
        if exc.span is None:
            exc.span = Span(src.name, start, col, src.pos)
            exc.source = src.source
        raise
    head.end_line = src.pos
    if heredocs:
        head.original = line + "\n" + "".join(doc.content + doc.name + "\n" for doc in heredocs)
        tokens += [("HEREDOC", doc) for doc in heredocs]
    tokens.append(("EOL", head))
    return tokens


# `ONBUILD ONBUILD ...` parses (BuildKit's AST nests it) but never builds; past this depth the parser stops
# with the instruction layer's error instead of nesting (and recursing) once per word.
_MAX_ONBUILD_NESTING = 16


def _instruction_tokens(head: Head, line: str, depth: int = 0) -> tuple[list[Token], bool]:
    """Tokens for one instruction line (without EOL) and whether it may carry heredocs."""
    keyword, flags, args = split_command(line)
    head.keyword = keyword
    cmd = keyword.lower()
    tokens: list[Token] = [(KEYWORDS.get(cmd, "UNKNOWN"), head)]
    if flags:
        tokens.append(("FLAGS", flags))
    if not args:
        return tokens, False
    if cmd in _MAYBE_JSON:
        exec_form = parse_json_array(args)
        if exec_form is not None:
            tokens.append(("EXEC", tuple(exec_form)))
            return tokens, False
        tokens.append(("TEXT", args))
        return tokens, cmd in _HEREDOC_CAPABLE
    if cmd == "healthcheck":
        tokens += _healthcheck_tokens(args)
    elif cmd == "onbuild":
        if depth >= _MAX_ONBUILD_NESTING:
            raise DockerfileError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        inner = Head("", args, head.line, head.col, comments=())
        inner_tokens, capable = _instruction_tokens(inner, args, depth + 1)
        tokens += inner_tokens
        return tokens, capable and inner.keyword.lower() != "onbuild"
    else:
        tokens.append(("TEXT", args))
    return tokens, False


# BuildKit's parseHealthConfig tests single BYTES with unicode.IsSpace(rune(b)): the ASCII blanks and also
# 0x85 and 0xA0, which in UTF-8 occur only inside multi-byte characters (so `CMD \u00a0x` keeps its NBSP).
_BYTE_SPACE = re.compile(rb"[\t\n\v\f\r \x85\xa0]")
_BYTE_NON_SPACE = re.compile(rb"[^\t\n\v\f\r \x85\xa0]")


def _healthcheck_tokens(args: str) -> list[Token]:
    """HEALTHCHECK's first word (CMD, NONE, ...) then the rest as exec or shell form."""
    data = args.encode("utf-8", "surrogateescape")
    space = _BYTE_SPACE.search(data)
    sep = space.start() if space is not None else len(data)
    word = _BYTE_NON_SPACE.search(data, sep)
    after = word.start() if word is not None else len(data)
    kind = data[:sep].decode("utf-8", "surrogateescape")
    rest = data[after:].decode("utf-8", "surrogateescape")
    tokens: list[Token] = [("KIND", kind)]
    if rest:
        exec_form = parse_json_array(rest)
        tokens.append(("EXEC", tuple(exec_form)) if exec_form is not None else ("TEXT", rest))
    return tokens


def _read_heredocs(src: _Lines, line: str, start: int) -> list[Heredoc]:
    """Read the bodies of the heredocs `line` opens, in order, from the following physical lines."""
    docs = []
    lines, count = src.lines, len(src.lines)
    for doc in heredocs_from_line(line):
        content: list[str] = []
        terminated = False
        while src.pos < count:
            raw = lines[src.pos]
            src.pos += 1
            candidate = raw.rstrip("\r")
            if doc.chomp:
                candidate = candidate.lstrip("\t")
            if candidate == doc.name:
                terminated = True
                break
            content.append(raw + "\n" if src.pos < count or src.newline_at_end else raw)
        if not terminated:
            raise src.error("unterminated heredoc", start, src.pos)
        docs.append(
            Heredoc(doc.name, doc.file_descriptor, doc.expand, doc.chomp, "".join(content))
        )
    return docs
