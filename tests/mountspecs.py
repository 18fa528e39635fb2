"""`--mount` text as the plan's `MountSpec`, the form the worker's `prepare_mounts` takes (for the mount tests).

The spec is parsed as the frontend parses it, then carried over field by field with no planner defaults
(cache ids, sharing, secret ids and relative targets are `prepare_mounts`' to fill in); `from=` becomes
`from_ref`, the label the test's `stage_rootfs` resolves.
"""

from __future__ import annotations

from pybuild.dockerfile.mounts import parse_mount
from pybuild.plan.ops import MountSpec


def mount_spec(text: str) -> MountSpec:
    mount = parse_mount(text)
    return MountSpec(type=mount.type, target=mount.target, source=mount.source, readonly=mount.readonly,
                     id=mount.id, sharing=mount.sharing, required=mount.required, size=mount.size,
                     mode=mount.mode, uid=mount.uid, gid=mount.gid, env=mount.env, from_ref=mount.from_)
