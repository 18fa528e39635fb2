"""RUN heredocs in the planner (plan/convert.py `run_op`): the argv, shebang script and history BuildKit's
`dispatchRun` makes, for every heredoc form. The worker only materialises `ExecOp.script`."""

from __future__ import annotations

import pytest

from pybuild.dockerfile.commands import RunCommand, ShellInlineFile
from pybuild.dockerfile.instructions import Stages, to_stages
from pybuild.dockerfile.parser import parse
from pybuild.errors import DockerfileError, InternalError
from pybuild.image.spec import Platform
from pybuild.plan.convert import convert
from pybuild.plan.ops import ExecOp, Plan
from pybuild.record import replace

LINUX = Platform("linux", "amd64")


def plan_stages(stages: Stages, platform: Platform = LINUX) -> Plan:
    return convert(stages, build_args={}, target=None, platform=platform, base_configs=lambda ref: None,
                   build_platform=LINUX)


def plan(text: str, platform: Platform = LINUX) -> Plan:
    return plan_stages(to_stages(parse(text)), platform)


def run_op(text: str, platform: Platform = LINUX) -> ExecOp:
    """The ExecOp of the last RUN in `FROM scratch\\n<text>`."""
    p = plan("FROM scratch\n" + text, platform)
    op = p.ops[p.target]
    assert isinstance(op, ExecOp)
    return op


def last_history(text: str) -> str:
    created_by = plan("FROM scratch\n" + text).image.history[-1].created_by
    assert created_by is not None
    return created_by


def test_shell_and_exec_forms_have_no_script() -> None:
    assert run_op("RUN echo hi  there\n").args == ("/bin/sh", "-c", "echo hi  there")
    op = run_op('RUN ["/bin/echo", "a b"]\n')
    assert (op.args, op.script) == (("/bin/echo", "a b"), "")


def test_single_heredoc_runs_its_body_in_the_shell() -> None:
    op = run_op("RUN <<EOF\necho one\necho $HOME\nEOF\n")
    assert op.args == ("/bin/sh", "-c", "echo one\necho $HOME\n")  # never expanded: the shell does it
    assert op.script == ""


def test_single_heredoc_uses_the_stage_shell_and_quoted_names() -> None:
    op = run_op('SHELL ["/bin/busybox", "sh", "-c"]\nRUN <<\'EOF\'\necho $X\nEOF\n')
    assert op.args == ("/bin/busybox", "sh", "-c", "echo $X\n")
    assert run_op("RUN 3<<EOF\nx\nEOF\n").args == ("/bin/sh", "-c", "x\n")


def test_chomped_single_heredoc_strips_leading_tabs() -> None:
    op = run_op("RUN <<-EOF\n\techo one\n\t\techo two\n\tEOF\n")
    assert op.args == ("/bin/sh", "-c", "echo one\necho two\n")


def test_shebang_heredoc_is_a_script_run_without_the_shell() -> None:
    op = run_op('SHELL ["/bin/bash", "-c"]\nRUN <<EOF\n#!/bin/sh\necho $X\nEOF\n')
    assert op.args == ("/dev/pipes/EOF",)
    assert op.script == "#!/bin/sh\necho $X\n"  # verbatim


def test_chomped_shebang_heredoc() -> None:
    op = run_op("RUN <<-EOF\n#!/bin/sh\n\techo x\n\tEOF\n")
    assert (op.args, op.script) == (("/dev/pipes/EOF",), "#!/bin/sh\necho x\n")


def test_tab_before_shebang_is_no_script() -> None:
    # BuildKit tests `#!` on the raw data, before `<<-` strips the tab.
    op = run_op("RUN <<-EOF\n\t#!/bin/sh\n\techo x\n\tEOF\n")
    assert (op.args, op.script) == (("/bin/sh", "-c", "#!/bin/sh\necho x\n"), "")


def test_shebang_on_windows_goes_to_the_shell() -> None:
    op = run_op("RUN <<EOF\n#!/bin/sh\necho x\nEOF\n", Platform("windows", "amd64"))
    assert (op.args, op.script) == (("/bin/sh", "-c", "#!/bin/sh\necho x\n"), "")


def test_complex_heredoc_is_reconstituted_for_the_shell() -> None:
    assert run_op("RUN <<EOF python3\nprint('hi')\nEOF\n").args == (
        "/bin/sh", "-c", "<<EOF python3\nprint('hi')\nEOF")
    assert run_op("RUN <<EOF cat > /f\n#!/not/a/script\nEOF\n").script == ""


def test_complex_heredoc_keeps_tabs_for_the_shell() -> None:
    assert run_op("RUN <<-EOF cat\n\tx\n\tEOF\n").args == ("/bin/sh", "-c", "<<-EOF cat\n\tx\nEOF")


def test_several_heredocs_in_order() -> None:
    op = run_op("RUN cat <<A > /a && cat <<'B' > /b\nfirst $X\nA\nsecond $X\nB\n")
    assert op.args == ("/bin/sh", "-c", "cat <<A > /a && cat <<'B' > /b\nfirst $X\nA\nsecond $X\nB")


def test_history_shows_the_argv_as_buildkit_does() -> None:
    assert last_history("RUN <<EOF\n#!/bin/sh\ntrue\nEOF\n") == "RUN /dev/pipes/EOF # buildkit"
    assert last_history("RUN <<EOF\necho a\nEOF\n") == "RUN /bin/sh -c echo a\n # buildkit"
    assert last_history("RUN <<EOF cat\nx\nEOF\n") == "RUN /bin/sh -c <<EOF cat\nx\nEOF # buildkit"


def test_digest_follows_everything_that_changes_the_run() -> None:
    script = run_op("RUN <<EOF\n#!/bin/sh\necho a\nEOF\n")
    other_body = run_op("RUN <<EOF\n#!/bin/sh\necho b\nEOF\n")
    other_name = run_op("RUN <<END\n#!/bin/sh\necho a\nEND\n")
    shell = run_op("RUN <<-EOF\n\t#!/bin/sh\n\techo a\n\tEOF\n")
    complex_a = run_op("RUN <<EOF cat\na\nEOF\n")
    complex_b = run_op("RUN <<EOF cat\nb\nEOF\n")
    digests = {op.digest for op in (script, other_body, other_name, shell, complex_a, complex_b)}
    assert len(digests) == 6
    assert script.definition()["script"] == "#!/bin/sh\necho a\n"


def _with_run(text: str, change: dict[str, object]) -> Stages:
    stages = to_stages(parse("FROM scratch\n" + text))
    stage = stages.stages[0]
    (command,) = stage.commands
    assert isinstance(command, RunCommand)
    bad = replace(command, **change)
    return replace(stages, stages=(replace(stage, commands=(bad,)),))


def test_heredoc_name_that_is_no_file_name() -> None:
    doc = ShellInlineFile(name="..", data="#!/bin/sh\n", chomp=False)
    stages = _with_run("RUN <<EOF\n#!/bin/sh\nEOF\n", {"cmd_line": ("<<..",), "files": (doc,)})
    with pytest.raises(DockerfileError, match="invalid heredoc name for a script"):
        plan_stages(stages)


def test_heredoc_on_exec_form_is_internal_error() -> None:
    stages = _with_run("RUN <<EOF\nx\nEOF\n", {"cmd_line": ("a", "b"), "prepend_shell": False})
    with pytest.raises(InternalError, match="invalid run command"):
        plan_stages(stages)
