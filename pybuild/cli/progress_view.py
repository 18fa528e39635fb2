"""Build progress renderers for `pybuild build --progress=auto|tty|plain|quiet` (docker buildx's modes).

Who uses it: `cli/buildcmd.py` calls `make_view(mode, sys.stderr)` and passes the view to `pybuild.api.build`
as its `Sink`. Every view takes `emit(event)` and `close()` and is a context manager (leaving the `with`
block closes it, also on an exception or Ctrl-C).

- `PlainView` writes BuildKit's plain text (`#3 [stage-1 2/4] RUN make`, `#3 0.512 <line>`, `#3 DONE 1.2s`),
  one block per step, for logs and CI. It never imports rich.
- `TtyView` draws a rich live display like BuildKit's tty mode: a `[+] Building 3.2s (5/9)` header, one row
  per step with its timer, the last output lines of running steps, then a static summary and the failing
  step's output. rich is imported when a `TtyView` is made, never at module import (a cached no-op rebuild
  must start fast).
- `QuietView` shows nothing; the CLI prints errors itself.

Departures from BuildKit, on purpose: output lines are stamped with 3 decimals always (BuildKit drops to 2
and 1 after 10 s and 100 s); a partial line is held until its newline or the end of its step, per stream, so
stdout and stderr never splice into one line; a tty step row says `DONE 1.2s` where BuildKit shows only the
time. A `BuildNote` has no severity: text that starts like a warning (`[Warning]`, `WARNING:`, `WARN:`) is
gathered under the tty summary (as buildx lists warnings after the build), any other note (an export phase)
is a row among the steps. The plain view prints every note as is, in order.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, TextIO

from pybuild.errors import ConfigError
from pybuild.progress import (
    BuildFinished,
    BuildNote,
    Event,
    StepCached,
    StepCanceled,
    StepDone,
    StepFailed,
    StepOutput,
    StepStarted,
)

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live
    from rich.text import Text

__all__ = ["MODES", "PlainView", "QuietView", "TtyView", "View", "make_view"]

MODES = ("auto", "tty", "plain", "quiet")
LIVE_LOG_LINES = 6  # output lines shown under a running step (BuildKit's tty shows about as many)
ERROR_LOG_LINES = 10  # output lines of a failed step repeated after the build
MAX_PARTIAL = 16 * 1024  # a line without a newline this long is shown anyway (progress bars, binary junk)

Clock = Callable[[], float]


class View(Protocol):
    """A progress renderer: a `Sink` that must be closed (`with view:` closes it)."""

    def emit(self, event: Event) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class _Closing:
    """`with view:` calls `close()` on the way out, whatever happened inside."""

    def close(self) -> None:
        """Release the view (subclasses: flush, stop the display)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def make_view(mode: str, stream: TextIO, environ: Mapping[str, str] | None = None) -> View:
    """The view for `--progress=mode` writing to `stream`.

    "auto" is tty when `stream` is a terminal, `CI` is not set and TERM is not "dumb", else plain.
    """
    env = os.environ if environ is None else environ
    if mode == "auto":
        tty = _isatty(stream) and "CI" not in env and env.get("TERM") != "dumb"
        mode = "tty" if tty else "plain"
    if mode == "tty":
        return TtyView(stream)
    if mode == "plain":
        return PlainView(stream)
    if mode == "quiet":
        return QuietView()
    raise ConfigError(f"invalid --progress value {mode!r}: use auto, tty, plain or quiet")


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def _is_warning(text: str) -> bool:
    return text.lower().startswith(("[warning]", "warning:", "warn:"))


