"""The plan as a graph, for analysis off the build's path: each op's inputs and users, the critical path
of a build given how long each op took, and a Graphviz DOT text of the DAG.

Who uses it: tooling and reports (a build report needs the critical path and a picture of the DAG); the
scheduler does not (`solve/scheduler.py` counts in-degrees itself). Standard library only: the DAG is
small and already in dependency order (`Plan.ops`: inputs first), so a longest path is one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pybuild.plan.ops import Op, Plan, op_inputs
from pybuild.record import record

__all__ = ["CriticalPath", "critical_path", "inputs", "to_dot", "users"]


def inputs(plan: Plan) -> dict[str, tuple[str, ...]]:
    """Each op's digest → the digests of its inputs (edges run input → user)."""
    return {digest: op_inputs(op) for digest, op in plan.ops.items()}


def users(plan: Plan) -> dict[str, tuple[str, ...]]:
    """Each op's digest → the digests of the ops that take it as an input, in plan order."""
    found: dict[str, list[str]] = {digest: [] for digest in plan.ops}
    for digest, op in plan.ops.items():
        for source in dict.fromkeys(op_inputs(op)):
            found.setdefault(source, []).append(digest)
    return {digest: tuple(ops) for digest, ops in found.items()}


@record
class CriticalPath:
    """The chain of ops whose durations add up to the longest (first op first) and that sum, in seconds."""

    ops: tuple[str, ...]
    seconds: float


def critical_path(plan: Plan, durations: Mapping[str, float]) -> CriticalPath:
    """The longest chain of dependent ops when op `d` takes `durations[d]` seconds (0 when absent: a cache
    hit, or an op that did not run); ties go to the op earlier in the plan."""
    finish: dict[str, float] = {}
    before: dict[str, str | None] = {}
    for digest, op in plan.ops.items():
        start, parent = 0.0, None
        for source in op_inputs(op):
            if source in finish and finish[source] > start:
                start, parent = finish[source], source
        finish[digest] = start + max(durations.get(digest, 0.0), 0.0)
        before[digest] = parent
    if not finish:
        return CriticalPath((), 0.0)
    last = max(finish, key=lambda d: finish[d])  # max keeps the first of equal ones
    chain: list[str] = []
    node: str | None = last
    while node is not None:
        chain.append(node)
        node = before[node]
    return CriticalPath(tuple(reversed(chain)), finish[last])


def _default_label(digest: str, op: Op) -> str:
    kind = type(op).__name__.removesuffix("Op")
    return f"{kind} {digest.removeprefix('sha256:')[:12]}"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(plan: Plan, label: Callable[[str, Op], str] | None = None) -> str:
    """Graphviz DOT text of the plan: one node per op (labelled `label(digest, op)`, by default the op kind
    and a short digest; the target drawn bold), one edge per input, input → user."""
    label = label or _default_label
    lines = ["digraph plan {", "  rankdir=LR;", "  node [shape=box];"]
    for digest, op in plan.ops.items():
        style = ", style=bold" if digest == plan.target else ""
        lines.append(f"  {_quoted(digest)} [label={_quoted(label(digest, op))}{style}];")
    for digest, op in plan.ops.items():
        for source in dict.fromkeys(op_inputs(op)):
            lines.append(f"  {_quoted(source)} -> {_quoted(digest)};")
    lines.append("}")
    return "\n".join(lines) + "\n"
