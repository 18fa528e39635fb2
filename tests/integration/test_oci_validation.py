"""What pybuild writes, read back by the real tools: skopeo, umoci + runc, podman, and docker when running.

Each tool is a capability: missing locally → skip with the reason; missing in CI (CI set) → fail, since CI
installs them (scripts/setup.sh). docker: setup installs Debian's docker.io; the test starts a private
dockerd of its own (own socket, data root and exec root, no iptables, no bridge) and stops it afterwards,
so it never touches a dockerd the machine may be running.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bases import need
from tests.integration.test_images import CLI, busybox, busybox_rootfs, cli  # noqa: F401 (fixtures)

pytestmark = pytest.mark.tools

TIMEOUT = 180


def tool(name: str) -> str:
    path = shutil.which(name)
    need(path is not None, f"{name} not installed (apt-get install {name})")
    assert path is not None
    return path


def run(*argv: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def saved(cli: CLI, busybox: str, tmp_path: Path) -> dict[str, Path]:  # noqa: F811
    """The busybox image saved four ways: OCI (gzip, zstd), docker-archive, OCI layout directory."""
    out = {"oci": tmp_path / "oci.tar", "zstd": tmp_path / "zstd.tar", "docker": tmp_path / "docker.tar"}
    cli.ok("save", busybox, "-o", str(out["oci"]))
    cli.ok("save", "--compression", "zstd", busybox, "-o", str(out["zstd"]))
    cli.ok("save", "--format", "docker", busybox, "-o", str(out["docker"]))
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(out["oci"]) as tar:
        tar.extractall(layout, filter="data")
    out["layout"] = layout
    return out


def test_skopeo_inspect_and_copy(saved: dict[str, Path], cli: CLI, busybox: str, tmp_path: Path) -> None:  # noqa: F811
    skopeo = tool("skopeo")
    doc = cli.inspect(busybox)
    for kind in ("oci", "zstd"):
        info = json.loads(run(skopeo, "inspect", f"oci-archive:{saved[kind]}").stdout)
        assert info["Architecture"] == json.loads(json.dumps(doc["config"]))["architecture"]
        assert info["Os"] == "linux"
        raw = json.loads(run(skopeo, "inspect", "--raw", f"oci-archive:{saved[kind]}").stdout)
        assert raw["config"]["digest"] == doc["id"]
        if kind == "oci":
            assert info["Digest"] == doc["digest"]
        config = json.loads(run(skopeo, "inspect", "--config", f"oci-archive:{saved[kind]}").stdout)
        assert config["rootfs"]["diff_ids"] == json.loads(json.dumps(doc["config"]))["rootfs"]["diff_ids"]
        dest = tmp_path / f"copy-{kind}"
        run(skopeo, "copy", f"oci-archive:{saved[kind]}", f"dir:{dest}")
        assert (dest / "manifest.json").is_file()
    info = json.loads(run(skopeo, "inspect", f"docker-archive:{saved['docker']}").stdout)
    assert info["Os"] == "linux"
    run(skopeo, "copy", f"docker-archive:{saved['docker']}", f"oci:{tmp_path / 'from-docker'}:x")
    run(skopeo, "inspect", f"oci:{saved['layout']}:test")


@pytest.fixture
def container_id() -> Iterator[str]:
    name = f"pybuild-test-{uuid.uuid4().hex[:12]}"
    yield name
    if shutil.which("runc"):
        subprocess.run(["runc", "delete", "--force", name], capture_output=True, timeout=60)


@pytest.mark.root
def test_umoci_unpack_and_runc_run(saved: dict[str, Path], tmp_path: Path, container_id: str) -> None:
    umoci, runc = tool("umoci"), tool("runc")
    need(os.geteuid() == 0, "runc run needs root")
    bundle = tmp_path / "bundle"
    run(umoci, "unpack", "--image", f"{saved['layout']}:test", str(bundle))
    assert (bundle / "rootfs" / "bin" / "busybox").is_file()
    assert os.readlink(bundle / "rootfs" / "bin" / "sh") == "busybox"
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/busybox", "echo", "hello"]
    namespaces = config["linux"]["namespaces"]
    config["linux"]["namespaces"] = [n for n in namespaces if n["type"] != "network"]
    config_path.write_text(json.dumps(config))
    proc = run(runc, "run", "--bundle", str(bundle), container_id)
    assert proc.stdout.strip() == "hello"


@pytest.fixture
def podman_root() -> Iterator[list[str]]:
    """podman with a throwaway storage root (vfs: works in any container, no fuse-overlayfs needed)."""
    podman = tool("podman")
    root = Path(tempfile.mkdtemp(prefix="pb-podman-"))  # podman refuses a runroot longer than 50 characters
    args = [podman, "--root", str(root / "root"), "--runroot", str(root / "run"), "--storage-driver", "vfs"]
    yield args
    subprocess.run([*args, "system", "reset", "--force"], capture_output=True, timeout=TIMEOUT)
    shutil.rmtree(root, ignore_errors=True)


def test_podman_load(saved: dict[str, Path], podman_root: list[str], cli: CLI, busybox: str) -> None:  # noqa: F811
    image_id = str(cli.inspect(busybox)["id"])[7:]
    for kind in ("docker", "oci", "zstd"):
        proc = run(*podman_root, "load", "-i", str(saved[kind]))
        assert "busybox:test" in proc.stdout + proc.stderr
        listed = run(*podman_root, "images", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}", "--no-trunc").stdout
        assert image_id in listed and "busybox:test" in listed, listed
        run(*podman_root, "rmi", "--all", "--force")


@pytest.fixture(scope="module")
def docker_host() -> Iterator[str]:
    """A private dockerd for this module: `unix://` address of its socket. Needs root and docker.io."""
    dockerd = shutil.which("dockerd") or ("/usr/sbin/dockerd" if os.path.exists("/usr/sbin/dockerd") else None)
    need(dockerd is not None and shutil.which("docker") is not None, "docker.io not installed")
    need(os.geteuid() == 0, "starting a dockerd needs root")
    assert dockerd is not None
    work = Path(tempfile.mkdtemp(prefix="pybuild-dockerd-", dir="/var/tmp"))
    sock = f"/run/pybuild-dockerd-{uuid.uuid4().hex[:8]}.sock"
    host = f"unix://{sock}"
    log = open(work / "dockerd.log", "wb")
    # Its own network namespace: with --bridge=none a dockerd deletes the host's docker0 otherwise,
    # which breaks a system dockerd's containers (unshare execs dockerd: `proc` is dockerd itself)
    proc = subprocess.Popen(
        ["unshare", "--net", "--", dockerd, "--host", host, "--data-root", str(work / "data"), "--exec-root", str(work / "exec"),
         "--pidfile", str(work / "dockerd.pid"), "--iptables=false", "--bridge=none"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(120):
            ready = subprocess.run(["docker", "-H", host, "info"], capture_output=True, timeout=20)
            if ready.returncode == 0:
                break
            if proc.poll() is not None:
                pytest.fail(f"dockerd exited {proc.returncode}: {(work / 'dockerd.log').read_text()[-2000:]}")
            subprocess.run(["sleep", "0.25"], check=False)
        else:
            pytest.fail(f"dockerd did not come up: {(work / 'dockerd.log').read_text()[-2000:]}")
        yield host
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        subprocess.run(["umount", "-R", str(work / "data")], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


def test_docker_load(saved: dict[str, Path], cli: CLI, busybox: str, docker_host: str) -> None:  # noqa: F811
    tag = f"pybuild-validation:{uuid.uuid4().hex[:8]}"
    cli.ok("tag", busybox, tag)
    archive = saved["docker"].with_name("tagged.tar")
    cli.ok("save", "--format", "docker", tag, "-o", str(archive))
    proc = run("docker", "-H", docker_host, "load", "-i", str(archive))
    assert tag in proc.stdout
    out = run("docker", "-H", docker_host, "run", "--rm", "--network=none", tag,
              "/bin/busybox", "echo", "hello").stdout
    assert out.strip() == "hello"
