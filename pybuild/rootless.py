"""Rootless builds: a non-root `pybuild` moves itself into a user namespace where it is root.

Who calls it: `cli.main`, before a command that mounts or runs containers (`build`, `prune`) starts any
thread or imports the worker. Nothing else needs to know: inside, the process is uid 0 with every
capability over a mount namespace of its own, so overlay mounts, runc/crun, chown and the tar writer work as
in a root build.

How (as rootless podman, BuildKit and rootlesskit do, but without a re-exec):
1. fork a helper, which waits on a pipe;
2. the process calls unshare(CLONE_NEWUSER | CLONE_NEWNS) itself (it is still single-threaded) and wakes
   the helper;
3. the helper, still outside, runs the setuid `newuidmap`/`newgidmap` (Debian package uidmap) on the
   process: container 0 is the user's own uid/gid, container 1..65536 the first 65536 ids of the user's
   /etc/subuid and /etc/subgid ranges;
4. the process waits for the helper, drops its supplementary groups and makes its mounts private.
The same process (same pid, same imported modules) then goes on with the command: the cost is one fork
and two setuid execs, a few milliseconds, paid by every `pybuild build` of a non-root user (a cached no-op
rebuild included; measured in benchmarks/exec.py). Entering lazily, at the first RUN or unpack, is not
possible: unshare(CLONE_NEWUSER) refuses a process with threads, and by then the solver runs many.

Inside, `stat` shows container ids (host uid -> 0, subordinate ids -> 1..65536), so layers written by a
rootless build carry the same owners, and hence the same bytes and digests, as a root build's. Files a
layer owns with ids past 65536 cannot be represented and fail the unpack (chown: invalid argument).

`in_userns` tells a real root from a mapped one (any user namespace but the initial one, so also a
pybuild started as root inside `unshare -Ur` or a user-namespaced pod): the worker then marks opaque directories with `user.overlay.opaque` and mounts overlay with
`userxattr`, skips device nodes in layers (mknod is refused in a user namespace; the RUN's /dev is a tmpfs
with the runtime's devices anyway), and the runtime gets /sys as a bind mount. Rootless runc/crun cannot
set cgroup limits on this host without delegation (cgroup v1, no systemd user slice): a build that asks for
one fails with an error saying so.

Missing pieces are one-line `ConfigError`s naming what to install or configure: no subordinate range, no
newuidmap/newgidmap, user namespaces disabled, a map the setuid helper refused.
"""

from __future__ import annotations

import os

from pybuild.errors import ConfigError

_IDENTITY_MAP = ["0", "0", "4294967295"]  # /proc/self/uid_map of the initial user namespace
MAPPED_IDS = 65536  # container ids 1..65536 come from the subordinate range
_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_MS_REC = 16384
_MS_PRIVATE = 1 << 18


_in_userns: bool | None = None


def in_userns() -> bool:
    """Whether this process runs in a user namespace other than the initial one (read once, cached)."""
    global _in_userns
    if _in_userns is None:
        try:
            with open("/proc/self/uid_map", encoding="ascii") as handle:
                _in_userns = handle.read().split() != _IDENTITY_MAP
        except OSError:  # no /proc: assume the initial namespace
            _in_userns = False
    return _in_userns


def subordinate_range(path: str, user: str, uid: int) -> tuple[int, int]:
    """The first (start, count) of `user`'s (or `uid`'s) ranges in /etc/subuid or /etc/subgid format.

    ConfigError when the file is missing or names no range of at least 65536 ids for the user."""
    hint = (f"add one as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user} "
            f"(a range no other user has)")
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        raise ConfigError(f"rootless build: {path} does not exist, so user {user} has no subordinate ids",
                          hint=hint) from None
    except OSError as exc:
        raise ConfigError(f"rootless build: cannot read {path}: {exc.strerror}") from None
    small = None
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) != 3 or fields[0] not in (user, str(uid)):
            continue
        try:
            start, count = int(fields[1]), int(fields[2])
        except ValueError:
            continue
        if count >= MAPPED_IDS:
            return start, count
        small = count
    if small is not None:
        raise ConfigError(f"rootless build: {path} gives user {user} only {small} subordinate ids, "
                          f"{MAPPED_IDS} are needed", hint=hint)
    raise ConfigError(f"rootless build: no subordinate id range for user {user} in {path}", hint=hint)


