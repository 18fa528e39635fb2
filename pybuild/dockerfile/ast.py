"""The Dockerfile AST, shaped like BuildKit's `parser.Node`.

The parser (`pybuild.dockerfile.parser`) makes a `ParseResult`; `instructions` turns it into typed stages;
`pybuild parse` prints it with `dump()` (BuildKit's `Node.Dump()` format) or `to_json()`.

One `Node` is one instruction (a child of BuildKit's root node). Its `args` are the values of BuildKit's
`Next` chain: for ENV/LABEL the (name, value, separator) triples with quotes kept, for exec form the decoded
JSON elements, for shell form the single raw remainder of the line. ONBUILD keeps its trigger in `inner`.
"""

from __future__ import annotations

from pybuild.record import record
from pybuild.source import Diagnostic, SourceFile, Span


@record
class Heredoc:
    """One heredoc attached to an instruction (`<<EOF`, `<<-EOF`, `3<<'EOF'`).

    `content` is raw: for `<<-` the leading tabs are still there and `chomp` is True (BuildKit strips them
    later). `expand` is False when any part of the delimiter was quoted.
    """

    name: str
    file_descriptor: int
    expand: bool
    chomp: bool
    content: str


@record
class Node:
    """One instruction as parsed, before any validation."""

    keyword: str
    """The instruction word as written (`RUN`, `run`, `Foo`)."""
    args: tuple[str, ...]
    flags: tuple[str, ...]
    json: bool
    original: str
    """The instruction's text with continuations joined, as BuildKit's `Node.Original`."""
    span: Span
    heredocs: tuple[Heredoc, ...] = ()
    inner: Node | None = None
    """The trigger of an ONBUILD instruction."""
    comments: tuple[str, ...] = ()
    """Comment lines directly above the instruction, without the `#` (BuildKit's `PrevComment`)."""

    @property
    def cmd(self) -> str:
        """The lower-case instruction name (BuildKit's `Node.Value`)."""
        return self.keyword.lower()

    @property
    def start_line(self) -> int:
        return self.span.line

    @property
    def end_line(self) -> int:
        return self.span.end_line


@record
class Directives:
    """Parser directives from the top of the file."""

    escape: str = "\\"
    syntax: str | None = None
    check: str | None = None
    other: tuple[tuple[str, str], ...] = ()
    """Recognised-but-unused keys as (lower-case key, value), in order."""


@record
class ParseResult:
    """What `parse()` returns: the instructions, the directives, the warnings, the source."""

    nodes: tuple[Node, ...]
    directives: Directives
    source: SourceFile
    warnings: tuple[Diagnostic, ...] = ()

    @property
    def start_line(self) -> int:
        return self.nodes[0].span.line if self.nodes else 0

    @property
    def end_line(self) -> int:
        return self.nodes[-1].span.end_line if self.nodes else 0


_GO_ESCAPES = {
    "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
    "\\": "\\\\", '"': '\\"',
}


def go_quote(value: str) -> str:
    """Quote like Go's `strconv.Quote`: printable Unicode kept, control and invalid bytes escaped.

    Lone surrogates come from undecodable input bytes (surrogateescape) and print as `\\xNN`.
    """
    out = ['"']
    for ch in value:
        esc = _GO_ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
            continue
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def dump_node(node: Node) -> str:
    """One instruction in BuildKit's `Node.Dump()` format, without the surrounding parentheses."""
    text = node.cmd
    if node.flags:
        text += " [" + " ".join(go_quote(flag) for flag in node.flags) + "]"
    if node.inner is not None:
        text += " (" + dump_node(node.inner) + ")"
    for arg in node.args:
        text += " " + go_quote(arg)
    return text.strip()


def dump(result: ParseResult) -> str:
    """The whole file in BuildKit's `Node.Dump()` format: one `(...)` line per instruction."""
    return "".join(f"({dump_node(node)})\n" for node in result.nodes)
