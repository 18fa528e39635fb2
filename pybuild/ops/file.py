"""COPY, ADD and WORKDIR's mkdir (`FileOp`): a change to a fresh overlay of the input; it becomes a layer.

Key: the definition, SOURCE_DATE_EPOCH when set, and the keys of its inputs; a COPY from the context keys
the files it reads directly (not through the context op's key), so --explain-cache can name the file that
changed. `ADD <url>` without `--checksum` cannot be keyed before it runs (the remote file may change): it
always runs, and the runner keys it by the layer it produced (BuildKit keys such sources by the downloaded
content, too).

Execution: a source that is another op's filesystem (`COPY --from`) is mounted read-only-in-effect (a
throwaway overlay released afterwards) and copied from its rootfs with owners preserved; context sources
are listed when the COPY runs (with the context's ignore file).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pybuild.cache.keys import CacheKeyInput
from pybuild.errors import InternalError, UserError
from pybuild.ops.base import OpHandler, input_result
from pybuild.plan.ops import FileOp
from pybuild.worker.types import StepResult

if TYPE_CHECKING:
    from pybuild.ops.base import KeyEnv, WorkerSide
    from pybuild.context.sources import TreeView

__all__ = ["FileHandler"]


class FileHandler(OpHandler[FileOp]):
    op_type = FileOp
    layer = True

    def key_definition(self, op: FileOp, epoch: int | None) -> dict[str, Any]:
        definition = super().key_definition(op, epoch)
        if epoch is not None:
            definition["source_date_epoch"] = epoch
        return definition

    def key(self, env: KeyEnv, digest: str, op: FileOp, keys: tuple[str, ...]) -> CacheKeyInput:
        content = env.content_of(op.source.input) if op.source is not None else None
        if content is not None:
            return self.key_input(op, keys[:1], epoch=env.epoch, content=content)
        return self.key_input(op, keys, epoch=env.epoch)

    def unkeyable(self, op: FileOp) -> bool:
        return bool(op.urls) and not op.checksum

    def execute(self, worker: WorkerSide, op: FileOp, inputs: Mapping[str, StepResult],
                cancel: threading.Event | None) -> StepResult:
        base = input_result(inputs, op.input)
        with worker.layer_step(base) as (active, made):
            if op.action == "mkdir-workdir":
                from pybuild.worker.fileops import make_workdir

                make_workdir(active.rootfs, op.dest, op.user)
            elif op.action in ("copy", "add"):
                _copy(worker, op, active.rootfs, inputs)
            else:
                raise InternalError(f"unknown file action {op.action!r}")
        return StepResult(diff_ids=base.diff_ids + (made[0],))


def _copy(worker: WorkerSide, op: FileOp, rootfs: str, inputs: Mapping[str, StepResult]) -> None:
    paths = op.source.paths if op.source is not None else ()
    if op.contents:
        from pybuild.worker.fileops import write_heredocs

        files = tuple((name, data.encode("utf-8", "surrogateescape")) for name, data in op.contents)
        write_heredocs(rootfs, files, op.dest, workdir=op.cwd, chown=op.chown or None,
                       chmod=op.chmod or None, more_sources=bool(paths or op.urls), what=op.action.upper())
    if op.source is None or not op.source.paths:
        if op.urls:
            _add(op, rootfs, (), None, None)
        return
    source = input_result(inputs, op.source.input)
    if source.context:
        from pybuild.context.context import list_sources
        from pybuild.context.sources import EntryView

        if worker.context is None:
            raise UserError(f"{op.action.upper()} needs a build context, and this build has none")
        listing = list_sources(worker.context, paths, parents=op.parents)
        _place(op, rootfs, EntryView(listing.entries), worker.context.root, None)
        return
    with worker.snapshots.mounted_rootfs(worker.chain(source)) as other:
        from pybuild.worker.fileops import stage_view

        _place(op, rootfs, stage_view(other.rootfs), other.rootfs,
               op.source.from_ref or source.name or "from")


def _place(op: FileOp, rootfs: str, view: TreeView, source_root: str, from_stage: str | None) -> None:
    if op.action == "add":
        _add(op, rootfs, op.source.paths if op.source else (), view, source_root)
        return
    from pybuild.worker.fileops import copy_sources

    assert op.source is not None
    copy_sources(rootfs, op.source.paths, op.dest, view=view, source_root=source_root, workdir=op.cwd,
                 chown=op.chown or None, chmod=op.chmod or None, excludes=op.excludes,
                 parents=op.parents, from_stage=from_stage, link=op.link)


def _add(op: FileOp, rootfs: str, paths: tuple[str, ...], view: TreeView | None,
         source_root: str | None) -> None:
    from pybuild.worker.addsource import add_sources

    add_sources(rootfs, (*op.urls, *paths), op.dest, view=view, source_root=source_root, workdir=op.cwd,
                chown=op.chown or None, chmod=op.chmod or None, excludes=op.excludes, unpack=op.unpack,
                checksum=op.checksum, keep_git_dir=op.keep_git_dir)
