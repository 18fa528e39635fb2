"""AST → typed commands and build stages (BuildKit's `frontend/dockerfile/instructions`).

`to_stages(parse(...))` is the frontend's second step: it turns every `Node` into a typed command
(`pybuild.dockerfile.commands`), checks arity, flags and `--mount` specs, and groups the commands into
`Stage`s. Nothing is expanded: build args are only known to the planner, which expands values the way
BuildKit's converter does. Every error is a `DockerfileError` carrying the instruction's span and source.

Departures from BuildKit, on purpose:
- BuildKit silently ignores flags on ARG, STOPSIGNAL and `HEALTHCHECK NONE` (it never parses them);
  here they are rejected like flags on any other instruction that takes none.
- An ONBUILD trigger is parsed now (BuildKit parses it only when a child image is built), so a broken
  trigger fails the build that writes it.
- `COPY --parents`, `COPY/ADD --exclude` and `RUN --security` are always available (labs-only in
  some BuildKit releases).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from pybuild.dockerfile.ast import Heredoc, Node, ParseResult
from pybuild.dockerfile.commands import (
    AddCommand,
    ArgCommand,
    ArgDef,
    CmdCommand,
    Command,
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
from pybuild.dockerfile.durations import MILLISECOND, parse_duration
from pybuild.dockerfile.flags import (
    FlagSpec,
    ParsedFlags,
    bool_flag,
    parse_flags,
    string_flag,
    strings_flag,
    with_suggestion,
)
from pybuild.dockerfile.heredoc import chomp_heredoc_content, parse_heredoc
from pybuild.dockerfile.mounts import Mount, parse_mount
from pybuild.errors import DockerfileError, at
from pybuild.record import record
from pybuild.source import SourceFile, Span

__all__ = [
    "INSTRUCTIONS",
    "Stage",
    "Stages",
    "parse_instruction",
    "to_stages",
]

INSTRUCTIONS = (
    "add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "from", "healthcheck", "label",
    "maintainer", "onbuild", "run", "shell", "stopsignal", "user", "volume", "workdir",
)
"""Lower-case names of every instruction BuildKit's Dockerfile frontend knows."""

NETWORK_MODES = ("default", "none", "host")
SECURITY_MODES = ("sandbox", "insecure")


# --- stages -------------------------------------------------------------------------------------


@record(kw_only=True)
class Stage:
    """One build stage: a FROM and the commands up to the next FROM (BuildKit's `instructions.Stage`).

    `base_name` is raw (it may hold `$ARGS`); `name` is lower-cased or None.
    """

    name: str | None
    index: int
    base_name: str
    platform: str
    commands: tuple[Command, ...]
    span: Span
    doc: str
    from_command: FromCommand

    @property
    def source_code(self) -> str:
        """The FROM line as written, trimmed (BuildKit's `Stage.SourceCode`)."""
        return self.from_command.node.original.strip()


@record
class Stages:
    """What `to_stages` returns: global ARGs (before the first FROM) and the stages, in order."""

    meta_args: tuple[ArgCommand, ...]
    stages: tuple[Stage, ...]

    def stage_by_name_or_index(self, ref: str) -> Stage | None:
        """The stage `ref` names (case-insensitive; the last of duplicates wins) or indexes, or None.

        This is BuildKit's lookup for `COPY --from` and `RUN --mount=from=`.
        """
        if re.fullmatch(r"[+-]?\d+", ref):
            index = int(ref)
            return self.stages[index] if 0 <= index < len(self.stages) else None
        return self._last_named(ref, len(self.stages))

    def base_stage(self, stage: Stage) -> Stage | None:
        """The earlier stage `stage` is built FROM, when its (literal) base name names one.

        BuildKit only looks backwards: the most recent earlier stage with that name; `FROM x AS x`
        refers to an image `x` unless an earlier stage is called `x`.
        """
        return self.refers_to_stage(stage.base_name, stage.index)

    def refers_to_stage(self, base_name: str, before: int) -> Stage | None:
        """The stage among the first `before` that `base_name` names, or None (an image reference)."""
        return self._last_named(base_name, before)

    def _last_named(self, name: str, before: int) -> Stage | None:
        wanted = name.lower()
        for stage in reversed(self.stages[:before]):
            if stage.name == wanted:
                return stage
        return None


