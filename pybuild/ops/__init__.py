"""One module per op kind, registered in one table: its cache key, its execution and its display name.

    image.py    FROM ref / COPY --from=ref   ImageSourceOp    keyed by the manifest digest; no run
    scratch.py  FROM scratch                 ScratchOp        no layers
    context.py  the build context            ContextSourceOp  keyed by the checksums of what it selects
    exec.py     RUN                          ExecOp           a process in the runtime → a layer
    file.py     COPY / ADD / WORKDIR         FileOp           a file change → a layer

`base.OpHandler` is the interface; `HANDLERS` maps an op type to its handler. The build runner
(`solve.runner.StepRunner`: look up, run, record, fetch from an imported cache, explain) and the worker
(`worker.dispatch.Worker.run_op`) only call `handler_for(op)`; they know no op kind.

Adding an op kind: its record in `plan/ops.py` (and `plan/convert.py` to make it), one module here with a
subclass of `OpHandler` that overrides what differs from the defaults, one line in `HANDLERS` below, and
the module in `planmemo._CODE`. Nothing in the runner, the scheduler or the worker changes. The worked
example (a `MkdirOp`) is in docs/ARCHITECTURE.md, "A new op kind".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pybuild.errors import InternalError
from pybuild.ops.base import OpHandler
from pybuild.ops.context import ContextHandler
from pybuild.ops.exec import ExecHandler
from pybuild.ops.file import FileHandler
from pybuild.ops.image import ImageHandler
from pybuild.ops.scratch import ScratchHandler
from pybuild.plan.ops import Op, Plan

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pybuild.cache.keys import CacheKeyInput
    from pybuild.ops.naming import SourceLike, StagesLike

__all__ = ["HANDLERS", "OpHandler", "handler_for", "key_input", "step_names"]

HANDLERS: dict[type[Any], OpHandler[Any]] = {
    handler.op_type: handler
    for handler in (ImageHandler(), ScratchHandler(), ContextHandler(), ExecHandler(), FileHandler())
}
"""Op type → the handler of its kind."""


def handler_for(op: Op) -> OpHandler[Any]:
    """The handler of `op`'s kind."""
    try:
        return HANDLERS[type(op)]
    except KeyError:
        raise InternalError(f"no handler for op {type(op).__name__} (pybuild.ops.HANDLERS)") from None


def key_input(op: Op, input_keys: tuple[str, ...], *, epoch: int | None = None,
              content: tuple[tuple[str, str], ...] = (),
              extra: Mapping[str, Any] | None = None) -> CacheKeyInput:
    """The cache key input of `op` given its inputs' keys (in `op_inputs` order)."""
    return handler_for(op).key_input(op, input_keys, epoch=epoch, content=content, extra=extra)


def step_names(plan: Plan, stages: StagesLike, source: SourceLike) -> dict[str, str]:
    """Digest → progress name for every op of `plan` (each kind's `OpHandler.name`)."""
    from pybuild.ops.naming import Naming

    naming = Naming(stages, source)
    return {digest: handler_for(op).name(op, naming) for digest, op in plan.ops.items()}
