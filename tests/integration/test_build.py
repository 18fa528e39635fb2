"""`pybuild build` end to end: real runc, overlayfs and the store; the cache rules of the build issue."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pybuild.api import BuildRequest, BuildResult, build
from pybuild.errors import ConfigError, DockerfileError, StepFailed, UserError
from pybuild.progress import Event, ListSink, StepCached, StepStarted
from pybuild.store.images import import_rootfs, resolve_image
from pybuild.store.store import Store
from tests.bases import need, tar_dir

pytestmark = pytest.mark.root

PYBUILD = [sys.executable, "-m", "pybuild"]


def make_context(tmp_path: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(text)
    return ctx


def run_build(root: str, ctx: Path, **kwargs: object) -> tuple[BuildResult, list[Event]]:
    sink = ListSink()
    result = build(BuildRequest(context=str(ctx), store_root=root, **kwargs), sink)  # type: ignore[arg-type]
    return result, sink.events


def cached_names(events: list[Event]) -> set[str]:
    return {e.name for e in events if isinstance(e, StepCached)}


def started_names(events: list[Event]) -> list[str]:
    return [e.name for e in events if isinstance(e, StepStarted)]


def files_of(root: str, name: str) -> dict[str, str]:
    """The final filesystem of image `name`, through the tar exporter: path → text of small files."""
    with Store.open(root) as store:
        image = resolve_image(store, name)
        out = Path(root).parent / f"fs-{time.monotonic_ns()}"
        from pybuild.export.exporters import export_image
        from pybuild.export.outputs import parse_output

        export_image(store, image, parse_output(f"type=local,dest={out}"))
    found: dict[str, str] = {}
    for path in out.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size < 4096:
            rel = str(path.relative_to(out))
            if not rel.startswith(("bin/", "etc/")):
                found[rel] = path.read_bytes().decode("utf-8", "replace")
    shutil.rmtree(out)
    return found


EVERYTHING = """\
ARG BASE=busybox:latest
FROM ${BASE} AS tools
ARG FLAVOR=plain
RUN echo "flavor=$FLAVOR" > /flavor && echo "$TARGETARCH" > /arch-empty
ARG TARGETARCH
RUN echo "$TARGETARCH" > /arch

