"""RUN heredocs and RUN --mount in whole builds on the real pieces: parse -> plan -> `Worker.run_op` (real
runc, overlayfs snapshots) -> the RUN's layer in the store.

Covers the shebang heredoc (a 0755 file at /dev/pipes, run without SHELL), complex heredocs through the
shell, cache mounts (persist across builds, never in the layer), binds from a stage, an image and the
context, tmpfs, secrets as a file and as env (the value in no layer) and the ssh refusal. Needs root,
runc and busybox-static: skips locally when missing, fails in CI.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.context.context import open_context
from pybuild.errors import ConfigError, UserError
from pybuild.plan.ops import ExecOp
from pybuild.store.images import import_rootfs
from pybuild.store.store import Store
from pybuild.store.tarlayer import iter_layer
from pybuild.worker.dispatch import Worker
from pybuild.worker.secrets import SecretStore
from pybuild.worker.snapshots import open_layer
from tests.bases import make_busybox_rootfs, need, tar_dir
from tests.integration.test_dispatch import plan_of, run_plan

pytestmark = pytest.mark.root

SECRET = "dispatch-S3CR3T-value-5e2a"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    need(os.geteuid() == 0, "needs root (overlayfs, runc)")
    need(shutil.which("runc") is not None, "runc not installed")
    need(os.path.exists("/bin/busybox"), "busybox-static not installed")
    temp = tmp_path / "temp"  # this test's own temp dir: the script and bind views must not leak
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    with Store.open(str(tmp_path / "store")) as opened:
        rootfs = make_busybox_rootfs(tmp_path / "bb")
        import_rootfs(opened, str(tar_dir(rootfs, tmp_path / "bb.tar")), "busybox:latest")
        yield opened
    assert list(temp.iterdir()) == []
    with open("/proc/self/mountinfo", encoding="utf-8") as mounts:
        text = mounts.read()
        assert str(opened.root) not in text and str(temp) not in text


def build(store: Store, dockerfile: str, *, context: Path | None = None,
          secrets: SecretStore | None = None) -> tuple[dict[str, bytes], bytes]:
    """Build `dockerfile`; the target RUN's layer as {path: file content (b'' for non-files)} and raw tar."""
    ctx = open_context(str(context), require_dockerfile=False) if context is not None else None
    plan = plan_of(store, dockerfile)
    results = run_plan(Worker(store, ctx, secrets=secrets), plan)
    assert isinstance(plan.ops[plan.target], ExecOp)
    with open_layer(store, results[plan.target].diff_ids[-1]) as stream:
        raw = stream.read()
    files = {entry.path: content.read() if content is not None else b""
             for entry, content in iter_layer(io.BytesIO(raw))}
    return files, raw


def under(files: dict[str, bytes], top: str) -> list[str]:
    return [path for path in files if path == top or path.startswith(top + "/")]


# --- heredocs ----------------------------------------------------------------------------------------


def test_shebang_heredoc_runs_as_a_mounted_script_without_the_shell(store: Store) -> None:
    dockerfile = """\
FROM busybox:latest
SHELL ["/no/such/shell"]
RUN <<EOF
#!/bin/sh
echo "me: $0" > /out
stat -c %a /dev/pipes/EOF >> /out
EOF
"""
    files, _ = build(store, dockerfile)
    assert files["out"] == b"me: /dev/pipes/EOF\n755\n"
    assert not under(files, "dev/pipes")  # mounted on the container's /dev, never written to the rootfs


def test_complex_heredocs_go_through_the_shell(store: Store) -> None:
    dockerfile = """\
FROM busybox:latest
ENV V=x
RUN <<EOF cat > /f && cat <<'RAW' > /raw
line $V
EOF
kept $V
RAW
"""
    files, _ = build(store, dockerfile)
    assert files["f"] == b"line x\n"
    assert files["raw"] == b"kept $V\n"


def test_single_heredoc_without_shebang_is_the_shell_script(store: Store) -> None:
    files, _ = build(store, "FROM busybox:latest\nRUN <<-EOF\n\techo one > /one\n\techo $0 > /zero\n\tEOF\n")
    assert (files["one"], files["zero"]) == (b"one\n", b"/bin/sh\n")


# --- cache ------------------------------------------------------------------------------------------------


def test_cache_mount_persists_between_builds_and_stays_out_of_the_layer(store: Store) -> None:
    run = "RUN --mount=type=cache,target=/var/cache/app echo {word} >> /var/cache/app/log && " \
          "cat /var/cache/app/log > /seen-{word}\n"
    first, _ = build(store, "FROM busybox:latest\n" + run.format(word="one"))
    second, _ = build(store, "FROM busybox:latest\n" + run.format(word="two"))
    assert first["seen-one"] == b"one\n"
    assert second["seen-two"] == b"one\ntwo\n"
    for files in (first, second):
        assert not under(files, "var")  # the mount point (and its new parents) are removed again
    assert os.path.isdir(os.path.join(store.root, "cache-mounts"))


