"""`FROM ref` / `COPY --from=ref`: a base image (`ImageSourceOp`).

Key: the reference, the platform and the manifest digest the build's resolver found (local store, or
pulled). Result: the image's layers, resolved without running anything; on the worker (a plan run
serially), the local store's image. Name: `[stage 1/N] FROM ref`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pybuild.cache.keys import CacheKeyInput, cache_key
from pybuild.ops.base import OpHandler
from pybuild.plan.ops import ImageSourceOp
from pybuild.worker.types import StepResult

if TYPE_CHECKING:
    from pybuild.ops.base import KeyEnv, WorkerSide
    from pybuild.ops.naming import Naming
    from pybuild.store.images import StoredImage

__all__ = ["ImageHandler"]


class ImageHandler(OpHandler[ImageSourceOp]):
    op_type = ImageSourceOp

    def key(self, env: KeyEnv, digest: str, op: ImageSourceOp, keys: tuple[str, ...]) -> CacheKeyInput:
        return self._key(op, keys, env.image(op))

    def _key(self, op: ImageSourceOp, keys: tuple[str, ...], image: StoredImage) -> CacheKeyInput:
        return self.key_input(op, keys, extra={"manifest": image.manifest_digest})

    def source_result(self, env: KeyEnv, digest: str, op: ImageSourceOp, keys: tuple[str, ...]) -> StepResult:
        image = env.image(op)
        return StepResult(diff_ids=image.diff_ids, name=op.ref, key=cache_key(self._key(op, keys, image)))

    def execute(self, worker: WorkerSide, op: ImageSourceOp, inputs: Mapping[str, StepResult],
                cancel: threading.Event | None) -> StepResult:
        from pybuild.store.images import resolve_image

        image = resolve_image(worker.store, op.ref)
        return StepResult(diff_ids=image.diff_ids, name=op.ref)

    def name(self, op: ImageSourceOp, naming: Naming) -> str:
        stage = naming.stage_at(op.spans[0]) if op.spans else None
        if stage is None:
            return naming.located(op)
        return f"[{stage.label} 1/{len(stage.lines)}] FROM {op.ref}"
