"""Building on a base image whose config has no `history` (optional in OCI), or history that names a different
number of layers than the image has (issue 15): the build works, the child's history names exactly its
layers with every step paired with its own layer, and skopeo and umoci read the result.

The base is an OCI layout written by hand (three layers, the config's history as each case gives it) and
loaded with `pybuild load`; the child runs RUN and COPY on it and is exported as an OCI layout and a
docker-archive.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from pybuild.image.config import NO_BASE_HISTORY
from tests.bases import need

pytestmark = [pytest.mark.root, pytest.mark.tools]

PYBUILD = [sys.executable, "-m", "pybuild"]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _tar(members: list[tuple[str, bytes, bytes, int, str]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data, mode, link in members:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.linkname = kind, mode, link
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


def write_base_layout(dest: Path, history: list[dict[str, Any]] | None, name: str) -> list[str]:
    """An OCI layout at `dest` holding one image of three layers (busybox; /etc; /tmp) whose config has
    `history` (left out when None); returns the diffIDs."""
    with open("/bin/busybox", "rb") as f:
        busybox = f.read()
    applets = [(f"bin/{a}", tarfile.SYMTYPE, b"", 0o777, "busybox") for a in ("sh", "echo", "cat", "ls")]
    layers = [
        _tar([("bin", tarfile.DIRTYPE, b"", 0o755, ""), ("bin/busybox", tarfile.REGTYPE, busybox, 0o755, ""),
              *applets]),
        _tar([("etc", tarfile.DIRTYPE, b"", 0o755, ""),
              ("etc/passwd", tarfile.REGTYPE, b"root:x:0:0:root:/root:/bin/sh\n", 0o644, "")]),
        _tar([("tmp", tarfile.DIRTYPE, b"", 0o1777, "")]),
    ]
    (dest / "blobs" / "sha256").mkdir(parents=True)

    def put(data: bytes) -> str:
        hexpart = hashlib.sha256(data).hexdigest()
        (dest / "blobs" / "sha256" / hexpart).write_bytes(data)
        return "sha256:" + hexpart

    diff_ids = [put(layer) for layer in layers]
    config: dict[str, Any] = {"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/bin"]},
                              "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    if history is not None:
        config["history"] = history
    config_bytes = json.dumps(config).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config_bytes),
                   "size": len(config_bytes)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": len(layer)}
                   for d, layer in zip(diff_ids, layers)],
    }).encode()
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": OCI_MANIFEST, "digest": put(manifest), "size": len(manifest),
        "annotations": {"io.containerd.image.name": f"docker.io/library/{name}"}}]}))
    return diff_ids


def cli(root: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYBUILD_ROOT": root}
    return subprocess.run([*PYBUILD, *args], env=env, text=True, capture_output=True, check=False, timeout=300)


def tool(name: str) -> str:
    path = shutil.which(name)
    need(path is not None, f"{name} not installed (apt-get install {name})")
    assert path is not None
    return path


def run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


ONE_OF_THREE = [{"created": "2024-01-01T00:00:00Z", "created_by": "ADD busybox /"},
                {"created": "2024-01-01T00:00:00Z", "created_by": "CMD sh", "empty_layer": True}]
FIVE_OF_THREE = [{"created": "2024-01-01T00:00:00Z", "created_by": f"ADD part{i} /"} for i in range(5)]
DOCKERFILE = "FROM {base}\nRUN echo ran > /x\nCOPY f /f\n"
STAGES = "FROM {base} AS mid\nRUN echo ran > /x\nFROM mid\nENV A=1\nCOPY f /f\n"


@pytest.mark.parametrize(("history", "base_named", "dockerfile"), [
    (None, [], DOCKERFILE),                                       # no history at all (the case)
    ([], [], STAGES),                                             # empty history, through a stage
    (ONE_OF_THREE, ["ADD busybox /"], DOCKERFILE),                # "names 1 layers but the image has 3"
    (FIVE_OF_THREE, ["ADD part0 /", "ADD part1 /", "ADD part2 /"], DOCKERFILE),  # more than it has
], ids=["none", "empty-through-a-stage", "too-few", "too-many"])
def test_build_on_a_base_whose_history_does_not_match(root: str, tmp_path: Path,
                                                      history: list[dict[str, Any]] | None,
                                                      base_named: list[str], dockerfile: str) -> None:
    skopeo, umoci = tool("skopeo"), tool("umoci")
    base_diff_ids = write_base_layout(tmp_path / "base", history, "nohist:1")
    loaded = cli(root, "load", "-i", str(tmp_path / "base"))
    assert loaded.returncode == 0, loaded.stderr
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile.format(base="nohist:1"))
    (ctx / "f").write_text("copied\n")
    layout, archive = tmp_path / "layout", tmp_path / "docker.tar"
    built = cli(root, "build", "-t", "child:1", "--progress=plain", "-o",
                f"type=oci,dest={layout},tar=false,name=child:1", "-o", f"type=docker,dest={archive}", str(ctx))
    assert built.returncode == 0, built.stderr

    config = json.loads(run(skopeo, "inspect", "--config", f"oci:{layout}:1"))
    diff_ids = config["rootfs"]["diff_ids"]
    assert diff_ids[:3] == base_diff_ids and len(diff_ids) == 5
    layered = [h for h in config["history"] if not h.get("empty_layer")]
    assert len(layered) == len(diff_ids)
    padding = [NO_BASE_HISTORY] * (3 - len(base_named))
    assert [h.get("created_by") or h.get("comment") for h in layered] == [
        *base_named, *padding, "RUN /bin/sh -c echo ran > /x # buildkit", "COPY f /f # buildkit"]
    assert all(h.get("created") for h in config["history"])  # umoci's stat dereferences every `created`
    if history == FIVE_OF_THREE:
        assert [h["created_by"] for h in config["history"][:5]] == [h["created_by"] for h in FIVE_OF_THREE]

    info = json.loads(run(skopeo, "inspect", f"oci:{layout}:1"))
    assert len(info["Layers"]) == 5
    run(skopeo, "inspect", f"docker-archive:{archive}")
    stat = run(umoci, "stat", "--image", f"{layout}:1")
    assert "RUN /bin/sh -c echo ran > /x" in stat
    bundle = tmp_path / "bundle"
    run(umoci, "unpack", "--image", f"{layout}:1", str(bundle))
    assert (bundle / "rootfs" / "x").read_text() == "ran\n"
    assert (bundle / "rootfs" / "f").read_text() == "copied\n"
    assert (bundle / "rootfs" / "bin" / "busybox").is_file()
    shown = cli(root, "history", "child:1")
    assert shown.returncode == 0 and "COPY f /f" in shown.stdout, shown.stderr
