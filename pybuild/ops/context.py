"""The build context a COPY/ADD or a bind mount reads (`ContextSourceOp`).

Key: the content checksums of exactly the files the op selects (`ContextSums`), never mtimes, so a `touch`
keeps every key and a 1-byte edit changes only the keys of the steps that read the file. Result: a marker
(`context=True`, no layers); the files are listed when the COPY runs. Name:
`[internal] load build context: <includes>`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pybuild.cache.keys import CacheKeyInput, cache_key
from pybuild.context.context import BuildContext
from pybuild.ops.base import OpHandler
from pybuild.plan.ops import ContextSourceOp
from pybuild.worker.types import StepResult

if TYPE_CHECKING:
    from pybuild.ops.base import KeyEnv, WorkerSide
    from pybuild.ops.naming import Naming

__all__ = ["ContextHandler", "ContextSums"]

# Context selections with more entries than this are described (for --explain-cache) by their top-level
# entries only, so a 20,000-file COPY does not store 20,000 checksums per cache entry.
_DETAIL_LIMIT = 500


class ContextSums:
    """Content checksums of context selections, computed once per selection and build (thread-safe)."""

    def __init__(self, ctx: BuildContext) -> None:
        self.ctx = ctx
        self._lock = threading.Lock()
        self._done: dict[tuple[str, ...], tuple[tuple[str, str], ...]] = {}
        self.warnings: list[str] = []

    def content(self, includes: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
        with self._lock:
            known = self._done.get(includes)
            if known is None:
                known = self._done[includes] = self._compute(includes)
            return known

    def _compute(self, includes: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
        from pybuild.context.checksum import hex_checksum
        from pybuild.context.context import checksum_context, checksum_selection, list_sources
        from pybuild.context.sources import include_patterns

        patterns = include_patterns(includes) if includes else ()
        if not patterns:
            sums = checksum_context(self.ctx, self.warnings)
        else:
            listing = list_sources(self.ctx, includes)
            self.warnings.extend(listing.warnings)
            sums = checksum_selection(self.ctx, listing)
        nodes = sorted(sums.nodes.items())
        dirs = {path.rpartition("/")[0] for path, _ in nodes}
        if len(nodes) > _DETAIL_LIMIT:
            # top-level entries only; a directory's Merkle checksum changes with anything below it
            detail = [(path + "/" if path in dirs else path, value) for path, value in nodes
                      if path and "/" not in path]
        else:
            detail = [(path, value) for path, value in nodes if path and path not in dirs]
        return (("", hex_checksum(sums.checksum)),) + tuple((p, hex_checksum(v)) for p, v in detail)


class ContextHandler(OpHandler[ContextSourceOp]):
    op_type = ContextSourceOp

    def key(self, env: KeyEnv, digest: str, op: ContextSourceOp, keys: tuple[str, ...]) -> CacheKeyInput:
        return self.key_input(op, keys, content=env.context_content(digest, op.includes))

    def source_result(self, env: KeyEnv, digest: str, op: ContextSourceOp,
                      keys: tuple[str, ...]) -> StepResult:
        return StepResult(diff_ids=(), context=True, key=cache_key(self.key(env, digest, op, keys)))

    def execute(self, worker: WorkerSide, op: ContextSourceOp, inputs: Mapping[str, StepResult],
                cancel: threading.Event | None) -> StepResult:
        return StepResult(diff_ids=(), context=True)

    def name(self, op: ContextSourceOp, naming: Naming) -> str:
        what = " ".join(op.includes) if op.includes else "."
        return f"[internal] load build context: {what if len(what) <= 40 else what[:37] + '...'}"
