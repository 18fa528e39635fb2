"""`build(BuildRequest(...), sink) -> BuildResult`: what `pybuild build` calls (re-exported by `pybuild.api`).

CI systems and build farms call it without a subprocess; the CLI maps docker-build flags onto a
`BuildRequest` and renders the `sink`'s events. The pipeline, one call per stage (docs/ARCHITECTURE.md):

    Dockerfile ─parse─▶ AST ─to_stages─▶ stages ─convert─▶ Plan ─solve (StepRunner: cache + Worker)─▶ results
               ─commit_image─▶ image in the store ─export_image─▶ each --output

Base images (`FROM`, `COPY --from=image`) come from the store, or are pulled when missing or with `--pull`
(`registry.pull.ImageResolver`, once per reference and build); `--push` pushes every tag at the end.

The whole build holds the store's shared lock, so a concurrent `pybuild prune` waits instead of freeing a
layer that is not recorded yet. The final image is keyed too (`_image_key`: its config and the keys of its
layer steps): a rebuild that hits every step gets the very image of the last build (same `created`, same
digest), as with BuildKit, instead of a new timestamp.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pybuild.errors import ConfigError, PybuildError, StoreError
from pybuild.progress import BuildFinished, BuildNote, Sink
from pybuild.record import field, record, replace

if TYPE_CHECKING:
    from pybuild.cache.index import CacheIndex
    from pybuild.cache.transfer import CacheSpec, ImportedCache
    from pybuild.context.context import BuildContext
    from pybuild.image.spec import Platform
    from pybuild.plan.ops import Op, Plan
    from pybuild.planmemo import PlanMemo
    from pybuild.registry.pull import ImageResolver
    from pybuild.solve.runner import StepRunner
    from pybuild.store.images import StoredImage
    from pybuild.store.store import Store
    from pybuild.worker.dispatch import Worker
    from pybuild.worker.types import Sandbox, StepResult

__all__ = ["BuildRequest", "BuildResult", "build"]


@record(kw_only=True)
class BuildRequest:
    """What to build, spelled like `docker build`'s flags (see `pybuild build --help`).

    `dockerfile` is a path (None: `CONTEXT/Dockerfile`); `dockerfile_data` the Dockerfile's bytes when it
    does not come from a file (`-f -`). `outputs` are `--output` specs; `secrets` are `--secret` specs.
    `pull` pulls every base image by tag again (`--pull`); `push` pushes every tag after the build.
    `epoch` is SOURCE_DATE_EPOCH (None: taken from the environment). `store_root` None: the default store.
    `allow` grants entitlements (`--allow network.host,security.insecure`, see `pybuild.entitlements`);
    `ulimits` (`TYPE=SOFT[:HARD]`), `shm_size` (`64m`), `memory` (`1g`) and `pids_limit` bound every RUN
    step, spelled as docker's flags (`pybuild.worker.sandbox`; None: docker's defaults).
    """

    context: str
    dockerfile: str | None = None
    dockerfile_data: bytes | None = None
    tags: tuple[str, ...] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    no_cache_filter: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    platform: str | None = None
    network: str = "default"
    secrets: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    jobs: int | None = None
    explain_cache: bool = False
    cache_from: tuple[str, ...] = ()
    cache_to: tuple[str, ...] = ()
    runtime: str = "runc"
    store_root: str | None = None
    epoch: int | None = None
    pull: bool = False
    push: bool = False
    allow: tuple[str, ...] = ()
    ulimits: tuple[str, ...] = ()
    shm_size: str | None = None
    memory: str | None = None
    pids_limit: int | None = None


@record(kw_only=True)
class BuildResult:
    """What a build made: the image (by manifest digest and ID), its tags, and how the steps went.

    `misses` (with `--explain-cache`) pairs each step that ran with why it missed the cache.
    """

    manifest_digest: str
    image_id: str
    config: Mapping[str, Any]
    tags: tuple[str, ...]
    warnings: tuple[str, ...]
    misses: tuple[tuple[str, tuple[str, ...]], ...]
    steps_run: int
    steps_cached: int
    duration: float


def build(request: BuildRequest, sink: Sink | None = None, cancel: threading.Event | None = None) -> BuildResult:
    """Build `request`; progress events go to `sink`. UserError subclasses for anything the user can fix."""
    start = time.monotonic()
    ok = False
    try:
        result = _Build(request, sink, cancel).run(start)
        ok = True
        return result
    finally:
        if sink is not None:
            sink.emit(BuildFinished(time.monotonic() - start, ok))


class _Build:
    def __init__(self, request: BuildRequest, sink: Sink | None, cancel: threading.Event | None) -> None:
        self.request = request
        self.sink = sink
        self.cancel = cancel
        self.warnings: list[str] = []
        self.names: dict[str, str] = {}
        self.cache_from: list[CacheSpec] = []  # parsed --cache-from / --cache-to, by `run`
        self.cache_to: list[CacheSpec] = []

    def note(self, text: str) -> None:
        if self.sink is not None:
            self.sink.emit(BuildNote(text))

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self.note(text)

    def run(self, start: float) -> BuildResult:
        from pybuild.export.outputs import parse_output

        request = self.request
        outputs = [parse_output(spec) for spec in request.outputs]
        self.cache_from, self.cache_to = _cache_specs(request)
        _check_push(request)
        allow, sandbox = _sandbox(request)
        platform = _platform(request.platform)
        epoch = _epoch(request)
        ctx, data, name = _open_context(request)
        from pybuild.registry.blobsource import FETCHERS
        from pybuild.registry.pull import ImageResolver
        from pybuild.store.store import Store

        with Store.open(request.store_root, FETCHERS) as store, store.shared_lock():
            for warning in store.warnings:  # what opening it repaired (directories open to other users)
                self.warn(f"WARNING: {warning}")
            resolver = ImageResolver(store, pull=request.pull, report=self.note)
            memo = _planned(data, name, request, store, platform, epoch, resolver)
            plan = memo.plan
            for warning in plan.warnings:
                self.warn(warning)
            _check_entitlements(plan, allow, request.network, name, data)
            runner, results = self._solve(store, resolver, ctx, memo, data, name, epoch, allow, sandbox)
            image = self._commit(store, runner.cache, plan, results, epoch)
            for spec in outputs:
                self.note(f"exporting to {spec.type}" + (f" {spec.dest}" if spec.dest else "")
                          + (" and pushing " + ", ".join(spec.names) if spec.push else ""))
                from pybuild.export.exporters import export_image

                export_image(store, image, spec)
            self._push(store, image)
            self._export_cache(store, runner, image)
            for warning in runner.sums.warnings if runner.sums is not None else ():
                self.warn(f"WARNING: context: {warning}")
        return BuildResult(
            manifest_digest=image.manifest_digest, image_id=image.config_digest, config=image.config,
            tags=tuple(request.tags), warnings=tuple(self.warnings),
            misses=tuple((self.names.get(m.digest, m.digest), m.reasons) for m in runner.misses),
            steps_run=runner.ran, steps_cached=runner.cached, duration=time.monotonic() - start)

    def _solve(self, store: Store, resolver: ImageResolver, ctx: BuildContext, memo: PlanMemo, data: bytes,
               name: str, epoch: int | None, allow: frozenset[str],
               sandbox: Sandbox | None) -> tuple[StepRunner, Mapping[str, StepResult]]:
        from pybuild.cache.index import CacheIndex
        from pybuild.ops.naming import stage_ops
        from pybuild.solve.scheduler import solve
        from pybuild.solve.runner import StepRunner

        request = self.request
        plan = memo.plan
        self.names = dict(memo.names)
        no_cache = set(plan.ops) if request.no_cache else stage_ops(memo.stages_of, request.no_cache_filter)
        from pybuild.worker.secrets import SecretStore

        secrets = SecretStore.from_flags(request.secrets)  # read now: a bad --secret fails before any step

        def make_worker() -> Worker:
            from pybuild.worker.dispatch import Worker
            from pybuild.worker.executor import reap_stale_runs
            from pybuild.worker.snapshots import Snapshots

            reap_stale_runs(store.root)  # a killed build's container first, then (Snapshots.open) its mounts

            return Worker(store, ctx, request.runtime, snapshots=Snapshots.open(store), epoch=epoch,
                          secrets=secrets, sandbox=sandbox, allow=allow)

        sources: list[ImportedCache] = []
        if self.cache_from:
            from pybuild.cache.backends import open_cache_source

            for spec in self.cache_from:
                try:
                    sources.append(open_cache_source(spec))
                except ConfigError as exc:  # BuildKit: a cache that is not there yet is a warning
                    self.warn(f"WARNING: {exc.message}; building without it")
        runner = StepRunner(store, make_worker, CacheIndex(store), ctx, no_cache=no_cache, epoch=epoch,
                            explain=request.explain_cache, network=request.network, sources=sources,
                            warn=self.warn,
                            resolve_image=lambda op: resolver.resolve(op.ref, op.platform))

        def name_of(op: Op) -> str:
            return self.names.get(op.digest, str(op.kind))

        try:
            cached = runner.run_cached(plan.ops, plan.target, name_of)
            if cached is not None:
                results, events = cached
                for event in events:
                    if self.sink is not None:
                        self.sink.emit(event)
            else:
                results = solve(plan, runner.run, jobs=request.jobs, sink=self.sink, cancel=self.cancel,
                                name_of=name_of)
        except PybuildError as exc:
            if exc.source is None and exc.span is not None and exc.span.file == name:
                from pybuild.dockerfile.parser import decode
                from pybuild.source import SourceFile

                exc.source = SourceFile(name, decode(data))  # the CLI shows the lines around the step
            raise
        return runner, results

    def _push(self, store: Store, image: StoredImage) -> None:
        """`--push`: every `-t` name to its registry, once the image is committed and tagged."""
        if not self.request.push:
            return
        from pybuild.registry.push import push_image

        for tag in self.request.tags:
            self.note(f"pushing {tag}")
            push_image(store, image, tag, report=self.note)

    def _export_cache(self, store: Store, runner: StepRunner, image: StoredImage) -> None:
        """`--cache-to`: mode=max exports every layer step of this build, mode=min only the image's."""
        if not self.cache_to:
            return
        from pybuild.cache.backends import export_cache

        final = set(image.diff_ids)
        for spec in self.cache_to:
            entries = sorted((key, diff_id) for key, diff_id in runner.layers.items()
                             if spec.mode == "max" or diff_id in final)
            self.note(f"exporting cache to {spec.path} ({len(entries)} steps, mode={spec.mode})")
            export_cache(store, spec, entries)

    def _commit(self, store: Store, cache: CacheIndex, plan: Plan, results: Mapping[str, StepResult],
                epoch: int | None) -> StoredImage:
        from pybuild.cache.index import CacheResult
        from pybuild.cache.keys import CacheKeyInput, cache_key
        from pybuild.store.images import read_image, tag_image

        self.note("exporting to image")
        item = CacheKeyInput("image", {"image": plan.image.to_dict()},
                             tuple(results[d].key for d in (*plan.layers, plan.target)))
        key = cache_key(item)
        image = None
        if not self.request.no_cache:
            hit = cache.lookup(key)
            digest = hit.config_delta().get("manifest") if hit is not None else None
            if isinstance(digest, str):
                try:
                    image = read_image(store, digest)
                except StoreError:
                    cache.remove(key)
        if image is None:
            from pybuild.worker.commit_image import commit_image

            image = commit_image(store, plan, results, epoch=epoch)
            stored = cache.record(key, CacheResult.make(config={"manifest": image.manifest_digest}),
                                  {"step_id": "image", "kind": "image", "key": key},
                                  replace=bool(self.request.no_cache))
            first = stored.config_delta().get("manifest")
            if isinstance(first, str) and first != image.manifest_digest:
                try:  # another process built the same image first: every builder names that one
                    image = read_image(store, first)
                except StoreError:
                    pass
        from pybuild.store.images import normalize_name

        for tag in self.request.tags:
            self.note(f"naming to {normalize_name(tag)}")
            tag_image(store, image.manifest_digest, tag)
        return image


