"""Progress views driven by synthetic events: exact plain text, the tty display and summary, make_view."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from rich.console import Console

from pybuild.cli.progress_view import PlainView, QuietView, TtyView, make_view
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

ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def plain(events: list[Event | float], clock: Clock | None = None) -> str:
    """Run `events` through a PlainView; a float in the list sets the clock (seconds since 100.0)."""
    clock = clock or Clock()
    out = io.StringIO()
    with PlainView(out, clock=clock) as view:
        for event in events:
            if isinstance(event, float):
                clock.now = 100.0 + event
            else:
                view.emit(event)
    return out.getvalue()


def test_plain_cached_run_done_and_notes() -> None:
    text = plain([
        BuildNote("[Warning] One or more build-args [X] were not consumed"),
        StepCached("a", "[stage-1 1/4] FROM docker.io/library/alpine:3.19"),
        StepStarted("b", "[stage-1 2/4] RUN make"),
        0.5, StepOutput("b", "stdout", b"compiling\n"),
        1.25, StepOutput("b", "stdout", b"linking\r\n\n"),
        StepDone("b", 1.26),
        BuildNote("exporting to image"),
        BuildNote("naming to docker.io/library/app:v1"),
        BuildFinished(2.0, True),
    ])
    assert text == (
        "[Warning] One or more build-args [X] were not consumed\n"
        "\n"
        "#1 [stage-1 1/4] FROM docker.io/library/alpine:3.19\n"
        "#1 CACHED\n"
        "\n"
        "#2 [stage-1 2/4] RUN make\n"
        "#2 0.500 compiling\n"
        "#2 1.250 linking\n"
        "#2 1.250 \n"
        "#2 DONE 1.3s\n"
        "\n"
        "exporting to image\n"
        "naming to docker.io/library/app:v1\n"
    )


def test_plain_splits_lines_across_chunks_per_stream() -> None:
    # A line (and a UTF-8 character) cut across chunks is printed once whole, stamped when it began;
    # stdout and stderr keep separate partial lines; a trailing partial line is flushed when the step ends.
    text = plain([
        StepStarted("s", "[2/2] RUN ./build.sh"),
        0.1, StepOutput("s", "stdout", b"hel"),
        0.2, StepOutput("s", "stderr", b"warn"),
        0.3, StepOutput("s", "stdout", b"lo w\xc3"),
        0.4, StepOutput("s", "stdout", b"\xa9rld\nnext\nta"),
        0.5, StepOutput("s", "stderr", b"ing\n"),
        0.6, StepOutput("s", "stdout", b"il"),
        StepDone("s", 0.7),
    ])
    assert text == (
        "#1 [2/2] RUN ./build.sh\n"
        "#1 0.100 hello w\u00e9rld\n"
        "#1 0.400 next\n"
        "#1 0.200 warning\n"
        "#1 0.400 tail\n"
        "#1 DONE 0.7s\n"
    )


def test_plain_non_utf8_bytes_are_replaced() -> None:
    text = plain([StepStarted("s", "RUN cat blob"), StepOutput("s", "stdout", b"a\xff\xfeb\n\x80"),
                  StepDone("s", 0.0)])
    assert text == "#1 RUN cat blob\n#1 0.000 a\ufffd\ufffdb\n#1 0.000 \ufffd\n#1 DONE 0.0s\n"


def test_plain_interleaved_steps_failure_cancel_and_error_logs() -> None:
    text = plain([
        StepStarted("x", "[a 2/3] RUN make"),
        StepStarted("y", "[b 2/2] RUN sleep 9"),
        1.0, StepOutput("x", "stderr", b"make: *** [all] Error 2\n"),
        1.5, StepOutput("x", "stdout", b"partial"),
        StepFailed("x", 'process "/bin/sh -c make" did not complete successfully: exit code: 2', 1.5),
        StepCanceled("y", 1.5),
        BuildFinished(1.6, False),
    ])
    assert text == (
        "#1 [a 2/3] RUN make\n"
        "#1 ...\n"
        "\n"
        "#2 [b 2/2] RUN sleep 9\n"
        "#2 ...\n"
        "\n"
        "#1 [a 2/3] RUN make\n"
        "#1 1.000 make: *** [all] Error 2\n"
        "#1 1.500 partial\n"
        '#1 ERROR: process "/bin/sh -c make" did not complete successfully: exit code: 2\n'
        "\n"
        "#2 [b 2/2] RUN sleep 9\n"
        "#2 CANCELED\n"
        "------\n"
        " > [a 2/3] RUN make:\n"
        "1.000 make: *** [all] Error 2\n"
        "1.500 partial\n"
        "------\n"
    )


def test_plain_started_then_cached_shows_cached_not_done_and_numbers_by_first_appearance() -> None:
    text = plain([
        StepCached("z", "[internal] load metadata"),
        StepStarted("c", "[1/2] COPY . /src"),
        StepCached("c", "[1/2] COPY . /src"),
        StepDone("c", 0.2),
        StepStarted("d", "[2/2] RUN true"),
        StepDone("d", 0.04),
    ])
    assert text == (
        "#1 [internal] load metadata\n#1 CACHED\n\n"
        "#2 [1/2] COPY . /src\n#2 CACHED\n\n"
        "#3 [2/2] RUN true\n#3 DONE 0.0s\n"
    )


def test_plain_close_flushes_partial_lines_of_unfinished_steps() -> None:
    text = plain([StepStarted("s", "RUN yes"), 0.25, StepOutput("s", "stdout", b"y\ny")])
    assert text == "#1 RUN yes\n#1 0.250 y\n#1 0.250 y\n"


def test_quiet_view_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with QuietView() as view:
        for event in (StepStarted("s", "RUN x"), StepOutput("s", "stdout", b"hi\n"),
                      StepFailed("s", "boom", 1.0), BuildNote("[Warning] w"), BuildFinished(1.0, False)):
            view.emit(event)
    assert capsys.readouterr() == ("", "")


# --- tty ---


def tty_console(height: int = 25) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=100, height=height), out


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the live display"
        time.sleep(0.02)


def last_frame(out: io.StringIO) -> str:
    text = ANSI.sub("", out.getvalue())
    return text[text.rfind("[+] Building"):]


def row(lines: list[str], name: str) -> str:
    """The summary row of step `name` (rows are ` => NAME ... STATUS`)."""
    found = [line.rstrip() for line in lines if line.startswith(f" => {name} ")]
    assert len(found) == 1, lines
    return found[0]


def test_tty_summary_lists_steps_warnings_and_failed_output() -> None:
    console, out = tty_console()
    clock = Clock()
    with TtyView(console, clock=clock) as view:
        view.emit(BuildNote("[Warning] One or more build-args [X] were not consumed"))
        view.emit(StepCached("a", "[stage-1 1/4] FROM docker.io/library/alpine:3.19"))
        view.emit(StepStarted("b", "[stage-1 2/4] RUN make"))
        view.emit(StepStarted("c", "[stage-1 3/4] RUN make test"))
        view.emit(StepStarted("d", "[stage-0 2/2] RUN sleep 9"))
        for n in range(12):
            view.emit(StepOutput("c", "stdout", f"test {n}\n".encode()))
        view.emit(StepOutput("c", "stderr", b"FAIL: \xff"))
        view.emit(StepDone("b", 1.2))
        view.emit(StepFailed("c", "exit code: 1", 2.0))
        view.emit(StepCanceled("d", 2.1))
        view.emit(BuildNote("exporting to image"))
        view.emit(BuildFinished(3.25, False))
    summary = last_frame(out).splitlines()
    assert summary[0] == "[+] Building 3.2s (4/4) FINISHED"
    assert row(summary, "[stage-1 1/4] FROM docker.io/library/alpine:3.19").endswith(" CACHED")
    assert row(summary, "[stage-1 2/4] RUN make").endswith(" DONE 1.2s")
    assert row(summary, "[stage-1 3/4] RUN make test").endswith(" ERROR 2.0s")
    assert row(summary, "[stage-0 2/2] RUN sleep 9").endswith(" CANCELED 2.1s")
    assert row(summary, "exporting to image") == " => exporting to image"
    assert all(len(line) <= 100 for line in summary)
    assert summary[6:] == [
        "[Warning] One or more build-args [X] were not consumed",
        "------",
        " > [stage-1 3/4] RUN make test:",
        *[f"0.000 test {n}" for n in range(3, 12)],
        "0.000 FAIL: \ufffd",
        "------",
    ]


def test_tty_live_display_shows_last_output_lines_of_running_steps() -> None:
    console, out = tty_console()
    clock = Clock()
    with TtyView(console, clock=clock, refresh_per_second=50) as view:
        view.emit(StepStarted("r", "[1/1] RUN ./configure"))
        clock.now += 1.5
        for n in range(9):
            view.emit(StepOutput("r", "stdout", f"checking {n}\n".encode()))
        view.emit(StepOutput("r", "stdout", b"\x1b[1mbold\x1b[0m\tpartial"))
        wait_for(lambda: "partial" in last_frame(out))
        frame = last_frame(out).splitlines()
        view.emit(StepDone("r", 1.5))
    assert frame[0] == "[+] Building 1.5s (0/1)"
    assert frame[1].startswith(" => [1/1] RUN ./configure ") and frame[1].rstrip().endswith(" 1.5s")
    logs = [line.rstrip() for line in frame[2:] if line.startswith(" => => # ")]
    assert logs == [*[f" => => # checking {n}" for n in range(4, 9)], " => => # bold    partial"]


def test_tty_live_display_drops_finished_steps_to_keep_running_ones_in_view() -> None:
    console, out = tty_console(height=6)
    with TtyView(console, clock=Clock(), refresh_per_second=50) as view:
        view.emit(StepStarted("r", "running step"))
        for n in range(8):
            view.emit(StepCached(f"c{n}", f"cached step {n}"))
        view.emit(StepOutput("r", "stdout", b"working\n"))
        wait_for(lambda: "working" in last_frame(out))
        frame = [line.rstrip() for line in last_frame(out).splitlines()]
        view.emit(StepDone("r", 0.5))
    assert len(frame) <= 6
    assert frame[0] == "[+] Building 0.0s (8/9)"
    assert frame[1].startswith(" => running step")
    assert frame[2] == " => => # working"
    assert [line.split()[3] for line in frame[3:]] == ["6", "7"]  # the newest finished steps that fit


def test_tty_stops_cleanly_on_keyboard_interrupt() -> None:
    console, out = tty_console()
    clock = Clock()
    with pytest.raises(KeyboardInterrupt):
        with TtyView(console, clock=clock, refresh_per_second=50) as view:
            view.emit(StepStarted("s", "[1/1] RUN sleep 60"))
            view.emit(StepOutput("s", "stdout", b"zz"))
            clock.now += 4.0
            raise KeyboardInterrupt
    written = out.getvalue()
    assert -1 < written.rfind("\x1b[?25h") < written.rfind("[+] Building")  # cursor back, then the summary
    summary = last_frame(out).splitlines()
    assert summary[0] == "[+] Building 4.0s (0/1)"
    assert row(summary, "[1/1] RUN sleep 60").endswith(" 4.0s")
    time.sleep(0.2)  # the refresh thread is gone: nothing more is drawn
    view.emit(StepDone("s", 5.0))
    assert out.getvalue() == written


def test_tty_without_events_prints_nothing() -> None:
    console, out = tty_console()
    with TtyView(console) as view:
        pass
    view.emit(StepStarted("s", "RUN late"))  # after close: must not start a display
    assert out.getvalue() == ""


# --- make_view ---


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("env", "expected"), [
    ({"TERM": "xterm-256color"}, TtyView),
    ({"TERM": "xterm", "CI": "true"}, PlainView),
    ({"TERM": "dumb"}, PlainView),
])
def test_make_view_auto_on_a_terminal(env: dict[str, str], expected: type) -> None:
    with make_view("auto", FakeTerminal(), env) as view:
        assert type(view) is expected


def test_make_view_auto_on_a_pipe_is_plain() -> None:
    with make_view("auto", io.StringIO(), {"TERM": "xterm"}) as view:
        assert type(view) is PlainView


@pytest.mark.parametrize(("mode", "expected"), [("tty", TtyView), ("plain", PlainView), ("quiet", QuietView)])
def test_make_view_explicit_modes(mode: str, expected: type) -> None:
    with make_view(mode, io.StringIO(), {}) as view:
        assert type(view) is expected


def test_make_view_rejects_unknown_mode() -> None:
    with pytest.raises(ConfigError) as info:
        make_view("fancy", io.StringIO(), {})
    assert str(info.value) == "invalid --progress value 'fancy': use auto, tty, plain or quiet"


def test_import_does_not_load_rich() -> None:
    code = "import sys, pybuild.cli.progress_view; print(any(m.startswith('rich') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