def _decode(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    return text.removesuffix("\r")


class _Lines:
    """Cuts output chunks into lines, per (step, stream), remembering when each line began.

    A chunk may end mid-line (or mid-character): the rest waits for the next chunk or `flush`. Lines are
    decoded as UTF-8 with replacement only once whole, so a character split across chunks survives.
    """

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str], tuple[float, bytes]] = {}

    def feed(self, digest: str, stream: str, data: bytes, now: float) -> list[tuple[float, str]]:
        """The lines `data` completes, each with the time its first byte arrived."""
        since, head = self._pending.pop((digest, stream), (now, b""))
        parts = (head + data).split(b"\n")
        tail = parts.pop()
        lines = [(since if index == 0 else now, _decode(part)) for index, part in enumerate(parts)]
        if len(tail) > MAX_PARTIAL:
            lines.append((since if not parts else now, _decode(tail)))
        elif tail:
            self._pending[(digest, stream)] = (since if not parts else now, tail)
        return lines

    def partial(self, digest: str) -> list[str]:
        """The unfinished lines of a step (one per stream), without taking them."""
        return [_decode(data) for (owner, _), (_, data) in self._pending.items() if owner == digest]

    def flush(self, digest: str) -> list[tuple[float, str]]:
        """Take the unfinished lines of a step (its end: they will get no newline)."""
        keys = [key for key in self._pending if key[0] == digest]
        return [(since, _decode(data)) for since, data in (self._pending.pop(key) for key in keys)]

    def owners(self) -> list[str]:
        """The steps with unfinished lines, in order of first appearance."""
        return list(dict.fromkeys(owner for owner, _ in self._pending))


class _PlainStep:
    __slots__ = ("cached", "error", "finished", "index", "name", "started", "tail")

    def __init__(self, index: int, name: str, started: float) -> None:
        self.index = index
        self.name = name
        self.started = started
        self.cached = False
        self.finished = False
        self.error: str | None = None
        self.tail: deque[str] = deque(maxlen=ERROR_LOG_LINES)


_NOTES = "\0notes"  # PlainView._current while the last block printed is build notes


