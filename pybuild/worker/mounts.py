"""RUN `--mount` on the host: turn the plan's `MountSpec`s into the `HostMount`s the executor adds to the
spec.

    with prepare_mounts(run.mounts, rootfs=merged, context_dir=ctx, stage_rootfs=resolve,
                        secrets=store) as prepared:
        run_process(merged, ProcessSpec(args=..., env=step_env + prepared.env), mounts=prepared.host_mounts,
                    ...)
    # take the layer diff only after the block: cleanup removes the mount stubs (see below)

Everything prepared is undone when the block exits (also on error or while preparing): cache locks are
released, throwaway overlays are unmounted, secret files are dropped and temp dirs removed. Nothing is
left in /proc/self/mountinfo or the temp dir.

Per type (BuildKit's documented semantics unless said otherwise):

* `cache`: a directory under `cache_root` (default `<store_root>/cache-mounts`) keyed by `id` (default: the
  target). It is created on first use with `mode` (default 0755) and `uid`/`gid` (default 0), seeded from
  `from` + `source` when given (the seed is copied once, when the cache is created; the id alone is the key).
  Sharing across threads and processes uses `flock` on one lock file per cache dir:
  `shared` takes it shared, `locked` exclusive (waits), `private` takes the first dir it can lock
  exclusively without waiting and makes a new one (`<key>/1`, `<key>/2`, ...) when all are busy. So a
  `shared` user also waits while a `locked` or `private` user holds the primary dir (a simplification).
* `bind`: from the context (default), or `from=` a stage or image (the caller's `stage_rootfs` resolves it
  to a host dir). `source` is resolved inside that root (symlinks and `..` cannot leave it). Read-only by
  default; with `rw` the container writes to a throwaway view: a directory gets an overlay (temp upper and
  work dirs over the source, unmounted and removed afterwards), a file or a directory where overlay cannot
  be mounted (not root, odd lower fs) gets a temp copy. Nothing reaches the source.
* `tmpfs`: a tmpfs mount (`nosuid,nodev`, `size=` when given).
* `secret`: id = `source` or `id` or basename of `target`. As a file, the value is written with `mode`
  (default 0400) and `uid`/`gid` to memory that no path names: a file in a detached tmpfs (mounted
  nowhere, held by a descriptor of this process, gone when the RUN ends or pybuild dies), which the runtime
  bind-mounts read-only from `/proc/<pid>/fd/<fd>/<n>` at `target` (default `/run/secrets/<id>`). Where
  the kernel refuses that, a 0700 dir on /dev/shm owned through a lock, which every build and `prune`
  sweep once its process is dead (`secretfiles`). With `env`, it is an environment variable
  (`PreparedMounts.env`; also a file when a `target` is given): the executor hands the runtime its spec
  through a memfd, never a file on disk (`executor`). A missing `required` secret is a ConfigError naming
  the id; a missing optional one is skipped. Values appear in no repr and no message.
* `ssh`: not supported yet (a clear DockerfileError).

Mount points. Targets are resolved inside the rootfs like `securejoin` (an absolute symlink restarts at
the rootfs, `..` stops at it), and the HostMount's destination is that resolved path, so the runtime
mounts onto a path inside the rootfs. Missing targets are created before the run (dirs, or empty files for
file binds and secrets). The mount points of `bind` and `tmpfs` mounts stay in the layer as empty
directories (or empty files for file binds), as the issue specifies and as BuildKit did before its
`MountStubsCleaner`. Those of `cache` and `secret` mounts are removed after the run when still empty, with
their parent's timestamps restored (current BuildKit, executor/stubs.go), so a secret's path never shows in
a layer. `remove_stubs=False` keeps every stub.

Stubs are made with plain path calls after resolving: nothing else writes to a step's rootfs while its
mounts are prepared (the container is not running yet), so there is no swap-a-symlink race to guard against
(`rootfs_path.RootDir` is the fd-based walker for paths a concurrent writer could change).

Mounts are returned parents first (stable sort by destination depth), so `/src` is mounted before
`/src/node_modules`.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from types import TracebackType

from pybuild.errors import ConfigError, ContextError, DockerfileError, StepFailed, UserError
from pybuild.paths import store_root
from pybuild.plan.ops import MountSpec
from pybuild.worker.rootfs_path import host_path, secure_join
from pybuild.worker.secretfiles import SecretFiles
from pybuild.worker.secrets import SecretStore
from pybuild.worker.types import HostMount

StageResolver = Callable[[str], str]
"""Resolves a mount's `from_ref` (stage name, stage index, image reference or op digest) to a host dir."""

