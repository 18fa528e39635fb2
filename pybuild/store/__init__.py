"""The local store: content-addressed blobs, the SQLite index, and the store lock.

`Store.open()` (in `pybuild.store.store`) is the entry point; `cas` keeps the blobs, `index` the tags, image,
layer, blob and root rows, `lock` the cross-process flock that keeps prune away from running builds. The
submodules are imported directly (`from pybuild.store.store import Store`) so that importing the package
costs nothing.
"""
