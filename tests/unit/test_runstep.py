"""Unit tests for RUN → process (worker/runstep.py): argv for every form, env precedence, heredocs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pybuild.dockerfile.commands import RunCommand
from pybuild.dockerfile.instructions import parse_instruction
from pybuild.dockerfile.parser import parse
from pybuild.errors import DockerfileError, InternalError
from pybuild.worker.runstep import RunProcess, process_for_run, run_env
from pybuild.worker.spec import DEFAULT_PATH
from pybuild.worker.types import HostMount, ProcessSpec

PATH = f"PATH={DEFAULT_PATH}"


def run_cmd(text: str) -> RunCommand:
    """The RunCommand of the one RUN in `FROM a\\n<text>`."""
    result = parse("FROM a\n" + text)
    (command,) = [c for c in map(parse_instruction, result.nodes) if isinstance(c, RunCommand)]
    return command


def process(text: str, tmp_path: Path, **kwargs: object) -> RunProcess:
    return process_for_run(run_cmd(text), scratch_dir=str(tmp_path), **kwargs)  # type: ignore[arg-type]


def test_shell_form(tmp_path: Path) -> None:
    got = process("RUN echo hi  there && true\n", tmp_path)
    assert got == RunProcess(process=ProcessSpec(args=("/bin/sh", "-c", "echo hi  there && true"), env=(PATH,)))


def test_exec_form_keeps_elements_and_ignores_shell(tmp_path: Path) -> None:
    got = process('RUN ["/bin/echo", "a b", "$HOME"]\n', tmp_path, shell=("/bin/bash", "-c"))
    assert got.process.args == ("/bin/echo", "a b", "$HOME")
    assert got.mounts == ()


def test_shell_override(tmp_path: Path) -> None:
    got = process("RUN echo hi\n", tmp_path, shell=("/bin/busybox", "sh", "-c"))
    assert got.process.args == ("/bin/busybox", "sh", "-c", "echo hi")


def test_user_and_workdir_pass_through(tmp_path: Path) -> None:
    got = process("RUN id\n", tmp_path, user="app:app", workdir="/srv/app")
    assert (got.process.user, got.process.cwd, got.process.stdin) == ("app:app", "/srv/app", None)


def test_env_order_and_default_path(tmp_path: Path) -> None:
    got = process("RUN env\n", tmp_path, env=("A=1", "B=2"), build_args={"C": "3", "D": ""})
    assert got.process.env == (PATH, "A=1", "B=2", "C=3", "D=")


def test_env_overrides_build_arg() -> None:
    assert run_env(["X=from-env"], {"X": "from-arg", "Y": "y"}) == (PATH, "X=from-env", "Y=y")


def test_path_from_env_or_build_arg_is_kept() -> None:
    assert run_env(["PATH=/opt/bin"]) == ("PATH=/opt/bin",)
    assert run_env([], {"PATH": "/arg/bin"}) == ("PATH=/arg/bin",)
    assert run_env(["PATH=/env/bin"], {"PATH": "/arg/bin"}) == ("PATH=/env/bin",)


def test_value_with_equals_and_non_env_args() -> None:
    got = run_env(["A=b=c"], {"A": "x", "BUILDKIT_SBOM_SCAN_STAGE": "true", "BUILDKIT_SBOM_SCAN_CONTEXT": "1"})
    assert got == (PATH, "A=b=c")


def test_simple_heredoc_runs_body_in_shell(tmp_path: Path) -> None:
    got = process("RUN <<EOF\necho one\necho $HOME\nEOF\n", tmp_path)
    assert got.process.args == ("/bin/sh", "-c", "echo one\necho $HOME\n")  # not expanded: the shell does it
    assert got.mounts == ()
    assert list(tmp_path.iterdir()) == []


def test_simple_heredoc_with_shell_override_and_quoted_name(tmp_path: Path) -> None:
    got = process("RUN <<'EOF'\necho $X\nEOF\n", tmp_path, shell=("/bin/busybox", "sh", "-c"))
    assert got.process.args == ("/bin/busybox", "sh", "-c", "echo $X\n")


def test_chomped_heredoc_strips_leading_tabs(tmp_path: Path) -> None:
    got = process("RUN <<-EOF\n\techo one\n\t\techo two\n\tEOF\n", tmp_path)
    assert got.process.args == ("/bin/sh", "-c", "echo one\necho two\n")


def test_shebang_heredoc_becomes_a_mounted_script(tmp_path: Path) -> None:
    got = process("RUN <<EOF\n#!/bin/sh\necho from script\nEOF\n", tmp_path, shell=("/bin/bash", "-c"))
    script = tmp_path / "EOF"
    assert got.process.args == ("/dev/pipes/EOF",)  # no SHELL: the kernel reads the shebang
    assert got.mounts == (HostMount(destination="/dev/pipes/EOF", source=str(script), options=("rbind", "ro")),)
    assert script.read_text() == "#!/bin/sh\necho from script\n"
    assert stat.S_IMODE(script.stat().st_mode) == 0o755


def test_shebang_heredoc_mode_ignores_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        process("RUN <<SCRIPT\n#!/bin/sh\ntrue\nSCRIPT\n", tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "SCRIPT").stat().st_mode) == 0o755


def test_chomped_shebang_heredoc(tmp_path: Path) -> None:
    got = process("RUN <<-EOF\n#!/bin/sh\n\techo x\n\tEOF\n", tmp_path)
    assert got.process.args == ("/dev/pipes/EOF",)
    assert (tmp_path / "EOF").read_text() == "#!/bin/sh\necho x\n"


def test_tab_before_shebang_is_no_script(tmp_path: Path) -> None:
    # BuildKit tests `#!` on the raw data, before `<<-` strips the tab.
    got = process("RUN <<-EOF\n\t#!/bin/sh\n\techo x\n\tEOF\n", tmp_path)
    assert got.process.args == ("/bin/sh", "-c", "#!/bin/sh\necho x\n")
    assert got.mounts == ()


def test_complex_heredoc_is_reconstituted(tmp_path: Path) -> None:
    got = process("RUN <<EOF python3\nprint('hi')\nEOF\n", tmp_path)
    assert got.process.args == ("/bin/sh", "-c", "<<EOF python3\nprint('hi')\nEOF")


def test_complex_heredoc_keeps_tabs_for_the_shell(tmp_path: Path) -> None:
    got = process("RUN <<-EOF cat\n\t#!/x\n\tEOF\n", tmp_path)
    assert got.process.args == ("/bin/sh", "-c", "<<-EOF cat\n\t#!/x\nEOF")
    assert got.mounts == ()


def test_several_heredocs(tmp_path: Path) -> None:
    text = "RUN cat <<A > /a && cat <<'B' > /b\nfirst $X\nA\nsecond $X\nB\n"
    got = process(text, tmp_path, shell=("/bin/busybox", "sh", "-c"))
    assert got.process.args == (
        "/bin/busybox", "sh", "-c", "cat <<A > /a && cat <<'B' > /b\nfirst $X\nA\nsecond $X\nB",
    )


def test_heredoc_on_exec_form_is_internal_error(tmp_path: Path) -> None:
    base = run_cmd("RUN <<EOF\nx\nEOF\n")
    bad = RunCommand(span=base.span, node=base.node, cmd_line=("a", "b"), prepend_shell=False, files=base.files)
    with pytest.raises(InternalError, match="invalid run command"):
        process_for_run(bad, scratch_dir=str(tmp_path))


def test_heredoc_name_that_is_no_file_name(tmp_path: Path) -> None:
    base = run_cmd("RUN <<EOF\n#!/bin/sh\nEOF\n")
    (doc,) = base.files
    bad = RunCommand(span=base.span, node=base.node, cmd_line=("<<..",), prepend_shell=True,
                     files=(type(doc)("..", doc.data, False),))
    with pytest.raises(DockerfileError, match="invalid heredoc name"):
        process_for_run(bad, scratch_dir=str(tmp_path))
