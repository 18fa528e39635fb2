"""`pybuild pull` / `push` / `login` / `logout`, `build --push`, `-o type=image,push=true` / `type=registry`
and FROM resolving from a registry, against distribution's real `docker-registry` (tests.registry_support).

Builds (marked `root`) need runc and busybox-static, as in test_build.py; the pull and push tests use a
tiny imported image and need neither. Requests are counted through a `FaultProxy` in front of the
registry; `skopeo inspect` checks what a push left in the registry.
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
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pybuild.api import BuildRequest, BuildResult, build
from pybuild.errors import UserError
from pybuild.image.spec import OCI_INDEX, OCI_MANIFEST, host_platform
from pybuild.progress import BuildNote, Event, ListSink
from pybuild.registry.client import RegistryClient, client_for
from pybuild.registry.pull import pull_image
from pybuild.registry.push import push_image
from pybuild.store.images import import_rootfs, resolve_image
from pybuild.store.store import Store
from tests.bases import need
from tests.registry_support import FaultProxy, RunningRegistry, TokenServer, start_registry, tiny_rootfs_tar

PYBUILD = [sys.executable, "-m", "pybuild"]
UPLOAD_PUT = r"/blobs/uploads/"


# --- helpers -----------------------------------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RunningRegistry]:
    with start_registry(tmp_path) as running:
        yield running


@pytest.fixture
def tiny_tar(tmp_path: Path) -> Path:
    """A rootfs tar of two small files (enough for pushes and pulls; nothing runs in it)."""
    return tiny_rootfs_tar(tmp_path / "tiny.tar")


def tiny_store(tmp_path: Path, tiny_tar: Path, name: str, label: str = "store") -> str:
    root = str(tmp_path / label)
    with Store.open(root) as store:
        import_rootfs(store, str(tiny_tar), name)
    return root


def cli(root: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYBUILD_ROOT": root}
    env.pop("CI", None)
    return subprocess.run([*PYBUILD, *args], env=env, input=stdin, text=True, capture_output=True, check=False,
                          timeout=300)


def fails(root: str, *args: str, stdin: str | None = None) -> str:
    """The error line of a command that must fail with exit 1, one error line and no traceback."""
    proc = cli(root, *args, stdin=stdin)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def skopeo(*args: str) -> dict[str, object]:
    need(shutil.which("skopeo") is not None, "skopeo not installed")
    proc = subprocess.run(["skopeo", "inspect", "--tls-verify=false", *args], capture_output=True, text=True,
                          check=True, timeout=60)
    doc: dict[str, object] = json.loads(proc.stdout)
    return doc


def inspect(root: str, name: str) -> dict[str, object]:
    proc = cli(root, "inspect", name)
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, object] = json.loads(proc.stdout)
    return doc


def stored_names(root: str) -> list[str]:
    with Store.open(root) as store:
        return [tag.name for tag in store.index.list_tags()]


def fast(host: str) -> RegistryClient:
    """The process's shared client for `host`, with short retry back-off (a stopped registry fails fast)."""
    client = client_for(host)
    client.backoff = 0.01
    return client


# --- push and pull -----------------------------------------------------------------------------------------


