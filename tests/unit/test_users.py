"""USER resolution against a rootfs's /etc/passwd and /etc/group (BuildKit / moby GetExecUser semantics)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pybuild.errors import StepFailed
from pybuild.worker.users import ResolvedUser, UserNotFound, read_in_root, resolve_in_root, resolve_user

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n\n# comment\nweb:x:33:33::/:\n"
GROUP = "root:x:0:\nwheel:x:10:root,app\nappgrp:x:1001:\nstaff:x:50:web,app\nwww:x:33:\n"


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/group").write_text(GROUP)
    return tmp_path


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("", ResolvedUser(0, 0, (10,))),
        ("root", ResolvedUser(0, 0, (10,))),
        ("app", ResolvedUser(1000, 1001, (10, 50))),
        ("1000", ResolvedUser(1000, 1001, (10, 50))),
        ("app:staff", ResolvedUser(1000, 50)),
        ("app:33", ResolvedUser(1000, 33)),
        ("app:4242", ResolvedUser(1000, 4242)),
        ("1000:50", ResolvedUser(1000, 50)),
        ("4242", ResolvedUser(4242, 0)),
        ("4242:4243", ResolvedUser(4242, 4243)),
        ("4242:www", ResolvedUser(4242, 33)),
        ("web", ResolvedUser(33, 33, (50,))),
    ],
)
def test_resolve(rootfs: Path, user: str, expected: ResolvedUser) -> None:
    assert resolve_user(str(rootfs), user) == expected


def test_unknown_user(rootfs: Path) -> None:
    with pytest.raises(UserNotFound, match="^unable to find user foo: no matching entries in passwd file$"):
        resolve_user(str(rootfs), "foo")
    assert issubclass(UserNotFound, StepFailed)


def test_unknown_group(rootfs: Path) -> None:
    with pytest.raises(UserNotFound, match="unable to find group nogroup: no matching entries in group file"):
        resolve_user(str(rootfs), "app:nogroup")


def test_no_passwd_numeric_works_and_names_fail(tmp_path: Path) -> None:
    assert resolve_user(str(tmp_path), "") == ResolvedUser(0, 0)
    assert resolve_user(str(tmp_path), "123") == ResolvedUser(123, 0)
    assert resolve_user(str(tmp_path), "123:456") == ResolvedUser(123, 456)
    with pytest.raises(UserNotFound, match="unable to find user app"):
        resolve_user(str(tmp_path), "app")


def test_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(UserNotFound, match="out of range"):
        resolve_user(str(tmp_path), "99999999999")


@pytest.mark.parametrize("target", ["/etc/passwd", "../../../../../../etc/passwd", "/../etc/passwd"])
def test_symlinked_passwd_stays_in_rootfs(tmp_path: Path, target: str) -> None:
    """An image's /etc/passwd symlink must never read the host's /etc/passwd (which has `root`...)."""
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    os.symlink(target, root / "etc/passwd")
    assert read_in_root(str(root), "/etc/passwd") is None
    with pytest.raises(UserNotFound):
        resolve_user(str(root), "root")  # the host has root; the rootfs has no passwd at all
    assert resolve_user(str(root), "") == ResolvedUser(0, 0)


def test_symlinked_etc_dir_resolves_inside(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "real/etc").mkdir(parents=True)
    (root / "real/etc/passwd").write_text("bob:x:7:8::/:\n")
    os.symlink("/real/etc", root / "etc")
    assert resolve_in_root(str(root), "/etc/passwd") == str(root / "real/etc/passwd")
    assert resolve_user(str(root), "bob") == ResolvedUser(7, 8)


def test_relative_symlink_and_loop(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd.real").write_text("amy:x:5:6::/:\n")
    os.symlink("passwd.real", tmp_path / "etc/passwd")
    assert resolve_user(str(tmp_path), "amy") == ResolvedUser(5, 6)
    os.symlink("group", tmp_path / "etc/loop")
    os.symlink("loop", tmp_path / "etc/group")
    assert read_in_root(str(tmp_path), "/etc/group") is None
    assert resolve_user(str(tmp_path), "amy") == ResolvedUser(5, 6)


def test_passwd_that_is_a_directory_or_fifo(tmp_path: Path) -> None:
    (tmp_path / "etc/passwd").mkdir(parents=True)
    os.mkfifo(tmp_path / "etc/group")
    assert read_in_root(str(tmp_path), "/etc/passwd") is None
    assert read_in_root(str(tmp_path), "/etc/group") is None
    assert resolve_user(str(tmp_path), "12") == ResolvedUser(12, 0)
