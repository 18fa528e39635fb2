"""A build farm sharing its build cache through a registry: `--cache-to type=registry,ref=…,mode=max` on one
machine, `--cache-from type=registry,ref=…` on another. Two stores stand for two machines, a real
distribution registry (`tests.registry_support`) for the shared registry, real runc and overlayfs run the
steps. Bases are imported with `pybuild import`, and every import and build runs with SOURCE_DATE_EPOCH=0,
so both machines make identical images.

What the second machine downloads is counted by wrapping the real `RegistryClient.get_blob` (API builds
and pushes run in this process): the import is lazy, so a fully cached build fetches no layer at all (its
image's layers stay remote, `store.remote`), a push to the same registry mounts them, and an export
fetches the image's layers and no other."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_cache_transfer import api_build, cli, make_context, new_store, plain_cached, ran

pytestmark = pytest.mark.root

FARM = """\
FROM busybox:latest AS tools
RUN echo tool > /tool
FROM busybox:latest AS builder
RUN echo built > /artifact
FROM busybox:latest
COPY --from=builder /artifact /artifact
COPY --from=tools /tool /tool
COPY hello.txt /hello.txt
RUN cat /artifact /tool /hello.txt > /final
"""


@pytest.fixture(autouse=True)
def _epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")  # for the API builds of this process, too


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """The host (127.0.0.1:PORT) of a fresh registry."""
    from tests.registry_support import start_registry

    with start_registry(tmp_path / "registry") as running:
        yield running.host


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The digests of the blobs this process downloads (the real client, wrapped)."""
    from pybuild.registry.client import RegistryClient

    seen: list[str] = []
    real = RegistryClient.get_blob

    def get_blob(self: RegistryClient, repo: str, digest: str, *args: Any, **kwargs: Any) -> int:
        seen.append(digest)
        return real(self, repo, digest, *args, **kwargs)

    monkeypatch.setattr(RegistryClient, "get_blob", get_blob)
    return seen


