"""Parse `-o/--output` specs, spelled like `docker buildx build --output`.

    type=oci,dest=out.tar[,tar=false][,name=app:v1]      OCI image layout (a tar, or a directory with tar=false)
    type=docker,dest=out.tar[,name=app:v1]               docker-archive (`docker load` / `podman load`)
    type=local,dest=DIR                                  the final filesystem, written into DIR
    type=tar,dest=rootfs.tar                             the final filesystem as one tar (dest=- is stdout)
    type=image,name=app:v1[,name=...][,push=true]       keep the image in the local store under these names
                                                         (and push each name to its registry)
    type=registry,name=reg/app:v1                        the same as type=image,...,push=true (buildx)
    compression=gzip|zstd|uncompressed, compression-level=N, oci-mediatypes=true|false, force-compression=BOOL

As in buildx, a spec is one CSV record (so `"name=a:1,b:2"` quotes a list), a bare path means
`type=local,dest=PATH` and a bare `-` means `type=tar,dest=-`. `type=registry` is parsed as `type=image` with
`push=true`, as buildx documents it. Who makes it: the CLI (`--output`, `save`); who uses it:
`pybuild.export.exporters.export_image`.
"""

from __future__ import annotations


from pybuild.errors import ConfigError
from pybuild.record import record
from pybuild.specparse import spec_fields

TYPES = ("oci", "docker", "local", "tar", "image")
COMPRESSIONS = ("gzip", "zstd", "uncompressed")
# Level ranges of the libraries behind each compression (gzip: zlib 0-9; zstd: 1-22, 0 meaning its default).
_LEVELS = {"gzip": (0, 9), "zstd": (0, 22)}
_KEYS = {
    "oci": {"dest", "tar", "name", "compression", "compression-level", "oci-mediatypes", "force-compression"},
    "docker": {"dest", "name", "compression", "compression-level", "oci-mediatypes", "force-compression"},
    "local": {"dest"},
    "tar": {"dest"},
    "image": {"name", "push", "compression", "compression-level", "oci-mediatypes", "force-compression",
              "unpack", "store"},
}


@record
class OutputSpec:
    """One parsed `--output`: where an image (or its filesystem) goes and how its layers are compressed.

    `oci_mediatypes` is None when the spec did not say (oci/image default to OCI types, docker to Docker's).
    `push` (type=image only): push each name to its registry after storing it.
    """

    type: str
    dest: str | None = None
    tar: bool = True
    names: tuple[str, ...] = ()
    compression: str = "gzip"
    compression_level: int | None = None
    oci_mediatypes: bool | None = None
    force_compression: bool = False
    push: bool = False

    @property
    def use_oci_mediatypes(self) -> bool:
        """The media types to write: OCI unless docker (or `oci-mediatypes=false`) asked otherwise."""
        if self.oci_mediatypes is not None:
            return self.oci_mediatypes
        return self.type != "docker"


def parse_output(text: str) -> OutputSpec:
    """Parse one `--output` value; raise ConfigError naming the bad part."""
    text = text.strip()
    if not text:
        raise ConfigError("invalid output spec: empty", hint="e.g. type=oci,dest=image.tar")
    if "=" not in text and "," not in text:
        # buildx shorthand: `-o -` streams the filesystem as a tar, `-o DIR` writes it into DIR
        return OutputSpec(type="tar", dest="-") if text == "-" else OutputSpec(type="local", dest=text)
    fields = _split_fields(text)
    kind = fields.pop("type", None)
    if kind is None:
        raise ConfigError(f"invalid output spec {text!r}: missing type=", hint=f"types: {', '.join(TYPES)}")
    kind = kind.lower()
    if kind == "registry":  # buildx: "shorthand for type=image,push=true"
        if "push" in fields and not _bool(text, "push", fields["push"], True):
            raise ConfigError(f"invalid output spec {text!r}: type=registry always pushes",
                              hint="use type=image to keep the image without pushing it")
        kind, fields["push"] = "image", "true"
    if kind not in TYPES:
        raise ConfigError(f"invalid output spec {text!r}: unknown type {kind!r}", hint=f"types: {', '.join(TYPES)}")
    unknown = sorted(set(fields) - _KEYS[kind])
    if unknown:
        raise ConfigError(f"invalid output spec {text!r}: type={kind} does not take {', '.join(unknown)}",
                          hint=f"type={kind} takes: {', '.join(sorted(_KEYS[kind]))}")
    return _to_spec(text, kind, fields)


