"""The worker: runs one plan op on snapshots and returns the snapshot chain of its result.

Who uses it: the build runner (`solve.runner.StepRunner`, one `Worker.run_op` call per op that misses the
cache, inputs first) and the integration tests, which run a plan serially. `commit_image.py` turns the
results of a target's layer ops into a stored image.

The worker knows no op kind: `run_op` hands the op to its kind's handler (`pybuild.ops`), which does the
work with what the worker holds (store, context, snapshots, runtime, secrets, sandbox, entitlements) and
`layer_step`: a fresh overlay over the input's layers whose changes become a layer (blob + snapshot) when
the handler's block succeeds. Every step snapshot is released on failure, so a failing step leaves no mount
behind.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager

from pybuild.context.context import BuildContext
from pybuild.errors import at
from pybuild.image.spec import layer_media_type
from pybuild.ops import handler_for
from pybuild.plan.ops import Op
from pybuild.store.store import Store
from pybuild.worker.secrets import SecretStore
from pybuild.worker.snapshots import ActiveSnapshot, Snapshot, Snapshots
from pybuild.worker.spec import ETC_FILES
from pybuild.worker.types import OutputSink, Sandbox, StepResult

__all__ = ["RUNTIME_FILES", "StepResult", "Worker"]

RUNTIME_FILES = frozenset("/etc/" + name for name in ETC_FILES)
"""The files the runtime bind-mounts into every RUN container; never part of a RUN's layer."""


class Worker:
    """Runs ops on the snapshots of `store`, reading COPY sources from `context` (None: no context)."""

    def __init__(self, store: Store, context: BuildContext | None, runtime: str = "runc", *,
                 snapshots: Snapshots | None = None, output: OutputSink | None = None,
                 epoch: int | None = None, secrets: SecretStore | None = None, sandbox: Sandbox | None = None,
                 allow: Collection[str] = ("network.host",)) -> None:
        self.store = store
        self.context = context
        self.runtime = runtime
        self.snapshots = snapshots if snapshots is not None else Snapshots.open(store)
        self._output = output
        self._local = threading.local()  # the output sink of the op running on this thread
        self.epoch = epoch  # SOURCE_DATE_EPOCH: clamps file times in the layers steps make
        self.secrets = secrets if secrets is not None else SecretStore()  # what secret mounts read
        self.sandbox = sandbox if sandbox is not None else Sandbox()  # the build's limits for RUN steps
        self.allow = frozenset(allow)  # entitlements (--allow); by default a plain Worker may use `host`

    @property
    def output(self) -> OutputSink | None:
        """Where the running op's process output goes: the `run_op` caller's sink, else the worker's."""
        sink: OutputSink | None = getattr(self._local, "output", None)
        return sink if sink is not None else self._output

    def run_op(self, op: Op, inputs: Mapping[str, StepResult], cancel: threading.Event | None = None,
               *, output: OutputSink | None = None) -> StepResult:
        """Run `op` given the results of its inputs (by digest); StepFailed/UserError name its span.

        `output` receives this op's process output (threads running ops at once each pass their own)."""
        self._local.output = output
        span = op.spans[0] if op.spans else None
        try:
            if span is None:
                return self._dispatch(op, inputs, cancel)
            with at(span):
                return self._dispatch(op, inputs, cancel)
        finally:
            self._local.output = None

    def _dispatch(self, op: Op, inputs: Mapping[str, StepResult],
                  cancel: threading.Event | None) -> StepResult:
        return handler_for(op).execute(self, op, inputs, cancel)

    def chain(self, result: StepResult) -> tuple[str, ...]:
        """The snapshot chain of `result`'s filesystem, unpacking layers that are not there yet."""
        return self.snapshots.ensure_layers(self.store, result.diff_ids)

    @contextmanager
    def layer_step(self, base: StepResult, *,
                   run: bool = False) -> Iterator[tuple[ActiveSnapshot, list[str]]]:
        """A fresh overlay over `base`; the caller's block fills it. When the block succeeds, its changes
        are stored as a layer and the upperdir becomes that layer's snapshot; the new diffID is appended to
        the yielded list. Released (nothing kept) when the block fails."""
        chain = self.chain(base)
        active = self.snapshots.prepare(chain)
        made: list[str] = []
        try:
            yield active, made
            step = self.snapshots.commit(active)
            if run:
                _drop_runtime_stubs(step.path)
            try:
                diff_id = self._store_layer(step, exclude=RUNTIME_FILES if run else ())
                self.snapshots.adopt(step.id, chain[-1] if chain else None, diff_id)
            except BaseException:
                self.snapshots.remove(step.id)
                raise
            made.append(diff_id)
        finally:
            self.snapshots.release(active)  # no-op after commit

    def _store_layer(self, step: Snapshot, exclude: Collection[str]) -> str:
        """Store the changes of committed `step` as an uncompressed layer blob; returns its diffID."""
        with self.store.blobs.writer() as writer:
            diff_id, size = self.snapshots.export_layer(step, writer, clamp_mtime=self.epoch, exclude=exclude)
            writer.commit(diff_id)
        self.store.index.record_blob(diff_id, size, layer_media_type("uncompressed"))
        self.store.index.record_layer(diff_id, size)
        return diff_id


def _drop_runtime_stubs(upper: str) -> None:
    """Remove the empty files the runtime made in a RUN's upperdir to bind-mount /etc/hosts, resolv.conf
    and hostname over (they never belong to the step: BuildKit leaves them out of layers too)."""
    for path in RUNTIME_FILES:
        stub = upper + path
        try:
            if stat.S_ISREG(os.lstat(stub).st_mode):
                os.unlink(stub)
        except FileNotFoundError:
            pass
