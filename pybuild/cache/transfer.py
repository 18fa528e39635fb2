"""Build cache export and import: `--cache-to type=local,dest=DIR[,mode=min|max]` and
`--cache-from type=local,src=DIR` (a directory, here), `type=registry,ref=REG/NAME:TAG` (a registry tag,
in `cache.registrycache`), as `docker buildx build` spells them.

Who uses it: `api.build` parses the flags (`parse_cache_from`, `parse_cache_to`), hands one source per
`--cache-from` (`backends.open_cache_source`: a `LocalCacheSource` or a `registrycache.RegistryCacheSource`) to
`StepRunner` (which calls `fetch` for a key its local cache lacks) and calls `export_cache` once the
image is made (`backends.export_cache`), with the (cache key, layer diffID) pairs of the steps `mode` selects. The directory may be
carried to another machine: importing needs nothing but it.

This module owns what both kinds share: the flags, the format (`encode_cache`, `read_entries`) and the
verified copy of a layer into the store (`ImportedCache`, whose `fetch` both sources inherit), and the
local kind. `backends` picks the kind; the registry module is imported only for a `type=registry` cache
(it loads the registry client and httpx), and this module never imports it (it imports this one).

The directory is an OCI image layout (image-spec `image-layout.md`), so ordinary tools can copy, inspect
and push it (`skopeo inspect --raw oci:DIR` shows the manifest):

    DIR/oci-layout               {"imageLayoutVersion":"1.0.0"}
    DIR/index.json               an OCI index listing exactly one manifest: the current export
    DIR/blobs/sha256/<hex>       the manifest, its config and the layer blobs (of this and earlier exports)
    DIR/tmp/                     temp files of blobs being written (as BuildKit's local cache has ingest/)

The manifest (`application/vnd.oci.image.manifest.v1+json`) has as its config a blob of media type
`application/vnd.pybuild.cache.config.v1+json` holding canonical JSON (`digest.canonical_json`)

    {"version": 1, "entries": [{"key": "sha256:…", "diff_id": "sha256:…", "layer": "sha256:…",
                                "size": 1234}, …]}

one entry per cache key, sorted by key: `diff_id` is the layer's uncompressed digest, `layer` the digest of
its gzip blob, `size` the uncompressed size (optional: an importer that keeps the layer remote describes it
by diffID and size, as the exporting store does, so both make the same manifest). The manifest's `layers`
are those gzip blobs (`application/vnd.oci.image.layer.v1.tar+gzip`), each listed once even when several
keys share a layer. The same entries always give the same bytes.
A registry cache is this very manifest, pushed under the tag (`registrycache`).

Export: layers are compressed through `images.layer_blob(store, diff_id, "gzip")`, so a layer is
compressed once per store and the cache holds the very blob the image was exported with. Blobs are written
by a `cas.BlobStore` rooted at DIR (temp file, fsync, rename; an existing blob is never rewritten), and
`index.json` is replaced atomically last: a reader sees the previous export or the new one, whole. Blobs of
earlier exports stay in DIR while `index.json` lists only the new entries (BuildKit's local cache exporter
does the same; the directory grows until it is removed, see moby/buildkit#1896).

Import is lazy: `index.json`, the manifest and the config are read once, on the first `fetch`; a layer is
copied only when a build asks for its key. Each copy streams the cache's blob into two uncommitted blob
writers of the store, as given and decompressed, and checks the blob's digest and size and the layer's
diffID before committing anything, so a corrupt cache stores nothing and raises StoreError. The copy is
recorded as a loaded compressed form (`images.LOADED_LEVEL`): exporting the image again reuses that very
blob, so a build fed from the cache makes the image digest of the build that exported it.

A `--cache-from` directory that does not exist is a ConfigError here and a corrupt one a StoreError; the
build (`api`, `StepRunner`) turns both into a warning and goes on without that cache, as buildx does
("local cache import at DIR not found"), so the first run of `--cache-from X --cache-to X` works.
"""

from __future__ import annotations

import json
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, BinaryIO, Final

