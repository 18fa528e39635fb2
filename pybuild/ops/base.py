"""What every op kind implements (`OpHandler`), what it may ask of the build (`KeyEnv`) and of the worker
(`WorkerSide`), and the cache-key input all kinds share (`OpHandler.key_input`).

An op kind's handler is BuildKit's op (`solver/llbsolver/ops/*.go`: `CacheMap` and `Exec` side by side):
- `key`: what the op's cache key is made of, given its inputs' keys (`cache.keys.cache_key` hashes it);
- `layer`: whether its result is a new layer the build runner looks up in the cache and records (RUN,
  COPY, ...), or a source whose result `source_result` gives without running anything (FROM, context);
- `execute`: the work on the worker (snapshots, the OCI runtime), for ops that miss the cache;
- `name`: what progress calls a step of this kind.
The runner (`solve.runner.StepRunner`) and the worker (`worker.dispatch.Worker`) know only this interface:
they find an op's handler by its type in `pybuild.ops.HANDLERS`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pybuild.cache.keys import CacheKeyInput
from pybuild.errors import InternalError
from pybuild.plan.ops import Op
from pybuild.worker.types import StepResult

if TYPE_CHECKING:
    from contextlib import AbstractContextManager
    from typing import Protocol

    from pybuild.context.context import BuildContext
    from pybuild.ops.naming import Naming
    from pybuild.store.images import StoredImage
    from pybuild.store.store import Store
    from pybuild.worker.secrets import SecretStore
    from pybuild.worker.snapshots import ActiveSnapshot, Snapshots
    from pybuild.worker.types import OutputSink, Sandbox

    # Protocols for the type checker only: nothing checks them at run time, so a cached rebuild does not
    # pay for making them.
    class KeyEnv(Protocol):
        """What a handler may ask of the build while keying or resolving an op (`solve.runner`)."""

        epoch: int | None  # SOURCE_DATE_EPOCH: it changes the file times of the layers steps make
        network: str  # the build's --network, in place of a RUN's `default`

        def image(self, op: Any) -> StoredImage:
            """The image an image source names (local, or pulled by the build's resolver)."""
            ...

        def context_content(self, digest: str, includes: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
            """The content checksums of the context files `includes` selects, noted for op `digest`."""
            ...

        def content_of(self, digest: str) -> tuple[tuple[str, str], ...] | None:
            """What `context_content` gave for the context op `digest` (None: not keyed as one so far)."""
            ...

    class WorkerSide(Protocol):
        """What a handler's `execute` uses of the worker (`worker.dispatch.Worker`)."""

        store: Store
        context: BuildContext | None
        runtime: str
        snapshots: Snapshots
        secrets: SecretStore
        sandbox: Sandbox
        allow: frozenset[str]

        @property
        def output(self) -> OutputSink | None: ...

        def chain(self, result: StepResult) -> tuple[str, ...]:
            """The snapshot chain of `result`'s filesystem, unpacking layers that are not there yet."""
            ...

        def layer_step(self, base: StepResult, *,
                       run: bool = False) -> AbstractContextManager[tuple[ActiveSnapshot, list[str]]]:
            """A fresh overlay over `base` whose changes become a layer when the block succeeds."""
            ...

__all__ = ["OpHandler", "input_result", "key_definition"]

O = TypeVar("O", bound=Op)


def key_definition(op: Op) -> dict[str, Any]:
    """`op.definition()` without the digests of its inputs (the cache key has their keys instead)."""
    definition = op.definition()
    definition.pop("input", None)
    source = definition.get("source")
    if isinstance(source, dict):
        definition["source"] = {k: v for k, v in source.items() if k != "input"}
    mounts = definition.get("mounts")
    if isinstance(mounts, list):
        definition["mounts"] = [{k: v for k, v in m.items() if k != "input"} for m in mounts]
    return definition


class OpHandler(Generic[O]):
    """One op kind: its cache key, its execution and its display name. Subclasses set `op_type`."""

    op_type: ClassVar[type[Any]]
    layer: ClassVar[bool] = False

    def key_definition(self, op: O, epoch: int | None) -> dict[str, Any]:
        """The definition part of the op's cache key (no input digests); kinds add what else it depends on."""
        return key_definition(op)

    def key_input(self, op: O, input_keys: tuple[str, ...], *, epoch: int | None = None,
                  content: tuple[tuple[str, str], ...] = (),
                  extra: Mapping[str, Any] | None = None) -> CacheKeyInput:
        """The cache key input of `op` given its inputs' keys (in `op_inputs` order), the files it reads
        (`content`) and what else the kind keys it by (`extra`)."""
        definition = self.key_definition(op, epoch)
        if extra:
            definition.update(extra)
        span = op.spans[0] if op.spans else None
        step_id = f"{op.kind}:{span.file}:{span.line}" if span is not None else f"{op.kind}:{op.digest}"
        return CacheKeyInput(op.kind, definition, input_keys, content, step_id)

    def key(self, env: KeyEnv, digest: str, op: O, keys: tuple[str, ...]) -> CacheKeyInput:
        """What the cache key of `op` is made of, given its inputs' keys (in `op_inputs` order)."""
        return self.key_input(op, keys, epoch=env.epoch)

    def configure(self, env: KeyEnv, op: O) -> O:
        """`op` with the build's options that change it applied (keyed and run as such)."""
        return op

    def unkeyable(self, op: O) -> bool:
        """True when the op's key cannot be known before it runs (it is then keyed by its result)."""
        return False

    def source_result(self, env: KeyEnv, digest: str, op: O, keys: tuple[str, ...]) -> StepResult:
        """A source op's result, key included (for kinds whose `layer` is False)."""
        raise InternalError(f"op kind {op.kind} makes a layer: it runs on the worker")

    def execute(self, worker: WorkerSide, op: O, inputs: Mapping[str, StepResult],
                cancel: threading.Event | None) -> StepResult:
        """Do the op's work on `worker`, given the results of its inputs (by digest)."""
        raise InternalError(f"the worker has no implementation for op {type(op).__name__}")

    def name(self, op: O, naming: Naming) -> str:
        """What progress calls the op: `[stage 2/5] RUN make` by default."""
        return naming.located(op)


def input_result(inputs: Mapping[str, StepResult], digest: str) -> StepResult:
    """The result of input `digest`; an InternalError when the scheduler did not run it first."""
    try:
        return inputs[digest]
    except KeyError:
        raise InternalError(f"input {digest} was not run before the op that needs it") from None

