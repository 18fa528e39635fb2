"""RUN forms end to end: `process_for_run` → `run_process` with real runc on a busybox rootfs.

Heredocs (plain, shebang script mounted at /dev/pipes, complex via the shell), a SHELL override, build args
in the environment and ENV winning over a build arg of the same name. Needs root, runc and busybox-static:
skips locally when missing, fails in CI.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pybuild.dockerfile.commands import RunCommand
from pybuild.dockerfile.instructions import parse_instruction
from pybuild.dockerfile.parser import parse
from pybuild.worker.executor import run_process
from pybuild.worker.runstep import process_for_run
from tests.bases import make_busybox_rootfs, need

pytestmark = [pytest.mark.root, pytest.mark.tools]


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    need(os.geteuid() == 0, "needs root (runc)")
    need(shutil.which("runc") is not None, "runc not installed")
    need(os.path.exists("/bin/busybox"), "busybox-static not installed")
    return make_busybox_rootfs(tmp_path / "rootfs")


def run(rootfs: Path, text: str, **kwargs: object) -> str:
    """Run the one RUN of `FROM a\\n<text>` in `rootfs`; its stdout."""
    nodes = parse("FROM a\n" + text).nodes
    (cmd,) = [c for c in map(parse_instruction, nodes) if isinstance(c, RunCommand)]
    scratch = rootfs.parent / "scratch"
    scratch.mkdir(exist_ok=True)
    step = process_for_run(cmd, scratch_dir=str(scratch), **kwargs)  # type: ignore[arg-type]
    out: list[bytes] = []

    def sink(stream: str, chunk: bytes) -> None:
        if stream == "stdout":
            out.append(chunk)

    run_process(str(rootfs), step.process, network="none", mounts=step.mounts, output=sink, timeout=60)
    return b"".join(out).decode()


def test_heredoc_with_two_commands(rootfs: Path) -> None:
    assert run(rootfs, "RUN <<EOF\necho one\necho two\nEOF\n") == "one\ntwo\n"


def test_chomped_heredoc(rootfs: Path) -> None:
    assert run(rootfs, "RUN <<-EOF\n\techo one\n\techo two\n\tEOF\n") == "one\ntwo\n"


def test_shebang_heredoc_runs_as_a_file(rootfs: Path) -> None:
    text = 'RUN <<EOF\n#!/bin/sh\necho "me: $0"\nls -l /dev/pipes/EOF | cut -c1-10\necho $BUILD\nEOF\n'
    (rootfs / "bin" / "cut").symlink_to("busybox")
    got = run(rootfs, text, build_args={"BUILD": "42"})
    assert got == "me: /dev/pipes/EOF\n-rwxr-xr-x\n42\n"
    assert not os.access(rootfs / "dev" / "pipes", os.F_OK)  # mounted, never written into the rootfs


def test_complex_heredoc_feeds_cat_through_the_shell(rootfs: Path) -> None:
    assert run(rootfs, "RUN <<EOF cat\nline one\n  line two\nEOF\n") == "line one\n  line two\n"


def test_complex_heredoc_quoted_name_is_not_expanded(rootfs: Path) -> None:
    got = run(rootfs, "RUN cat <<A && cat <<'B'\nA=$V\nA\nB=$V\nB\n", build_args={"V": "x"})
    assert got == "A=x\nB=$V\n"


def test_shell_override(rootfs: Path) -> None:
    assert run(rootfs, 'RUN echo "$0"\n') == "/bin/sh\n"
    assert run(rootfs, 'RUN echo "$0"\n', shell=("/bin/busybox", "sh", "-c")) == "sh\n"
    assert run(rootfs, "RUN hello   world\n", shell=("/bin/echo", "shell:")) == "shell: hello   world\n"
    assert run(rootfs, "RUN <<EOF\nbody\nEOF\n", shell=("/bin/echo", "shell:")) == "shell: body\n\n"


def test_build_arg_visible_in_env(rootfs: Path) -> None:
    assert run(rootfs, "RUN echo $VERSION; env | grep -c ^VERSION=\n", build_args={"VERSION": "1.2"}) == "1.2\n1\n"


def test_env_overrides_build_arg(rootfs: Path) -> None:
    got = run(rootfs, "RUN echo $VERSION\n", env=("VERSION=from-env",), build_args={"VERSION": "from-arg"})
    assert got == "from-env\n"


def test_exec_form_user_and_workdir(rootfs: Path) -> None:
    got = run(rootfs, 'RUN ["/bin/sh", "-c", "id -u; pwd"]\n', user="app", workdir="/home/app")
    assert got == "1000\n/home/app\n"
