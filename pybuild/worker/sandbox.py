"""What a RUN step may do: its security mode and resource limits, parsed from docker's flags and put into
the OCI spec.

Who uses it: `cli/buildcmd.py` and `api.py` parse `--ulimit`, `--shm-size`, `--memory` and `--pids-limit`
into a `types.Sandbox` (`parse_ulimit`, `parse_size`, `check_host` before anything runs); `spec.py` calls
`apply` on every RUN's spec; `dispatch.py` calls `explain_failure` when a RUN fails under a limit.

In the spec (`apply`):
- `sandbox` (the default): docker's default capabilities (spec.py) and docker's default seccomp profile
  resolved for them (`seccomp.oci_profile`).
- `insecure` (`RUN --security=insecure`, which needs `--allow security.insecure`): as BuildKit's insecure
  mode: every capability the kernel has in the bounding, effective and permitted sets, no seccomp filter,
  no masked or read-only paths, and /sys writable.
- `ulimits` replace the rlimits of the same type (RLIMIT_NOFILE's default stays otherwise);
  `shm_size` sizes the /dev/shm tmpfs (docker's default 64 MiB); `memory` sets
  `linux.resources.memory.limit` (and `swap` to the same total, so the limit cannot be dodged by
  swapping, where the host accounts swap: `swap_accounted`); `pids` sets `linux.resources.pids.limit`.
  runc and crun write them into the cgroup they make for the container, v1 or v2, and remove it when
  the container is deleted.

Defaults are docker's: no memory and no pids limit. A build farm sets them; a default pids or memory
limit would break builds that are legitimately big (a `make -j` of a large tree, a linker needing GiBs),
and no value suits every host.

Cache keys: none of these is in a step's cache key. Memory and pids limits are worker settings BuildKit
does not have per op either (docker's `--memory` is the legacy builder's). BuildKit does carry `--ulimit`
(the exec op's meta) and `--shm-size` (a /dev/shm tmpfs mount) in each RUN's op definition, so they change
its keys there; here they do not, on purpose: they bound how a step may run, not what it makes (a step that
finishes under a limit makes the same files without it), so adding a limit to a build keeps its cache.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any

from pybuild.errors import ConfigError, StepFailed
from pybuild.units import human_size
from pybuild.worker.types import Sandbox

MIB = 1024 * 1024
DEFAULT_SHM = 64 * MIB
MIN_MEMORY = 6 * MIB  # docker's "Minimum memory limit allowed is 6MB"
UNLIMITED = 2 ** 64 - 1  # RLIM_INFINITY as the runtime spec's uint64

# docker's --ulimit names → RLIMIT_*
ULIMITS = {
    "as": "RLIMIT_AS", "core": "RLIMIT_CORE", "cpu": "RLIMIT_CPU", "data": "RLIMIT_DATA",
    "fsize": "RLIMIT_FSIZE", "locks": "RLIMIT_LOCKS", "memlock": "RLIMIT_MEMLOCK",
    "msgqueue": "RLIMIT_MSGQUEUE", "nice": "RLIMIT_NICE", "nofile": "RLIMIT_NOFILE", "nproc": "RLIMIT_NPROC",
    "rss": "RLIMIT_RSS", "rtprio": "RLIMIT_RTPRIO", "rttime": "RLIMIT_RTTIME",
    "sigpending": "RLIMIT_SIGPENDING", "stack": "RLIMIT_STACK",
}

# Linux capabilities by number (capability.h), for the insecure mode's "all of them".
_CAPS = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
)

_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgtp])?(?:i?b)?$", re.IGNORECASE)


def parse_size(text: str, flag: str) -> int:
    """docker's RAMInBytes: `64m`, `1g`, `512k`, `1.5GiB`, `100` (bytes); binary units."""
    match = _SIZE.match(text.strip())
    if match is None:
        raise ConfigError(f"{flag} {text!r}: expected a size such as 64m, 512k or 1g")
    scale = 1024 ** (" kmgtp".index(match.group(2).lower()) if match.group(2) else 0)
    return int(float(match.group(1)) * scale)


