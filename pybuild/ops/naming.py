"""Where an op's instructions sit in the Dockerfile, for progress names and `--no-cache-filter`.

Names follow BuildKit's progress: `[stage 2/5] RUN make` (stage name, or `stage-N` for an unnamed stage;
position among the stage's instructions counting FROM as 1). An op made by several identical instructions
takes its first span's name. Each op kind's handler makes its own name from a `Naming` (`OpHandler.name`);
`pybuild.ops.step_names` asks every op's handler.

The frontend's stages and parse result are read through the small Protocols below (what this module uses
of `dockerfile.instructions.Stages` and `dockerfile.ast.ParseResult`), so nothing here imports the frontend.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from pybuild.plan.ops import Op, Plan
from pybuild.record import record
from pybuild.source import Span

if TYPE_CHECKING:
    from typing import Protocol

    # for the type checker only (nothing checks them at run time)
    class _Spanned(Protocol):
        @property
        def span(self) -> Span: ...

    class StageLike(Protocol):
        """What naming reads of a frontend stage (`dockerfile.instructions.Stage`)."""

        @property
        def name(self) -> str | None: ...
        @property
        def index(self) -> int: ...
        @property
        def span(self) -> Span: ...
        @property
        def commands(self) -> Sequence[_Spanned]: ...

    class StagesLike(Protocol):
        """What naming reads of the frontend's stages (`dockerfile.instructions.Stages`)."""

        @property
        def stages(self) -> Sequence[StageLike]: ...

    class _SourceText(Protocol):
        @property
        def text(self) -> str: ...

    class SourceLike(Protocol):
        """What naming reads of a parse result (`dockerfile.ast.ParseResult`): its source text."""

        @property
        def source(self) -> _SourceText: ...


__all__ = ["Naming", "StagePlace", "stage_labels", "stage_ops"]

_MAX_TEXT = 80


@record
class StagePlace:
    """A stage as names show it: its label and the lines of its instructions (its FROM first)."""

    label: str
    index: int
    file: str
    lines: tuple[int, ...]


def _places(stages: StagesLike) -> tuple[StagePlace, ...]:
    return tuple(StagePlace(stage.name if stage.name is not None else f"stage-{stage.index}", stage.index,
                            stage.span.file, (stage.span.line, *(c.span.line for c in stage.commands)))
                 for stage in stages.stages)


def _stage_at(places: Sequence[StagePlace], span: Span) -> StagePlace | None:
    found: StagePlace | None = None
    for place in places:
        if place.file == span.file and place.lines[0] <= span.line:
            found = place
    return found


class Naming:
    """The stages and the source text progress names are made from."""

    def __init__(self, stages: StagesLike, source: SourceLike | None = None) -> None:
        self.places = _places(stages)
        self._lines = source.source.text.splitlines() if source is not None else []

    def stage_at(self, span: Span) -> StagePlace | None:
        """The stage whose instructions include the line `span` starts at."""
        return _stage_at(self.places, span)

    def text(self, span: Span) -> str:
        """The instruction's first line, whitespace folded, cut at 80 characters."""
        lines = self._lines
        text = lines[span.line - 1].strip() if 1 <= span.line <= len(lines) else ""
        text = " ".join(text.split())
        return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT - 3] + "..."

    def located(self, op: Op) -> str:
        """`[stage pos/N] text` of the op's first span (the kind when the op has none)."""
        if not op.spans:
            return op.kind
        span = op.spans[0]
        stage = self.stage_at(span)
        text = self.text(span)
        if stage is None:
            return text or op.kind
        position = stage.lines.index(span.line) + 1 if span.line in stage.lines else 1
        return f"[{stage.label} {position}/{len(stage.lines)}] {text}"


def stage_labels(plan: Plan, stages: StagesLike) -> dict[str, tuple[str, ...]]:
    """Digest → the labels and indexes of the stages whose instructions made the op."""
    places = _places(stages)
    out: dict[str, tuple[str, ...]] = {}
    for digest, op in plan.ops.items():
        found: list[str] = []
        for span in op.spans:
            place = _stage_at(places, span)
            if place is not None:
                found += [place.label, str(place.index)]
        out[digest] = tuple(dict.fromkeys(found))
    return out


def stage_ops(labels: Mapping[str, Iterable[str]], names: Iterable[str]) -> set[str]:
    """The digests whose stage labels (`stage_labels`) include one of `names` (case-insensitive)."""
    wanted = {name.lower() for name in names}
    return {digest for digest, found in labels.items() if wanted & set(found)}
