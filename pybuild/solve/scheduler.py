"""The scheduler: run the ops a plan's target needs, each after its inputs, on a bounded thread pool.

Design (see docs/ARCHITECTURE.md, "Concurrency and durability"):
- Threads, not asyncio. One `ThreadPoolExecutor` of `jobs` threads; the main thread keeps the ready queue
  and submits at most `jobs` runs at a time, so ops waiting for a slot have not started and can simply be
  dropped on cancel.
- Readiness is an in-degree count per op (inputs not yet finished): no graph library, whose import would
  cost a cached no-op rebuild (networkx's was ~240 ms). `plan/graph.py` serves dumps and tooling.
- Single flight: each cache key (`key_of(op)`, default the digest) runs once. The flight table is a
  `dict[key, Future]` under a lock; an op whose key is already in flight waits for that run and shares its
  result (it is reported as `StepCached`, like BuildKit's merged vertices).
- Cancel on the first failure or Ctrl-C: the failing worker sets the shared `cancel` event at once (so
  running ops, which see it as `step.cancel`, stop early), nothing new starts, the main thread waits for the
  running ops to return, then re-raises the original exception (a `KeyboardInterrupt` likewise).
- Progress events go to the sink through one lock, so renderers need not be thread-safe.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pybuild.errors import InternalError, PybuildError
from pybuild.plan.ops import op_inputs
from pybuild.progress import (
    Event,
    Sink,
    StepCached,
    StepCanceled,
    StepDone,
    StepFailed,
    StepOutput,
    StepStarted,
)
from pybuild.source import Span

if TYPE_CHECKING:  # loaded by `run` only: concurrent.futures brings logging (~8 ms) with it
    import queue
    from concurrent.futures import Future, ThreadPoolExecutor

R = TypeVar("R")
_SIGNAL_POLL = 0.2  # seconds: how late the main thread may notice a signal another thread received


class PlanLike(Protocol):
    """What `solve` needs of a plan: `ops` (digest → op) and the `target` digest. `Plan` is one."""

    @property
    def ops(self) -> Mapping[str, Any]: ...

    @property
    def target(self) -> str: ...


class Canceled(PybuildError):
    """The solve was canceled from outside (the caller set `cancel`) before the target was built.

    Also what a `run_op` may raise (via `Step.check()`) to stop early once `step.cancel` is set.
    """


class Step:
    """What `run_op` gets besides the op: the cancel event and a way to report progress.

    Made by the scheduler, one per run. `cancel` is shared by the whole solve: check it between units of
    work (or pass it to whatever waits on a subprocess) and return or raise promptly once it is set.
    """

    __slots__ = ("digest", "name", "span", "cancel", "_emit")

    def __init__(self, digest: str, cancel: threading.Event, emit: Callable[[Event], None],
                 name: str, span: Span | None) -> None:
        self.digest = digest
        self.cancel = cancel
        self._emit = emit
        self.name = name
        self.span = span

    def output(self, stream: str, data: bytes) -> None:
        """Report a chunk of the op's output ("stdout" or "stderr")."""
        self._emit(StepOutput(self.digest, stream, data))

    def cached(self) -> None:
        """Report that the result came from the cache (the renderer shows CACHED)."""
        self._emit(StepCached(self.digest, self.name, self.span))

    def check(self) -> None:
        """Raise `Canceled` if the solve was canceled."""
        if self.cancel.is_set():
            raise Canceled("canceled")


RunOp = Callable[[str, Any, Mapping[str, R], Step], R]
"""`run_op(digest, op, inputs, step)`: build one op; `inputs` maps each input digest to its result."""


def default_name(op: Any) -> str:
    """What progress shows for an op when the caller gives no `name_of`: its kind."""
    return str(getattr(op, "kind", type(op).__name__))


def default_span(op: Any) -> Span | None:
    """The first Dockerfile span of an op, if it has any."""
    spans = getattr(op, "spans", ())
    return spans[0] if spans else None


