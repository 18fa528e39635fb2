"""Run one process in a throwaway OCI-runtime container (runc or crun) on a prepared rootfs directory.

Made for the worker's RUN implementation; the rootfs is the overlay mountpoint the snapshots module
prepared. For each call:

0. on the `default` network, a prepared network namespace with slirp4netns (`network.isolated`, from a
   small pool), torn down when the run ends (runtime exited, or killed and deleted);
1. a bundle dir `<store>/run/bundles/bundle-XXXX/` gets config.json (`spec.generate_spec`, root.path pointing
   at the given rootfs) and the generated /etc/hosts, /etc/resolv.conf and /etc/hostname. config.json is
   a symlink to `/proc/<pid>/fd/<n>`, a sealed memfd holding the spec: the process's env (which holds the
   values of `--mount=type=secret,env=` secrets) is never in a file, and the symlink dangles once pybuild
   is gone (a plain file only where /proc belongs to another pid namespace, so the runtime could not
   reach the memfd);
2. `<runtime> --root <store>/run/<runtime>/ --log <bundle>/runtime.log run --bundle <bundle> <id>` starts in
   its own process group (a terminal's Ctrl-C reaches pybuild only, which then cleans up) with stdout and
   stderr on pipes. Without a terminal `runc run` hands its stdio straight to the container process, so two
   reader threads stream the output live to `output` and keep the last lines for the error;
3. the runtime exits with the process's status and removes the container itself.

The runtime's state lives under a private `--root` shared by pybuild's runs (so `runc --root ... list` shows
leftovers after a hard kill of pybuild), never in the system-wide /run/runc. runc's state.json holds no
env; crun copies the whole config.json into its state dir for the container's life, so the executor
rewrites that copy with an empty env as soon as crun has written it (polled every millisecond: crun
writes it ~5 ms after it starts, before the container runs). A pybuild killed in that window leaves the
copy until the next build or `prune` reaps the container and its state dir.

`reap_stale_runs` (a build before its first step, `pybuild prune`) kills and deletes the containers of dead
builds, removes their bundles, and sweeps the secret dirs dead processes left (`secretfiles.sweep_stale`).
A bundle's owner is the process holding the flock on its owner.json (`ownerlock`).

Failure and cancellation (nothing leaks: docs/ARCHITECTURE.md, "Concurrency and durability"): on a
timeout, on `cancel` being set, on KeyboardInterrupt or any other exception, the `finally` block runs
`<runtime> kill <id> KILL` (the pid namespace takes every other process in the container with it), waits
for the runtime, runs `<runtime> delete --force <id>` when state is left, and removes the state and bundle
dirs. A Ctrl-C that arrives during that cleanup is held back until the cleanup is done (main thread only).

Errors: a non-zero exit is `ProcessFailed` (a `StepFailed`, with `exit_code` and `tail`), worded as
BuildKit's `process "/bin/sh -c false" did not complete successfully: exit code: 1`; a runtime that fails
to start the process (for example: executable not found) is `RuntimeFailed` with the runtime's one-line
error; timeouts and cancellation are `ProcessTimedOut` and `ProcessCancelled`; a missing runtime binary
is a `ConfigError`.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import IO

from pybuild import paths
from pybuild.atomic import write_atomic
from pybuild.digest import canonical_json
from pybuild.errors import ConfigError, StepFailed
from pybuild.record import record
from pybuild.store.private import make_private_dir
from pybuild.worker import ownerlock
from pybuild.worker.secretfiles import proc_is_ours
from pybuild.worker import spec as ocispec
from pybuild.worker.types import HostMount, NetworkMode, OutputSink, ProcessSpec, Sandbox
from pybuild.worker.users import resolve_user

TAIL_LINES = 20
_TAIL_BYTES = 16384
_POLL = 0.1
_FAST_POLL = 0.001  # while waiting for a runtime's state copy of config.json (crun writes it in ~5 ms)
_COPIES_CONFIG = ("crun",)  # runtimes that keep a copy of config.json in their state dir
_CLEANUP_TIMEOUT = 10.0


@record(kw_only=True)
class RunResult:
    """The outcome of a successful `run_process`: exit code (0), wall time in seconds, last output lines."""

    exit_code: int
    duration: float
    tail: tuple[str, ...]


class ProcessFailed(StepFailed):
    """The RUN process exited non-zero (or did not finish); carries its exit code and last output lines."""

    def __init__(self, message: str, *, exit_code: int | None, tail: tuple[str, ...]) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.tail = tail


class RuntimeFailed(ProcessFailed):
    """The OCI runtime could not start the process (bad executable, bad cwd, runtime error)."""


class ProcessTimedOut(ProcessFailed):
    """The process ran past its timeout and was killed."""


class ProcessCancelled(ProcessFailed):
    """The process was killed because the build was cancelled (the cancel event was set)."""


@record(kw_only=True)
class Bundle:
    """A prepared OCI bundle dir with a fresh container id (made by `prepare_bundle`)."""

    path: str
    container_id: str
    state_root: str


def run_dir(store_root: str | None = None) -> str:
    """`<store>/run` (default: the default store's): the parent of the bundles and the runtimes' private
    state roots. The store keeps it 0700 (`store.private`)."""
    return os.path.join(store_root or paths.store_root(), "run")


def state_root(runtime: str, store_root: str | None = None) -> str:
    """The private `--root` state directory for `runtime` (a name or a path)."""
    return os.path.join(run_dir(store_root), os.path.basename(runtime))


def find_runtime(runtime: str) -> str:
    """The absolute path of the runtime binary; ConfigError when it is not installed."""
    found = shutil.which(runtime)
    if found is None:
        raise ConfigError(
            f"OCI runtime {runtime!r} not found in PATH",
            hint=f"install it (Debian: apt-get install {os.path.basename(runtime)}) or choose another runtime",
        )
    return found


@contextlib.contextmanager
def prepare_bundle(
    rootfs: str,
    process: ProcessSpec,
    *,
    network: NetworkMode = "default",
    netns_path: str = "",
    mounts: Sequence[HostMount] = (),
    runtime: str = "runc",
    store_root: str | None = None,
    sandbox: Sandbox | None = None,
) -> Iterator[Bundle]:
    """A bundle dir for `process` on `rootfs`, removed on exit (the benchmark reuses it for a bare run).
    It lives under `run_dir(store_root)`. `netns_path` is the prepared namespace a `default` RUN joins
    (`network.isolated`)."""
    user = resolve_user(rootfs, process.user)
    bundles = os.path.join(run_dir(store_root), "bundles")
    make_private_dir(bundles)
    path = tempfile.mkdtemp(prefix="bundle-", dir=bundles)
    container_id = "pybuild-" + secrets.token_hex(8)
    owner = _own_bundle(path, runtime, container_id)
    spec_fd = -1
    try:
        etc = ocispec.write_etc_files(path, network)
        config = ocispec.generate_spec(rootfs=rootfs, process=process, user=user, network=network,
                                       netns_path=netns_path, etc_files=etc, mounts=mounts,
                                       sandbox=sandbox)
        # bytes that are not UTF-8 (a RUN line, an ENV value) as U+FFFD, as BuildKit's Go encoder writes
        # them (json.dump's "\udcff" escapes: runc read them as U+FFFD, crun as CESU-8 bytes)
        data = canonical_json(config)
        if proc_is_ours():
            spec_fd = _spec_memfd(data)
            os.symlink(f"/proc/{os.getpid()}/fd/{spec_fd}", os.path.join(path, "config.json"))
        else:  # the runtime could not reach our memfd: a plain file (removed with the bundle)
            with open(os.path.join(path, "config.json"), "wb") as handle:
                handle.write(data)
        yield Bundle(path=path, container_id=container_id, state_root=state_root(runtime, store_root))
    finally:
        shutil.rmtree(path, ignore_errors=True)
        if spec_fd >= 0:
            os.close(spec_fd)
        os.close(owner)


def _spec_memfd(data: bytes) -> int:
    """A sealed memfd (close-on-exec, 0600) holding `data`: config.json in memory, so the process's env (a
    secret's value) is in no file; the bundle's config.json is a symlink to it through /proc."""
    fd = os.memfd_create("pybuild-config.json", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                    fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    except BaseException:
        os.close(fd)
        raise
    return fd


_OWNER = "owner.json"
_STALE_UNOWNED = 60.0  # seconds: a bundle dir without its owner file is a crash between mkdtemp and claim


def _own_bundle(path: str, runtime: str, container_id: str) -> int:
    """Write the bundle's owner file (runtime, container id), locked while the bundle lives: a bundle whose
    lock is free belongs to a dead process (`reap_stale_runs`)."""
    return ownerlock.claim(path, _OWNER, json.dumps({"runtime": runtime, "id": container_id}).encode())


def reap_stale_runs(store_root: str | None = None) -> int:
    """Kill and delete the containers of builds that died without cleaning up (kill -9 of pybuild: the
    runtime runs in its own process group and outlives it), remove their bundles, and sweep the secret dirs
    dead processes left (`secretfiles.sweep_stale`). Returns how many bundles and dirs it removed.

    Called before a build runs its first step (and by `pybuild prune`), before snapshots are cleaned, so a
    dead build's RUN stops before its overlay is unmounted."""
    from pybuild.worker.secretfiles import sweep_stale

    reaped = sweep_stale()
    bundles = os.path.join(run_dir(store_root), "bundles")
    try:
        names = os.listdir(bundles)
    except FileNotFoundError:
        return reaped
    for name in names:
        # a live build's run (or one too young to tell) stays
        reaped += ownerlock.remove_if_dead(os.path.join(bundles, name), _OWNER, _STALE_UNOWNED,
                                         functools.partial(_stop_owner, store_root))
    return reaped


def _stop_owner(store_root: str | None, data: bytes) -> None:
    """Stop the container a dead run's owner.json names (nothing when it has none)."""
    if not data:
        return
    with contextlib.suppress(ValueError, AttributeError):
        owner = json.loads(data)
        _stop_container(str(owner.get("runtime", "runc")), str(owner.get("id", "")), store_root)


def _stop_container(runtime: str, container_id: str, store_root: str | None) -> None:
    if not container_id.startswith("pybuild-"):
        return
    binary = shutil.which(runtime)
    if binary is None:
        return
    root = state_root(runtime, store_root)
    for args in (["kill", container_id, "KILL"], ["delete", "--force", container_id]):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run([binary, "--root", root, *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=_CLEANUP_TIMEOUT, check=False)
    shutil.rmtree(os.path.join(root, container_id), ignore_errors=True)


def run_process(
    rootfs: str,
    process: ProcessSpec,
    *,
    network: NetworkMode = "default",
    mounts: Sequence[HostMount] = (),
    runtime: str = "runc",
    output: OutputSink | None = None,
    timeout: float | None = None,
    cancel: threading.Event | None = None,
    store_root: str | None = None,
    sandbox: Sandbox | None = None,
) -> RunResult:
    """Run `process` in a throwaway container on `rootfs` and wait for it (see the module docstring).

    Returns a RunResult on exit code 0; raises ProcessFailed (a StepFailed) otherwise.
    """
    binary = find_runtime(runtime)
    with contextlib.ExitStack() as stack:
        netns_path = ""
        if network == "default":  # its own namespace with slirp4netns, torn down after the run
            from pybuild.worker.network import isolated

            netns_path = stack.enter_context(isolated()).path
        bundle = stack.enter_context(prepare_bundle(rootfs, process, network=network, netns_path=netns_path,
                                                    mounts=mounts, runtime=runtime, store_root=store_root,
                                                    sandbox=sandbox))
        return _Run(binary, bundle, process, output).execute(timeout, cancel)


class _Tail:
    """The last bytes of stdout+stderr (interleaved as read), for the error message."""

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.lock = threading.Lock()

    def add(self, chunk: bytes) -> None:
        with self.lock:
            self.chunks.append(chunk)
            self.size += len(chunk)
            while self.size - len(self.chunks[0]) > _TAIL_BYTES:
                self.size -= len(self.chunks.popleft())

    def lines(self) -> tuple[str, ...]:
        with self.lock:
            text = b"".join(self.chunks).decode("utf-8", "replace")
        return tuple(text.splitlines()[-TAIL_LINES:])


class _Run:
    """One container run: start, stream, wait, and always clean up."""

    def __init__(self, binary: str, bundle: Bundle, process: ProcessSpec, output: OutputSink | None) -> None:
        self.binary = binary
        self.bundle = bundle
        self.process = process
        self.output = output
        self.tail = _Tail()
        self.threads: list[threading.Thread] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = os.path.join(bundle.path, "runtime.log")
        self.command = " ".join(process.args)
        self.state_copy = ""
        """The runtime's copy of config.json in its state dir, until its env is wiped ('' = none, or done)."""
        if os.path.basename(binary) in _COPIES_CONFIG:
            self.state_copy = os.path.join(bundle.state_root, bundle.container_id, "config.json")

    def base(self) -> list[str]:
        return [self.binary, "--root", self.bundle.state_root]

    def execute(self, timeout: float | None, cancel: threading.Event | None) -> RunResult:
        start = time.monotonic()
        finished = False
        try:
            self.start()
            code = self.wait(start, timeout, cancel)
            self.join_readers()
            finished = True
        finally:
            if not finished:
                _deferring_sigint(self.cleanup)
        duration = time.monotonic() - start
        if code != 0:
            raise self.failure(code)
        return RunResult(exit_code=0, duration=duration, tail=self.tail.lines())

    def start(self) -> None:
        make_private_dir(self.bundle.state_root)
        argv = [*self.base(), "--log", self.log, "--log-format", "json",
                "run", "--bundle", self.bundle.path, self.bundle.container_id]
        stdin = subprocess.PIPE if self.process.stdin is not None else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         close_fds=True, process_group=0)
        except OSError as exc:
            raise ConfigError(f"cannot start OCI runtime {self.binary}: {exc.strerror or exc}") from exc
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.spawn(self.read, self.proc.stdout, "stdout")
        self.spawn(self.read, self.proc.stderr, "stderr")
        if self.proc.stdin is not None:
            self.spawn(self.feed, self.proc.stdin, self.process.stdin or b"")

    def spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True,  # type: ignore[arg-type]
                                  name=f"pybuild-exec-{self.bundle.container_id}")
        thread.start()
        self.threads.append(thread)

    def read(self, pipe: IO[bytes], name: str) -> None:
        fd = pipe.fileno()
        while chunk := os.read(fd, 65536):
            self.tail.add(chunk)
            if self.output is not None:
                try:
                    self.output(name, chunk)
                except Exception:  # noqa: BLE001 - a broken display must not wedge the container
                    self.output = None

    @staticmethod
    def feed(pipe: IO[bytes], data: bytes) -> None:
        with contextlib.suppress(OSError):
            pipe.write(data)
        with contextlib.suppress(OSError):
            pipe.close()

    def wait(self, start: float, timeout: float | None, cancel: threading.Event | None) -> int:
        """The runtime's exit status; raises ProcessTimedOut / ProcessCancelled (cleanup runs in finally)."""
        assert self.proc is not None
        pidfd = os.pidfd_open(self.proc.pid)
        try:
            while True:
                slice_ = _POLL if cancel is not None else None
                if self.state_copy and self.wipe_state_env():
                    slice_ = _FAST_POLL if time.monotonic() - start < 1 else _POLL
                if timeout is not None:
                    left = start + timeout - time.monotonic()
                    if left <= 0:
                        raise ProcessTimedOut(
                            f'process "{self.command}" did not complete successfully: '
                            f"timed out after {timeout:g}s", exit_code=None, tail=self.tail.lines())
                    slice_ = left if slice_ is None else min(slice_, left)
                if cancel is not None and cancel.is_set():
                    raise ProcessCancelled(f'process "{self.command}" was cancelled',
                                           exit_code=None, tail=self.tail.lines())
                if select.select([pidfd], [], [], slice_)[0]:
                    return self.proc.wait()
        finally:
            os.close(pidfd)

    def wipe_state_env(self) -> bool:
        """Empty the env of the runtime's copy of config.json (crun keeps one in its state dir for the
        container's life, which would hold a secret's value): rewritten in place of the copy as soon as the
        copy is complete. True while the copy is still to come."""
        try:
            with open(self.state_copy, "rb") as handle:
                config = json.loads(handle.read())
        except (OSError, ValueError):  # not there yet, or still being written
            return True
        self.state_copy, path = "", self.state_copy
        process = config.get("process") if isinstance(config, dict) else None
        if not isinstance(process, dict) or not process.get("env"):
            return False
        process["env"] = []
        with contextlib.suppress(OSError):  # the container may be gone already, its state dir with it
            write_atomic(path, json.dumps(config).encode())
        return False

    def join_readers(self) -> None:
        for thread in self.threads:
            thread.join()
        assert self.proc is not None
        for pipe in (self.proc.stdout, self.proc.stderr, self.proc.stdin):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        # `runc run` removes the container when the process exits; a leftover state dir means it did not.
        if os.path.exists(os.path.join(self.bundle.state_root, self.bundle.container_id)):
            self.delete()

    def failure(self, code: int) -> ProcessFailed:
        tail = self.tail.lines()
        error = self.runtime_error()
        if error:
            return RuntimeFailed(f'process "{self.command}" did not complete successfully: {error}',
                                 exit_code=code, tail=tail)
        return ProcessFailed(f'process "{self.command}" did not complete successfully: exit code: {code}',
                             exit_code=code, tail=tail)

    def runtime_error(self) -> str:
        """The runtime's last error-level log message ('' when it logged none)."""
        try:
            with open(self.log, encoding="utf-8", errors="replace") as handle:
                lines = handle.read().splitlines()
        except OSError:
            return ""
        message = ""
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("level") in ("error", "fatal", "panic"):
                message = str(entry.get("msg", "")).strip()
        return " ".join(message.split())

    def cleanup(self) -> None:
        """Kill the container and the runtime, delete the container, close pipes (idempotent)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                # the runtime may still be creating the container, so `kill` can fail at first: retry
                deadline = time.monotonic() + 2
                while True:
                    self.quiet(["kill", self.bundle.container_id, "KILL"])
                    try:
                        proc.wait(timeout=0.05)
                        break
                    except subprocess.TimeoutExpired:
                        if time.monotonic() > deadline:
                            raise
            except subprocess.TimeoutExpired:
                proc.kill()  # the runtime itself (it may not have created the container yet)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=_CLEANUP_TIMEOUT)
        self.delete()
        for thread in self.threads:
            thread.join(timeout=_CLEANUP_TIMEOUT)
        if proc is not None:
            for pipe in (proc.stdout, proc.stderr, proc.stdin):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()

    def delete(self) -> None:
        self.quiet(["delete", "--force", self.bundle.container_id])
        shutil.rmtree(os.path.join(self.bundle.state_root, self.bundle.container_id), ignore_errors=True)

    def quiet(self, args: list[str]) -> None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run([*self.base(), *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=_CLEANUP_TIMEOUT, check=False)


def _deferring_sigint(action: object) -> None:
    """Run `action()`; in the main thread, hold back SIGINT until it is done, then deliver it."""
    assert callable(action)
    if threading.current_thread() is not threading.main_thread():
        action()
        return
    pending: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        pending.append(signum)

    try:
        previous = signal.signal(signal.SIGINT, hold)
    except ValueError:  # not in the main interpreter
        action()
        return
    try:
        action()
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending and callable(previous):
        previous(signal.SIGINT, None)