from pybuild.atomic import AtomicFile
from pybuild.digest import canonical_json, digest_hex, sha256_digest, validate_digest
from pybuild.errors import ConfigError, InternalError, StoreError
from pybuild.image.spec import (
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Index,
    Manifest,
    layer_media_type,
)
from pybuild.record import record
from pybuild.specparse import spec_fields
from pybuild.store.cas import BlobStore

if TYPE_CHECKING:
    from pybuild.store.store import Store

__all__ = ["CONFIG_MEDIA_TYPE", "DOC_LIMIT", "CacheEntry", "CacheExport", "CacheSpec", "ImportedCache",
           "LocalCacheSource", "check_doc", "encode_cache", "export_local_cache",
           "parse_cache_from", "parse_cache_to", "read_entries"]

CONFIG_MEDIA_TYPE: Final = "application/vnd.pybuild.cache.config.v1+json"
CACHE_VERSION: Final = 1
MODES: Final = ("min", "max")
_OCI_LAYOUT: Final = canonical_json({"imageLayoutVersion": "1.0.0"})
DOC_LIMIT: Final = 64 << 20  # index.json, the manifest and the config (about 200 bytes per entry)

# BuildKit's keys (docs.docker.com/build/cache/backends/{local,registry}), per cache type: those taken, those
# whose only value here is BuildKit's default (other values are refused), and those not available.
_FROM_KEYS: Final[Mapping[str, frozenset[str]]] = {"local": frozenset({"src"}),
                                                    "registry": frozenset({"ref"})}
_TO_KEYS: Final[Mapping[str, frozenset[str]]] = {"local": frozenset({"dest", "mode"}),
                                                  "registry": frozenset({"ref", "mode"})}
_WHERE_KEY: Final[Mapping[tuple[str, str], str]] = {
    ("--cache-from", "local"): "src", ("--cache-to", "local"): "dest",
    ("--cache-from", "registry"): "ref", ("--cache-to", "registry"): "ref",
}
_TO_FIXED: Final[Mapping[str, str]] = {"compression": "gzip", "oci-mediatypes": "true",
                                       "image-manifest": "true", "ignore-error": "false"}
_NOT_YET: Final[Mapping[str, frozenset[str]]] = {
    "--cache-from": frozenset({"digest", "tag"}),
    "--cache-to": frozenset({"compression-level", "force-compression", "tag"}),
}
TYPES: Final = ("local", "registry")


@record
class CacheSpec:
    """One parsed `--cache-from` / `--cache-to`. `path` says where the cache is: the directory (`src=` or
    `dest=`) for type=local, the image reference as given (`ref=`) for type=registry. `mode` (`min`: the
    final image's layers, `max`: every layer step) matters for `--cache-to` only."""

    type: str
    path: str
    mode: str = "min"  # BuildKit's default for cache export


# --- flags -------------------------------------------------------------------------------------------------


def parse_cache_from(text: str) -> CacheSpec:
    """Parse a `--cache-from` value (`type=local,src=DIR` or `type=registry,ref=REF`); ConfigError naming the
    flag and the bad part."""
    kind, fields = _fields("--cache-from", text)
    _check_keys("--cache-from", text, kind, fields, _FROM_KEYS[kind])
    return CacheSpec(kind, _where("--cache-from", text, kind, fields))


def parse_cache_to(text: str) -> CacheSpec:
    """Parse a `--cache-to` value (`type=local,dest=DIR` or `type=registry,ref=REF`, with `,mode=min|max`);
    ConfigError naming the bad part."""
    kind, fields = _fields("--cache-to", text)
    _check_keys("--cache-to", text, kind, fields, _TO_KEYS[kind] | _TO_FIXED.keys())
    for key, only in _TO_FIXED.items():
        value = fields.get(key)
        if value is not None and value.lower() != only:
            raise ConfigError(f"invalid --cache-to {text!r}: {key}={value} is not available yet "
                              f"(only {key}={only})")
    mode = fields.get("mode", "min").lower()
    if mode not in MODES:
        raise ConfigError(f"invalid --cache-to {text!r}: mode={fields['mode']} is not min or max")
    return CacheSpec(kind, _where("--cache-to", text, kind, fields), mode)


