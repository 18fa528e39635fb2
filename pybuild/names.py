"""What progress shows for each op, and which ops belong to a stage (for `--no-cache-filter`).

Who uses it: `pybuild.api` (step names for the solver's events; the op set `--no-cache-filter` turns the
cache off for). Names follow BuildKit's progress: `[stage 2/5] RUN make` (stage name, or `stage-N` for an
unnamed stage; position among the stage's instructions counting FROM as 1), `[internal] load build
context` for a context source. An op made by several identical instructions takes its first span's name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from pybuild.plan.ops import ContextSourceOp, ImageSourceOp, Op, Plan

if TYPE_CHECKING:  # a memoised rebuild calls `stage_ops` without loading the frontend
    from pybuild.dockerfile.ast import ParseResult
    from pybuild.dockerfile.instructions import Stage, Stages
    from pybuild.source import Span

__all__ = ["stage_ops", "step_names"]

_MAX_TEXT = 80


def _label(stage: Stage) -> str:
    return stage.name if stage.name is not None else f"stage-{stage.index}"


def _stage_at(stages: Stages, span: Span) -> Stage | None:
    found: Stage | None = None
    for stage in stages.stages:
        if stage.span.file == span.file and stage.span.line <= span.line:
            found = stage
    return found


def _text(source: ParseResult, span: Span) -> str:
    lines = source.source.text.splitlines()
    text = lines[span.line - 1].strip() if 1 <= span.line <= len(lines) else ""
    text = " ".join(text.split())
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT - 3] + "..."


def step_name(op: Op, stages: Stages, source: ParseResult) -> str:
    """The progress name of one op."""
    if isinstance(op, ContextSourceOp):
        what = " ".join(op.includes) if op.includes else "."
        return f"[internal] load build context: {what if len(what) <= 40 else what[:37] + '...'}"
    if isinstance(op, ImageSourceOp) and op.spans:
        stage = _stage_at(stages, op.spans[0])
        if stage is not None:
            return f"[{_label(stage)} 1/{len(stage.commands) + 1}] FROM {op.ref}"
    if not op.spans:
        return op.kind
    span = op.spans[0]
    stage = _stage_at(stages, span)
    text = _text(source, span)
    if stage is None:
        return text or op.kind
    lines = [stage.span.line] + [command.span.line for command in stage.commands]
    position = lines.index(span.line) + 1 if span.line in lines else 1
    return f"[{_label(stage)} {position}/{len(lines)}] {text}"


def step_names(plan: Plan, stages: Stages, source: ParseResult) -> dict[str, str]:
    """Digest → progress name for every op of `plan`."""
    return {digest: step_name(op, stages, source) for digest, op in plan.ops.items()}


def stage_labels(plan: Plan, stages: Stages) -> dict[str, tuple[str, ...]]:
    """Digest → the labels and indexes of the stages whose instructions made the op."""
    out: dict[str, tuple[str, ...]] = {}
    for digest, op in plan.ops.items():
        found: list[str] = []
        for span in op.spans:
            stage = _stage_at(stages, span)
            if stage is not None:
                found += [_label(stage), str(stage.index)]
        out[digest] = tuple(dict.fromkeys(found))
    return out


def stage_ops(labels: Mapping[str, Iterable[str]], names: Iterable[str]) -> set[str]:
    """The digests whose stage labels (`stage_labels`) include one of `names` (case-insensitive)."""
    wanted = {name.lower() for name in names}
    return {digest for digest, found in labels.items() if wanted & set(found)}
