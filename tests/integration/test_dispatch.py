"""Whole builds on the real pieces: parse -> stages -> plan -> worker ops (serially) -> image in the store."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.context.context import open_context
from pybuild.dockerfile.instructions import to_stages
from pybuild.dockerfile.parser import parse
from pybuild.errors import StepFailed, StoreError, UserError
from pybuild.image.config import ImageConfig
from pybuild.image.spec import host_platform
from pybuild.plan.convert import BaseConfigs, convert
from pybuild.plan.ops import Plan, op_inputs
from pybuild.store.images import import_rootfs, resolve_image
from pybuild.store.store import Store
from pybuild.worker.commit_image import commit_image
from pybuild.worker.dispatch import StepResult, Worker
from pybuild.worker.snapshots import Snapshots
from tests.bases import make_busybox_rootfs, need, tar_dir

pytestmark = pytest.mark.root


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    need(os.geteuid() == 0, "needs root (overlayfs, runc)")
    need(shutil.which("runc") is not None, "runc not installed")
    need(os.path.exists("/bin/busybox"), "busybox-static not installed")
    with Store.open(str(tmp_path / "store")) as opened:
        rootfs = make_busybox_rootfs(tmp_path / "bb")
        import_rootfs(opened, str(tar_dir(rootfs, tmp_path / "bb.tar")), "busybox:latest")
        yield opened


def base_configs(store: Store) -> BaseConfigs:
    def lookup(ref: str) -> ImageConfig | None:
        try:
            return ImageConfig.from_dict(resolve_image(store, ref).config)
        except StoreError:
            return None
    return lookup


def plan_of(store: Store, dockerfile: str) -> Plan:
    return convert(to_stages(parse(dockerfile)), build_args={}, target=None, platform=host_platform(),
                   base_configs=base_configs(store))


def run_plan(worker: Worker, plan: Plan) -> dict[str, StepResult]:
    """Serially, inputs first (`plan.ops` is in dependency order)."""
    results: dict[str, StepResult] = {}
    cancel = threading.Event()
    for digest, op in plan.ops.items():
        inputs = {d: results[d] for d in op_inputs(op)}
        results[digest] = worker.run_op(op, inputs, cancel)
    return results


def context_dir(tmp_path: Path, dockerfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "hello.txt").write_text("hello from the context\n")
    return ctx


def no_mounts_under(root: str) -> None:
    with open("/proc/self/mountinfo", encoding="utf-8") as mounts:
        assert root not in mounts.read()


DOCKERFILE = """\
FROM busybox:latest
WORKDIR /app
COPY hello.txt .
RUN cat hello.txt > copy.txt && echo built > /built
ENV X=1
CMD ["cat","/app/copy.txt"]
"""


def test_build_commits_a_tagged_image(store: Store, tmp_path: Path) -> None:
    base = resolve_image(store, "busybox:latest")
    ctx = open_context(str(context_dir(tmp_path, DOCKERFILE)))
    plan = plan_of(store, DOCKERFILE)
    snaps = Snapshots.open(store)
    results = run_plan(Worker(store, ctx, snapshots=snaps), plan)
    image = commit_image(store, plan, results, ["demo:test"])

    found = resolve_image(store, "demo:test")
    assert found.manifest_digest == image.manifest_digest
    assert found.diff_ids[:len(base.diff_ids)] == base.diff_ids
    assert len(found.diff_ids) == len(base.diff_ids) + 3  # WORKDIR, COPY, RUN
    assert len(found.manifest.layers) == len(found.diff_ids)
    config = found.config["config"]
    assert "X=1" in config["Env"]
    assert config["WorkingDir"] == "/app"
    assert config["Cmd"] == ["cat", "/app/copy.txt"]
    assert found.config["created"]
    assert sum(1 for h in found.config["history"] if not h.get("empty_layer")) == len(found.diff_ids)

    # The image's layers, unpacked from the store, show what the build did.
    chain = snaps.ensure_layers(store, found.diff_ids)
    with snaps.mounted_rootfs(chain) as active:
        assert Path(active.rootfs, "app/copy.txt").read_text() == "hello from the context\n"
        assert Path(active.rootfs, "built").read_text() == "built\n"
        assert not Path(active.rootfs, "etc/hosts").exists()
    no_mounts_under(str(store.root))


def test_failing_run_raises_step_failed_and_leaves_no_mount(store: Store, tmp_path: Path) -> None:
    dockerfile = "FROM busybox:latest\nRUN echo boom >&2; exit 3\n"
    ctx = open_context(str(context_dir(tmp_path, dockerfile)))
    plan = plan_of(store, dockerfile)
    with pytest.raises(StepFailed) as info:
        run_plan(Worker(store, ctx), plan)
    assert info.value.span is not None and info.value.span.line == 2
    no_mounts_under(str(store.root))
    active_dir = Path(store.root, "snapshots", "active")
    assert not active_dir.is_dir() or not any(active_dir.iterdir())  # the step was released


def test_run_security_insecure_needs_the_entitlement(store: Store, tmp_path: Path) -> None:
    # The build checks entitlements before any step (tests/integration/test_sandbox_seccomp.py); the worker
    # refuses on its own too.
    dockerfile = "FROM busybox:latest\nRUN --security=insecure true\n"
    plan = plan_of(store, dockerfile)
    with pytest.raises(UserError, match="RUN --security=insecure: security.insecure is not allowed"):
        run_plan(Worker(store, None), plan)
    no_mounts_under(str(store.root))


TWO_STAGES = """\
FROM busybox:latest AS build
RUN mkdir -p /out && echo compiled > /out/app && chown 1000:1000 /out/app
FROM scratch
COPY --from=build /out/app /app
COPY <<EOF /note.txt
a heredoc
EOF
"""


def test_two_stage_build_copies_from_the_first_stage(store: Store, tmp_path: Path) -> None:
    ctx = open_context(str(context_dir(tmp_path, TWO_STAGES)))
    plan = plan_of(store, TWO_STAGES)
    snaps = Snapshots.open(store)
    results = run_plan(Worker(store, ctx, snapshots=snaps), plan)
    image = commit_image(store, plan, results, ["demo:two"])
    assert len(image.diff_ids) == 2  # scratch base: only the two COPY layers
    chain = snaps.ensure_layers(store, resolve_image(store, "demo:two").diff_ids)
    with snaps.mounted_rootfs(chain) as active:
        app = Path(active.rootfs, "app")
        assert app.read_text() == "compiled\n"
        assert (app.stat().st_uid, app.stat().st_gid) == (1000, 1000)  # --from keeps owners
        assert Path(active.rootfs, "note.txt").read_text() == "a heredoc\n"
        assert not Path(active.rootfs, "bin").exists()
    no_mounts_under(str(store.root))
