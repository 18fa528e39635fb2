"""The solver's scheduler with fake ops: order, parallelism, bounds, single flight, cancel, progress."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest

from pybuild.errors import InternalError
from pybuild.progress import (
    ListSink,
    StepCached,
    StepCanceled,
    StepDone,
    StepFailed,
    StepOutput,
    StepStarted,
)
from pybuild.record import record
from pybuild.solve.scheduler import Canceled, Scheduler, Step, solve


@record
class FakeOp:
    name: str
    inputs: tuple[str, ...] = ()
    key: str = ""
    sleep: float = 0.0
    fail: bool = False


@record
class FakePlan:
    ops: Mapping[str, FakeOp]
    target: str


def plan_of(*ops: FakeOp, target: str | None = None) -> FakePlan:
    return FakePlan({op.name: op for op in ops}, target or ops[-1].name)


class Boom(ValueError):
    pass


class Recorder:
    """A fake `run_op`: sleeps, records start/end times and concurrency, concatenates input results."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[str] = []
        self.start: dict[str, float] = {}
        self.end: dict[str, float] = {}
        self.active = 0
        self.max_active = 0
        self.saw_cancel: set[str] = set()

    def __call__(self, digest: str, op: FakeOp, inputs: Mapping[str, str], step: Step) -> str:
        with self.lock:
            self.calls.append(digest)
            self.start[digest] = time.monotonic()
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if op.fail:
                raise Boom(f"{digest} failed")
            if step.cancel.wait(op.sleep):
                self.saw_cancel.add(digest)
                step.check()
            return digest + "(" + ",".join(inputs[i] for i in op.inputs) + ")"
        finally:
            with self.lock:
                self.active -= 1
                self.end[digest] = time.monotonic()


def inputs_of(op: FakeOp) -> tuple[str, ...]:
    return op.inputs


def run(plan: FakePlan, rec: Recorder, **kwargs: Any) -> dict[str, str]:
    return solve(plan, rec, inputs_of=inputs_of, name_of=lambda op: op.name, **kwargs)


def test_dependency_order_and_results() -> None:
    plan = plan_of(FakeOp("a"), FakeOp("b", ("a",)), FakeOp("c", ("a",)), FakeOp("d", ("b", "c")),
                   FakeOp("unused"), target="d")
    rec = Recorder()
    results = run(plan, rec, jobs=4)
    assert results == {"a": "a()", "b": "b(a())", "c": "c(a())", "d": "d(b(a()),c(a()))"}
    assert "unused" not in rec.calls
    for user, sources in (("b", "a"), ("c", "a"), ("d", "b"), ("d", "c")):
        assert rec.end[sources] <= rec.start[user]


def test_independent_ops_run_in_parallel() -> None:
    plan = plan_of(FakeOp("x", sleep=0.2), FakeOp("y", sleep=0.2), FakeOp("t", ("x", "y")))
    rec = Recorder()
    start = time.monotonic()
    run(plan, rec, jobs=2)
    assert time.monotonic() - start < 0.35
    assert rec.max_active == 2


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_jobs_bound_is_respected(jobs: int) -> None:
    leaves = [FakeOp(f"l{i}", sleep=0.03) for i in range(6)]
    plan = plan_of(*leaves, FakeOp("t", tuple(op.name for op in leaves)))
    rec = Recorder()
    run(plan, rec, jobs=jobs)
    assert rec.max_active == jobs


def test_same_key_runs_once() -> None:
    plan = plan_of(FakeOp("pull1", key="alpine", sleep=0.05), FakeOp("pull2", key="alpine", sleep=0.05),
                   FakeOp("t", ("pull1", "pull2")))
    rec = Recorder()
    sink = ListSink()
    results = run(plan, rec, jobs=4, key_of=lambda op: op.key or op.name, sink=sink)
    assert sorted(rec.calls) == ["pull1", "t"]
    assert results["pull2"] == results["pull1"] == "pull1()"
    assert StepCached("pull2", "pull2") in sink.events


def test_same_key_after_the_first_finished_reuses_it() -> None:
    plan = plan_of(FakeOp("a", key="k"), FakeOp("b", ("a",)), FakeOp("c", ("b",), key="k"))
    rec = Recorder()
    results = run(plan, rec, jobs=2, key_of=lambda op: op.key or op.name)
    assert rec.calls == ["a", "b"]
    assert results["c"] == "a()"


