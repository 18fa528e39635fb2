"""`pybuild images`: the store's tagged images (the store module is imported when it runs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pybuild.api.opening import Warn, open_store
from pybuild.record import record

if TYPE_CHECKING:
    from pybuild.store.images import ImageSummary

__all__ = ["ImagesRequest", "ImagesResult", "images"]


@record(kw_only=True)
class ImagesRequest:
    """`pybuild images`."""

    store_root: str | None = None


@record(kw_only=True)
class ImagesResult:
    """The tagged images, newest first."""

    images: tuple[ImageSummary, ...]


def images(request: ImagesRequest, warn: Warn | None = None) -> ImagesResult:
    """List the store's images."""
    from pybuild.store.images import list_images

    with open_store(request.store_root, warn) as store:
        return ImagesResult(images=tuple(list_images(store)))
