"""Image names: tag and rmi (the blobs an untagged image leaves go at the next prune)."""

from __future__ import annotations

from pybuild.api.opening import Warn, open_store
from pybuild.errors import StoreError
from pybuild.record import record

__all__ = ["RmiItem", "RmiRequest", "RmiResult", "TagRequest", "rmi", "tag"]


@record(kw_only=True)
class TagRequest:
    """`pybuild tag`: give `source` (name, ID or digest) the name `target`."""

    source: str
    target: str
    store_root: str | None = None


def tag(request: TagRequest, warn: Warn | None = None) -> None:
    """Tag the image."""
    from pybuild.store.images import tag_image

    with open_store(request.store_root, warn) as store:
        tag_image(store, request.source, request.target)


@record(kw_only=True)
class RmiRequest:
    """`pybuild rmi`: remove each name (`force`: every tag of an image given by ID)."""

    images: tuple[str, ...]
    force: bool = False
    store_root: str | None = None


@record(kw_only=True)
class RmiItem:
    """What removing one name did: the familiar names untagged, or why it could not be removed."""

    name: str
    untagged: tuple[str, ...]
    error: StoreError | None


@record(kw_only=True)
class RmiResult:
    """One item per name, in the request's order; a name that failed does not stop the others."""

    items: tuple[RmiItem, ...]


def rmi(request: RmiRequest, warn: Warn | None = None) -> RmiResult:
    """Remove every name of the request that can be removed (as docker does)."""
    from pybuild.store.images import familiar_name, remove_image

    items: list[RmiItem] = []
    with open_store(request.store_root, warn) as store:
        for name in request.images:
            try:
                removed = remove_image(store, name, force=request.force)
            except StoreError as exc:
                items.append(RmiItem(name=name, untagged=(), error=exc))
                continue
            items.append(RmiItem(name=name, untagged=tuple(familiar_name(t) for t in removed), error=None))
    return RmiResult(items=tuple(items))
