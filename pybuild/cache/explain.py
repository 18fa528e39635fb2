"""Why did a step miss the cache? Plain-words reasons, from the descriptions stored with cache entries.

Used by `pybuild build --explain-cache` (through `pybuild.solve.runner`): for a step that missed,
`explain_miss` takes its `keys.describe()` output, finds the most similar entry recorded for the same `step_id` (fewest
differences; the most recently used on a tie) and lists what differs: a context file's checksum (by
path), a build arg (by name; the value only when the name does not look secret), the instruction
(command, env, user, …), a parent key ("a previous step changed"). The messages are lower-case facts, one
per difference, files capped at `MAX_FILES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Protocol

from pybuild.cache.keys import KEY_VERSION, is_secret_name

__all__ = ["EntrySource", "MAX_FILES", "diff_descriptions", "explain_miss"]

MAX_FILES: Final = 20

# Definition fields that hold the instruction's own text, shown as "the instruction changed".
_TEXT_FIELDS: Final = frozenset({"command", "cmd", "args", "text", "instruction", "script", "heredocs"})


class EntrySource(Protocol):
    """Where earlier descriptions come from (`CacheIndex` is one)."""

    def entries_for_step(self, step_id: str, limit: int = ...) -> list[Any]: ...


def explain_miss(description: Mapping[str, Any], index: EntrySource) -> list[str]:
    """Reasons why the step described by `description` (from `keys.describe`) missed the cache."""
    step_id = str(description.get("step_id", ""))
    if not step_id:
        return ["this step has no step id, so it cannot be compared with earlier builds"]
    key = description.get("key")
    earlier = [d for d in (e.described() for e in index.entries_for_step(step_id)) if d.get("key") != key]
    if not earlier:
        return [f"no earlier build of this step ({step_id}) is in the cache"]
    best = min(enumerate(earlier), key=lambda pair: (len(diff_descriptions(pair[1], description)), pair[0]))
    reasons = diff_descriptions(best[1], description)
    return reasons or ["the cache key changed, but no difference in the step was found"]


def diff_descriptions(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What changed from description `old` to `new`, as messages (empty when nothing did)."""
    if old.get("version") != new.get("version"):
        return [f"the cache key format changed ({old.get('version')} → {new.get('version', KEY_VERSION)})"]
    reasons: list[str] = []
    if old.get("kind") != new.get("kind"):
        reasons.append(f"the step's kind changed ({old.get('kind')} → {new.get('kind')})")
    reasons += _diff_definition(_mapping(old.get("definition")), _mapping(new.get("definition")))
    reasons += _diff_inputs(list(old.get("inputs") or ()), list(new.get("inputs") or ()))
    reasons += _diff_content(_pairs(old.get("content")), _pairs(new.get("content")))
    return reasons


def _diff_definition(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    reasons: list[str] = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if name == "build_args":
            reasons += _diff_args(_mapping(before), _mapping(after))
        elif name == "env":
            args = set(_mapping(old.get("build_args"))) | set(_mapping(new.get("build_args")))
            reasons += _diff_env(_env(before), _env(after), skip=args)
        elif name in _TEXT_FIELDS:
            reasons.append(f"the instruction changed ({name})")
        else:
            reasons.append(f"the step's {name} changed")
    return reasons


def _diff_args(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    reasons: list[str] = []
    for name in sorted(set(old) | set(new)):
        if name not in old:
            reasons.append(f"build arg {name} is now used")
        elif name not in new:
            reasons.append(f"build arg {name} is no longer used")
        elif old[name] != new[name]:
            if is_secret_name(name) or isinstance(old[name], dict) or isinstance(new[name], dict):
                reasons.append(f"build arg {name} changed")
            else:
                reasons.append(f"build arg {name} changed from {old[name]!r} to {new[name]!r}")
    return reasons


def _env(value: object) -> Mapping[str, Any]:
    """An env as a mapping, whether described as one or as a `["K=V", ...]` list (a RUN's env)."""
    if isinstance(value, (list, tuple)):
        return dict(str(item).partition("=")[::2] for item in value)
    return _mapping(value)


def _diff_env(old: Mapping[str, Any], new: Mapping[str, Any], skip: set[str] | None = None) -> list[str]:
    """Env differences; names in `skip` (build args, reported by `_diff_args`) are left out."""
    reasons: list[str] = []
    for name in sorted((set(old) | set(new)) - (skip or set())):
        if name not in old:
            reasons.append(f"environment variable {name} was added")
        elif name not in new:
            reasons.append(f"environment variable {name} was removed")
        elif old[name] != new[name]:
            reasons.append(f"environment variable {name} changed")
    return reasons


def _diff_inputs(old: list[Any], new: list[Any]) -> list[str]:
    if old == new:
        return []
    if len(old) != len(new):
        return [f"the step's inputs changed ({len(old)} → {len(new)})"]
    changed = [i for i, (a, b) in enumerate(zip(old, new)) if a != b]
    if len(new) == 1:
        return ["a previous step changed"]
    return [f"a previous step changed (input {', '.join(str(i + 1) for i in changed)})"]


def _diff_content(old: list[tuple[str, str]], new: list[tuple[str, str]]) -> list[str]:
    before, after = dict(old), dict(new)
    files: list[str] = []
    for path, checksum in new:
        if path not in before:
            files.append(f"{_what(path)} added: {path}")
        elif before[path] != checksum:
            files.append(f"{_what(path)} changed: {path}")
    files += [f"{_what(path)} removed: {path}" for path, _ in old if path not in after]
    # The selection's own checksum ("" in the content) and directories' checksums change with any file
    # below them: name them only when no file explains the change (a selection too big to list).
    specific = [line for line in files if line.startswith("file ")]
    files = specific or [line for line in files if not line.endswith(": ")] or files
    if not files and old != new:
        return ["the order of the copied files changed"]
    if len(files) > MAX_FILES:
        files = files[:MAX_FILES] + [f"… and {len(files) - MAX_FILES} more files"]
    return files


def _what(path: str) -> str:
    """Content entries: `""` is the whole selection, a trailing `/` marks a directory, else a file."""
    if not path:
        return "the selected files"
    return "directory" if path.endswith("/") else "file"


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _pairs(value: object) -> list[tuple[str, str]]:
    if not isinstance(value, (list, tuple)):
        return []
    return [(str(p[0]), str(p[1])) for p in value if isinstance(p, (list, tuple)) and len(p) == 2]
