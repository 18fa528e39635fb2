"""A build farm sharing its build cache through a registry: `--cache-to type=registry,ref=…,mode=max` on one
machine, `--cache-from type=registry,ref=…` on another. Two stores stand for two machines, a real
distribution registry (`tests.registry_support`) for the shared registry, real runc and overlayfs run the
steps. Bases are imported with `pybuild import`, and every import and build runs with SOURCE_DATE_EPOCH=0,
so both machines make identical images.

What the second machine downloads is counted by wrapping the real `RegistryClient.get_blob` (API builds
run in this process): the import is lazy, so it fetches the layers of the steps its target needs and no
other."""

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

    # machine C, through the API: no step runs, the same image, and only the cache's layers were fetched
    store_c = new_store(tmp_path, "c", busybox_tar)
    fetched.clear()
    third, events = api_build(store_c, ctx, tags=("app:1",), cache_from=(f"type=registry,ref={ref}",))
    assert third.steps_run == 0 and third.steps_cached == 6, ran(events)
    assert third.manifest_digest == first.manifest_digest and third.image_id == first.image_id
    assert sorted(fetched) == sorted([manifest["config"]["digest"], *layer_digests(manifest)])
    again, _ = api_build(store_c, ctx, tags=("app:1",))  # fetched once, now local: no registry needed
    assert again.steps_run == 0 and again.manifest_digest == first.manifest_digest


def test_the_import_downloads_only_the_layers_of_the_steps_the_target_needs(
        tmp_path: Path, busybox_tar: Path, registry: str, fetched: list[str]) -> None:
    ctx = make_context(tmp_path, FARM)
    ref = f"{registry}/app:cache"
    store_a = new_store(tmp_path, "a", busybox_tar)
    api_build(store_a, ctx, cache_to=(f"type=registry,ref={ref},mode=max",))
    builder_a, _ = api_build(store_a, ctx, target="builder")  # A's image of that stage, from A's local cache
    manifest, entries = cache_entries(registry, "app", "cache")

    # machine B builds only the builder stage: one RUN, whose layer is all it downloads
    store_b = new_store(tmp_path, "b", busybox_tar)
    fetched.clear()
    second, events = api_build(store_b, ctx, target="builder", cache_from=(f"type=registry,ref={ref}",))
    assert second.steps_run == 0 and second.steps_cached == 1, ran(events)
    assert second.manifest_digest == builder_a.manifest_digest
    run_layer = {e["layer"] for e in entries if e["diff_id"] == second.config["rootfs"]["diff_ids"][-1]}
    assert len(run_layer) == 1
    layers = [digest for digest in fetched if digest in layer_digests(manifest)]
    assert layers == sorted(run_layer)  # the other stages' 5 layers stayed in the registry
    assert fetched == [manifest["config"]["digest"], *layers]


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