def _split_fields(text: str) -> dict[str, str]:
    """`a=1,"b=2,3"` → {a: 1, b: "2,3"}: one CSV record of key=value pairs (`specparse.spec_fields`)."""
    return spec_fields(text, "output spec")


def _to_spec(text: str, kind: str, fields: dict[str, str]) -> OutputSpec:
    dest = fields.get("dest")
    if dest == "":
        raise ConfigError(f"invalid output spec {text!r}: dest is empty")
    tar = _bool(text, "tar", fields.get("tar"), True)
    if kind in ("oci", "docker", "local", "tar") and dest is None:
        raise ConfigError(f"invalid output spec {text!r}: type={kind} needs dest=", hint=f"e.g. type={kind},dest=out")
    if dest == "-" and (kind == "local" or not tar):
        raise ConfigError(f"invalid output spec {text!r}: a directory output cannot go to standard output")
    names = tuple(n.strip() for n in fields.get("name", "").split(",") if n.strip())
    if kind == "image" and not names:
        raise ConfigError(f"invalid output spec {text!r}: type=image needs name=", hint="e.g. type=image,name=app:v1")
    push = _bool(text, "push", fields.get("push"), False)
    if push:
        _check_push_names(text, names)
    compression = fields.get("compression", "gzip").lower()
    if compression not in COMPRESSIONS:
        raise ConfigError(f"invalid output spec {text!r}: unknown compression {compression!r}",
                          hint=f"compressions: {', '.join(COMPRESSIONS)}")
    level = _level(text, compression, fields.get("compression-level"))
    oci = fields.get("oci-mediatypes")
    oci_mediatypes = None if oci is None else _bool(text, "oci-mediatypes", oci, True)
    docker_types = oci_mediatypes is False or (kind == "docker" and oci_mediatypes is None)
    if compression == "zstd" and docker_types:
        raise ConfigError(f"invalid output spec {text!r}: zstd layers need OCI media types",
                          hint="use compression=gzip, or oci-mediatypes=true")
    force = _bool(text, "force-compression", fields.get("force-compression"), False)
    return OutputSpec(type=kind, dest=dest, tar=tar, names=names, compression=compression,
                      compression_level=level, oci_mediatypes=oci_mediatypes, force_compression=force, push=push)


def _check_push_names(text: str, names: tuple[str, ...]) -> None:
    from pybuild.image.reference import parse_reference

    for name in names:
        if parse_reference(name).digest is not None:
            raise ConfigError(f"invalid output spec {text!r}: cannot push to {name}: it has a digest",
                              hint="push to a tag (REGISTRY/NAME:TAG)")


def _bool(text: str, key: str, value: str | None, default: bool) -> bool:
    if value is None:
        return default
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "on", ""):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"invalid output spec {text!r}: {key}={value!r} is not true or false")


def _level(text: str, compression: str, value: str | None) -> int | None:
    if value is None:
        return None
    if compression == "uncompressed":
        raise ConfigError(f"invalid output spec {text!r}: compression-level needs compression=gzip or zstd")
    try:
        level = int(value)
    except ValueError:
        raise ConfigError(f"invalid output spec {text!r}: compression-level={value!r} is not a number") from None
    low, high = _LEVELS[compression]
    if not low <= level <= high:
        raise ConfigError(f"invalid output spec {text!r}: {compression} compression-level must be {low}..{high}")
    return level
