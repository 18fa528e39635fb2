"""RUN (`ExecOp`): a process in the OCI runtime on a fresh overlay of its input; the changes become a layer.

Key: the definition (command, env with the build args in scope, user, workdir, mounts, network, ...) with
the build's `--network` in place of `default`, the values of the build args it sees (for --explain-cache),
SOURCE_DATE_EPOCH when set (it changes the layer's file times) and the keys of its inputs (its base and
its mounts' sources). Proxy args are not part of the definition (`ExecOp.proxy_env`).

Execution: the planner has already built argv (heredocs included); a shebang heredoc's body (`op.script`)
is written to a 0755 file mounted read-only at `args[0]`. RUN `--mount`s go through
`worker.mounts.prepare_mounts`: `from=` sources are throwaway overlays of the other op's filesystem,
context binds read `context.root` (through a hard-linked copy of what the ignore file lets through, when it
excludes anything), secrets come from the worker's secrets, caches live in `<store>/cache-mounts`; all
released before the layer is taken (so cache and secret mount points never reach it). The process runs
under the worker's sandbox (the build's limits) with the op's security mode: `--security=insecure` only
with the `security.insecure` entitlement, `--network=host` only with `network.host` (the build checks both
before any step runs: `entitlements.check_plan`; this is the worker's own guard). A RUN that fails under a
memory or pids limit says so (`sandbox.explain_failure`).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Mapping
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from pybuild.cache.keys import select_build_args
from pybuild.errors import UserError
from pybuild.ops.base import OpHandler, input_result
from pybuild.plan.ops import ExecOp, MountSpec
from pybuild.record import replace
from pybuild.worker.types import HostMount, NetworkMode, StepResult

if TYPE_CHECKING:
    from pybuild.ops.base import KeyEnv, WorkerSide

__all__ = ["ExecHandler"]

_NETWORKS: tuple[NetworkMode, ...] = ("default", "none", "host")


class ExecHandler(OpHandler[ExecOp]):
    op_type = ExecOp
    layer = True

    def key_definition(self, op: ExecOp, epoch: int | None) -> dict[str, Any]:
        definition = super().key_definition(op, epoch)
        # the values of the build args the RUN sees (they are in its env too): for --explain-cache
        values = dict(entry.partition("=")[::2] for entry in op.env)
        definition["build_args"] = select_build_args(values, op.build_args)
        if epoch is not None:
            definition["source_date_epoch"] = epoch
        return definition

    def configure(self, env: KeyEnv, op: ExecOp) -> ExecOp:
        """`op` with the build's `--network` in place of a RUN's `default`."""
        if op.network == "default" and env.network != "default":
            return replace(op, network=env.network)
        return op

    def execute(self, worker: WorkerSide, op: ExecOp, inputs: Mapping[str, StepResult],
                cancel: threading.Event | None) -> StepResult:
        from pybuild.entitlements import require
        from pybuild.worker.executor import ProcessFailed, run_process
        from pybuild.worker.types import ProcessSpec

        if op.security not in ("", "sandbox", "insecure"):
            raise UserError(f"RUN --security={op.security} is not supported (use sandbox or insecure)")
        if op.network not in _NETWORKS:
            raise UserError(f"RUN --network={op.network} is not supported (use default, none or host)")
        network: NetworkMode = op.network  # checked just above
        if network == "host":
            require("network.host", worker.allow, "RUN --network=host")
        sandbox = worker.sandbox
        if op.security == "insecure":
            require("security.insecure", worker.allow, "RUN --security=insecure")
            sandbox = replace(sandbox, security="insecure")
        base = input_result(inputs, op.input)
        # The mounts are released (and cache/secret mount points removed) before the step stores the layer.
        with worker.layer_step(base, run=True) as (active, made), ExitStack() as stack:
            mounts, env = _run_mounts(worker, op, inputs, active.rootfs, stack, cancel)
            if op.script:
                mounts = (_script_mount(op, stack), *mounts)
            process = ProcessSpec(args=op.args, env=_with_env(op.env + op.proxy_env, env), user=op.user,
                                  cwd=op.cwd or "/")
            try:
                run_process(active.rootfs, process, network=network, mounts=mounts, runtime=worker.runtime,
                            output=worker.output, cancel=cancel, store_root=worker.store.root,
                            sandbox=sandbox)
            except ProcessFailed as exc:
                from pybuild.worker.sandbox import explain_failure

                message = explain_failure(exc, sandbox, exc.exit_code, exc.tail)
                if message is None:
                    raise
                raise ProcessFailed(message, exit_code=exc.exit_code, tail=exc.tail) from None
        return StepResult(diff_ids=base.diff_ids + (made[0],))


def _run_mounts(worker: WorkerSide, op: ExecOp, inputs: Mapping[str, StepResult], rootfs: str,
                stack: ExitStack,
                cancel: threading.Event | None) -> tuple[tuple[HostMount, ...], tuple[str, ...]]:
    """RUN `--mount`s prepared on the host (held by `stack`): the HostMounts and the secret env."""
    if not op.mounts:
        return (), ()
    from pybuild.worker.mounts import prepare_mounts

    sources: dict[str, str] = {}  # a `from=` label (what errors show) -> the op digest it names
    mounts = tuple(_run_mount(worker, spec, inputs, sources) for spec in op.mounts)
    views: dict[str, str] = {}

    def stage_rootfs(label: str) -> str:
        # Another op's filesystem: a throwaway overlay, unmounted after the run (stack order).
        if label not in views:
            chain = worker.chain(input_result(inputs, sources[label]))
            views[label] = stack.enter_context(worker.snapshots.mounted_rootfs(chain)).rootfs
        return views[label]

    context_dir = None
    if worker.context is not None:
        context_dir = worker.context.root
        binds = [m.source for m in op.mounts if m.input and input_result(inputs, m.input).context]
        if binds and worker.context.excludes:
            context_dir = _filtered_context(worker, binds, stack)
    prepared = stack.enter_context(prepare_mounts(
        mounts, rootfs=rootfs, context_dir=context_dir, stage_rootfs=stage_rootfs, secrets=worker.secrets,
        cache_root=os.path.join(worker.store.root, "cache-mounts"), workdir=op.cwd or "/", cancel=cancel))
    return prepared.host_mounts, prepared.env


def _filtered_context(worker: WorkerSide, sources: list[str], stack: ExitStack) -> str:
    """The context as a bind mount sees it when an ignore file excludes paths (BuildKit binds a filtered
    view): the selected entries hard-linked (copied across filesystems) into a temp tree under the store,
    removed after the run."""
    from pybuild.context.context import list_sources

    context = worker.context
    assert context is not None
    root = tempfile.mkdtemp(prefix="ctx-", dir=worker.store.root)
    stack.callback(shutil.rmtree, root, True)
    listing = list_sources(context, [s or "." for s in sources])
    for entry in listing.entries:
        src, dst = os.path.join(context.root, entry.path), os.path.join(root, entry.path)
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


def _run_mount(worker: WorkerSide, spec: MountSpec, inputs: Mapping[str, StepResult],
               sources: dict[str, str]) -> MountSpec:
    """`spec` as `prepare_mounts` takes it: `from_ref` is the label `stage_rootfs` gets ('' = the context);
    notes `from=` sources."""
    label = ""
    if spec.input:
        source = input_result(inputs, spec.input)
        if source.context:
            if worker.context is None:
                raise UserError(f"RUN --mount=type={spec.type} reads the build context, and this build "
                                "has none")
        else:
            label = spec.from_ref or source.name or spec.input
            if sources.setdefault(label, spec.input) != spec.input:
                label = spec.input  # two sources with one name: tell them apart by digest
                sources[label] = spec.input
    return replace(spec, from_ref=label)


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
