"""Fixtures shared by the integration tests that run whole builds."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.store.images import import_rootfs
from pybuild.store.store import Store
from tests.bases import make_busybox_rootfs, need, tar_dir


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox-static rootfs as a tar (to `pybuild import`); skips (fails in CI) without root, runc or
    busybox-static, which every build test needs."""
    need(os.geteuid() == 0, "needs root (overlayfs, runc)")
    need(shutil.which("runc") is not None, "runc not installed")
    need(os.path.exists("/bin/busybox"), "busybox-static not installed")
    tmp = tmp_path_factory.mktemp("busybox")
    return tar_dir(make_busybox_rootfs(tmp / "rootfs"), tmp / "busybox.tar")


@pytest.fixture
def root(tmp_path: Path, busybox_tar: Path) -> Iterator[str]:
    """A store with busybox:latest imported; its path. Afterwards, no mount may be left under it."""
    path = str(tmp_path / "store")
    with Store.open(path) as store:
        import_rootfs(store, str(busybox_tar), "busybox:latest")
    yield path
    with open("/proc/self/mountinfo", encoding="utf-8") as mounts:
        assert path not in mounts.read(), "a build left a mount behind"
