"""Secret files on the host (`worker.secretfiles`) and the owner locks of scratch dirs (`worker.ownerlock`):
the detached tmpfs, the fallback dir and its sweep after the owning process died (a real SIGKILL)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.worker import ownerlock, secretfiles
from pybuild.worker.secretfiles import SecretFiles, sweep_stale
from tests.bases import need
from tests.secret_holder import holder

VALUE = b"unit-secret-\x00\xff-value"


# --- ownerlock ------------------------------------------------------------------------------------------


def test_claim_then_take_over_only_after_release(tmp_path: Path) -> None:
    fd = ownerlock.claim(str(tmp_path), "owner.json", b'{"id": "x"}')
    try:
        assert sorted(os.listdir(tmp_path)) == ["owner.json"]  # the temp name is gone
        assert ownerlock.take_over(str(tmp_path), "owner.json", 60.0) is None  # held: the owner lives
    finally:
        os.close(fd)
    taken = ownerlock.take_over(str(tmp_path), "owner.json", 60.0)
    assert taken is not None and taken >= 0
    try:
        assert os.read(taken, 100) == b'{"id": "x"}'
    finally:
        os.close(taken)


def test_take_over_of_a_dir_without_owner_waits_for_the_grace(tmp_path: Path) -> None:
    assert ownerlock.take_over(str(tmp_path), "owner", 60.0) is None  # young: its creator may be claiming it
    os.utime(tmp_path, (time.time() - 120, time.time() - 120))
    assert ownerlock.take_over(str(tmp_path), "owner", 60.0) == -1
    assert ownerlock.take_over(str(tmp_path / "gone"), "owner", 60.0) is None


# --- SecretFiles ----------------------------------------------------------------------------------------


@pytest.fixture
def fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secretfiles, "detached_mounts_work", lambda: False)


def test_detached_files_are_named_by_no_path() -> None:
    need(secretfiles.detached_mounts_work(), "no detached tmpfs bind mounts here (not root, or an older kernel)")
    files = SecretFiles()
    first = files.add(VALUE, mode=0o400, uid=0, gid=0)
    second = files.add(b"other", mode=0o444, uid=0, gid=0)
    assert files.detached
    assert first.startswith(f"/proc/{os.getpid()}/fd/") and os.path.dirname(first) == os.path.dirname(second)
    assert Path(first).read_bytes() == VALUE and Path(second).read_bytes() == b"other"
    info = os.stat(first)
    assert stat.S_IMODE(info.st_mode) == 0o400 and stat.S_IMODE(os.stat(second).st_mode) == 0o444
    assert stat.S_IMODE(os.stat(os.path.dirname(first)).st_mode) == 0o700
    device = f"{os.major(info.st_dev)}:{os.minor(info.st_dev)}"
    assert device not in [line.split()[2] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    files.close()
    files.close()  # idempotent
    assert not os.path.exists(first)


def test_fallback_dir_is_private_owned_and_removed(fallback: None) -> None:
    files = SecretFiles()
    path = files.add(VALUE, mode=0o440, uid=0, gid=0)
    directory = os.path.dirname(path)
    try:
        assert not files.detached
        assert os.path.basename(directory).startswith(secretfiles.PREFIX)
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        assert sorted(os.listdir(directory)) == ["0", "owner"]
        assert Path(path).read_bytes() == VALUE and stat.S_IMODE(os.stat(path).st_mode) == 0o440
        sweep_stale()
        assert os.path.exists(path), "a live process's dir was swept"
    finally:
        files.close()
    assert not os.path.exists(directory)


@pytest.fixture
def held() -> Iterator[tuple[subprocess.Popen[str], str]]:
    with holder("held-by-a-child") as made:
        yield made


def test_sweep_keeps_a_live_owners_dir_and_removes_it_after_kill_9(
    held: tuple[subprocess.Popen[str], str]
) -> None:
    proc, path = held
    sweep_stale()
    assert Path(path).read_bytes() == b"held-by-a-child"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert os.path.exists(path), "a killed process cleans up nothing"
    assert sweep_stale() >= 1
    assert not os.path.exists(os.path.dirname(path))


def test_sweep_leaves_what_is_not_a_dead_owners_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only dirs of this user, not symlinks, not young owner-less dirs; old owner-less ones (an older pybuild,
    or a crash between mkdtemp and the claim) go. Looked for in the temp dir as well as /dev/shm."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    young = tmp_path / (secretfiles.PREFIX + "young")
    old = tmp_path / (secretfiles.PREFIX + "old")
    link = tmp_path / (secretfiles.PREFIX + "link")
    other = tmp_path / (secretfiles.PREFIX + "other-user")
    for path in (young, old, other):
        path.mkdir()
        (path / "value").write_bytes(VALUE)
    link.symlink_to(old)
    os.utime(old, (time.time() - 120, time.time() - 120))
    os.utime(other, (time.time() - 120, time.time() - 120))
    if os.geteuid() == 0:
        os.chown(other, 65534, 65534)
    sweep_stale()
    assert young.is_dir() and link.is_symlink() and not old.exists()
    assert other.is_dir() == (os.geteuid() == 0)
