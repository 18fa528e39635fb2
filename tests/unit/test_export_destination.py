"""All-or-nothing export destinations (`pybuild.export.destination`): the rename at the end, no partial after
a failure, the sweep of partials a killed export left (flock-held by live writers), and one-line errors
naming the destination. The kill -9 and full-disk cases with real processes and mounts are in
tests/integration/test_export_faults.py."""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from pathlib import Path

import pytest

from pybuild.errors import ConfigError
from pybuild.export.destination import PREFIX, DestError, _locked, dest_error, new_dir, new_file, sweep_partials


def partials(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.startswith(PREFIX))


def test_new_file_appears_whole_with_its_mode(tmp_path: Path) -> None:
    dest = tmp_path / "out.tar"
    with new_file(str(dest)) as out:
        out.write(b"a" * 100_000)
        out.write(memoryview(b"tail"))
        assert not dest.exists() and len(partials(tmp_path)) == 1
    assert dest.read_bytes() == b"a" * 100_000 + b"tail"
    assert dest.stat().st_mode & 0o777 == 0o644
    assert partials(tmp_path) == []
    with new_file(str(dest)) as out:  # an existing file is replaced
        out.write(b"new")
    assert dest.read_bytes() == b"new"


def test_a_failed_export_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "out.tar"
    with pytest.raises(RuntimeError), new_file(str(dest)) as out:
        out.write(b"partial")
        raise RuntimeError("the exporter failed")
    with pytest.raises(RuntimeError), new_dir(str(tmp_path / "dir")) as tmp:
        Path(tmp, "f").write_text("partial")
        raise RuntimeError("the exporter failed")
    assert list(tmp_path.iterdir()) == []


def test_new_dir_renames_into_an_absent_or_empty_directory(tmp_path: Path) -> None:
    for dest in (tmp_path / "absent", tmp_path / "empty"):
        if dest.name == "empty":
            dest.mkdir()
        with new_dir(str(dest)) as tmp:
            Path(tmp, "index.json").write_text("{}")
        assert (dest / "index.json").read_text() == "{}"
        assert dest.stat().st_mode & 0o777 == 0o755
    assert partials(tmp_path) == []


def test_sweep_removes_only_partials_no_live_writer_holds(tmp_path: Path) -> None:
    held_fd, held = tempfile.mkstemp(prefix=PREFIX, dir=tmp_path)
    fcntl.flock(held_fd, fcntl.LOCK_EX)  # a live writer (a flock is per open file: the sweep's open conflicts)
    _, dead = tempfile.mkstemp(prefix=PREFIX, dir=tmp_path)  # a killed writer's: nobody holds it
    dead_dir = tempfile.mkdtemp(prefix=PREFIX, dir=tmp_path)
    Path(dead_dir, "blobs").mkdir()
    Path(dead_dir, "blobs", "x").write_text("partial")
    held_dir = tempfile.mkdtemp(prefix=PREFIX, dir=tmp_path)
    held_dir_fd = os.open(held_dir, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(held_dir_fd, fcntl.LOCK_EX)
    (tmp_path / (PREFIX + "users-own-file")).write_text("not ours: not the name mkstemp makes")
    (tmp_path / (PREFIX + "abcdefgh")).symlink_to("/etc/passwd")  # a link is never followed nor removed
    assert sweep_partials(str(tmp_path)) == 2
    left = set(partials(tmp_path))
    assert os.path.basename(held) in left and os.path.basename(held_dir) in left
    assert os.path.basename(dead) not in left and os.path.basename(dead_dir) not in left
    assert {PREFIX + "users-own-file", PREFIX + "abcdefgh"} <= left
    os.close(held_fd)
    os.close(held_dir_fd)
    assert sweep_partials(str(tmp_path)) == 2
    assert partials(tmp_path) == [PREFIX + "abcdefgh", PREFIX + "users-own-file"]
    assert sweep_partials(str(tmp_path / "missing")) == 0


def test_an_export_sweeps_what_a_dead_one_left_beside_its_destination(tmp_path: Path) -> None:
    _, dead = tempfile.mkstemp(prefix=PREFIX, dir=tmp_path)
    with new_file(str(tmp_path / "out.tar")) as out:
        out.write(b"x")
        assert not os.path.exists(dead)
    tempfile.mkdtemp(prefix=PREFIX, dir=tmp_path)
    with new_dir(str(tmp_path / "layout")):
        pass
    assert partials(tmp_path) == []


def test_a_temp_taken_before_it_was_locked_is_made_again(tmp_path: Path) -> None:
    made: list[str] = []

    def make() -> tuple[int, str]:
        fd, path = tempfile.mkstemp(prefix=PREFIX, dir=tmp_path)
        made.append(path)
        if len(made) == 1:
            os.unlink(path)  # what a sweeper does between mkstemp and flock
        return fd, path

    fd, path = _locked(str(tmp_path / "out"), make)
    try:
        assert path == made[1] and os.path.exists(path)
        with pytest.raises(BlockingIOError):  # held: a sweep cannot take it
            probe = os.open(path, os.O_RDONLY)
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(probe)
    finally:
        os.close(fd)


def test_destination_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot write output .*/nope/out.tar: directory .*/nope does not exist"):
        with new_file(str(tmp_path / "nope" / "out.tar")):
            pass
    with pytest.raises(ConfigError, match=r"cannot write output .*: it is a directory"):
        with new_file(str(tmp_path)):
            pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"cannot write output .*/file: it exists and is not a directory"):
        with new_dir(str(tmp_path / "file")):
            pass
    with pytest.raises(ConfigError, match=r"cannot write output .*/file/out.tar: a parent is not a directory"):
        with new_file(str(tmp_path / "file" / "out.tar")):
            pass
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not empty"):
        with new_dir(str(tmp_path / "full")):
            pass


@pytest.mark.parametrize(("code", "said", "hint"), [
    (errno.ENOSPC, "no space left on device", "free some space"),
    (errno.EDQUOT, "disk quota exceeded", "free some space"),
    (errno.EIO, "I/O error", "failing"),
])
def test_disk_errors_say_the_free_space(tmp_path: Path, code: int, said: str, hint: str) -> None:
    error = dest_error(OSError(code, os.strerror(code)), str(tmp_path / "out.tar"), "blobs/sha256/ab")
    assert isinstance(error, DestError) and error.os_error.errno == code
    assert str(error).startswith(f"cannot write output {tmp_path}/out.tar (blobs/sha256/ab): {said} (")
    assert str(error).endswith(f" free in {tmp_path})") and "\n" not in str(error)
    assert error.hint is not None and hint in error.hint


def test_other_errors_are_said_plainly() -> None:
    assert str(dest_error(PermissionError(errno.EACCES, "Permission denied"), "/x/out.tar")) == \
        "cannot write output /x/out.tar: permission denied"
    assert str(dest_error(OSError(errno.EROFS, "Read-only file system"), "/x/out.tar")) == \
        "cannot write output /x/out.tar: read-only file system"
    assert str(dest_error(BrokenPipeError(errno.EPIPE, "Broken pipe"), "-")) == \
        "cannot write output to standard output: broken pipe"