def to_stages(result: ParseResult) -> Stages:
    """Turn a parsed Dockerfile into typed stages; raise DockerfileError at the first bad instruction."""
    meta_args: list[ArgCommand] = []
    stages: list[tuple[FromCommand, list[Command]]] = []
    for node in result.nodes:
        with at(node.span, result.source):
            command = _parse(node)
            if isinstance(command, FromCommand):
                stages.append((command, []))
            elif stages:
                stages[-1][1].append(command)
            elif isinstance(command, ArgCommand):
                meta_args.append(command)
            else:
                raise DockerfileError("no build stage in current context")
    return Stages(tuple(meta_args), tuple(_stage(i, cmd, body) for i, (cmd, body) in enumerate(stages)))


def _stage(index: int, command: FromCommand, body: list[Command]) -> Stage:
    return Stage(
        name=command.stage_name,
        index=index,
        base_name=command.base_name,
        platform=command.platform,
        commands=tuple(body),
        span=command.span,
        doc=command.doc,
        from_command=command,
    )


# --- single instructions ------------------------------------------------------------------------


def parse_instruction(node: Node, source: SourceFile | None = None) -> Command:
    """Turn one AST node into its typed command; errors carry the node's span and `source`."""
    with at(node.span, source):
        return _parse(node)


def _parse(node: Node) -> Command:
    parser = _PARSERS.get(node.keyword.lower())
    if parser is None:
        message = f"unknown instruction: {node.keyword}"
        names = [name.upper() for name in INSTRUCTIONS]
        raise DockerfileError(with_suggestion(message, node.keyword, names, case_sensitive=False))
    return parser(node)


def _flags(node: Node, *specs: FlagSpec) -> ParsedFlags:
    return parse_flags(node.flags, specs)


def _exactly_one(node: Node, name: str) -> str:
    if len(node.args) != 1:
        raise DockerfileError(f"{name} requires exactly one argument")
    return node.args[0]


def _at_least_one(node: Node, name: str) -> None:
    if not node.args:
        raise DockerfileError(f"{name} requires at least one argument")


def _json_args(args: Sequence[str], is_json: bool) -> tuple[str, ...]:
    # BuildKit's handleJSONArgs: exec form keeps the elements, shell form is one string.
    return tuple(args) if is_json else (" ".join(args),)


def _get_comment(comments: Sequence[str], name: str) -> str:
    """The doc of `name`: the first comment line `name rest...` gives `rest...` (BuildKit)."""
    if not name:
        return ""
    prefix = name + " "
    for line in comments:
        text = line.strip()
        if text.startswith(prefix):
            return text[len(prefix):]
    return ""


def _parse_from(node: Node) -> FromCommand:
    args = node.args
    name: str | None = None
    if len(args) == 3 and args[1].lower() == "as":
        name = args[2].lower()
        if not re.fullmatch(r"[a-z][a-z0-9_.-]*", name):
            raise DockerfileError(
                f"invalid name for build stage: {_go_quote(args[2])}, "
                "name can't start with a number or contain symbols"
            )
    elif len(args) != 1:
        raise DockerfileError("FROM requires either one or three arguments")
    flags = _flags(node, string_flag("platform"))
    return FromCommand(
        span=node.span, node=node, base_name=args[0], stage_name=name,
        platform=flags.string("platform"), doc=_get_comment(node.comments, name or ""),
    )


def _parse_kvps(node: Node, name: str) -> tuple[KeyValue, ...]:
    _flags(node)
    args = node.args
    if not args:
        raise DockerfileError(f"{name} requires at least one argument")
    if len(args) % 3:
        raise DockerfileError(f"Bad input to {name}, too many arguments")
    pairs = []
    for i in range(0, len(args), 3):
        if not args[i]:
            raise DockerfileError(f"{name} names can not be blank")
        pairs.append(KeyValue(args[i], args[i + 1], no_delim=args[i + 2] == ""))
    return tuple(pairs)


def _parse_env(node: Node) -> EnvCommand:
    return EnvCommand(span=node.span, node=node, env=_parse_kvps(node, "ENV"))