def _tool(name: str) -> str:
    import shutil

    found = shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/bin/{name}") if os.access(p, os.X_OK)), None)
    if found is None:
        raise ConfigError(f"rootless build: {name} not found",
                          hint="install the uidmap package (Debian/Ubuntu: apt-get install uidmap)")
    return found


def _map_args(tool: str, pid: int, own: int, start: int) -> list[str]:
    return [tool, str(pid), "0", str(own), "1", "1", str(start), str(MAPPED_IDS)]


def _helper(pid: int, wake: int, report: int, commands: list[list[str]]) -> None:
    """The forked helper: wait for the unshare, write the maps, report a failure, exit (never returns)."""
    code = 1
    try:
        if os.read(wake, 1) == b"u":
            for argv in commands:
                child = os.posix_spawn(argv[0], argv, os.environ,
                                       file_actions=[(os.POSIX_SPAWN_DUP2, report, 1),
                                                     (os.POSIX_SPAWN_DUP2, report, 2)])
                status = os.waitpid(child, 0)[1]
                if os.waitstatus_to_exitcode(status) != 0:
                    os.write(report, f"\n{os.path.basename(argv[0])} {' '.join(argv[1:])} failed".encode())
                    break
            else:
                code = 0
    except BaseException as exc:  # the helper must never return into the caller's code
        try:
            os.write(report, f"\n{exc}".encode())
        except OSError:
            pass
    os._exit(code)


def enter() -> None:
    """Move this (single-threaded, non-root) process into a new user and mount namespace where it is
    root; ConfigError naming what to install or configure when that cannot be done."""
    import ctypes
    import pwd

    global _in_userns

    uid, gid = os.getuid(), os.getgid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    uid_start = subordinate_range("/etc/subuid", user, uid)[0]
    gid_start = subordinate_range("/etc/subgid", user, uid)[0]
    commands = [_map_args(_tool("newuidmap"), os.getpid(), uid, uid_start),
                _map_args(_tool("newgidmap"), os.getpid(), gid, gid_start)]
    wake_r, wake_w = os.pipe()
    report_r, report_w = os.pipe()
    helper = os.fork()
    if helper == 0:
        os.close(wake_w)
        os.close(report_r)
        _helper(os.getppid(), wake_r, report_w, commands)
    os.close(wake_r)
    os.close(report_w)
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS) != 0:
            code = ctypes.get_errno()
            os.write(wake_w, b"x")
            raise ConfigError(
                f"rootless build: cannot create a user namespace: {os.strerror(code)}",
                hint="enable unprivileged user namespaces (sysctl user.max_user_namespaces=15000; on Debian "
                     "also kernel.unprivileged_userns_clone=1)")
        os.write(wake_w, b"u")
    finally:
        os.close(wake_w)
        status = os.waitpid(helper, 0)[1]
        with os.fdopen(report_r, "rb") as report:
            message = report.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        detail = "; ".join(line.strip() for line in message.splitlines() if line.strip())
        raise ConfigError(f"rootless build: cannot map ids into the user namespace: {detail}",
                          hint="newuidmap/newgidmap must be setuid root (reinstall uidmap) and the ranges in "
                               "/etc/subuid and /etc/subgid must belong to this user")
    os.setgroups([])
    if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        code = ctypes.get_errno()
        raise ConfigError(f"rootless build: cannot make mounts private in the new namespace: "
                          f"{os.strerror(code)}")
    _in_userns = True


def enter_if_needed() -> None:
    """`enter` when not root (`cli.main` calls it for build and prune; inside, this process is root)."""
    if os.geteuid() != 0:
        enter()
