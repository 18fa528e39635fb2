"""Loading image archives into the store: OCI layouts (dir or tar) and docker-archives (`pybuild load`).

Nothing is committed before it is verified: each layer is streamed into two uncommitted blob writers (as
given, and uncompressed) while both digests are checked against the manifest and the config's
`rootfs.diff_ids` (`layerstage.py`, shared with `pybuild pull`); all writers of an archive are committed
only once every layer of it has been checked, and tags are set last (see `images.py` for how images are kept).
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from pybuild.digest import parse_digest, sha256_digest
from pybuild.errors import ConfigError, StoreError
from pybuild.image.spec import (
    DOCKER_CONFIG,
    DOCKER_MANIFEST,
    INDEX_TYPES,
    OCI_MANIFEST,
    Descriptor,
    Index,
    Manifest,
    host_platform,
    layer_compression,
    layer_media_type,
)
from pybuild.record import record
from pybuild.store.images import (
    StoredImage,
    clean_member_path,
    config_diff_ids,
    normalize_name,
    parse_config,
)
from pybuild.store.layerstage import layer_known, stage_layer

if TYPE_CHECKING:
    from pybuild.store.store import Store

__all__ = ["load_archive"]

_DOC_LIMIT = 4 << 20  # manifests, configs, index.json and manifest.json are small
_CHUNK = 1 << 20

@record
class _Plan:
    """One image of an archive, checked but not stored yet."""

    names: tuple[str, ...]
    manifest_bytes: bytes | None  # None for a docker-archive entry: the manifest is made once layers are read
    config_bytes: bytes
    config: dict[str, Any]
    layers: tuple[tuple[str, Descriptor | None], ...]  # (member name, descriptor from the manifest)


class _Source:
    """The files of an archive being loaded: a directory (OCI layout) or a tar (any of the formats)."""

    def __init__(self, path: str, stack: ExitStack, tmp_dir: str) -> None:
        self.path = path
        self.root: str | None = None
        self.members: dict[str, tarfile.TarInfo] = {}
        if os.path.isdir(path):
            self.root = os.path.realpath(path)
            return
        plain = _plain_tar(path, stack, tmp_dir)
        try:
            self.tar = stack.enter_context(tarfile.open(plain, "r:"))
            for info in self.tar.getmembers():
                name = clean_member_path(info.name)
                if name is not None and info.isreg():
                    self.members[name] = info
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise StoreError(f"cannot load {path}: not a valid tar archive ({exc})") from None

    def has(self, name: str) -> bool:
        if self.root is None:
            return name in self.members
        return os.path.isfile(self._local(name))

    def _local(self, name: str) -> str:
        assert self.root is not None
        clean = clean_member_path(name) or ""
        full = os.path.realpath(os.path.join(self.root, clean))
        if not full.startswith(self.root + os.sep):
            raise StoreError(f"cannot load {self.path}: {name!r} points outside the layout")
        return full

    def open(self, name: str) -> BinaryIO:
        clean = clean_member_path(name) or ""
        try:
            if self.root is not None:
                return open(self._local(clean), "rb")
            info = self.members.get(clean)
            handle = self.tar.extractfile(info) if info is not None else None
        except OSError as exc:
            raise StoreError(f"cannot load {self.path}: cannot read {name}: {exc.strerror or exc}") from None
        if handle is None:
            raise StoreError(f"cannot load {self.path}: {name} is missing from the archive")
        return cast(BinaryIO, handle)

    def read(self, name: str, expected: Descriptor | None = None) -> bytes:
        """A small file; checked against `expected` (digest and size) when given."""
        try:
            with self.open(name) as f:
                data = f.read(_DOC_LIMIT + 1)
        except (tarfile.TarError, EOFError) as exc:
            raise StoreError(f"cannot load {self.path}: {name} is truncated ({exc})") from None
        if len(data) > _DOC_LIMIT:
            raise StoreError(f"cannot load {self.path}: {name} is too large for a JSON document")
        if expected is not None:
            actual = sha256_digest(data)
            if actual != expected.digest or len(data) != expected.size:
                raise StoreError(f"cannot load {self.path}: digest mismatch for {name}: expected "
                                 f"{expected.digest} ({expected.size} bytes), got {actual} ({len(data)} bytes)")
        return data


def _plain_tar(path: str, stack: ExitStack, tmp_dir: str) -> str:
    """`path` itself, or a temp copy decompressed when it is gzip or zstd (`docker save | gzip`)."""
    from pybuild.store.compress import decompress_stream, detect_compression

    try:
        with open(path, "rb") as f:
            kind = detect_compression(f.read(4))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if kind == "uncompressed":
        return path
    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="load-", dir=tmp_dir))
    plain = os.path.join(tmp, "archive.tar")
    with open(path, "rb") as src, open(plain, "wb") as out:
        shutil.copyfileobj(decompress_stream(src, kind), out, _CHUNK)
    return plain


def load_archive(store: Store, path: str) -> list[StoredImage]:
    """`pybuild load`: every image of an OCI layout (directory or tar) or docker-archive, verified, stored,
    and tagged with the names the archive gives. All or nothing: a bad blob anywhere stores nothing."""
    if not os.path.exists(path):
        raise ConfigError(f"cannot load {path}: no such file or directory")
    with store.shared_lock(), ExitStack() as stack:
        source = _Source(path, stack, store.blobs.tmp_dir)
        if source.has("index.json"):
            plans = _plan_oci(source)
        elif source.has("manifest.json"):
            plans = _plan_docker(source)
        else:
            raise StoreError(f"cannot load {path}: neither an OCI layout (index.json) nor a docker-archive "
                             "(manifest.json)")
        if not plans:
            raise StoreError(f"cannot load {path}: the archive holds no image manifest")
        commits: list[Any] = []
        staged = [_stage_image(store, source, plan, stack, commits) for plan in plans]
        for commit in commits:
            commit()
        return [_record_loaded(store, plan, manifest) for plan, manifest in zip(plans, staged)]


def _json_doc(source: _Source, name: str) -> Any:
    try:
        return json.loads(source.read(name))
    except ValueError as exc:
        raise StoreError(f"cannot load {source.path}: {name} is not valid JSON ({exc})") from None


def _plan_oci(source: _Source) -> list[_Plan]:
    index = Index.from_bytes(source.read("index.json"))
    repo_tags = _docker_repo_tags(source) if source.has("manifest.json") else {}
    plans = []
    for entry in index.manifests:
        desc = _pick_manifest(source, entry)
        if desc is None:
            continue
        manifest_bytes = source.read(_blob_path(desc.digest), desc)
        manifest = Manifest.from_bytes(manifest_bytes)
        config_bytes = source.read(_blob_path(manifest.config.digest), manifest.config)
        config = parse_config(config_bytes, len(manifest.layers))
        names = _oci_names(desc) or repo_tags.get(manifest.config.digest, ())
        layers = tuple((_blob_path(layer.digest), layer) for layer in manifest.layers)
        for _, layer in layers:
            layer_compression(layer.media_type)
        plans.append(_Plan(names, manifest_bytes, config_bytes, config, layers))
    return plans


def _pick_manifest(source: _Source, desc: Descriptor) -> Descriptor | None:
    """An image manifest descriptor of index.json; for a nested index, the host platform's manifest."""
    if desc.media_type not in INDEX_TYPES:
        return desc if desc.media_type in (OCI_MANIFEST, DOCKER_MANIFEST) else None
    nested = Index.from_bytes(source.read(_blob_path(desc.digest), desc))
    host = host_platform()
    candidates = [m for m in nested.manifests if m.media_type in (OCI_MANIFEST, DOCKER_MANIFEST)]
    for m in candidates:
        if m.platform is not None and (m.platform.os, m.platform.architecture) == (host.os, host.architecture):
            return Descriptor(m.media_type, m.digest, m.size, desc.annotations)
    raise StoreError(f"cannot load {source.path}: no manifest for {host} in index {desc.digest}")


