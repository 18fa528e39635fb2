"""Pushing an image from the store to a registry: `pybuild push`, `build --push`, `type=image,push=true`.

Who uses it: the CLI (`push` command), the build (`--push`) and the image exporter (`push=true`,
`type=registry`). Blobs go through `registry.client`.

A push, step by step:
1. The manifest to push: `images.manifest_for_export` with the compression asked for (gzip by default).
   Built images keep their layers uncompressed; the compressed blob is made once per (diffID,
   compression, level) and remembered by the store, so a second push compresses nothing.
2. When the repository has the very manifest already (HEAD by digest), it has every blob it names (a
   registry takes a manifest only once its blobs are there, and keeps the blobs of the manifests it
   holds): no blob is checked, so a second push of an unchanged image is two requests. Else every blob
   (config and layers), at most `jobs` at a time: a blob the repository has already (HEAD) is left
   alone; one seen in another repository of the same registry (`locations.BlobLocations`, filled by
   pulls and pushes) is mounted from there; only the rest is uploaded, read from the store with its
   digest checked as it goes.
3. The manifest last, under the tag, once every blob it names is in the repository (a registry refuses a
   manifest whose blobs are missing, and a reader never sees a tag whose blobs are not there yet).

A name without a registry host is docker.io's, as with docker (so `app:1` goes to docker.io/library/app).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO, Final

from pybuild.errors import ConfigError, PybuildError
from pybuild.record import record
from pybuild.store.remote import blob_size, open_blob

if TYPE_CHECKING:
    from pybuild.registry.client import RegistryClient
    from pybuild.registry.locations import BlobLocations
    from pybuild.store.images import StoredImage
    from pybuild.store.store import Store

__all__ = ["PushResult", "check_push_name", "push_image"]

JOBS: Final = 4
Report = Callable[[str], None]
Opener = Callable[[], BinaryIO]


@record
class PushResult:
    """What `push_image` did: the reference pushed, the manifest's digest and size, and what each blob
    took (`uploaded`, `mounted` from another repository, `existing` in the repository already)."""

    name: str
    digest: str
    size: int
    media_type: str
    uploaded: tuple[str, ...]
    mounted: tuple[str, ...]
    existing: tuple[str, ...]


def check_push_name(name: str) -> str:
    """The normalised reference `name` pushes to; ConfigError for a bad name or one with a digest."""
    from pybuild.image.reference import parse_reference

    ref = parse_reference(name)
    if ref.digest is not None:
        raise ConfigError(f"cannot push to {name}: a reference with a digest cannot be pushed to",
                          hint="push to a tag (REGISTRY/NAME:TAG)")
    return ref.normalized


def push_image(store: Store, image: StoredImage, name: str, *, compression: str = "gzip",
               level: int | None = None, oci_mediatypes: bool = True, force: bool = False, jobs: int = JOBS,
               report: Report | None = None) -> PushResult:
    """Push `image` to the reference `name` (see the module docstring)."""
    from pybuild.image.reference import parse_reference
    from pybuild.registry.client import client_for
    from pybuild.registry.locations import BlobLocations
    from pybuild.store.images import manifest_for_export

    ref = parse_reference(check_push_name(name))
    client = client_for(ref.domain)
    tag = ref.tag_or_latest
    with store.shared_lock():
        exported = manifest_for_export(store, image, compression=compression, level=level,
                                       oci_mediatypes=oci_mediatypes, force=force)
        config = exported.config_bytes
        blobs: dict[str, tuple[int, Opener]] = {
            exported.config_digest: (len(config), lambda: io.BytesIO(config))}
        for digest in exported.layer_digests:
            blobs.setdefault(digest, (blob_size(store, digest), _opener(store, digest)))
        locations = BlobLocations(store)
        if client.head_manifest(ref.path, exported.manifest_digest) is not None:
            outcome = {digest: "existing" for digest in blobs}  # see step 2 of the module docstring
            if report is not None:
                report(f"{exported.manifest_digest}: already in {client.host}/{ref.path}")
        else:
            outcome = _Pusher(client, ref.path, locations, report).push_all(blobs, jobs)
        client.put_manifest(ref.path, tag, exported.manifest_bytes, exported.media_type)
        locations.record(client.host, ref.path, blobs)
    if report is not None:
        report(f"{ref.familiar}: digest: {exported.manifest_digest} size: {len(exported.manifest_bytes)}")
    return PushResult(ref.normalized, exported.manifest_digest, len(exported.manifest_bytes),
                      exported.media_type, *(tuple(d for d, how in outcome.items() if how == kind)
                                             for kind in ("uploaded", "mounted", "existing")))


def _opener(store: Store, digest: str) -> Opener:
    # a remote layer (store.remote) is fetched only if the registry neither has it nor can mount it
    return lambda: open_blob(store, digest, verify=True)


class _Pusher:
    """The blobs of one push: HEAD, else mount, else upload (see the module docstring)."""

    def __init__(self, client: RegistryClient, repo: str, locations: BlobLocations,
                 report: Report | None) -> None:
        self.client, self.repo, self.locations, self.report = client, repo, locations, report

    def push_all(self, blobs: dict[str, tuple[int, Opener]], jobs: int) -> dict[str, str]:
        """digest → "uploaded" | "mounted" | "existing", every blob pushed (`jobs` at a time)."""
        if len(blobs) == 1 or jobs <= 1:
            return {digest: self.push(digest, size, opener) for digest, (size, opener) in blobs.items()}
        from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

        with ThreadPoolExecutor(max_workers=min(jobs, len(blobs)), thread_name_prefix="push") as pool:
            futures = {digest: pool.submit(self.push, digest, size, opener)
                       for digest, (size, opener) in blobs.items()}
            _, pending = wait(futures.values(), return_when=FIRST_EXCEPTION)
            for future in pending:
                future.cancel()
            wait(futures.values())
        errors = [e for f in futures.values() if not f.cancelled() and (e := f.exception()) is not None]
        if errors:
            raise next((e for e in errors if isinstance(e, PybuildError)), errors[0]) from None
        return {digest: future.result() for digest, future in futures.items()}

    def push(self, digest: str, size: int, opener: Opener) -> str:
        client = self.client
        if client.blob_size(self.repo, digest) is not None:
            self.say(f"{digest}: already in {client.host}/{self.repo}")
            return "existing"
        for other in self.locations.repos_with(client.host, digest):
            if other != self.repo and client.mount_blob(self.repo, digest, other):
                self.say(f"{digest}: mounted from {client.host}/{other}")
                return "mounted"
        client.upload_blob(self.repo, digest, size, opener)
        self.say(f"{digest}: uploaded ({size} bytes)")
        return "uploaded"

    def say(self, text: str) -> None:
        if self.report is not None:
            self.report(text)