FROM tools AS final
LABEL org.example.kind=test
ENV APP=/app GREETING="hello world"
WORKDIR $APP
COPY hello.txt ./
COPY --chmod=640 data/ ./data/
ADD archive.tar /unpacked/
COPY <<EOF /app/generated.txt
made in ${APP}
EOF
RUN <<EOF
set -e
cat hello.txt > copy.txt
echo "$GREETING" > greeting.txt
EOF
RUN --network=none [ "/bin/sh", "-c", "id -u > /app/uid" ]
USER 65534:65534
RUN id -u > /tmp/uid-nobody
USER root
EXPOSE 8080/tcp
VOLUME /data
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s CMD true
SHELL ["/bin/sh", "-ec"]
ENTRYPOINT ["/bin/sh"]
CMD ["-c", "cat /app/copy.txt"]
"""


def _archive(ctx: Path) -> None:
    src = ctx / "archive-src"
    (src / "inner").mkdir(parents=True)
    (src / "inner" / "a.txt").write_text("from the archive\n")
    tar_dir(src, ctx / "archive.tar")
    shutil.rmtree(src)


def test_every_instruction_builds_the_expected_image(root: str, tmp_path: Path) -> None:
    ctx = make_context(tmp_path, EVERYTHING, {"hello.txt": "hello\n", "data/one.txt": "1\n"})
    _archive(ctx)
    result, _ = run_build(root, ctx, tags=("every:1",), build_args={"FLAVOR": "fancy", "UNUSED": "x"})
    assert result.steps_run > 0
    assert any("UNUSED" in w and "not consumed" in w for w in result.warnings)
    config = result.config["config"]
    assert config["Env"][:2] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                 "APP=/app"] or "APP=/app" in config["Env"]
    assert "GREETING=hello world" in config["Env"]
    assert config["WorkingDir"] == "/app"
    assert config["User"] == "root"
    assert config["Labels"] == {"org.example.kind": "test"}
    assert config["ExposedPorts"] == {"8080/tcp": {}}
    assert config["Volumes"] == {"/data": {}}
    assert config["StopSignal"] == "SIGINT"
    assert config["Healthcheck"]["Test"] == ["CMD-SHELL", "true"]
    assert config["Shell"] == ["/bin/sh", "-ec"]
    assert config["Entrypoint"] == ["/bin/sh"]
    assert config["Cmd"] == ["-c", "cat /app/copy.txt"]
    history = result.config["history"]
    layered = [h for h in history if not h.get("empty_layer")]
    assert len(layered) == len(result.config["rootfs"]["diff_ids"])
    files = files_of(root, "every:1")
    arch = files["arch"].strip()
    assert arch and files["arch-empty"] == "\n"  # TARGETARCH needs its ARG inside the stage
    assert files["flavor"] == "flavor=fancy\n"
    assert files["app/hello.txt"] == "hello\n"
    assert files["app/copy.txt"] == "hello\n"
    assert files["app/greeting.txt"] == "hello world\n"
    assert files["app/generated.txt"] == "made in /app\n"
    assert files["app/data/one.txt"] == "1\n"
    assert files["unpacked/inner/a.txt"] == "from the archive\n"
    assert files["app/uid"] == "0\n"
    assert files["tmp/uid-nobody"] == "65534\n"


DEMO = """\
FROM busybox:latest AS a
RUN echo a > /a && sleep 0.2
FROM busybox:latest AS b
COPY b.txt /b.txt
RUN cat /b.txt > /b2
FROM busybox:latest
COPY --from=a /a /a
COPY --from=b /b2 /b2
COPY c.txt /c.txt
"""


def test_rebuild_is_fully_cached_and_gives_the_same_image(root: str, tmp_path: Path) -> None:
    ctx = make_context(tmp_path, DEMO, {"b.txt": "b\n", "c.txt": "c\n"})
    first, _ = run_build(root, ctx, tags=("demo:1",))
    second, events = run_build(root, ctx, tags=("demo:1",))
    assert second.steps_run == 0 and second.steps_cached == first.steps_run
    assert second.manifest_digest == first.manifest_digest
    assert "[a 2/2] RUN echo a > /a && sleep 0.2" in cached_names(events)


def test_touch_keeps_the_cache_and_an_edit_misses_exactly_its_readers(root: str, tmp_path: Path) -> None:
    ctx = make_context(tmp_path, DEMO, {"b.txt": "b\n", "c.txt": "c\n"})
    first, _ = run_build(root, ctx)
    later = time.time() + 100
    for name in ("b.txt", "c.txt", "Dockerfile"):
        os.utime(ctx / name, (later, later))
    touched, _ = run_build(root, ctx)
    assert touched.steps_run == 0 and touched.manifest_digest == first.manifest_digest
    (ctx / "b.txt").write_text("B\n")
    edited, events = run_build(root, ctx, explain_cache=True)
    ran = set(started_names(events)) - cached_names(events)
    assert "[a 2/2] RUN echo a > /a && sleep 0.2" in cached_names(events)
    assert {"[b 2/3] COPY b.txt /b.txt", "[b 3/3] RUN cat /b.txt > /b2",
            "[stage-2 3/4] COPY --from=b /b2 /b2", "[stage-2 4/4] COPY c.txt /c.txt"} <= ran
    assert "[stage-2 2/4] COPY --from=a /a /a" in cached_names(events)
    reasons = dict(edited.misses)
    assert reasons["[b 2/3] COPY b.txt /b.txt"] == ("file changed: b.txt",)
    assert reasons["[b 3/3] RUN cat /b.txt > /b2"] == ("a previous step changed",)


def test_build_args_change_only_the_steps_that_use_them(root: str, tmp_path: Path) -> None:
    dockerfile = ("FROM busybox:latest\nRUN echo base > /base\nARG V=1\nRUN echo $V > /v\n"
                  "ARG HTTP_PROXY\nRUN echo done > /done\n")
    ctx = make_context(tmp_path, dockerfile)
    run_build(root, ctx, build_args={"V": "1"})
    again, _ = run_build(root, ctx, build_args={"V": "1", "HTTP_PROXY": "http://proxy:3128", "NOPE": "x"})
    assert again.steps_run == 0  # a proxy arg and an unused arg never change a key
    changed, _ = run_build(root, ctx, build_args={"V": "2"}, explain_cache=True)
    assert changed.steps_run == 2  # RUN echo $V and the step after it
    reasons = dict(changed.misses)
    assert any("V" in r for r in reasons["[stage-0 4/6] RUN echo $V > /v"]), reasons


def test_target_skips_stages_it_does_not_need(root: str, tmp_path: Path) -> None:
    dockerfile = ("FROM busybox:latest AS good\nRUN echo good > /good\n"
                  "FROM busybox:latest AS broken\nRUN exit 7\n"
                  "FROM nosuchimage:1 AS missing\n")
    ctx = make_context(tmp_path, dockerfile)
    _, events = run_build(root, ctx, target="good", tags=("good:1",))
    assert files_of(root, "good:1")["good"] == "good\n"
    assert not any("exit 7" in name for name in started_names(events))
    with pytest.raises(DockerfileError, match='target stage "nope" could not be found'):
        run_build(root, ctx, target="nope")


def test_failing_step_names_its_line_and_the_next_build_works(root: str, tmp_path: Path) -> None:
    dockerfile = "FROM busybox:latest\nRUN echo ok > /ok\nRUN echo boom >&2; exit 3\n"
    ctx = make_context(tmp_path, dockerfile)
    with pytest.raises(StepFailed) as caught:
        run_build(root, ctx)
    assert caught.value.span is not None and caught.value.span.line == 3
    assert "3" in caught.value.message
    (ctx / "Dockerfile").write_text(dockerfile.replace("exit 3", "true"))
    _, events = run_build(root, ctx)
    assert "[stage-0 2/3] RUN echo ok > /ok" in cached_names(events)


def test_missing_base_image_is_a_clear_error(root: str, tmp_path: Path) -> None:
    ctx = make_context(tmp_path, "FROM nosuchimage:1\nRUN true\n")
    with pytest.raises(UserError, match="nosuchimage:1") as caught:
        run_build(root, ctx)
    assert caught.value.span is not None and caught.value.span.line == 1


def test_no_cache_and_no_cache_filter(root: str, tmp_path: Path) -> None:
    ctx = make_context(tmp_path, DEMO, {"b.txt": "b\n", "c.txt": "c\n"})
    first, _ = run_build(root, ctx)
    everything, _ = run_build(root, ctx, no_cache=True)
    assert everything.steps_run == first.steps_run
    _, events = run_build(root, ctx, no_cache_filter=("a",))
    ran = set(started_names(events)) - cached_names(events)
    assert "[a 2/2] RUN echo a > /a && sleep 0.2" in ran
    assert "[b 3/3] RUN cat /b.txt > /b2" in cached_names(events)


def test_no_cache_keeps_the_fresh_result(root: str, tmp_path: Path) -> None:
    """A step run again with --no-cache gives its new output, in the image and in the cache (it used to
    adopt the layer and image recorded earlier under the same keys)."""
    ctx = make_context(tmp_path, "FROM busybox:latest\nRUN cat /proc/sys/kernel/random/uuid > /x\n")
    first, _ = run_build(root, ctx)
    fresh, _ = run_build(root, ctx, no_cache=True)
    assert fresh.image_id != first.image_id
    assert files_of(root, fresh.image_id)["x"] != files_of(root, first.image_id)["x"]
    cached, _ = run_build(root, ctx)
    assert cached.steps_run == 0 and cached.image_id == fresh.image_id


def test_labels_platform_and_network_flags(root: str, tmp_path: Path) -> None:
    ctx = make_context(tmp_path, "FROM busybox:latest\nLABEL a=1\nRUN echo x > /x\n")
    result, _ = run_build(root, ctx, labels={"b": "2", "a": "override"})
    assert result.config["config"]["Labels"] == {"a": "override", "b": "2"}
    with pytest.raises(ConfigError, match="host's platform"):
        run_build(root, ctx, platform="linux/s390x")
    result_none, _ = run_build(root, ctx, network="none")
    assert result_none.steps_run == 1  # the network a RUN gets is part of its key


def test_epoch_makes_builds_reproducible_across_stores(tmp_path: Path, busybox_tar: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # the imported bases are identical, too
    ctx = make_context(tmp_path, DEMO, {"b.txt": "b\n", "c.txt": "c\n"})
    digests = []
    for name in ("one", "two"):
        other = str(tmp_path / name)
        with Store.open(other) as store:
            import_rootfs(store, str(busybox_tar), "busybox:latest")
        digests.append(run_build(other, ctx, epoch=1700000000)[0])
        time.sleep(1.1)  # a second apart: any wall-clock time in the image would show
    first, second = digests
    assert first.manifest_digest == second.manifest_digest
    assert first.config["created"] == "2023-11-14T22:13:20Z"


def test_prune_keeps_cached_layers_until_asked(root: str, tmp_path: Path) -> None:
    ctx = make_context(tmp_path, "FROM busybox:latest\nRUN head -c 100000 /dev/urandom > /blob\n")
    run_build(root, ctx)  # untagged: only the cache keeps its layers
    env = {**os.environ, "PYBUILD_ROOT": root}
    subprocess.run([*PYBUILD, "prune"], env=env, check=True, capture_output=True)
    again, _ = run_build(root, ctx)
    assert again.steps_run == 0
    out = subprocess.run([*PYBUILD, "prune", "--keep-storage", "0"], env=env, check=True,
                         capture_output=True, text=True).stdout
    assert "removed 1 cache entry" in out or "cache entries" in out
    after, _ = run_build(root, ctx)
    assert after.steps_run == 1


# --- the command line --------------------------------------------------------------------------------------


def cli(root: str, *args: str, stdin: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYBUILD_ROOT": root}
    env.pop("CI", None)
    return subprocess.run([*PYBUILD, *args], env=env, input=stdin.decode() if stdin else None, text=True,
                          capture_output=True, cwd=cwd, check=False, timeout=300)


def test_cli_plain_progress_iidfile_metadata_and_quiet(root: str, tmp_path: Path) -> None:
    ctx = make_context(tmp_path, "FROM busybox:latest\nRUN echo hi\n")
    iid, meta = tmp_path / "iid", tmp_path / "meta.json"
    proc = cli(root, "build", "-t", "cli:1", "--progress=plain", "--iidfile", str(iid),
               "--metadata-file", str(meta), str(ctx))
    assert proc.returncode == 0, proc.stderr
    assert "RUN echo hi" in proc.stderr and "DONE" in proc.stderr and "hi" in proc.stderr
    image_id = iid.read_text()
    assert image_id.startswith("sha256:")
    metadata = json.loads(meta.read_text())
    assert metadata["containerimage.config.digest"] == image_id
    again = cli(root, "build", "-q", "-t", "cli:1", str(ctx))
    assert again.returncode == 0 and again.stdout.strip() == image_id and again.stderr == ""
    cached = cli(root, "build", "--progress=plain", str(ctx))
    assert "CACHED" in cached.stderr


def test_cli_bare_form_and_stdin_dockerfile(root: str, tmp_path: Path) -> None:
    ctx = make_context(tmp_path, "FROM busybox:latest\nRUN echo file > /f\n")
    proc = cli(root, "-t", "bare:1", "-f", str(ctx / "Dockerfile"), "--progress=quiet", str(ctx))
    assert proc.returncode == 0, proc.stderr
    piped = cli(root, "build", "-t", "piped:1", "-f", "-", "--progress=quiet", str(ctx),
                stdin=b"FROM busybox:latest\nRUN echo stdin > /s\n")
    assert piped.returncode == 0, piped.stderr
    assert files_of(root, "piped:1")["s"] == "stdin\n"


def test_cli_errors_are_one_line_with_exit_1(root: str, tmp_path: Path) -> None:
    ctx = make_context(tmp_path, "FROM busybox:latest\nRUN exit 4\n")
    failed = cli(root, "build", "--progress=plain", str(ctx))
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    assert "Dockerfile:2" in failed.stderr
    bad = cli(root, "build", "--platform", "linux/s390x", str(ctx))
    assert bad.returncode == 1 and "--platform" in bad.stderr and "Traceback" not in bad.stderr
    missing = cli(root, "build", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    out = cli(root, "build", "-o", "type=bogus,dest=x", str(ctx))
    assert out.returncode == 1 and "unknown type" in out.stderr


def test_cli_oci_output_runs_with_umoci_and_runc(root: str, tmp_path: Path) -> None:
    need(shutil.which("umoci") is not None, "umoci not installed")
    ctx = make_context(tmp_path, "FROM busybox:latest\nRUN echo 'ran from the export' > /msg\n"
                                 'CMD ["cat", "/msg"]\n')
    layout = tmp_path / "layout"
    proc = cli(root, "build", "-t", "oci:1", "--progress=quiet", "-o",
               f"type=oci,dest={layout},tar=false,name=oci:1", str(ctx))
    assert proc.returncode == 0, proc.stderr
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:1", str(bundle)], check=True,
                   capture_output=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    (bundle / "config.json").write_text(json.dumps(spec))
    name = f"pybuild-test-{os.getpid()}"
    run = subprocess.run(["runc", "run", name], cwd=bundle, capture_output=True, text=True, timeout=60,
                         check=False)
    subprocess.run(["runc", "delete", "-f", name], capture_output=True, check=False)
    assert run.stdout == "ran from the export\n", run.stderr
