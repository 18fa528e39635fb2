"""`RUN --mount=...` specs, parsed with BuildKit's rules and error messages.

A spec is one CSV record of `key=value` fields (`type=cache,target=/root/.cache,sharing=locked`).
`parse_mount` returns a `Mount`. The planner calls it again with an expander once build args are known:
BuildKit expands every value except `from`, which must be literal. Without an expander, a field whose
value holds a `$` is left for that later pass and the Mount is marked `deferred`.

Defaults follow BuildKit: the type is `bind`; bind, secret and ssh mounts are read-only unless `rw` is
given, cache and tmpfs mounts are writable.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pybuild.dockerfile.flags import with_suggestion
from pybuild.errors import DockerfileError
from pybuild.record import record, replace
from pybuild.specparse import CsvError, split_csv

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
SHARING_MODES = ("shared", "private", "locked")
_ALL_KEYS = (
    "type", "from", "source", "target", "readonly", "id", "sharing", "required", "size", "mode", "uid",
    "gid", "src", "dst", "destination", "ro", "rw", "readwrite", "env",
)
_FILE_INFO_TYPES = ("secret", "ssh", "cache")
_GO_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
             "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}

Expander = Callable[[str], str]


@record(kw_only=True)
class Mount:
    """One parsed `--mount` spec (BuildKit's `instructions.Mount`)."""

    spec: str
    """The spec as written, for re-parsing after expansion."""
    type: str = "bind"
    from_: str = ""
    source: str = ""
    target: str = ""
    readonly: bool = True
    id: str = ""
    sharing: str = ""
    """`shared`, `private`, `locked` or '' (cache mounts; the planner defaults '' to shared)."""
    required: bool = False
    size: int = 0
    """tmpfs size limit in bytes (0 = no limit)."""
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    env: str | None = None
    """For secrets: the environment variable to expose it as."""
    deferred: bool = False
    """True when some value holds a `$` and must be parsed again after expansion."""


def parse_mount(spec: str, expand: Expander | None = None) -> Mount:
    """Parse one `--mount` value; DockerfileError with BuildKit's wording when it is invalid."""
    mount = Mount(spec=spec)
    ro_auto = True
    for item in _split(spec):
        key, has_value, value = item.partition("=")
        key = key.lower()
        if not has_value:
            mount, explicit = _apply_flag_word(mount, key, item)
            ro_auto = ro_auto and not explicit
            continue
        if expand is not None:
            value = expand(value)
        elif key == "from" and _has_variable(value):
            raise DockerfileError(f"'{key}' doesn't support variable expansion, define alias stage instead")
        elif "$" in value:
            mount = replace(mount, deferred=True)
            continue
        if key in ("readonly", "ro", "readwrite", "rw"):
            ro_auto = False
        mount = _apply_field(mount, key, value, item)
    return _finish(mount, ro_auto)


def _has_variable(value: str) -> bool:
    # BuildKit: a `$` anywhere but at the very end starts a variable.
    index = value.find("$")
    return index != -1 and index != len(value) - 1


def _apply_flag_word(mount: Mount, key: str, item: str) -> tuple[Mount, bool]:
    """A field without `=`; the bool says whether it settled read-only-ness explicitly."""
    if key in ("readonly", "ro"):
        return replace(mount, readonly=True), True
    if key in ("readwrite", "rw"):
        return replace(mount, readonly=False), True
    if key == "required":
        _require_type(mount, key, ("secret", "ssh"))
        return replace(mount, required=True), False
    raise DockerfileError(f"invalid field '{item}' must be a key=value pair")


def _apply_field(mount: Mount, key: str, value: str, item: str) -> Mount:
    if key == "type":
        if value.lower() not in MOUNT_TYPES:
            message = f'unsupported mount type "{value}"'
            raise DockerfileError(with_suggestion(message, value, MOUNT_TYPES, case_sensitive=True))
        return replace(mount, type=value.lower())
    if key in _STRING_FIELDS:
        changes: dict[str, Any] = {_STRING_FIELDS[key]: value}
        return replace(mount, **changes)
    if key in ("readonly", "ro"):
        return replace(mount, readonly=_go_bool(key, value))
    if key in ("readwrite", "rw"):
        return replace(mount, readonly=not _go_bool(key, value))
    if key == "required":
        _require_type(mount, key, ("secret", "ssh"))
        return replace(mount, required=_go_bool(key, value))
    if key == "size":
        _require_type(mount, key, ("tmpfs",))
        return replace(mount, size=parse_ram_size(value, key))
    if key == "sharing":
        if value.lower() not in SHARING_MODES:
            raise DockerfileError(f'unsupported sharing value "{value}"')
        return replace(mount, sharing=value.lower())
    if key in ("mode", "uid", "gid"):
        number: dict[str, Any] = {key: _parse_uint(value, 8 if key == "mode" else 10, key)}
        return replace(mount, **number)
    message = f"unexpected key '{key}' in '{item}'"
    raise DockerfileError(with_suggestion(message, key, _ALL_KEYS, case_sensitive=True))


_STRING_FIELDS = {
    "from": "from_", "source": "source", "src": "source", "target": "target", "dst": "target",
    "destination": "target", "id": "id", "env": "env",
}


def _require_type(mount: Mount, key: str, types: tuple[str, ...]) -> None:
    # Order matters as in BuildKit: `type=` must come before options that depend on it.
    if mount.type not in types:
        raise DockerfileError(f"unexpected key '{key}' for mount type '{mount.type}'")


def _go_bool(key: str, value: str) -> bool:
    if value not in _GO_BOOLS:
        raise DockerfileError(f"invalid value for {key}: {value}")
    return _GO_BOOLS[value]


def _parse_uint(value: str, base: int, key: str) -> int:
    # Go's strconv.ParseUint(value, base, 32): digits only, no sign, no underscores.
    digits = "01234567" if base == 8 else "0123456789"
    if not value or any(ch not in digits for ch in value) or int(value, base) > 0xFFFFFFFF:
        raise DockerfileError(f"invalid value {value} for {key}")
    return int(value, base)


_RAM = re.compile(r"^(\d+(?:\.\d+)?) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_RAM_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_ram_size(value: str, key: str = "size") -> int:
    """Bytes in a size like `64m`, `1.5GiB`, `1024` (docker/go-units `RAMInBytes`, binary units)."""
    match = _RAM.match(value)
    if match is None:
        raise DockerfileError(f"invalid value for {key}: {value}")
    number, unit = match.group(1), (match.group(2) or "").lower()
    return int(float(number) * _RAM_UNITS[unit])


def _finish(mount: Mount, ro_auto: bool) -> Mount:
    if mount.type not in _FILE_INFO_TYPES:
        for name in ("mode", "uid", "gid"):
            if getattr(mount, name) is not None:
                raise DockerfileError(f'{name} not allowed for "{mount.type}" type mounts')
    if ro_auto:
        mount = replace(mount, readonly=mount.type not in ("cache", "tmpfs"))
    if mount.sharing and mount.type != "cache":
        raise DockerfileError(f"invalid cache sharing set for {mount.type} mount")
    if mount.type == "secret":
        _check_secret(mount)
    return mount


def _check_secret(mount: Mount) -> None:
    if mount.from_:
        raise DockerfileError("secret mount should not have a from")
    if mount.sharing:
        raise DockerfileError("secret mount should not define sharing")
    if not mount.deferred and not (mount.source or mount.target or mount.id or mount.env is not None):
        raise DockerfileError("invalid secret mount. one of source, target required")
    if mount.source and mount.id:
        raise DockerfileError("both source and id can't be set")


def _split(spec: str) -> list[str]:
    """The fields of a `--mount` value (`specparse.split_csv`), with BuildKit's error wording."""
    try:
        return split_csv(spec)
    except CsvError as exc:
        raise DockerfileError(f"failed to parse csv mounts: {exc}") from None