def _oci_names(desc: Descriptor) -> tuple[str, ...]:
    """The image name an index.json entry gives: containerd's full name, or a full `ref.name`."""
    notes = desc.annotations_dict
    for key in ("io.containerd.image.name", "org.opencontainers.image.ref.name"):
        value = notes.get(key, "")
        if key.startswith("org.") and "/" not in value and ":" not in value:
            continue  # a bare tag (`latest`) names no repository
        if value:
            try:
                return (normalize_name(value),)
            except ConfigError:
                continue
    return ()


def _docker_repo_tags(source: _Source) -> dict[str, tuple[str, ...]]:
    """config digest → RepoTags, from a docker-archive's manifest.json (empty when unusable)."""
    out: dict[str, tuple[str, ...]] = {}
    try:
        for entry in _docker_entries(source):
            hexpart = os.path.basename(entry["Config"]).removesuffix(".json")
            out["sha256:" + hexpart] = _normalized_tags(entry.get("RepoTags"))
    except StoreError:
        return {}
    return out


def _docker_entries(source: _Source) -> list[dict[str, Any]]:
    doc = _json_doc(source, "manifest.json")
    if not isinstance(doc, list):
        raise StoreError(f"cannot load {source.path}: manifest.json must be an array")
    for i, entry in enumerate(doc):
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) \
                or not isinstance(entry.get("Layers"), list) \
                or not all(isinstance(layer, str) for layer in entry["Layers"]):
            raise StoreError(f"cannot load {source.path}: manifest.json entry {i} needs Config and Layers")
    return doc


