"""The store never hands out root: image filesystems in it are out of other local users' reach.

An attacker is any local user (here uid/gid 65534 with no groups, through `setpriv`). A setuid-root binary
made by a RUN step, and a setuid file and a device node shipped in an imported layer, sit in the store's
snapshots; every copy found under the store root must fail to run (or open) with EACCES. Each test also
shows that the probe would have caught the hole: the same file at a path open to everyone runs, and the
store itself, made 0755 again as it used to be, lets the attacker in.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.api import BuildRequest, build
from pybuild.store.images import import_rootfs, resolve_image
from pybuild.store.store import PRIVATE_DIRS, Store
from pybuild.worker.snapshots import Snapshots
from tests.bases import need

pytestmark = pytest.mark.root

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
PYTHON = "/usr/bin/python3"  # the system one: the venv's may sit where nobody can read it
PROBE = """
import os, subprocess, sys
for path in sys.argv[1:]:
    try:
        if path.endswith("#open"):
            os.close(os.open(path[:-5], os.O_RDONLY))
        else:
            subprocess.run([path], capture_output=True, timeout=10)
        print("ok")
    except PermissionError:
        print("EACCES")
    except OSError as exc:
        print(type(exc).__name__)
"""


def as_nobody(*paths: str, open_only: bool = False) -> list[str]:
    """For each path, what uid 65534 gets: `ok` (it ran, or opened), `EACCES`, or another error's name."""
    need(shutil.which("setpriv") is not None, "setpriv (util-linux) not installed")
    need(os.path.exists(PYTHON), f"{PYTHON} missing")
    args = [p + "#open" if open_only else p for p in paths]
    proc = subprocess.run([*NOBODY, PYTHON, "-c", PROBE, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can traverse (0755, under /tmp), so only the store's own modes protect it.
    pytest's tmp_path is under a 0700 directory, which would hide the hole this file tests for."""
    path = Path(tempfile.mkdtemp(prefix="pybuild-perm-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def copies(root: Path, name: str) -> list[str]:
    """Every file called `name` under `root` (not following symlinks)."""
    found = []
    for top, dirs, files in os.walk(root):
        found += [os.path.join(top, f) for f in files if f == name]
    return sorted(found)


def widen(root: Path) -> None:
    """Undo the fix: the store's directories 0755, as pybuild made them before."""
    for sub in PRIVATE_DIRS:
        (root / sub).chmod(0o755)


def test_a_setuid_binary_made_by_run_is_not_executable_by_other_users(open_dir: Path, busybox_tar: Path) -> None:
    store_root = open_dir / "store"
    with Store.open(str(store_root)) as store:
        import_rootfs(store, str(busybox_tar), "busybox:latest")
    ctx = open_dir / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:latest\nRUN cp /bin/busybox /rootme && chmod 4755 /rootme\n")
    result = build(BuildRequest(context=str(ctx), store_root=str(store_root), tags=("rootme:1",)))
    assert result.warnings == ()
    found = copies(store_root, "rootme")
    assert found and any("/snapshots/" in p for p in found), found
    assert all(os.stat(p).st_mode & stat.S_ISUID for p in found)
    assert as_nobody(*found) == ["EACCES"] * len(found)
    for sub in PRIVATE_DIRS:
        assert stat.S_IMODE((store_root / sub).stat().st_mode) == 0o700, sub
    # the RUN's bundle and runtime state lived in this store's run/, not in the default store's
    assert not (Path(os.environ["PYBUILD_ROOT"]) / "run").exists()

    # the probe sees the hole when there is one: a copy at an open path runs, and so does the store's own
    # copy once the store is as open as it was
    exposed = open_dir / "exposed"
    exposed.mkdir()
    exposed.chmod(0o755)
    shutil.copy2(found[0], exposed / "rootme")
    assert (exposed / "rootme").stat().st_mode & stat.S_ISUID
    assert as_nobody(str(exposed / "rootme")) == ["ok"]
    widen(store_root)
    assert as_nobody(*found) == ["ok"] * len(found)

    # the next build repairs the store and warns; a local export keeps the image's own modes
    out = open_dir / "out"
    again = build(BuildRequest(context=str(ctx), store_root=str(store_root), outputs=(f"type=local,dest={out}",)))
    assert len(again.warnings) == 1, again.warnings
    assert again.warnings[0].startswith("WARNING: store directories were open to other users")
    assert f"{store_root} (was 0755)" in again.warnings[0]
    assert f"{store_root / 'snapshots'} (was 0755)" in again.warnings[0]
    assert as_nobody(*found) == ["EACCES"] * len(found)
    assert stat.S_IMODE((out / "rootme").stat().st_mode) == 0o4755
    with Store.open(str(store_root)) as store:
        assert store.warnings == ()
        assert resolve_image(store, "rootme:1").id == again.image_id


def layer_with_setuid_and_device(path: Path) -> Path:
    """A rootfs tar with a setuid-root copy of busybox and a world-writable character device (1, 5: zero)."""
    with tarfile.open(path, "w") as tar, open("/bin/busybox", "rb") as busybox:
        data = busybox.read()
        info = tarfile.TarInfo("suid")
        info.size, info.mode = len(data), 0o4755
        tar.addfile(info, io.BytesIO(data))
        dev = tarfile.TarInfo("zero")
        dev.type, dev.mode, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 0o666, 1, 5
        tar.addfile(dev)
    return path


def test_an_imported_layer_with_setuid_files_and_devices_stays_private(open_dir: Path) -> None:
    need(os.path.exists("/bin/busybox"), "busybox-static not installed")
    store_root = open_dir / "store"
    with Store.open(str(store_root)) as store:
        image = import_rootfs(store, str(layer_with_setuid_and_device(open_dir / "layer.tar")), "evil:1")
        Snapshots.open(store).ensure_layers(store, image.diff_ids)
    suid, zero = copies(store_root, "suid"), copies(store_root, "zero")
    assert len(suid) == 1 and len(zero) == 1 and stat.S_ISCHR(os.stat(zero[0]).st_mode)
    assert os.stat(suid[0]).st_mode & stat.S_ISUID
    assert as_nobody(*suid) == ["EACCES"]
    assert as_nobody(*zero, open_only=True) == ["EACCES"]
    widen(store_root)  # the probe catches the hole when there is one
    assert as_nobody(*suid) == ["ok"]
    assert as_nobody(*zero, open_only=True) == ["ok"]


def test_a_store_found_open_is_repaired_with_one_warning_line(open_dir: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    store_root = open_dir / "store"
    Store.open(str(store_root)).close()
    store_root.chmod(0o755)
    (store_root / "cache-mounts").chmod(0o777)
    monkeypatch.setenv("PYBUILD_ROOT", str(store_root))
    from pybuild.cli.main import main

    capsys.readouterr()
    assert main(["images"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("warning: store directories were open to other users")
    assert f"{store_root} (was 0755)" in err[0] and f"{store_root / 'cache-mounts'} (was 0777)" in err[0]
    assert stat.S_IMODE(store_root.stat().st_mode) == 0o700
    assert stat.S_IMODE((store_root / "cache-mounts").stat().st_mode) == 0o700
    assert main(["images"]) == 0
    assert capsys.readouterr().err == ""  # repaired once, quiet after
