"""One entry of a walked tree (a context, or later a stage's rootfs), as the walker reports it.

The walker (`walk.py`) makes them from `lstat`; checksums (`checksum.py`), the stat cache and source
selection (`sources.py`) read them. Paths are relative to the walked root, `/`-separated, without a
leading `./`; names that are not valid UTF-8 are kept with `os.fsdecode` (surrogateescape), so
`os.fsencode(path)` gives the bytes back.
"""

from __future__ import annotations

import os
import stat as statmod
from typing import Literal

from pybuild.record import record

EntryKind = Literal["file", "dir", "symlink"]


@record
class Entry:
    """A regular file, directory or symlink found by a walk, with the lstat fields pybuild uses."""

    path: str
    kind: EntryKind
    mode: int
    """st_mode: file type and permission bits."""
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    dev: int
    ino: int
    nlink: int
    link_target: str | None = None
    """The symlink's target as stored (never resolved); None for files and directories."""

    @property
    def perm(self) -> int:
        """Permission bits including setuid/setgid/sticky (`mode & 0o7777`)."""
        return statmod.S_IMODE(self.mode)


def kind_of(mode: int) -> EntryKind | None:
    """The entry kind for an st_mode, or None for sockets, FIFOs and devices (skipped by walks)."""
    if statmod.S_ISREG(mode):
        return "file"
    if statmod.S_ISDIR(mode):
        return "dir"
    if statmod.S_ISLNK(mode):
        return "symlink"
    return None


def entry_from_stat(path: str, st: os.stat_result, kind: EntryKind, link_target: str | None = None) -> Entry:
    """Build an Entry from an lstat result."""
    return Entry(path, kind, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                 st.st_dev, st.st_ino, st.st_nlink, link_target)