class PlainView(_Closing):
    """BuildKit's plain progress: numbered steps, one block each, output lines stamped since the step began.

    Steps are numbered in order of first appearance. When output from another step interleaves, the open
    step is left with `#N ...` and its header is repeated when it continues, as BuildKit does. A failed
    build ends with the failed step's last output lines between `------` rulers. `clock` is for tests.
    """

    def __init__(self, stream: TextIO, *, clock: Clock = time.monotonic) -> None:
        self._out = stream
        self._clock = clock
        self._lock = threading.Lock()
        self._steps: dict[str, _PlainStep] = {}
        self._lines = _Lines()
        self._current: str | None = None
        self._printed = False

    def emit(self, event: Event) -> None:
        with self._lock:
            self._dispatch(event)
            self._out.flush()

    def close(self) -> None:
        """Print what is left of unfinished lines; the view may still be used afterwards."""
        with self._lock:
            self._flush_all()
            self._out.flush()

    def _dispatch(self, event: Event) -> None:
        match event:
            case StepStarted():
                step = self._step(event.digest, event.name)
                step.started, step.finished, step.cached = self._clock(), False, False
                self._focus(event.digest)
            case StepCached():
                self._cached(event)
            case StepOutput():
                self._output(event)
            case StepDone():
                self._end(event.digest, f"DONE {event.duration:.1f}s")
            case StepFailed():
                self._failed(event)
            case StepCanceled():
                self._end(event.digest, "CANCELED")
            case BuildNote():
                self._note(event.text)
            case BuildFinished():
                self._flush_all()
                if not event.ok:
                    self._print_error_logs()

    def _step(self, digest: str, name: str | None = None) -> _PlainStep:
        step = self._steps.get(digest)
        if step is None:
            step = self._steps[digest] = _PlainStep(len(self._steps) + 1, name or digest, self._clock())
        elif name is not None:
            step.name = name
        return step

    def _write(self, line: str) -> None:
        self._out.write(line + "\n")
        self._printed = True

    def _focus(self, key: str) -> None:
        """Make `key` (a step's digest or `_NOTES`) the block being printed, opening it as BuildKit does."""
        if self._current == key:
            return
        old = self._steps.get(self._current) if self._current is not None else None
        if old is not None and not old.finished:
            self._write(f"#{old.index} ...")
        if self._printed:
            self._write("")
        self._current = key
        step = self._steps.get(key)
        if step is not None:
            self._write(f"#{step.index} {step.name}")

    def _cached(self, event: StepCached) -> None:
        step = self._steps.get(event.digest)
        if step is not None and not step.finished:
            step.cached = True  # started, then found in the cache: its StepDone prints CACHED
            return
        step = self._step(event.digest, event.name)
        self._focus(event.digest)
        self._write(f"#{step.index} CACHED")
        step.finished = True
        self._current = None

    def _output(self, event: StepOutput) -> None:
        self._step(event.digest)  # output of a step never started: numbered and timed from here
        lines = self._lines.feed(event.digest, event.stream, event.data, self._clock())
        self._print_lines(event.digest, lines)

    def _print_lines(self, digest: str, lines: list[tuple[float, str]]) -> None:
        if not lines:
            return
        step = self._step(digest)
        self._focus(digest)
        for since, text in lines:
            stamped = f"{max(0.0, since - step.started):.3f} {text}"
            self._write(f"#{step.index} {stamped}")
            step.tail.append(stamped)

    def _failed(self, event: StepFailed) -> None:
        self._step(event.digest).error = event.error
        self._end(event.digest, f"ERROR: {event.error}")

    def _end(self, digest: str, status: str) -> None:
        self._print_lines(digest, self._lines.flush(digest))
        step = self._step(digest)
        if step.cached and status.startswith("DONE"):
            status = "CACHED"
        self._focus(digest)
        self._write(f"#{step.index} {status}")
        step.finished = True
        self._current = None

    def _note(self, text: str) -> None:
        self._focus(_NOTES)
        self._write(text)

    def _flush_all(self) -> None:
        for digest in self._lines.owners():
            self._print_lines(digest, self._lines.flush(digest))

    def _print_error_logs(self) -> None:
        """BuildKit repeats a failed step's last output after the build, so a long log still ends with it."""
        self._current = None
        for step in (step for step in self._steps.values() if step.error is not None):
            self._write("------")
            self._write(f" > {step.name}:")
            for line in step.tail:
                self._write(line)
            self._write("------")


class QuietView(_Closing):
    """`--progress=quiet` (and `-q`): shows nothing; the CLI prints errors itself."""

    def emit(self, event: Event) -> None:
        pass


class _TtyStep:
    __slots__ = ("cached", "digest", "duration", "name", "started", "state", "tail")

    def __init__(self, digest: str, name: str, started: float) -> None:
        self.digest = digest
        self.name = name
        self.state = "running"  # or done, cached, error, canceled
        self.started = started
        self.duration = 0.0
        self.cached = False
        self.tail: deque[tuple[float, str]] = deque(maxlen=ERROR_LOG_LINES)

    def status(self, now: float) -> str:
        if self.state == "running":
            return f"{max(0.0, now - self.started):.1f}s"
        if self.state == "cached":
            return "CACHED"
        return f"{self.state.upper()} {self.duration:.1f}s"


