"""OCI image-spec v1.1 documents (and their docker v2 schema 2 twins) as typed, hashable records.

Who makes them: the converter (image config), the exporters (manifests, indexes), the registry client and
the store (documents read back, through `from_bytes`). Who uses them: everything that writes or reads an
image.

Each document type has `to_dict()` / `from_dict()`, and manifests, indexes and configs also `to_bytes()` /
`from_bytes()`. Reading is strict about the fields the spec requires and about every field's JSON type: a
bad document is a StoreError naming the field (`invalid manifest: field 'layers[1].size' must be a
non-negative integer, got string`). Unknown fields are kept in `extra` (name → canonical JSON text, so the
record stays hashable) and written back, so a round trip loses nothing that matters.

Writing follows docker/BuildKit: JSON names exactly as they spell them (capitalised inside the container
`config`), and optional fields left out when empty, as Go's `omitempty` does, so `docker inspect` and
`skopeo inspect` show what they expect. `to_bytes()` is `canonical_json` (see `pybuild.digest`): the same
document always gives the same bytes. A document read from elsewhere must be addressed by the digest of
its original bytes, never of `to_bytes()` (key order and whitespace differ).

Mappings (annotations, labels) are stored as sorted tuples of `(key, value)` pairs, sets (exposed ports,
volumes) as sorted tuples; records sort them on construction, so equal documents compare equal.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from typing import Any, Final, Literal

from pybuild.digest import canonical_json, sha256_digest
from pybuild.errors import ConfigError, StoreError
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
from pybuild.record import record

__all__ = [
    "DOCKER_CONFIG", "DOCKER_FOREIGN_LAYER_GZIP", "DOCKER_LAYER", "DOCKER_LAYER_GZIP", "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST", "EMPTY_DESCRIPTOR", "EMPTY_JSON", "OCI_CONFIG", "OCI_EMPTY", "OCI_INDEX",
    "OCI_LAYER", "OCI_LAYER_GZIP", "OCI_LAYER_ZSTD", "OCI_MANIFEST", "OCI_NONDIST_LAYER_GZIP",
    "INDEX_TYPES", "LAYER_TYPES", "MANIFEST_TYPES", "Compression", "Descriptor",
    "Index", "Manifest", "Pairs", "Platform",
    "format_rfc3339", "host_platform", "layer_compression", "layer_media_type", "normalize_platform",
    "parse_document", "parse_platform", "source_date_epoch", "to_descriptor", "to_docker_media_type",
    "to_oci_media_type", "to_pairs",
]

# ---------------------------------------------------------------------------------------------- media types

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD: Final = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_NONDIST_LAYER: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_NONDIST_LAYER_GZIP: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_EMPTY: Final = "application/vnd.oci.empty.v1+json"

DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER: Final = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER_GZIP: Final = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_TYPES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES: Final = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})

Compression = Literal["gzip", "zstd", "uncompressed"]

_LAYER_COMPRESSION: Final[dict[str, Compression]] = {
    OCI_LAYER: "uncompressed", OCI_LAYER_GZIP: "gzip", OCI_LAYER_ZSTD: "zstd",
    OCI_NONDIST_LAYER: "uncompressed", OCI_NONDIST_LAYER_GZIP: "gzip",
    DOCKER_LAYER: "uncompressed", DOCKER_LAYER_GZIP: "gzip", DOCKER_FOREIGN_LAYER_GZIP: "gzip",
}
LAYER_TYPES: Final = frozenset(_LAYER_COMPRESSION)

_OCI_TO_DOCKER: Final[dict[str, str]] = {
    OCI_MANIFEST: DOCKER_MANIFEST, OCI_INDEX: DOCKER_MANIFEST_LIST, OCI_CONFIG: DOCKER_CONFIG,
    OCI_LAYER: DOCKER_LAYER, OCI_LAYER_GZIP: DOCKER_LAYER_GZIP, OCI_NONDIST_LAYER_GZIP: DOCKER_FOREIGN_LAYER_GZIP,
}
_DOCKER_TO_OCI: Final[dict[str, str]] = {v: k for k, v in _OCI_TO_DOCKER.items()}
_LAYER_TYPE: Final[dict[tuple[Compression, bool], str]] = {
    ("uncompressed", True): OCI_LAYER, ("gzip", True): OCI_LAYER_GZIP, ("zstd", True): OCI_LAYER_ZSTD,
    ("uncompressed", False): DOCKER_LAYER, ("gzip", False): DOCKER_LAYER_GZIP,
}


def to_docker_media_type(media_type: str) -> str:
    """The docker v2 schema 2 media type for an OCI one (docker exporter, `oci-mediatypes=false`).

    Docker types and types with no docker twin (attestations, artifacts) come back unchanged; a zstd layer
    is a ConfigError, since docker has no zstd layer type.
    """
    if media_type == OCI_LAYER_ZSTD:
        raise ConfigError("zstd-compressed layers need OCI media types",
                          hint="use compression=gzip, or oci-mediatypes=true")
    return _OCI_TO_DOCKER.get(media_type, media_type)


def to_oci_media_type(media_type: str) -> str:
    """The OCI media type for a docker v2 schema 2 one; other types come back unchanged."""
    return _DOCKER_TO_OCI.get(media_type, media_type)


def layer_media_type(compression: str, *, oci: bool = True) -> str:
    """The layer media type for `compression` ("gzip" | "zstd" | "uncompressed") in OCI or docker form."""
    if compression not in ("gzip", "zstd", "uncompressed"):
        raise ConfigError(f"unknown layer compression: {compression!r} (use gzip, zstd or uncompressed)")
    found = _LAYER_TYPE.get((compression, oci))  # type: ignore[arg-type]
    if found is None:
        raise ConfigError("zstd-compressed layers need OCI media types",
                          hint="use compression=gzip, or oci-mediatypes=true")
    return found


def layer_compression(media_type: str) -> Compression:
    """The compression of a layer media type; StoreError if it is not a known layer type."""
    try:
        return _LAYER_COMPRESSION[media_type]
    except KeyError:
        raise StoreError(f"not a layer media type: {media_type!r}") from None


# -------------------------------------------------------------------------------------------------- platform

_OS_RE: Final = re.compile(r"[a-z0-9_]+")
_ARCH_RE: Final = re.compile(r"[a-z0-9_]+")

# uname machine → GOARCH-style (architecture, variant), as containerd's platforms package reports.
_MACHINES: Final[dict[str, tuple[str, str | None]]] = {
    "x86_64": ("amd64", None), "amd64": ("amd64", None), "x86-64": ("amd64", None),
    "aarch64": ("arm64", None), "arm64": ("arm64", None), "armv8b": ("arm64", None),
    "armv8l": ("arm", "v8"), "armv7l": ("arm", "v7"), "armv7": ("arm", "v7"), "armhf": ("arm", "v7"),
    "armv6l": ("arm", "v6"), "armel": ("arm", "v6"), "armv5l": ("arm", "v5"), "armv5tel": ("arm", "v5"),
    "i386": ("386", None), "i486": ("386", None), "i586": ("386", None), "i686": ("386", None),
    "x86": ("386", None), "ppc64le": ("ppc64le", None), "ppc64": ("ppc64", None), "s390x": ("s390x", None),
    "riscv64": ("riscv64", None), "mips64": ("mips64", None), "mips64el": ("mips64le", None),
    "loongarch64": ("loong64", None),
}


@record
class Platform:
    """An image platform (`linux/arm64`, `linux/arm/v7`), as in an index entry or an image config."""

    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        return out

    @classmethod
    def from_dict(cls, data: object) -> Platform:
        """Read a descriptor's `platform` object (StoreError when invalid)."""
        ctx = Ctx("platform")
        return _read_platform(top_object(data, ctx), ctx)


