"""Images in the store: import a rootfs tar, load archives, resolve names, compressed layer blobs, tags.

Who uses it: the CLI (`import`, `load`, `images`, `inspect`, `history`, `tag`, `rmi`), the exporters
(`manifest_for_export`, `layer_blob`, `apply_image`, `write_flat_tar`) and, later, the builder.

How an image is kept (on top of `Store`):
- every layer once, uncompressed, as the blob named by its diffID (`layers` row), and each compressed form as
  another blob with a `compressed` row (diffID, compression, level → blob). Compression happens once per
  (diffID, compression, level): a second export finds the row and reuses the blob. A blob that came from an
  archive has an unknown level and is recorded with level -1 ("as loaded"); an export at the default level
  reuses it, so a loaded image exports with its original manifest digest.
- the manifest and config as blobs (`images` row: manifest → config, platform, size), tags last
  (`tags`: normalised reference → manifest digest). A tag is the only thing that makes an image visible, so
  an interrupted import or load leaves at most unreferenced blobs, which `prune` removes.
- nothing is committed before it is verified: a loaded layer is streamed into two uncommitted blob writers
  (as given, and uncompressed) while both digests are checked against the manifest and the config's
  `rootfs.diff_ids`; all writers of an archive are committed only once every layer of it has been checked.

Loading archives (`load_archive`) lives in `pybuild/store/archive.py`, on top of this module.

Names: tags are stored normalised (`docker.io/library/busybox:latest`) and shown familiar (`busybox:latest`).
An image may also be named by its ID (config digest, or a prefix of its hex of at least 4 characters) or by
its manifest digest.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from pybuild.digest import sha256_digest
from pybuild.errors import ConfigError, StoreError
from pybuild.image.config import History, ImageConfig, RootFS
from pybuild.image.spec import (
    DOCKER_CONFIG,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
    format_rfc3339,
    host_platform,
    layer_compression,
    layer_media_type,
    source_date_epoch,
    to_docker_media_type,
    to_oci_media_type,
)
from pybuild.record import record
from pybuild.store.imageread import (
    StoredImage,
    config_diff_ids,
    familiar_name,
    parse_config,
    read_image,
    untag_layer_users,
)

if TYPE_CHECKING:
    from pybuild.store.store import Store

__all__ = [
    "ExportedManifest", "ImageSummary", "StoredImage", "apply_image", "config_diff_ids", "familiar_name",
    "import_rootfs", "layer_blob", "list_images", "manifest_for_export", "parse_config", "read_image",
    "remove_image", "resolve_image", "store_manifest", "tag_image", "untag_layer_users", "write_flat_tar",
]

LOADED_LEVEL = -1  # level of a compressed blob taken as-is from an archive
_CHUNK = 1 << 20
_CREATED_BY = "pybuild import"


@record
class ExportedManifest:
    """The manifest an export writes: maybe the stored one, maybe one with other compression or media types."""

    descriptor: dict[str, object]
    manifest_bytes: bytes
    manifest_digest: str
    config_bytes: bytes
    config_digest: str
    layer_digests: tuple[str, ...]
    media_type: str


@record
class ImageSummary:
    """One row of `pybuild images`."""

    names: tuple[str, ...]
    manifest_digest: str
    config_digest: str
    created: str | None
    size: int
    platform: str


# --- names ----------------------------------------------------------------------------------------------


def normalize_name(name: str) -> str:
    """The stored form of a tag name (`busybox` → `docker.io/library/busybox:latest`); ConfigError if bad."""
    from pybuild.image.reference import parse_reference

    ref = parse_reference(name)
    if ref.digest is not None:
        raise ConfigError(f"invalid tag {name!r}: a tag cannot contain a digest")
    return ref.normalized


def _lookup(store: Store, name: str) -> tuple[str, str | None]:
    """(manifest digest, stored tag name or None) for a tag, image ID, ID prefix or manifest digest."""
    text = name.strip()
    hexpart = text.removeprefix("sha256:")
    if 4 <= len(hexpart) <= 64 and all(c in "0123456789abcdef" for c in hexpart):
        matches = {row.digest for row in store.index.images()
                   if row.config.removeprefix("sha256:").startswith(hexpart)
                   or row.digest.removeprefix("sha256:").startswith(hexpart)}
        if len(matches) == 1:
            return matches.pop(), None
        if len(matches) > 1:
            raise StoreError(f"image ID prefix {name!r} is ambiguous ({len(matches)} images)")
    if "@" in text:
        return _lookup_pinned(store, name, text)
    try:
        stored = normalize_name(text)
    except ConfigError:
        raise StoreError(f"no such image: {name}") from None
    digest = store.index.get_tag(stored)
    if digest is None:
        raise StoreError(f"no such image: {name}", hint="see `pybuild images` for what the store holds")
    return digest, stored


def pinned_name(name: str) -> str:
    """The stored name of a reference pinned by digest: `REPO@DIGEST` (any tag dropped, as docker does)."""
    from pybuild.image.reference import parse_reference

    ref = parse_reference(name)
    if ref.digest is None:
        raise ConfigError(f"invalid reference {name!r}: no digest")
    return f"{ref.name}@{ref.digest}"


def _lookup_pinned(store: Store, name: str, text: str) -> tuple[str, str | None]:
    """`REPO@DIGEST`: the image a pull of it stored (a pinned index digest names the platform manifest
    pulled from it), or the manifest with that digest when the store has it."""
    try:
        stored = pinned_name(text)
    except ConfigError:
        raise StoreError(f"no such image: {name}") from None
    digest = store.index.get_tag(stored)
    if digest is not None:
        return digest, stored
    pinned = stored.rpartition("@")[2]
    if store.index.get_image(pinned) is not None and store.blobs.exists(pinned):
        return pinned, None
    raise StoreError(f"no such image: {name}", hint="see `pybuild images` for what the store holds")


def resolve_image(store: Store, name: str) -> StoredImage:
    """The image `name` refers to (tag, ID, ID prefix or manifest digest); StoreError if there is none."""
    digest, stored = _lookup(store, name)
    return read_image(store, digest, stored)


# --- tags and listing ------------------------------------------------------------------------------------


def tag_image(store: Store, source: str, target: str) -> str:
    """Point tag `target` at the image `source` names; returns the stored tag name."""
    digest, _ = _lookup(store, source)
    if store.index.get_image(digest) is None:
        raise StoreError(f"no such image: {source}")
    stored = normalize_name(target)
    store.index.set_tag(stored, digest)
    return stored


def remove_image(store: Store, name: str, force: bool = False) -> list[str]:
    """`rmi`: remove a tag, or every tag of an image given by ID (with `force` if it has several).

    Returns the removed tag names. Blobs stay until `prune` (which removes what no tag reaches).
    """
    digest, stored = _lookup(store, name)
    if stored is not None:
        store.index.remove_tag(stored)
        return [stored]
    tags = [t.name for t in store.index.list_tags() if t.digest == digest]
    if len(tags) > 1 and not force:
        raise StoreError(f"image {name} is tagged {len(tags)} times ({', '.join(map(familiar_name, tags))})",
                         hint="remove the tags one by one, or use --force")
    for tag in tags:
        store.index.remove_tag(tag)
    return tags


def list_images(store: Store) -> list[ImageSummary]:
    """Every tagged image (one row per manifest, with all its names), newest first."""
    by_digest: dict[str, list[str]] = {}
    for tag in store.index.list_tags():
        by_digest.setdefault(tag.digest, []).append(familiar_name(tag.name))
    out = []
    for digest, names in by_digest.items():
        row = store.index.get_image(digest)
        try:
            image = read_image(store, digest)
        except StoreError:
            continue  # a tag on something that is not an image (or a missing blob): du --verify reports it
        created = image.config.get("created")
        out.append(ImageSummary(tuple(sorted(names)), digest, image.config_digest,
                                created if isinstance(created, str) else None,
                                row.size if row is not None else 0, image.platform))
    return sorted(out, key=lambda s: (s.created or "", s.names), reverse=True)


# --- compressed layer blobs -----------------------------------------------------------------------------


def layer_blob(store: Store, diff_id: str, compression: str, level: int | None = None,
               force: bool = False) -> tuple[str, int]:
    """(digest, size) of layer `diff_id` compressed as asked, compressing it only if the store has no such
    blob yet. `level` None means the default level (and accepts a blob loaded from an archive unless
    `force`)."""
    from pybuild.store.compress import DEFAULT_LEVELS, compress

    from pybuild.store.layerread import read_layer
    from pybuild.store.remote import has_blob

    if compression == "uncompressed":
        if not store.blobs.exists(diff_id):  # a pulled layer, kept compressed: write out its tar
            with read_layer(store, diff_id) as src, store.blobs.writer() as writer:
                shutil.copyfileobj(src, writer, _CHUNK)
                writer.commit(diff_id)
            store.index.record_blob(diff_id, store.blobs.size(diff_id), layer_media_type("uncompressed"))
        return diff_id, store.blobs.size(diff_id)
    wanted = DEFAULT_LEVELS[compression] if level is None else level
    levels = (wanted,) if level is not None or force else (wanted, LOADED_LEVEL)
    for lvl in levels:
        row = store.index.find_compressed(diff_id, compression, lvl)
        if row is not None and has_blob(store, row.digest):
            store.index.touch(row.digest)
            return row.digest, row.size
    with read_layer(store, diff_id) as src, store.blobs.writer() as writer:
        compress(src, writer, compression, wanted)
        digest, size = writer.commit()
    store.index.record_blob(digest, size, layer_media_type(compression))
    store.index.record_compressed(diff_id, compression, wanted, digest, size)
    return digest, size


def manifest_for_export(store: Store, image: StoredImage, *, compression: str = "gzip",
                        level: int | None = None, oci_mediatypes: bool = True,
                        force: bool = False) -> ExportedManifest:
    """The manifest to export `image` with: the stored one when it already has the layers and media types
    asked for (so a loaded image keeps its digest), else a new canonical one (deterministic)."""
    convert = to_oci_media_type if oci_mediatypes else to_docker_media_type
    layers: list[Descriptor] = []
    for stored, diff_id in zip(image.manifest.layers, image.diff_ids):
        if level is None and not force and layer_compression(stored.media_type) == compression:
            layers.append(Descriptor(convert(stored.media_type), stored.digest, stored.size, stored.annotations))
            continue
        digest, size = layer_blob(store, diff_id, compression, level, force)
        layers.append(Descriptor(layer_media_type(compression, oci=oci_mediatypes), digest, size))
    config = Descriptor(OCI_CONFIG if oci_mediatypes else DOCKER_CONFIG, image.config_digest,
                        len(image.config_bytes))
    media_type = OCI_MANIFEST if oci_mediatypes else DOCKER_MANIFEST
    if (image.manifest.media_type == media_type and image.manifest.config.media_type == config.media_type
            and tuple(layers) == image.manifest.layers):
        data, digest = image.manifest_bytes, image.manifest_digest
    else:
        annotations = image.manifest.annotations if oci_mediatypes else ()
        data = Manifest(config, tuple(layers), media_type, annotations).to_bytes()
        digest = sha256_digest(data)
    return ExportedManifest({"mediaType": media_type, "digest": digest, "size": len(data)}, data, digest,
                            image.config_bytes, image.config_digest, tuple(d.digest for d in layers), media_type)


def store_manifest(store: Store, exported: ExportedManifest, platform: str) -> None:
    """Keep an exported manifest in the store (for `type=image`): blob, then image row."""
    store.put_bytes(exported.manifest_bytes, exported.media_type, exported.manifest_digest)
    from pybuild.store.remote import blob_size

    size = sum(blob_size(store, d) for d in exported.layer_digests) + len(exported.config_bytes)
    store.index.record_image(exported.manifest_digest, exported.config_digest, platform, size,
                             exported.media_type)


# --- import ---------------------------------------------------------------------------------------------


def import_rootfs(store: Store, path: str, name: str | None, *, message: str | None = None) -> StoredImage:
    """`pybuild import`: make a one-layer image of the rootfs tar at `path` (plain, gzip or zstd) and tag it.

    The entries are rewritten sorted by the deterministic tar writer, so the same files give the same
    diffID whatever order or tar flavour they came in. `created` is SOURCE_DATE_EPOCH when set (and file
    times are clamped to it), else now.
    """
    stored = normalize_name(name) if name else None
    epoch = source_date_epoch()
    created = format_rfc3339(epoch if epoch is not None else int(time.time()))
    with store.shared_lock():
        diff_id, size = _import_layer(store, path, epoch)
        digest, gz_size = layer_blob(store, diff_id, "gzip")
        platform = host_platform()
        history = History(created=created, created_by=f"{_CREATED_BY} {os.path.basename(path)}",
                          comment=message or "")
        image_config = ImageConfig(architecture=platform.architecture, os=platform.os, variant=platform.variant,
                                   created=created, rootfs=RootFS(diff_ids=(diff_id,)), history=(history,))
        config_bytes = image_config.to_bytes()
        config: dict[str, Any] = json.loads(config_bytes)
        config_digest, _ = store.put_bytes(config_bytes, OCI_CONFIG)
        layer = Descriptor(layer_media_type("gzip"), digest, gz_size)
        manifest = Manifest(Descriptor(OCI_CONFIG, config_digest, len(config_bytes)), (layer,))
        data = manifest.to_bytes()
        manifest_digest, _ = store.put_bytes(data, OCI_MANIFEST)
        store.index.record_image(manifest_digest, config_digest, str(platform), gz_size + len(config_bytes))
        if stored is not None:
            store.index.set_tag(stored, manifest_digest)
    return StoredImage(stored, manifest_digest, data, manifest, config_digest, config_bytes, config, (diff_id,))


def _import_layer(store: Store, path: str, epoch: int | None) -> tuple[str, int]:
    """Rewrite the tar at `path` as a deterministic layer blob; returns (diffID, size)."""
    from pybuild.store.tarlayer import iter_layer, write_entries

    try:
        if _entries_sorted(path):
            with _open_input(path) as src, store.blobs.writer() as writer:
                diff_id, size = write_entries(_streamed(iter_layer(src)), writer, clamp_mtime=epoch,
                                              sort=False)
                writer.commit(diff_id)
        else:
            with tempfile.TemporaryDirectory(prefix="import-", dir=store.blobs.tmp_dir) as spool:
                entries = _spooled(path, spool)
                with store.blobs.writer() as writer:
                    diff_id, size = write_entries(entries, writer, clamp_mtime=epoch)
                    writer.commit(diff_id)
    except StoreError as exc:
        raise StoreError(f"cannot import {path}: {exc.message}") from None
    store.index.record_blob(diff_id, size, layer_media_type("uncompressed"))
    store.index.record_layer(diff_id, size)
    return diff_id, size


def _open_input(path: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None


def clean_member_path(path: str) -> str | None:
    """A rootfs entry's path made relative; None for the root itself; StoreError for `..`."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise StoreError(f"unsafe path in archive: {path!r}")
    return "/".join(parts) or None


