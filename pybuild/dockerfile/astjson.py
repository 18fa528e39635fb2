"""The AST as JSON: what `pybuild parse --json` prints.

One object per instruction. The fields mean what the fields of the PyPI `dockerfile` package's `Command`
mean (a thin wrapper over BuildKit's parser), so tools written against that package read our output
unchanged, and the differential tests (`tests/differential/test_oracle.py`) compare the two field by field:

- `cmd`: the instruction word as written (`RUN`, `run`); None for the empty instruction a lone escape
  character at the end of the file makes (the package turns every empty string but `value`'s into None).
- `sub_cmd`: for ONBUILD, the trigger word as written; otherwise None.
- `json`: exec (JSON array) form; for ONBUILD, the trigger's form.
- `original`: the instruction's text with continuations joined (None when empty); when it has heredocs,
  each body and its terminator follow, one per line (the terminator without `<<-` tabs). For ONBUILD,
  the line alone.
- `start_line`, `end_line`: 1-based, heredoc bodies included.
- `flags`: the `--flag` words; for ONBUILD the flags written before the trigger word.
- `value`: BuildKit's `Next` chain, except that ENV/LABEL give (name, value) pairs without the separator
  entries; an unknown instruction gives `[""]`, an ONBUILD trigger that is itself ONBUILD gives `[""]`
  (BuildKit's empty node that holds the nested instruction).
- `heredocs`: `{name, file_descriptor, content, expand, chomp}`; content is raw (for `<<-` the tabs are
  still there). Always empty for ONBUILD: BuildKit hangs a trigger's heredocs on the ONBUILD node and the
  package reads them from the trigger, so it reports none (the bodies are still consumed: see end_line).
"""

from __future__ import annotations

from pybuild.dockerfile.ast import Heredoc, Node, ParseResult

__all__ = ["to_json", "node_to_json"]

# The instructions BuildKit's parser dispatches on; any other word is parsed as "ignored" (one empty value).
_KNOWN = frozenset(
    {
        "add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "from", "healthcheck", "label",
        "maintainer", "onbuild", "run", "shell", "stopsignal", "user", "volume", "workdir",
    }
)
_NAME_VALUE = frozenset({"env", "label"})


def to_json(result: ParseResult) -> list[dict[str, object]]:
    """Render every instruction of `result` as a JSON-ready dict (see the module docstring)."""
    return [node_to_json(node) for node in result.nodes]


def node_to_json(node: Node) -> dict[str, object]:
    """One instruction as a JSON-ready dict."""
    if node.cmd == "onbuild" and node.inner is not None:
        trigger = node.inner
        original = _first_line(node.original)
        return _command(node, trigger.keyword or None, trigger.json, original, _values(trigger), ())
    return _command(node, None, node.json, node.original, _values(node), node.heredocs)


def _command(
    node: Node,
    sub_cmd: str | None,
    is_json: bool,
    original: str,
    value: list[str],
    heredocs: tuple[Heredoc, ...],
) -> dict[str, object]:
    return {
        "cmd": node.keyword or None,
        "sub_cmd": sub_cmd,
        "json": is_json,
        "original": original or None,
        "start_line": node.start_line,
        "end_line": node.end_line,
        "flags": list(node.flags),
        "value": value,
        "heredocs": [_heredoc(doc) for doc in heredocs],
    }


def _values(node: Node) -> list[str]:
    """BuildKit's `Next` chain of `node`, as the package reports it."""
    cmd = node.cmd
    if cmd not in _KNOWN:
        return [""]
    if cmd == "onbuild":
        return [""] if node.inner is not None else []
    if cmd in _NAME_VALUE:
        # args are (name, value, separator) triples; the package drops the separators.
        return [arg for index, arg in enumerate(node.args) if index % 3 != 2]
    return list(node.args)


def _first_line(original: str) -> str:
    """The instruction line of `original`, without the heredoc bodies the parser appends to it."""
    return original.split("\n", 1)[0]


def _heredoc(doc: Heredoc) -> dict[str, object]:
    return {
        "name": doc.name,
        "file_descriptor": doc.file_descriptor,
        "content": doc.content,
        "expand": doc.expand,
        "chomp": doc.chomp,
    }
