"""Entitlements: what the person running a build grants its Dockerfile beyond the sandbox (`--allow`).

Who uses it: `cli/buildcmd.py` parses `--allow` (`parse_allow`); `api.py` checks the plan once it is made,
before any step runs (`check_plan`), so a build that needs an entitlement it was not given stops with one
line and nothing ran; `worker/dispatch.py` checks again before it starts a RUN (`require`).

As BuildKit (and buildx's `--allow`):
- `network.host`: `--network host` (the build flag, for the RUN steps that set no network of their own)
  and `RUN --network=host`;
- `security.insecure`: `RUN --security=insecure` (every capability, no seccomp, no masked paths).
The flag is repeatable and takes comma-separated lists. BuildKit's message is "network.host is not
allowed"; ours names the flag that asked for it and hints at `--allow`. The entitlements are not in any
cache key (BuildKit: they gate the build, they are not part of the op); the security and network modes
are, being in the RUN's op definition.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from pybuild.errors import ConfigError, UserError
from pybuild.plan.ops import ExecOp, Op

ENTITLEMENTS = ("network.host", "security.insecure")


def parse_allow(values: Iterable[str]) -> frozenset[str]:
    """`--allow` values (each may be a comma-separated list) → the set of entitlements."""
    out: set[str] = set()
    for value in values:
        for item in value.split(","):
            name = item.strip()
            if not name:
                continue
            if name not in ENTITLEMENTS:
                raise ConfigError(f"--allow {value}: unknown entitlement {name!r}",
                                  hint="one of " + ", ".join(ENTITLEMENTS))
            out.add(name)
    return frozenset(out)


def require(name: str, allow: Collection[str], what: str, op: Op | None = None) -> None:
    """A one-line UserError when `name` is not in `allow`; `what` names the flag that needs it."""
    if name in allow:
        return
    span = op.spans[0] if op is not None and op.spans else None
    raise UserError(f"{what}: {name} is not allowed", span=span, hint=f"pass --allow {name} to grant it")


def check_plan(ops: Mapping[str, Op], needed: Iterable[str], allow: Collection[str], network: str) -> None:
    """Every entitlement the build's RUN steps need is granted: those of `needed` (the digests of the ops
    the target needs, in order). A RUN's own `--network=host` or `--security=insecure` is named by its
    Dockerfile line; a RUN that gets the host's network from the build's `--network host` names that flag.
    As BuildKit, a build that runs no RUN needs no entitlement."""
    for digest in needed:
        op = ops[digest]
        if not isinstance(op, ExecOp):
            continue
        if op.network == "host":
            require("network.host", allow, "RUN --network=host", op)
        elif op.network == "default" and network == "host":
            require("network.host", allow, "--network host")
        if op.security == "insecure":
            require("security.insecure", allow, "RUN --security=insecure", op)
