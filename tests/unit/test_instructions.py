"""Unit tests for AST → typed commands and stages, on hand-built nodes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pybuild.dockerfile.ast import Directives, Heredoc, Node, ParseResult
from pybuild.dockerfile.commands import (
    AddCommand,
    ArgCommand,
    ArgDef,
    CmdCommand,
    CopyCommand,
    EntrypointCommand,
    EnvCommand,
    ExposeCommand,
    FromCommand,
    HealthcheckCommand,
    KeyValue,
    LabelCommand,
    MaintainerCommand,
    OnbuildCommand,
    RunCommand,
    ShellCommand,
    ShellInlineFile,
    SourceContent,
    StopsignalCommand,
    UserCommand,
    VolumeCommand,
    WorkdirCommand,
)
from pybuild.dockerfile.durations import MILLISECOND, SECOND
from pybuild.dockerfile.instructions import INSTRUCTIONS, parse_instruction, to_stages
from pybuild.errors import DockerfileError
from pybuild.source import SourceFile, Span

SOURCE = SourceFile("Dockerfile", "FROM a\n")


def node(
    keyword: str,
    *args: str,
    flags: tuple[str, ...] = (),
    json: bool = False,
    heredocs: tuple[Heredoc, ...] = (),
    inner: Node | None = None,
    comments: tuple[str, ...] = (),
    original: str | None = None,
    line: int = 1,
) -> Node:
    text = original if original is not None else " ".join((keyword, *flags, *args))
    return Node(
        keyword=keyword, args=args, flags=flags, json=json, original=text,
        span=Span("Dockerfile", line, 1, line, len(text) + 1), heredocs=heredocs, inner=inner, comments=comments,
    )


def error_of(n: Node) -> DockerfileError:
    with pytest.raises(DockerfileError) as info:
        parse_instruction(n, SOURCE)
    return info.value


def result(*nodes: Node) -> ParseResult:
    return ParseResult(nodes=nodes, directives=Directives(), source=SOURCE)


# --- each instruction ---------------------------------------------------------------------------


def test_from_plain_and_named() -> None:
    plain = parse_instruction(node("FROM", "alpine:3"))
    assert isinstance(plain, FromCommand)
    assert (plain.base_name, plain.stage_name, plain.platform) == ("alpine:3", None, "")
    named = parse_instruction(node("from", "$BASE", "As", "Build-1", flags=("--platform=linux/arm64",)))
    assert isinstance(named, FromCommand)
    assert (named.base_name, named.stage_name, named.platform) == ("$BASE", "build-1", "linux/arm64")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "FROM requires either one or three arguments"),
        (("a", "AS"), "FROM requires either one or three arguments"),
        (("a", "b", "c"), "FROM requires either one or three arguments"),
        (("a", "AS", "1st"), 'invalid name for build stage: "1st", name can\'t start with a number'),
        (("a", "AS", "x$y"), 'invalid name for build stage: "x$y"'),
    ],
)
def test_from_errors(args: tuple[str, ...], message: str) -> None:
    assert message in error_of(node("FROM", *args)).message


def test_from_unknown_flag() -> None:
    assert error_of(node("FROM", "a", flags=("--platfrom=x",))).message == (
        "unknown flag: --platfrom (did you mean platform?)"
    )


def test_run_shell_and_exec_forms() -> None:
    shell = parse_instruction(node("RUN", "echo hi && ls"))
    assert isinstance(shell, RunCommand)
    assert (shell.cmd_line, shell.prepend_shell, shell.network, shell.security) == (
        ("echo hi && ls",), True, "default", "sandbox"
    )
    exec_form = parse_instruction(node("RUN", "ls", "-l", json=True))
    assert isinstance(exec_form, RunCommand)
    assert (exec_form.cmd_line, exec_form.prepend_shell, exec_form.flags_used) == (("ls", "-l"), False, ())


def test_run_flags() -> None:
    run = parse_instruction(node(
        "RUN", "make",
        flags=("--mount=type=cache,target=/c", "--mount=type=secret,id=s", "--network=none", "--security=insecure"),
    ))
    assert isinstance(run, RunCommand)
    assert [m.type for m in run.mounts] == ["cache", "secret"]
    assert (run.network, run.security, run.flags_used) == ("none", "insecure", ("mount", "network", "security"))


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--network=bridge", 'invalid network mode "bridge"'),
        ("--security=root", 'security "root" is not valid'),
        ("--mount=type=nope", 'unsupported mount type "nope"'),
        ("--link", "unknown flag: --link"),
    ],
)
def test_run_flag_errors(flag: str, message: str) -> None:
    assert message in error_of(node("RUN", "x", flags=(flag,))).message


def test_run_heredoc_files_stay_raw() -> None:
    doc = Heredoc(name="EOF", file_descriptor=0, expand=True, chomp=True, content="\techo hi\n")
    run = parse_instruction(node("RUN", "<<-EOF", heredocs=(doc,)))
    assert isinstance(run, RunCommand)
    assert run.cmd_line == ("<<-EOF",)
    assert run.files == (ShellInlineFile("EOF", "\techo hi\n", True),)


def test_cmd_and_entrypoint() -> None:
    cmd = parse_instruction(node("CMD", "a", "b", json=True))
    assert isinstance(cmd, CmdCommand) and cmd.cmd_line == ("a", "b") and not cmd.prepend_shell
    empty_cmd = parse_instruction(node("CMD", json=True))
    assert isinstance(empty_cmd, CmdCommand) and empty_cmd.cmd_line == ()
    entry = parse_instruction(node("ENTRYPOINT", "run it"))
    assert isinstance(entry, EntrypointCommand) and entry.cmd_line == ("run it",) and entry.prepend_shell
    reset = parse_instruction(node("ENTRYPOINT", json=True))
    assert isinstance(reset, EntrypointCommand) and reset.cmd_line is None
    assert "unknown flag: --x" in error_of(node("CMD", "a", flags=("--x",))).message


def test_copy_all_flags() -> None:
    copy = parse_instruction(node(
        "COPY", "a", "b", "/dst/",
        flags=("--from=build", "--chown=1:2", "--chmod=0755", "--link", "--parents", "--exclude=*.md",
               "--exclude=tmp"),
    ))
    assert isinstance(copy, CopyCommand)
    assert (copy.sources, copy.dest, copy.from_, copy.chown, copy.chmod) == (("a", "b"), "/dst/", "build", "1:2", "0755")
    assert (copy.link, copy.parents, copy.excludes, copy.source_contents) == (True, True, ("*.md", "tmp"), ())


def test_copy_defaults() -> None:
    copy = parse_instruction(node("COPY", "a", "b"))
    assert isinstance(copy, CopyCommand)
    assert (copy.from_, copy.chown, copy.chmod, copy.link, copy.parents, copy.excludes) == ("", "", "", False, False, ())


@pytest.mark.parametrize("chmod", ["644", "0755", "7777", "u+x", "u=rwx,go=rx", "a-w", "+x", "g+s", "$MODE"])
def test_copy_chmod_valid(chmod: str) -> None:
    copy = parse_instruction(node("COPY", "a", "b", flags=(f"--chmod={chmod}",)))
    assert isinstance(copy, CopyCommand) and copy.chmod == chmod


@pytest.mark.parametrize("chmod", ["17777", "0789", "u+q", "rwx", "u+x,"])
def test_copy_chmod_invalid(chmod: str) -> None:
    assert "invalid chmod parameter" in error_of(node("COPY", "a", "b", flags=(f"--chmod={chmod}",))).message


def test_copy_heredoc_sources() -> None:
    docs = (
        Heredoc(name="ONE", file_descriptor=0, expand=True, chomp=True, content="\t\tx\n\ty\n"),
        Heredoc(name="TWO", file_descriptor=0, expand=False, chomp=False, content="\tz\n"),
    )
    copy = parse_instruction(node("COPY", "<<-ONE", "<<'TWO'", "file", "/dst", heredocs=docs))
    assert isinstance(copy, CopyCommand)
    assert copy.sources == ("file",)
    assert copy.source_contents == (SourceContent("ONE", "x\ny\n", True), SourceContent("TWO", "\tz\n", False))


def test_copy_heredoc_destination_rejected() -> None:
    assert error_of(node("ADD", "a", "<<EOF")).message == "ADD cannot accept a heredoc as a destination"


def test_add_flags() -> None:
    add = parse_instruction(node(
        "ADD", "https://x/y.tgz", "/y",
        flags=("--checksum=sha256:abc", "--keep-git-dir", "--unpack=false", "--chmod=600", "--exclude=a"),
    ))
    assert isinstance(add, AddCommand)
    assert (add.checksum, add.keep_git_dir, add.unpack, add.chmod, add.excludes) == ("sha256:abc", True, False, "600", ("a",))
    plain = parse_instruction(node("ADD", "a", "b"))
    assert isinstance(plain, AddCommand) and plain.unpack is None and not plain.link
    assert "unknown flag: --from" in error_of(node("ADD", "a", "b", flags=("--from=x",))).message
    assert "unknown flag: --parents" in error_of(node("ADD", "a", "b", flags=("--parents",))).message


def test_env_and_label_keep_quotes() -> None:
    env = parse_instruction(node("ENV", "A", '"x y"', "=", "B", "c", ""))
    assert isinstance(env, EnvCommand)
    assert env.env == (KeyValue("A", '"x y"', False), KeyValue("B", "c", True))
    label = parse_instruction(node("LABEL", "org.x", "'1'", "="))
    assert isinstance(label, LabelCommand) and label.labels == (KeyValue("org.x", "'1'", False),)
    assert "unknown flag: --x" in error_of(node("ENV", "A", "b", "=", flags=("--x",))).message


def test_arg_defs() -> None:
    arg = parse_instruction(node("ARG", "a", "b=1", "c=", "d=x=y"))
    assert isinstance(arg, ArgCommand)
    assert arg.args == (ArgDef("a"), ArgDef("b", "1"), ArgDef("c", ""), ArgDef("d", "x=y"))
    assert error_of(node("ARG", "=1")).message == "ARG names can not be blank"
    assert error_of(node("ARG")).message == "ARG requires at least one argument"
    assert "unknown flag: --required" in error_of(node("ARG", "a", flags=("--required",))).message


def test_simple_instructions() -> None:
    assert parse_instruction(node("WORKDIR", "/app")) == WorkdirCommand(
        span=node("WORKDIR", "/app").span, node=node("WORKDIR", "/app"), path="/app"
    )
    user = parse_instruction(node("USER", "1000:1000"))
    assert isinstance(user, UserCommand) and user.user == "1000:1000"
    sig = parse_instruction(node("STOPSIGNAL", "SIGTERM"))
    assert isinstance(sig, StopsignalCommand) and sig.signal == "SIGTERM"
    maint = parse_instruction(node("MAINTAINER", "me <me@x>"))
    assert isinstance(maint, MaintainerCommand) and maint.maintainer == "me <me@x>"
    expose = parse_instruction(node("EXPOSE", "8080/tcp", "443", "80"))
    assert isinstance(expose, ExposeCommand) and expose.ports == ("443", "80", "8080/tcp")
    volume = parse_instruction(node("VOLUME", " /a ", "/b", json=True))
    assert isinstance(volume, VolumeCommand) and volume.volumes == ("/a", "/b")
    shell = parse_instruction(node("SHELL", "bash", "-c", json=True))
    assert isinstance(shell, ShellCommand) and shell.shell == ("bash", "-c")


@pytest.mark.parametrize(
    ("n", "message"),
    [
        (node("VOLUME", " ", json=True), "VOLUME specified can not be an empty string"),
        (node("SHELL", "bash -c"), "SHELL requires the arguments to be in JSON form"),
        (node("SHELL", json=True), "SHELL requires at least one argument"),
        (node("USER", "a", "b"), "USER requires exactly one argument"),
        (node("STOPSIGNAL", "a", flags=("--x",)), "unknown flag: --x"),
        (node("WORKDIR", "/a", flags=("--x=1",)), "unknown flag: --x"),
    ],
)
def test_simple_instruction_errors(n: Node, message: str) -> None:
    assert message in error_of(n).message


# --- HEALTHCHECK --------------------------------------------------------------------------------


def test_healthcheck_forms() -> None:
    none = parse_instruction(node("HEALTHCHECK", "none"))
    assert isinstance(none, HealthcheckCommand) and none.test == ("NONE",)
    shell = parse_instruction(node("HEALTHCHECK", "CMD", "curl -f http://x/"))
    assert isinstance(shell, HealthcheckCommand) and shell.test == ("CMD-SHELL", "curl -f http://x/")
    exec_form = parse_instruction(node("HEALTHCHECK", "cmd", "curl", "-f", json=True))
    assert isinstance(exec_form, HealthcheckCommand) and exec_form.test == ("CMD", "curl", "-f")


def test_healthcheck_flags() -> None:
    check = parse_instruction(node(
        "HEALTHCHECK", "CMD", "true",
        flags=("--interval=1m30s", "--timeout=10s", "--start-period=0", "--start-interval=5ms", "--retries=3"),
    ))
    assert isinstance(check, HealthcheckCommand)
    assert (check.interval, check.timeout, check.start_period, check.start_interval, check.retries) == (
        90 * SECOND, 10 * SECOND, 0, 5 * MILLISECOND, 3
    )


@pytest.mark.parametrize(
    ("n", "message"),
    [
        (node("HEALTHCHECK", "NONE", "x"), "HEALTHCHECK NONE takes no arguments"),
        (node("HEALTHCHECK", "NONE", flags=("--interval=1s",)), "unknown flag: --interval"),
        (node("HEALTHCHECK", "PING", "x"), 'Unknown type "PING" in HEALTHCHECK (try CMD)'),
        (node("HEALTHCHECK", "CMD", json=True), "Missing command after HEALTHCHECK CMD"),
        (node("HEALTHCHECK", "CMD", "x", flags=("--interval=1",)), 'time: missing unit in duration "1"'),
        (node("HEALTHCHECK", "CMD", "x", flags=("--timeout=500us",)), 'Interval "timeout" cannot be less than 1ms'),
        (node("HEALTHCHECK", "CMD", "x", flags=("--interval=-1s",)), 'Interval "interval" cannot be less than 1ms'),
        (node("HEALTHCHECK", "CMD", "x", flags=("--retries=-1",)), "--retries cannot be negative (-1)"),
        (node("HEALTHCHECK", "CMD", "x", flags=("--retries=two",)), 'parsing "two": invalid syntax'),
        (node("HEALTHCHECK", "CMD", "x", flags=("--retries=9999999999",)), "value out of range"),
        (node("HEALTHCHECK", "CMD", "x", flags=("--retries",)), "missing a value on flag: retries"),
    ],
)
def test_healthcheck_errors(n: Node, message: str) -> None:
    assert message in error_of(n).message


# --- ONBUILD ------------------------------------------------------------------------------------


def test_onbuild_keeps_expression_and_parses_trigger() -> None:
    inner = node("RUN", "echo hi")
    onbuild = parse_instruction(node("ONBUILD", inner=inner, original="  onbuild RUN echo hi"))
    assert isinstance(onbuild, OnbuildCommand)
    assert onbuild.expression == "RUN echo hi"
    assert isinstance(onbuild.trigger, RunCommand)


def test_onbuild_expression_includes_heredocs() -> None:
    doc = Heredoc(name="EOF", file_descriptor=0, expand=True, chomp=False, content="x\n")
    inner = node("RUN", "<<EOF", heredocs=(doc,))
    onbuild = parse_instruction(node("ONBUILD", inner=inner, heredocs=(doc,), original="ONBUILD RUN <<EOF"))
    assert isinstance(onbuild, OnbuildCommand) and onbuild.expression == "RUN <<EOF\nx\nEOF"
    # An `original` that already holds the bodies gets them once, not twice.
    docs = (doc, Heredoc(name="END", file_descriptor=0, expand=True, chomp=True, content="\ty\n"))
    text = "ONBUILD RUN <<EOF <<-END\nx\nEOF\n\ty\n\tEND\n"
    again = parse_instruction(node("ONBUILD", inner=node("RUN", "<<EOF <<-END", heredocs=docs), heredocs=docs, original=text))
    assert isinstance(again, OnbuildCommand)
    assert again.expression == "RUN <<EOF <<-END\nx\nEOF\n\ty\nEND"


@pytest.mark.parametrize(
    ("trigger", "message"),
    [
        ("FROM", "FROM isn't allowed as an ONBUILD trigger"),
        ("maintainer", "MAINTAINER isn't allowed as an ONBUILD trigger"),
        ("onbuild", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
    ],
)
def test_onbuild_forbidden_triggers(trigger: str, message: str) -> None:
    assert error_of(node("ONBUILD", inner=node(trigger, "x"))).message == message
    assert error_of(node("ONBUILD", trigger, "x")).message == message  # BuildKit-style flattened args


def test_onbuild_bad_trigger_fails_now() -> None:
    assert "COPY requires at least two arguments" in error_of(node("ONBUILD", inner=node("COPY", "a"))).message


# --- unknown instructions, spans ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("keyword", "message"),
    [
        ("FORM", "unknown instruction: FORM (did you mean FROM?)"),
        ("runn", "unknown instruction: runn (did you mean run?)"),
        ("RNU", "unknown instruction: RNU (did you mean RUN?)"),
        ("rnu", "unknown instruction: rnu (did you mean run?)"),
        ("Worktree", "unknown instruction: Worktree"),
        ("COPPY", "unknown instruction: COPPY (did you mean COPY?)"),
        ("FOO", "unknown instruction: FOO (did you mean FROM?)"),
        ("XYZZYX", "unknown instruction: XYZZYX"),
    ],
)
def test_unknown_instruction(keyword: str, message: str) -> None:
    assert error_of(node(keyword, "x")).message == message


def test_every_instruction_is_known() -> None:
    for name in INSTRUCTIONS:
        try:
            parse_instruction(node(name.upper(), "x"))
        except DockerfileError as exc:
            assert "unknown instruction" not in exc.message


def test_errors_carry_span_and_source() -> None:
    bad = node("WORKDIR", line=7)
    err = error_of(bad)
    assert err.span == bad.span and err.source is SOURCE
    assert str(err).startswith("Dockerfile:7:1: WORKDIR requires exactly one argument")


def test_commands_keep_span_and_node() -> None:
    n = node("USER", "app", line=3)
    cmd = parse_instruction(n)
    assert cmd.span == n.span and cmd.node is n


# --- stages -------------------------------------------------------------------------------------


def test_to_stages_groups_commands() -> None:
    stages = to_stages(result(
        node("ARG", "BASE=alpine", line=1),
        node("FROM", "$BASE", "AS", "Build", line=2),
        node("RUN", "make", line=3),
        node("FROM", "scratch", line=4),
        node("COPY", "/out", "/", flags=("--from=build",), line=5),
    ))
    assert [a.args[0].key for a in stages.meta_args] == ["BASE"]
    first, second = stages.stages
    assert (first.name, first.index, first.base_name, first.span.line) == ("build", 0, "$BASE", 2)
    assert [type(c) for c in first.commands] == [RunCommand]
    assert (second.name, second.index, second.base_name) == (None, 1, "scratch")
    assert first.source_code == "FROM $BASE AS Build"
    assert stages.stage_by_name_or_index("BUILD") is first
    assert stages.stage_by_name_or_index("1") is second
    assert stages.stage_by_name_or_index("2") is None
    assert stages.stage_by_name_or_index("alpine") is None


def test_base_stage_looks_backwards_only() -> None:
    stages = to_stages(result(
        node("FROM", "alpine", "AS", "base"),
        node("FROM", "base", "AS", "dev"),
        node("FROM", "later", "AS", "x"),
        node("FROM", "x", "AS", "later"),
        node("FROM", "base", "AS", "base"),
        node("FROM", "base"),
    ))
    s = stages.stages
    assert stages.base_stage(s[0]) is None
    assert stages.base_stage(s[1]) is s[0]
    assert stages.base_stage(s[2]) is None  # `later` is defined after
    assert stages.base_stage(s[3]) is s[2]
    assert stages.base_stage(s[4]) is s[0]
    assert stages.base_stage(s[5]) is s[4]  # duplicates: the most recent wins (BuildKit only lints)
    assert stages.stage_by_name_or_index("base") is s[4]


def test_instruction_before_from_is_an_error() -> None:
    with pytest.raises(DockerfileError) as info:
        to_stages(result(node("ARG", "a"), node("RUN", "x", line=2)))
    assert info.value.message == "no build stage in current context"
    assert info.value.span is not None and info.value.span.line == 2
    assert info.value.source is SOURCE


def test_empty_file_has_no_stages() -> None:
    assert to_stages(result()).stages == ()


def test_doc_comments() -> None:
    stages = to_stages(result(
        node("ARG", "foo=bar", comments=("foo sets foo",)),
        node("FROM", "busybox", "AS", "base", comments=(" base defines first stage",)),
        node("ARG", "bar", "baz=123", comments=("bar defines bar", "baz is something else")),
    ))
    assert stages.meta_args[0].args[0].doc == "sets foo"
    assert stages.stages[0].doc == "defines first stage"
    arg = stages.stages[0].commands[0]
    assert isinstance(arg, ArgCommand)
    assert [(a.key, a.doc) for a in arg.args] == [("bar", "defines bar"), ("baz", "is something else")]


# --- robustness ---------------------------------------------------------------------------------

_words = st.text(alphabet=st.sampled_from(list("ab=<-'\"$ \t,:/0123456789\\")), max_size=12)
_flag_words = st.one_of(
    _words,
    st.builds(lambda name, value: f"--{name}{value}", st.sampled_from([
        "mount", "network", "security", "from", "chown", "chmod", "link", "parents", "exclude", "checksum",
        "keep-git-dir", "unpack", "platform", "interval", "timeout", "start-period", "start-interval",
        "retries", "bogus", "",
    ]), _words),
)
_keywords = st.one_of(st.sampled_from([*INSTRUCTIONS, "FROM", "Run", "nope"]), _words)
_heredocs = st.lists(
    st.builds(Heredoc, name=_words, file_descriptor=st.integers(0, 9), expand=st.booleans(),
              chomp=st.booleans(), content=_words),
    max_size=2,
).map(tuple)


@st.composite
def _nodes(draw: st.DrawFn, depth: int = 0) -> Node:
    inner = draw(st.one_of(st.none(), _nodes(depth + 1))) if depth == 0 else None
    return Node(
        keyword=draw(_keywords),
        args=tuple(draw(st.lists(_words, max_size=5))),
        flags=tuple(draw(st.lists(_flag_words, max_size=3))),
        json=draw(st.booleans()),
        original=draw(_words),
        span=Span("Dockerfile", 1, 1),
        heredocs=draw(_heredocs),
        inner=inner,
        comments=tuple(draw(st.lists(_words, max_size=2))),
    )


@settings(max_examples=400, deadline=None)
@given(st.lists(_nodes(), max_size=6))
def test_only_dockerfile_errors_escape(nodes: list[Node]) -> None:
    try:
        to_stages(result(*nodes))
    except DockerfileError as exc:
        assert exc.span is not None and exc.source is SOURCE
