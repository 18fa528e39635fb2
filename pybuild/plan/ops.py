"""Ops of a build plan and the `Plan` itself.

An op is a frozen record naming one step of the build: a source (base image, scratch, build context) or
a change to a filesystem (RUN → `ExecOp`, COPY/ADD/WORKDIR → `FileOp`). Ops refer to their inputs by
digest, so the plan is a DAG keyed by digest and can be dumped to JSON and diffed.

An op's `digest` is the sha256 of the canonical JSON (`digest.key_json`: bytes that are not UTF-8 hashed as
themselves) of its definition: its kind and every field except
`spans` (where it came from in the Dockerfile) and `proxy_env` (the predefined proxy args, which BuildKit
keeps out of cache keys, too). Two identical steps (two stages on one base) are one op with both spans.

Metadata-only instructions (ENV, CMD, LABEL, ...) are not ops: they change the image config and add a
history entry with `empty_layer: true`; what a RUN sees of them (env, user, cwd) is part of its ExecOp.

Made by `pybuild.plan.convert`; read by the solver and the worker.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from pybuild.digest import key_json, sha256_digest
from pybuild.image.config import ImageConfig
from pybuild.record import fields, record, replace
from pybuild.source import Span

__all__ = [
    "ContextSourceOp", "ExecOp", "FileOp", "FileSource", "ImageSourceOp", "MountSpec", "Op", "Plan",
    "ScratchOp", "op_inputs",
]

_NOT_HASHED = frozenset({"spans", "proxy_env"})


def _jsonable(value: object, hashed: bool = False) -> Any:
    """`value` as JSON values; with `hashed`, without the fields a nested record keeps for messages only
    (its `unhashed` class attribute)."""
    if isinstance(value, tuple | list):
        return [_jsonable(item, hashed) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item, hashed) for key, item in value.items()}
    if hasattr(value, "__record_fields__"):
        skip: frozenset[str] = getattr(value, "unhashed", frozenset()) if hashed else frozenset()
        return {name: _jsonable(getattr(value, name), hashed) for name in fields(value) if name not in skip}
    return value


class _OpBase:
    """Shared behaviour of ops: `definition()` (what is hashed) and `digest`."""

    __slots__ = ()
    kind: ClassVar[str]

    def definition(self) -> dict[str, Any]:
        """The op's kind and hashed fields as JSON values (no spans, no proxy env)."""
        out: dict[str, Any] = {"kind": self.kind}
        for name in fields(self):
            if name not in _NOT_HASHED:
                out[name] = _jsonable(getattr(self, name), hashed=True)
        return out

    def encoded(self) -> bytes:
        """The canonical JSON of `definition()` that `digest` hashes (`key_json`: lossless)."""
        return key_json(self.definition())

    @property
    def digest(self) -> str:
        """`sha256:` digest of `encoded()`."""
        return sha256_digest(self.encoded())

    def to_dict(self) -> dict[str, Any]:
        """Every field (the definition plus spans, proxy env and names), for `Plan.to_json`."""
        out: dict[str, Any] = {"kind": self.kind}
        for name in fields(self):
            out[name] = _jsonable(getattr(self, name))
        return out


@record(kw_only=True)
class ImageSourceOp(_OpBase):
    """A base image from the local store (`FROM ref`, `COPY --from=ref`)."""

    kind: ClassVar[str] = "image"
    ref: str
    platform: str
    spans: tuple[Span, ...] = ()


@record(kw_only=True)
class ScratchOp(_OpBase):
    """The empty filesystem (`FROM scratch`)."""

    kind: ClassVar[str] = "scratch"
    spans: tuple[Span, ...] = ()


@record(kw_only=True)
class ContextSourceOp(_OpBase):
    """The files of the build context that match `includes` and not `excludes` (one per COPY/ADD/bind)."""

    kind: ClassVar[str] = "context"
    name: str = "context"
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    spans: tuple[Span, ...] = ()


@record(kw_only=True)
class MountSpec:
    """One `RUN --mount` with every value expanded; `input` is the digest of its source op ('' = none).

    `from_ref` is the `from=` value (expanded) as the Dockerfile names the stage or image, for messages;
    it is not hashed (`from=0` and `from=build` of one stage are one mount)."""

    unhashed: ClassVar[frozenset[str]] = frozenset({"from_ref"})
    type: str
    target: str
    input: str = ""
    source: str = ""
    readonly: bool = True
    id: str = ""
    sharing: str = ""
    required: bool = False
    size: int = 0
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    env: str | None = None
    from_ref: str = ""


