"""OCI runtime spec (config.json, runtime-spec 1.0.2) for one RUN step.

Made by the executor for each RUN; read by runc or crun. The defaults follow what BuildKit's OCI worker
generates, which in turn follows docker's defaults:

- process: args/env/cwd from the step, a default PATH when the step's env has none, uid/gid/supplementary
  gids from `users.resolve_user`, no terminal, `noNewPrivileges`, docker's default capability set in the
  bounding, effective and permitted sets (not inheritable or ambient: docker dropped inheritable in 20.10
  for CVE-2022-24769), and RLIMIT_NOFILE. Docker and BuildKit ask for 1048576 open files, which fails where
  the hard limit is lower (20000 on the dev VM) without CAP_SYS_RESOURCE, so we ask for at most our own
  hard limit.
- mounts: docker's /proc, /dev, /dev/pts, /dev/shm, /dev/mqueue and a read-only /sys; then /etc/hosts,
  /etc/resolv.conf and /etc/hostname bind-mounted read-only from the run's bundle directory, so they never
  land in the rootfs's upper layer (runc creates the empty mount-point files; the snapshot diff drops them);
  then the step's RUN --mount `HostMount`s in order.
- namespaces: pid, ipc, uts, mount, and network unless the step shares the host's (`default` joins the
  prepared namespace at `netns_path`).
- masked and read-only paths: docker's defaults.
- devices: runc's and crun's built-in defaults (null, zero, full, random, urandom, tty, plus /dev/ptmx and
  /dev/pts), with a cgroup device rule that denies the rest.
- seccomp: docker's default profile, resolved for the step's capabilities and the host (`seccomp.py`).
  `sandbox.apply` puts it in, with the step's security mode (`RUN --security=insecure`: every capability,
  no seccomp, no masked or read-only paths, /sys writable) and the build's limits (`--ulimit`, `--shm-size`,
  `--memory`, `--pids-limit`).
- cgroupsPath: omitted, so the runtime uses one named after the container id and removes it on delete.

Network modes (`NetworkMode`):
- `none`: a new network namespace with only the loopback interface (the runtime brings `lo` up).
- `host`: the host's network namespace.
- `default`: an isolated network namespace per RUN with outbound access through slirp4netns and no route
  to the host's loopback (`network.py`: the executor passes its `/proc/<pid>/fd/<n>` as `netns_path`;
  without one the RUN gets a new empty namespace, never the host's). /etc/resolv.conf keeps the host's
  nameservers (slirp4netns NATs them), except loopback ones (systemd-resolved's 127.0.0.53), which are
  unreachable from another namespace: they become slirp4netns's DNS forwarder 10.0.2.3, which asks them
  from the host's namespace; with no nameserver at all, the forwarder too.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Sequence
from typing import Any

from pybuild.rootless import in_userns
from pybuild.worker.types import HostMount, NetworkMode, ProcessSpec, Sandbox
from pybuild.worker.users import ResolvedUser

HOSTNAME = "pybuild"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DOCKER_RLIMIT_NOFILE = 1048576
PUBLIC_NAMESERVERS = ("8.8.8.8", "8.8.4.4")
DNS_FORWARDER = "10.0.2.3"  # slirp4netns's built-in DNS forwarder (network.DNS_FORWARDER)

# moby/oci/caps DefaultCapabilities.
DEFAULT_CAPABILITIES = tuple("CAP_" + c for c in (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
    "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
))

# moby/oci/defaults.go.
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

_BASE_MOUNTS: tuple[dict[str, Any], ...] = (
    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
)
_SYS_BIND: dict[str, Any] = {"destination": "/sys", "type": "bind", "source": "/sys",
                             "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}

ETC_FILES = ("hosts", "resolv.conf", "hostname")


def process_env(env: Sequence[str]) -> list[str]:
    """The step's `K=V` env with PATH added (first) when it sets none."""
    if any(item.startswith("PATH=") for item in env):
        return list(env)
    return [f"PATH={DEFAULT_PATH}", *env]