def _read_platform(obj: Mapping[str, Any], ctx: Ctx) -> Platform:
    return Platform(ctx.req_str(obj, "os"), ctx.req_str(obj, "architecture"), ctx.str_(obj, "variant"),
                    ctx.str_(obj, "os.version"), ctx.str_list(obj, "os.features"))


def normalize_platform(value: Platform) -> Platform:
    """containerd's normalisation: lower-case; `aarch64`→`arm64` (variant v8 dropped), `x86_64`→`amd64`
    (variant v1 dropped), `armhf`→`arm/v7`, `arm` without variant → `arm/v7`, variant `7` → `v7`."""
    arch, variant = value.architecture.lower(), (value.variant or "").lower() or None
    mapped, default_variant = _MACHINES.get(arch, (arch, None))
    if mapped != arch or default_variant:
        arch, variant = mapped, variant or default_variant
    if variant is not None and variant.isdigit():
        variant = "v" + variant
    if arch == "arm64" and variant in ("v8", "v8.0"):
        variant = None
    elif arch == "amd64" and variant == "v1":
        variant = None
    elif arch == "arm" and variant is None:
        variant = "v7"
    return Platform(value.os.lower(), arch, variant, value.os_version, value.os_features)


def parse_platform(text: str) -> Platform:
    """`os/arch[/variant]` → a normalised Platform (`linux/aarch64` → linux/arm64); ConfigError when bad."""
    parts = text.strip().lower().split("/")
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise ConfigError(f"invalid platform {text!r}: expected os/arch[/variant] (like linux/amd64)")
    if _OS_RE.fullmatch(parts[0]) is None or _ARCH_RE.fullmatch(parts[1]) is None:
        raise ConfigError(f"invalid platform {text!r}: unexpected characters")
    if len(parts) == 3 and _ARCH_RE.fullmatch(parts[2]) is None:
        raise ConfigError(f"invalid platform {text!r}: bad variant {parts[2]!r}")
    return normalize_platform(Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else None))


