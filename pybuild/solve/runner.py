"""One build step with the cache around it: key the op, look the key up, run the op on a miss, record it.

Who uses it: `pybuild.api.build` hands `StepRunner.run` to the solver (`solve.scheduler`) as its `run_op`;
the solver calls it on worker threads, inputs first. The runner knows no op kind: each kind's handler
(`pybuild.ops`) says what its cache key is made of, whether it makes a layer, and how it runs on the worker
(`worker.dispatch.Worker`).

Cache keys (`cache.keys.cache_key`) are made from the op's definition with every input *digest* replaced by
the input's *key*, so a key follows content, not plan digests (the kinds' modules say what else each key
holds). A source op (image, scratch, context) is keyed and resolved without running anything. A layer op
(RUN, COPY, ...) hits when its key is in the local cache with the layer blob still in the store (a cache
entry's root keeps it, see `cache/index.py`), or in an imported cache (`--cache-from`); the result is then
the input's layer stack plus the cached diffID, and nothing is unpacked until a later step that misses
needs the files. When two processes run one step at once, the first to record wins and both go on with its
layer, so their images are identical. An op its kind calls unkeyable (`ADD <url>` without `--checksum`)
always runs and is then keyed by the layer it produced.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from pybuild.cache.index import CacheIndex, CacheResult
from pybuild.cache.keys import CacheKeyInput, cache_key, describe
from pybuild.context.context import BuildContext
from pybuild.errors import StoreError, UserError
from pybuild.ops import handler_for
from pybuild.ops.base import OpHandler
from pybuild.ops.context import ContextSums
from pybuild.plan.ops import ImageSourceOp, Op, op_inputs
from pybuild.progress import Event, StepDone, StepStarted
from pybuild.record import record, replace
from pybuild.solve.scheduler import Step, needed
from pybuild.store.images import StoredImage, resolve_image
from pybuild.store.layerread import layer_present
from pybuild.store.store import Store
from pybuild.worker.types import StepResult

if TYPE_CHECKING:
    from pybuild.worker.dispatch import Worker

__all__ = ["CacheSource", "Miss", "StepRunner"]


class _WouldRun(Exception):
    """Raised by a probing `StepRunner` when a step is not in the cache (see `run_cached`)."""


class CacheSource(Protocol):
    """An imported build cache (`--cache-from`; `cache.transfer.LocalCacheSource` is one)."""

    def fetch(self, key: str, store: Store) -> str | None:
        """Make the layer cached under `key` available in `store` and return its diffID, or None."""
        ...


@record
class Miss:
    """A step that missed the cache, with the reasons `explain_miss` found (empty when not asked)."""

    digest: str
    reasons: tuple[str, ...]


def _resolve(store: Store, op: ImageSourceOp) -> StoredImage:
    """The base image of `op` from the local store (the default: a build passes a resolve-or-pull)."""
    try:
        return resolve_image(store, op.ref)
    except StoreError as exc:
        raise StoreError(exc.message, hint="pull it (pybuild pull), or import or load it (pybuild import / "
                                           "pybuild load)") from None


class StepRunner:
    """The solver's `run_op` for one build: cache lookups and records around `Worker.run_op`.

    `no_cache` names op digests that must run whatever the cache holds (`--no-cache` is every op,
    `--no-cache-filter` a stage's ops); their results are still recorded. `explain` turns on
    `explain_miss` for steps that run; the misses collect in `misses`. `network` replaces a RUN's
    `default` network (docker build's `--network`). `resolve_image` finds the image of a `FROM` or
    `COPY --from=image` (default: the local store only; a build passes `registry.pull.ImageResolver`'s).
    The runner is the op handlers' `ops.base.KeyEnv`.
    """

    def __init__(self, store: Store, make_worker: Callable[[], Worker], cache: CacheIndex,
                 ctx: BuildContext | None, *,
                 no_cache: Collection[str] = (), epoch: int | None = None, explain: bool = False,
                 network: str = "default", sources: Sequence[CacheSource] = (),
                 warn: Callable[[str], None] | None = None,
                 resolve_image: Callable[[ImageSourceOp], StoredImage] | None = None) -> None:
        self.store = store
        self._resolve_image = resolve_image or (lambda op: _resolve(store, op))
        self._make_worker = make_worker  # the worker (runc, snapshots) is only loaded when a step runs
        self._worker: Worker | None = None
        self.cache = cache
        self.sums = ContextSums(ctx) if ctx is not None else None
        self.no_cache = frozenset(no_cache)
        self.epoch = epoch
        self.explain = explain
        self.network = network
        self.sources = list(sources)
        self.warn = warn
        self.layers: dict[str, str] = {}  # cache key → diffID of every layer step of the build (--cache-to)
        self.misses: list[Miss] = []
        self._content: dict[str, tuple[tuple[str, str], ...]] = {}  # context op digest → its content
        self._probing = False
        self.ran = 0
        self.cached = 0
        self._lock = threading.Lock()

    def run_cached(self, ops: Mapping[str, Op], target: str,
                   name_of: Callable[[Op], str]) -> tuple[dict[str, StepResult], list[Event]] | None:
        """Every op `target` needs, from the cache, on this thread, with the progress events that tell it;
        None (and nothing counted) as soon as one step would have to run.

        The fully cached rebuild is the common case on a developer's machine and a CI re-run; doing it
        here costs no thread pool (nor its imports) and no hand-offs between threads."""
        events: list[Event] = []
        results: dict[str, StepResult] = {}
        cancel = threading.Event()
        self._probing = True
        try:
            for digest in needed(ops, target)[0]:
                op = ops[digest]
                span = op.spans[0] if op.spans else None
                start = time.monotonic()
                events.append(StepStarted(digest, name_of(op), span))
                step = Step(digest, cancel, events.append, name_of(op), span)
                results[digest] = self.run(digest, op, {d: results[d] for d in op_inputs(op)}, step)
                events.append(StepDone(digest, time.monotonic() - start))
        except _WouldRun:
            self.cached = 0
            self.layers.clear()
            return None
        finally:
            self._probing = False
        self.cache.touch(self.layers)  # one write for every hit (the lookups did not touch)
        return results, events

    def worker(self) -> Worker:
        with self._lock:
            if self._worker is None:
                self._worker = self._make_worker()
            return self._worker

    def run(self, digest: str, op: Op, inputs: Mapping[str, StepResult], step: Step) -> StepResult:
        """Build `op` (a solver `run_op`): the result carries the op's cache key."""
        keys = tuple(inputs[source].key for source in op_inputs(op))
        handler = handler_for(op)
        op = handler.configure(self, op)
        if not handler.layer:
            return handler.source_result(self, digest, op, keys)
        return self._layer_step(digest, handler, op, inputs, keys, step)

    def plan_keys(self, ops: Mapping[str, Op], target: str) -> dict[str, str]:
        """The cache key of every op `target` needs, made without running or looking up anything: base
        images are resolved (their manifest digest is in the key), context selections checksummed."""
        keys: dict[str, str] = {}
        for digest in needed(ops, target)[0]:
            op = ops[digest]
            keys[digest] = cache_key(self.key_item(digest, op, tuple(keys[d] for d in op_inputs(op))))
        return keys

    def key_item(self, digest: str, op: Op, keys: tuple[str, ...]) -> CacheKeyInput:
        """What the cache key of `op` is made of, given its inputs' keys (in `op_inputs` order)."""
        handler = handler_for(op)
        return handler.key(self, digest, handler.configure(self, op), keys)

    # --- ops.base.KeyEnv ---------------------------------------------------------------------------------

    def image(self, op: ImageSourceOp) -> StoredImage:
        """The image `op` names (local, or pulled by the build's resolver); errors point at its line."""
        try:
            return self._resolve_image(op)
        except UserError as exc:
            raise UserError(f"{op.ref}: {exc.message}", span=op.spans[0] if op.spans else None,
                            hint=exc.hint) from None

    def context_content(self, digest: str, includes: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
        content = self.sums.content(includes) if self.sums is not None else ()
        with self._lock:
            self._content[digest] = content
        return content

    def content_of(self, digest: str) -> tuple[tuple[str, str], ...] | None:
        return self._content.get(digest)

    # --- layer steps ---------------------------------------------------------------------------------------

    def _layer_step(self, digest: str, handler: OpHandler[Any], op: Op, inputs: Mapping[str, StepResult],
                    keys: tuple[str, ...], step: Step) -> StepResult:
        base = inputs[op_inputs(op)[0]]
        unkeyable = handler.unkeyable(op)
        item = handler.key(self, digest, op, keys)
        key = cache_key(item)
        if self._probing and (unkeyable or digest in self.no_cache):
            raise _WouldRun
        if not unkeyable and digest not in self.no_cache:
            hit = self._lookup(key, item)
            if hit is not None:
                step.cached()
                with self._lock:
                    self.cached += 1
                    self.layers[key] = hit
                return StepResult(diff_ids=base.diff_ids + (hit,), key=key)
        if self._probing:
            raise _WouldRun
        if self.explain:
            self._explain(digest, item)
        result = self.worker().run_op(op, inputs, step.cancel, output=step.output)
        diff_id = result.diff_ids[-1]
        if unkeyable:
            item = replace(item, definition={**item.definition, "result": diff_id})
            key = cache_key(item)
        stored = self.cache.record(key, CacheResult(diff_id=diff_id), describe(item),
                                   replace=digest in self.no_cache)
        if stored.diff_id is not None and stored.diff_id != diff_id:
            diff_id = stored.diff_id  # another process recorded this step first: share its layer
        with self._lock:
            self.ran += 1
            self.layers[key] = diff_id
        return StepResult(diff_ids=base.diff_ids + (diff_id,), key=key)

    def _lookup(self, key: str, item: CacheKeyInput) -> str | None:
        hit = self.cache.lookup(key, touch=not self._probing)
        if hit is None or hit.diff_id is None:
            return self._fetch(key, item)
        if not layer_present(self.store, hit.diff_id):
            self.cache.remove(key)  # its layer is gone (the store was damaged): run the step again
            return None
        return hit.diff_id

    def _fetch(self, key: str, item: CacheKeyInput) -> str | None:
        """A key the local cache lacks, from the imported caches (`--cache-from`), recorded locally."""
        for source in list(self.sources):
            try:
                diff_id = source.fetch(key, self.store)
            except UserError as exc:
                # BuildKit warns about a cache it cannot import and builds without it
                with self._lock:
                    if source in self.sources:
                        self.sources.remove(source)
                        if self.warn is not None:
                            self.warn(f"WARNING: ignoring the imported cache: {exc.message}")
                continue
            if diff_id is not None:
                stored = self.cache.record(key, CacheResult(diff_id=diff_id), describe(item))
                return stored.diff_id or diff_id
        return None

    def _explain(self, digest: str, item: CacheKeyInput) -> None:
        from pybuild.cache.explain import explain_miss

        reasons = tuple(explain_miss(describe(item), self.cache))
        if digest in self.no_cache:
            reasons = ("the cache was turned off for this step (--no-cache / --no-cache-filter)",)
        with self._lock:
            self.misses.append(Miss(digest, reasons))
