"""The OCI image configuration (and docker's `container.image.v1` twin) as typed, hashable records.

Split out of `spec.py` (documents and descriptors); same conventions: strict reading that names the bad
field, unknown fields kept in `extra`, docker's JSON names and `omitempty` habits on writing, canonical
JSON bytes. Made by the planner (the built image's config) and read by the store and exporters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from pybuild.digest import canonical_json
from pybuild.errors import InternalError
from pybuild.image._json import (
    Ctx,
    Pairs,
    extra_fields,
    kind_of,
    load_object,
    put_extra,
    set_field,
    to_pairs,
    top_object,
)
from pybuild.image.spec import Platform
from pybuild.record import record, replace

__all__ = ["ContainerConfig", "Healthcheck", "History", "ImageConfig", "RootFS", "align_history"]


@record(kw_only=True)
class Healthcheck:
    """Docker's `Healthcheck` (HEALTHCHECK): durations in nanoseconds; `test=("NONE",)` disables it."""

    test: tuple[str, ...] = ()
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Test": list(self.test)} if self.test else {}
        for key, value in (("Interval", self.interval), ("Timeout", self.timeout),
                           ("StartPeriod", self.start_period), ("StartInterval", self.start_interval),
                           ("Retries", self.retries)):
            if value:
                out[key] = value
        return out


def _read_healthcheck(obj: Mapping[str, Any], ctx: Ctx) -> Healthcheck:
    return Healthcheck(test=ctx.str_list(obj, "Test"), interval=ctx.int_(obj, "Interval"),
                       timeout=ctx.int_(obj, "Timeout"), start_period=ctx.int_(obj, "StartPeriod"),
                       start_interval=ctx.int_(obj, "StartInterval"), retries=ctx.int_(obj, "Retries"))


_CONTAINER_FIELDS: Final = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir",
                            "Labels", "StopSignal", "ArgsEscaped", "Healthcheck", "OnBuild", "Shell")


@record(kw_only=True)
class ContainerConfig:
    """The `config` object of an image config: how to run the image (docker's field names in JSON).

    `exposed_ports` ("80/tcp") and `volumes` are sets, kept sorted; `labels` are sorted pairs.
    """

    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    working_dir: str = ""
    labels: Pairs = ()
    stop_signal: str = ""
    args_escaped: bool = False
    healthcheck: Healthcheck | None = None
    on_build: tuple[str, ...] = ()
    shell: tuple[str, ...] = ()
    extra: Pairs = ()

    def __post_init__(self) -> None:
        set_field(self, "exposed_ports", tuple(sorted(set(self.exposed_ports))))
        set_field(self, "volumes", tuple(sorted(set(self.volumes))))
        set_field(self, "labels", to_pairs(self.labels))

    @property
    def labels_dict(self) -> dict[str, str]:
        return dict(self.labels)

    def to_dict(self) -> dict[str, Any]:
        """Docker's JSON: empty fields left out (Go `omitempty`), sets as objects of `{}`."""
        out: dict[str, Any] = {}
        for key, text in (("User", self.user), ("WorkingDir", self.working_dir), ("StopSignal", self.stop_signal)):
            if text:
                out[key] = text
        for key, items in (("Env", self.env), ("Entrypoint", self.entrypoint), ("Cmd", self.cmd),
                           ("OnBuild", self.on_build), ("Shell", self.shell)):
            if items:
                out[key] = list(items)
        if self.exposed_ports:
            out["ExposedPorts"] = {port: {} for port in self.exposed_ports}
        if self.volumes:
            out["Volumes"] = {volume: {} for volume in self.volumes}
        if self.labels:
            out["Labels"] = dict(self.labels)
        if self.args_escaped:
            out["ArgsEscaped"] = True
        if self.healthcheck is not None:
            out["Healthcheck"] = self.healthcheck.to_dict()
        return put_extra(out, self.extra)


def _read_container_config(obj: Mapping[str, Any], ctx: Ctx) -> ContainerConfig:
    raw = obj.get("Healthcheck")
    health = None if raw is None else _read_healthcheck(ctx.obj(raw, "Healthcheck"), ctx.child("Healthcheck"))
    return ContainerConfig(
        user=ctx.str_(obj, "User") or "", exposed_ports=ctx.key_set(obj, "ExposedPorts"),
        env=ctx.str_list(obj, "Env"), entrypoint=ctx.str_list(obj, "Entrypoint", single=True),
        cmd=ctx.str_list(obj, "Cmd", single=True), volumes=ctx.key_set(obj, "Volumes"),
        working_dir=ctx.str_(obj, "WorkingDir") or "", labels=ctx.str_map(obj, "Labels"),
        stop_signal=ctx.str_(obj, "StopSignal") or "", args_escaped=ctx.bool_(obj, "ArgsEscaped"),
        healthcheck=health, on_build=ctx.str_list(obj, "OnBuild"), shell=ctx.str_list(obj, "Shell"),
        extra=extra_fields(obj, _CONTAINER_FIELDS))


@record(kw_only=True)
class History:
    """One `history` entry; `empty_layer` marks a step that made no layer (ENV, CMD, …)."""

    created: str | None = None
    created_by: str = ""
    author: str = ""
    comment: str = ""
    empty_layer: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, text in (("created", self.created), ("created_by", self.created_by),
                          ("author", self.author), ("comment", self.comment)):
            if text:
                out[key] = text
        if self.empty_layer:
            out["empty_layer"] = True
        return out


