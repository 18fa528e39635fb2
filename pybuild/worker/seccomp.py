"""Docker's default seccomp profile, resolved into the OCI runtime-spec form (`linux.seccomp`) for one RUN.

Made for `spec.generate_spec`; only imported when a RUN step runs (a fully cached rebuild never makes a
spec, so never reads the profile).

The profile is `data/seccomp-default.json`: docker 20.10.24's `profiles/seccomp/default.json` (Apache-2.0,
see `data/NOTICE`). It is docker's format, not the runtime's: an `archMap` instead of `architectures`, and
rules that hold only under conditions (`includes` / `excludes` on capabilities, architectures and a minimum
kernel version). `oci_profile` resolves them as docker does when it makes a container's spec:

- architectures: the host's native seccomp architecture and its sub-architectures from `archMap`
  (x86_64 also gets x86 and x32, so 32-bit binaries are filtered too rather than refused wholesale);
- a rule is dropped when the host architecture is in `excludes.arches`, when the step has any capability
  of `excludes.caps` (in its bounding set), or when the kernel is at least `excludes.minKernel`;
- a rule is dropped when `includes.arches` is set and lacks the host architecture, when the step lacks
  any capability of `includes.caps`, or when the kernel is older than `includes.minKernel`;
- what is left keeps its names, action, `errnoRet` and argument filters.

So with docker's default capabilities, `mount`, `unshare`, `setns`, `bpf` and the other calls the profile
ties to CAP_SYS_ADMIN (and friends) fall to the default action, EPERM; calls the profile never lists
(`keyctl`, `add_key`, ...) too. One change to docker's rules: without CAP_SYS_PTRACE, ptrace's
PTRACE_ATTACH and PTRACE_SEIZE are refused (`_without_ptrace_attach`). The JSON is read and each (capabilities, arch, kernel) resolution made
once per process (`functools.cache`); callers get a fresh copy of the dict to put in the spec.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import platform
from collections.abc import Collection
from typing import Any

from pybuild.errors import InternalError

PROFILE = os.path.join(os.path.dirname(__file__), "data", "seccomp-default.json")

# uname's machine → the Go GOARCH names the profile's `arches` use, and the seccomp architecture.
_ARCHES: dict[str, tuple[str, str]] = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "armv7l": ("arm", "SCMP_ARCH_ARM"),
    "armv6l": ("arm", "SCMP_ARCH_ARM"),
    "i686": ("386", "SCMP_ARCH_X86"),
    "i386": ("386", "SCMP_ARCH_X86"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"),
    "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
    "mips64": ("mips64", "SCMP_ARCH_MIPS64"),
}


def host_arch() -> tuple[str, str]:
    """(GOARCH name, seccomp architecture) of this host."""
    machine = platform.machine()
    try:
        return _ARCHES[machine]
    except KeyError:
        raise InternalError(f"no seccomp architecture known for machine {machine!r}") from None


def kernel_version(release: str | None = None) -> tuple[int, int]:
    """(major, minor) of the running kernel (or of `release`, as `uname -r` prints it)."""
    text = release if release is not None else platform.release()
    parts: list[int] = []
    for piece in text.split(".")[:2]:
        digits = ""
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        parts.append(int(digits) if digits else 0)
    while len(parts) < 2:
        parts.append(0)
    return parts[0], parts[1]


@functools.cache
def _load() -> dict[str, Any]:
    with open(PROFILE, "rb") as handle:
        data: dict[str, Any] = json.loads(handle.read())
    return data


def oci_profile(capabilities: Collection[str], *, arch: tuple[str, str] | None = None,
                kernel: tuple[int, int] | None = None) -> dict[str, Any]:
    """`linux.seccomp` for a process whose bounding set is `capabilities` (a fresh dict: the caller may
    change it). `arch` and `kernel` default to the host's."""
    resolved = _resolve(frozenset(capabilities), arch or host_arch(), kernel or kernel_version())
    return copy.deepcopy(resolved)