def needed(ops: Mapping[str, Any], target: str, inputs_of: Callable[[Any], Iterable[str]] = op_inputs,
           ) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    """The digests `target` depends on (itself included), inputs first, and each one's distinct inputs;
    InternalError on an op missing from `ops` or a cycle."""
    order: list[str] = []
    inputs: dict[str, tuple[str, ...]] = {}
    state: dict[str, bool] = {}  # False while on the DFS stack, True when finished
    stack: list[tuple[str, bool]] = [(target, False)]
    while stack:
        digest, expanded = stack.pop()
        if expanded:
            state[digest] = True
            order.append(digest)
            continue
        if digest in state:
            if not state[digest]:
                raise InternalError(f"solve: the plan has a cycle through {digest}")
            continue
        if digest not in ops:
            raise InternalError(f"solve: op {digest} is not in the plan")
        state[digest] = False
        inputs[digest] = tuple(dict.fromkeys(inputs_of(ops[digest])))
        stack.append((digest, True))
        stack.extend((source, False) for source in reversed(inputs[digest]) if state.get(source) is not True)
    return order, inputs


def solve(
    plan: PlanLike,
    run_op: RunOp[R],
    *,
    jobs: int | None = None,
    key_of: Callable[[Any], str] | None = None,
    sink: Sink | None = None,
    cancel: threading.Event | None = None,
    inputs_of: Callable[[Any], Iterable[str]] = op_inputs,
    name_of: Callable[[Any], str] = default_name,
) -> dict[str, R]:
    """Run every op the plan's target needs, inputs first, and return digest → result (in plan order).

    `jobs` bounds the ops running at once (default: CPU count). Ops with the same `key_of(op)` run once.
    The first exception raised by `run_op` cancels the rest and is re-raised as is; `KeyboardInterrupt`
    cancels, waits for running ops and is re-raised. `cancel` may be set by the caller to stop the solve
    (then `Canceled` is raised). `inputs_of` and `name_of` default to the planner's ops.
    """
    return Scheduler(plan, run_op, jobs=jobs, key_of=key_of, sink=sink, cancel=cancel,
                     inputs_of=inputs_of, name_of=name_of).run()


