"""Turn the results of a planned build into an image in the local store (what `type=image` exports keep).

Who uses it: the build front door after the solver ran every op of the target; the integration tests.

Each new layer is stored once, uncompressed, as the blob named by its diffID (`layers` row), and the
manifest names those blobs: compressed forms are made by exports and pushes (`images.layer_blob`, once per
diffID), never by the build.
The config is `plan.image` with the new diffIDs appended to the base's, its history made to match the layers
(`align_history`: a base may have no history, or history naming other layers than it has) and `created` filled
in (the plan leaves it None unless SOURCE_DATE_EPOCH is set); then the manifest, the `images` row, and the
tags last, so an interrupted commit leaves only unreferenced blobs for `prune`.

The layers themselves were stored by the worker as each step finished (`Worker._step`); this module only
names them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pybuild.errors import InternalError
from pybuild.image.config import RootFS, align_history
from pybuild.image.spec import (
    OCI_CONFIG,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
    format_rfc3339,
    layer_media_type,
)
from pybuild.plan.ops import Plan
from pybuild.record import replace
from pybuild.store.images import StoredImage, normalize_name
from pybuild.store.store import Store
from pybuild.worker.types import StepResult

__all__ = ["commit_image"]


def commit_image(store: Store, plan: Plan, results: Mapping[str, StepResult], tags: Sequence[str] = (), *,
                 epoch: int | None = None, created: str | None = None) -> StoredImage:
    """Store the image `plan` built (its layer ops' results in `results`, by digest) and point `tags` at it.

    The target op's result is the image's whole layer stack (each layer already stored by the worker).
    `created` is the image's time: the plan's (SOURCE_DATE_EPOCH) when it has one, else `created`, else
    `epoch`, else now.
    """
    stored_tags = [normalize_name(tag) for tag in tags]  # bad names fail before anything is written
    stamp = plan.image.created or created or format_rfc3339(epoch if epoch is not None else int(time.time()))
    with store.shared_lock():
        target = results.get(plan.target)
        if target is None:
            raise InternalError(f"the target op {plan.target} has no result")
        # The target's layer stack: the base image's layers, then every layer of the stages it is built
        # FROM, then its own (the plan's rootfs only knows the base image's).
        diff_ids = target.diff_ids
        # A base without history (optional in OCI), or with history that does not match its layers, is
        # used as it is: its part is padded or trimmed to its layer count, this build's entries follow.
        # umoci cannot read an entry without `created`: each gets the image's time (BuildKit fills them too).
        aligned = align_history(plan.image.history, len(diff_ids), len(plan.image.rootfs.diff_ids))
        history = tuple(h if h.created is not None else replace(h, created=stamp) for h in aligned)
        image_config = replace(plan.image, created=stamp, rootfs=RootFS(diff_ids=diff_ids), history=history)
        return _store_image(store, image_config.to_bytes(), diff_ids, _platform(image_config.to_dict()),
                            stored_tags)


def _platform(config: Mapping[str, Any]) -> str:
    parts = (config.get("os"), config.get("architecture"), config.get("variant"))
    return "/".join(p for p in parts if isinstance(p, str) and p)


def _layer(store: Store, diff_id: str) -> Descriptor:
    """The descriptor of layer `diff_id`: uncompressed when the store holds the tar or knows its size (a
    registry cache hit, remote until read: `store.remote`; a pulled base once it was unpacked), else (a
    pulled base kept as it came) a compressed form. Exports convert either way (`manifest_for_export`)."""
    from pybuild.store.layerread import layer_present
    from pybuild.store.remote import has_blob

    if store.blobs.exists(diff_id):
        return Descriptor(layer_media_type("uncompressed"), diff_id, store.blobs.size(diff_id))
    size = store.index.layer_size(diff_id)
    if size is not None and layer_present(store, diff_id):
        return Descriptor(layer_media_type("uncompressed"), diff_id, size)
    for row in store.index.compressed_forms(diff_id):
        if has_blob(store, row.digest):
            return Descriptor(layer_media_type(row.compression), row.digest, row.size)
    raise InternalError(f"layer {diff_id} of the image is not in the store")


def _store_image(store: Store, config_bytes: bytes, diff_ids: Sequence[str], platform: str,
                 tags: Sequence[str]) -> StoredImage:
    # Layers stay uncompressed in the store, as docker's image store keeps them: compressing is the
    # export's job (`images.manifest_for_export`, once per layer and remembered), not the build's.
    layers = [_layer(store, diff_id) for diff_id in diff_ids]
    config_digest, _ = store.put_bytes(config_bytes, OCI_CONFIG)
    manifest = Manifest(Descriptor(OCI_CONFIG, config_digest, len(config_bytes)), tuple(layers))
    data = manifest.to_bytes()
    manifest_digest, _ = store.put_bytes(data, OCI_MANIFEST)
    size = sum(layer.size for layer in layers) + len(config_bytes)
    store.index.record_image(manifest_digest, config_digest, platform, size)
    for tag in tags:
        store.index.set_tag(tag, manifest_digest)
    config: dict[str, Any] = json.loads(config_bytes)
    return StoredImage(tags[0] if tags else None, manifest_digest, data, manifest, config_digest, config_bytes,
                       config, tuple(diff_ids))
