"""Images into and out of the store: import (a rootfs tar), load (an OCI layout or docker-archive), save.

Store and export modules are imported when a function runs.
"""

from __future__ import annotations

import os
from typing import BinaryIO, Literal

from pybuild.api.opening import Warn, open_store
from pybuild.errors import ConfigError
from pybuild.record import record

__all__ = ["ImportRequest", "ImportResult", "LoadRequest", "LoadResult", "LoadedImage", "SaveRequest",
           "import_image", "load", "save"]


@record(kw_only=True)
class ImportRequest:
    """`pybuild import`: a one-layer image from the rootfs tar `file` (.tar, .tar.gz, .tar.zst)."""

    file: str
    name: str | None = None
    message: str | None = None
    store_root: str | None = None


@record(kw_only=True)
class ImportResult:
    image_id: str


def import_image(request: ImportRequest, warn: Warn | None = None) -> ImportResult:
    """Import `request.file` as an image, tagged `request.name` when given."""
    from pybuild.store.images import import_rootfs

    if not os.path.isfile(request.file):
        raise ConfigError(f"cannot import {request.file}: no such file")
    with open_store(request.store_root, warn) as store:
        image = import_rootfs(store, request.file, request.name, message=request.message)
    return ImportResult(image_id=image.id)


@record(kw_only=True)
class LoadRequest:
    """`pybuild load`: every image of an OCI layout (directory or tar) or a docker-archive at `input`."""

    input: str
    store_root: str | None = None


@record(kw_only=True)
class LoadedImage:
    """One image loaded: its ID and, when the archive named it, its familiar name (`app:v1`)."""

    image_id: str
    name: str | None


@record(kw_only=True)
class LoadResult:
    images: tuple[LoadedImage, ...]


def load(request: LoadRequest, warn: Warn | None = None) -> LoadResult:
    """Load, verify and tag every image of the archive."""
    from pybuild.store.archive import load_archive
    from pybuild.store.images import familiar_name

    with open_store(request.store_root, warn) as store:
        loaded = load_archive(store, request.input)
    return LoadResult(images=tuple(LoadedImage(image_id=image.id,
                                               name=familiar_name(image.name) if image.name else None)
                                   for image in loaded))


@record(kw_only=True)
class SaveRequest:
    """`pybuild save`: `image` (name, ID or digest) as an archive at `output` (`-`: the `stdout` stream).
    `compression` None keeps the image's (gzip)."""

    image: str
    output: str
    format: Literal["oci", "docker"] = "oci"
    compression: str | None = None
    compression_level: int | None = None
    store_root: str | None = None


def save(request: SaveRequest, warn: Warn | None = None, stdout: BinaryIO | None = None) -> None:
    """Write the image as an OCI archive or a docker-archive (the spec is checked before the store opens)."""
    from pybuild.export.exporters import export_image
    from pybuild.export.outputs import parse_output
    from pybuild.store.images import resolve_image

    parts = [f"type={request.format}", f"dest={request.output}", f"name={request.image}"]
    if request.compression:
        parts.append(f"compression={request.compression}")
    if request.compression_level is not None:
        parts.append(f"compression-level={request.compression_level}")
    spec = parse_output(_csv(parts))
    with open_store(request.store_root, warn) as store:
        image = resolve_image(store, request.image)
        if image.name is None:
            from pybuild.record import replace

            spec = replace(spec, names=())
        with store.shared_lock():
            export_image(store, image, spec, stdout=stdout)


def _csv(parts: list[str]) -> str:
    """Join key=value fields as one CSV record (quoting a value that holds a comma or a quote)."""
    import csv
    import io

    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(parts)
    return out.getvalue()
