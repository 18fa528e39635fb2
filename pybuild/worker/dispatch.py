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
- `ExecOp`: a fresh overlay over the input layers, the process in the OCI runtime, then the upper becomes a
  layer (blob + snapshot) and the result is the input's layers + that one.
  The planner has already built argv (heredocs included); a shebang heredoc's body (`op.script`) is written
  to a 0755 file mounted read-only at `args[0]`. RUN `--mount`s go through `mounts.prepare_mounts`: `from=`
  sources are throwaway overlays of the other op's filesystem, context binds read `context.root` (through a
  hard-linked copy of what the ignore file lets through, when it excludes anything), secrets
  come from `self.secrets`, caches live in `<store>/cache-mounts`; all released before the layer is taken
  (so cache and secret mount points never reach it). The process runs under `self.sandbox` (the build's
  limits) with the op's security mode: `--security=insecure` only when `self.allow` holds the
  `security.insecure` entitlement, and `--network=host` only with `network.host` (the build checks both
  before any step runs: `entitlements.check_plan`; this is the worker's own guard). A RUN that fails under
  a memory or pids limit says so (`sandbox.explain_failure`).
- `FileOp`: COPY / ADD / WORKDIR's mkdir on a fresh overlay over the input chain, then commit. A source that
  is another op's filesystem (`COPY --from`) is mounted read-only-in-effect (a throwaway overlay released
  afterwards) and copied from its rootfs with owners preserved.

Every step snapshot is released on failure, so a failing step leaves no mount behind.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Collection, Iterator, Mapping
from contextlib import ExitStack, contextmanager

from pybuild.context.context import BuildContext, list_sources
from pybuild.context.sources import EntryView, TreeView
from pybuild.errors import InternalError, UserError, at
from pybuild.image.spec import layer_media_type
from pybuild.plan.ops import ContextSourceOp, ExecOp, FileOp, ImageSourceOp, MountSpec, Op, ScratchOp
from pybuild.store.images import resolve_image
from pybuild.record import replace
from pybuild.store.store import Store
from pybuild.worker.executor import ProcessFailed, run_process
from pybuild.worker.secrets import SecretStore
from pybuild.worker.snapshots import ActiveSnapshot, Snapshot, Snapshots
from pybuild.worker.spec import ETC_FILES
from pybuild.worker.types import HostMount, NetworkMode, OutputSink, ProcessSpec, Sandbox, StepResult

__all__ = ["RUNTIME_FILES", "StepResult", "Worker"]

_NETWORKS: tuple[NetworkMode, ...] = ("default", "none", "host")
RUNTIME_FILES = frozenset("/etc/" + name for name in ETC_FILES)
"""The files the runtime bind-mounts into every RUN container; never part of a RUN's layer."""


