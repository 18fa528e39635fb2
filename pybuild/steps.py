"""One build step with the cache around it: key the op, look the key up, run the op on a miss, record it.

Who uses it: `pybuild.api.build` hands `StepRunner.run` to the solver as its `run_op`; the solver calls it
on worker threads, inputs first. The worker (`worker.dispatch.Worker`) does the actual work.

Cache keys (`cache.keys.cache_key`) are made from the op's definition with every input *digest* replaced by
the input's *key*, so a key follows content, not plan digests:
- image source: the reference, the platform and the manifest digest found in the local store;
- context source: the content checksums of exactly the files the COPY/ADD selects (`_ContextSums`), never
  mtimes — so a `touch` keeps every key and a 1-byte edit changes only the keys of steps that read the file
  and of the steps after them;
- RUN / COPY / ADD / WORKDIR: the definition (command, env with the build args in scope, user, workdir,
  mounts, network, ...) plus SOURCE_DATE_EPOCH when set (it changes the layer's file times), and the keys
  of the inputs. Proxy args are not part of an ExecOp's definition (`ExecOp.proxy_env`).

A hit needs the layer blob still in the store (a cache entry's root keeps it, see `cache/index.py`); the
result is then the input's layer stack plus the cached diffID, and nothing is unpacked until a later
step that misses needs the files. When two processes run one step at once, the first to record wins and
both go on with its layer, so their images are identical.

`ADD <url>` without `--checksum` cannot be keyed before it runs (the remote file may change): it always
runs, and its key is then made from the layer it produced, so the steps after it still hit when the
download did not change (BuildKit keys such sources by the downloaded content, too).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from pybuild.cache.index import CacheIndex, CacheResult
from pybuild.cache.keys import CacheKeyInput, cache_key, describe, select_build_args
from pybuild.context.context import BuildContext
from pybuild.errors import StoreError, UserError
from pybuild.plan.ops import ContextSourceOp, ExecOp, FileOp, ImageSourceOp, Op, ScratchOp, op_inputs
from pybuild.progress import Event, StepDone, StepStarted
from pybuild.record import record, replace
from pybuild.solve.scheduler import Step, needed
from pybuild.store.images import StoredImage, resolve_image
from pybuild.store.layerread import layer_present
from pybuild.store.store import Store
from pybuild.worker.types import StepResult

if TYPE_CHECKING:
    from pybuild.worker.dispatch import Worker

__all__ = ["CacheSource", "Miss", "StepRunner", "key_input"]

# Context selections with more entries than this are described (for --explain-cache) by their top-level
# entries only, so a 20,000-file COPY does not store 20,000 checksums per cache entry.
_DETAIL_LIMIT = 500


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


def key_input(op: Op, input_keys: tuple[str, ...], *, epoch: int | None = None,
              content: tuple[tuple[str, str], ...] = (), extra: Mapping[str, Any] | None = None) -> CacheKeyInput:
    """The cache key input of `op` given its inputs' keys (in `op_inputs` order)."""
    definition = op.definition()
    definition.pop("input", None)
    source = definition.get("source")
    if isinstance(source, dict):
        definition["source"] = {k: v for k, v in source.items() if k != "input"}
    mounts = definition.get("mounts")
    if isinstance(mounts, list):
        definition["mounts"] = [{k: v for k, v in m.items() if k != "input"} for m in mounts]
    if isinstance(op, ExecOp):
        # the values of the build args the RUN sees (they are in its env too): for --explain-cache
        values = dict(entry.partition("=")[::2] for entry in op.env)
        definition["build_args"] = select_build_args(values, op.build_args)
    if epoch is not None and isinstance(op, ExecOp | FileOp):
        definition["source_date_epoch"] = epoch
    if extra:
        definition.update(extra)
    span = op.spans[0] if op.spans else None
    step_id = f"{op.kind}:{span.file}:{span.line}" if span is not None else f"{op.kind}:{op.digest}"
    return CacheKeyInput(op.kind, definition, input_keys, content, step_id)


def _resolve(store: Store, op: ImageSourceOp) -> StoredImage:
    """The base image of `op` from the local store (the default: a build passes a resolve-or-pull)."""
    try:
        return resolve_image(store, op.ref)
    except StoreError as exc:
        raise StoreError(exc.message, hint="pull it (pybuild pull), or import or load it (pybuild import / "
                                           "pybuild load)") from None