def parse_ulimit(text: str) -> tuple[str, int, int]:
    """docker's `--ulimit TYPE=SOFT[:HARD]` (-1: unlimited) → (RLIMIT_*, soft, hard)."""
    name, sep, values = text.partition("=")
    if not sep or not values:
        raise ConfigError(f"--ulimit {text!r}: expected TYPE=SOFT[:HARD], e.g. nofile=1024:2048")
    rlimit = ULIMITS.get(name.strip().lower())
    if rlimit is None:
        raise ConfigError(f"--ulimit {text!r}: unknown type {name!r}",
                          hint="one of " + ", ".join(sorted(ULIMITS)))
    soft_text, _, hard_text = values.partition(":")
    try:
        soft = int(soft_text)
        hard = int(hard_text) if hard_text else soft
    except ValueError:
        raise ConfigError(f"--ulimit {text!r}: limits must be integers (-1 for unlimited)") from None
    soft, hard = (UNLIMITED if v == -1 else v for v in (soft, hard))
    if min(soft, hard) < 0:
        raise ConfigError(f"--ulimit {text!r}: limits must be 0 or more (-1 for unlimited)")
    if soft > hard:
        raise ConfigError(f"--ulimit {text!r}: the soft limit must not exceed the hard one ({soft} > {hard})")
    return rlimit, soft, hard


def make_sandbox(*, ulimits: tuple[str, ...] = (), shm_size: str | None = None, memory: str | None = None,
                 pids_limit: int | None = None) -> Sandbox:
    """The build-wide sandbox from docker's flag values (one-line ConfigErrors naming the flag)."""
    parsed: dict[str, tuple[str, int, int]] = {}
    for text in ulimits:
        item = parse_ulimit(text)
        parsed[item[0]] = item  # a later --ulimit of the same type wins, as in docker
    shm = DEFAULT_SHM
    if shm_size is not None:
        shm = parse_size(shm_size, "--shm-size")
        if shm <= 0:
            raise ConfigError(f"--shm-size {shm_size!r}: must be more than 0")
    mem = 0
    if memory is not None:
        mem = parse_size(memory, "--memory")
        if 0 < mem < MIN_MEMORY:
            raise ConfigError(f"--memory {memory!r}: the minimum memory limit is 6 MiB (docker's)")
    pids = 0
    if pids_limit is not None:
        if pids_limit < -1:
            raise ConfigError(f"--pids-limit {pids_limit}: expected a positive number (0 or -1: unlimited)")
        pids = max(pids_limit, 0)
    return Sandbox(ulimits=tuple(parsed.values()), shm_size=shm, memory=mem, pids=pids)




# --- what the host can enforce ------------------------------------------------------------------------