class Worker:
    """Runs ops on the snapshots of `store`, reading COPY sources from `context` (None: no context)."""

    def __init__(self, store: Store, context: BuildContext | None, runtime: str = "runc", *,
                 snapshots: Snapshots | None = None, output: OutputSink | None = None,
                 epoch: int | None = None, secrets: SecretStore | None = None, sandbox: Sandbox | None = None,
                 allow: Collection[str] = ("network.host",)) -> None:
        self.store = store
        self.context = context
        self.runtime = runtime
        self.snapshots = snapshots if snapshots is not None else Snapshots.open(store)
        self._output = output
        self._local = threading.local()  # the output sink of the op running on this thread
        self.epoch = epoch  # SOURCE_DATE_EPOCH: clamps file times in the layers steps make
        self.secrets = secrets if secrets is not None else SecretStore()  # what secret mounts read
        self.sandbox = sandbox if sandbox is not None else Sandbox()  # the build's limits for RUN steps
        self.allow = frozenset(allow)  # entitlements (--allow); by default a plain Worker may use `host`

    @property
    def output(self) -> OutputSink | None:
        """Where the running op's process output goes: the `run_op` caller's sink, else the worker's."""
        sink: OutputSink | None = getattr(self._local, "output", None)
        return sink if sink is not None else self._output

    def run_op(self, op: Op, inputs: Mapping[str, StepResult], cancel: threading.Event | None = None,
               *, output: OutputSink | None = None) -> StepResult:
        """Run `op` given the results of its inputs (by digest); StepFailed/UserError name its span.

        `output` receives this op's process output (threads running ops at once each pass their own)."""
        self._local.output = output
        span = op.spans[0] if op.spans else None
        try:
            if span is None:
                return self._dispatch(op, inputs, cancel)
            with at(span):
                return self._dispatch(op, inputs, cancel)
        finally:
            self._local.output = None

    def _dispatch(self, op: Op, inputs: Mapping[str, StepResult],
                  cancel: threading.Event | None) -> StepResult:
        if isinstance(op, ImageSourceOp):
            image = resolve_image(self.store, op.ref)
            return StepResult(diff_ids=image.diff_ids, name=op.ref)
        if isinstance(op, ScratchOp):
            return StepResult(diff_ids=())
        if isinstance(op, ContextSourceOp):
            return StepResult(diff_ids=(), context=True)
        if isinstance(op, ExecOp):
            return self._exec(op, inputs, cancel)
        if isinstance(op, FileOp):
            return self._file(op, inputs)
        raise InternalError(f"the worker has no implementation for op {type(op).__name__}")

    def chain(self, result: StepResult) -> tuple[str, ...]:
        """The snapshot chain of `result`'s filesystem, unpacking layers that are not there yet."""
        return self.snapshots.ensure_layers(self.store, result.diff_ids)

    @contextmanager
    def _step(self, base: StepResult, *, run: bool = False) -> Iterator[tuple[ActiveSnapshot, list[str]]]:
        """A fresh overlay over `base`; the caller's block fills it. When the block succeeds, its changes
        are stored as a layer and the upperdir becomes that layer's snapshot; the new diffID is appended to
        the yielded list. Released (nothing kept) when the block fails."""
        chain = self.chain(base)
        active = self.snapshots.prepare(chain)
        made: list[str] = []
        try:
            yield active, made
            step = self.snapshots.commit(active)
            if run:
                _drop_runtime_stubs(step.path)
            try:
                diff_id = self._store_layer(step, exclude=RUNTIME_FILES if run else ())
                self.snapshots.adopt(step.id, chain[-1] if chain else None, diff_id)
            except BaseException:
                self.snapshots.remove(step.id)
                raise
            made.append(diff_id)
        finally:
            self.snapshots.release(active)  # no-op after commit

    def _store_layer(self, step: Snapshot, exclude: Collection[str]) -> str:
        """Store the changes of committed `step` as an uncompressed layer blob; returns its diffID."""
        with self.store.blobs.writer() as writer:
            diff_id, size = self.snapshots.export_layer(step, writer, clamp_mtime=self.epoch, exclude=exclude)
            writer.commit(diff_id)
        self.store.index.record_blob(diff_id, size, layer_media_type("uncompressed"))
        self.store.index.record_layer(diff_id, size)
        return diff_id

    # --- RUN ------------------------------------------------------------------------------------------

    def _exec(self, op: ExecOp, inputs: Mapping[str, StepResult],
              cancel: threading.Event | None) -> StepResult:
        from pybuild.entitlements import require

        if op.security not in ("", "sandbox", "insecure"):
            raise UserError(f"RUN --security={op.security} is not supported (use sandbox or insecure)")
        if op.network not in _NETWORKS:
            raise UserError(f"RUN --network={op.network} is not supported (use default, none or host)")
        network: NetworkMode = op.network  # checked just above
        if network == "host":
            require("network.host", self.allow, "RUN --network=host")
        sandbox = self.sandbox
        if op.security == "insecure":
            require("security.insecure", self.allow, "RUN --security=insecure")
            sandbox = replace(sandbox, security="insecure")
        base = _input(inputs, op.input)
        # The mounts are released (and cache/secret mount points removed) before `_step` stores the layer.
        with self._step(base, run=True) as (active, made), ExitStack() as stack:
            mounts, env = self._run_mounts(op, inputs, active.rootfs, stack, cancel)
            if op.script:
                mounts = (_script_mount(op, stack), *mounts)
            process = ProcessSpec(args=op.args, env=_with_env(op.env + op.proxy_env, env), user=op.user,
                                  cwd=op.cwd or "/")
            try:
                run_process(active.rootfs, process, network=network, mounts=mounts, runtime=self.runtime,
                            output=self.output, cancel=cancel, store_root=self.store.root, sandbox=sandbox)
            except ProcessFailed as exc:
                from pybuild.worker.sandbox import explain_failure

                message = explain_failure(exc, sandbox, exc.exit_code, exc.tail)
                if message is None:
                    raise
                raise ProcessFailed(message, exit_code=exc.exit_code, tail=exc.tail) from None
        return StepResult(diff_ids=base.diff_ids + (made[0],))

    def _run_mounts(self, op: ExecOp, inputs: Mapping[str, StepResult], rootfs: str, stack: ExitStack,
                    cancel: threading.Event | None) -> tuple[tuple[HostMount, ...], tuple[str, ...]]:
        """RUN `--mount`s prepared on the host (held by `stack`): the HostMounts and the secret env."""
        if not op.mounts:
            return (), ()
        from pybuild.worker.mounts import prepare_mounts

        sources: dict[str, str] = {}  # a `from=` label (what errors show) -> the op digest it names
        mounts = tuple(self._run_mount(spec, inputs, sources) for spec in op.mounts)
        views: dict[str, str] = {}

        def stage_rootfs(label: str) -> str:
            # Another op's filesystem: a throwaway overlay, unmounted after the run (stack order).
            if label not in views:
                chain = self.chain(_input(inputs, sources[label]))
                views[label] = stack.enter_context(self.snapshots.mounted_rootfs(chain)).rootfs
            return views[label]

        context_dir = None
        if self.context is not None:
            context_dir = self.context.root
            binds = [m.source for m in op.mounts if m.input and _input(inputs, m.input).context]
            if binds and self.context.excludes:
                context_dir = self._filtered_context(binds, stack)
        prepared = stack.enter_context(prepare_mounts(
            mounts, rootfs=rootfs, context_dir=context_dir, stage_rootfs=stage_rootfs, secrets=self.secrets,
            cache_root=os.path.join(self.store.root, "cache-mounts"), workdir=op.cwd or "/", cancel=cancel))
        return prepared.host_mounts, prepared.env

    def _filtered_context(self, sources: list[str], stack: ExitStack) -> str:
        """The context as a bind mount sees it when an ignore file excludes paths (BuildKit binds a
        filtered view): the selected entries hard-linked (copied across filesystems) into a temp tree
        under the store, removed after the run."""
        import shutil
        import tempfile

        assert self.context is not None
        root = tempfile.mkdtemp(prefix="ctx-", dir=self.store.root)
        stack.callback(shutil.rmtree, root, True)
        listing = list_sources(self.context, [s or "." for s in sources])
        for entry in listing.entries:
            src, dst = os.path.join(self.context.root, entry.path), os.path.join(root, entry.path)
            if entry.kind == "dir":
                os.makedirs(dst, exist_ok=True)
                os.chmod(dst, stat.S_IMODE(entry.mode))
                continue
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if entry.kind == "symlink" and entry.link_target is not None:
                os.symlink(entry.link_target, dst)
                continue
            try:
                os.link(src, dst, follow_symlinks=False)
            except OSError:
                shutil.copy2(src, dst, follow_symlinks=False)
        return root

    def _run_mount(self, spec: MountSpec, inputs: Mapping[str, StepResult],
                   sources: dict[str, str]) -> MountSpec:
        """`spec` as `prepare_mounts` takes it: `from_ref` is the label `stage_rootfs` gets ('' = the
        context); notes `from=` sources."""
        label = ""
        if spec.input:
            source = _input(inputs, spec.input)
            if source.context:
                if self.context is None:
                    raise UserError(f"RUN --mount=type={spec.type} reads the build context, and this build "
                                    "has none")
            else:
                label = spec.from_ref or source.name or spec.input
                if sources.setdefault(label, spec.input) != spec.input:
                    label = spec.input  # two sources with one name: tell them apart by digest
                    sources[label] = spec.input
        return replace(spec, from_ref=label)

    # --- COPY / ADD / WORKDIR ---------------------------------------------------------------------------

    def _file(self, op: FileOp, inputs: Mapping[str, StepResult]) -> StepResult:
        base = _input(inputs, op.input)
        with self._step(base) as (active, made):
            if op.action == "mkdir-workdir":
                from pybuild.worker.fileops import make_workdir

                make_workdir(active.rootfs, op.dest, op.user)
            elif op.action in ("copy", "add"):
                self._copy(op, active.rootfs, inputs)
            else:
                raise InternalError(f"unknown file action {op.action!r}")
        return StepResult(diff_ids=base.diff_ids + (made[0],))

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
        with self.snapshots.mounted_rootfs(self.chain(source)) as other:
            from pybuild.worker.fileops import stage_view

            self._place(op, rootfs, stage_view(other.rootfs), other.rootfs,
                        op.source.from_ref or source.name or "from")

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