def _normalized_tags(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(normalize_name(v) for v in value if isinstance(v, str))


def _plan_docker(source: _Source) -> list[_Plan]:
    plans = []
    for entry in _docker_entries(source):
        config_bytes = source.read(entry["Config"])
        claimed = os.path.basename(entry["Config"]).removesuffix(".json")
        if len(claimed) == 64 and sha256_digest(config_bytes) != "sha256:" + claimed:
            raise StoreError(f"cannot load {source.path}: digest mismatch for {entry['Config']}: content is "
                             f"{sha256_digest(config_bytes)}")
        config = parse_config(config_bytes, len(entry["Layers"]))
        layers = tuple((name, None) for name in entry["Layers"])
        plans.append(_Plan(_normalized_tags(entry.get("RepoTags")), None, config_bytes, config, layers))
    return plans


def _blob_path(digest: str) -> str:
    return "blobs/sha256/" + parse_digest(digest)[1] if digest.startswith("sha256:") else \
        "blobs/" + digest.replace(":", "/", 1)


def _stage_image(store: Store, source: _Source, plan: _Plan, stack: ExitStack,
                 commits: list[Any]) -> Manifest:
    """Read and check every layer of `plan` into uncommitted writers (their commits go to `commits`)."""
    layers = []
    for (member, desc), diff_id in zip(plan.layers, config_diff_ids(plan.config)):
        digest, size, compression = _stage_layer(store, source, member, desc, diff_id, stack, commits)
        media_type = desc.media_type if desc is not None else (
            layer_media_type(compression, oci=compression == "zstd"))
        layers.append(Descriptor(media_type, digest, size, desc.annotations if desc else ()))
    if plan.manifest_bytes is not None:
        return Manifest.from_bytes(plan.manifest_bytes)
    config = Descriptor(DOCKER_CONFIG, sha256_digest(plan.config_bytes), len(plan.config_bytes))
    return Manifest(config, tuple(layers), DOCKER_MANIFEST)


def _stage_layer(store: Store, source: _Source, member: str, desc: Descriptor | None, diff_id: str,
                 stack: ExitStack, commits: list[Any]) -> tuple[str, int, str]:
    """Stream one layer into writers and check it (`layerstage`); returns (digest, size, compression)."""
    if layer_known(store, desc, diff_id) and desc is not None:
        return desc.digest, desc.size, layer_compression(desc.media_type)
    raw = stack.enter_context(source.open(member))
    staged = stage_layer(store, raw, desc, diff_id, stack, where=f"cannot load {source.path}", name=member)
    commits.append(staged.commit)
    return staged.digest, staged.size, staged.compression


def _record_loaded(store: Store, plan: _Plan, manifest: Manifest) -> StoredImage:
    """Store the manifest and config of a checked image, its image row, then its tags."""
    data = plan.manifest_bytes if plan.manifest_bytes is not None else manifest.to_bytes()
    config_digest, _ = store.put_bytes(plan.config_bytes, manifest.config.media_type, manifest.config.digest)
    digest, _ = store.put_bytes(data, manifest.media_type)
    platform = "/".join(p for p in (plan.config.get("os"), plan.config.get("architecture"),
                                    plan.config.get("variant")) if isinstance(p, str) and p)
    size = sum(layer.size for layer in manifest.layers) + len(plan.config_bytes)
    store.index.record_image(digest, config_digest, platform, size, manifest.media_type)
    for name in plan.names:
        store.index.set_tag(name, digest)
    return StoredImage(plan.names[0] if plan.names else None, digest, data, manifest, config_digest,
                       plan.config_bytes, plan.config, config_diff_ids(plan.config))