def _parse_label(node: Node) -> LabelCommand:
    return LabelCommand(span=node.span, node=node, labels=_parse_kvps(node, "LABEL"))


def _parse_maintainer(node: Node) -> MaintainerCommand:
    value = _exactly_one(node, "MAINTAINER")
    _flags(node)
    return MaintainerCommand(span=node.span, node=node, maintainer=value)


def _parse_workdir(node: Node) -> WorkdirCommand:
    value = _exactly_one(node, "WORKDIR")
    _flags(node)
    return WorkdirCommand(span=node.span, node=node, path=value)


def _parse_user(node: Node) -> UserCommand:
    value = _exactly_one(node, "USER")
    _flags(node)
    return UserCommand(span=node.span, node=node, user=value)


def _parse_stopsignal(node: Node) -> StopsignalCommand:
    value = _exactly_one(node, "STOPSIGNAL")
    _flags(node)
    return StopsignalCommand(span=node.span, node=node, signal=value)


def _parse_expose(node: Node) -> ExposeCommand:
    _at_least_one(node, "EXPOSE")
    _flags(node)
    return ExposeCommand(span=node.span, node=node, ports=tuple(sorted(node.args)))


def _parse_volume(node: Node) -> VolumeCommand:
    _at_least_one(node, "VOLUME")
    _flags(node)
    volumes = tuple(arg.strip() for arg in node.args)
    if "" in volumes:
        raise DockerfileError("VOLUME specified can not be an empty string")
    return VolumeCommand(span=node.span, node=node, volumes=volumes)


def _parse_arg(node: Node) -> ArgCommand:
    _at_least_one(node, "ARG")
    _flags(node)
    defs = []
    for arg in node.args:
        key, has_value, value = arg.partition("=")
        if has_value and not key:
            raise DockerfileError("ARG names can not be blank")
        defs.append(ArgDef(key, value if has_value else None, _get_comment(node.comments, key)))
    return ArgCommand(span=node.span, node=node, args=tuple(defs))


def _parse_shell(node: Node) -> ShellCommand:
    _flags(node)
    shell = _json_args(node.args, node.json)
    if not shell:
        raise DockerfileError("SHELL requires at least one argument")
    if not node.json:
        raise DockerfileError("SHELL requires the arguments to be in JSON form")
    return ShellCommand(span=node.span, node=node, shell=shell)


def _inline_files(node: Node) -> tuple[ShellInlineFile, ...]:
    return tuple(ShellInlineFile(doc.name, doc.content, doc.chomp) for doc in node.heredocs)


def _parse_cmd(node: Node) -> CmdCommand:
    _flags(node)
    return CmdCommand(
        span=node.span, node=node, cmd_line=_json_args(node.args, node.json),
        prepend_shell=not node.json, files=_inline_files(node),
    )


def _parse_entrypoint(node: Node) -> EntrypointCommand:
    _flags(node)
    cmd_line: tuple[str, ...] | None = _json_args(node.args, node.json) or None
    return EntrypointCommand(
        span=node.span, node=node, cmd_line=cmd_line, prepend_shell=not node.json,
        files=_inline_files(node),
    )


def _parse_run(node: Node) -> RunCommand:
    flags = _flags(
        node, strings_flag("mount"), string_flag("network", "default"), string_flag("security", "sandbox")
    )
    mounts: tuple[Mount, ...] = tuple(parse_mount(spec) for spec in flags.strings("mount"))
    network = flags.string("network")
    if network not in NETWORK_MODES:
        raise DockerfileError(f"invalid network mode {_go_quote(network)}")
    security = flags.string("security")
    if security not in SECURITY_MODES:
        raise DockerfileError(f"security {_go_quote(security)} is not valid")
    return RunCommand(
        span=node.span, node=node, cmd_line=_json_args(node.args, node.json),
        prepend_shell=not node.json, files=_inline_files(node), mounts=mounts,
        network=network, security=security, flags_used=flags.used,
    )


# --- COPY / ADD ---------------------------------------------------------------------------------

