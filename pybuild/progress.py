"""Progress events: what the solver reports while it builds, and the `Sink` that receives them.

The solver (`pybuild.solve`) and the build (`pybuild.api`: notes, the end) make these records; the CLI's
renderers (`cli/progress_view.py`: tty, plain, quiet) consume them through the `Sink` protocol. A step
is one op of the plan, named by its digest. A step's events come in this order: `StepStarted`, then any `StepCached` / `StepOutput`, then exactly one of `StepDone`, `StepFailed` or
`StepCanceled`. A step whose identical work already ran (single flight) gets a lone `StepCached`.

The solver serializes calls to `emit` (one at a time, from worker threads), so a sink need not lock.
"""

from __future__ import annotations

from typing import Protocol

from pybuild.record import record
from pybuild.source import Span


@record
class StepStarted:
    """An op began running; `name` is what to show, `span` where it came from in the Dockerfile."""

    digest: str
    name: str
    span: Span | None = None


@record
class StepCached:
    """An op's result came from the cache or from an identical op that already ran."""

    digest: str
    name: str
    span: Span | None = None


@record
class StepOutput:
    """A chunk of a running op's output; `stream` is "stdout" or "stderr"."""

    digest: str
    stream: str
    data: bytes


@record
class StepDone:
    """An op finished successfully after `duration` seconds."""

    digest: str
    duration: float


@record
class StepFailed:
    """An op raised `error` (its message) after `duration` seconds: the failure that stops the build."""

    digest: str
    error: str
    duration: float


@record
class StepCanceled:
    """A running op stopped because the build was canceled (an earlier failure or Ctrl-C)."""

    digest: str
    duration: float


@record
class BuildNote:
    """A build-level line: a warning ("[Warning] One or more build-args ...") or an export phase."""

    text: str


@record
class BuildFinished:
    """The build ended after `duration` seconds, successfully or not (`ok`); always the last event."""

    duration: float
    ok: bool


Event = StepStarted | StepCached | StepOutput | StepDone | StepFailed | StepCanceled | BuildNote | BuildFinished
"""Any progress event."""


class Sink(Protocol):
    """Receives progress events (the CLI's renderers, `ListSink` in tests)."""

    def emit(self, event: Event) -> None: ...


class ListSink:
    """A sink that keeps every event in `events`, in order (for tests and `--progress=none` capture)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)