def _fields(flag: str, text: str) -> tuple[str, dict[str, str]]:
    """The cache type and the other key=value pairs of one CSV record (`specparse`: a quoted value may hold
    commas)."""
    if not text.strip():
        raise ConfigError(f"invalid {flag} {text!r}: empty", hint=f"e.g. {flag} {_EXAMPLE[flag]}")
    if "=" not in text:  # buildx reads a bare value as a registry ref; here a type is always required
        key = "src" if flag == "--cache-from" else "dest"
        raise ConfigError(f"invalid {flag} {text!r}: missing type=",
                          hint=f"for a directory: {flag} type=local,{key}={text.strip()}; "
                               f"for a registry: {flag} type=registry,ref={text.strip()}")
    fields = spec_fields(text.strip(), flag, shown=text, hint=f"e.g. {flag} {_EXAMPLE[flag]}")
    kind = fields.pop("type", None)
    if kind is None:
        raise ConfigError(f"invalid {flag} {text!r}: missing type=", hint=f"e.g. {flag} {_EXAMPLE[flag]}")
    if kind.lower() not in TYPES:
        raise ConfigError(f"invalid {flag} {text!r}: unknown cache type {kind!r}",
                          hint=f"cache types: {', '.join(TYPES)}")
    return kind.lower(), fields


_EXAMPLE: Final = {"--cache-from": "type=local,src=DIR", "--cache-to": "type=local,dest=DIR,mode=max"}


def _check_keys(flag: str, text: str, kind: str, fields: Mapping[str, str], allowed: Iterable[str]) -> None:
    known = frozenset(allowed)
    for key in sorted(fields):
        if key in _NOT_YET[flag]:
            raise ConfigError(f"invalid {flag} {text!r}: {key}= is not available yet")
        if key not in known:
            raise ConfigError(f"invalid {flag} {text!r}: unknown key {key!r}",
                              hint=f"type={kind} takes: {', '.join(sorted(known))}")


def _where(flag: str, text: str, kind: str, fields: Mapping[str, str]) -> str:
    """The directory or reference of the cache: present, not empty, and for a registry a valid reference
    (with a tag, not a digest, for an export: a push names a tag)."""
    key = _WHERE_KEY[flag, kind]
    value = fields.get(key)
    example = _EXAMPLE[flag] if kind == "local" else "type=registry,ref=registry.example.com/app:cache"
    if value is None:
        raise ConfigError(f"invalid {flag} {text!r}: missing {key}=", hint=f"e.g. {flag} {example}")
    if not value:
        raise ConfigError(f"invalid {flag} {text!r}: {key} is empty")
    if kind == "registry":
        from pybuild.image.reference import parse_reference

        try:
            ref = parse_reference(value)
        except ConfigError as exc:
            raise ConfigError(f"invalid {flag} {text!r}: {exc.message}") from None
        if flag == "--cache-to" and ref.digest is not None:
            raise ConfigError(f"invalid {flag} {text!r}: ref= names a digest; a cache is pushed to a tag")
    return value


# --- export ------------------------------------------------------------------------------------------------


@record
class CacheExport:
    """The documents of one cache export, made by `encode_cache`: the config blob's bytes and the manifest
    that names it and the layer blobs (which are in the store). Written by `export_local_cache` (as a directory)
    and `registrycache.export_registry_cache` (pushed)."""

    config: bytes
    manifest: Manifest
    entries: int


def encode_cache(store: Store, entries: Sequence[tuple[str, str]]) -> CacheExport:
    """The cache of `entries` ((cache key, layer diffID) pairs), each layer's gzip blob made in `store` if
    it has none yet (see the module docstring for the format)."""
    from pybuild.store.images import layer_blob

    layers: dict[str, Descriptor] = {}
    rows: list[dict[str, str | int]] = []
    for key, diff_id in sorted(_unique(entries).items()):
        digest, size = layer_blob(store, diff_id, "gzip")
        layers.setdefault(digest, Descriptor(layer_media_type("gzip"), digest, size))
        row: dict[str, str | int] = {"key": key, "diff_id": diff_id, "layer": digest}
        plain = store.index.layer_size(diff_id)
        if plain is not None:
            row["size"] = plain
        rows.append(row)
    config = canonical_json({"version": CACHE_VERSION, "entries": rows})
    config_desc = Descriptor(CONFIG_MEDIA_TYPE, sha256_digest(config), len(config))
    manifest = Manifest(config_desc, tuple(layers.values()))
    return CacheExport(config, manifest, len(rows))