def _heredoc_word(word: str) -> Heredoc | None:
    """The heredoc a COPY/ADD word opens (BuildKit's `MustParseHeredoc`: a malformed word is a path)."""
    try:
        return parse_heredoc(word)
    except DockerfileError:
        return None


def _sources_and_dest(node: Node, name: str) -> tuple[tuple[str, ...], str, tuple[SourceContent, ...]]:
    *sources, dest = node.args
    if _heredoc_word(dest) is not None:
        raise DockerfileError(f"{name} cannot accept a heredoc as a destination")
    contents = {doc.name: doc.content for doc in node.heredocs}
    paths: list[str] = []
    inline: list[SourceContent] = []
    for source in sources:
        doc = _heredoc_word(source)
        if doc is None:
            paths.append(source)
            continue
        data = contents.get(doc.name, "")
        inline.append(SourceContent(doc.name, chomp_heredoc_content(data) if doc.chomp else data, doc.expand))
    return tuple(paths), dest, tuple(inline)


def _check_two_args(node: Node, name: str) -> None:
    if len(node.args) < 2:
        raise DockerfileError(
            f"{name} requires at least two arguments, but only one was provided. "
            "Destination could not be determined"
        )


def _parse_copy(node: Node) -> CopyCommand:
    _check_two_args(node, "COPY")
    flags = _flags(
        node, strings_flag("exclude"), bool_flag("parents"), string_flag("chown"), string_flag("from"),
        string_flag("chmod"), bool_flag("link"),
    )
    sources, dest, inline = _sources_and_dest(node, "COPY")
    chmod = _check_chmod(flags.string("chmod"))
    return CopyCommand(
        span=node.span, node=node, sources=sources, dest=dest, source_contents=inline,
        from_=flags.string("from"), chown=flags.string("chown"), chmod=chmod,
        link=flags.boolean("link"), parents=flags.boolean("parents"), excludes=flags.strings("exclude"),
    )


def _parse_add(node: Node) -> AddCommand:
    _check_two_args(node, "ADD")
    flags = _flags(
        node, strings_flag("exclude"), string_flag("chown"), string_flag("chmod"), bool_flag("link"),
        bool_flag("keep-git-dir"), string_flag("checksum"), bool_flag("unpack"),
    )
    sources, dest, inline = _sources_and_dest(node, "ADD")
    chmod = _check_chmod(flags.string("chmod"))
    unpack = flags.boolean("unpack") if flags.is_used("unpack") else None
    return AddCommand(
        span=node.span, node=node, sources=sources, dest=dest, source_contents=inline,
        chown=flags.string("chown"), chmod=chmod, link=flags.boolean("link"),
        keep_git_dir=flags.boolean("keep-git-dir"), checksum=flags.string("checksum"), unpack=unpack,
        excludes=flags.strings("exclude"),
    )


_SYMBOLIC_MODE = re.compile(r"[ugoa]*(?:[-+=](?:[rwxXst]*|[ugo]))+(?:,[ugoa]*(?:[-+=](?:[rwxXst]*|[ugo]))+)*")


def _check_chmod(value: str) -> str:
    """Validate a literal `--chmod`: octal up to 07777, or symbolic (`u+x,g-w`) as newer BuildKit allows.

    Values with `$` are checked by the planner after expansion.
    """
    if not value or "$" in value:
        return value
    if re.fullmatch(r"[0-7]+", value):
        if int(value, 8) <= 0o7777:
            return value
    elif _SYMBOLIC_MODE.fullmatch(value):
        return value
    raise DockerfileError(
        f"invalid chmod parameter: '{value}'. it should be octal string and between 0 and 07777 "
        "or a symbolic mode like u+x"
    )


# --- HEALTHCHECK --------------------------------------------------------------------------------