class _ContextSums:
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


class StepRunner:
    """The solver's `run_op` for one build: cache lookups and records around `Worker.run_op`.

    `no_cache` names op digests that must run whatever the cache holds (`--no-cache` is every op,
    `--no-cache-filter` a stage's ops); their results are still recorded. `explain` turns on
    `explain_miss` for steps that run; the misses collect in `misses`. `network` replaces a RUN's
    `default` network (docker build's `--network`). `resolve_image` finds the image of a `FROM` or
    `COPY --from=image` (default: the local store only; a build passes `registry.pull.ImageResolver`'s).
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
        self.sums = _ContextSums(ctx) if ctx is not None else None
        self.no_cache = frozenset(no_cache)
        self.epoch = epoch
        self.explain = explain
        self.network = network
        self.sources = list(sources)
        self.warn = warn
        self.layers: dict[str, str] = {}  # cache key → diffID of every layer step of this build (--cache-to)
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
        if isinstance(op, ImageSourceOp):
            image = self._image(op)
            key = cache_key(self.key_item(digest, op, keys, image))
            return StepResult(diff_ids=image.diff_ids, name=op.ref, key=key)
        if isinstance(op, ScratchOp | ContextSourceOp):
            key = cache_key(self.key_item(digest, op, keys))
            return StepResult(diff_ids=(), context=isinstance(op, ContextSourceOp), key=key)
        return self._layer_step(digest, self._networked(op), inputs, keys, step)

    def plan_keys(self, ops: Mapping[str, Op], target: str) -> dict[str, str]:
        """The cache key of every op `target` needs, made without running or looking up anything: base
        images are resolved (their manifest digest is in the key), context selections checksummed."""
        keys: dict[str, str] = {}
        for digest in needed(ops, target)[0]:
            op = ops[digest]
            keys[digest] = cache_key(self.key_item(digest, op, tuple(keys[d] for d in op_inputs(op))))
        return keys

    def key_item(self, digest: str, op: Op, keys: tuple[str, ...],
                 image: StoredImage | None = None) -> CacheKeyInput:
        """What the cache key of `op` is made of, given its inputs' keys (in `op_inputs` order); `image`
        is an image source's image when the caller has it."""
        if isinstance(op, ImageSourceOp):
            image = image or self._image(op)
            return key_input(op, keys, extra={"manifest": image.manifest_digest})
        if isinstance(op, ScratchOp):
            return key_input(op, keys)
        content: tuple[tuple[str, str], ...] = ()
        if isinstance(op, ContextSourceOp):
            content = self.sums.content(op.includes) if self.sums is not None else ()
            with self._lock:
                self._content[digest] = content
            return key_input(op, keys, content=content)
        op = self._networked(op)
        if isinstance(op, FileOp) and op.source is not None and op.source.input in self._content:
            # A COPY from the context keys the files it reads directly (not through the context op's
            # key), so --explain-cache can name the file that changed.
            content, keys = self._content[op.source.input], keys[:1]
        return key_input(op, keys, epoch=self.epoch, content=content)

    def _networked(self, op: ExecOp | FileOp) -> ExecOp | FileOp:
        """`op` with the build's `--network` in place of a RUN's `default`."""
        if isinstance(op, ExecOp) and op.network == "default" and self.network != "default":
            return replace(op, network=self.network)
        return op

    def _image(self, op: ImageSourceOp) -> StoredImage:
        """The image `op` names (local, or pulled by the build's resolver); errors point at its line."""
        try:
            return self._resolve_image(op)
        except UserError as exc:
            raise UserError(f"{op.ref}: {exc.message}", span=op.spans[0] if op.spans else None,
                            hint=exc.hint) from None

    def _layer_step(self, digest: str, op: ExecOp | FileOp, inputs: Mapping[str, StepResult],
                    keys: tuple[str, ...], step: Step) -> StepResult:
        base = inputs[op.input]
        unkeyable = isinstance(op, FileOp) and bool(op.urls) and not op.checksum
        item = self.key_item(digest, op, keys)
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
