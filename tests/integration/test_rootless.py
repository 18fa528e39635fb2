"""Rootless builds: `pybuild build` run by an unprivileged user (pybuild/rootless.py), end to end.

The user is `pybuild-rootless`, made by scripts/setup.sh with 65536 subordinate uids/gids; the tests run as
root, call setup.sh to ensure it, and run pybuild as that user (tests/rootless_runner.py says how).
"""

from __future__ import annotations

import io
import json
import os
import pwd
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bases import debian_rootfs_tar, make_busybox_rootfs, need, tar_dir
from tests.rootless_runner import REPO, USER, Rootless, ensure_user, make_runner

pytestmark = [pytest.mark.root, pytest.mark.tools]


@pytest.fixture(scope="module")
def rl() -> Iterator[Rootless]:
    need(os.geteuid() == 0, "needs root (to make the test user and run pybuild as it)")
    for tool in ("runuser", "newuidmap", "newgidmap", "runc"):
        need(shutil.which(tool) is not None, f"{tool} not installed")
    need(os.path.exists("/bin/busybox"), "busybox-static not installed")
    ensure_user()
    pwd.getpwnam(USER)
    home = Path(tempfile.mkdtemp(prefix="pybuild-rootless-", dir="/tmp"))
    try:
        busybox = make_busybox_rootfs(home / "busybox-rootfs")
        tar_dir(busybox, home / "busybox.tar")
        shutil.rmtree(busybox)
        runner = make_runner(home)
        runner.ok("import", str(home / "busybox.tar"), "busybox:latest", env={"SOURCE_DATE_EPOCH": "0"})
        yield runner
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _context(rl: Rootless, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    ctx = rl.home / f"ctx-{uuid.uuid4().hex[:8]}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        (ctx / name).write_text(text)
    return rl.give(ctx)


def _layers(archive: Path) -> list[dict[str, tuple[int, int, str]]]:
    """Each layer of the single image in an OCI archive: {path: (uid, gid, type)}."""
    out = []
    with tarfile.open(archive) as oci:
        def blob(digest: str) -> bytes:
            member = oci.extractfile("blobs/sha256/" + digest.split(":")[1])
            assert member is not None
            return member.read()
        index = json.loads(blob(json.loads(oci.extractfile("index.json").read())  # type: ignore[union-attr]
                                ["manifests"][0]["digest"]))
        for layer in index["layers"]:
            with tarfile.open(fileobj=io.BytesIO(blob(layer["digest"]))) as tar:
                out.append({m.name.removeprefix("./"): (m.uid, m.gid, "dir" if m.isdir() else "file" if m.isfile()
                                                  else "other") for m in tar.getmembers()})
    return out


STEPS = """FROM busybox
RUN mkdir -p /app/data /gone/sub && echo hi > /app/data/f && chown -R 1000:1000 /app && \\
    chown 65534:65534 /app/data/f && touch /gone/sub/x && id -u > /who
RUN rm -rf /gone /etc/group && mkdir /app/data2 && chmod 0750 /app/data2 && chown 1000:2000 /app/data2 && \
    rm -rf /app/data && mkdir /app/data && echo new > /app/data/g
COPY --chown=123:456 hello.txt /app/hello.txt
WORKDIR /srv/www
"""


def test_build_runs_as_mapped_root_with_container_owners(rl: Rootless) -> None:
    ctx = _context(rl, STEPS, {"hello.txt": "hello\n"})
    out = rl.ok("build", "-q", "-t", "steps:rootless", str(ctx), env={"SOURCE_DATE_EPOCH": "0"})
    assert out.strip().startswith("sha256:")
    archive = rl.home / "steps.tar"
    rl.ok("save", "steps:rootless", "-o", str(archive))
    layers = _layers(archive)
    first, second, third = layers[1], layers[2], layers[3]
    assert first["app/data"][:2] == (1000, 1000)
    assert first["app/data/f"][:2] == (65534, 65534)
    assert first["who"] == (0, 0, "file")
    assert ".wh.gone" in second and "etc/.wh.group" in second
    assert second["app/data2"][:2] == (1000, 2000)
    assert "app/data/.wh..wh..opq" in second and "app/data/g" in second  # an opaque directory
    assert third["app/hello.txt"][:2] == (123, 456)
    # the store is the user's, under $XDG_DATA_HOME (default ~/.local/share)/pybuild, owned by the user
    store = rl.home / ".local" / "share" / "pybuild"
    assert store.is_dir() and store.stat().st_uid == pwd.getpwnam(USER).pw_uid
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(rl.home) not in mounts


def test_digest_equals_a_root_build(rl: Rootless, tmp_path: Path) -> None:
    ctx = _context(rl, STEPS, {"hello.txt": "hello\n"})
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    rootless = rl.ok("build", "-q", "--no-cache", "-t", "same:1", str(ctx), env=env).strip()
    store = tmp_path / "root-store"
    rl.as_root(store, "import", str(rl.home / "busybox.tar"), "busybox:latest", env={"SOURCE_DATE_EPOCH": "0"})
    root = rl.as_root(store, "build", "-q", "--no-cache", "-t", "same:1", str(ctx), env=env).strip()
    assert rootless.startswith("sha256:") and rootless == root


def test_fuse_overlayfs_fallback_writes_the_same_layers(rl: Rootless) -> None:
    need(shutil.which("fuse-overlayfs") is not None, "fuse-overlayfs not installed")
    ctx = _context(rl, STEPS + "RUN ls /app/data /app > /listing && ls /gone 2>/dev/null; test ! -e /gone\n",
                   {"hello.txt": "hello\n"})
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    kernel = rl.ok("build", "-q", "--no-cache", str(ctx), env=env).strip()
    fuse = rl.ok("build", "-q", "--no-cache", str(ctx), env={**env, "PYBUILD_OVERLAY": "fuse-overlayfs"}).strip()
    assert kernel.startswith("sha256:") and fuse == kernel
    for _ in range(100):  # each daemon exits once its mount is gone (asynchronously, after the umount)
        daemons = subprocess.run(["pgrep", "-u", USER, "-x", "fuse-overlayfs"], capture_output=True, text=True)
        if not daemons.stdout:
            break
        time.sleep(0.1)
    assert not daemons.stdout, "fuse-overlayfs daemons outlived the build"


def test_cached_rebuild_and_prune(rl: Rootless) -> None:
    ctx = _context(rl, "FROM busybox\nRUN echo cached > /c\n")
    rl.ok("build", "-q", "-t", "cached:1", str(ctx))
    again = rl.run("build", "--progress=plain", "-t", "cached:1", str(ctx))
    assert again.returncode == 0 and "CACHED" in again.stderr + again.stdout
    rl.ok("prune", "--all")  # removes what the build unpacked: files owned by subordinate ids


def test_kill_9_leaves_nothing_after_the_next_build(rl: Rootless) -> None:
    marker = f"sleep 3{uuid.uuid4().int % 1000:03d}"
    ctx = _context(rl, f"FROM busybox\nRUN {marker}\n")
    build = subprocess.Popen(rl.python_argv("-m", "pybuild", "build", "-q", "--no-cache", str(ctx)),
                             cwd=rl.home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            if subprocess.run(["pgrep", "-f", f"^{marker}$"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the RUN never started")
        found = subprocess.run(["pgrep", "-u", USER, "-f", f"pybuild build -q --no-cache {ctx}"],
                               capture_output=True, text=True).stdout.split()
        assert found, "no pybuild process"
        for pid in found:
            os.kill(int(pid), 9)
        build.wait(timeout=30)
    finally:
        build.kill()
    rl.ok("build", "-q", str(_context(rl, "FROM busybox\nRUN true\n")))  # reaps the dead build's run
    time.sleep(0.5)
    assert subprocess.run(["pgrep", "-f", f"^{marker}$"], capture_output=True).returncode == 1
    run = rl.home / ".local" / "share" / "pybuild" / "run"
    assert not list((run / "bundles").iterdir())
    assert not [p for p in (run / "runc").iterdir() if p.is_dir()]


def test_crun_rootless(rl: Rootless) -> None:
    need(shutil.which("crun") is not None, "crun not installed")
    ctx = _context(rl, "FROM busybox\nRUN id -u > /uid && cat /proc/self/uid_map\n")
    out = rl.run("build", "--runtime", "crun", "--progress=plain", "-t", "crun:1", str(ctx))
    assert out.returncode == 0, out.stderr


def test_missing_subuid_range_is_a_one_line_error(rl: Rootless) -> None:
    ctx = _context(rl, "FROM busybox\nRUN true\n")
    result = rl.run("build", str(ctx), user="nobody")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "error: rootless build: no subordinate id range for user nobody in /etc/subuid"
    assert "usermod --add-subuids" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("flag", [("--memory", "64m"), ("--pids-limit", "50")])
def test_cgroup_limits_are_refused_not_ignored(rl: Rootless, flag: tuple[str, str]) -> None:
    """Rootless runc/crun cannot set cgroup limits without delegation (cgroup v2 and a delegated
    controller; never on cgroup v1): the build stops before any RUN with one line saying so."""
    ctx = _context(rl, "FROM busybox\nRUN echo ran\n")
    result = rl.run("build", "--progress=plain", "--no-cache", *flag, str(ctx))
    # a host that delegates the controller (cgroup v2) enforces it: not the case this test is about
    need(result.returncode != 0, "this host delegates the controller to the user")
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {flag[0]}: this host cannot enforce it: ")
    assert "ran" not in result.stdout + result.stderr


def test_demo_build(rl: Rootless) -> None:
    demo = rl.home / "demo"
    shutil.copytree(REPO / "fixtures" / "demo", demo)
    rootfs = rl.home / "demo-rootfs"
    for sub in ("bin", "etc", "tmp", "root", "var/www"):
        (rootfs / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout
    for applet in applets.split():
        if applet != "busybox":
            (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "tmp").chmod(0o1777)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                           "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    tar_dir(rootfs, rl.home / "demo-busybox.tar")
    rl.give(rl.home)
    env = {"PYBUILD_ROOT": str(rl.home / "demo-store")}
    rl.ok("import", str(rl.home / "demo-busybox.tar"), "busybox:latest", env=env)
    rl.ok("build", "-q", "-t", "pybuild-demo:latest", str(demo), env=env)
    images = rl.ok("images", env=env)
    assert "pybuild-demo" in images


@pytest.mark.slow
def test_apt_get_install_in_debian_base(rl: Rootless) -> None:
    need(shutil.which("debootstrap") is not None, "debootstrap not installed")
    base = rl.home / "debian.tar"
    shutil.copyfile(debian_rootfs_tar(), base)
    rl.give(base)
    env = {"PYBUILD_ROOT": str(rl.home / "debian-store")}
    rl.ok("import", str(base), "debian:bookworm-test", env=env, timeout=600)
    ctx = _context(rl, "FROM debian:bookworm-test\n"
                       "RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                       "--no-install-recommends hello >/dev/null && hello > /hello.out\n")
    rl.ok("build", "-q", "-t", "hello:rootless", str(ctx), env=env, timeout=900)
    archive = rl.home / "hello.tar"
    rl.ok("save", "hello:rootless", "-o", str(archive), env=env)
    step = _layers(archive)[-1]
    assert step.get("usr/bin/hello", (0, 0, ""))[2] == "file"
    assert step["hello.out"][:2] == (0, 0)


# The CVE-class escapes, as whole rootless builds: each must stay inside the rootfs or the context.

def _marker() -> Path:
    marker = Path("/tmp") / f"pybuild-host-marker-{uuid.uuid4().hex}"
    marker.write_text("host secret\n")
    marker.chmod(0o644)
    return marker


@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_workdir_through_proc_self_fd(rl: Rootless, runtime: str) -> None:
    need(shutil.which(runtime) is not None, f"{runtime} not installed")
    marker = _marker()
    try:
        runs = "".join(f"WORKDIR /proc/self/fd/{fd}\nRUN cat ../../../../../..{marker} {marker} 2>/dev/null; "
                       f"pwd -P; true\n" for fd in (3, 4, 5, 6, 7, 8))
        ctx = _context(rl, "FROM busybox\n" + runs)
        result = rl.run("build", "--runtime", runtime, "--progress=plain", "--no-cache", str(ctx))
        assert "host secret" not in result.stdout + result.stderr
    finally:
        marker.unlink()


def test_context_symlink_to_host_file_is_copied_as_link(rl: Rootless) -> None:
    marker = _marker()
    try:
        ctx = _context(rl, "FROM busybox\nCOPY dir /copied\nRUN cat /copied/link 2>&1; readlink /copied/link\n")
        (ctx / "dir").mkdir()
        (ctx / "dir" / "link").symlink_to(marker)
        rl.give(ctx)
        result = rl.run("build", "--progress=plain", "--no-cache", str(ctx))
        assert result.returncode == 0, result.stderr
        assert "host secret" not in result.stdout + result.stderr
        assert str(marker) in result.stderr  # readlink: the link itself was copied, not what it names
        direct = _context(rl, "FROM busybox\nCOPY link /copied\n")
        (direct / "link").symlink_to(marker)
        rl.give(direct)
        refused = rl.run("build", "--progress=plain", "--no-cache", str(direct))
        assert refused.returncode == 1 and "does not resolve inside the build context" in refused.stderr
    finally:
        marker.unlink()


def test_bind_mount_source_cannot_leave_the_context(rl: Rootless) -> None:
    marker = _marker()
    try:
        ctx = _context(rl, f"FROM busybox\nRUN --mount=type=bind,source=../../../../..{marker.parent},target=/m "
                           f"cat /m/{marker.name}\n")
        result = rl.run("build", "--progress=plain", "--no-cache", str(ctx))
        assert "host secret" not in result.stdout + result.stderr
    finally:
        marker.unlink()


def test_add_tar_with_traversal_entries_stays_inside(rl: Rootless) -> None:
    escape = Path("/tmp") / f"pybuild-escape-{uuid.uuid4().hex}"
    ctx = _context(rl, "FROM busybox\nADD evil.tar /dst/\nRUN ls -R /dst\n")
    data = b"pwned\n"
    with tarfile.open(ctx / "evil.tar", "w") as tar:
        for name in (f"../../../../../..{escape}", "link"):
            info = tarfile.TarInfo(name)
            if name == "link":
                info.type, info.linkname = tarfile.SYMTYPE, str(escape.parent)
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(f"link/{escape.name}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    rl.give(ctx)
    rl.run("build", "--progress=plain", "--no-cache", str(ctx))
    assert not escape.exists()

