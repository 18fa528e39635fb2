"""`--cache-to type=local` / `--cache-from type=local` end to end: one store exports its build cache, a fresh
store (another machine) builds the same Dockerfile from it without running the steps, and gets the same
image. Real runc, overlayfs and the CLI; the bases are imported with `pybuild import` and every import and
build runs with SOURCE_DATE_EPOCH=0, so two stores make identical images."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pybuild.api import BuildRequest, BuildResult, build
from pybuild.progress import Event, ListSink, StepCached, StepStarted

pytestmark = pytest.mark.root

PYBUILD = [sys.executable, "-m", "pybuild"]

SINGLE = """\
FROM busybox:latest
RUN echo one > /one
COPY hello.txt /hello.txt
RUN cat /hello.txt > /copy && echo two > /two
"""

MULTI = """\
FROM busybox:latest AS builder
RUN echo built > /artifact
FROM busybox:latest
COPY --from=builder /artifact /artifact
RUN cat /artifact > /final
"""


@pytest.fixture(autouse=True)
def _epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")  # for the API builds of this process, too


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYBUILD_ROOT": str(root), "SOURCE_DATE_EPOCH": "0"}
    env.pop("CI", None)
    return subprocess.run([*PYBUILD, *args], env=env, text=True, capture_output=True, check=False, timeout=300)


def new_store(tmp_path: Path, name: str, busybox_tar: Path) -> Path:
    """A fresh store (another machine) with busybox:latest imported through the CLI."""
    root = tmp_path / name
    proc = cli(root, "import", str(busybox_tar), "busybox:latest")
    assert proc.returncode == 0, proc.stderr
    return root


def make_context(tmp_path: Path, dockerfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "hello.txt").write_text("hello\n")
    return ctx


def api_build(root: Path, ctx: Path, **kwargs: object) -> tuple[BuildResult, list[Event]]:
    sink = ListSink()
    result = build(BuildRequest(context=str(ctx), store_root=str(root), **kwargs), sink)  # type: ignore[arg-type]
    return result, sink.events


def ran(events: list[Event]) -> set[str]:
    cached = {e.name for e in events if isinstance(e, StepCached)}
    return {e.name for e in events if isinstance(e, StepStarted)} - cached


def plain_cached(stderr: str) -> set[str]:
    """Names of the steps `--progress=plain` output marks CACHED (`#N name` … `#N CACHED`)."""
    names: dict[str, str] = {}
    cached: set[str] = set()
    for line in stderr.splitlines():
        match = re.fullmatch(r"#(\d+) (.+)", line)
        if match is None:
            continue
        number, text = match.groups()
        if text == "CACHED":
            cached.add(names.get(number, number))
        elif not text.startswith(("DONE", "ERROR", "CANCELED", "...")) and number not in names:
            names[number] = text
    return cached


def cache_keys(cache: Path) -> list[dict[str, str]]:
    index = json.loads((cache / "index.json").read_text())
    blobs = cache / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_text())
    config = json.loads((blobs / manifest["config"]["digest"].split(":")[1]).read_text())
    entries: list[dict[str, str]] = config["entries"]
    return entries


def test_mode_max_cache_builds_the_same_image_elsewhere_without_running_a_step(
        tmp_path: Path, busybox_tar: Path) -> None:
    ctx = make_context(tmp_path, SINGLE)
    cache = tmp_path / "cache"
    store_a = new_store(tmp_path, "a", busybox_tar)
    first, _ = api_build(store_a, ctx, tags=("app:1",), cache_to=(f"type=local,dest={cache},mode=max",))
    assert first.steps_run == 3
    assert len(cache_keys(cache)) == 3

    # another machine, through the CLI: every RUN (and the COPY) comes from the cache
    store_b = new_store(tmp_path, "b", busybox_tar)
    iid = tmp_path / "iid"
    proc = cli(store_b, "build", "-t", "app:1", "--progress=plain", "--iidfile", str(iid),
               "--cache-from", f"type=local,src={cache}", str(ctx))
    assert proc.returncode == 0, proc.stderr
    cached = plain_cached(proc.stderr)
    assert any("RUN echo one > /one" in name for name in cached), proc.stderr
    assert any("RUN cat /hello.txt > /copy" in name for name in cached), proc.stderr
    assert iid.read_text().strip() == first.image_id

    # and through the API, in a third store
    store_c = new_store(tmp_path, "c", busybox_tar)
    third, events = api_build(store_c, ctx, tags=("app:1",), cache_from=(f"type=local,src={cache}",))
    assert third.steps_run == 0 and third.steps_cached == 3, ran(events)
    assert third.manifest_digest == first.manifest_digest
    assert third.image_id == first.image_id
    # what was fetched is now in the local cache: the next build needs the directory no more
    again, _ = api_build(store_c, ctx, tags=("app:1",))
    assert again.steps_run == 0 and again.manifest_digest == first.manifest_digest


def test_mode_min_exports_only_the_final_image_layers(tmp_path: Path, busybox_tar: Path) -> None:
    ctx = make_context(tmp_path, MULTI)
    cache = tmp_path / "cache"
    store_a = new_store(tmp_path, "a", busybox_tar)
    first, _ = api_build(store_a, ctx, cache_to=(f"type=local,dest={cache}",))  # mode=min is the default
    assert first.steps_run == 3
    diff_ids = set(first.config["rootfs"]["diff_ids"])
    entries = cache_keys(cache)
    assert len(entries) == 2 and {e["diff_id"] for e in entries} <= diff_ids

    store_b = new_store(tmp_path, "b", busybox_tar)
    second, events = api_build(store_b, ctx, cache_from=(f"type=local,src={cache}",))
    assert second.steps_run == 1 and second.steps_cached == 2
    runs = [name for name in ran(events) if "RUN" in name]
    assert len(runs) == 1 and "RUN echo built > /artifact" in runs[0], runs  # the builder's: not exported
    assert second.manifest_digest == first.manifest_digest


def test_missing_cache_from_directory_warns_and_builds(tmp_path: Path, busybox_tar: Path) -> None:
    # BuildKit: "local cache import at DIR not found" is a warning, so the first CI run of
    # `--cache-from X --cache-to X` works
    ctx = make_context(tmp_path, SINGLE)
    store = new_store(tmp_path, "a", busybox_tar)
    proc = cli(store, "build", "--progress=plain", "--cache-from", f"type=local,src={tmp_path / 'nope'}", str(ctx))
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" in proc.stderr and "no such directory" in proc.stderr
    bad = cli(store, "build", "--cache-to", "type=gha", str(ctx))
    assert bad.returncode == 1 and "unknown cache type 'gha'" in bad.stderr