def test_push_then_pull_into_a_fresh_store(registry: RunningRegistry, tmp_path: Path, tiny_tar: Path) -> None:
    ref = f"{registry.host}/tiny:1"
    root = tiny_store(tmp_path, tiny_tar, ref)
    pushed = cli(root, "push", ref)
    assert pushed.returncode == 0, pushed.stderr
    digest = pushed.stdout.strip()
    local = inspect(root, ref)
    remote = skopeo(f"docker://{ref}")
    assert remote["Digest"] == digest
    raw = skopeo("--raw", f"docker://{ref}")
    assert raw["config"]["digest"] == local["id"]  # type: ignore[index]
    assert raw["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"  # type: ignore[index]

    fresh = str(tmp_path / "fresh")
    pulled = cli(fresh, "pull", ref)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip() == ref
    back = inspect(fresh, ref)
    assert back["digest"] == digest and back["id"] == local["id"] and back["layers"] == local["layers"]
    again = cli(fresh, "pull", ref)  # nothing to download the second time
    assert again.returncode == 0 and "0 layer(s) to download" in again.stderr


def test_second_push_uploads_nothing_and_another_repository_mounts(
        registry: RunningRegistry, tmp_path: Path, tiny_tar: Path) -> None:
    with FaultProxy(registry.host) as proxy, Store.open(tiny_store(tmp_path, tiny_tar, "tiny:1")) as store:
        image = resolve_image(store, "tiny:1")
        first = push_image(store, image, f"{proxy.host}/app:1")
        assert len(first.uploaded) == 2 and len(proxy.matching("PUT", UPLOAD_PUT)) == 2
        before = len(proxy.requests)
        start = time.monotonic()
        second = push_image(store, image, f"{proxy.host}/app:1")
        assert time.monotonic() - start < 2
        assert second.digest == first.digest and second.uploaded == () and len(second.existing) == 2
        later = proxy.requests[before:]
        # the repository has that manifest, so it has its blobs: one HEAD of the manifest, then its PUT
        assert [(r[0], "/manifests/" in r[1]) for r in later] == [("HEAD", True), ("PUT", True)], later
        third = push_image(store, image, f"{proxy.host}/other:1")
        assert third.uploaded == () and len(third.mounted) == 2
        mounts = proxy.matching("POST", r"/v2/other/blobs/uploads/\?mount=")
        assert len(mounts) == 2 and not proxy.matching("PUT", r"/v2/other/blobs/uploads/")
    # blobs seen by a pull are mounted too
    fresh = str(tmp_path / "fresh")
    with FaultProxy(registry.host) as proxy, Store.open(fresh) as store:
        pulled = pull_image(store, f"{proxy.host}/app:1")
        fourth = push_image(store, pulled.image, f"{proxy.host}/third:1")
        assert fourth.uploaded == () and len(fourth.mounted) == 2


def test_layers_compressed_once_and_zstd_push(registry: RunningRegistry, tmp_path: Path, tiny_tar: Path) -> None:
    root = tiny_store(tmp_path, tiny_tar, "tiny:1")
    with Store.open(root) as store:
        image = resolve_image(store, "tiny:1")
        zstd = push_image(store, image, f"{registry.host}/z:1", compression="zstd")
        rows = store.index.compressed_forms(image.diff_ids[0])
        again = push_image(store, image, f"{registry.host}/z:2", compression="zstd")
        assert again.digest == zstd.digest and store.index.compressed_forms(image.diff_ids[0]) == rows
    raw = skopeo("--raw", f"docker://{registry.host}/z:1")
    assert raw["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"  # type: ignore[index]
    fresh = str(tmp_path / "fresh")
    assert cli(fresh, "pull", f"{registry.host}/z:1").returncode == 0
    assert inspect(fresh, f"{registry.host}/z:1")["layers"] == list(image.diff_ids)


def _push_index(registry: RunningRegistry, root: str, other: str) -> tuple[str, str, str]:
    """Push the tiny image as `multi:1`, an index of the host's platform and `other` (the same layers, its
    config saying `other`'s architecture). Returns (host manifest, other manifest, index) digests."""
    client = RegistryClient(registry.host)
    with Store.open(root) as store:
        image = resolve_image(store, "tiny:1")
        host = push_image(store, image, f"{registry.host}/multi:host")
    data, _, _ = client.get_manifest("multi", host.digest)
    manifest = json.loads(data)
    config = json.loads(image.config_bytes)
    config["architecture"] = other
    config_bytes = json.dumps(config).encode()
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    client.upload_blob("multi", config_digest, len(config_bytes), lambda: io.BytesIO(config_bytes))
    manifest["config"] = {**manifest["config"], "digest": config_digest, "size": len(config_bytes)}
    other_bytes = json.dumps(manifest).encode()
    other_digest = client.put_manifest("multi", "other", other_bytes, OCI_MANIFEST)
    platform = host_platform()
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": host.digest, "size": host.size,
         "platform": {"os": "linux", "architecture": platform.architecture}},
        {"mediaType": OCI_MANIFEST, "digest": other_digest, "size": len(other_bytes),
         "platform": {"os": "linux", "architecture": other}},
        {"mediaType": OCI_MANIFEST, "digest": other_digest, "size": len(other_bytes),
         "platform": {"os": "unknown", "architecture": "unknown"}},  # an attestation entry is never picked
    ]}
    index_digest = client.put_manifest("multi", "1", json.dumps(index).encode(), OCI_INDEX)
    client.close()
    return host.digest, other_digest, index_digest