@functools.cache
def _resolve(caps: frozenset[str], arch: tuple[str, str], kernel: tuple[int, int]) -> dict[str, Any]:
    profile = _load()
    goarch, native = arch
    architectures: list[str] = []
    for entry in profile.get("archMap", ()):
        if entry["architecture"] == native:
            architectures = [native, *entry.get("subArchitectures", ())]
    out: dict[str, Any] = {"defaultAction": profile["defaultAction"]}
    if "defaultErrnoRet" in profile:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    if architectures:
        out["architectures"] = architectures
    syscalls: list[dict[str, Any]] = []
    for rule in profile["syscalls"]:
        if _applies(rule, caps, goarch, kernel):
            syscalls.append(_oci_rule(rule))
    if "CAP_SYS_PTRACE" not in caps:
        syscalls = _without_ptrace_attach(syscalls)
    out["syscalls"] = syscalls
    return out


# pybuild's one change to docker's profile: without CAP_SYS_PTRACE a RUN cannot attach to a process that is
# already running (PTRACE_ATTACH, PTRACE_SEIZE: EPERM). Docker allows ptrace(2) whole on kernels >= 4.8;
# tracing a child the tracer starts (PTRACE_TRACEME, then options that follow its forks) keeps working, so
# `strace CMD` and `gdb CMD` in a RUN still do. libseccomp lets an unconditional allow win over a
# conditional errno for the same call, so the allow is replaced by allows of every other request value:
# below 16, above 0x4206, and the values between as aligned blocks (`(request & mask) == start`).
_PTRACE_ATTACH, _PTRACE_SEIZE = 16, 0x4206
_ALL = (1 << 64) - 1


def _without_ptrace_attach(syscalls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = [r for r in syscalls if not (r["names"] == ["ptrace"] and r["action"] == "SCMP_ACT_ALLOW"
                                       and not r.get("args"))]
    if len(out) == len(syscalls):
        return syscalls  # the profile did not allow ptrace here (older kernel): nothing to narrow
    allow = [("SCMP_CMP_LT", _PTRACE_ATTACH, 0), ("SCMP_CMP_GT", _PTRACE_SEIZE, 0)]
    allow += [("SCMP_CMP_MASKED_EQ", _ALL ^ (size - 1), start)
              for start, size in _aligned_blocks(_PTRACE_ATTACH + 1, _PTRACE_SEIZE)]
    for op, value, value_two in allow:
        arg: dict[str, Any] = {"index": 0, "value": value, "op": op}
        if op == "SCMP_CMP_MASKED_EQ":
            arg["valueTwo"] = value_two
        out.append({"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "args": [arg]})
    return out


def _aligned_blocks(start: int, stop: int) -> list[tuple[int, int]]:
    """[start, stop) as the fewest blocks (begin, size) with size a power of two dividing begin."""
    blocks = []
    while start < stop:
        size = start & -start if start else 1 << 63
        while start + size > stop:
            size //= 2
        blocks.append((start, size))
        start += size
    return blocks


def _applies(rule: dict[str, Any], caps: frozenset[str], goarch: str, kernel: tuple[int, int]) -> bool:
    excludes = rule.get("excludes") or {}
    includes = rule.get("includes") or {}
    if goarch in (excludes.get("arches") or ()):
        return False
    if any(cap in caps for cap in excludes.get("caps") or ()):
        return False
    if excludes.get("minKernel") and kernel >= kernel_version(excludes["minKernel"]):
        return False
    if includes.get("arches") and goarch not in includes["arches"]:
        return False
    if any(cap not in caps for cap in includes.get("caps") or ()):
        return False
    if includes.get("minKernel") and kernel < kernel_version(includes["minKernel"]):
        return False
    return True


def _oci_rule(rule: dict[str, Any]) -> dict[str, Any]:
    names = list(rule.get("names") or ([rule["name"]] if rule.get("name") else []))
    out: dict[str, Any] = {"names": names, "action": rule["action"]}
    if rule.get("errnoRet") is not None:
        out["errnoRet"] = rule["errnoRet"]
    args = []
    for arg in rule.get("args") or ():
        item = {"index": arg["index"], "value": arg["value"], "op": arg["op"]}
        if arg.get("valueTwo"):
            item["valueTwo"] = arg["valueTwo"]
        args.append(item)
    if args:
        out["args"] = args
    return out