def _entries_sorted(path: str) -> bool:
    """True when the tar's entries are already in layer order with no duplicates (so one pass will do)."""
    from pybuild.store.tarlayer import iter_layer

    previous: tuple[bytes, ...] | None = None
    with _open_input(path) as src:
        for entry, _ in iter_layer(src):
            clean = clean_member_path(entry.path)
            if clean is None:
                continue
            if entry.kind == "hardlink" and clean_member_path(entry.link_target) is None:
                return False
            key = _layer_order(clean, entry.kind)
            if previous is not None and key <= previous:
                return False
            previous = key
    return True


def _layer_order(path: str, kind: str) -> tuple[bytes, ...]:
    """The tar writer's order: path components as bytes, an opaque marker right after its directory."""
    parts = tuple(os.fsencode(path).split(b"/"))
    return (*parts, b"") if kind == "opaque" else parts


def _with(entry: Any, **changes: Any) -> Any:
    from pybuild.record import replace

    return replace(entry, **changes)


def _streamed(items: Iterator[tuple[Any, Any]]) -> Iterator[Any]:
    """Entries of an already sorted tar, each with its content read (one file in memory at a time)."""
    for entry, content in items:
        clean = clean_member_path(entry.path)
        if clean is None:
            continue
        changes: dict[str, Any] = {"path": clean}
        if entry.kind == "hardlink":
            changes["link_target"] = clean_member_path(entry.link_target) or ""
        if content is not None:
            changes["data"] = content.read()
        yield _with(entry, **changes)


