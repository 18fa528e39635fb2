"""Path resolution inside a root directory: links resolve inside it, never on the host."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pybuild.errors import StepFailed
from pybuild.worker.rootfs_path import RootDir, clean_path


def _mkdir(parent_fd: int, name: str) -> None:
    os.mkdir(name, 0o755, dir_fd=parent_fd)


def _resolve(root: Path, path: str, *, follow_last: bool = True) -> tuple[str, str]:
    with RootDir(str(root)) as rd:
        res = rd.walk(path, follow_last=follow_last)
        os.close(res.dir_fd)
        return res.path, res.name


@pytest.mark.parametrize(("raw", "want"), [
    ("", "/"), ("/", "/"), ("a/b", "/a/b"), ("/a/../../b", "/b"), ("../../x", "/x"), ("/a/./b/", "/a/b"),
])
def test_clean_path(raw: str, want: str) -> None:
    assert clean_path(raw) == want


def test_plain_path(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    assert _resolve(tmp_path, "/etc/passwd") == ("/etc/passwd", "passwd")


def test_absolute_link_restarts_at_root(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/link").symlink_to("/")
    assert _resolve(tmp_path, "/etc/link/x") == ("/x", "x")
    assert _resolve(tmp_path, "/etc/link") == ("/", "")


def test_link_to_host_absolute_path_stays_inside(tmp_path: Path) -> None:
    (tmp_path / "usr").mkdir()
    (tmp_path / "lib").symlink_to("/usr")
    assert _resolve(tmp_path, "/lib/libc.so") == ("/usr/libc.so", "libc.so")


def test_dotdot_stops_at_root(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a/up").symlink_to("../../../../..")
    assert _resolve(tmp_path, "/a/up/b") == ("/b", "b")
    assert _resolve(tmp_path, "/../../../etc") == ("/etc", "etc")


def test_relative_link(tmp_path: Path) -> None:
    (tmp_path / "a/b").mkdir(parents=True)
    (tmp_path / "a/l").symlink_to("b")
    assert _resolve(tmp_path, "/a/l/f") == ("/a/b/f", "f")


def test_last_component_not_followed_on_request(tmp_path: Path) -> None:
    (tmp_path / "l").symlink_to("/target")
    assert _resolve(tmp_path, "/l", follow_last=False) == ("/l", "l")
    assert _resolve(tmp_path, "/l") == ("/target", "target")


def test_link_loop_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(StepFailed, match="too many levels"):
        _resolve(tmp_path, "/a/x")


def test_file_as_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(StepFailed, match="not a directory"):
        _resolve(tmp_path, "/f/x")


def test_missing_parent_is_an_error_without_make_dir(tmp_path: Path) -> None:
    with pytest.raises(StepFailed, match="does not exist"):
        _resolve(tmp_path, "/missing/x")


def test_open_dir_creates_parents(tmp_path: Path) -> None:
    with RootDir(str(tmp_path)) as rd:
        fd, path, created = rd.open_dir("/a/b/c", make_dir=_mkdir)
        os.close(fd)
    assert (path, created) == ("/a/b/c", True)
    assert (tmp_path / "a/b/c").is_dir()


def test_open_dir_through_link_creates_inside_root(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/self").symlink_to("/")
    with RootDir(str(tmp_path)) as rd:
        fd, path, created = rd.open_dir("/proc/self/fd/3", make_dir=_mkdir)
        os.close(fd)
    assert path == "/fd/3" and created
    assert (tmp_path / "fd/3").is_dir()


def test_open_dir_of_a_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with RootDir(str(tmp_path)) as rd, pytest.raises(StepFailed, match="not a directory"):
        rd.open_dir("/f")


def test_read_file_follows_links_inside(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/real").write_text("inside")
    (tmp_path / "etc/passwd").symlink_to("/etc/real")
    (tmp_path / "etc/group").symlink_to("../../../../etc/group")
    with RootDir(str(tmp_path)) as rd:
        assert rd.read_file("/etc/passwd") == b"inside"
        assert rd.read_file("/etc/group") is None  # resolves to the rootfs's /etc/group, which is missing
        assert rd.read_file("/etc") is None


def test_lstat(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "l").symlink_to("d")
    with RootDir(str(tmp_path)) as rd:
        st = rd.lstat("/l")
        assert st is not None and stat.S_ISDIR(st.st_mode)
        lst = rd.lstat("/l", follow_last=False)
        assert lst is not None and stat.S_ISLNK(lst.st_mode)
        assert rd.lstat("/missing/x") is None
        assert rd.lstat("/") is not None


def test_missing_root_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StepFailed, match="cannot open root"):
        RootDir(str(tmp_path / "missing"))
