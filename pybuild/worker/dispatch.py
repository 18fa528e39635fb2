"""The worker's op wiring: run one plan op on snapshots and return the snapshot chain of its result.

Who uses it: the solver (one `Worker.run_op` call per op, inputs first) and the integration tests, which
run a plan serially. `commit_image.py` turns the results of a target's layer ops into a stored image.

What each op does:
- `ImageSourceOp`: the image is resolved in the local store (no pulling here) and its layers unpacked once
  (`Snapshots.ensure_layers`); the result is the layers' chain ids.
- `ScratchOp`: the empty chain.
- `ContextSourceOp`: a marker only. The files a COPY reads are listed when the COPY runs
  (`list_sources` over the op's source paths, with the context's ignore file), so the result is an empty
  chain flagged `context=True`.
- `ExecOp`: a fresh overlay over the input chain, the process in the OCI runtime, commit -> chain + (step,).
  RUN `--mount` is not wired yet (a UserError says so); neither is `--security=insecure`.
- `FileOp`: COPY / ADD / WORKDIR's mkdir on a fresh overlay over the input chain, then commit. A source that
  is another op's filesystem (`COPY --from`) is mounted read-only-in-effect (a throwaway overlay released
  afterwards) and copied from its rootfs with owners preserved.

Every step snapshot is released on failure, so a failing step leaves no mount behind.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from pybuild.context.context import BuildContext, list_sources
from pybuild.context.sources import EntryView, TreeView
from pybuild.errors import InternalError, StepFailed, UserError, at
from pybuild.plan.ops import ContextSourceOp, ExecOp, FileOp, ImageSourceOp, Op, ScratchOp
from pybuild.record import record
from pybuild.store.images import resolve_image
from pybuild.store.store import Store
from pybuild.worker.executor import run_process
from pybuild.worker.snapshots import ActiveSnapshot, Snapshots
from pybuild.worker.types import NetworkMode, OutputSink, ProcessSpec

__all__ = ["StepResult", "Worker"]

_NETWORKS: tuple[NetworkMode, ...] = ("default", "none", "host")


@record(kw_only=True)
class StepResult:
    """The output filesystem of one op: its snapshot chain (snapshot ids, bottom-most first).

    `context` marks a build-context source (no filesystem of its own); `name` is what errors call a
    `COPY --from` source (the image reference for an image, else '').
    """

    chain: tuple[str, ...]
    context: bool = False
    name: str = ""


class Worker:
    """Runs ops on the snapshots of `store`, reading COPY sources from `context` (None: no context)."""

    def __init__(self, store: Store, context: BuildContext | None, runtime: str = "runc", *,
                 snapshots: Snapshots | None = None, output: OutputSink | None = None) -> None:
        self.store = store
        self.context = context
        self.runtime = runtime
        self.snapshots = snapshots if snapshots is not None else Snapshots.open(store)
        self.output = output

    def run_op(self, op: Op, inputs: Mapping[str, StepResult],
               cancel: threading.Event | None = None) -> StepResult:
        """Run `op` given the results of its inputs (by digest); StepFailed/UserError name its span."""
        span = op.spans[0] if op.spans else None
        if span is None:
            return self._dispatch(op, inputs, cancel)
        with at(span):
            return self._dispatch(op, inputs, cancel)

    def _dispatch(self, op: Op, inputs: Mapping[str, StepResult],
                  cancel: threading.Event | None) -> StepResult:
        if isinstance(op, ImageSourceOp):
            image = resolve_image(self.store, op.ref)
            return StepResult(chain=self.snapshots.ensure_layers(self.store, image.diff_ids), name=op.ref)
        if isinstance(op, ScratchOp):
            return StepResult(chain=())
        if isinstance(op, ContextSourceOp):
            return StepResult(chain=(), context=True)
        if isinstance(op, ExecOp):
            return self._exec(op, _input(inputs, op.input), cancel)
        if isinstance(op, FileOp):
            return self._file(op, inputs)
        raise InternalError(f"the worker has no implementation for op {type(op).__name__}")

    @contextmanager
    def _step(self, parents: tuple[str, ...]) -> Iterator[tuple[ActiveSnapshot, list[str]]]:
        """A fresh overlay over `parents`; the caller's block fills it; committed when the block succeeds,
        released otherwise. The committed id is appended to the yielded list."""
        active = self.snapshots.prepare(parents)
        committed: list[str] = []
        try:
            yield active, committed
            committed.append(self.snapshots.commit(active).id)
        finally:
            self.snapshots.release(active)  # no-op after commit

    # --- RUN ------------------------------------------------------------------------------------------

    def _exec(self, op: ExecOp, base: StepResult, cancel: threading.Event | None) -> StepResult:
        if op.mounts:
            raise UserError("RUN --mount is not wired into builds yet")
        if op.security not in ("", "sandbox"):
            raise UserError(f"RUN --security={op.security} is not supported")
        if op.network not in _NETWORKS:
            raise UserError(f"RUN --network={op.network} is not supported (use default, none or host)")
        network: NetworkMode = op.network  # checked just above
        process = ProcessSpec(args=_run_args(op), env=op.env + op.proxy_env, user=op.user, cwd=op.cwd or "/")
        with self._step(base.chain) as (active, committed):
            run_process(active.rootfs, process, network=network, runtime=self.runtime, output=self.output,
                        cancel=cancel)
        return StepResult(chain=base.chain + (committed[0],))

    # --- COPY / ADD / WORKDIR ---------------------------------------------------------------------------

    def _file(self, op: FileOp, inputs: Mapping[str, StepResult]) -> StepResult:
        base = _input(inputs, op.input)
        with self._step(base.chain) as (active, committed):
            if op.action == "mkdir-workdir":
                from pybuild.worker.fileops import make_workdir

                make_workdir(active.rootfs, op.dest, op.user)
            elif op.action in ("copy", "add"):
                self._copy(op, active.rootfs, inputs)
            else:
                raise InternalError(f"unknown file action {op.action!r}")
        return StepResult(chain=base.chain + (committed[0],))

    def _copy(self, op: FileOp, rootfs: str, inputs: Mapping[str, StepResult]) -> None:
        paths = op.source.paths if op.source is not None else ()
        if op.contents:
            from pybuild.worker.fileops import write_heredocs

            files = tuple((name, data.encode("utf-8", "surrogateescape")) for name, data in op.contents)
            write_heredocs(rootfs, files, op.dest, workdir=op.cwd, chown=op.chown or None,
                           chmod=op.chmod or None, more_sources=bool(paths or op.urls),
                           what=op.action.upper())
        if op.source is None or not op.source.paths:
            if op.urls:
                self._add(op, rootfs, (), None, None)
            return
        source = _input(inputs, op.source.input)
        if source.context:
            if self.context is None:
                raise UserError(f"{op.action.upper()} needs a build context, and this build has none")
            listing = list_sources(self.context, paths, parents=op.parents)
            self._place(op, rootfs, EntryView(listing.entries), self.context.root, None)
            return
        with self.snapshots.mounted_rootfs(source.chain) as other:
            from pybuild.worker.fileops import stage_view

            self._place(op, rootfs, stage_view(other.rootfs), other.rootfs, source.name or "from")

    def _place(self, op: FileOp, rootfs: str, view: TreeView, source_root: str, from_stage: str | None) -> None:
        if op.action == "add":
            self._add(op, rootfs, op.source.paths if op.source else (), view, source_root)
            return
        from pybuild.worker.fileops import copy_sources

        assert op.source is not None
        copy_sources(rootfs, op.source.paths, op.dest, view=view, source_root=source_root, workdir=op.cwd,
                     chown=op.chown or None, chmod=op.chmod or None, excludes=op.excludes,
                     parents=op.parents, from_stage=from_stage, link=op.link)

    def _add(self, op: FileOp, rootfs: str, paths: tuple[str, ...], view: TreeView | None,
             source_root: str | None) -> None:
        from pybuild.worker.addsource import add_sources

        add_sources(rootfs, (*op.urls, *paths), op.dest, view=view, source_root=source_root, workdir=op.cwd,
                    chown=op.chown or None, chmod=op.chmod or None, excludes=op.excludes, unpack=op.unpack,
                    checksum=op.checksum, keep_git_dir=op.keep_git_dir)


def _input(inputs: Mapping[str, StepResult], digest: str) -> StepResult:
    try:
        return inputs[digest]
    except KeyError:
        raise InternalError(f"input {digest} was not run before the op that needs it") from None


def _run_args(op: ExecOp) -> tuple[str, ...]:
    """argv of a RUN. Heredocs left on a shell-form command line are appended to the script as
    `line + "\\n" + body + name` so the shell performs the redirections itself (BuildKit's rule)."""
    if not op.heredocs:
        return op.args
    if len(op.args) < 1:
        raise StepFailed("RUN with heredocs needs a command line")
    script = op.args[-1]
    for name, data in op.heredocs:
        script += "\n" + data + name
    return (*op.args[:-1], script)