_POLL = 0.05


def mount_text(mount: MountSpec) -> str:
    """The `--mount` value messages show for `mount` (its type, from, source and target)."""
    return ",".join(f"{k}={v}" for k, v in (("type", mount.type), ("from", mount.from_ref),
                                            ("source", mount.source), ("target", mount.target)) if v)


def default_cache_root() -> str:
    """Where cache mounts live unless the caller says otherwise."""
    return os.path.join(store_root(), "cache-mounts")


class PreparedMounts:
    """The host side of one RUN's mounts. Made by `prepare_mounts`; a context manager the solver holds
    around `run_process`. `env` holds `K=V` strings for secrets exposed as variables (redacted in repr)."""

    def __init__(self, host_mounts: tuple[HostMount, ...], env: tuple[str, ...], stack: ExitStack) -> None:
        self.host_mounts = host_mounts
        self.env = env
        self._stack = stack

    def close(self) -> None:
        """Release everything (idempotent)."""
        self._stack.close()

    def __enter__(self) -> PreparedMounts:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        names = [item.partition("=")[0] for item in self.env]
        return f"PreparedMounts(host_mounts={self.host_mounts!r}, env={names!r} (values redacted))"


def prepare_mounts(
    mounts: Sequence[MountSpec],
    *,
    rootfs: str,
    context_dir: str | None,
    stage_rootfs: StageResolver,
    secrets: SecretStore,
    cache_root: str | None = None,
    workdir: str = "/",
    remove_stubs: bool = True,
    cancel: threading.Event | None = None,
) -> PreparedMounts:
    """Prepare every `--mount` of one RUN on the host; see the module docstring for the semantics.

    A mount's `from_ref` names its source for `stage_rootfs` ('' = the context for a bind, none for a cache).
    `workdir` is the step's WORKDIR: a relative target is relative to it (BuildKit's dispatchRunMounts).
    `cancel` stops a wait for a `locked` cache (StepFailed) when the build is cancelled.
    """
    prep = _Preparer(rootfs, context_dir, stage_rootfs, secrets, cache_root or default_cache_root())
    prep.workdir = workdir
    prep.cancel = cancel
    stack = ExitStack()
    try:
        if remove_stubs:
            stack.callback(prep.stubs.remove, include_kept=False)
        host: list[HostMount] = []
        for mount in mounts:
            made = prep.prepare(mount, stack)
            if made is not None:
                host.append(made)
        host.sort(key=lambda item: len([p for p in item.destination.split("/") if p]))
        return PreparedMounts(tuple(host), tuple(prep.env), stack)
    except BaseException:
        # A step that never ran keeps no mount points. One pass over all stubs, newest first, so each
        # parent's times go back step by step (removing the cache/secret stubs first, through the stack's
        # callback, would leave a parent's times changed when a kept stub was made after them in it).
        # Nothing is mounted in the rootfs yet, so the stubs need not wait for the rest of the cleanup.
        try:
            prep.stubs.remove()
        finally:
            stack.close()
        raise


# --- paths inside a root ---------------------------------------------------------------------------------


def _parts(path: str) -> list[str]:
    return [part for part in path.split("/") if part and part != "."]