class _Board:
    """What the tty view shows, kept up to date from events (no rich here; `TtyView` draws it)."""

    def __init__(self) -> None:
        self.rows: list[_TtyStep | str] = []  # steps, and build notes that are not warnings, in order
        self.steps: dict[str, _TtyStep] = {}
        self.warnings: list[str] = []
        self.lines = _Lines()
        self.start: float | None = None
        self.finished: BuildFinished | None = None

    def apply(self, event: Event, now: float) -> None:
        if self.start is None:
            self.start = now
        match event:
            case StepStarted():
                step = self._step(event.digest, event.name, now)
                step.state, step.started, step.cached = "running", now, False
            case StepCached():
                known = event.digest in self.steps
                step = self._step(event.digest, event.name, now)
                if known and step.state == "running":
                    step.cached = True  # started, then found in the cache: shown CACHED once done
                else:
                    step.state = "cached"
            case StepOutput():
                step = self._step(event.digest, None, now)
                self._keep(step, self.lines.feed(event.digest, event.stream, event.data, now))
            case StepDone():
                self._end(event.digest, "cached" if self._step(event.digest, None, now).cached else "done",
                          event.duration, now)
            case StepFailed():
                self._end(event.digest, "error", event.duration, now)
            case StepCanceled():
                self._end(event.digest, "canceled", event.duration, now)
            case BuildNote():
                (self.warnings if _is_warning(event.text) else self.rows).append(event.text)
            case BuildFinished():
                self.finished = event

    def _step(self, digest: str, name: str | None, now: float) -> _TtyStep:
        step = self.steps.get(digest)
        if step is None:
            step = self.steps[digest] = _TtyStep(digest, name or digest, now)
            self.rows.append(step)
        elif name is not None:
            step.name = name
        return step

    def _keep(self, step: _TtyStep, lines: list[tuple[float, str]]) -> None:
        step.tail.extend((max(0.0, since - step.started), text) for since, text in lines)

    def flush(self) -> None:
        """Keep the unfinished lines of every step (the build was interrupted: show what they printed)."""
        for digest in self.lines.owners():
            self._keep(self._step(digest, None, 0.0), self.lines.flush(digest))

    def _end(self, digest: str, state: str, duration: float, now: float) -> None:
        step = self._step(digest, None, now)
        self._keep(step, self.lines.flush(digest))
        step.state, step.duration = state, duration

    def elapsed(self, now: float) -> float:
        if self.finished is not None:
            return self.finished.duration
        return 0.0 if self.start is None else max(0.0, now - self.start)

    def header(self, now: float, final: bool) -> str:
        steps = self.steps.values()
        done = sum(step.state != "running" for step in steps)
        text = f"[+] Building {self.elapsed(now):.1f}s ({done}/{len(steps)})"
        # BuildKit says FINISHED once every step it saw completed (failed ones too).
        return text + " FINISHED" if final and steps and done == len(steps) else text


_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.")


def _screen_line(text: str) -> str:
    """An output line as one terminal row: escapes dropped, the last `\\r` overwrite kept, tabs expanded."""
    text = _ESCAPE.sub("", text)
    if "\r" in text:
        text = next((part for part in reversed(text.split("\r")) if part), "")
    return "".join(ch if ch.isprintable() else "?" for ch in text.expandtabs(8))


