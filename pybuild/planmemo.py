"""The memoised plan: a rebuild of an unchanged Dockerfile skips parsing and planning.

Who uses it: `pybuild.api`. A cached no-op rebuild must start fast (the build issue's target is 0.15 s of
wall time, process start included), and parsing + typed stages + conversion import most of the frontend.
So the plan, with the step names and stage membership derived from the stages, is kept in the store under
`plans/<key>` (pickle; the store is as trusted as the code) and used when the key matches.

The key covers everything the plan is a function of: the Dockerfile's bytes and name, the build args,
the target, the platform, the labels, SOURCE_DATE_EPOCH, the pybuild version and the modification times of
the frontend and planner sources (so a code change can never serve a stale plan). Base images are the one
input read from the store: the memo records the manifest digest each image source resolved to and is used
only while they all still resolve the same.

A memo that cannot be read or does not match is ignored (and rewritten after planning); writes are atomic
(temp file + rename), so concurrent builds can at worst both write the same plan.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Mapping

from pybuild.atomic import write_atomic
from pybuild.plan.ops import Plan
from pybuild.record import record
from pybuild.version import __version__

__all__ = ["PlanMemo", "load_memo", "memo_key", "save_memo"]

_VERSION = 1
_CODE = ("dockerfile/parser.py", "dockerfile/scanner.py", "dockerfile/words.py", "dockerfile/heredoc.py",
         "dockerfile/instructions.py", "dockerfile/commands.py", "dockerfile/flags.py", "dockerfile/mounts.py",
         "dockerfile/shell.py", "dockerfile/shell_pattern.py", "dockerfile/glob.py", "plan/convert.py",
         "plan/convert_args.py", "plan/convert_config.py", "plan/ops.py", "digest.py", "image/config.py",
         "planmemo.py", "ops/__init__.py", "ops/base.py", "ops/naming.py", "ops/image.py", "ops/scratch.py",
         "ops/context.py", "ops/exec.py", "ops/file.py")


@record
class PlanMemo:
    """A plan and what the build needs of the stages besides it.

    `names`: digest → progress name; `stages_of`: digest → the labels and indexes of the stages whose
    instructions made the op (for `--no-cache-filter`); `bases`: (reference, manifest digest or None)
    of every image source, as resolved when the plan was made.
    """

    plan: Plan
    names: Mapping[str, str]
    stages_of: Mapping[str, tuple[str, ...]]
    bases: tuple[tuple[str, str | None], ...]


def _code_stamp() -> str:
    root = os.path.dirname(os.path.abspath(__file__))
    parts = [__version__]
    for rel in _CODE:
        try:
            parts.append(str(os.stat(os.path.join(root, rel)).st_mtime_ns))
        except OSError:
            parts.append("-")
    return ",".join(parts)


def memo_key(dockerfile: bytes, name: str, build_args: Mapping[str, str], target: str | None, platform: str,
             labels: Mapping[str, str], epoch: int | None) -> str:
    """The memo key of one build's planning inputs (hex)."""
    h = hashlib.sha256()
    for part in (str(_VERSION), _code_stamp(), name, repr(sorted(build_args.items())), repr(target), platform,
                 repr(sorted(labels.items())), repr(epoch)):
        h.update(part.encode("utf-8", "surrogateescape") + b"\0")
    h.update(dockerfile)
    return h.hexdigest()


def _path(store_root: str, key: str) -> str:
    return os.path.join(store_root, "plans", key)


def load_memo(store_root: str, key: str) -> PlanMemo | None:
    """The memo stored under `key`, or None (missing, unreadable or from another layout)."""
    try:
        with open(_path(store_root, key), "rb") as f:
            memo = pickle.load(f)
    except Exception:  # noqa: BLE001 - a damaged or foreign file is a miss: planning again is always right
        return None
    return memo if isinstance(memo, PlanMemo) else None


def save_memo(store_root: str, key: str, memo: PlanMemo) -> None:
    """Store `memo` under `key`; failures are ignored (the memo is only a shortcut)."""
    path = _path(store_root, key)
    data = pickle.dumps(memo, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomic(path, data, mode=0o644)
    except OSError:
        pass
