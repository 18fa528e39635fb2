"""Bounds on registry I/O: a low-speed limit per attempt, as curl's `--speed-limit`/`--speed-time`, a
deadline per operation that scales with its size, and a cap on the retries of attempts that stalled.

Who uses it: `client.RegistryClient` (one `Meter` per operation: a blob download or upload, a manifest,
a token, any other request) and the network streams of `wire.WatchedBackend`, which count the bytes each
socket read and write moves for the meter of the calling thread (`current()`) and never wait on a socket
longer than the meter allows (`Meter.remaining`), so a server that drips its headers is caught as surely
as one that drips its body. No httpx here: this module is plain logic, testable with a fake clock.

The rules (the numbers are `Limits`, read from the environment by `Limits.from_env`):
- Low speed: an attempt that moves fewer than `speed_limit * speed_time` bytes (30 KiB by default) in
  `speed_time` seconds (30) is aborted as *stalled*. The window starts when the attempt does and again
  each time the quota is met, so every stretch of `speed_time` seconds must move the quota (a check curl
  would make too, only never later than it). A small answer finishing inside its first window is never
  judged. After an upload's last byte the registry may need time to hash and move the blob: it gets
  `speed_time` plus one second per `UPLOAD_GRACE_RATE` bytes uploaded to answer.
- Retries: a stalled attempt is a *strike*, and after `STALL_STRIKES` strikes in a row the operation
  fails, so a dead or dripping server costs two windows (about a minute by default), however many
  retries the budget has left. Only a download that resumes (`resumable`: what it received is kept) and
  moved its quota at least once in the attempt is retried like a dropped connection instead, with the
  count of strikes cleared (the client's retry budget and the deadline bound those); an upload starts
  again from nothing, so its bytes are no progress.
- Deadline: an operation (every attempt, every wait between them) must end within `deadline +
  size / min_rate` seconds (600 s plus one second per 16 KiB by default), where size is the bytes the
  operation expects to move (retries do not add to it), or has moved when it did not know. Nothing waits
  or sleeps past it.

Settings (environment, read when a client is made): `PYBUILD_REGISTRY_SPEED_LIMIT` (bytes/s, default
1024; 0 turns the low-speed check off), `PYBUILD_REGISTRY_SPEED_TIME` (seconds, default 30),
`PYBUILD_REGISTRY_DEADLINE` (seconds, default 600) and `PYBUILD_REGISTRY_MIN_RATE` (bytes/s, default
16384). A bad value is a ConfigError naming the variable.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Final

from pybuild.errors import ConfigError, RegistryError
from pybuild.record import record

__all__ = ["STALL_STRIKES", "Limits", "Meter", "current", "watching"]

STALL_STRIKES: Final = 2
UPLOAD_GRACE_RATE: Final = 16 << 20
_SLACK: Final = 0.005  # a socket timeout may return this early (the clock's and poll's rounding)
_HINT: Final = ("a slow link? PYBUILD_REGISTRY_SPEED_LIMIT, PYBUILD_REGISTRY_SPEED_TIME, "
                "PYBUILD_REGISTRY_DEADLINE and PYBUILD_REGISTRY_MIN_RATE set these bounds")
_ENV: Final = (("speed_limit", "PYBUILD_REGISTRY_SPEED_LIMIT", True),  # (field, variable, 0 allowed)
               ("speed_time", "PYBUILD_REGISTRY_SPEED_TIME", False),
               ("deadline", "PYBUILD_REGISTRY_DEADLINE", False),
               ("min_rate", "PYBUILD_REGISTRY_MIN_RATE", False))


@record
class Limits:
    """The bounds of registry I/O (see the module docstring)."""

    speed_limit: float = 1024.0  # bytes/s; 0: no low-speed check
    speed_time: float = 30.0  # seconds
    deadline: float = 600.0  # seconds, the base of every operation's deadline
    min_rate: float = 16384.0  # bytes/s the deadline allows on top of its base

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """The defaults, with each `PYBUILD_REGISTRY_*` variable set in `environ` (os.environ) applied."""
        env = os.environ if environ is None else environ
        values: dict[str, float] = {}
        for field, name, zero in _ENV:
            text = env.get(name, "").strip()
            if not text:
                continue
            try:
                value = float(text)
            except ValueError:
                value = float("nan")
            if not (value >= 0 if zero else value > 0) or value == float("inf"):
                need = "0 or more" if zero else "more than 0"
                raise ConfigError(f"invalid {name}: {text!r} (expected a number, {need})")
            values[field] = value
        return cls(**values)

    @property
    def quota(self) -> float:
        """The bytes each window must move."""
        return self.speed_limit * self.speed_time

    def describe(self) -> str:
        return f"less than {self.speed_limit:g} bytes/s for {self.speed_time:g} s"


class Meter:
    """The bounds of one operation (see the module docstring): `begin` each attempt, `moved` its bytes
    (the watched streams do), `remaining` says how long a socket may wait, and when a wait runs out the
    stream calls `trip` and the client asks `strike` whether another attempt may follow."""

    def __init__(self, limits: Limits, subject: str, expected: int = 0, *, resumable: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits, self.subject, self.expected, self.clock = limits, subject, max(0, expected), clock
        self.resumable = resumable
        self.started = clock()
        self.total = 0
        self.stalls = 0
        self.strikes = 0
        self.tripped: str | None = None  # "stalled" or "deadline", for the attempt that just failed
        self.progressed = False
        self._mark = self.started
        self._window = limits.speed_time
        self._since = 0

    def deadline(self) -> float:
        """The monotonic time the operation must end by."""
        return self.started + self.limits.deadline + (self.expected or self.total) / self.limits.min_rate

    def begin(self, extra: float = 0.0) -> None:
        """A new attempt: a fresh window (`extra` seconds longer); RegistryError when the deadline has
        passed already."""
        self.tripped = None
        self.progressed = False
        self.restart(extra)
        if self.clock() >= self.deadline():
            self.tripped = "deadline"
            raise self.error()

    def restart(self, extra: float = 0.0) -> None:
        """Start the window again now, `extra` seconds longer than `speed_time` this once."""
        self._mark = self.clock()
        self._window = self.limits.speed_time + extra
        self._since = 0

    def upload_sent(self, size: int) -> None:
        """An upload's last byte is out: the registry has its grace to answer (module docstring)."""
        self.restart(size / UPLOAD_GRACE_RATE)

    def moved(self, count: int) -> None:
        """`count` bytes went over the wire for this operation."""
        self.total += count
        self._since += count
        if self._since >= self.limits.quota:
            self.progressed = True
            self.restart()

    def remaining(self) -> float:
        """Seconds a socket may wait now before the window or the deadline runs out (≤ 0: out)."""
        end = self.deadline()
        if self.limits.speed_limit > 0:
            end = min(end, self._mark + self._window)
        return end - self.clock()

    def trip(self) -> bool:
        """A wait ended: record why when a bound ran out (True), else False (the wait's own timeout)."""
        if self.remaining() > _SLACK:
            return False
        self.tripped = "deadline" if self.clock() + _SLACK >= self.deadline() else "stalled"
        return True

    def strike(self) -> RegistryError:
        """The error of the attempt that tripped: raised when no attempt may follow (the deadline passed,
        or too many attempts stalled in a row), else returned for the retry budget to raise."""
        if self.tripped == "stalled":
            self.stalls += 1
            self.strikes = 0 if self.progressed and self.resumable else self.strikes + 1
        error = self.error()
        if self.tripped == "deadline" or self.strikes >= STALL_STRIKES:
            raise error
        return error

    def left(self) -> float:
        """Seconds until the deadline."""
        return self.deadline() - self.clock()

    def error(self) -> RegistryError:
        """The one-line error for the bound that tripped."""
        if self.tripped == "deadline":
            limit = self.deadline() - self.started
            of = f" of {self.expected}" if self.expected else ""
            return RegistryError(f"{self.subject} took too long: deadline of {limit:.0f} s exceeded "
                                 f"({self.total}{of} bytes moved)", hint=_HINT)
        count = f"{self.stalls} stalled attempts" if self.stalls > 1 else "1 stalled attempt"
        return RegistryError(f"{self.subject} stalled: {self.limits.describe()} ({count})", hint=_HINT)


_local = threading.local()


def current() -> Meter | None:
    """The meter of the operation this thread is running, None outside one."""
    stack: list[Meter] = getattr(_local, "stack", [])
    return stack[-1] if stack else None


@contextmanager
def watching(meter: Meter) -> Iterator[Meter]:
    """Make `meter` this thread's current one for the block. An outer operation's window starts again
    when it ends (a token fetched in the middle of a download is not the download's time)."""
    stack: list[Meter] = _local.__dict__.setdefault("stack", [])
    stack.append(meter)
    try:
        yield meter
    finally:
        stack.pop()
        if stack:
            stack[-1].restart()
