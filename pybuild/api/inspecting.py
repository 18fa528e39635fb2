"""One image described: inspect (digests, names, manifest, config) and history (with layer sizes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pybuild.api.opening import Warn, open_store
from pybuild.record import record

__all__ = ["HistoryEntry", "HistoryRequest", "HistoryResult", "InspectRequest", "InspectResult", "history",
           "inspect"]


@record(kw_only=True)
class InspectRequest:
    """`pybuild inspect`: `image` is a name, ID or digest."""

    image: str
    store_root: str | None = None


@record(kw_only=True)
class InspectResult:
    """An image's digests, familiar names (sorted), manifest and config (`size`: None when not indexed)."""

    image_id: str
    digest: str
    repo_tags: tuple[str, ...]
    media_type: str
    platform: str
    created: object
    size: int | None
    layers: tuple[str, ...]
    manifest: object
    config: Mapping[str, Any]


def inspect(request: InspectRequest, warn: Warn | None = None) -> InspectResult:
    """Describe one image."""
    import json

    from pybuild.store.images import familiar_name, resolve_image

    with open_store(request.store_root, warn) as store:
        image = resolve_image(store, request.image)
        tags = sorted(familiar_name(t.name) for t in store.index.list_tags() if t.digest == image.manifest_digest)
        row = store.index.get_image(image.manifest_digest)
    return InspectResult(image_id=image.id, digest=image.manifest_digest, repo_tags=tuple(tags),
                         media_type=image.manifest.media_type, platform=image.platform,
                         created=image.config.get("created"), size=row.size if row is not None else None,
                         layers=tuple(image.diff_ids), manifest=json.loads(image.manifest_bytes),
                         config=image.config)


@record(kw_only=True)
class HistoryRequest:
    """`pybuild history`: `image` is a name, ID or digest."""

    image: str
    store_root: str | None = None


@record(kw_only=True)
class HistoryEntry:
    """One history entry of the config; `size` is the layer it made (0 for an empty layer)."""

    created: str
    created_by: str
    size: int
    comment: str


@record(kw_only=True)
class HistoryResult:
    """The entries in the config's order (oldest first)."""

    entries: tuple[HistoryEntry, ...]


def history(request: HistoryRequest, warn: Warn | None = None) -> HistoryResult:
    """The image's history entries, each with the size of the layer it made."""
    from pybuild.store.images import resolve_image

    with open_store(request.store_root, warn) as store:
        image = resolve_image(store, request.image)
        sizes = [store.index.layer_size(d) for d in image.diff_ids]
    found = image.config.get("history") or []
    layer = 0
    entries: list[HistoryEntry] = []
    for entry in found if isinstance(found, list) else []:
        if not isinstance(entry, dict):
            continue
        size = 0
        if not entry.get("empty_layer") and layer < len(sizes):
            size = sizes[layer] or 0
            layer += 1
        entries.append(HistoryEntry(created=str(entry.get("created", "")),
                                    created_by=str(entry.get("created_by", "")), size=size,
                                    comment=str(entry.get("comment", ""))))
    return HistoryResult(entries=tuple(entries))