def _machine() -> str:
    """What `platform.machine()` says on Linux, without importing `platform` (start-up time)."""
    return os.uname().machine


def host_platform() -> Platform:
    """The platform of this machine: linux plus GOARCH-style architecture (x86_64 → amd64, armv7l → arm/v7)."""
    machine = _machine().lower()
    arch, variant = _MACHINES.get(machine, (machine, None))
    return Platform("linux", arch, variant)


# ------------------------------------------------------------------------------------------------ descriptor


@record
class Descriptor:
    """A pointer to a blob: media type, digest, size, plus optional annotations, platform, urls.

    Made by the store and the exporters for every blob they write; read from manifests and indexes.
    """

    media_type: str
    digest: str
    size: int
    annotations: Pairs = ()
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    artifact_type: str | None = None
    extra: Pairs = ()

    def __post_init__(self) -> None:
        set_field(self, "annotations", to_pairs(self.annotations))

    @property
    def annotations_dict(self) -> dict[str, str]:
        return dict(self.annotations)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_dict()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return put_extra(out, self.extra)

    @classmethod
    def from_dict(cls, data: object) -> Descriptor:
        """Read a descriptor object (StoreError naming the field when invalid)."""
        return _read_descriptor(data, Ctx("descriptor"))


_DESCRIPTOR_FIELDS: Final = ("mediaType", "digest", "size", "urls", "annotations", "platform", "artifactType")


def _read_descriptor(data: object, ctx: Ctx) -> Descriptor:
    obj = top_object(data, ctx)
    raw = obj.get("platform")
    platform = None if raw is None else _read_platform(ctx.obj(raw, "platform"), ctx.child("platform"))
    return Descriptor(ctx.req_str(obj, "mediaType"), ctx.digest(obj, "digest"),
                      ctx.int_(obj, "size", required=True), ctx.str_map(obj, "annotations"), platform,
                      ctx.str_list(obj, "urls"), ctx.str_(obj, "artifactType"), extra_fields(obj, _DESCRIPTOR_FIELDS))


def _read_descriptors(data: Mapping[str, Any], key: str, ctx: Ctx) -> tuple[Descriptor, ...]:
    value = data.get(key)
    if not isinstance(value, list):
        ctx.fail(key, "is required" if value is None else f"must be an array, got {kind_of(value)}")
    return tuple(_read_child(item, f"{key}[{i}]", ctx) for i, item in enumerate(value))


def _read_child(data: object, key: str, ctx: Ctx) -> Descriptor:
    if not isinstance(data, dict):
        ctx.fail(key, f"must be an object, got {kind_of(data)}")
    return _read_descriptor(data, ctx.child(key))


def _read_optional_child(data: Mapping[str, Any], key: str, ctx: Ctx) -> Descriptor | None:
    return None if data.get(key) is None else _read_child(data[key], key, ctx)


def to_descriptor(media_type: str, data: bytes, *, platform: Platform | None = None,
                  annotations: Mapping[str, str] | None = None) -> Descriptor:
    """The descriptor of the blob `data` (sha256 digest and size)."""
    return Descriptor(media_type, sha256_digest(data), len(data), to_pairs(annotations or {}), platform)


EMPTY_JSON: Final = b"{}"
EMPTY_DESCRIPTOR: Final = to_descriptor(OCI_EMPTY, EMPTY_JSON)
"""The OCI empty descriptor (`{}`), the config of artifacts that have none."""


# --------------------------------------------------------------------------------------- manifest and index


def _schema_version(data: Mapping[str, Any], ctx: Ctx) -> int:
    version = ctx.int_(data, "schemaVersion", required=True)
    if version != 2:
        ctx.fail("schemaVersion", f"must be 2, got {version}")
    return version


def _media_type(data: Mapping[str, Any], ctx: Ctx, allowed: frozenset[str], default: str) -> str:
    value = ctx.str_(data, "mediaType") or default
    if value not in allowed:
        ctx.fail("mediaType", f"must be one of {', '.join(sorted(allowed))}, got {value!r}")
    return value


def _document_dict(doc: Manifest | Index, body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"schemaVersion": doc.schema_version, "mediaType": doc.media_type, **body}
    if doc.artifact_type:
        out["artifactType"] = doc.artifact_type
    if doc.subject is not None:
        out["subject"] = doc.subject.to_dict()
    if doc.annotations:
        out["annotations"] = dict(doc.annotations)
    return put_extra(out, doc.extra)