def _read_history(data: Mapping[str, Any], ctx: Ctx) -> tuple[History, ...]:
    value = data.get("history")
    if value is None:
        return ()
    if not isinstance(value, list):
        ctx.fail("history", f"must be an array, got {kind_of(value)}")
    entries: list[History] = []
    for i, item in enumerate(value):
        key = f"history[{i}]"
        obj, inner = ctx.obj(item, key), ctx.child(key)
        entries.append(History(created=inner.str_(obj, "created"), created_by=inner.str_(obj, "created_by") or "",
                               author=inner.str_(obj, "author") or "", comment=inner.str_(obj, "comment") or "",
                               empty_layer=inner.bool_(obj, "empty_layer")))
    return tuple(entries)


NO_BASE_HISTORY: Final = "pybuild: the base image has no history for this layer"


def align_history(history: Sequence[History], layers: int, base_layers: int) -> tuple[History, ...]:
    """`history` (the base image's entries, then this build's) made to name exactly `layers` layers.

    `history` is optional in an OCI config and nothing forces a base's entries to match its layers, but
    readers pair the non-empty entries with `rootfs.diff_ids` in order. The entries naming the last
    `layers - base_layers` layers are this build's (the planner made them, one per layer: an InternalError
    when they are not there); what the base's part names beyond its `base_layers` layers is marked
    `empty_layer` (BuildKit's exporter does the same), and the layers it leaves unnamed get one placeholder
    entry each (comment NO_BASE_HISTORY) right after its last layer entry. BuildKit's exporter
    appends such entries at the end instead, since it no longer knows where the base ends; here every step of
    the build stays paired with its own layer.
    """
    layered = [i for i, entry in enumerate(history) if not entry.empty_layer]
    new = layers - base_layers
    if new < 0 or len(layered) < new:
        raise InternalError(f"the image history names {len(layered)} layers but the image has {layers}, "
                            f"{new} of them made by this build")
    named = len(layered) - new  # layer entries of the base's part
    if named == base_layers:
        return tuple(history)
    split = layered[named - 1] + 1 if named else 0
    base, own = list(history[:split]), tuple(history[split:])
    if named > base_layers:
        for i in layered[base_layers:named]:
            base[i] = replace(base[i], empty_layer=True)
    else:
        base += [History(comment=NO_BASE_HISTORY)] * (base_layers - named)
    return (*base, *own)


@record(kw_only=True)
class RootFS:
    """The `rootfs` of an image config: the uncompressed digests (diff IDs) of the layers, bottom first."""

    type: str = "layers"
    diff_ids: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "diff_ids": list(self.diff_ids)}


def _read_rootfs(data: Mapping[str, Any], ctx: Ctx) -> RootFS:
    if data.get("rootfs") is None:
        ctx.fail("rootfs", "is required")
    obj, inner = ctx.obj(data["rootfs"], "rootfs"), ctx.child("rootfs")
    kind = inner.req_str(obj, "type")
    if kind != "layers":
        inner.fail("type", f"must be 'layers', got {kind!r}")
    diff_ids = inner.str_list(obj, "diff_ids")
    for i, diff_id in enumerate(diff_ids):
        inner.digest({f"diff_ids[{i}]": diff_id}, f"diff_ids[{i}]")
    return RootFS(type=kind, diff_ids=diff_ids)


_IMAGE_FIELDS: Final = ("created", "author", "architecture", "os", "os.version", "os.features", "variant",
                        "config", "rootfs", "history")


@record(kw_only=True)
class ImageConfig:
    """An image config (OCI `application/vnd.oci.image.config.v1+json`, docker's container image JSON).

    Made by the converter (one per final stage) and updated by the exporters; read from pulled images.
    `created` is an RFC 3339 string (see `format_rfc3339`).
    """

    architecture: str
    os: str
    created: str | None = None
    author: str | None = None
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = ()
    config: ContainerConfig = ContainerConfig()
    rootfs: RootFS = RootFS()
    history: tuple[History, ...] = ()
    extra: Pairs = ()

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant, self.os_version, self.os_features)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os,
                               "config": self.config.to_dict(), "rootfs": self.rootfs.to_dict()}
        for key, text in (("created", self.created), ("author", self.author), ("variant", self.variant),
                          ("os.version", self.os_version)):
            if text:
                out[key] = text
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.history:
            out["history"] = [entry.to_dict() for entry in self.history]
        return put_extra(out, self.extra)

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: object) -> ImageConfig:
        """Read an image config (StoreError naming the field when invalid)."""
        ctx = Ctx("image config")
        obj = top_object(data, ctx)
        raw = obj.get("config")
        config = ContainerConfig() if raw is None else _read_container_config(ctx.obj(raw, "config"),
                                                                               ctx.child("config"))
        return cls(architecture=ctx.req_str(obj, "architecture"), os=ctx.req_str(obj, "os"),
                   created=ctx.str_(obj, "created"), author=ctx.str_(obj, "author"),
                   variant=ctx.str_(obj, "variant"), os_version=ctx.str_(obj, "os.version"),
                   os_features=ctx.str_list(obj, "os.features"), config=config,
                   rootfs=_read_rootfs(obj, ctx), history=_read_history(obj, ctx),
                   extra=extra_fields(obj, _IMAGE_FIELDS))

    @classmethod
    def from_bytes(cls, data: bytes) -> ImageConfig:
        """Read an image config from JSON bytes (StoreError when invalid)."""
        return cls.from_dict(load_object(data, "image config"))