def _cache_specs(request: BuildRequest) -> tuple[list[CacheSpec], list[CacheSpec]]:
    """The parsed `--cache-from` and `--cache-to` values (`transfer.CacheSpec`), parsed once, before
    anything is built: a bad one is a one-line ConfigError."""
    if not (request.cache_from or request.cache_to):
        return [], []
    from pybuild.cache.transfer import parse_cache_from, parse_cache_to

    cache_from = [parse_cache_from(text) for text in request.cache_from]
    return cache_from, [parse_cache_to(text) for text in request.cache_to]


def _sandbox(request: BuildRequest) -> tuple[frozenset[str], Sandbox | None]:
    """The granted entitlements and the RUN steps' `Sandbox` (None: docker's defaults), parsed and checked
    against what the host can enforce before anything runs: a bad flag is a one-line ConfigError."""
    from pybuild.entitlements import parse_allow

    allow = parse_allow(request.allow)
    if not (request.ulimits or request.shm_size is not None or request.memory is not None
            or request.pids_limit is not None):
        return allow, None
    from pybuild.worker.sandbox import check_host, make_sandbox

    sandbox = make_sandbox(ulimits=request.ulimits, shm_size=request.shm_size, memory=request.memory,
                           pids_limit=request.pids_limit)
    check_host(sandbox)
    return allow, sandbox


