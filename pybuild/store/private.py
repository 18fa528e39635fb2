"""Store directories only their owner can enter, as docker keeps /var/lib/docker.

Why: the store holds image filesystems unpacked as they are (`snapshots/`, cache mounts, a RUN's rootfs),
setuid-root binaries and device nodes included. A directory any local user can traverse hands them root:
`setpriv --reuid=65534 <store>/snapshots/layers/<chain>/fs/suid-binary` runs as euid 0. So the store root
and every directory under it that holds image filesystems are mode 0700 (0710 is accepted when the group is
root's, docker's mode for its root: the root group has no one untrusted). Exports and `type=local` outputs
are elsewhere and keep the image's own modes: that is what the user asked for.

- `make_private_dir` creates a directory 0700 in the one `mkdir` (the umask can only take bits away, so
  there is no moment where it is wider), and every missing parent the same way (the XDG base directory
  spec's mode for a data directory it creates); parents that exist are left alone.
- `secure_dirs` does that for a list of directories and repairs those found wider (chmod 0700), returning
  one warning line naming them, for the caller to show (`Store.open` keeps it in `Store.warnings`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

__all__ = ["PRIVATE_MODE", "make_private_dir", "secure_dirs", "too_open"]

PRIVATE_MODE = 0o700


def too_open(st: os.stat_result) -> bool:
    """True when a directory's mode lets anyone but its owner in (group traverse on gid 0 excepted)."""
    mode = stat.S_IMODE(st.st_mode)
    loose = mode & 0o077
    return bool(loose) and not (loose == 0o010 and st.st_gid == 0)


def make_private_dir(path: str) -> bool:
    """Create directory `path` (and its missing parents) mode 0700; False when it existed already."""
    try:
        os.mkdir(path, PRIVATE_MODE)
    except FileExistsError:
        return False
    except FileNotFoundError:
        parent = os.path.dirname(path)
        if parent == path:
            raise
        make_private_dir(parent)
        try:
            os.mkdir(path, PRIVATE_MODE)
        except FileExistsError:
            return False
    if stat.S_IMODE(os.stat(path).st_mode) != PRIVATE_MODE:
        os.chmod(path, PRIVATE_MODE)  # a umask that took the owner's bits: only adds them back
    return True


def secure_dirs(paths: Iterable[str]) -> str | None:
    """Make each of `paths` an existing private directory (created 0700, or chmod 0700 when found wider);
    None, or one warning line naming the directories that had to be repaired."""
    repaired: list[str] = []
    failed: list[str] = []
    for path in paths:
        if make_private_dir(path):
            continue
        st = os.stat(path)
        if not too_open(st):
            continue
        was = f"{path} (was {stat.S_IMODE(st.st_mode):04o})"
        try:
            os.chmod(path, PRIVATE_MODE)
        except OSError as exc:
            failed.append(f"{was}: {exc.strerror or exc}")
            continue
        repaired.append(was)
    if not repaired and not failed:
        return None
    text = "store directories were open to other users (any local user could reach an image's setuid files " \
           "and device nodes)"
    if repaired:
        text += f"; made them {PRIVATE_MODE:04o}: " + ", ".join(repaired)
    if failed:
        text += f"; cannot make them {PRIVATE_MODE:04o}: " + ", ".join(failed)
    return text
