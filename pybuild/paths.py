"""Where pybuild keeps its state on disk.

The store root is `$PYBUILD_ROOT`, default `~/.local/share/pybuild` (the store issue puts blobs and the
SQLite index there). Caches that can be rebuilt at any time, like the compiled parse table, live under
`$XDG_CACHE_HOME/pybuild` instead.
"""

from __future__ import annotations

import os


def store_root() -> str:
    """The store root directory (not created here)."""
    root = os.environ.get("PYBUILD_ROOT")
    if root:
        return os.path.abspath(root)
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "pybuild")
