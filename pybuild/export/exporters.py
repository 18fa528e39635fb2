"""Exporters: write an image from the store as an OCI layout, a docker-archive, a directory or a tar.

Who uses it: the CLI (`pybuild save`, `--output`) and `api.build`. Each exporter is an `Exporter`
(a Protocol); `export_image` picks one from
an `OutputSpec` and returns the manifest descriptor of what was written.

Determinism: every archive is written with its entries sorted, mtime 0, uid/gid 0, no user or group names,
fixed modes, in the ustar format; JSON documents are canonical. The same image exported twice gives the same
bytes. Layer blobs are compressed once per (diffID, compression, level) and remembered by the store
(`images.layer_blob`), so a second export never compresses again.

Nothing partial: a file output is written to a temp file beside its destination and renamed into place at the
end; a directory output is built in a temp directory beside it and renamed. A failure removes the temp, and
the next export beside it removes what a killed one left (`destination.py`, which also says errors at the
destination in one line naming it).

docker-archive layout: `manifest.json` (Config, RepoTags, Layers) and `repositories`, with the config and
the layers under `blobs/sha256/<hex>` beside an OCI `index.json` and `oci-layout`, as docker >= 25 and
BuildKit's docker exporter write it. Both `docker load` and `podman load` read `manifest.json` and open the
paths it names (checked with podman 4.3 for compressed and uncompressed layers; the legacy `<hex>/layer.tar`
form loads too, but it would store the same bytes twice next to the OCI layout).
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO, Protocol

from pybuild.digest import canonical_json, digest_hex
from pybuild.errors import ConfigError, StoreError
from pybuild.export.destination import dest_error, new_dir, new_file, standard_output
from pybuild.export.outputs import OutputSpec
from pybuild.image.spec import Descriptor
from pybuild.store.remote import blob_size, open_blob

if TYPE_CHECKING:
    from pybuild.store.images import ExportedManifest, StoredImage
    from pybuild.store.store import Store

__all__ = ["Exporter", "export_image", "exporter_for"]

Opener = Callable[[], BinaryIO]
_CHUNK = 1 << 20
OCI_LAYOUT = canonical_json({"imageLayoutVersion": "1.0.0"})
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


class Exporter(Protocol):
    """Writes one image somewhere. Returns the descriptor of the manifest it wrote or used."""

    def export(self, store: Store, image: StoredImage, spec: OutputSpec,
               stdout: BinaryIO | None = None) -> Descriptor: ...


def export_image(store: Store, image: StoredImage, spec: OutputSpec,
                 stdout: BinaryIO | None = None) -> Descriptor:
    """Export `image` as `spec` says; `stdout` receives tar outputs whose dest is `-`."""
    return exporter_for(spec).export(store, image, spec, stdout)


def exporter_for(spec: OutputSpec) -> Exporter:
    """The exporter for `spec.type`."""
    exporters: dict[str, Exporter] = {
        "oci": OCIExporter(), "docker": DockerExporter(), "local": LocalExporter(), "tar": TarExporter(),
        "image": ImageStoreExporter(),
    }
    return exporters[spec.type]


# --- image exporters -------------------------------------------------------------------------------------


class OCIExporter:
    """An OCI image layout (image-spec `image-layout.md`): a tar, or a directory with `tar=false`."""

    def export(self, store: Store, image: StoredImage, spec: OutputSpec,
               stdout: BinaryIO | None = None) -> Descriptor:
        exported = _manifest(store, image, spec)
        archive = _layout(store, exported, _ref_annotations(image, spec))
        _publish(archive, spec, stdout)
        return Descriptor.from_dict(exported.descriptor)


class DockerExporter:
    """A docker-archive (`docker save` format) that is also an OCI layout; see the module docstring."""

    def export(self, store: Store, image: StoredImage, spec: OutputSpec,
               stdout: BinaryIO | None = None) -> Descriptor:
        exported = _manifest(store, image, spec)
        tags = _repo_tags(image, spec)
        archive = _layout(store, exported, _ref_annotations(image, spec))
        config_hex = digest_hex(exported.config_digest)
        archive.add_bytes("manifest.json", canonical_json([{
            "Config": f"blobs/sha256/{config_hex}",
            "RepoTags": list(tags),
            "Layers": [f"blobs/sha256/{digest_hex(d)}" for d in exported.layer_digests],
        }]))
        repositories: dict[str, dict[str, str]] = {}
        for tag in tags:
            repo, _, name = tag.rpartition(":")
            repositories.setdefault(repo, {})[name] = config_hex
        if repositories:
            archive.add_bytes("repositories", canonical_json(repositories))
        _publish(archive, spec, stdout)
        return Descriptor.from_dict(exported.descriptor)


class ImageStoreExporter:
    """`type=image`: keep the image in the local store under the spec's names; with `push=true` (or
    `type=registry`) also push each name to its registry (`registry.push`, with the spec's compression)."""

    def export(self, store: Store, image: StoredImage, spec: OutputSpec,
               stdout: BinaryIO | None = None) -> Descriptor:
        from pybuild.store.images import store_manifest, tag_image

        exported = _manifest(store, image, spec)
        if exported.manifest_digest != image.manifest_digest:
            store_manifest(store, exported, image.platform)
        for name in spec.names:
            tag_image(store, exported.manifest_digest, name)
        if spec.push:
            from pybuild.registry.push import push_image

            for name in spec.names:
                push_image(store, image, name, compression=spec.compression, level=spec.compression_level,
                           oci_mediatypes=spec.use_oci_mediatypes, force=spec.force_compression)
        return Descriptor.from_dict(exported.descriptor)


class LocalExporter:
    """`type=local`: the image's final filesystem written into a directory (layers applied in order)."""

    def export(self, store: Store, image: StoredImage, spec: OutputSpec,
               stdout: BinaryIO | None = None) -> Descriptor:
        from pybuild.store.apply import TargetError
        from pybuild.store.images import apply_image

        assert spec.dest is not None
        with new_dir(spec.dest) as tmp:
            try:
                apply_image(store, image, tmp)
            except TargetError as exc:
                raise dest_error(exc.os_error, spec.dest, exc.entry) from exc
        return Descriptor.from_dict(image.descriptor)


class TarExporter:
    """`type=tar`: the image's final filesystem as one deterministic tar (to a file or standard output)."""

    def export(self, store: Store, image: StoredImage, spec: OutputSpec,
               stdout: BinaryIO | None = None) -> Descriptor:
        from pybuild.store.images import write_flat_tar

        assert spec.dest is not None
        if spec.dest == "-":
            if stdout is None:
                raise ConfigError("type=tar,dest=- needs standard output")
            with standard_output(stdout) as out:
                write_flat_tar(store, image, out)
        else:
            with new_file(spec.dest) as out:
                write_flat_tar(store, image, out)
        return Descriptor.from_dict(image.descriptor)


# --- layouts ----------------------------------------------------------------------------------------------


def _manifest(store: Store, image: StoredImage, spec: OutputSpec) -> ExportedManifest:
    from pybuild.store.images import manifest_for_export

    return manifest_for_export(store, image, compression=spec.compression, level=spec.compression_level,
                               oci_mediatypes=spec.use_oci_mediatypes, force=spec.force_compression)


def _ref_annotations(image: StoredImage, spec: OutputSpec) -> tuple[dict[str, str], ...]:
    """index.json annotations per name, as BuildKit writes them: the tag as `org.opencontainers.image.ref.name`
    (what skopeo's and umoci's `layout:TAG` look up) and the full name as `io.containerd.image.name`."""
    from pybuild.image.reference import parse_reference

    names = spec.names or ((image.name,) if image.name else ())
    refs = [parse_reference(n) for n in names]
    return tuple({CONTAINERD_NAME: ref.normalized, REF_NAME: ref.tag_or_latest} for ref in refs)


def _repo_tags(image: StoredImage, spec: OutputSpec) -> tuple[str, ...]:
    """`RepoTags` of a docker-archive: familiar names (`busybox:latest`, `localhost/app:v1`)."""
    from pybuild.image.reference import parse_reference

    names = spec.names or ((image.name,) if image.name else ())
    return tuple(parse_reference(n).familiar for n in names)


def _layout(store: Store, exported: ExportedManifest, annotations: tuple[dict[str, str], ...]) -> Archive:
    """The files of an OCI image layout holding one image (once per name in index.json)."""
    archive = Archive()
    archive.add_bytes("oci-layout", OCI_LAYOUT)
    manifests: list[dict[str, object]] = []
    for notes in annotations or ({},):
        entry = dict(exported.descriptor)
        if notes:
            entry["annotations"] = notes
        manifests.append(entry)
    archive.add_bytes("index.json", canonical_json(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}))
    archive.add_bytes(_blob_name(exported.manifest_digest), exported.manifest_bytes)
    archive.add_bytes(_blob_name(exported.config_digest), exported.config_bytes)
    for digest in exported.layer_digests:
        archive.add_blob(_blob_name(digest), blob_size(store, digest), _opener(store, digest))
    return archive


