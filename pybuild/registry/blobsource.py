"""Fetching a remote blob (`store.remote`) from the registry repository it was recorded in.

Who uses it: whoever opens the store (`api`, the CLI) gives it `FETCHERS` (`Store.open(fetchers=...)`);
`store.remote.ensure_blob` calls `fetch` the first time a blob of kind `registry` / `registry-insecure`
must be read (a layer a registry cache hit left remote, now unpacked,
exported or pushed elsewhere). The client checks the digest and size as it writes, so the store's
writer does not hash again; a `registry-insecure` source was reached without TLS checks (or over plain
HTTP) by the build that recorded it, so this process may too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pybuild.store.cas import BlobWriter
    from pybuild.store.remote import BlobFetcher, RemoteBlob

__all__ = ["FETCHERS", "fetch"]


def fetch(blob: RemoteBlob, out: BlobWriter) -> None:
    """Download `blob` from `HOST/REPO` (its `where`) into `out`, checked against its digest and size."""
    from pybuild.registry import settings
    from pybuild.registry.client import client_for

    host, _, repo = blob.where.partition("/")
    if blob.kind == "registry-insecure" and not settings.is_insecure(host):
        settings.add_insecure_registry(host)
    client_for(host).get_blob(repo, blob.digest, out, size=blob.size)


# the source kinds this module fetches (`store.remote`), as `Store.open(fetchers=...)` takes them; the
# module imports nothing heavy until `fetch` runs
FETCHERS: Final[Mapping[str, BlobFetcher]] = {"registry": fetch, "registry-insecure": fetch}