class _Stubs:
    """Mount points this module created in the rootfs, removed after the run when still empty."""

    def __init__(self) -> None:
        self.created: list[tuple[str, tuple[int, int], int, bool]] = []
        """(stub path, parent's (atime, mtime) before it was made, parent's mtime right after, keep)."""

    def make(self, rootfs: str, target: str, kind: str, keep: bool = False) -> str:
        """Create `target` (a `dir` or an empty `file`) and its missing parents inside `rootfs`.

        With `keep`, what is created here stays after the run (bind and tmpfs mount points).
        """
        resolved = secure_join(rootfs, target)
        if resolved == "/":
            raise DockerfileError(f'invalid mount target "{target}"')
        parts = _parts(resolved)
        current = rootfs
        for index, part in enumerate(parts):
            current = os.path.join(current, part)
            last = index == len(parts) - 1
            if os.path.lexists(current):
                if not last and not os.path.isdir(current):
                    raise UserError(f"cannot create mount target {target}: {'/'.join(parts[:index + 1])} "
                                    "is not a directory")
                continue
            before = os.stat(os.path.dirname(current))
            try:
                if last and kind == "file":
                    os.close(os.open(current, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644))
                else:
                    os.mkdir(current, 0o755)
            except FileExistsError:
                continue  # made meanwhile by someone else (not ours to remove)
            after = os.stat(os.path.dirname(current)).st_mtime_ns
            self.created.append((current, (before.st_atime_ns, before.st_mtime_ns), after, keep))
        return resolved

    def remove(self, include_kept: bool = True) -> None:
        """Remove the stubs still empty; those made with `keep` only when `include_kept` (a failed prepare)."""
        # BuildKit's MountStubsCleaner: only what we created, only when empty; keep the parent's times.
        # Better than BuildKit for reproducibility: when nothing else touched the parent since the stub was
        # made, its times go back to what they were before the stub.
        for path, before, after, keep in reversed(self.created):
            if keep and not include_kept:
                continue
            try:
                info = os.lstat(path)
                if stat.S_ISDIR(info.st_mode):
                    if os.listdir(path):
                        continue
                elif info.st_size != 0:
                    continue
                parent = os.stat(os.path.dirname(path))
                times = before if parent.st_mtime_ns == after else (parent.st_atime_ns, parent.st_mtime_ns)
                if stat.S_ISDIR(info.st_mode):
                    os.rmdir(path)
                else:
                    os.unlink(path)
                os.utime(os.path.dirname(path), ns=times)
            except OSError:
                continue
        self.created = [item for item in self.created if item[3] and not include_kept]


# --- the preparer ----------------------------------------------------------------------------------------