def test_failure_cancels_pending_and_running_and_propagates() -> None:
    plan = plan_of(FakeOp("slow", sleep=5), FakeOp("bad", fail=True), FakeOp("after", ("bad",)),
                   FakeOp("t", ("slow", "after")))
    rec = Recorder()
    sink = ListSink()
    cancel = threading.Event()
    start = time.monotonic()
    with pytest.raises(Boom, match="bad failed"):
        run(plan, rec, jobs=2, sink=sink, cancel=cancel)
    assert time.monotonic() - start < 2
    assert cancel.is_set()
    assert "after" not in rec.calls and "t" not in rec.calls
    assert rec.saw_cancel == {"slow"}
    assert [type(e) for e in sink.events if getattr(e, "digest", "") == "slow"] == [StepStarted, StepCanceled]
    assert any(isinstance(e, StepFailed) and e.digest == "bad" and e.error == "bad failed" for e in sink.events)


def test_pending_ops_never_start_after_failure() -> None:
    plan = plan_of(FakeOp("bad", fail=True), *(FakeOp(f"l{i}") for i in range(5)),
                   FakeOp("t", ("bad", *(f"l{i}" for i in range(5)))))
    rec = Recorder()
    with pytest.raises(Boom):
        run(plan, rec, jobs=1)
    assert rec.calls == ["bad"]


class InterruptingScheduler(Scheduler[str]):
    """Raises KeyboardInterrupt from the caller's wait, as Ctrl-C would."""

    def wait_done(self) -> str:
        raise KeyboardInterrupt


def test_keyboard_interrupt_cancels_waits_and_reraises() -> None:
    plan = plan_of(FakeOp("a", sleep=5), FakeOp("b", sleep=5), FakeOp("t", ("a", "b")))
    rec = Recorder()
    scheduler = InterruptingScheduler(plan, rec, jobs=2, inputs_of=inputs_of)
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        scheduler.run()
    assert time.monotonic() - start < 2
    assert scheduler.cancel.is_set()
    assert rec.active == 0  # running ops stopped before run() returned
    assert rec.saw_cancel == {"a", "b"}


def test_real_sigint_interrupts_the_wait() -> None:
    def run_op(digest: str, op: FakeOp, inputs: Mapping[str, str], step: Step) -> str:
        if digest == "a":
            os.kill(os.getpid(), signal.SIGINT)
        step.cancel.wait(5)
        step.check()
        return digest

    plan = plan_of(FakeOp("a"), FakeOp("t", ("a",)))
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        solve(plan, run_op, jobs=1, inputs_of=inputs_of)
    assert time.monotonic() - start < 2


def test_external_cancel_raises_canceled() -> None:
    cancel = threading.Event()

    def run_op(digest: str, op: FakeOp, inputs: Mapping[str, str], step: Step) -> str:
        cancel.set()
        return digest

    with pytest.raises(Canceled):
        solve(plan_of(FakeOp("a"), FakeOp("b", ("a",))), run_op, cancel=cancel, inputs_of=inputs_of)


def test_progress_events_in_order() -> None:
    def run_op(digest: str, op: FakeOp, inputs: Mapping[str, str], step: Step) -> str:
        if digest == "a":
            step.cached()
        else:
            step.output("stdout", b"hi\n")
        return digest

    sink = ListSink()
    solve(plan_of(FakeOp("a"), FakeOp("b", ("a",))), run_op, jobs=1, sink=sink, inputs_of=inputs_of,
          name_of=lambda op: op.name.upper())
    kinds = [(type(e).__name__, e.digest) for e in sink.events]
    assert kinds == [("StepStarted", "a"), ("StepCached", "a"), ("StepDone", "a"),
                     ("StepStarted", "b"), ("StepOutput", "b"), ("StepDone", "b")]
    assert sink.events[0] == StepStarted("a", "A", None)
    assert sink.events[4] == StepOutput("b", "stdout", b"hi\n")
    assert isinstance(sink.events[5], StepDone) and sink.events[5].duration >= 0


def test_missing_input_and_cycle_are_internal_errors() -> None:
    rec = Recorder()
    with pytest.raises(InternalError, match="not in the plan"):
        run(plan_of(FakeOp("a", ("ghost",))), rec)
    with pytest.raises(InternalError, match="cycle"):
        run(plan_of(FakeOp("a", ("b",)), FakeOp("b", ("a",))), rec)


def test_real_plan_uses_op_inputs() -> None:
    from pybuild.plan.ops import ScratchOp

    scratch = ScratchOp()
    plan = FakePlan({scratch.digest: scratch}, scratch.digest)  # type: ignore[dict-item]
    results = solve(plan, lambda digest, op, inputs, step: op.kind, jobs=1)
    assert results == {scratch.digest: "scratch"}
