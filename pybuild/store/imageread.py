"""Reading an image back from the store: `read_image` (a manifest digest → `StoredImage`), the familiar
form of a stored tag name, and untagging the images that use a layer the store lost.

Below `images` (which imports, exports and lists images and re-exports these names) and `layerread`
(which untags the users of a layer that failed its check): both build on this module, and it on neither,
so the two do not import each other.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pybuild.errors import ConfigError, StoreError
from pybuild.image.config import ImageConfig
from pybuild.image.spec import Manifest, parse_document
from pybuild.record import record

if TYPE_CHECKING:
    from pybuild.store.store import Store

__all__ = ["StoredImage", "config_diff_ids", "familiar_name", "parse_config", "read_image", "untag_layer_users"]


@record
class StoredImage:
    """An image read back from the store: its manifest and config as stored, and what they say.

    Made by `resolve_image` (and import/load); used by the exporters and the CLI.
    """

    name: str | None
    manifest_digest: str
    manifest_bytes: bytes
    manifest: Manifest
    config_digest: str
    config_bytes: bytes
    config: dict[str, Any]
    diff_ids: tuple[str, ...]

    @property
    def id(self) -> str:
        """The image ID as docker shows it: the config digest."""
        return self.config_digest

    @property
    def descriptor(self) -> dict[str, object]:
        """The manifest descriptor (JSON form)."""
        return {"mediaType": self.manifest.media_type, "digest": self.manifest_digest,
                "size": len(self.manifest_bytes)}

    @property
    def platform(self) -> str:
        parts = (self.config.get("os"), self.config.get("architecture"), self.config.get("variant"))
        return "/".join(p for p in parts if isinstance(p, str) and p)


def familiar_name(stored: str) -> str:
    """The short form of a stored tag name (`docker.io/library/busybox:latest` → `busybox:latest`)."""
    from pybuild.image.reference import parse_reference

    try:
        return parse_reference(stored).familiar
    except ConfigError:
        return stored


def read_image(store: Store, digest: str, name: str | None = None) -> StoredImage:
    """The image whose manifest is blob `digest` (verified on read)."""
    data = store.blobs.read_bytes(digest)
    doc = parse_document(data)
    if not isinstance(doc, Manifest):
        raise StoreError(f"{name or digest} is an index, not an image manifest")
    config_bytes = store.blobs.read_bytes(doc.config.digest)
    config = parse_config(config_bytes, len(doc.layers))
    return StoredImage(name, digest, data, doc, doc.config.digest, config_bytes, config, config_diff_ids(config))


def parse_config(data: bytes, layer_count: int) -> dict[str, Any]:
    try:
        config = json.loads(data)
    except ValueError as exc:
        raise StoreError(f"invalid image config: not JSON ({exc})") from None
    if not isinstance(config, dict):
        raise StoreError("invalid image config: expected a JSON object")
    diff_ids = ImageConfig.from_dict(config).rootfs.diff_ids  # validates every field it knows
    if len(diff_ids) != layer_count:
        raise StoreError(f"invalid image: the config has {len(diff_ids)} diff_ids but the manifest "
                         f"{layer_count} layers")
    return config


def config_diff_ids(config: dict[str, Any]) -> tuple[str, ...]:
    return tuple(config["rootfs"]["diff_ids"])


def untag_layer_users(store: Store, diff_id: str) -> list[str]:
    """Remove every tag whose image has layer `diff_id` (the store lost it: `store.layerread`); returns
    the removed tag names."""
    removed = []
    for tag in store.index.list_tags():
        try:
            uses = diff_id in read_image(store, tag.digest).diff_ids
        except StoreError:
            continue  # not an image manifest, or its blobs are gone: `du --verify` reports that
        if uses and store.index.remove_tag(tag.name):
            removed.append(tag.name)
    return removed