# --- bind ---------------------------------------------------------------------------------------------


def test_bind_mount_from_a_stage_and_an_image(store: Store) -> None:
    dockerfile = """\
FROM busybox:latest AS build
RUN mkdir /out && echo built > /out/file
FROM busybox:latest
RUN --mount=type=bind,from=build,source=/out,target=/src \\
    --mount=type=bind,from=busybox:latest,source=/etc,target=/img,rw \\
    cat /src/file > /got && cat /img/group > /group && echo scribble > /img/new && \\
    (echo no > /src/x 2>/dev/null || echo read-only > /ro)
"""
    files, _ = build(store, dockerfile)
    assert files["got"] == b"built\n"
    assert files["group"].startswith(b"root:x:0:")
    assert files["ro"] == b"read-only\n"
    assert not [path for path in under(files, "src") + under(files, "img") if path not in ("src", "img")]


def test_bind_mount_from_the_context(store: Store, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "sub").mkdir(parents=True)
    (ctx / "sub" / "hello.txt").write_text("hello from the context\n")
    dockerfile = "FROM busybox:latest\nWORKDIR /w\nRUN --mount=source=sub,target=in cat in/hello.txt > /got\n"
    files, _ = build(store, dockerfile, context=ctx)
    assert files["got"] == b"hello from the context\n"
    assert "w/in/hello.txt" not in files
    with pytest.raises(UserError, match="reads the build context, and this build has none"):
        build(store, dockerfile)


def test_bind_mount_from_the_context_honours_the_ignore_file(store: Store, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "sub" / "node_modules").mkdir(parents=True)
    (ctx / "sub" / "keep.txt").write_text("kept\n")
    (ctx / "sub" / "secret.env").write_text("excluded\n")
    (ctx / "sub" / "node_modules" / "big.js").write_text("excluded\n")
    (ctx / ".dockerignore").write_text("**/*.env\nsub/node_modules\n")
    dockerfile = ("FROM busybox:latest\nRUN --mount=source=sub,target=/in,rw "
                  "ls -a /in > /listing && echo changed > /in/keep.txt\n")
    files, _ = build(store, dockerfile, context=ctx)
    assert files["listing"] == b".\n..\nkeep.txt\n"
    assert (ctx / "sub" / "keep.txt").read_text() == "kept\n"  # rw writes never reach the context


# --- tmpfs ----------------------------------------------------------------------------------------------


def test_tmpfs_mount(store: Store) -> None:
    dockerfile = ("FROM busybox:latest\nRUN --mount=type=tmpfs,target=/scratch,size=1m "
                  "echo x > /scratch/f && grep ' /scratch ' /proc/self/mountinfo | grep -q tmpfs && "
                  "echo yes > /ok\n")
    files, _ = build(store, dockerfile)
    assert files["ok"] == b"yes\n"
    assert "scratch/f" not in files


# --- secrets ----------------------------------------------------------------------------------------------


def test_secret_mounts_as_file_and_env_never_reach_the_layer(store: Store) -> None:
    dockerfile = """\
FROM busybox:latest
RUN --mount=type=secret,id=tok --mount=type=secret,id=tok,env=TOK,target=/etc/tok \\
    wc -c < /run/secrets/tok > /file-len && printf %s "$TOK" | wc -c > /env-len && \\
    grep -q S3CR3T /etc/tok && stat -c %a /run/secrets/tok > /mode
"""
    secrets = SecretStore({"tok": SECRET.encode()})
    files, raw = build(store, dockerfile, secrets=secrets)
    assert int(files["file-len"]) == int(files["env-len"]) == len(SECRET)
    assert files["mode"] == b"400\n"
    assert SECRET.encode() not in raw
    assert not under(files, "run") and "etc/tok" not in files


def test_missing_required_secret_is_a_config_error(store: Store) -> None:
    dockerfile = "FROM busybox:latest\nRUN --mount=type=secret,id=nope,required true\n"
    with pytest.raises(ConfigError, match="secret nope not found"):
        build(store, dockerfile)


def test_worker_without_secrets_skips_optional_secret(store: Store) -> None:
    files, _ = build(store, "FROM busybox:latest\nRUN --mount=type=secret,id=tok test ! -e /run/secrets/tok "
                            "&& echo absent > /state\n")
    assert files["state"] == b"absent\n"


# --- ssh ----------------------------------------------------------------------------------------------


def test_ssh_mount_is_a_clear_user_error(store: Store) -> None:
    with pytest.raises(UserError, match="RUN --mount=type=ssh is not supported yet") as info:
        build(store, "FROM busybox:latest\nRUN --mount=type=ssh true\n")
    assert info.value.span is not None and info.value.span.line == 2
