"""Snapshots on real overlayfs: unpack once, prepare/commit/release, 130 layers, concurrency, no leaks.

Needs root and overlayfs: skipped with a reason locally when missing, failing in CI (env CI set).
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from pybuild.errors import StoreError
from pybuild.store.images import import_rootfs
from pybuild.store.store import Store
from pybuild.store.tarlayer import LayerEntry, write_entries
from pybuild.worker import overlay
from pybuild.worker.snapshots import Snapshots, chain_ids

BUSYBOX = "/bin/busybox"


def require_overlay() -> None:
    """Skip (fail in CI) unless we are root and the kernel has overlayfs."""
    reason = None
    if os.geteuid() != 0:
        reason = "overlay mounts need root"
    else:
        with open("/proc/filesystems", encoding="utf-8") as f:
            if not any(line.split()[-1] == "overlay" for line in f if line.strip()):
                reason = "the kernel has no overlayfs"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


pytestmark = pytest.mark.root


@pytest.fixture(autouse=True)
def _need_overlay() -> None:
    require_overlay()


def busybox_tar(path: Path) -> Path:
    """A tiny busybox-static rootfs tar: /bin/busybox, applet symlinks, a few files and dirs."""
    if not os.path.exists(BUSYBOX):
        message = "busybox-static is not installed (/bin/busybox)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with tarfile.open(path, "w") as tar:
        for name in ("bin", "etc", "tmp", "usr", "usr/share", "usr/share/doc", "var", "var/lib"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, "bin/busybox")
        for applet in ("sh", "ls", "cat", "echo", "rm", "mkdir", "touch", "mknod", "ln", "chmod"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        for name, data in (("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"), ("etc/motd", b"hi\n"),
                           ("usr/share/doc/a", b"a\n"), ("usr/share/doc/b", b"b\n"), ("var/lib/x", b"x\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(str(tmp_path / "store")) as opened:
        yield opened


@pytest.fixture
def snaps(store: Store) -> Iterator[Snapshots]:
    snapshots = Snapshots.open(store)
    yield snapshots
    assert overlay.mount_points(snapshots.root) == [], "a mount was left behind"
    assert os.listdir(os.path.join(snapshots.root, "active")) == []


def layer_bytes(*entries: LayerEntry) -> bytes:
    out = io.BytesIO()
    write_entries(entries, out)
    return out.getvalue()


def opener(data: bytes, calls: list[int] | None = None) -> Callable[[], IO[bytes]]:
    def open_it() -> IO[bytes]:
        if calls is not None:
            calls.append(1)
        return io.BytesIO(data)
    return open_it


def stack(snaps: Snapshots, layers: list[bytes]) -> tuple[str, ...]:
    """Unpack raw layer tars as a chain; returns the chainIDs."""
    import hashlib
    diff_ids = ["sha256:" + hashlib.sha256(data).hexdigest() for data in layers]
    parent = None
    for diff_id, data in zip(diff_ids, layers):
        parent = snaps.ensure_layer(parent, diff_id, opener(data)).id
    return chain_ids(diff_ids)


def test_chain_ids_follow_the_oci_rule() -> None:
    import hashlib
    a, b, c = ("sha256:" + hashlib.sha256(x).hexdigest() for x in (b"a", b"b", b"c"))
    ab = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    abc = "sha256:" + hashlib.sha256(f"{ab} {c}".encode()).hexdigest()
    assert chain_ids([a, b, c]) == (a, ab, abc)
    assert chain_ids([]) == ()


def test_busybox_image_unpacks_once_and_runs(tmp_path: Path, store: Store, snaps: Snapshots) -> None:
    image = import_rootfs(store, str(busybox_tar(tmp_path / "rootfs.tar")), "busybox:test")
    chain = snaps.ensure_layers(store, image.diff_ids)
    assert chain == chain_ids(image.diff_ids)
    layer_dir = snaps.get(chain[0]).path
    inode = os.stat(os.path.join(layer_dir, "bin/busybox")).st_ino
    assert snaps.ensure_layers(store, image.diff_ids) == chain  # reused, not unpacked again
    assert os.stat(os.path.join(layer_dir, "bin/busybox")).st_ino == inode
    with snaps.mounted_rootfs(chain) as active:
        assert overlay.is_mounted(active.rootfs)
        script = "echo made > /tmp/out; cat /etc/motd"
        run = subprocess.run(["chroot", active.rootfs, "/bin/sh", "-c", script],
                             capture_output=True, check=True)
        assert run.stdout == b"hi\n"
        assert os.path.exists(os.path.join(active.upper, "tmp/out"))
    assert not os.path.exists(os.path.join(layer_dir, "tmp/out"))  # the shared layer stays untouched


def test_commit_keeps_upper_as_lower_for_next_step(tmp_path: Path, store: Store, snaps: Snapshots) -> None:
    image = import_rootfs(store, str(busybox_tar(tmp_path / "rootfs.tar")), "busybox:test")
    chain = snaps.ensure_layers(store, image.diff_ids)
    with snaps.mounted_rootfs(chain) as active:
        Path(active.rootfs, "step1").write_text("one")
        os.remove(os.path.join(active.rootfs, "etc/motd"))
        step1 = snaps.commit(active)
    assert step1.kind == "step" and os.path.isfile(os.path.join(step1.path, "step1"))
    assert snaps.parents_of(step1.id) == chain
    with snaps.mounted_rootfs((*chain, step1.id)) as active:
        assert Path(active.rootfs, "step1").read_text() == "one"
        assert not os.path.exists(os.path.join(active.rootfs, "etc/motd"))
        Path(active.rootfs, "step2").write_text("two")
        step2 = snaps.commit(active)
    with snaps.mounted_rootfs((*chain, step1.id, step2.id)) as active:
        assert sorted(p for p in os.listdir(active.rootfs) if p.startswith("step")) == ["step1", "step2"]
    out = io.BytesIO()
    diff_id, size = snaps.export_layer(step2, out)
    assert diff_id.startswith("sha256:") and size == len(out.getvalue())


def test_scratch_prepare_has_an_empty_lower(snaps: Snapshots) -> None:
    with snaps.mounted_rootfs(()) as active:
        assert os.listdir(active.rootfs) == []
        Path(active.rootfs, "hello").write_text("x")
        step = snaps.commit(active)
    assert os.listdir(step.path) == ["hello"]
    assert os.listdir(os.path.join(snaps.root, "empty")) == []


def test_layer_whiteouts_and_opaque_dirs_become_overlay_markers(snaps: Snapshots) -> None:
    base = layer_bytes(
        LayerEntry(path="a", kind="dir", mode=0o755),
        LayerEntry(path="a/keep", kind="file", data=b"k", size=1),
        LayerEntry(path="a/gone", kind="file", data=b"g", size=1),
        LayerEntry(path="o", kind="dir", mode=0o755),
        LayerEntry(path="o/old", kind="file", data=b"o", size=1))
    top = layer_bytes(
        LayerEntry(path="a", kind="dir", mode=0o755), LayerEntry(path="a/gone", kind="whiteout"),
        LayerEntry(path="o", kind="dir", mode=0o700), LayerEntry(path="o", kind="opaque"),
        LayerEntry(path="o/new", kind="file", data=b"n", size=1))
    chain = stack(snaps, [base, top])
    top_dir = snaps.get(chain[1]).path
    st = os.lstat(os.path.join(top_dir, "a/gone"))
    assert os.major(st.st_rdev) == 0 and os.minor(st.st_rdev) == 0 and (st.st_mode & 0o170000) == 0o020000
    assert os.getxattr(os.path.join(top_dir, "o"), "trusted.overlay.opaque") == b"y"
    with snaps.mounted_rootfs(chain) as active:
        assert sorted(os.listdir(os.path.join(active.rootfs, "a"))) == ["keep"]
        assert sorted(os.listdir(os.path.join(active.rootfs, "o"))) == ["new"]


def test_crash_mid_unpack_leaves_nothing_complete(snaps: Snapshots) -> None:
    good = layer_bytes(*(LayerEntry(path=f"f{i}", kind="file", data=b"x" * 600, size=600) for i in range(20)))
    truncated = good[: len(good) // 2]
    diff_id = "sha256:" + "ab" * 32
    with pytest.raises(StoreError, match="truncated"):
        snaps.ensure_layer(None, diff_id, opener(truncated))
    assert not snaps.exists(diff_id)
    assert os.listdir(os.path.join(snaps.root, "tmp")) == []
    # a dead unpacker's temp dir (nobody holds its lock) is removed by the next open
    os.makedirs(os.path.join(snaps.root, "tmp", "cd" * 32 + ".dead/fs/half"))
    assert Snapshots.open(os.path.dirname(snaps.root)).clean() == 0  # open already cleaned it
    assert os.listdir(os.path.join(snaps.root, "tmp")) == []
    snaps.ensure_layer(None, diff_id, opener(good))
    assert len(os.listdir(snaps.get(diff_id).path)) == 20


def test_concurrent_prepare_of_one_image_unpacks_once(snaps: Snapshots) -> None:
    files = [LayerEntry(path=f"d/f{i:03d}", kind="file", data=b"y", size=1) for i in range(200)]
    data = layer_bytes(LayerEntry(path="d", kind="dir", mode=0o755), *files)
    diff_id = "sha256:" + "12" * 32
    calls: list[int] = []
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    seen: list[int] = []

    def build() -> None:
        try:
            barrier.wait()
            snap = snaps.ensure_layer(None, diff_id, opener(data, calls))
            with snaps.mounted_rootfs((snap.id,)) as active:
                seen.append(len(os.listdir(os.path.join(active.rootfs, "d"))))
                Path(active.rootfs, f"t{threading.get_ident()}").write_text("z")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert calls == [1] and seen == [200, 200]
    assert os.listdir(snaps.get(diff_id).path) == ["d"]


@pytest.mark.parametrize("api", ["lowerdir+", "mount(2)"])
def test_130_layers_mount(snaps: Snapshots, monkeypatch: pytest.MonkeyPatch, api: str) -> None:
    if api == "lowerdir+" and not overlay.supports_lowerdir_plus():
        pytest.skip("this kernel has no overlayfs lowerdir+")
    monkeypatch.setattr(overlay, "_lowerdir_plus", api == "lowerdir+")
    layers = [layer_bytes(LayerEntry(path=f"f{i:03d}", kind="file", data=b"%d" % i, size=len(b"%d" % i)),
                          LayerEntry(path="top", kind="file", data=b"%d" % i, size=len(b"%d" % i)))
              for i in range(130)]
    chain = stack(snaps, layers)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        active = snaps.prepare(chain)
        mounted = time.perf_counter()
        try:
            names = os.listdir(active.rootfs)
            top = Path(active.rootfs, "top").read_text()
        finally:
            snaps.release(active)
        times.append(mounted - start)
    assert len(names) == 131 and top == "129"  # the top-most layer wins
    print(f"130 layers via {api}: prepare (dirs + mount) median {sorted(times)[2] * 1000:.2f} ms")


def test_no_mount_left_after_exception(snaps: Snapshots) -> None:
    with pytest.raises(RuntimeError):
        with snaps.mounted_rootfs(()) as active:
            Path(active.rootfs, "f").write_text("x")
            raise RuntimeError("step failed")
    assert not os.path.exists(active.root)
    assert overlay.mount_points(snaps.root) == []


def test_failed_mount_cleans_up(snaps: Snapshots) -> None:
    with pytest.raises(StoreError, match="snapshot not found"):
        snaps.prepare(("sha256:" + "00" * 32,))
    assert os.listdir(os.path.join(snaps.root, "active")) == []


def test_clean_unmounts_leftovers_of_a_dead_owner(snaps: Snapshots) -> None:
    active = snaps.prepare(())
    snaps._active_locks.pop(active.id).close()  # as if the owning process had died
    assert overlay.is_mounted(active.rootfs)
    assert snaps.clean() == 1
    assert not os.path.exists(active.root) and overlay.mount_points(snaps.root) == []


def test_unmount_of_a_busy_mount_detaches(snaps: Snapshots) -> None:
    active = snaps.prepare(())
    fd = os.open(active.rootfs, os.O_RDONLY | os.O_DIRECTORY)
    try:
        snaps.release(active)
    finally:
        os.close(fd)
    assert overlay.mount_points(snaps.root) == []