def cache_entries(host: str, repo: str, tag: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """(manifest, config entries) of the cache at host/repo:tag, read through the registry client."""
    from pybuild.registry.client import client_for

    client = client_for(host)
    data, _, _ = client.get_manifest(repo, tag)
    manifest = json.loads(data)
    out = io.BytesIO()
    client.get_blob(repo, manifest["config"]["digest"], out)
    entries: list[dict[str, str]] = json.loads(out.getvalue())["entries"]
    return manifest, entries


def layer_digests(manifest: dict[str, Any]) -> set[str]:
    return {layer["digest"] for layer in manifest["layers"]}


def test_a_second_machine_builds_from_the_registry_cache_without_running_a_step(
        tmp_path: Path, busybox_tar: Path, registry: str, fetched: list[str]) -> None:
    ctx = make_context(tmp_path, FARM)
    ref = f"{registry}/app:cache"
    store_a = new_store(tmp_path, "a", busybox_tar)
    first, _ = api_build(store_a, ctx, tags=("app:1",), cache_to=(f"type=registry,ref={ref},mode=max",))
    assert first.steps_run == 6
    manifest, entries = cache_entries(registry, "app", "cache")
    assert len(entries) == 6  # mode=max: every layer step, the unused-by-the-image stages' too

    # machine B, through the CLI: every step is CACHED
    store_b = new_store(tmp_path, "b", busybox_tar)
    iid = tmp_path / "iid"
    proc = cli(store_b, "build", "-t", "app:1", "--progress=plain", "--iidfile", str(iid),
               "--cache-from", f"type=registry,ref={ref}", str(ctx))
    assert proc.returncode == 0, proc.stderr
    cached = plain_cached(proc.stderr)
    for step in ("RUN echo tool > /tool", "RUN echo built > /artifact", "RUN cat /artifact /tool"):
        assert any(step in name for name in cached), proc.stderr
    assert iid.read_text().strip() == first.image_id

    # machine C, through the API: no step runs, the same image, and no layer byte moved
    store_c = new_store(tmp_path, "c", busybox_tar)
    fetched.clear()
    third, events = api_build(store_c, ctx, tags=("app:1",), cache_from=(f"type=registry,ref={ref}",))
    assert third.steps_run == 0 and third.steps_cached == 6, ran(events)
    assert third.manifest_digest == first.manifest_digest and third.image_id == first.image_id
    assert fetched == [manifest["config"]["digest"]]
    again, _ = api_build(store_c, ctx, tags=("app:1",))  # the local cache has it all now
    assert again.steps_run == 0 and again.manifest_digest == first.manifest_digest

    # a push to the same registry mounts the remote layers from the cache repository
    from pybuild.registry.blobsource import FETCHERS
    from pybuild.registry.push import push_image
    from pybuild.store.images import resolve_image
    from pybuild.store.store import Store

    remote_layers = {e["layer"] for e in entries if e["diff_id"] in third.config["rootfs"]["diff_ids"]}
    assert len(remote_layers) == 4  # 3 COPY and the last RUN; the base is local
    with Store.open(str(store_c), FETCHERS) as store:
        pushed = push_image(store, resolve_image(store, "app:1"), f"{registry}/team/app:img")
        assert not remote_layers & set(store.blobs.iter_digests())
    assert set(pushed.mounted) == remote_layers and fetched == [manifest["config"]["digest"]]

    # an OCI export needs the bytes: the image's layers are fetched (verified), the other stages' are not
    out = tmp_path / "c.tar"
    proc = cli(store_c, "save", "--format", "oci", "-o", str(out), "app:1")
    assert proc.returncode == 0, proc.stderr
    with Store.open(str(store_c)) as store:
        held = set(store.blobs.iter_digests())
        assert remote_layers <= held and not (layer_digests(manifest) - remote_layers) & held
        assert store.verify_all() == []


def test_the_import_downloads_only_the_layers_of_the_steps_the_target_needs(
        tmp_path: Path, busybox_tar: Path, registry: str, fetched: list[str]) -> None:
    ctx = make_context(tmp_path, FARM)
    ref = f"{registry}/app:cache"
    store_a = new_store(tmp_path, "a", busybox_tar)
    api_build(store_a, ctx, cache_to=(f"type=registry,ref={ref},mode=max",))
    builder_a, _ = api_build(store_a, ctx, target="builder")  # A's image of that stage, from A's local cache
    manifest, entries = cache_entries(registry, "app", "cache")

    # machine B builds only the builder stage: one RUN, whose layer it downloads once it is read
    store_b = new_store(tmp_path, "b", busybox_tar)
    fetched.clear()
    second, events = api_build(store_b, ctx, target="builder", cache_from=(f"type=registry,ref={ref}",))
    assert second.steps_run == 0 and second.steps_cached == 1, ran(events)
    assert second.manifest_digest == builder_a.manifest_digest
    run_layer = {e["layer"] for e in entries if e["diff_id"] == second.config["rootfs"]["diff_ids"][-1]}
    assert len(run_layer) == 1
    assert fetched == [manifest["config"]["digest"]]
    out = tmp_path / "rootfs.tar"  # a flat export reads every layer of the image
    assert api_build(store_b, ctx, target="builder", outputs=(f"type=tar,dest={out}",))[0].steps_run == 0
    assert fetched == [manifest["config"]["digest"], *run_layer]  # the other stages' 5 layers stayed there


def test_a_missing_registry_cache_warns_and_the_first_run_exports_it(
        tmp_path: Path, busybox_tar: Path, registry: str) -> None:
    # BuildKit: a cache to import that is not there is a warning, so the first CI run of
    # `--cache-from X --cache-to X` builds and exports
    ctx = make_context(tmp_path, FARM)
    ref = f"{registry}/app:cache"
    store_a = new_store(tmp_path, "a", busybox_tar)
    proc = cli(store_a, "build", "--progress=plain", "--cache-from", f"type=registry,ref={ref}",
               "--cache-to", f"type=registry,ref={ref},mode=max", str(ctx))
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" in proc.stderr and "not found" in proc.stderr
    store_b = new_store(tmp_path, "b", busybox_tar)
    second, events = api_build(store_b, ctx, cache_from=(f"type=registry,ref={ref}",))
    assert second.steps_run == 0, ran(events)