class _Preparer:
    def __init__(
        self, rootfs: str, context_dir: str | None, stage_rootfs: StageResolver, secrets: SecretStore,
        cache_root: str,
    ) -> None:
        self.rootfs = rootfs
        self.context_dir = context_dir
        self.stage_rootfs = stage_rootfs
        self.secrets = secrets
        self.cache_root = cache_root
        self.stubs = _Stubs()
        self.env: list[str] = []
        self._secret_files: SecretFiles | None = None
        self.workdir = "/"
        self.cancel: threading.Event | None = None

    def make_target(self, target: str, kind: str, keep: bool = False) -> str:
        if not target.startswith("/"):
            target = self.workdir.rstrip("/") + "/" + target
        return self.stubs.make(self.rootfs, target, kind, keep)

    def prepare(self, mount: MountSpec, stack: ExitStack) -> HostMount | None:
        if mount.type == "ssh":
            raise DockerfileError("RUN --mount=type=ssh is not supported yet")
        if mount.type == "secret":
            return self._secret(mount, stack)
        if not mount.target:
            raise DockerfileError(f"mount target is required: --mount={mount_text(mount)}")
        if mount.type == "bind":
            return self._bind(mount, stack)
        if mount.type == "cache":
            return self._cache(mount, stack)
        if mount.type == "tmpfs":
            return self._tmpfs(mount)
        raise DockerfileError(f'unsupported mount type "{mount.type}"')

    # tmpfs

    def _tmpfs(self, mount: MountSpec) -> HostMount:
        options = ["nosuid", "nodev"]
        if mount.size:
            options.append(f"size={mount.size}")
        dest = self.make_target(mount.target, "dir", keep=True)
        return HostMount(destination=dest, source="tmpfs", type="tmpfs", options=tuple(options))

    # bind

    def _bind(self, mount: MountSpec, stack: ExitStack) -> HostMount:
        source = self._source_path(mount, "bind")
        is_dir = os.path.isdir(source)
        if not mount.readonly:
            source = _throwaway_view(source, is_dir, stack)
        dest = self.make_target(mount.target, "dir" if is_dir else "file", keep=True)
        mode = "ro" if mount.readonly else "rw"
        return HostMount(destination=dest, source=source, type="bind", options=("rbind", mode))

    def _source_path(self, mount: MountSpec, kind: str) -> str:
        """The host path of `source` inside the context or the `from=` root; it must exist."""
        if mount.from_ref:
            root = self.stage_rootfs(mount.from_ref)
            where = f"'{mount.from_ref}'"
        elif self.context_dir is not None:
            root, where = self.context_dir, "the build context"
        else:
            raise ContextError(f"RUN --mount=type={kind} from the build context needs a context (none given)")
        path = host_path(root, secure_join(root, mount.source or "/"))
        if not os.path.lexists(path):
            error = DockerfileError if mount.from_ref else ContextError
            raise error(f"{kind} mount source {mount.source or '/'} not found in {where}")
        return path

    # cache

    def _cache(self, mount: MountSpec, stack: ExitStack) -> HostMount:
        cache_id = mount.id or mount.target
        entry = os.path.join(self.cache_root, hashlib.sha256(cache_id.encode()).hexdigest()[:32])
        os.makedirs(entry, mode=0o700, exist_ok=True)
        _write_once(os.path.join(entry, "id"), cache_id)
        index = _lock_cache(entry, mount.sharing or "shared", stack, self.cancel)
        data = os.path.join(entry, str(index))
        if not os.path.isdir(data):
            self._create_cache(mount, entry, data)
        dest = self.make_target(mount.target, "dir")
        return HostMount(destination=dest, source=data, type="bind",
                         options=("rbind", "ro" if mount.readonly else "rw"))

    def _create_cache(self, mount: MountSpec, entry: str, data: str) -> None:
        with _flock(os.path.join(entry, "create.lock"), fcntl.LOCK_EX):
            if os.path.isdir(data):
                return
            seed = self._source_path(mount, "cache") if mount.from_ref else None
            temp = tempfile.mkdtemp(prefix="new-", dir=entry)
            try:
                if seed is not None and os.path.isdir(seed):
                    shutil.copytree(seed, temp, symlinks=True, dirs_exist_ok=True)
                elif seed is not None:
                    shutil.copy2(seed, os.path.join(temp, os.path.basename(seed)), follow_symlinks=False)
                os.chmod(temp, 0o755 if mount.mode is None else mount.mode)
                _chown(temp, mount.uid, mount.gid)
                os.rename(temp, data)
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                raise

    # secret

    def _secret(self, mount: MountSpec, stack: ExitStack) -> HostMount | None:
        secret_id = mount.source or mount.id or os.path.basename(mount.target.rstrip("/"))
        value = self.secrets.get(secret_id)
        if value is None:
            if mount.required:
                raise ConfigError(f"secret {secret_id} not found",
                                  hint=f"pass it with --secret id={secret_id},src=FILE (or env=VAR)")
            return None
        if mount.env:
            self.env.append(f"{mount.env}={value.decode('utf-8', 'surrogateescape')}")
            if not mount.target:
                return None
        target = mount.target or f"/run/secrets/{os.path.basename(secret_id)}"
        path = self._write_secret(value, mount, stack)
        dest = self.make_target(target, "file")
        return HostMount(destination=dest, source=path, type="bind",
                         options=("rbind", "ro", "nosuid", "nodev", "noexec"))

    def _write_secret(self, value: bytes, mount: MountSpec, stack: ExitStack) -> str:
        if self._secret_files is None:
            self._secret_files = SecretFiles()
            stack.callback(self._secret_files.close)
        mode = 0o400 if mount.mode is None else mount.mode
        return self._secret_files.add(value, mode=mode, uid=mount.uid or 0, gid=mount.gid or 0)