def export_local_cache(store: Store, spec: CacheSpec, entries: Sequence[tuple[str, str]]) -> int:
    """Write `entries` ((cache key, layer diffID) pairs, already chosen by `spec.mode`) as the cache
    directory `spec` names (see the module docstring); returns the number of entries written. The entry
    point for both kinds is `backends.export_cache`."""
    if spec.type != "local":
        raise InternalError(f"export_cache: unsupported cache type {spec.type!r}")
    _unique(entries)  # a bad entry fails before the directory is made
    layout = _open_layout(spec.path)
    layout.clean_temps()  # temps of an export that was killed (a live writer's are locked and kept)
    docs = encode_cache(store, entries)
    for layer in docs.manifest.layers:
        _copy_out(store, layout, layer.digest, layer.size)
    layout.put_bytes(docs.config, expected=docs.manifest.config.digest)
    data = docs.manifest.to_bytes()
    manifest_digest, _ = layout.put_bytes(data)
    index = Index((Descriptor(OCI_MANIFEST, manifest_digest, len(data)),))
    _replace_file(spec.path, "oci-layout", _OCI_LAYOUT)
    _replace_file(spec.path, "index.json", index.to_bytes())  # last: it makes the new export visible
    return docs.entries


def _unique(entries: Sequence[tuple[str, str]]) -> dict[str, str]:
    chosen: dict[str, str] = {}
    for key, diff_id in entries:
        validate_digest(key)
        validate_digest(diff_id)
        if chosen.setdefault(key, diff_id) != diff_id:
            raise InternalError(f"export_cache: key {key} given with two layers ({chosen[key]}, {diff_id})")
    return chosen


