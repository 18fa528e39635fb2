"""Source files and spans.

A `SourceFile` is the text of one input (a Dockerfile, an ignore file) plus its display name. A `Span`
points into one: 1-based lines, 1-based columns (0 where the column is not known). Every AST node,
typed command and, later, every op carries a span so that errors can point at the Dockerfile.
"""

from __future__ import annotations

from pybuild.record import record


@record
class SourceFile:
    """The decoded text of an input file and the name errors show for it."""

    name: str
    text: str

    def line(self, number: int) -> str:
        """Return 1-based line `number` without its newline ('' when out of range)."""
        lines = self.text.splitlines()
        if 1 <= number <= len(lines):
            return lines[number - 1]
        return ""


@record
class Span:
    """A region of a source file: start line/col to end line/col, 1-based (col 0 = unknown)."""

    file: str
    line: int
    col: int = 0
    end_line: int = 0
    end_col: int = 0

    def __str__(self) -> str:
        if self.col:
            return f"{self.file}:{self.line}:{self.col}"
        return f"{self.file}:{self.line}"


@record
class Diagnostic:
    """A warning about an input: the rule that fired, a message, where, and a doc link.

    The parser makes them (empty continuation lines), so does lint; the CLI prints them. They are data,
    never exceptions.
    """

    rule: str
    message: str
    span: Span
    url: str = ""

    def __str__(self) -> str:
        return f"{self.span}: {self.rule}: {self.message}"