def _parse_healthcheck(node: Node) -> HealthcheckCommand:
    _at_least_one(node, "HEALTHCHECK")
    kind = node.args[0].upper()
    rest = node.args[1:]
    if kind == "NONE":
        if rest:
            raise DockerfileError("HEALTHCHECK NONE takes no arguments")
        _flags(node)
        return HealthcheckCommand(span=node.span, node=node, test=("NONE",))
    names = ("interval", "timeout", "start-period", "start-interval", "retries")
    flags = _flags(node, *(string_flag(name) for name in names))
    if kind != "CMD":
        raise DockerfileError(f"Unknown type {_go_quote(kind)} in HEALTHCHECK (try CMD)")
    cmd = _json_args(rest, node.json)
    if not cmd:
        raise DockerfileError("Missing command after HEALTHCHECK CMD")
    test = ("CMD" if node.json else "CMD-SHELL", *cmd)
    durations = [_interval(name, flags.string(name)) for name in names[:4]]
    return HealthcheckCommand(
        span=node.span, node=node, test=test, interval=durations[0], timeout=durations[1],
        start_period=durations[2], start_interval=durations[3], retries=_retries(flags.string("retries")),
    )


def _interval(name: str, value: str) -> int:
    """Nanoseconds of a HEALTHCHECK duration flag; 0 when unset; non-zero values must be >= 1ms."""
    if not value:
        return 0
    nanos = parse_duration(value)
    if nanos != 0 and nanos < MILLISECOND:
        raise DockerfileError(f"Interval {_go_quote(name)} cannot be less than 1ms")
    return nanos


def _retries(value: str) -> int:
    if not value:
        return 0
    if not re.fullmatch(r"[+-]?[0-9]+", value):
        raise DockerfileError(f"strconv.ParseInt: parsing {_go_quote(value)}: invalid syntax")
    retries = int(value)
    if not -(1 << 31) <= retries < (1 << 31):
        raise DockerfileError(f"strconv.ParseInt: parsing {_go_quote(value)}: value out of range")
    if retries < 0:
        raise DockerfileError(f"--retries cannot be negative ({retries})")
    return retries


# --- ONBUILD ------------------------------------------------------------------------------------


def _parse_onbuild(node: Node) -> OnbuildCommand:
    if not node.args and node.inner is None:
        raise DockerfileError("ONBUILD requires at least one argument")
    _flags(node)
    keyword = node.inner.keyword if node.inner is not None else node.args[0]
    trigger_name = keyword.strip().upper()
    if trigger_name == "ONBUILD":
        raise DockerfileError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger_name in ("MAINTAINER", "FROM"):
        raise DockerfileError(f"{trigger_name} isn't allowed as an ONBUILD trigger")
    heredocs = node.heredocs or (node.inner.heredocs if node.inner is not None else ())
    expression = re.sub(r"(?i)^\s*ONBUILD\s*", "", _without_bodies(node.original, heredocs), count=1)
    for doc in heredocs:
        expression += "\n" + doc.content + doc.name
    trigger = _parse(node.inner) if node.inner is not None else None
    return OnbuildCommand(span=node.span, node=node, expression=expression, trigger=trigger)


def _without_bodies(original: str, heredocs: Sequence[Heredoc]) -> str:
    """`original` without trailing heredoc bodies and terminators, when it has them.

    BuildKit's `Node.Original` is only the instruction line; a parser that keeps the bodies in it
    gets them trimmed here, so the ONBUILD expression has each body exactly once.
    """
    text = original
    for doc in reversed(heredocs):
        head, _, last = text.rstrip("\n").rpartition("\n")
        terminator = last.lstrip("\t") if doc.chomp else last
        if terminator != doc.name or not (head + "\n").endswith("\n" + doc.content):
            return original
        text = (head + "\n")[: len(head) + 1 - len(doc.content)].rstrip("\n")
    return text


def _go_quote(value: str) -> str:
    """Quote like Go's `%q` for the plain strings that appear in these messages."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_PARSERS: dict[str, Callable[[Node], Command]] = {
    "add": _parse_add,
    "arg": _parse_arg,
    "cmd": _parse_cmd,
    "copy": _parse_copy,
    "entrypoint": _parse_entrypoint,
    "env": _parse_env,
    "expose": _parse_expose,
    "from": _parse_from,
    "healthcheck": _parse_healthcheck,
    "label": _parse_label,
    "maintainer": _parse_maintainer,
    "onbuild": _parse_onbuild,
    "run": _parse_run,
    "shell": _parse_shell,
    "stopsignal": _parse_stopsignal,
    "user": _parse_user,
    "volume": _parse_volume,
    "workdir": _parse_workdir,
}
