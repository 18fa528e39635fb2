"""One build step end to end on the real pieces: an imported base unpacked into snapshots, an overlay
rootfs, a RUN in runc, the upperdir turned into a layer. Includes apt-get in a debootstrap'ed Debian base
(network `default`), which is the acceptance test for RUN with a real userland."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.store.images import import_rootfs
from pybuild.store.store import Store
from pybuild.store.tarlayer import iter_layer
from pybuild.worker.executor import ProcessFailed, run_process
from pybuild.worker.snapshots import Snapshots
from pybuild.worker.types import ProcessSpec
from tests.bases import debian_rootfs_tar, make_busybox_rootfs, need, tar_dir

pytestmark = pytest.mark.root

RUNTIME_FILES = {"etc/hosts", "etc/resolv.conf", "etc/hostname"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    need(os.geteuid() == 0, "needs root (overlayfs, runc)")
    need(shutil.which("runc") is not None, "runc not installed")
    yield Store.open(str(tmp_path / "store"))


def layer_paths(snaps: Snapshots, snap: object) -> dict[str, str]:
    buf = io.BytesIO()
    snaps.export_layer(snap, buf, exclude={"/" + p for p in RUNTIME_FILES})  # type: ignore[arg-type]
    buf.seek(0)
    return {entry.path: entry.kind for entry, _ in iter_layer(buf)}


def test_busybox_run_step_makes_a_layer(store: Store, tmp_path: Path) -> None:
    need(os.path.exists("/bin/busybox"), "busybox-static not installed")
    rootfs = make_busybox_rootfs(tmp_path / "bb")
    image = import_rootfs(store, str(tar_dir(rootfs, tmp_path / "bb.tar")), "busybox:step")
    snaps = Snapshots.open(store)
    chain = snaps.ensure_layers(store, image.diff_ids)
    active = snaps.prepare(chain)
    try:
        script = "mkdir -p /app && echo hi > /app/greeting && rm /etc/group && id -u > /app/uid"
        result = run_process(active.rootfs, ProcessSpec(args=("/bin/sh", "-c", script), cwd="/"),
                             network="none")
        assert result.exit_code == 0
        step = snaps.commit(active)
    except BaseException:
        snaps.release(active)
        raise
    paths = layer_paths(snaps, step)
    assert paths.get("app") == "dir" and paths.get("app/greeting") == "file"
    assert paths.get("etc/group") == "whiteout"
    assert not RUNTIME_FILES & set(paths), paths
    with snaps.mounted_rootfs(chain + (step.id,)) as next_step:
        assert Path(next_step.rootfs, "app/greeting").read_text() == "hi\n"
        assert not Path(next_step.rootfs, "etc/group").exists()


def test_failing_run_leaves_no_mount(store: Store, tmp_path: Path) -> None:
    need(os.path.exists("/bin/busybox"), "busybox-static not installed")
    rootfs = make_busybox_rootfs(tmp_path / "bb")
    image = import_rootfs(store, str(tar_dir(rootfs, tmp_path / "bb.tar")), "busybox:fail")
    snaps = Snapshots.open(store)
    chain = snaps.ensure_layers(store, image.diff_ids)
    with pytest.raises(ProcessFailed) as info:
        with snaps.mounted_rootfs(chain) as active:
            run_process(active.rootfs, ProcessSpec(args=("/bin/sh", "-c", "echo boom >&2; exit 7")),
                        network="none")
    assert info.value.exit_code == 7
    assert "boom" in "\n".join(info.value.tail)
    with open("/proc/self/mountinfo") as mounts:
        assert str(store.root) not in mounts.read()


@pytest.mark.slow
def test_apt_get_in_debian_base(store: Store) -> None:
    need(shutil.which("debootstrap") is not None, "debootstrap not installed")
    image = import_rootfs(store, str(debian_rootfs_tar()), "debian:bookworm-test")
    snaps = Snapshots.open(store)
    chain = snaps.ensure_layers(store, image.diff_ids)
    active = snaps.prepare(chain)
    out: list[bytes] = []
    try:
        script = ("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                  "--no-install-recommends hello >/dev/null && hello")
        env = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
        run_process(active.rootfs, ProcessSpec(args=("/bin/sh", "-c", script), env=env), network="default",
                    output=lambda _stream, chunk: out.append(chunk), timeout=600)
        step = snaps.commit(active)
    except BaseException:
        snaps.release(active)
        raise
    assert b"Hello, world!" in b"".join(out)
    assert layer_paths(snaps, step).get("usr/bin/hello") == "file"