def _blob_name(digest: str) -> str:
    return f"blobs/sha256/{digest_hex(digest)}"


def _opener(store: Store, digest: str) -> Opener:
    return lambda: open_blob(store, digest, verify=True)  # a remote layer is fetched here (store.remote)


def _publish(archive: Archive, spec: OutputSpec, stdout: BinaryIO | None) -> None:
    assert spec.dest is not None
    if not spec.tar:
        with new_dir(spec.dest) as tmp:
            archive.write_dir(tmp, spec.dest)
    elif spec.dest == "-":
        if stdout is None:
            raise ConfigError(f"type={spec.type},dest=- needs standard output")
        with standard_output(stdout) as out:
            archive.write_tar(out)
    else:
        with new_file(spec.dest) as out:
            archive.write_tar(out)


class Archive:
    """Files of an archive, written sorted into a deterministic tar or into a directory."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[int, Opener]] = {}

    def add_bytes(self, name: str, data: bytes) -> None:
        self._files[name] = (len(data), lambda: io.BytesIO(data))

    def add_blob(self, name: str, size: int, opener: Opener) -> None:
        self._files[name] = (size, opener)

    def names(self) -> list[str]:
        """Every file and parent directory, sorted (directories before what they hold)."""
        dirs: set[str] = set()
        for name in self._files:
            parts = name.split("/")[:-1]
            dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return sorted(dirs | set(self._files))

    def write_tar(self, out: BinaryIO) -> None:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
            for name in self.names():
                info = tarfile.TarInfo(name)
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                if name not in self._files:
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                    continue
                size, opener = self._files[name]
                info.size, info.mode = size, 0o644
                with opener() as src:
                    tar.addfile(info, _Exact(src, size, name))

    def write_dir(self, root: str, dest: str) -> None:
        """Write the files into directory `root` (the temp of output `dest`, which errors name)."""
        for name in self.names():
            path = os.path.join(root, *name.split("/"))
            entry = self._files.get(name)
            if entry is None:
                try:
                    os.makedirs(path, mode=0o755, exist_ok=True)
                except OSError as exc:
                    raise dest_error(exc, dest, name) from exc
                continue
            with entry[1]() as src:
                try:
                    with open(path, "wb") as dst:
                        shutil.copyfileobj(_Exact(src, entry[0], name), dst, _CHUNK)
                except OSError as exc:  # errors reading `src` are StoreErrors (`_Exact`)
                    raise dest_error(exc, dest, name) from exc


class _Exact:
    """A reader that yields exactly `size` bytes of `src` (StoreError if the blob changed size under us)."""

    def __init__(self, src: BinaryIO, size: int, name: str) -> None:
        self._src, self._left, self._name = src, size, name

    def read(self, n: int = -1) -> bytes:
        want = self._left if n < 0 else min(n, self._left)
        try:
            data = self._src.read(want) if want else b""
            if len(data) < want:
                raise StoreError(f"blob {self._name} is shorter than its recorded size")
            self._left -= len(data)
            if not self._left and self._src.read(1):
                raise StoreError(f"blob {self._name} is longer than its recorded size")
        except OSError as exc:
            raise StoreError(f"cannot read blob {self._name} from the store: {exc.strerror or exc}") from exc
        return data
