"""USER resolution: turn `name`, `uid`, `name:group` or `uid:gid` into numeric ids inside a rootfs.

Made for the executor (`spec.py` puts the ids in the OCI process). The semantics follow BuildKit, which uses
moby/sys/user's `GetExecUser` on the rootfs's /etc/passwd and /etc/group:
- a numeric user is always a uid, whether or not passwd has it; a name must be in passwd;
- the primary gid comes from the passwd entry (0 when the uid has none), or from an explicit `:group`;
- supplementary groups come from /etc/group memberships of the matched user name, only when no explicit
  group is given;
- '' is root (0:0, plus root's supplementary groups), and never fails.

/etc/passwd and /etc/group are read through the rootfs without leaving it: every symlink on the way is
resolved as if the rootfs were `/` (like `chroot` or Go's securejoin), so an image whose /etc/passwd points
at `/etc/passwd` or `../../../etc/passwd` reads the image's file (or nothing), never the host's.
"""

from __future__ import annotations

import os
import stat

from pybuild.errors import StepFailed
from pybuild.record import record
from pybuild.worker.rootfs_path import host_path, secure_join

MAX_ID = 2**31 - 1


@record
class ResolvedUser:
    """Numeric ids for the container process (made by `resolve_user`, read by `spec.py`)."""

    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()


class UserNotFound(StepFailed):
    """USER names a user or group the rootfs does not have (a step failure, as in BuildKit)."""


def resolve_user(rootfs: str, user: str) -> ResolvedUser:
    """Resolve a USER value against the rootfs's /etc/passwd and /etc/group (see the module docstring)."""
    if not user:
        try:
            return _resolve(rootfs, "0")
        except UserNotFound:
            return ResolvedUser(0, 0)
    return _resolve(rootfs, user)


def _resolve(rootfs: str, spec: str) -> ResolvedUser:
    user_arg, _, group_arg = spec.partition(":")
    uid_arg, gid_arg = _to_int(user_arg), _to_int(group_arg)
    uid, gid, name = _find_user(rootfs, user_arg, uid_arg)
    if not group_arg and not name:
        return ResolvedUser(uid, gid)
    groups = _read_db(rootfs, "/etc/group")
    if group_arg:
        return ResolvedUser(uid, _find_group(groups, group_arg, gid_arg))
    sgids = tuple(_to_int(f[2]) or 0 for f in groups if len(f) > 3 and name in f[3].split(","))
    return ResolvedUser(uid, gid, sgids)


def _find_user(rootfs: str, user_arg: str, uid_arg: int | None) -> tuple[int, int, str]:
    """(uid, primary gid, matched name or '') for the user part of USER."""
    for fields in _read_db(rootfs, "/etc/passwd"):
        if len(fields) < 4:
            continue
        entry_uid = _to_int(fields[2]) or 0
        if (entry_uid == uid_arg) if uid_arg is not None else (fields[0] == user_arg):
            return entry_uid, _to_int(fields[3]) or 0, fields[0]
    if uid_arg is None:
        raise UserNotFound(f"unable to find user {user_arg}: no matching entries in passwd file")
    _check_range(uid_arg)
    return uid_arg, 0, ""


def _find_group(groups: list[list[str]], group_arg: str, gid_arg: int | None) -> int:
    for fields in groups:
        if len(fields) < 3:
            continue
        entry_gid = _to_int(fields[2]) or 0
        if (entry_gid == gid_arg) if gid_arg is not None else (fields[0] == group_arg):
            return entry_gid
    if gid_arg is None:
        raise UserNotFound(f"unable to find group {group_arg}: no matching entries in group file")
    _check_range(gid_arg)
    return gid_arg


def _check_range(value: int) -> None:
    if not 0 <= value <= MAX_ID:
        raise UserNotFound(f"user/group id {value} out of range (0 to {MAX_ID})")


def _to_int(text: str) -> int | None:
    text = text.strip()
    if not text or not (text.isdigit() or (text[0] in "+-" and text[1:].isdigit())):
        return None
    return int(text)


def _read_db(rootfs: str, path: str) -> list[list[str]]:
    """The colon-separated lines of a passwd/group file in the rootfs ([] when it is missing)."""
    data = read_in_root(rootfs, path)
    if data is None:
        return []
    rows = []
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append(line.split(":"))
    return rows


def read_in_root(rootfs: str, path: str) -> bytes | None:
    """Read regular file `path` as seen from inside `rootfs`, or None when it does not exist there."""
    try:
        fd = os.open(resolve_in_root(rootfs, path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except (OSError, StepFailed):  # missing, unreadable, or a symlink loop: as if absent
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def resolve_in_root(rootfs: str, path: str) -> str:
    """The host path of `path` inside `rootfs`, following symlinks as if `rootfs` were `/`
    (`rootfs_path.secure_join`), so the result is always under `rootfs`."""
    root = os.path.abspath(rootfs)
    return host_path(root, secure_join(root, path))