def _drop_runtime_stubs(upper: str) -> None:
    """Remove the empty files the runtime made in a RUN's upperdir to bind-mount /etc/hosts, resolv.conf
    and hostname over (they never belong to the step: BuildKit leaves them out of layers too)."""
    for path in RUNTIME_FILES:
        stub = upper + path
        try:
            if stat.S_ISREG(os.lstat(stub).st_mode):
                os.unlink(stub)
        except FileNotFoundError:
            pass


def _input(inputs: Mapping[str, StepResult], digest: str) -> StepResult:
    try:
        return inputs[digest]
    except KeyError:
        raise InternalError(f"input {digest} was not run before the op that needs it") from None


def _script_mount(op: ExecOp, stack: ExitStack) -> HostMount:
    """A shebang heredoc's body as a mode-0755 file in a temp dir (removed by `stack`), mounted read-only
    at `op.args[0]` (`/dev/pipes/<name>`: on the container's /dev, so never in the layer)."""
    scratch = tempfile.mkdtemp(prefix="pybuild-script-")
    stack.callback(shutil.rmtree, scratch, True)
    host = os.path.join(scratch, "script")
    fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o755)
    with os.fdopen(fd, "wb") as out:
        out.write(op.script.encode("utf-8", "surrogateescape"))
        os.fchmod(out.fileno(), 0o755)  # exact, whatever the umask (BuildKit's Mkfile mode)
    return HostMount(destination=op.args[0], source=host, options=("rbind", "ro"))


def _with_env(env: tuple[str, ...], extra: tuple[str, ...]) -> tuple[str, ...]:
    """`env` with `extra`'s `K=V` entries added, replacing entries of the same name (secret env mounts)."""
    names = {item.partition("=")[0] for item in extra}
    return tuple(item for item in env if item.partition("=")[0] not in names) + extra
