"""Rendering of errors and diagnostics for the terminal (plain text; no rich, so errors stay cheap)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pybuild.api import Diagnostic, SourceFile, Span
    from pybuild.errors import PybuildError

CONTEXT_LINES = 2


def render_snippet(source: SourceFile, span: Span) -> list[str]:
    """The lines around `span`, numbered, with `>>>` on the failing line and a caret under its column."""
    lines = source.text.splitlines()
    if not 1 <= span.line <= len(lines):
        return []
    first = max(1, span.line - CONTEXT_LINES)
    last = min(len(lines), span.line + CONTEXT_LINES)
    width = len(str(last))
    out: list[str] = []
    for number in range(first, last + 1):
        marker = ">>>" if number == span.line else "   "
        out.append(f" {marker} {number:>{width}} | {_printable(lines[number - 1])}")
        if number == span.line and span.col > 0:
            out.append(" " * (len(marker) + width + 5 + span.col) + "^")
    return out


def _printable(line: str) -> str:
    """Replace tabs and control characters so the caret column stays right."""
    return "".join(" " if ch == "\t" else (ch if ch.isprintable() else "?") for ch in line)


def render_error(exc: PybuildError) -> str:
    """`error: FILE:LINE:COL: message`, then the source lines around it and an optional hint."""
    out = [f"error: {exc}"]
    if exc.source is not None and exc.span is not None:
        out.extend(render_snippet(exc.source, exc.span))
    if exc.hint:
        out.append(f"hint: {exc.hint}")
    return "\n".join(out)


def render_diagnostic(diag: Diagnostic) -> str:
    """`warning: FILE:LINE: Rule: message` and the doc link when there is one."""
    text = f"warning: {diag.span}: {diag.rule}: {diag.message}"
    if diag.url:
        text += f"\n  see {diag.url}"
    return text