def _check_entitlements(plan: Plan, allow: frozenset[str], network: str, name: str, data: bytes) -> None:
    """Every entitlement the target's steps need is granted (before any step runs); the error shows the
    Dockerfile line that asked for it."""
    from pybuild.entitlements import check_plan
    from pybuild.solve.scheduler import needed

    try:
        check_plan(plan.ops, needed(plan.ops, plan.target)[0], allow, network)
    except PybuildError as exc:
        if exc.source is None and exc.span is not None and exc.span.file == name:
            from pybuild.dockerfile.parser import decode
            from pybuild.source import SourceFile

            exc.source = SourceFile(name, decode(data))
        raise


def _check_push(request: BuildRequest) -> None:
    """`--push` needs names to push to, each a reference with no digest (checked before building)."""
    if not request.push:
        return
    if not request.tags:
        raise ConfigError("--push needs a name to push to", hint="add -t REGISTRY/NAME:TAG")
    from pybuild.registry.push import check_push_name

    for tag in request.tags:
        check_push_name(tag)


def _platform(text: str | None) -> Platform:
    from pybuild.image.spec import host_platform, parse_platform

    host = host_platform()
    if not text:
        return host
    wanted = parse_platform(text)
    if wanted != host:
        raise ConfigError(f"--platform {text}: this version builds for the host's platform ({host}) only",
                          hint="cross-platform builds (emulation) are not available")
    return wanted


