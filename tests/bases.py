"""Base images the tests make for themselves (no registry is reachable here).

- `make_busybox_rootfs(dest)`: a busybox rootfs from Debian's busybox-static (/bin/busybox plus applet
  links, /etc/passwd with root and `app` (1000), /etc/group).
- `debian_rootfs_tar()`: a debootstrap'ed Debian bookworm (minbase) as a tar, for tests that need a real
  userland (apt-get). debootstrap takes ~30 s, so the tar is kept in $PYBUILD_TEST_CACHE (default
  /var/cache/pybuild-tests) and made again only when missing. It is a cache of a test input, made by the
  tests themselves from the Debian mirror apt already uses.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "echo", "cat", "id", "hostname", "ls", "wget", "nc", "sleep", "true", "false", "mkdir",
           "touch", "rm", "env", "pwd", "chmod", "stat", "test", "printf", "sed", "grep", "head", "wc", "date")
CACHE = Path(os.environ.get("PYBUILD_TEST_CACHE", "/var/cache/pybuild-tests"))


def make_busybox_rootfs(dest: Path) -> Path:
    """Fill `dest` with a minimal busybox userland; returns `dest`."""
    (dest / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, dest / "bin" / "busybox")
    for applet in APPLETS:
        link = dest / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    for sub in ("etc", "tmp", "root", "home/app"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    (dest / "tmp").chmod(0o1777)
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n")
    (dest / "etc" / "group").write_text("root:x:0:\napp:x:1000:\n")
    return dest


def debian_mirror() -> str:
    """The Debian mirror apt is configured with (deb.debian.org when none is found)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in path.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    return "http://deb.debian.org/debian"


def debian_rootfs_tar(suite: str = "bookworm") -> Path:
    """A tar of a minbase Debian rootfs, made with debootstrap once and cached (needs root and network)."""
    target = CACHE / f"debian-{suite}-minbase.tar"
    if target.is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix=".debootstrap-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", suite, str(rootfs), debian_mirror()],
                       check=True, capture_output=True, timeout=1200)
        partial = Path(tmp) / "rootfs.tar"
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(rootfs, arcname=".")
        os.replace(partial, target)
    return target


def need(condition: bool, reason: str) -> None:
    """Skip with `reason` when `condition` is false; in CI (CI set) fail instead, since CI installs it all."""
    import pytest

    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI installs it: scripts/setup.sh)")
    pytest.skip(reason)


def tar_dir(root: Path, out: Path) -> Path:
    """`root`'s contents as a tar at `out` (entries relative to root)."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for child in sorted(root.iterdir()):
            tar.add(child, arcname=child.name)
    return out
