"""Faults at export destinations (issue 15), through the real CLI: a full disk (a small tmpfs), a read-only
filesystem, no permission, a missing parent, the wrong kind of destination, a full standard output, and a
kill -9 in the middle of an export. Each is exit 1 with one `error:` line naming the destination (and the
free space there for a full disk), and no `.pybuild-export-*` partial is left, by the failed export or,
after a kill -9, by the next export to the same place.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from pybuild.export.destination import PREFIX
from tests.bases import need

pytestmark = pytest.mark.root

PYBUILD = [sys.executable, "-m", "pybuild"]
IMAGE = "busybox:latest"  # what the `root` fixture imports (~1.9 MiB, ~1 MiB gzipped)


def cli(root: str, *args: str, stdout: int | IO[Any] = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYBUILD_ROOT": root}
    return subprocess.run([*PYBUILD, *args], env=env, text=True, stdout=stdout, stderr=subprocess.PIPE,
                          check=False, timeout=300)


def fails(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The `error:` line of a command that failed as a user error (exit 1, no traceback)."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("warning: ")]
    assert lines and lines[0].startswith("error: "), proc.stderr
    assert all(line.startswith("hint: ") for line in lines[1:]), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def leftovers(path: Path) -> list[str]:
    return [p.name for p in path.iterdir() if p.name.startswith(PREFIX)]


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """`mount_tmpfs(name, options)`: a tmpfs mounted at tmp_path/name, unmounted afterwards."""
    need(os.geteuid() == 0, "mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True, timeout=30)
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False, timeout=30)


@pytest.fixture
def built(root: str, tmp_path: Path) -> str:
    """A small image built on busybox (so outputs of `build -o` are cached exports); its name."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:latest\nRUN echo hi > /x\n")
    proc = cli(root, "build", "-q", "-t", "small:1", str(ctx))
    assert proc.returncode == 0, proc.stderr
    return str(ctx)


def test_a_full_disk_at_every_kind_of_output(root: str, built: str, mount_tmpfs: Callable[[str, str], Path]) -> None:
    tiny = mount_tmpfs("tiny", "size=512k")
    for args in (["save", IMAGE, "-o", f"{tiny}/oci.tar"],
                 ["save", "--format", "docker", IMAGE, "-o", f"{tiny}/docker.tar"],
                 ["save", "--compression", "uncompressed", IMAGE, "-o", f"{tiny}/plain.tar"]):
        line = fails(cli(root, *args), f"cannot write output {args[-1]}", "no space left on device",
                     f"free in {tiny})")
        assert "512.0 KiB free" in line  # said once the partial is gone: what the export could have used
    for output in (f"type=oci,dest={tiny}/layout,tar=false", f"type=local,dest={tiny}/rootfs",
                   f"type=tar,dest={tiny}/rootfs.tar", f"type=docker,dest={tiny}/docker.tar",
                   f"type=oci,dest={tiny}/oci.tar"):
        dest = output.split("dest=")[1].split(",")[0]
        fails(cli(root, "build", "-q", "-o", output, built), f"cannot write output {dest}",
              "no space left on device", "free in")
    assert list(tiny.iterdir()) == []  # no partial, no half-written destination
    with open(tiny / "stdout.tar", "wb") as out:
        fails(cli(root, "save", IMAGE, "-o", "-", stdout=out),
              "cannot write output to standard output: no space left on device")


def test_a_roomy_disk_takes_the_same_exports(root: str, built: str, mount_tmpfs: Callable[[str, str], Path]) -> None:
    roomy = mount_tmpfs("roomy", "size=64m")
    assert cli(root, "save", IMAGE, "-o", f"{roomy}/oci.tar").returncode == 0
    proc = cli(root, "build", "-q", "-o", f"type=local,dest={roomy}/rootfs", built)
    assert proc.returncode == 0, proc.stderr
    assert (roomy / "rootfs" / "x").read_text() == "hi\n"
    with tarfile.open(roomy / "oci.tar") as tar:
        assert "index.json" in tar.getnames()
    assert leftovers(roomy) == []


def test_read_only_no_permission_missing_parent_and_wrong_kinds(root: str, built: str, tmp_path: Path,
                                                                mount_tmpfs: Callable[[str, str], Path]) -> None:
    readonly = mount_tmpfs("ro", "ro,size=1m")
    fails(cli(root, "save", IMAGE, "-o", f"{readonly}/out.tar"), f"{readonly}/out.tar", "read-only file system")
    fails(cli(root, "build", "-q", "-o", f"type=local,dest={readonly}/fs", built), f"{readonly}/fs",
          "read-only file system")
    fails(cli(root, "save", IMAGE, "-o", f"{tmp_path}/nope/out.tar"),
          f"cannot write output {tmp_path}/nope/out.tar: directory {tmp_path}/nope does not exist")
    fails(cli(root, "build", "-q", "-o", f"type=oci,dest={tmp_path}/nope/layout,tar=false", built),
          f"directory {tmp_path}/nope does not exist")
    fails(cli(root, "save", IMAGE, "-o", str(tmp_path)), f"cannot write output {tmp_path}: it is a directory")
    (tmp_path / "file").write_text("x")
    fails(cli(root, "build", "-q", "-o", f"type=local,dest={tmp_path}/file", built),
          f"cannot write output {tmp_path}/file: it exists and is not a directory")
    fails(cli(root, "save", IMAGE, "-o", f"{tmp_path}/file/out.tar"), "a parent is not a directory")
    # root without CAP_DAC_OVERRIDE is refused by a directory it does not own, as any user is
    need(subprocess.run(["which", "setpriv"], capture_output=True).returncode == 0, "setpriv not installed")
    locked = tmp_path / "nobodys"
    locked.mkdir(mode=0o755)
    os.chown(locked, 65534, 65534)
    env = {**os.environ, "PYBUILD_ROOT": root}
    proc = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", *PYBUILD, "save", IMAGE,
                           "-o", f"{locked}/out.tar"], env=env, text=True, capture_output=True, timeout=300,
                          check=False)
    fails(proc, f"cannot write output {locked}/out.tar: permission denied")
    assert list(locked.iterdir()) == [] and leftovers(tmp_path) == []


@pytest.mark.parametrize("tar", [True, False], ids=["file", "directory"])
def test_kill_9_during_an_export_is_swept_by_the_next_export(root: str, tmp_path: Path, tar: bool) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    # a layer big enough that writing the output takes a while (uncompressed: no gzip before it starts)
    (ctx / "Dockerfile").write_text("FROM busybox:latest\nRUN head -c 200000000 /dev/urandom > /big\n")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dest = out_dir / ("image.tar" if tar else "layout")
    output = f"type=oci,dest={dest},tar={str(tar).lower()},compression=uncompressed"
    env = {**os.environ, "PYBUILD_ROOT": root}
    proc = subprocess.Popen([*PYBUILD, "build", "-q", "-t", "big:1", "-o", output, str(ctx)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not leftovers(out_dir) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    assert leftovers(out_dir), "the kill came before or after the export: no partial to sweep"
    assert not dest.exists()

    again = subprocess.run([*PYBUILD, "build", "-q", "-t", "big:1", "-o", output, str(ctx)], env=env, text=True,
                           capture_output=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr
    assert leftovers(out_dir) == []
    assert sorted(os.listdir(out_dir)) == [dest.name]
    if tar:
        with tarfile.open(dest) as archive:
            assert "index.json" in archive.getnames()
    else:
        assert (dest / "index.json").is_file()
