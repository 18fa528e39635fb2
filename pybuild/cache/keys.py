"""Cache keys: what a build step does, what it starts from and what it reads → `sha256:…`.

Who makes a `CacheKeyInput`: the solver, from a plan op (this module does not import the planner: every
field is a plain value). Who uses the key: the cache index (`index.py`) and, later, the remote cache.

A key covers, in canonical JSON (`digest.key_json`: bytes that are not UTF-8, in a RUN line, a value or a
file name, are hashed as themselves, so two different byte strings never share a key) under a version tag:

- `kind`: `exec`, `file`, `source`, … (the op type);
- `definition`: what the step does. For RUN: command, env, user, workdir, mounts, network, security and
  the build args the step actually uses (`build_args`, see `select_build_args`);
- `inputs`: the keys of the steps it starts from, in order;
- `content`: `(path, checksum)` of exactly the context files a COPY/ADD selects, in selection order
  (order matters: a later source overwrites an earlier one). Checksums are content checksums from
  `context/checksum.py` (never mtimes: there is no field where a time could go).

Normalisation that protects the key whatever the caller passes (so a mistake upstream cannot leak a
secret into a key or spoil cache hits):

- proxy build args (`HTTP_PROXY`, `http_proxy`, …) are dropped from `build_args`: BuildKit documents them
  as predefined args that never invalidate the cache (they are not in the build history either);
- a `secret` or `ssh` mount keeps only its identity and placement fields (`id`, `target`, `required`,
  `mode`, `uid`, `gid`, `env`, …); any other field (a value, a host path) is dropped. Secrets are keyed by
  id only, so changing a secret's value does not invalidate the cache (as in BuildKit).

`step_id` (stage and instruction position or text hash) names the step for `explain.py`; it is not part
of the key, so the same step in two stages shares a cache entry.

`describe()` is the JSON-able form stored beside each cache entry for explain. It hides the values of
secret-looking build args (names like `*_TOKEN`, `PASSWORD`; the rule of BuildKit's
SecretsUsedInArgOrEnv check) behind a digest, so the index never holds them in clear.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from pybuild.digest import key_json, sha256_digest
from pybuild.errors import InternalError
from pybuild.record import record

__all__ = ["KEY_VERSION", "PROXY_ARGS", "CacheKeyInput", "cache_key", "content_from", "describe",
           "is_secret_name", "select_build_args"]

KEY_VERSION: Final = "pybuild-cache-v1"

# BuildKit: predefined proxy args are excluded from the cache key and from the image history.
PROXY_ARGS: Final = frozenset({"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY",
                               "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"})

# Fields a secret/ssh mount may contribute to a key: identity and placement, never content or host paths.
_SECRET_MOUNT_FIELDS: Final = frozenset({"type", "id", "target", "dst", "destination", "required", "mode",
                                         "uid", "gid", "env"})

# BuildKit's SecretsUsedInArgOrEnv rule: these words (as parts of the name) look secret, unless "public".
_SECRET_WORDS: Final = re.compile(r"(?i)(?:^|[_\W])(apikey|auth|credentials?|key|passwd|password|pword|"
                                  r"secret|token)(?:$|[_\W])")
_PUBLIC: Final = re.compile(r"(?i)(?:^|[_\W])public(?:$|[_\W])")


@record
class CacheKeyInput:
    """Everything a step's cache key depends on (see the module docstring for each field)."""

    kind: str
    definition: Mapping[str, Any]
    inputs: tuple[str, ...] = ()
    content: tuple[tuple[str, str], ...] = ()
    step_id: str = ""


def is_secret_name(name: str) -> bool:
    """Does a build arg or env name look like it holds a secret (`API_TOKEN`, `db_password`, `KEY`)?"""
    return _SECRET_WORDS.search(name) is not None and _PUBLIC.search(name) is None


def select_build_args(args: Mapping[str, str], used: Iterable[str]) -> dict[str, str]:
    """The build args a step actually uses (`used`: the variables its instruction matched), without the
    proxy args: the `build_args` value of a definition."""
    return {name: args[name] for name in sorted(set(used)) if name in args and name not in PROXY_ARGS}


def content_from(checksums: Mapping[str, bytes]) -> tuple[tuple[str, str], ...]:
    """`(path, checksum)` pairs from `context.checksum_paths()` output, in its order (`xxh3:<hex>`, the
    form `context.checksum.hex_checksum` shows)."""
    return tuple((path, "xxh3:" + value.hex()) for path, value in checksums.items())


def cache_key(item: CacheKeyInput) -> str:
    """The cache key of a step: `sha256:<hex>` of canonical JSON of its normalised input."""
    return sha256_digest(key_json(_keyed(item)))


def describe(item: CacheKeyInput) -> dict[str, Any]:
    """The JSON-able description stored with a cache entry (for `explain.explain_miss`); holds its key."""
    definition = dict(_normalise_definition(item.definition))
    args = definition.get("build_args")
    if isinstance(args, dict):
        definition["build_args"] = {name: _shown_arg(name, value) for name, value in args.items()}
    return {"version": KEY_VERSION, "key": cache_key(item), "step_id": item.step_id, "kind": item.kind,
            "definition": definition, "inputs": list(item.inputs),
            "content": [list(pair) for pair in item.content]}


def _shown_arg(name: str, value: object) -> object:
    if is_secret_name(name):
        return {"hidden": sha256_digest(key_json([KEY_VERSION, name, value]))}
    return value


def _keyed(item: CacheKeyInput) -> dict[str, Any]:
    _check(item)
    return {"version": KEY_VERSION, "kind": item.kind, "definition": _normalise_definition(item.definition),
            "inputs": list(item.inputs), "content": [list(pair) for pair in item.content]}


def _check(item: CacheKeyInput) -> None:
    if not item.kind:
        raise InternalError("cache key input without a kind")
    for parent in item.inputs:
        if not isinstance(parent, str):
            raise InternalError(f"cache key input: parent key is not a string: {parent!r}")
    seen: set[str] = set()
    for pair in item.content:
        if len(pair) != 2 or not all(isinstance(part, str) for part in pair):
            raise InternalError(f"cache key input: content must be (path, checksum) strings: {pair!r}")
        if pair[0] in seen:
            raise InternalError(f"cache key input: path listed twice in content: {pair[0]!r}")
        seen.add(pair[0])


def _normalise_definition(definition: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(definition)
    args = out.get("build_args")
    if isinstance(args, Mapping):
        out["build_args"] = {k: v for k, v in args.items() if k not in PROXY_ARGS}
    mounts = out.get("mounts")
    if isinstance(mounts, (list, tuple)):
        out["mounts"] = [_normalise_mount(m) for m in mounts]
    return out


def _normalise_mount(mount: object) -> object:
    if isinstance(mount, Mapping) and mount.get("type") in ("secret", "ssh"):
        return {k: v for k, v in mount.items() if k in _SECRET_MOUNT_FIELDS}
    return mount
