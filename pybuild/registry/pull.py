"""Pulling images from a registry into the local store: `pybuild pull`, and `FROM` / `COPY --from=image`.

Who uses it: the CLI (`pull_image`), the build (`ImageResolver`: resolve-or-pull, once per reference and
build). Blobs go through `registry.client`; what a pulled image becomes in the store is what `pybuild load`
makes of an archive (`store/layerstage.py` does the checking for both).

A pull, step by step:
1. The manifest by tag or digest. An index (or docker manifest list) is narrowed to one platform: the one
   asked for (`--platform`, `FROM --platform`), else the host's; matching is containerd's (os and
   architecture after normalisation, the variant when one is asked for). None there is an error naming
   what there is: `no linux/s390x image in REF: available: linux/amd64, linux/arm64`.
2. The config (from the store when it is there), checked against the manifest (`images.parse_config`).
3. Only the layers the store lacks, at most `jobs` at a time. Each download goes straight into an
   uncommitted blob (`layerstage.stage_download`): the registry client checks its digest and size, and
   resumes a cut-off download without writing a byte twice. A layer is kept as the registry sent it; its
   diffID is checked when it is first decompressed (`store/layerread.py`: unpacking it for a build,
   exporting it), as containerd does, so a pull hashes each byte once and decompresses nothing.
4. Once every layer is checked: the layer blobs are committed, then the config, the manifest and the
   `images` row; the tag is set last. Any failure before that stores nothing (uncommitted writers go).

Names: a pull by tag sets the tag (`127.0.0.1:5000/app:1`); a pull by digest records `REPO@DIGEST`
(`images.pinned_name`), pointing at the platform manifest pulled (also when the digest names an index), so
a FROM pinned by digest resolves locally and never asks the registry again.

Errors are one line: the client's RegistryErrors (unreachable host, 401/403 with the scope, manifest
unknown, digest mismatch), ConfigError for a bad reference, and `cannot pull REF: ...` for a document or
blob that does not check out.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, Final

from pybuild.errors import ConfigError, PybuildError, RegistryError, StoreError, UserError
from pybuild.image.spec import (
    DOCKER_CONFIG,
    OCI_CONFIG,
    Descriptor,
    Index,
    Manifest,
    Platform,
    host_platform,
    layer_compression,
    normalize_platform,
    parse_document,
    parse_platform,
)
from pybuild.record import record
from pybuild.units import human_size

if TYPE_CHECKING:
    from pybuild.image.reference import Reference
    from pybuild.registry.client import RegistryClient
    from pybuild.store.images import StoredImage
    from pybuild.store.layerstage import StagedDownload
    from pybuild.store.store import Store

__all__ = ["ImageResolver", "PullResult", "pull_image", "select_platform"]

JOBS: Final = 4
_CONFIG_LIMIT: Final = 8 << 20
Report = Callable[[str], None]


@record
class PullResult:
    """What `pull_image` did: the image as stored, the name it was stored under, and the bytes moved."""

    image: StoredImage
    name: str
    downloaded: int  # layers fetched from the registry
    present: int  # layers the store had already
    size: int  # bytes of the layers fetched


def pull_image(store: Store, name: str, *, platform: str | Platform | None = None, jobs: int = JOBS,
               report: Report | None = None) -> PullResult:
    """Pull `name` into `store` (see the module docstring). `platform` None: the host's, and a single
    manifest for another platform is accepted; given, it must match."""
    from pybuild.image.reference import parse_reference

    ref = parse_reference(name)
    wanted = _platform(platform)
    with store.shared_lock():
        return _Pull(store, ref, name, wanted, explicit=platform is not None, jobs=jobs, report=report).run()


def _platform(value: str | Platform | None) -> Platform:
    if value is None:
        return host_platform()
    return normalize_platform(value) if isinstance(value, Platform) else parse_platform(value)


def select_platform(index: Index, wanted: Platform, shown: str) -> Descriptor:
    """The image manifest of `index` for `wanted` (containerd's matching; see the module docstring)."""
    images = [m for m in index.manifests if m.platform is not None and m.media_type in _MANIFEST_TYPES
              and m.platform.os != "unknown"]  # BuildKit's attestation manifests say unknown/unknown
    exact = [m for m in images if m.platform is not None and _key(m.platform) == _key(wanted)]
    loose = [m for m in images if m.platform is not None and wanted.variant is None
             and _key(m.platform)[:2] == _key(wanted)[:2]]
    if exact or loose:
        return (exact or loose)[0]
    available = sorted({str(normalize_platform(m.platform)) for m in images if m.platform is not None})
    raise RegistryError(f"no {wanted} image in {shown}: available: {', '.join(available) or 'none'}")


def _key(platform: Platform) -> tuple[str, str, str | None]:
    normal = normalize_platform(platform)
    return normal.os, normal.architecture, normal.variant


_MANIFEST_TYPES: Final = frozenset({"application/vnd.oci.image.manifest.v1+json",
                                    "application/vnd.docker.distribution.manifest.v2+json"})


class _Pull:
    """One pull: the steps of the module docstring, in `run`."""

    def __init__(self, store: Store, ref: Reference, shown: str, wanted: Platform, *, explicit: bool,
                 jobs: int, report: Report | None) -> None:
        from pybuild.registry.client import client_for

        self.store, self.ref, self.shown, self.wanted, self.explicit = store, ref, shown, wanted, explicit
        self.jobs = max(1, jobs)
        self.report = report
        self.client: RegistryClient = client_for(ref.domain)
        self.repo = ref.path
        self.where = f"cannot pull {shown}"

    def say(self, text: str) -> None:
        if self.report is not None:
            self.report(text)

    def run(self) -> PullResult:
        from pybuild.store.images import config_diff_ids, pinned_name
        from pybuild.store.layerstage import commit_downloads, layer_known

        digest, manifest_bytes, manifest = self._manifest()
        config_bytes, config = self._config(manifest)
        diff_ids = config_diff_ids(config)
        self._checked(lambda: [layer_compression(layer.media_type) for layer in manifest.layers])
        missing = [(d, diff_id) for d, diff_id in zip(manifest.layers, diff_ids)
                   if not layer_known(self.store, d, diff_id)]
        missing = list({d.digest: (d, diff_id) for d, diff_id in missing}.values())
        total = sum(d.size for d, _ in missing)
        self.say(f"{self.shown}: {digest}: {len(missing)} layer(s) to download ({human_size(total)}), "
                 f"{len(manifest.layers) - len(missing)} already in the store")
        with ExitStack() as stack:
            commit_downloads(self.store, self._layers(missing, stack))
            stored = pinned_name(self.ref.normalized) if self.ref.digest else self.ref.normalized
            image = self._record(digest, manifest_bytes, manifest, config_bytes, config, stored)
        return PullResult(image, stored, len(missing), len(manifest.layers) - len(missing), total)

    def _checked(self, read: Callable[[], Any]) -> Any:
        """`read()`, its StoreError said as `cannot pull REF: ...` (a bad document from the registry)."""
        try:
            return read()
        except StoreError as exc:
            raise RegistryError(f"{self.where}: {exc.message}") from None

    def _manifest(self) -> tuple[str, bytes, Manifest]:
        reference = self.ref.digest or self.ref.tag_or_latest
        data, _, digest = self.client.get_manifest(self.repo, reference)
        doc = self._checked(lambda: parse_document(data))
        if isinstance(doc, Index):
            chosen = select_platform(doc, self.wanted, self.shown)
            data, _, digest = self.client.get_manifest(self.repo, chosen.digest)
            doc = self._checked(lambda: parse_document(data))
            if not isinstance(doc, Manifest):
                raise RegistryError(f"{self.where}: the index entry for {self.wanted} is another index")
        if doc.config.media_type not in (OCI_CONFIG, DOCKER_CONFIG):
            raise RegistryError(f"{self.where}: not a container image (its config is "
                                f"{doc.config.media_type})")
        return digest, data, doc

    def _config(self, manifest: Manifest) -> tuple[bytes, dict[str, Any]]:
        from pybuild.store.images import parse_config

        desc = manifest.config
        if self.store.blobs.exists(desc.digest):
            data = self.store.blobs.read_bytes(desc.digest)
        else:
            if desc.size > _CONFIG_LIMIT:
                raise RegistryError(f"{self.where}: its config is {desc.size} bytes, too large for a config")
            out = io.BytesIO()
            self.client.get_blob(self.repo, desc.digest, out, size=desc.size)
            data = out.getvalue()
        config: dict[str, Any] = self._checked(lambda: parse_config(data, len(manifest.layers)))
        platform = Platform(str(config.get("os") or ""), str(config.get("architecture") or ""),
                            config.get("variant") if isinstance(config.get("variant"), str) else None)
        if self.explicit and _key(platform)[:2] != _key(self.wanted)[:2]:
            raise RegistryError(f"no {self.wanted} image in {self.shown}: available: {platform}")
        return data, config

    def _layers(self, missing: list[tuple[Descriptor, str]], stack: ExitStack) -> list[StagedDownload]:
        """Download and stage `missing` (at most `jobs` at once); every writer ends up held by `stack`."""
        if not missing:
            return []
        if len(missing) == 1 or self.jobs == 1:
            return [self._layer(desc, diff_id, stack) for desc, diff_id in missing]
        from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

        with ThreadPoolExecutor(max_workers=min(self.jobs, len(missing)),
                                thread_name_prefix="pull") as pool:
            futures = [pool.submit(self._own_layer, desc, diff_id) for desc, diff_id in missing]
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for future in pending:
                future.cancel()
            wait(futures)
        staged: list[StagedDownload] = []
        errors: list[BaseException] = []
        for future in futures:
            if future.cancelled():
                continue
            error = future.exception()
            if error is not None:
                errors.append(error)
                continue
            layer, own = future.result()
            stack.enter_context(own)
            staged.append(layer)
        if errors:
            raise next((e for e in errors if isinstance(e, PybuildError)), errors[0])
        return staged

    def _own_layer(self, desc: Descriptor, diff_id: str) -> tuple[StagedDownload, ExitStack]:
        with ExitStack() as own:
            layer = self._layer(desc, diff_id, own)
            return layer, own.pop_all()

    def _layer(self, desc: Descriptor, diff_id: str, stack: ExitStack) -> StagedDownload:
        """One layer downloaded into an uncommitted blob (the client checks its digest and size)."""
        from pybuild.store.layerstage import stage_download

        layer = stage_download(self.store, desc, diff_id, stack,
                               lambda out: self.client.get_blob(self.repo, desc.digest, out, size=desc.size),
                               where=self.where, name=desc.digest)
        self.say(f"{self.shown}: {desc.digest}: downloaded ({human_size(desc.size)})")
        return layer

    def _record(self, digest: str, data: bytes, manifest: Manifest, config_bytes: bytes,
                config: dict[str, Any], name: str) -> StoredImage:
        from pybuild.registry.locations import BlobLocations
        from pybuild.store.images import StoredImage, config_diff_ids

        store = self.store
        store.put_bytes(config_bytes, manifest.config.media_type, manifest.config.digest)
        store.put_bytes(data, manifest.media_type, digest)
        platform = "/".join(p for p in (config.get("os"), config.get("architecture"), config.get("variant"))
                            if isinstance(p, str) and p)
        size = sum(layer.size for layer in manifest.layers) + len(config_bytes)
        store.index.record_image(digest, manifest.config.digest, platform, size, manifest.media_type)
        BlobLocations(store).record(self.client.host, self.repo,
                                    [manifest.config.digest, *(layer.digest for layer in manifest.layers)])
        store.index.set_tag(name, digest)
        return StoredImage(name, digest, data, manifest, manifest.config.digest, config_bytes, config,
                           config_diff_ids(config))




# --- resolve-or-pull, for a build ----------------------------------------------------------------------


class _Entry:
    __slots__ = ("error", "image", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.image: StoredImage | None = None
        self.error: UserError | None = None


class ImageResolver:
    """The images a build's `FROM` and `COPY --from=image` name: from the store, else pulled.

    With `pull` (`--pull`), a reference by tag is pulled even when the store has it (a digest is
    immutable: a local one is used). A local image for another platform than the one asked for counts as
    missing. Each (reference, platform) is resolved once per build, whatever the threads asking (its error
    too, so the planner and the step that reports it at its FROM line see the same one). Nothing here
    imports the registry client unless a pull happens: a cached rebuild stays offline and fast.
    """

    def __init__(self, store: Store, *, pull: bool = False, report: Report | None = None) -> None:
        self.store = store
        self.pull = pull
        self.report = report
        self.pulled: list[str] = []
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str | None], _Entry] = {}

    def resolve(self, ref: str, platform: str | None = None) -> StoredImage:
        """The image `ref` names, for `platform` ("os/arch[/variant]"; None: any)."""
        with self._lock:
            entry = self._entries.setdefault((ref, platform), _Entry())
        with entry.lock:
            if entry.image is None and entry.error is None:
                try:
                    entry.image = self._resolve(ref, platform)
                except UserError as exc:
                    entry.error = exc
        if entry.error is not None:
            raise entry.error
        assert entry.image is not None
        return entry.image

    def _resolve(self, ref: str, platform: str | None) -> StoredImage:
        from pybuild.image.reference import parse_reference
        from pybuild.store.images import resolve_image

        wanted = parse_platform(platform) if platform else None
        try:
            pinned = parse_reference(ref).digest is not None
        except ConfigError:
            return resolve_image(self.store, ref)  # an image ID (or a bad name): the store's answer
        with self._lock:
            pulled = ref in self.pulled  # another platform key pulled it in this build: once is enough
        if not self.pull or pinned or pulled:
            try:
                image = resolve_image(self.store, ref)
            except StoreError:
                image = None
            if image is not None and (wanted is None or _same_platform(image, wanted)):
                return image
        if self.report is not None:
            self.report(f"pulling {ref}")
        # for the host's platform, a single-platform image of another one is taken (BuildKit warns; the
        # RUN steps will fail): only a platform asked for is enforced
        strict = wanted is not None and _key(wanted) != _key(host_platform())
        result = pull_image(self.store, ref, platform=wanted if strict else None, report=self.report)
        with self._lock:
            self.pulled.append(ref)
        return result.image


def _same_platform(image: StoredImage, wanted: Platform) -> bool:
    config = image.config
    os_name, arch = config.get("os"), config.get("architecture")
    if not isinstance(os_name, str) or not isinstance(arch, str):
        return True  # an image that does not say: take it as the user's
    variant = config.get("variant") if isinstance(config.get("variant"), str) else None
    have = _key(Platform(os_name, arch, variant))
    want = _key(wanted)
    return have[:2] == want[:2] and (want[2] is None or have[2] is None or have[2] == want[2])