def nofile_limit() -> int:
    """RLIMIT_NOFILE for the container: docker's 1048576, capped at this process's hard limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return DOCKER_RLIMIT_NOFILE if hard == resource.RLIM_INFINITY else min(DOCKER_RLIMIT_NOFILE, hard)


def hosts_file() -> str:
    """/etc/hosts for a RUN container (BuildKit's, with our hostname)."""
    return f"127.0.0.1\tlocalhost {HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def resolv_conf(network: NetworkMode, host_file: str = "/etc/resolv.conf") -> str:
    """/etc/resolv.conf for a RUN container: the host's, minus loopback nameservers unless on `host`.

    A resolver on the host's loopback (systemd-resolved's 127.0.0.53) is not reachable from another
    network namespace. On `default` such lines become slirp4netns's DNS forwarder (`DNS_FORWARDER`,
    which asks the host's resolvers), as it does when no nameserver is left; on `none` they are dropped
    and public resolvers named instead (nothing is reachable there anyway).
    """
    try:
        with open(host_file, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        text = ""
    if network == "host" and "nameserver" in text:
        return text
    kept: list[str] = []
    servers = 0
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["nameserver"] and len(words) > 1:
            if _is_loopback(words[1]):
                if network != "default" or f"nameserver {DNS_FORWARDER}" in kept:
                    continue
                line = f"nameserver {DNS_FORWARDER}"
            servers += 1
        kept.append(line)
    if not servers:
        fallback = (DNS_FORWARDER,) if network == "default" else PUBLIC_NAMESERVERS
        kept.extend(f"nameserver {ip}" for ip in fallback)
    return "\n".join(kept) + "\n"


def _is_loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "0:0:0:0:0:0:0:1")


def write_etc_files(directory: str, network: NetworkMode) -> dict[str, str]:
    """Write hosts, resolv.conf and hostname into `directory`; returns {container path: host path}."""
    contents = {"hosts": hosts_file(), "resolv.conf": resolv_conf(network), "hostname": HOSTNAME + "\n"}
    paths: dict[str, str] = {}
    for name in ETC_FILES:
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(contents[name])
        os.chmod(path, 0o644)
        paths["/etc/" + name] = path
    return paths


def generate_spec(
    *,
    rootfs: str,
    process: ProcessSpec,
    user: ResolvedUser,
    network: NetworkMode = "default",
    netns_path: str = "",
    etc_files: dict[str, str] | None = None,
    mounts: Sequence[HostMount] = (),
    sandbox: Sandbox | None = None,
) -> dict[str, Any]:
    """The config.json document (a dict) for running `process` on `rootfs` (see the module docstring).

    `etc_files` maps container paths (/etc/hosts, ...) to host files to bind read-only, as returned by
    `write_etc_files`. `sandbox` (default: `Sandbox()`) is the security mode and limits (`sandbox.apply`).
    """
    nofile = nofile_limit()
    caps = list(DEFAULT_CAPABILITIES)
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if network == "default" and netns_path:
        namespaces.append({"type": "network", "path": netns_path})
    elif network != "host":
        namespaces.append({"type": "network"})
    all_mounts = [dict(m, options=list(m["options"])) for m in _BASE_MOUNTS]
    if in_userns():  # rootless: sysfs cannot be mounted over the host's network namespace; bind it instead
        all_mounts = [dict(_SYS_BIND, options=list(_SYS_BIND["options"])) if m["destination"] == "/sys" else m
                      for m in all_mounts]
    for destination, source in (etc_files or {}).items():
        all_mounts.append({"destination": destination, "type": "bind", "source": source,
                           "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]})
    for mount in mounts:
        all_mounts.append({"destination": mount.destination, "type": mount.type, "source": mount.source,
                           "options": list(mount.options)})
    spec: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": user.uid, "gid": user.gid, "additionalGids": list(user.additional_gids)},
            "args": list(process.args),
            "env": process_env(process.env),
            "cwd": process.cwd or "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": True,
        },
        "root": {"path": os.path.abspath(rootfs), "readonly": False},
        "hostname": HOSTNAME,
        "mounts": all_mounts,
        "linux": {
            "namespaces": namespaces,
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
    from pybuild.worker import sandbox as sandboxing

    sandboxing.apply(spec, sandbox or Sandbox())
    return spec