def _open_layout(path: str) -> BlobStore:
    if os.path.lexists(path) and not os.path.isdir(path):
        raise ConfigError(f"--cache-to dest {path} exists and is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
        return BlobStore(path)
    except OSError as exc:
        raise ConfigError(f"cannot write the cache to {path}: {exc.strerror or exc}") from None


def _copy_out(store: Store, layout: BlobStore, digest: str, size: int) -> None:
    """Copy blob `digest` from the store into the layout (verified on the way) unless it is there already."""
    if layout.exists(digest):
        if layout.size(digest) != size:  # never rewritten, so say so rather than export a broken cache
            raise StoreError(f"cache blob {layout.path(digest)} has the wrong size; "
                             "remove the cache directory")
        return
    from pybuild.store.remote import open_blob

    with open_blob(store, digest, verify=True) as src:
        layout.put_file(src, expected=digest)


def _replace_file(directory: str, name: str, data: bytes) -> None:
    """Write `directory/name` atomically (`atomic.AtomicFile`: temp file, fsync, rename, fsync of the
    directory)."""
    try:
        out = AtomicFile(os.path.join(directory, name), mode=0o644, prefix=f".{name}-")
    except OSError as exc:
        raise ConfigError(f"cannot write the cache to {directory}: {exc.strerror or exc}") from None
    try:
        with out:
            out.write(data)
    except OSError as exc:
        raise StoreError(f"cannot write {name} of the cache at {directory}: {exc.strerror or exc}") from None


# --- import ------------------------------------------------------------------------------------------------


@record
class CacheEntry:
    """One entry of an imported cache: a cache key, its layer's diffID, the layer blob's descriptor and
    the layer's uncompressed size (None in a cache that does not say)."""

    key: str
    diff_id: str
    layer: Descriptor
    size: int | None = None


class ImportedCache(ABC):
    """What every `--cache-from` source shares: the entries, read once (lazily, on the first `fetch`), and
    one `_bring` at a time per layer. Thread-safe.

    Subclasses say where the cache is (`where`, for messages) and supply `_read_entries` (the index) and
    `_bring` (make one entry's layer available in a store: a directory cache copies it in, verified; a
    registry cache records where the blob is, `store.remote`, so it is fetched only if it is read).
    """

    flag = "src"  # the --cache-from field naming `where`, for messages

    def __init__(self, where: str) -> None:
        self.where = where
        self._lock = threading.Lock()
        self._entries: dict[str, CacheEntry] | None = None
        self._copying: dict[str, threading.Lock] = {}  # layer digest → held while it is copied

    def fetch(self, key: str, store: Store) -> str | None:
        """If the exported cache has an entry for cache key `key`: make its layer available in `store`
        (`_bring`; its blob is recorded as the compressed form of its diffID, as `store.layerread` and
        `images.layer_blob` expect) and return the layer's diffID; else None. A corrupt blob is a
        StoreError and stores nothing."""
        entry = self._load().get(key)
        if entry is None:
            return None
        with self._layer_lock(entry.layer.digest):
            self._bring(entry, store)
        return entry.diff_id

    def keys(self) -> frozenset[str]:
        """The cache keys the cache holds (reads its index if not done yet)."""
        return frozenset(self._load())

    @abstractmethod
    def _read_entries(self) -> dict[str, CacheEntry] | None:
        """The cache's entries by key (its index, read once; `read_entries`): None when what is there
        holds no pybuild cache, StoreError when it is corrupt (`_load` says which cache)."""

    @abstractmethod
    def _bring(self, entry: CacheEntry, store: Store) -> None:
        """Make `entry`'s layer available in `store` (see the class docstring)."""

    def _load(self) -> dict[str, CacheEntry]:
        with self._lock:
            if self._entries is None:
                try:
                    entries = self._read_entries()
                except StoreError as exc:
                    raise StoreError(f"corrupt cache at {self.where}: {exc.message}") from None
                if entries is None:
                    raise ConfigError(f"--cache-from {self.flag} {self.where} holds no pybuild build cache",
                                      hint="it was not written by pybuild build --cache-to")
                self._entries = entries
            return self._entries

    def _layer_lock(self, digest: str) -> threading.Lock:
        with self._lock:
            return self._copying.setdefault(digest, threading.Lock())


class LocalCacheSource(ImportedCache):
    """A --cache-from directory. Made by `api.build` (through `backends.open_cache_source`) for each `--cache-from`;
    `StepRunner` calls `fetch` on a local cache miss."""

    def __init__(self, spec: CacheSpec) -> None:
        if spec.type != "local":
            raise InternalError(f"LocalCacheSource: unsupported cache type {spec.type!r}")
        if not os.path.isdir(spec.path):
            raise ConfigError(f"--cache-from src {spec.path}: no such directory",
                              hint="export one first with --cache-to type=local,dest=DIR")
        super().__init__(spec.path)
        self.spec = spec

    def _read_entries(self) -> dict[str, CacheEntry] | None:
        return _read_cache(self.spec.path)

    def _bring(self, entry: CacheEntry, store: Store) -> None:
        """Copy the layer in (both forms, verified), unless the store has its tar already."""
        if not store.blobs.exists(entry.diff_id):
            _copy_in(self.where, entry, store, lambda: self._open_layer(entry))
        elif store.index.layer_size(entry.diff_id) is None:  # a copy killed before it was recorded
            store.index.record_layer(entry.diff_id, store.blobs.size(entry.diff_id))

    def _open_layer(self, entry: CacheEntry) -> BinaryIO:
        try:
            return open(_blob_path(self.spec.path, entry.layer.digest), "rb")
        except OSError as exc:
            raise StoreError(f"corrupt cache at {self.where}: cannot read layer {entry.layer.digest} of "
                             f"{entry.key}: {exc.strerror or exc}") from None


def _read_cache(root: str) -> dict[str, CacheEntry] | None:
    """The entries of the cache layout at `root` (index.json → our manifest → its config); see
    `ImportedCache._read_entries`."""
    try:
        with open(os.path.join(root, "index.json"), "rb") as f:
            data = f.read(DOC_LIMIT + 1)
    except FileNotFoundError:
        raise ConfigError(f"--cache-from src {root} is not a cache directory (no index.json)",
                          hint="export one with --cache-to type=local,dest=DIR") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the cache at {root}: {exc.strerror or exc}") from None
    return read_entries(data, OCI_INDEX, lambda desc: _read_doc(root, desc))


def read_entries(data: bytes, media_type: str,
                 read: Callable[[Descriptor], bytes]) -> dict[str, CacheEntry] | None:
    """The entries of a cache whose top document is `data`: an OCI index listing the cache manifest (a
    layout's index.json) or the manifest itself (a registry tag). `read` returns a blob's bytes checked
    against its descriptor (`check_doc`). None when it holds no pybuild cache; StoreError when corrupt."""
    if media_type == OCI_INDEX:
        index = Index.from_bytes(data)
        for desc in index.manifests:
            if desc.media_type == OCI_MANIFEST:
                found = _manifest_entries(Manifest.from_bytes(read(desc)), read)
                if found is not None:
                    return found
    elif media_type == OCI_MANIFEST:
        return _manifest_entries(Manifest.from_bytes(data), read)
    return None


def _manifest_entries(manifest: Manifest,
                      read: Callable[[Descriptor], bytes]) -> dict[str, CacheEntry] | None:
    if manifest.config.media_type != CONFIG_MEDIA_TYPE:
        return None
    return _parse_config(read(manifest.config), manifest)


def check_doc(desc: Descriptor, data: bytes) -> bytes:
    """`data` if it is the blob `desc` names (digest and size); else StoreError."""
    if len(data) != desc.size or sha256_digest(data) != desc.digest:
        raise StoreError(f"blob {desc.digest} does not match its digest")
    return data


def _read_doc(root: str, desc: Descriptor) -> bytes:
    """A small blob of the layout, checked against its descriptor's digest and size."""
    if desc.size > DOC_LIMIT:
        raise StoreError(f"{desc.digest} is too big for a {desc.media_type} ({desc.size} bytes)")
    try:
        with open(_blob_path(root, desc.digest), "rb") as f:
            data = f.read(desc.size + 1)
    except FileNotFoundError:
        raise StoreError(f"blob {desc.digest} is missing") from None
    except OSError as exc:
        raise StoreError(f"cannot read blob {desc.digest}: {exc.strerror or exc}") from None
    return check_doc(desc, data)


def _parse_config(data: bytes, manifest: Manifest) -> dict[str, CacheEntry]:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise StoreError(f"cache config is not JSON ({exc})") from None
    listed = doc.get("entries") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or doc.get("version") != CACHE_VERSION or not isinstance(listed, list):
        version = doc.get("version") if isinstance(doc, dict) else None
        raise StoreError(f"unsupported cache config (version {version!r}, "
                         f"this pybuild reads {CACHE_VERSION})")
    layers = {layer.digest: layer for layer in manifest.layers}
    entries: dict[str, CacheEntry] = {}
    for item in doc["entries"]:
        key, diff_id, layer = (_field(item, name) for name in ("key", "diff_id", "layer"))
        if layer not in layers:
            raise StoreError(f"entry {key} names layer {layer}, which the manifest does not list")
        size = item.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise StoreError(f"cache entry {key} has a bad size: {size!r}"[:300])
        entries[key] = CacheEntry(key, diff_id, layers[layer], size)
    return entries


def _field(item: Any, name: str) -> str:
    value = item.get(name) if isinstance(item, dict) else None
    if not isinstance(value, str):
        raise StoreError(f"cache entry without a {name!r} string: {item!r}"[:300])
    return validate_digest(value)


def _blob_path(root: str, digest: str) -> str:
    return os.path.join(root, "blobs", "sha256", digest_hex(digest))


def _copy_in(where: str, entry: CacheEntry, store: Store, open_layer: Callable[[], BinaryIO]) -> None:
    """Copy the layer of `entry` (read from `open_layer()`) into `store`: as given and decompressed, its
    digest, size and diffID checked before anything is committed (`store.layerstage`, as a load does)."""
    from pybuild.store.layerstage import stage_layer

    try:
        with open_layer() as src, ExitStack() as stack:
            where_text, name = f"corrupt cache at {where}", f"{entry.layer.digest} of {entry.key}"
            stage_layer(store, src, entry.layer, entry.diff_id, stack, where=where_text, name=name).commit()
    except OSError as exc:
        raise StoreError(f"cannot read the cache at {where}: layer {entry.layer.digest}: "
                         f"{exc.strerror or exc}") from None