@record
class Manifest:
    """An image manifest (OCI or docker v2 schema 2): one config and ordered layers.

    Made by the exporters; read by the registry client and the store.
    """

    config: Descriptor
    layers: tuple[Descriptor, ...]
    media_type: str = OCI_MANIFEST
    annotations: Pairs = ()
    schema_version: int = 2
    subject: Descriptor | None = None
    artifact_type: str | None = None
    extra: Pairs = ()

    def __post_init__(self) -> None:
        set_field(self, "annotations", to_pairs(self.annotations))

    @property
    def annotations_dict(self) -> dict[str, str]:
        return dict(self.annotations)

    def to_dict(self) -> dict[str, Any]:
        body = {"config": self.config.to_dict(), "layers": [layer.to_dict() for layer in self.layers]}
        return _document_dict(self, body)

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: object) -> Manifest:
        ctx = Ctx("manifest")
        obj = top_object(data, ctx)
        if obj.get("config") is None:
            ctx.fail("config", "is required")
        return cls(_read_child(obj["config"], "config", ctx), _read_descriptors(obj, "layers", ctx),
                   _media_type(obj, ctx, MANIFEST_TYPES, OCI_MANIFEST), ctx.str_map(obj, "annotations"),
                   _schema_version(obj, ctx), _read_optional_child(obj, "subject", ctx),
                   ctx.str_(obj, "artifactType"), extra_fields(obj, _MANIFEST_FIELDS))

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Read a manifest from JSON bytes (StoreError when invalid)."""
        return cls.from_dict(load_object(data, "manifest"))


_COMMON_FIELDS: Final = ("schemaVersion", "mediaType", "artifactType", "subject", "annotations")
_MANIFEST_FIELDS: Final = (*_COMMON_FIELDS, "config", "layers")
_INDEX_FIELDS: Final = (*_COMMON_FIELDS, "manifests")


@record
class Index:
    """An image index (OCI) or manifest list (docker): manifests for several platforms, or attestations."""

    manifests: tuple[Descriptor, ...]
    media_type: str = OCI_INDEX
    annotations: Pairs = ()
    schema_version: int = 2
    subject: Descriptor | None = None
    artifact_type: str | None = None
    extra: Pairs = ()

    def __post_init__(self) -> None:
        set_field(self, "annotations", to_pairs(self.annotations))

    @property
    def annotations_dict(self) -> dict[str, str]:
        return dict(self.annotations)

    def to_dict(self) -> dict[str, Any]:
        return _document_dict(self, {"manifests": [m.to_dict() for m in self.manifests]})

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: object) -> Index:
        ctx = Ctx("index")
        obj = top_object(data, ctx)
        return cls(_read_descriptors(obj, "manifests", ctx), _media_type(obj, ctx, INDEX_TYPES, OCI_INDEX),
                   ctx.str_map(obj, "annotations"), _schema_version(obj, ctx),
                   _read_optional_child(obj, "subject", ctx), ctx.str_(obj, "artifactType"),
                   extra_fields(obj, _INDEX_FIELDS))

    @classmethod
    def from_bytes(cls, data: bytes) -> Index:
        """Read an index from JSON bytes (StoreError when invalid)."""
        return cls.from_dict(load_object(data, "index"))


def parse_document(data: bytes) -> Manifest | Index:
    """Read a manifest or an index, told apart by `mediaType` (or, without one, by `manifests`)."""
    obj = load_object(data, "manifest or index")
    media_type = obj.get("mediaType")
    if media_type in INDEX_TYPES or (media_type is None and "manifests" in obj):
        return Index.from_dict(obj)
    if media_type in MANIFEST_TYPES or media_type is None:
        return Manifest.from_dict(obj)
    raise StoreError(f"invalid manifest or index: unsupported mediaType {media_type!r}")


# ------------------------------------------------------------------------------------------ reproducibility


def format_rfc3339(seconds: int) -> str:
    """Seconds since the epoch as RFC 3339 UTC, as docker writes `created`: `2024-01-02T03:04:05Z`."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def source_date_epoch(environ: Mapping[str, str] | None = None) -> int | None:
    """`SOURCE_DATE_EPOCH` (reproducible-builds.org) from the environment: None when unset or empty,
    ConfigError when it is not a non-negative integer."""
    value = (os.environ if environ is None else environ).get("SOURCE_DATE_EPOCH", "")
    if not value:
        return None
    if not value.isascii() or not value.isdigit():
        raise ConfigError(f"invalid SOURCE_DATE_EPOCH {value!r}: must be an integer (seconds since 1970)")
    return int(value)
