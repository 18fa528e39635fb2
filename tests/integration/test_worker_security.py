"""Security of the worker as a whole: the runc CVE-2024-21626 class (a working directory through a leaked
host fd), checked with every installed runtime. Path-escape cases for COPY/ADD and RUN --mount live in
test_fileops_security.py and test_run_mounts.py."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from pybuild.errors import StepFailed
from pybuild.worker.executor import run_process
from pybuild.worker.fileops import make_workdir
from pybuild.worker.types import ProcessSpec
from tests.bases import make_busybox_rootfs, need

pytestmark = pytest.mark.root


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    need(os.geteuid() == 0, "needs root (runc)")
    need(os.path.exists("/bin/busybox"), "busybox-static not installed")
    return make_busybox_rootfs(tmp_path / "rootfs")


@pytest.mark.parametrize("runtime", ["runc", "crun"])
@pytest.mark.parametrize("fd", [3, 4, 5, 6, 7, 8])
def test_workdir_through_proc_self_fd_cannot_reach_the_host(rootfs: Path, runtime: str, fd: int) -> None:
    need(shutil.which(runtime) is not None, f"{runtime} not installed")
    marker = Path("/tmp") / f"pybuild-host-marker-{uuid.uuid4().hex}"
    marker.write_text("host secret\n")
    try:
        workdir = make_workdir(str(rootfs), f"/proc/self/fd/{fd}")
        # WORKDIR resolution stays in the rootfs: the created path is inside it, never the host's /proc.
        assert Path(rootfs, workdir.lstrip("/")).resolve().is_relative_to(rootfs.resolve())
        script = f"cat ../../../../../..{marker} ../../../..{marker} {marker} 2>/dev/null; pwd -P; true"
        out: list[bytes] = []
        try:
            run_process(str(rootfs), ProcessSpec(args=("/bin/sh", "-c", script), cwd=f"/proc/self/fd/{fd}"),
                        network="none", runtime=runtime, output=lambda _s, chunk: out.append(chunk))
        except StepFailed:
            pass  # the runtime refusing such a cwd is the fixed behaviour too
        assert b"host secret" not in b"".join(out)
    finally:
        marker.unlink()