def _spooled(path: str, spool: str) -> list[Any]:
    """Entries of an unsorted tar, file contents spooled to `spool`; the last entry for a path wins, and
    hard links become files sharing an inode (the writer links them again, to the first path in order)."""
    from pybuild.store.tarlayer import iter_layer

    entries: dict[str, Any] = {}
    inodes: dict[str, tuple[int, int]] = {}
    with _open_input(path) as src:
        for number, (entry, content) in enumerate(iter_layer(src)):
            clean = clean_member_path(entry.path)
            if clean is None:
                continue
            if content is not None:
                source = os.path.join(spool, str(number))
                with open(source, "wb") as out:
                    shutil.copyfileobj(content, out, _CHUNK)
                entries[clean] = _with(entry, path=clean, source=source)
            elif entry.kind == "hardlink":
                target = entries.get(clean_member_path(entry.link_target) or "")
                if target is None or target.kind != "file":
                    raise StoreError(f"hard link {clean} points at {entry.link_target!r}, not an earlier file")
                inode = inodes.setdefault(target.path, (0, len(inodes) + 1))
                entries[target.path] = _with(target, inode=inode)
                entries[clean] = _with(target, path=clean, inode=inode, mode=entry.mode, uid=entry.uid,
                                       gid=entry.gid, mtime=entry.mtime)
            else:
                entries[clean] = _with(entry, path=clean)
    return list(entries.values())


# --- filesystem of an image -------------------------------------------------------------------------------


def apply_image(store: Store, image: StoredImage, dest: str) -> None:
    """Write the final filesystem of `image` into directory `dest` (its layers applied in order, safely)."""
    from pybuild.store.apply import apply_layer
    from pybuild.store.layerread import read_layer

    for diff_id in image.diff_ids:
        with read_layer(store, diff_id) as src:
            apply_layer(src, dest)


def write_flat_tar(store: Store, image: StoredImage, out: IO[bytes]) -> None:
    """Write the final filesystem of `image` as one deterministic tar (layers merged, whiteouts applied)."""
    from pybuild.store.tarlayer import write_entries

    with tempfile.TemporaryDirectory(prefix="flat-", dir=store.blobs.tmp_dir) as tmp:
        root = os.path.join(tmp, "rootfs")
        os.mkdir(root)
        apply_image(store, image, root)
        from pybuild.store.tarlayer import scan_dir

        write_entries(scan_dir(root), out, sort=False)