class Scheduler(Generic[R]):
    """One solve's state; `solve()` makes one and calls `run()`. Tests subclass it to override `wait_done`."""

    def __init__(
        self,
        plan: PlanLike,
        run_op: RunOp[R],
        *,
        jobs: int | None = None,
        key_of: Callable[[Any], str] | None = None,
        sink: Sink | None = None,
        cancel: threading.Event | None = None,
        inputs_of: Callable[[Any], Iterable[str]] = op_inputs,
        name_of: Callable[[Any], str] = default_name,
    ) -> None:
        self.jobs = max(1, jobs if jobs is not None else (os.cpu_count() or 1))
        self.cancel = cancel if cancel is not None else threading.Event()
        self._ops = plan.ops
        self._run_op = run_op
        self._key_of = key_of
        self._sink = sink
        self._name_of = name_of
        self._sink_lock = threading.Lock()
        self._lock = threading.Lock()  # guards _flights, _waiters and _error
        self._flights: dict[str, Future[R]] = {}
        self._waiters: dict[str, list[str]] = {}  # key → digests sharing its unfinished flight
        self._error: BaseException | None = None
        import queue  # here, not at the top: a fully cached build never solves (nor needs queue, heapq)

        self._done: queue.SimpleQueue[str] = queue.SimpleQueue()  # keys whose flight finished
        self._running: set[str] = set()  # keys in flight
        self._results: dict[str, R] = {}
        self._order, self._inputs = needed(plan.ops, plan.target, inputs_of)
        self._pending = {d: len(self._inputs[d]) for d in self._order}
        self._users: dict[str, list[str]] = {d: [] for d in self._order}
        for digest in self._order:
            for source in self._inputs[digest]:
                self._users[source].append(digest)
        self._ready = deque(d for d in self._order if not self._pending[d])

    def run(self) -> dict[str, R]:
        """Run the solve; see `solve()`."""
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="pybuild-solve")
        try:
            self._loop(pool)
        except BaseException:
            self.cancel.set()  # KeyboardInterrupt (or a bug here): tell running ops, then wait for them
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if self._error is not None:
            raise self._error
        if len(self._results) < len(self._order):
            raise Canceled("build canceled")
        return {digest: self._results[digest] for digest in self._order}

    def wait_done(self) -> str:
        """Block until a flight finishes and return its key (the hook tests use to inject Ctrl-C).

        Waits in slices: a SIGINT/SIGTERM the kernel hands to a worker thread only sets CPython's flag and
        does not wake an untimed wait here, so Ctrl-C would go unnoticed until the running step ended.
        """
        from queue import Empty

        while True:
            try:
                return self._done.get(timeout=_SIGNAL_POLL)
            except Empty:
                continue

    def _loop(self, pool: ThreadPoolExecutor) -> None:
        while len(self._results) < len(self._order):
            if not self.cancel.is_set():
                self._start_ready(pool)
            if not self._running:
                return  # canceled with nothing left running (the ready queue is never empty otherwise)
            self._finish(self.wait_done())

    def _start_ready(self, pool: ThreadPoolExecutor) -> None:
        while self._ready:
            digest = self._ready[0]
            op = self._ops[digest]
            key = self._key_of(op) if self._key_of is not None else digest
            with self._lock:
                flight = self._flights.get(key)
                if flight is not None and key in self._waiters:
                    self._waiters[key].append(digest)  # same work in flight: share it
                    self._ready.popleft()
                    continue
            if flight is not None:  # same work already finished
                self._ready.popleft()
                self._emit(StepCached(digest, self._name_of(op), default_span(op)))
                self._complete(digest, flight.result())
                continue
            if len(self._running) >= self.jobs:
                return
            self._ready.popleft()
            self._submit(pool, key, digest, op)

    def _submit(self, pool: ThreadPoolExecutor, key: str, digest: str, op: Any) -> None:
        inputs = {source: self._results[source] for source in self._inputs[digest]}
        step = Step(digest, self.cancel, self._emit, self._name_of(op), default_span(op))
        with self._lock:
            self._waiters[key] = [digest]
            flight = pool.submit(self._run_step, step, op, inputs)
            self._flights[key] = flight
        self._running.add(key)
        flight.add_done_callback(lambda _: self._done.put(key))

    def _run_step(self, step: Step, op: Any, inputs: Mapping[str, R]) -> R:
        """Runs in a worker thread: progress events around `run_op`; the first failure cancels the solve."""
        start = time.monotonic()
        self._emit(StepStarted(step.digest, step.name, step.span))
        try:
            result = self._run_op(step.digest, op, inputs, step)
        except BaseException as exc:
            with self._lock:
                first = not self.cancel.is_set()
                if first:
                    self._error = exc
                    self.cancel.set()
            elapsed = time.monotonic() - start
            if first:
                self._emit(StepFailed(step.digest, str(exc) or type(exc).__name__, elapsed))
            else:
                self._emit(StepCanceled(step.digest, elapsed))
            raise
        self._emit(StepDone(step.digest, time.monotonic() - start))
        return result

    def _finish(self, key: str) -> None:
        """Main thread: a flight ended; on success, complete every op that shared it."""
        self._running.discard(key)
        with self._lock:
            flight = self._flights[key]
            waiters = self._waiters.pop(key)
        if flight.exception() is not None:
            return  # the worker recorded the error and set cancel
        result = flight.result()
        for index, digest in enumerate(waiters):
            if index:
                op = self._ops[digest]
                self._emit(StepCached(digest, self._name_of(op), default_span(op)))
            self._complete(digest, result)

    def _complete(self, digest: str, result: R) -> None:
        self._results[digest] = result
        for user in self._users[digest]:
            self._pending[user] -= 1
            if not self._pending[user]:
                self._ready.append(user)

    def _emit(self, event: Event) -> None:
        if self._sink is not None:
            with self._sink_lock:
                self._sink.emit(event)