def _mounts(mountinfo: str) -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, super options) of the cgroup mounts in a /proc/self/mountinfo text."""
    out = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        out.append((fields[4], tail[0], set(tail[2].split(","))))
    return out


def missing_controllers(wanted: tuple[str, ...], *, mountinfo: str | None = None,
                        proc_cgroups: str | None = None, rootless: bool | None = None,
                        unified_root: str = "/sys/fs/cgroup") -> dict[str, str]:
    """The controllers of `wanted` ("memory", "pids") this host cannot give a container, each with why.

    cgroup v1 (or hybrid): the controller must be enabled (/proc/cgroups) and mounted as a v1 hierarchy,
    and a rootless build cannot use v1 controllers at all. Pure v2 (/sys/fs/cgroup is cgroup2): it must be
    in the root's cgroup.controllers, and for a rootless build in this process's own cgroup's (systemd
    delegates them to user@UID.service)."""
    if mountinfo is None:
        mountinfo = _read("/proc/self/mountinfo")
    if proc_cgroups is None:
        proc_cgroups = _read("/proc/cgroups")
    if rootless is None:
        from pybuild.rootless import in_userns

        rootless = os.geteuid() != 0 or in_userns()  # in_userns: a rootless build is uid 0 in its namespace
    enabled = {}
    for line in proc_cgroups.splitlines():
        words = line.split()
        if len(words) == 4 and not line.startswith("#"):
            enabled[words[0]] = words[3] == "1"
    mounts = _mounts(mountinfo)
    unified = any(point == unified_root and kind == "cgroup2" for point, kind, _ in mounts)
    out: dict[str, str] = {}
    for name in wanted:
        if enabled.get(name) is False:
            out[name] = f"the {name} cgroup controller is disabled in this kernel (see /proc/cgroups)"
        elif unified:
            have = set(_read(os.path.join(unified_root, "cgroup.controllers")).split())
            if name not in have:
                out[name] = f"the {name} controller is not in {unified_root}/cgroup.controllers"
            elif rootless:
                own = _own_cgroup(unified_root)
                if name not in set(_read(os.path.join(own, "cgroup.controllers")).split()):
                    out[name] = (f"the {name} controller is not delegated to this user ({own}); "
                                 "enable cgroup delegation for the user in systemd")
        elif not any(kind == "cgroup" and name in opts for _, kind, opts in mounts):
            out[name] = f"no cgroup v1 hierarchy with the {name} controller is mounted"
        elif rootless:
            out[name] = f"a rootless build cannot use the cgroup v1 {name} controller (it needs cgroup v2)"
    return out


def _own_cgroup(unified_root: str) -> str:
    for line in _read("/proc/self/cgroup").splitlines():
        if line.startswith("0::"):
            return unified_root + line[3:]
    return unified_root


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def check_host(sandbox: Sandbox) -> None:
    """A one-line ConfigError when the host cannot enforce a limit `sandbox` asks for (never ignored), or
    cannot grant a ulimit (`check_ulimit`)."""
    for item in sandbox.ulimits:
        check_ulimit(item)
    wanted = tuple(name for name, value in (("memory", sandbox.memory), ("pids", sandbox.pids)) if value)
    if not wanted:
        return
    missing = missing_controllers(wanted)
    for name, flag in (("memory", "--memory"), ("pids", "--pids-limit")):
        if name in missing:
            raise ConfigError(f"{flag}: this host cannot enforce it: {missing[name]}")


def check_ulimit(item: tuple[str, int, int], status: str | None = None) -> None:
    """A hard limit above this process's own needs CAP_SYS_RESOURCE (the runtime inherits our
    capabilities), and RLIMIT_NOFILE can never go above /proc/sys/fs/nr_open: say so before anything runs
    rather than let the runtime fail the first RUN with "error setting rlimit"."""
    import resource

    name, _, hard = item
    flag = f"--ulimit {name[len('RLIMIT_'):].lower()}"
    if name == "RLIMIT_NOFILE":
        nr_open = _read("/proc/sys/fs/nr_open").strip()
        if nr_open.isdigit() and hard > int(nr_open):
            raise ConfigError(f"{flag}: the hard limit {hard} is above the kernel's fs.nr_open ({nr_open})")
    which = getattr(resource, name, None)
    if which is None:
        return
    own = resource.getrlimit(which)[1]
    if own == resource.RLIM_INFINITY or hard <= own:
        return
    text = status if status is not None else _read("/proc/self/status")
    effective = 0
    for line in text.splitlines():
        if line.startswith("CapEff:"):
            effective = int(line.split()[1], 16)
    if not effective >> _CAPS.index("SYS_RESOURCE") & 1:
        shown = "unlimited" if hard == UNLIMITED else str(hard)
        raise ConfigError(f"{flag}: the hard limit {shown} is above pybuild's own ({own}), and raising it "
                          "needs CAP_SYS_RESOURCE, which this process lacks")


# --- the spec -------------------------------------------------------------------------------------------


@functools.cache
def swap_accounted(v1_memory: str = "/sys/fs/cgroup/memory") -> bool:
    """Whether a memory limit can cover swap too: on cgroup v1 only where the kernel accounts swap
    (memory.memsw.*; docker warns and leaves swap out otherwise, and runc fails writing a missing file);
    on v2 the runtimes set memory.swap.max and skip it quietly where swap is not accounted."""
    if os.path.isdir(v1_memory):
        return os.path.exists(os.path.join(v1_memory, "memory.memsw.limit_in_bytes"))
    return True


def all_capabilities(status: str | None = None) -> list[str]:
    """Every capability this process's bounding set holds (`CapBnd` of /proc/self/status), as CAP_* names:
    what the runtime can grant (as containerd's privileged mode takes the current capabilities). A
    runtime asked for one outside it fails with "capset: Operation not permitted"."""
    text = status if status is not None else _read("/proc/self/status")
    mask = 0
    for line in text.splitlines():
        if line.startswith("CapBnd:"):
            mask = int(line.split()[1], 16)
    return ["CAP_" + name for bit, name in enumerate(_CAPS) if mask >> bit & 1]


def apply(spec: dict[str, Any], sandbox: Sandbox) -> None:
    """Put `sandbox`'s security mode and limits into `spec` (a `generate_spec` document), in place."""
    process, linux = spec["process"], spec["linux"]
    if sandbox.security == "insecure":
        caps = all_capabilities()
        process["capabilities"] = {"bounding": caps, "effective": caps, "permitted": caps}
        linux["maskedPaths"] = []
        linux["readonlyPaths"] = []
        for mount in spec["mounts"]:
            if mount["destination"] == "/sys":
                mount["options"] = [o for o in mount["options"] if o != "ro"]
    else:
        from pybuild.worker.seccomp import oci_profile

        linux["seccomp"] = oci_profile(process["capabilities"]["bounding"])
    if sandbox.ulimits:
        rlimits = {r["type"]: r for r in process.get("rlimits", ())}
        for name, soft, hard in sandbox.ulimits:
            rlimits[name] = {"type": name, "hard": hard, "soft": soft}
        process["rlimits"] = list(rlimits.values())
    if sandbox.shm_size != DEFAULT_SHM:
        for mount in spec["mounts"]:
            if mount["destination"] == "/dev/shm":
                mount["options"] = [o for o in mount["options"] if not o.startswith("size=")]
                mount["options"].append(f"size={sandbox.shm_size}")
    resources = linux.setdefault("resources", {})
    if sandbox.memory:
        resources["memory"] = {"limit": sandbox.memory}
        if swap_accounted():
            resources["memory"]["swap"] = sandbox.memory
    if sandbox.pids:
        resources["pids"] = {"limit": sandbox.pids}


# --- failures -------------------------------------------------------------------------------------------

_SIGKILL_EXIT = 128 + 9
_FORK_FAILED = ("Resource temporarily unavailable", "can't fork", "Cannot fork", "fork: retry")


def explain_failure(exc: StepFailed, sandbox: Sandbox, exit_code: int | None,
                    tail: tuple[str, ...]) -> str | None:
    """A clearer message for a RUN that failed under a limit, or None when no limit explains it.

    Killed by SIGKILL (exit 137: the runtime's init, or a shell reporting its child) with a memory limit
    set is the cgroup's OOM killer: nothing else in a RUN sends SIGKILL (a cancel or timeout raises its
    own error first). A fork that failed with EAGAIN ("Resource temporarily unavailable") with a pids
    limit set is the pids controller refusing it."""
    if sandbox.memory and exit_code == _SIGKILL_EXIT:
        return f"RUN was killed: out of memory (limit {human_size(sandbox.memory, trim=True)})"
    if sandbox.pids and any(marker in line for line in tail for marker in _FORK_FAILED):
        return f"RUN failed: it reached the pids limit ({sandbox.pids} processes): {exc.message}"
    return None