def _epoch(request: BuildRequest) -> int | None:
    if request.epoch is not None:
        return request.epoch
    from pybuild.image.spec import source_date_epoch

    epoch: int | None = source_date_epoch(os.environ)
    if "SOURCE_DATE_EPOCH" in request.build_args:
        epoch = source_date_epoch({"SOURCE_DATE_EPOCH": request.build_args["SOURCE_DATE_EPOCH"]})
    return epoch


def _open_context(request: BuildRequest) -> tuple[BuildContext, bytes, str]:
    """The build context, the Dockerfile's bytes, and the name errors show for it."""
    from pybuild.context.context import open_context

    stdin = request.dockerfile_data is not None
    path = request.dockerfile if request.dockerfile not in (None, "-") else None
    ctx = open_context(request.context, path, require_dockerfile=not stdin)
    data = request.dockerfile_data if stdin else ctx.dockerfile
    if data is None:
        raise ConfigError(f"no Dockerfile: {ctx.dockerfile_path}")
    return ctx, data, "Dockerfile" if stdin else (request.dockerfile or "Dockerfile")


def _planned(data: bytes, name: str, request: BuildRequest, store: Store, platform: Platform, epoch: int | None,
             resolver: ImageResolver) -> PlanMemo:
    """The plan (a `PlanMemo`): from the memo when nothing it depends on changed, else planned now.

    Base images come from `resolver` (a `registry.pull.ImageResolver`: local, else pulled). With `--pull`
    the memo is not used (the bases are resolved again), nor is a memo made while a base was missing."""
    from pybuild.planmemo import PlanMemo, load_memo, memo_key, save_memo

    key = memo_key(data, name, request.build_args, request.target, str(platform), request.labels, epoch)
    memo = None if request.pull else load_memo(store.root, key)
    if memo is not None and all(digest is not None and _manifest(store, ref) == digest
                                for ref, digest in memo.bases):
        return memo
    from pybuild.dockerfile.instructions import to_stages
    from pybuild.dockerfile.parser import parse
    from pybuild.errors import UserError
    from pybuild.image.config import ImageConfig
    from pybuild.ops import step_names
    from pybuild.ops.naming import stage_labels
    from pybuild.plan.convert import convert
    from pybuild.plan.ops import ImageSourceOp

    failed: list[str] = []

    def base_config(ref: str) -> ImageConfig | None:
        try:
            return ImageConfig.from_dict(resolver.resolve(ref, str(platform)).config)
        except UserError:
            failed.append(ref)  # the resolver keeps the error: the step of this FROM reports it at its line
            return None

    source = parse(data, name)
    stages = to_stages(source)
    plan = convert(stages, build_args=dict(request.build_args), target=request.target, platform=platform,
                   base_configs=base_config, escape=source.directives.escape, epoch=epoch)
    if request.labels:
        labels = {**plan.image.config.labels_dict, **request.labels}
        plan = replace(plan, image=replace(plan.image, config=replace(plan.image.config,
                                                                      labels=tuple(sorted(labels.items())))))
    refs = sorted({op.ref for op in plan.ops.values() if isinstance(op, ImageSourceOp)})
    memo = PlanMemo(plan, step_names(plan, stages, source), stage_labels(plan, stages),
                    tuple((ref, _manifest(store, ref)) for ref in refs))
    if not failed:  # a plan made without a base's config must never be reused
        save_memo(store.root, key, memo)
    return memo


def _manifest(store: Store, ref: str) -> str | None:
    from pybuild.store.images import resolve_image

    try:
        digest: str = resolve_image(store, ref).manifest_digest
        return digest
    except StoreError:
        return None