def test_pull_picks_the_platform_from_an_index(registry: RunningRegistry, tmp_path: Path, tiny_tar: Path) -> None:
    host = host_platform()
    other = "arm64" if host.architecture != "arm64" else "amd64"
    root = tiny_store(tmp_path, tiny_tar, "tiny:1")
    mine, theirs, index = _push_index(registry, root, other)
    ref = f"{registry.host}/multi:1"
    fresh = str(tmp_path / "fresh")
    assert cli(fresh, "pull", ref).returncode == 0
    assert inspect(fresh, ref)["digest"] == mine
    assert cli(fresh, "pull", "--platform", f"linux/{other}", ref).returncode == 0
    pulled = inspect(fresh, ref)
    assert pulled["digest"] == theirs and pulled["platform"] == f"linux/{other}"
    available = ", ".join(sorted({f"linux/{host.architecture}", f"linux/{other}"}))
    assert fails(fresh, "pull", "--platform", "linux/s390x", ref) == \
        f"error: no linux/s390x image in {ref}: available: {available}"
    # by the index's digest: the host's manifest, stored as REPO@DIGEST
    pinned = f"{registry.host}/multi@{index}"
    assert cli(fresh, "pull", pinned).returncode == 0
    assert inspect(fresh, pinned)["digest"] == mine
    assert pinned in stored_names(fresh)
    listing = cli(fresh, "images")
    assert listing.returncode == 0 and "<none>" in listing.stdout


