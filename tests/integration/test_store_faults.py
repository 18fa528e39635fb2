"""Fault injection for the store: kill -9 during writes, and a full disk.

(1) A child process writes blobs (streamed and whole), records and tags them in a loop; the parent kills it
with SIGKILL after a random delay. The next `Store.open` must leave no temp files and `verify_all()` must find
nothing wrong: every named blob is whole, every index row names a present blob.
(2) A store on a 1 MiB tmpfs runs out of space: a clear StoreError naming the store and the free space, no
half-written blob under blobs/, no temp left, and the store still works afterwards. The same for the index
(SQLite's "database or disk is full" and "disk I/O error") and for unpacking a layer into the snapshots.
"""

from __future__ import annotations

import errno
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.errors import StoreError
from pybuild.store.store import Store

REPO = Path(__file__).resolve().parents[2]
FREE = r"[0-9.]+ (?:B|KiB|MiB) free"

WRITER = textwrap.dedent("""
    import os, sys
    from pybuild.store.store import Store
    store = Store.open()
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        seed = os.urandom(8)
        with store.blobs.writer() as w:
            for _ in range(16):
                w.write(seed * 2048)
            digest, size = w.commit()
        store.index.record_blob(digest, size, "application/vnd.oci.image.layer.v1.tar")
        store.index.record_compressed(digest, "gzip", 6, digest, size)
        small, _ = store.put_bytes(b'{"n": %d, "seed": "%s"}' % (i, seed.hex().encode()),
                                   "application/vnd.oci.image.config.v1+json")
        store.index.set_tag(f"img:{i % 5}", small)
        store.index.add_root("test", str(i % 3), digest)
""")


def _kill_trial(root: Path, rng: random.Random) -> None:
    env = dict(os.environ, PYBUILD_ROOT=str(root), PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-c", WRITER], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line == b"ready\n", child.stderr.read().decode() if child.stderr else line
        try:
            child.wait(rng.uniform(0.0, 0.25))
        except subprocess.TimeoutExpired:
            pass
        assert child.poll() is None, "writer died on its own: " + (child.stderr.read().decode()
                                                                   if child.stderr else "")
        child.send_signal(signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()


def test_kill_9_during_writes_leaves_a_clean_store(tmp_path: Path) -> None:
    root = tmp_path / "store"
    rng = random.Random(os.environ.get("PYBUILD_FAULT_SEED", "store-kill"))
    saw_temp = 0
    for trial in range(24):
        _kill_trial(root, rng)
        tmp_dir = root / "tmp"
        saw_temp += bool(os.listdir(tmp_dir))
        with Store.open(str(root)) as store:
            assert os.listdir(tmp_dir) == [], f"trial {trial}: temps not cleaned"
            problems = store.verify_all()
            assert problems == [], f"trial {trial}: {problems}"
            assert store.index.query("PRAGMA integrity_check") == [("ok",)]
            assert store.du().count > 0
    # not asserted (timing), but reported: how often the kill landed inside a blob write
    print(f"kill -9 landed during a blob write in {saw_temp}/24 trials")


def _require_root_mount(mountpoint: Path) -> None:
    in_ci = bool(os.environ.get("CI"))
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        message = f"cannot mount a tmpfs: {proc.stderr.strip()}"
        if in_ci:
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.root
def test_full_disk_gives_a_clear_error_and_no_partial_blob(tmp_path: Path) -> None:
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    _require_root_mount(mountpoint)
    try:
        root = str(mountpoint / "store")
        with Store.open(root) as store:
            small, _ = store.put_bytes(b"fits", "text/plain")
            big = os.urandom(2 << 20)
            with pytest.raises(StoreError) as info:
                store.put_bytes(big)
            assert re.fullmatch(rf"no space left on device while writing blob to {root} \({FREE}\)",
                                str(info.value)), str(info.value)
            assert info.value.hint == "free some space, or run `pybuild prune`"
            with pytest.raises(StoreError, match=f"no space left on device while writing blob to {root}"):
                with store.blobs.writer() as w:
                    for _ in range(64):
                        w.write(big[: 64 << 10])
                    w.commit()
            assert list(store.blobs.iter_digests()) == [small]
            assert os.listdir(store.blobs.tmp_dir) == []
            assert store.verify_all() == []
            again, _ = store.put_bytes(b"still works")
            assert store.blobs.read_bytes(again) == b"still works"
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def _fill(path: Path) -> None:
    """Write zeros to `path` until the filesystem is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted afterwards."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    _require_root_mount(mountpoint)
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=False)


@pytest.mark.root
def test_a_full_disk_under_the_index_names_it_and_the_free_space(tiny: Path) -> None:
    root = tiny / "store"
    index = root / "index.db"
    with Store.open(str(root)) as store:
        digest, _ = store.put_bytes(b"fits", "text/plain")
        store.index.set_tag("a:1", digest)
    _fill(tiny / "filler")
    expected = rf"no space left on device while writing the store index {index} \(0 B free\)"
    with pytest.raises(StoreError) as info:  # the shared-memory file cannot grow: SQLite's "disk I/O error"
        with Store.open(str(root)) as store:
            store.index.set_tag("b:1", digest)
    assert re.fullmatch(expected, str(info.value)), str(info.value)
    assert "prune" in (info.value.hint or "")
    os.unlink(tiny / "filler")
    with Store.open(str(root)) as store:  # a WAL that is there already: SQLite's "database or disk is full"
        _fill(tiny / "filler")
        with pytest.raises(StoreError) as info:
            for n in range(10_000):
                store.index.set_tag(f"b{n}:1", digest)
        assert re.fullmatch(expected, str(info.value)), str(info.value)
        os.unlink(tiny / "filler")
        store.index.set_tag("c:1", digest)
        assert store.index.get_tag("a:1") == digest
        assert store.index.query("PRAGMA integrity_check") == [("ok",)]


@pytest.mark.root
def test_a_full_disk_while_unpacking_a_layer_names_the_snapshot_and_the_free_space(tiny: Path) -> None:
    from pybuild.store.tarlayer import LayerEntry, write_entries
    from pybuild.worker.snapshots import Snapshots

    root = tiny / "store"
    with Store.open(str(root)) as store:
        data = os.urandom(600 << 10)  # a layer that fits in the store once, not twice
        with store.blobs.writer() as writer:
            diff_id, size = write_entries([LayerEntry(path="big", kind="file", size=len(data), data=data)], writer)
            writer.commit(diff_id)
        store.index.record_layer(diff_id, size)
        snapshots = Snapshots.open(store)
        with pytest.raises(StoreError) as info:
            snapshots.ensure_layers(store, [diff_id])
        text = str(info.value)
        assert re.fullmatch(rf"no space left on device while unpacking layer entry 'big' into "
                            rf"{root}/snapshots/tmp/[0-9a-f]{{64}}\.[0-9a-f]{{8}}/fs \({FREE}\)", text), text
        assert os.listdir(root / "snapshots" / "tmp") == [] and os.listdir(root / "snapshots" / "layers") == []
