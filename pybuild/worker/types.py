"""Values that cross the worker's internal boundaries (snapshots ↔ executor ↔ mounts ↔ file ops).

Made by the planner/solver (later issue) or by tests; read by the executor and file ops. Paths inside the
container are absolute POSIX paths; host paths are absolute.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pybuild.record import record

NetworkMode = Literal["default", "none", "host"]

OutputSink = Callable[[str, bytes], None]
"""Receives live process output: (stream name "stdout" | "stderr", bytes chunk)."""


@record(kw_only=True)
class ProcessSpec:
    """The process a RUN step starts: argv, environment, user, working directory, stdin."""

    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    """`K=V` strings, in order (the executor adds a default PATH when none is set)."""
    user: str = ""
    """As written in USER: name, uid, name:group or uid:gid ('' = root); resolved inside the rootfs."""
    cwd: str = "/"
    stdin: bytes | None = None
    """Bytes fed to the process's stdin (heredoc bodies), or None for /dev/null."""


@record(kw_only=True)
class HostMount:
    """A mount the executor adds to the container, prepared on the host by `mounts.py`."""

    destination: str
    source: str
    type: str = "bind"
    options: tuple[str, ...] = ("rbind", "ro")


@record(kw_only=True)
class StepResult:
    """The output filesystem of one op, as its layer stack: diffIDs, bottom-most first.

    A filesystem is named by its layers alone, so a result can come from a run, from the cache or from
    another process: `Snapshots.ensure_layers` finds (or unpacks) the snapshots when a later op needs the
    files. `context` marks a build-context source (no filesystem of its own); `name` is what errors call a
    `COPY --from` source (the image reference for an image, else ''); `key` is the op's cache key (set by
    the build runner, '' when nothing keyed it).
    """

    diff_ids: tuple[str, ...]
    context: bool = False
    name: str = ""
    key: str = ""


SecurityMode = Literal["sandbox", "insecure"]


@record(kw_only=True)
class Sandbox:
    """What a RUN may do (`sandbox.py` puts it into the spec): its security mode and resource limits.

    `security` is the op's (`RUN --security`); the rest is build-wide, from docker's flags. `ulimits` are
    (RLIMIT_*, soft, hard); `shm_size` the /dev/shm tmpfs size in bytes (docker's 64 MiB); `memory` and
    `pids` the cgroup limits (0: none, docker's default).
    """

    security: SecurityMode = "sandbox"
    ulimits: tuple[tuple[str, int, int], ...] = ()
    shm_size: int = 64 * 1024 * 1024
    memory: int = 0
    pids: int = 0