# --- cache locking -------------------------------------------------------------------------------------


def _lock_cache(entry: str, sharing: str, stack: ExitStack, cancel: threading.Event | None) -> int:
    """Lock one data dir of a cache entry for this run and return its index (held until cleanup)."""
    if sharing == "private":
        index = 0
        while True:
            fd = _open_lock(os.path.join(entry, f"{index}.lock"))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                index += 1
                continue
            stack.callback(os.close, fd)
            return index
    fd = _open_lock(os.path.join(entry, "0.lock"))
    stack.callback(os.close, fd)  # closing the last descriptor releases the flock
    mode = fcntl.LOCK_EX if sharing == "locked" else fcntl.LOCK_SH
    if cancel is None:
        fcntl.flock(fd, mode)
        return 0
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return 0
        except BlockingIOError:
            if cancel.wait(_POLL):
                raise StepFailed("cancelled while waiting for a cache mount in use") from None


def _open_lock(path: str) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


class _flock:
    def __init__(self, path: str, mode: int) -> None:
        self.path, self.mode, self.fd = path, mode, -1

    def __enter__(self) -> None:
        self.fd = _open_lock(self.path)
        fcntl.flock(self.fd, self.mode)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _write_once(path: str, text: str) -> None:
    if not os.path.exists(path):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")


def _chown(path: str, uid: int | None, gid: int | None) -> None:
    uid, gid = uid or 0, gid or 0
    info = os.lstat(path)
    if (info.st_uid, info.st_gid) != (uid, gid):
        os.chown(path, uid, gid)


# --- throwaway views for rw binds ----------------------------------------------------------------------


def _throwaway_view(source: str, is_dir: bool, stack: ExitStack) -> str:
    """A writable view of `source` whose writes are discarded at cleanup (overlay, else a temp copy)."""
    temp = tempfile.mkdtemp(prefix="pybuild-bind-")
    stack.callback(_remove_view, temp)
    if not is_dir:
        copy = os.path.join(temp, "file")
        shutil.copy2(source, copy)
        return copy
    upper, work, merged = (os.path.join(temp, name) for name in ("upper", "work", "merged"))
    for path in (upper, work, merged):
        os.mkdir(path, 0o755)
    lower = _escape_overlay(source)
    try:
        _mount("overlay", merged, "overlay", f"lowerdir={lower},upperdir={upper},workdir={work}")
    except OSError:
        # Not root, or a lower fs overlay refuses: fall back to a temp copy of the tree.
        os.rmdir(merged)
        shutil.copytree(source, merged, symlinks=True)
    return merged


def _remove_view(temp: str) -> None:
    merged = os.path.join(temp, "merged")
    if os.path.ismount(merged):
        _unmount(merged)
        if os.path.ismount(merged):
            return  # never rmtree through a live mount: leave it rather than touch the source
    shutil.rmtree(temp, ignore_errors=True)


def _escape_overlay(path: str) -> str:
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: str, fstype: str, data: str) -> None:
    result = _libc().mount(source.encode(), target.encode(), fstype.encode(), ctypes.c_ulong(0), data.encode())
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), target)


def _unmount(target: str) -> None:
    libc = _libc()
    if libc.umount2(target.encode(), 0) == 0:
        return
    if ctypes.get_errno() in (errno.EBUSY,):
        libc.umount2(target.encode(), 2)  # MNT_DETACH: a process still inside; the kernel finishes later