@record(kw_only=True)
class ExecOp(_OpBase):
    """A RUN: run `args` on a copy of `input`'s filesystem and keep the changes.

    `args` is the final argv: heredocs are already folded in by the planner (BuildKit's rules, see
    `convert._Converter.run_op`). `script` is set only for a shebang heredoc (`RUN <<EOF` + `#!...`): its
    body, which the worker writes to a mode-0755 file mounted read-only at `args[0]` (`/dev/pipes/<name>`)
    and runs without a shell. `env` is what the process sees (ENV, then the stage's ARGs ENV does not
    override, then a default PATH); `build_args` names the ARGs in it, for history. `proxy_env` holds
    predefined proxy args: passed to the process, never hashed.
    """

    kind: ClassVar[str] = "exec"
    input: str
    args: tuple[str, ...]
    env: tuple[str, ...]
    user: str = ""
    cwd: str = "/"
    network: str = "default"
    security: str = "sandbox"
    mounts: tuple[MountSpec, ...] = ()
    build_args: tuple[str, ...] = ()
    script: str = ""
    platform: str = ""
    proxy_env: tuple[str, ...] = ()
    spans: tuple[Span, ...] = ()


@record(kw_only=True)
class FileSource:
    """Where a COPY/ADD reads from: the op `input` (context, stage or image) and the paths in it.

    `from_ref` is the `--from` value (expanded) as the Dockerfile names the stage or image ('' for the
    context), for messages; it is not hashed."""

    unhashed: ClassVar[frozenset[str]] = frozenset({"from_ref"})
    input: str
    paths: tuple[str, ...]
    from_ref: str = ""


@record(kw_only=True)
class FileOp(_OpBase):
    """COPY, ADD or WORKDIR's mkdir on `input`.

    `action` is `copy`, `add` or `mkdir-workdir`. `contents` holds heredoc sources as (name, data);
    `urls` holds ADD's remote sources.
    """

    kind: ClassVar[str] = "file"
    input: str
    action: str
    dest: str
    source: FileSource | None = None
    contents: tuple[tuple[str, str], ...] = ()
    urls: tuple[str, ...] = ()
    chown: str = ""
    chmod: str = ""
    link: bool = False
    parents: bool = False
    excludes: tuple[str, ...] = ()
    checksum: str = ""
    keep_git_dir: bool = False
    unpack: bool | None = None
    cwd: str = "/"
    user: str = ""
    spans: tuple[Span, ...] = ()


Op = ImageSourceOp | ScratchOp | ContextSourceOp | ExecOp | FileOp
"""Any op of a plan."""


def op_inputs(op: Op) -> tuple[str, ...]:
    """The digests `op` depends on, in a stable order."""
    if isinstance(op, ExecOp):
        return (op.input, *(m.input for m in op.mounts if m.input))
    if isinstance(op, FileOp):
        return (op.input,) + ((op.source.input,) if op.source is not None else ())
    return ()


def merge_spans(op: Op, spans: tuple[Span, ...]) -> Op:
    """`op` with `spans` added, in file order (same digest: spans are not hashed)."""
    extra = tuple(span for span in spans if span not in op.spans)
    if not extra:
        return op
    merged = sorted(op.spans + extra, key=lambda s: (s.file, s.line, s.col))
    return replace(op, spans=tuple(merged))


@record(kw_only=True)
class Plan:
    """What `convert()` returns: the op DAG of the target stage, its image config, and warnings.

    `ops` is in dependency order (inputs first). `target` is the digest of the target stage's last op;
    `stages` maps each planned stage (by name, or index when unnamed) to its last op. `layers` lists the
    target's ops whose changes become image layers, matching its non-empty history entries after the
    base image's. `image` has the base's rootfs and history followed by this build's history.
    """

    ops: Mapping[str, Op]
    target: str
    stages: Mapping[str, str]
    layers: tuple[str, ...]
    image: ImageConfig
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "ops": {digest: op.to_dict() for digest, op in self.ops.items()},
            "target": self.target,
            "stages": dict(self.stages),
            "layers": list(self.layers),
            "image": self.image.to_dict(),
            "warnings": list(self.warnings),
        }

    def to_json(self) -> str:
        """Indented, key-sorted JSON of the whole plan (stable, for tests and diffs)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False)