def test_pull_errors_are_one_line_and_store_nothing(registry: RunningRegistry, tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    assert "cannot reach registry nosuch.invalid" in fails(root, "pull", "nosuch.invalid/x:1")
    assert "cannot reach registry nosuch.invalid" in fails(root, "pull", "--insecure-registry", "nosuch.invalid",
                                                           "nosuch.invalid/x:1")
    assert fails(root, "pull", f"{registry.host}/nothing:1") == \
        f"error: manifest unknown: {registry.host}/nothing:1"
    assert "invalid reference format" in fails(root, "pull", "Bad/Name:1")
    assert "invalid platform" in fails(root, "pull", "--platform", "linux", f"{registry.host}/x:1")
    assert "no such image" in fails(root, "push", f"{registry.host}/absent:1")
    assert "cannot push to" in fails(root, "push", f"{registry.host}/x@sha256:" + "a" * 64)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    assert "--push needs a name" in fails(root, "build", "--push", str(ctx))
    assert stored_names(root) == []


def test_corrupt_blob_stores_nothing(registry: RunningRegistry, tmp_path: Path, tiny_tar: Path) -> None:
    root = tiny_store(tmp_path, tiny_tar, "tiny:1")
    with Store.open(root) as store:
        pushed = push_image(store, resolve_image(store, "tiny:1"), f"{registry.host}/tiny:1")
        layer = json.loads(RegistryClient(registry.host).get_manifest("tiny", pushed.digest)[0])["layers"][0]
    fresh = str(tmp_path / "fresh")
    with FaultProxy(registry.host) as proxy:
        proxy.corrupt(f"/blobs/{layer['digest']}", count=100)
        error = fails(fresh, "pull", f"{proxy.host}/tiny:1")
    assert "digest mismatch" in error or "corrupt" in error, error
    assert stored_names(fresh) == []
    with Store.open(fresh) as store:
        assert store.index.images() == [] and not store.blobs.exists(layer["digest"])
        assert os.listdir(store.blobs.tmp_dir) == []


def layered_store(tmp_path: Path, name: str, count: int) -> str:
    """A store holding `name`: an image of `count` distinct small layers (built from imports)."""
    from pybuild.image.spec import Manifest, to_descriptor

    root = str(tmp_path / "layered")
    images = []
    with Store.open(root) as store:
        for i in range(count):
            path = tmp_path / f"layer{i}.tar"
            with tarfile.open(path, "w") as tar:
                data = os.urandom(256 << 10)
                info = tarfile.TarInfo(f"layer{i}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            images.append(import_rootfs(store, str(path), None))
        config = json.loads(images[0].config_bytes)
        config["rootfs"]["diff_ids"] = [image.diff_ids[0] for image in images]
        config["history"] = config["history"] * count
        config_bytes = json.dumps(config).encode()
        config_desc = to_descriptor(images[0].manifest.config.media_type, config_bytes)
        manifest = Manifest(config_desc, tuple(image.manifest.layers[0] for image in images))
        data = manifest.to_bytes()
        store.put_bytes(config_bytes, config_desc.media_type)
        digest, _ = store.put_bytes(data, OCI_MANIFEST)
        store.index.record_image(digest, config_desc.digest, str(host_platform()), 0)
        store.index.set_tag(f"docker.io/library/{name}", digest)
    return root


def test_a_bad_layer_among_parallel_downloads_stores_nothing(registry: RunningRegistry, tmp_path: Path) -> None:
    root = layered_store(tmp_path, "layered:1", 6)
    with Store.open(root) as store:
        image = resolve_image(store, "layered:1")
        push_image(store, image, f"{registry.host}/layered:1")
    fresh = str(tmp_path / "fresh")
    with FaultProxy(registry.host) as proxy:
        proxy.corrupt(f"/blobs/{image.manifest.layers[3].digest}", count=100)
        error = fails(fresh, "pull", f"{proxy.host}/layered:1")
        assert image.manifest.layers[3].digest in error or "digest mismatch" in error, error
    assert stored_names(fresh) == []
    with Store.open(fresh) as store:
        assert store.index.images() == [] and os.listdir(store.blobs.tmp_dir) == []
        assert not any(store.blobs.exists(layer.digest) for layer in image.manifest.layers)
    assert cli(fresh, "pull", f"{registry.host}/layered:1").returncode == 0
    assert inspect(fresh, f"{registry.host}/layered:1")["layers"] == list(image.diff_ids)


def tag_with_config(registry: RunningRegistry, tmp_path: Path, tiny_tar: Path, tag: str,
                    edit: Callable[[dict[str, Any]], bytes]) -> None:
    """Push tiny:1 and tag, as tiny:`tag`, its manifest with the config `edit(config)` returns."""
    root = tiny_store(tmp_path, tiny_tar, "tiny:1")
    with Store.open(root) as store:
        pushed = push_image(store, resolve_image(store, "tiny:1"), f"{registry.host}/tiny:1")
    client = RegistryClient(registry.host)
    manifest = json.loads(client.get_manifest("tiny", pushed.digest)[0])
    out = io.BytesIO()
    client.get_blob("tiny", manifest["config"]["digest"], out)
    bad = edit(json.loads(out.getvalue()))
    digest = "sha256:" + hashlib.sha256(bad).hexdigest()
    client.upload_blob("tiny", digest, len(bad), lambda: io.BytesIO(bad))
    manifest["config"] = {**manifest["config"], "digest": digest, "size": len(bad)}
    client.put_manifest("tiny", tag, json.dumps(manifest).encode(), OCI_MANIFEST)
    client.close()


def test_a_config_lying_about_a_diff_id_fails_where_the_layer_is_first_unpacked(
        registry: RunningRegistry, tmp_path: Path, tiny_tar: Path) -> None:
    # a pull keeps layers as sent and checks diffIDs on first decompression (containerd's way), so the
    # lie surfaces at the first use, as a one-line error, and the layer is dropped for the next pull
    lie = "sha256:" + hashlib.sha256(b"not this layer").hexdigest()

    def edit(config: dict[str, Any]) -> bytes:
        config["rootfs"]["diff_ids"] = [lie]
        return json.dumps(config).encode()

    tag_with_config(registry, tmp_path, tiny_tar, "lie", edit)
    fresh = str(tmp_path / "fresh")
    assert cli(fresh, "pull", f"{registry.host}/tiny:lie").returncode == 0
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {registry.host}/tiny:lie\n")
    error = fails(fresh, "build", "-o", f"type=tar,dest={tmp_path / 'out.tar'}", str(context))
    assert "does not match its diffID" in error and lie in error, error
    assert not (tmp_path / "out.tar").exists()
    again = cli(fresh, "pull", f"{registry.host}/tiny:lie")
    assert again.returncode == 0 and "1 layer(s) to download" in again.stderr + again.stdout


def test_malformed_config_is_refused(registry: RunningRegistry, tmp_path: Path, tiny_tar: Path) -> None:
    bad = b'{"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}'
    tag_with_config(registry, tmp_path, tiny_tar, "bad", lambda _: bad)
    fresh = str(tmp_path / "fresh")
    error = fails(fresh, "pull", f"{registry.host}/tiny:bad")
    assert error.startswith(f"error: cannot pull {registry.host}/tiny:bad: invalid image") and "diff_ids" in error
    assert stored_names(fresh) == []


def test_auth_login_logout_and_denied_scopes(tmp_path: Path, tiny_tar: Path) -> None:
    tokens = TokenServer(tmp_path / "tokens", users={"alice": "s3cret-pw"}, deny=("repository:locked:push",))
    with tokens, start_registry(tmp_path, token=tokens) as registry:
        ref = f"{registry.host}/app:1"
        root = tiny_store(tmp_path, tiny_tar, ref)
        error = fails(root, "push", ref)
        assert f"access to registry {registry.host} denied: repository:app:pull,push" in error
        assert "s3cret" not in error
        logged = cli(root, "login", "-u", "alice", "--password-stdin", registry.host, stdin="s3cret-pw\n")
        assert logged.returncode == 0, logged.stderr
        assert "Login Succeeded" in logged.stdout and "s3cret" not in logged.stdout + logged.stderr
        assert "login failed" in fails(root, "login", "-u", "alice", "--password-stdin", registry.host,
                                       stdin="wrong\n")
        assert cli(root, "push", ref).returncode == 0
        assert cli(root, "tag", ref, f"{registry.host}/locked:1").returncode == 0
        error = fails(root, "push", f"{registry.host}/locked:1")
        assert "denied: repository:locked:pull,push" in error
        out = cli(root, "logout", registry.host)
        assert out.returncode == 0 and "Removing login credentials" in out.stdout
        assert "Not logged in" in cli(root, "logout", registry.host).stdout
        config = Path(os.environ["HOME"]) / ".docker" / "config.json"
        config.write_text("{not json")
        assert "config.json" in fails(str(tmp_path / "fresh"), "pull", ref)


# --- builds --------------------------------------------------------------------------------------------------


def make_context(tmp_path: Path, dockerfile: str, name: str = "ctx") -> Path:
    ctx = tmp_path / name
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


def run_build(root: str, ctx: Path, **kwargs: object) -> tuple[BuildResult, list[Event]]:
    sink = ListSink()
    result = build(BuildRequest(context=str(ctx), store_root=root, **kwargs), sink)  # type: ignore[arg-type]
    return result, sink.events


def file_of(root: str, name: str, path: str) -> str | None:
    with Store.open(root) as store:
        out = Path(root).parent / f"fs-{time.monotonic_ns()}"
        from pybuild.export.exporters import export_image
        from pybuild.export.outputs import parse_output

        export_image(store, resolve_image(store, name), parse_output(f"type=local,dest={out}"))
    target = out / path
    text = target.read_text() if target.is_file() else None
    shutil.rmtree(out)
    return text


def notes(events: list[Event], prefix: str) -> list[str]:
    return [e.text for e in events if isinstance(e, BuildNote) and e.text.startswith(prefix)]


BASE = "FROM busybox:latest\nENV FROM_BASE=yes\nONBUILD RUN echo triggered > /triggered\nRUN echo base > /base\n"


@pytest.mark.root
def test_build_push_and_push_outputs(registry: RunningRegistry, root: str, tmp_path: Path) -> None:
    ctx = make_context(tmp_path, BASE)
    proc = cli(root, "build", "--progress=plain", "--push", "-t", f"{registry.host}/base:1",
               "-t", f"{registry.host}/base:2", str(ctx))
    assert proc.returncode == 0, proc.stderr
    for tag in ("1", "2"):
        remote = skopeo(f"docker://{registry.host}/base:{tag}")
        assert "FROM_BASE=yes" in remote["Env"]  # type: ignore[operator]
    result, _ = run_build(root, ctx, outputs=(f"type=image,name={registry.host}/img:1,push=true",
                                              f"type=registry,name={registry.host}/reg:1"))
    client = RegistryClient(registry.host)
    for repo in ("img", "reg"):
        assert client.head_manifest(repo, "1") is not None
    assert json.loads(client.get_manifest("reg", "1")[0])["config"]["digest"] == result.image_id
    client.close()


@pytest.mark.root
def test_from_a_registry_pulls_then_rebuilds_offline(registry: RunningRegistry, root: str, tmp_path: Path) -> None:
    base = f"{registry.host}/base:1"
    assert cli(root, "build", "--push", "-t", base, str(make_context(tmp_path, BASE))).returncode == 0
    fresh = str(tmp_path / "fresh")
    ctx = make_context(tmp_path, f"FROM {base}\nCOPY --from={base} /base /copied\nRUN cat /triggered /base\n",
                       "child")
    first, events = run_build(fresh, ctx, tags=("child:1",))
    assert notes(events, "pulling") == [f"pulling {base}"]  # once, for FROM and COPY --from
    assert file_of(fresh, "child:1", "triggered") == "triggered\n"  # the base's ONBUILD ran
    assert file_of(fresh, "child:1", "copied") == "base\n"
    assert "FROM_BASE=yes" in first.config["config"]["Env"]
    with Store.open(fresh) as store:
        history = resolve_image(store, "child:1").config["history"]
        assert any("echo base > /base" in h.get("created_by", "") for h in history)
    fast(registry.host)
    registry.stop()
    again, events = run_build(fresh, ctx, tags=("child:1",))
    assert again.manifest_digest == first.manifest_digest and again.steps_run == 0
    assert notes(events, "pulling") == []
    with pytest.raises(UserError, match="cannot reach registry") as caught:
        run_build(fresh, ctx, pull=True)
    assert caught.value.span is not None and caught.value.span.line == 1


@pytest.mark.root
def test_a_child_of_a_pulled_base_keeps_its_layers_through_a_prune(
        registry: RunningRegistry, root: str, tmp_path: Path) -> None:
    # the base's layers stay compressed as pulled; the child names them by diffID once they were unpacked,
    # and reaching a diffID whose tar is not held keeps its compressed form alive
    base = f"{registry.host}/base:1"
    assert cli(root, "build", "--push", "-t", base, str(make_context(tmp_path, BASE))).returncode == 0
    fresh = str(tmp_path / "fresh")
    run_build(fresh, make_context(tmp_path, f"FROM {base}\nRUN echo child > /child\n", "child"),
              tags=("child:1",))
    with Store.open(fresh) as store:
        base_layers = resolve_image(store, base).manifest.layers
        assert all(not store.blobs.exists(d) for d in resolve_image(store, base).diff_ids)  # kept compressed
    assert cli(fresh, "rmi", base).returncode == 0
    pruned = cli(fresh, "prune", "--all")  # the build cache goes too: only the child's tag keeps anything
    assert pruned.returncode == 0, pruned.stderr
    with Store.open(fresh) as store:
        assert all(store.blobs.exists(layer.digest) for layer in base_layers)
        assert store.verify_all() == []
    fast(registry.host)
    registry.stop()  # what the child needs is all local
    assert file_of(fresh, "child:1", "base") == "base\n" and file_of(fresh, "child:1", "child") == "child\n"


@pytest.mark.root
def test_from_pinned_by_digest_never_asks_the_registry_once_local(
        registry: RunningRegistry, root: str, tmp_path: Path) -> None:
    base = f"{registry.host}/base:1"
    pushed = cli(root, "build", "--push", "-t", base, str(make_context(tmp_path, BASE)))
    assert pushed.returncode == 0, pushed.stderr
    digest = skopeo(f"docker://{base}")["Digest"]
    fresh = str(tmp_path / "fresh")
    ctx = make_context(tmp_path, f"FROM {registry.host}/base@{digest}\nRUN cat /triggered\n", "child")
    _, events = run_build(fresh, ctx)
    assert notes(events, "pulling") == [f"pulling {registry.host}/base@{digest}"]
    fast(registry.host)
    registry.stop()
    result, events = run_build(fresh, ctx, pull=True, no_cache=True)  # --pull: a local digest is enough
    assert notes(events, "pulling") == [] and result.steps_run == 2  # the ONBUILD trigger and the RUN


@pytest.mark.root
def test_pull_flag_re_resolves_a_moved_tag(registry: RunningRegistry, root: str, tmp_path: Path) -> None:
    base = f"{registry.host}/base:1"
    assert cli(root, "build", "--push", "-t", base, str(make_context(tmp_path, BASE))).returncode == 0
    fresh = str(tmp_path / "fresh")
    dockerfile = (f"FROM {base} AS one\nRUN echo one > /one\n"
                  f"FROM {base}\nCOPY --from=one /one /one\n"
                  "RUN if test -f /moved; then echo moved; else echo old; fi > /seen\n")
    ctx = make_context(tmp_path, dockerfile, "child")
    run_build(fresh, ctx, tags=("child:1",))
    assert file_of(fresh, "child:1", "seen") == "old\n"
    moved = make_context(tmp_path, f"FROM {base}\nRUN echo > /moved\n", "moved")
    assert cli(root, "build", "--push", "-t", base, str(moved)).returncode == 0  # the tag moves
    result, events = run_build(fresh, ctx, tags=("child:1",))
    assert result.steps_run == 0 and file_of(fresh, "child:1", "seen") == "old\n"  # offline: the local base
    result, events = run_build(fresh, ctx, tags=("child:1",), pull=True)
    assert notes(events, "pulling") == [f"pulling {base}"]  # two stages, one pull
    assert file_of(fresh, "child:1", "seen") == "moved\n"


@pytest.mark.root
def test_build_push_to_an_unreachable_registry_is_one_line(root: str, tmp_path: Path) -> None:
    ctx = make_context(tmp_path, "FROM busybox:latest\nRUN true\n")
    error = fails(root, "build", "--push", "-t", "app:1", str(ctx))
    assert error == "error: cannot reach registry docker.io: [Errno -2] Name or service not known" or \
        "cannot reach registry docker.io" in error