class TtyView(_Closing):
    """BuildKit's tty progress on a rich live display, then a static summary.

    `out` is the terminal stream (usually `sys.stderr`) or a ready `rich.console.Console` (tests pass one
    writing to a StringIO). The display starts with the first event and redraws `refresh_per_second` times
    a second; `BuildFinished` or `close()` stops it (erasing it) and prints the summary: every step with its
    time, warnings, then each failed step's last output lines between `------` rulers, as BuildKit does.
    `clock` is for tests.

    Locks: `_lock` guards the board (events write it, the refresh thread reads it to draw); `_live_lock`
    orders start/stop of the display. rich's refresh thread holds its own lock while it draws, so the view
    never calls into `Live` while holding `_lock`.
    """

    def __init__(self, out: TextIO | Console, *, clock: Clock = time.monotonic,
                 refresh_per_second: float = 8.0) -> None:
        from rich.console import Console

        self._console = out if isinstance(out, Console) else Console(file=out, highlight=False)
        self._clock = clock
        self._refresh = refresh_per_second
        self._board = _Board()
        self._lock = threading.Lock()
        self._live_lock = threading.Lock()
        self._live: Live | None = None
        self._closed = False

    def emit(self, event: Event) -> None:
        with self._lock:
            if self._closed:
                return
            self._board.apply(event, self._clock())
        if isinstance(event, BuildFinished):
            self.close()
        elif self._live is None:
            self._start()

    def close(self) -> None:
        """Stop the live display and print the summary (once; later events are ignored)."""
        with self._live_lock:
            with self._lock:
                if self._closed:
                    return
                self._closed = True
            try:
                if self._live is not None:
                    self._live.stop()
            finally:
                summary = self._summary()
                if summary is not None:
                    self._console.print(summary, soft_wrap=True)

    def _start(self) -> None:
        from rich.live import Live

        with self._live_lock:
            if self._live is not None or self._closed:
                return
            self._live = Live(console=self._console, get_renderable=self._render_live, transient=True,
                              refresh_per_second=self._refresh, redirect_stdout=False, redirect_stderr=False)
            self._live.start(refresh=True)

    def _render_live(self) -> RenderableType:
        """Called by rich's refresh thread: the header and the rows that fit, running steps last seen."""
        from rich.console import Group
        from rich.text import Text

        with self._lock:
            now = self._clock()
            groups = [self._row_group(row, now) for row in self._board.rows]
            header = Text(self._board.header(now, final=False))
        limit = max(3, self._console.size.height - 2)
        while sum(len(rows) for _, rows in groups) > limit and any(done for done, _ in groups):
            groups.pop(next(index for index, (done, _) in enumerate(groups) if done))  # oldest finished
        rows = [row for _, group in groups for row in group][-limit:]
        return Group(header, self._table(rows))

    def _row_group(self, row: _TtyStep | str, now: float) -> tuple[bool, list[tuple[Text, Text]]]:
        """One step (or note) row, and under a running step its latest output; and whether it is over."""
        from rich.text import Text

        if isinstance(row, str):
            return True, [(Text(f" => {row}", style="blue"), Text(""))]
        rows = [self._step_row(row, now)]
        if row.state != "running":
            return True, rows
        shown = [text for _, text in row.tail] + self._board.lines.partial(row.digest)
        for text in shown[-LIVE_LOG_LINES:]:
            rows.append((Text(f" => => # {_screen_line(text)}", style="dim"), Text("")))
        return False, rows

    def _step_row(self, step: _TtyStep, now: float) -> tuple[Text, Text]:
        from rich.text import Text

        style = {"running": "", "error": "red", "canceled": "yellow"}.get(step.state, "blue")
        return Text(f" => {_screen_line(step.name)}", style=style), Text(step.status(now), style=style)

    def _table(self, rows: list[tuple[Text, Text]]) -> RenderableType:
        from rich.table import Table

        table = Table.grid(expand=True, padding=(0, 1))
        table.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        table.add_column(justify="right", no_wrap=True)
        for left, right in rows:
            table.add_row(left, right)
        return table

    def _summary(self) -> RenderableType | None:
        """Every row with its final status, the warnings, and the failed steps' output; None if no events."""
        from rich.console import Group
        from rich.text import Text

        with self._lock:
            board, now = self._board, self._clock()
            if not board.rows and not board.warnings:
                return None
            board.flush()
            parts: list[RenderableType] = [Text(board.header(now, final=True))]
            parts.append(self._table([self._final_row(row, now) for row in board.rows]))
            parts.extend(Text(warning, style="yellow") for warning in board.warnings)
            for step in board.steps.values():
                if step.state == "error":
                    parts.extend([Text("------"), Text(f" > {step.name}:")])
                    parts.extend(Text(f"{since:.3f} {text}") for since, text in step.tail)
                    parts.append(Text("------"))
        return Group(*parts)

    def _final_row(self, row: _TtyStep | str, now: float) -> tuple[Text, Text]:
        from rich.text import Text

        if isinstance(row, str):
            return Text(f" => {row}", style="blue"), Text("")
        return self._step_row(row, now)
