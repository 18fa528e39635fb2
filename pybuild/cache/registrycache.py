"""Build cache export and import through a registry tag: `--cache-to type=registry,ref=REG/NAME:TAG` (with
`,mode=min|max`) and `--cache-from type=registry,ref=REG/NAME:TAG`, as `docker buildx build` spells them.

Who uses it: `cache.backends` (`export_cache`, `open_cache_source`) hands a `type=registry` spec here, so
`api.build` sees one interface for both kinds of cache.

The format is the local cache's (`cache.transfer`): the tag names the very manifest a cache directory's
index.json lists, an OCI image manifest whose config (`application/vnd.pybuild.cache.config.v1+json`) maps
each cache key to a layer's diffID and gzip blob, and whose `layers` are those blobs. The same entries give
the same manifest digest wherever they are written. BuildKit's own registry cache is the same idea in
another format (`image-manifest=true`); distribution (v2.8 and later) accepts an OCI manifest with a
custom config media type, and checks on PUT that the config and every layer it lists are in the repository.

Export order is what keeps a shared tag whole while several builders export to it at once: the layer blobs
first (each skipped when the registry has it at that size already), then the config blob, then the
manifest PUT, which is the atomic switch. A manifest is put only after every blob it names is uploaded,
blobs are content-addressed and never rewritten, so a reader sees one exporter's whole cache or another's,
never a mix; the last PUT wins, as with BuildKit.

Import is lazy: nothing is asked of the registry until the build misses its local cache; then the manifest
and the config (a few hundred bytes per entry) are fetched once. A step whose key hits gets its layer as a
remote blob (`store.remote`): the store records where the gzip blob is and that it is that layer's
compressed form, and downloads it only when something reads it (a RUN on top of it unpacks it, an export
writes it out); its diffID is checked then (`store.layerread`). So a fully cached build moves no layer
bytes, and `--push` to the same registry mounts the layers from the cache repository (`BlobLocations`)
instead of downloading and uploading them, as BuildKit's lazy refs do.

A tag that does not exist is a ConfigError on the first fetch, which `StepRunner` turns into a
warning and builds without that cache (buildx: a missing cache is a warning), so the first run of
`--cache-from X --cache-to X` works; a registry failure (RegistryError) or a corrupt cache (StoreError)
does the same. An export that fails fails the build (BuildKit's `ignore-error=false`).
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, BinaryIO

from pybuild.cache.transfer import (
    DOC_LIMIT,
    CacheEntry,
    CacheSpec,
    ImportedCache,
    check_doc,
    encode_cache,
    read_entries,
)
from pybuild.errors import ConfigError, InternalError, StoreError
from pybuild.image.reference import Reference, parse_reference
from pybuild.image.spec import INDEX_TYPES, MANIFEST_TYPES, OCI_MANIFEST, Descriptor, layer_compression
from pybuild.store.remote import open_blob

if TYPE_CHECKING:
    from pybuild.registry.client import RegistryClient
    from pybuild.store.store import Store

__all__ = ["RegistryCacheSource", "export_registry_cache"]


def export_registry_cache(store: Store, spec: CacheSpec, entries: Sequence[tuple[str, str]], *,
                          client: RegistryClient | None = None) -> int:
    """Push `entries` ((cache key, layer diffID) pairs) as the cache at `spec.path` (a tag): blobs, then the
    config, then the manifest (see the module docstring); returns the number of entries pushed."""
    ref = _reference(spec)
    registry = client if client is not None else _client_for(ref)
    docs = encode_cache(store, entries)
    for layer in docs.manifest.layers:
        _push_blob(registry, ref.path, layer, functools.partial(open_blob, store, layer.digest, verify=True))
    _push_blob(registry, ref.path, docs.manifest.config, functools.partial(io.BytesIO, docs.config))
    registry.put_manifest(ref.path, ref.tag_or_latest, docs.manifest.to_bytes(), OCI_MANIFEST)  # last
    return docs.entries


def _push_blob(client: RegistryClient, repo: str, desc: Descriptor, opener: Callable[[], BinaryIO]) -> None:
    if client.blob_size(repo, desc.digest) == desc.size:
        return  # an earlier export (or the image's push) uploaded it
    client.upload_blob(repo, desc.digest, desc.size, opener)


class RegistryCacheSource(ImportedCache):
    """A `--cache-from type=registry` tag. Made by `backends.open_cache_source`; `StepRunner` calls
    `fetch` on a local cache miss. `client` is for tests (default: the shared client of the ref's host)."""

    def __init__(self, spec: CacheSpec, *, client: RegistryClient | None = None) -> None:
        self.ref = _reference(spec)
        super().__init__(spec.path)
        self._client = client

    def _registry(self) -> RegistryClient:
        if self._client is None:  # first called under the lock of `_load`, before any `_open_layer`
            self._client = _client_for(self.ref)
        return self._client

    flag = "ref"

    def _read_entries(self) -> dict[str, CacheEntry] | None:
        client = self._registry()
        found = client.head_manifest(self.ref.path, self.ref.digest or self.ref.tag_or_latest)
        if found is None:
            raise ConfigError(f"--cache-from ref {self.where}: not found",
                              hint="export one first with --cache-to type=registry,ref=REF")
        digest, media_type, size = found
        return read_entries(self._read_doc(Descriptor(media_type, digest, size)), media_type, self._read_doc)

    def _read_doc(self, desc: Descriptor) -> bytes:
        """A manifest or a config, checked against `desc`."""
        if desc.size > DOC_LIMIT:
            raise StoreError(f"{desc.digest} is too big for a {desc.media_type} ({desc.size} bytes)")
        client = self._registry()
        if desc.media_type in MANIFEST_TYPES or desc.media_type in INDEX_TYPES:
            data, _, _ = client.get_manifest(self.ref.path, desc.digest)
            return check_doc(desc, data)
        out = io.BytesIO()
        client.get_blob(self.ref.path, desc.digest, out, size=desc.size)
        return check_doc(desc, out.getvalue())

    def _bring(self, entry: CacheEntry, store: Store) -> None:
        """Record where the layer blob is (`store.remote`), its compressed-form row and its location for
        cross-repository mounts; no byte moves until something reads the layer."""
        from pybuild.registry import settings
        from pybuild.registry.locations import BlobLocations
        from pybuild.store.images import LOADED_LEVEL
        from pybuild.store.layerread import layer_present
        from pybuild.store.remote import RemoteBlob, record_remote

        if layer_present(store, entry.diff_id):
            return
        layer = entry.layer
        compression = layer_compression(layer.media_type)
        host = self.ref.domain  # the host `client_for` (and so `registry.blobsource`) is keyed by
        kind = "registry-insecure" if settings.is_insecure(host) else "registry"
        record_remote(store, [RemoteBlob(layer.digest, layer.size, layer.media_type,
                                         f"{kind}:{host}/{self.ref.path}")])
        store.index.record_compressed(entry.diff_id, compression, LOADED_LEVEL, layer.digest, layer.size)
        if entry.size is not None and store.index.layer_size(entry.diff_id) is None:
            store.index.record_layer(entry.diff_id, entry.size)  # the size the exporter describes it by
        BlobLocations(store).record(host, self.ref.path, [layer.digest])


def _reference(spec: CacheSpec) -> Reference:
    if spec.type != "registry":
        raise InternalError(f"registry cache: unsupported cache type {spec.type!r}")
    return parse_reference(spec.path)  # checked by parse_cache_from/parse_cache_to already


def _client_for(ref: Reference) -> RegistryClient:
    from pybuild.registry.client import client_for

    return client_for(ref.domain)
