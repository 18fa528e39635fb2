"""`FROM scratch`: the empty filesystem (`ScratchOp`). Key: its definition alone; result: no layers."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pybuild.cache.keys import CacheKeyInput, cache_key
from pybuild.ops.base import OpHandler
from pybuild.plan.ops import ScratchOp
from pybuild.worker.types import StepResult

if TYPE_CHECKING:
    from pybuild.ops.base import KeyEnv, WorkerSide

__all__ = ["ScratchHandler"]


class ScratchHandler(OpHandler[ScratchOp]):
    op_type = ScratchOp

    def key(self, env: KeyEnv, digest: str, op: ScratchOp, keys: tuple[str, ...]) -> CacheKeyInput:
        return self.key_input(op, keys)

    def source_result(self, env: KeyEnv, digest: str, op: ScratchOp, keys: tuple[str, ...]) -> StepResult:
        return StepResult(diff_ids=(), key=cache_key(self.key(env, digest, op, keys)))

    def execute(self, worker: WorkerSide, op: ScratchOp, inputs: Mapping[str, StepResult],
                cancel: threading.Event | None) -> StepResult:
        return StepResult(diff_ids=())
