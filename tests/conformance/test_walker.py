"""tonistiigi/fsutil's filter tables (README section 4) run through `pybuild.context.walk`.

Each case builds its `tree` in a temporary directory, walks it with the case's filter (or stacked
`filter_chain`, innermost first) and compares the emitted `"<kind> <path>"` lines in order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pybuild.context.entry import Entry
from pybuild.context.walk import WalkFilter, walk, walk_chain
from pybuild.errors import ContextError
from tests.conftest import conformance_path


def _params() -> list[Any]:
    path = conformance_path("fsutil-walker", "walker_filter_cases.json")
    cases = json.loads(path.read_text(encoding="utf-8"))["cases"]
    return [pytest.param(case, id=f"{i:02d}-{case['test']}") for i, case in enumerate(cases)]


def _build(root: Path, tree: list[str]) -> None:
    for line in tree:
        verb, path, kind, *data = line.split(" ", 3)
        assert verb == "ADD", line
        target = root / path
        if kind == "dir":
            target.mkdir()
        elif kind == "file":
            target.write_text(data[0] if data else "")
        elif kind.startswith("symlink"):
            os.symlink(data[0], target)
        else:
            raise AssertionError(f"unknown tree line: {line}")


def _layer(spec: dict[str, list[str]]) -> WalkFilter:
    return WalkFilter(includes=tuple(spec.get("IncludePatterns", ())),
                      excludes=tuple(spec.get("ExcludePatterns", ())))


def _line(entry: Entry) -> str:
    kind = f"symlink:{entry.link_target}" if entry.kind == "symlink" else entry.kind
    return f"{kind} {entry.path}"


@pytest.mark.parametrize("case", _params())
def test_walker_case(case: Any, tmp_path: Path) -> None:
    _build(tmp_path, case["tree"])
    layers = [_layer(spec) for spec in case.get("filter_chain", [case.get("filter", {})])]

    def run() -> Iterator[Entry]:
        if "filter_chain" in case:
            return walk_chain(str(tmp_path), layers)
        return walk(str(tmp_path), includes=layers[0].includes, excludes=layers[0].excludes)

    if case.get("expected_error"):
        with pytest.raises(ContextError):
            run()  # raised when the walk is set up, before any entry is read
        return
    assert [_line(entry) for entry in run()] == case["expected_walk"]
    if "filter_chain" in case:  # a path excluded by any layer stays excluded, whatever the order
        assert [_line(entry) for entry in walk_chain(str(tmp_path), layers[::-1])] == case["expected_walk"]
