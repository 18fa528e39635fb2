"""Build secrets: the `--secret` flag and the in-memory store RUN `--mount=type=secret` reads from.

`parse_secret_flag` follows buildx's `--secret` syntax (one CSV record of key=value fields):

    id=NAME[,src|source=FILE][,env=VAR][,type=file|env]

* `type=env` with `src=X` means the environment variable X (buildx moves `src` to `env`).
* With neither `src` nor `env`, BuildKit's secrets provider looks for an environment variable named like the
  id, and otherwise a file named like the id (`--secret id=TOKEN` reads `$TOKEN` when it is set).

`SecretStore.from_flags` reads every value once, when the build starts (a missing file or variable is a
`ConfigError` naming the flag). The store never shows a value: its repr lists ids only, and error messages
here name ids, paths and variable names, never contents.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from pybuild.errors import ConfigError
from pybuild.record import record

_KEYS = ("type", "id", "src", "source", "env")


@record(kw_only=True)
class SecretSpec:
    """One parsed `--secret` flag (no value: only where to read it from). Made by `parse_secret_flag`."""

    id: str
    src: str = ""
    """A file to read the value from ('' = none)."""
    env: str = ""
    """An environment variable to read the value from ('' = none)."""
    flag: str = ""
    """The flag as written, for error messages (it holds names and paths, never a value)."""


def parse_secret_flag(text: str, environ: Mapping[str, str] | None = None) -> SecretSpec:
    """Parse one `--secret` value; `environ` (default `os.environ`) settles the bare `id=X` form."""
    from pybuild.specparse import CsvError, split_csv

    environ = os.environ if environ is None else environ
    try:
        fields = split_csv(text)
    except CsvError as exc:
        raise ConfigError(f"--secret {text}: failed to parse csv mounts: {exc}") from None
    values: dict[str, str] = {}
    kind = ""
    for item in fields:
        key, has_value, value = item.partition("=")
        key = key.strip().lower()
        if not has_value:
            raise ConfigError(f"--secret {text}: invalid field '{item}' must be a key=value pair")
        if key not in _KEYS:
            raise ConfigError(f"--secret {text}: unexpected key '{key}' in '{item}'")
        if key == "type":
            if value not in ("file", "env"):
                raise ConfigError(f'--secret {text}: unsupported secret type "{value}"')
            kind = value
            continue
        values["src" if key == "source" else key] = value
    return _finish_spec(text, values, kind, environ)


def _finish_spec(text: str, values: dict[str, str], kind: str, environ: Mapping[str, str]) -> SecretSpec:
    secret_id, src, env = values.get("id", ""), values.get("src", ""), values.get("env", "")
    if kind == "env" and not env:
        src, env = "", src
    if not secret_id:
        raise ConfigError(f"--secret {text}: secret ID missing")
    if not src and not env:
        # BuildKit's secretsprovider: an environment variable named like the id wins over a file.
        if secret_id in environ:
            env = secret_id
        else:
            src = secret_id
    return SecretSpec(id=secret_id, src=src, env=env, flag=text)


class SecretStore:
    """Secret values by id, held in memory for one build. Made by `from_flags`; read by `worker.mounts`.

    repr/str show the ids only; pickling is refused so a value cannot leave the process by accident.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, bytes] | None = None) -> None:
        self._values: dict[str, bytes] = dict(values or {})

    @classmethod
    def from_flags(cls, flags: Iterable[str], environ: Mapping[str, str] | None = None) -> SecretStore:
        """Parse and read every `--secret` flag (a later flag with the same id wins, as in buildx)."""
        environ = os.environ if environ is None else environ
        values: dict[str, bytes] = {}
        for flag in flags:
            spec = parse_secret_flag(flag, environ)
            values[spec.id] = read_secret(spec, environ)
        return cls(values)

    def get(self, secret_id: str) -> bytes | None:
        """The value of `secret_id`, or None when the build was given no such secret."""
        return self._values.get(secret_id)

    def ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._values))

    def __contains__(self, secret_id: object) -> bool:
        return secret_id in self._values

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"SecretStore(ids={list(self.ids())!r}, values=<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a SecretStore cannot be pickled (it holds secret values)")


def read_secret(spec: SecretSpec, environ: Mapping[str, str] | None = None) -> bytes:
    """Read the value a spec points at; ConfigError naming the flag (never the value) when it is missing."""
    environ = os.environ if environ is None else environ
    if spec.env:
        if spec.env in environ:
            return environ[spec.env].encode("utf-8", "surrogateescape")
        if not spec.src:
            raise ConfigError(f"--secret {spec.flag}: environment variable {spec.env} is not set")
    try:
        with open(spec.src, "rb") as handle:
            return handle.read()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"--secret {spec.flag}: cannot read secret file {spec.src}: {reason.lower()}",
            hint="pass an existing file with src=PATH or a variable with env=NAME",
        ) from None
