"""Typed Dockerfile commands: one frozen dataclass per instruction (BuildKit's `instructions` types).

`pybuild.dockerfile.instructions` makes them from AST nodes; the planner (`plan/convert*`) reads them.
Values are raw: nothing is expanded here (BuildKit expands build args later, while converting), so ENV
values keep their quotes, paths keep their `$VARS`. Every command keeps its `span` and its `node`.
"""

from __future__ import annotations

from pybuild.dockerfile.ast import Node
from pybuild.dockerfile.mounts import Mount
from pybuild.record import record
from pybuild.source import Span


@record
class KeyValue:
    """One ENV or LABEL pair, as written (quotes kept; removed at expansion time)."""

    key: str
    value: str
    no_delim: bool = False
    """True for the legacy `ENV key value` form (no `=`)."""


@record
class ArgDef:
    """One name of an ARG instruction: its default (None when there is none) and its doc comment."""

    key: str
    default: str | None = None
    doc: str = ""


@record
class SourceContent:
    """An inline COPY/ADD source from a heredoc; `<<-` content already has its leading tabs removed."""

    path: str
    data: str
    expand: bool


@record
class ShellInlineFile:
    """A heredoc of RUN/CMD/ENTRYPOINT; data is raw, `chomp` says leading tabs are still to strip."""

    name: str
    data: str
    chomp: bool


@record(kw_only=True)
class FromCommand:
    """`FROM [--platform=p] base [AS name]`: starts a stage."""

    span: Span
    node: Node
    base_name: str
    stage_name: str | None
    """Lower-cased, as BuildKit stores it; None when the stage has no `AS name`."""
    platform: str
    doc: str = ""


@record(kw_only=True)
class RunCommand:
    """`RUN [--mount ...] [--network=n] [--security=s] cmd`."""

    span: Span
    node: Node
    cmd_line: tuple[str, ...]
    prepend_shell: bool
    """True for shell form: run `cmd_line[0]` through the stage's SHELL."""
    files: tuple[ShellInlineFile, ...] = ()
    mounts: tuple[Mount, ...] = ()
    network: str = "default"
    security: str = "sandbox"
    flags_used: tuple[str, ...] = ()


@record(kw_only=True)
class CmdCommand:
    """`CMD ["exec", "form"]` or `CMD shell form`."""

    span: Span
    node: Node
    cmd_line: tuple[str, ...]
    prepend_shell: bool
    files: tuple[ShellInlineFile, ...] = ()


@record(kw_only=True)
class EntrypointCommand:
    """`ENTRYPOINT ...`; `cmd_line` is None for `ENTRYPOINT []` (BuildKit resets it to nil)."""

    span: Span
    node: Node
    cmd_line: tuple[str, ...] | None
    prepend_shell: bool
    files: tuple[ShellInlineFile, ...] = ()


@record(kw_only=True)
class CopyCommand:
    """`COPY [--from ...] src... dest`."""

    span: Span
    node: Node
    sources: tuple[str, ...]
    dest: str
    source_contents: tuple[SourceContent, ...] = ()
    from_: str = ""
    chown: str = ""
    chmod: str = ""
    link: bool = False
    parents: bool = False
    excludes: tuple[str, ...] = ()


@record(kw_only=True)
class AddCommand:
    """`ADD [--checksum ...] src... dest`."""

    span: Span
    node: Node
    sources: tuple[str, ...]
    dest: str
    source_contents: tuple[SourceContent, ...] = ()
    chown: str = ""
    chmod: str = ""
    link: bool = False
    keep_git_dir: bool = False
    checksum: str = ""
    unpack: bool | None = None
    """None when `--unpack` was not given (archives from the context unpack, remote ones do not)."""
    excludes: tuple[str, ...] = ()


@record(kw_only=True)
class EnvCommand:
    span: Span
    node: Node
    env: tuple[KeyValue, ...]


@record(kw_only=True)
class ArgCommand:
    span: Span
    node: Node
    args: tuple[ArgDef, ...]


@record(kw_only=True)
class LabelCommand:
    span: Span
    node: Node
    labels: tuple[KeyValue, ...]


@record(kw_only=True)
class ExposeCommand:
    span: Span
    node: Node
    ports: tuple[str, ...]
    """Sorted as strings, as BuildKit does, and not yet expanded."""


@record(kw_only=True)
class VolumeCommand:
    span: Span
    node: Node
    volumes: tuple[str, ...]


@record(kw_only=True)
class UserCommand:
    span: Span
    node: Node
    user: str


@record(kw_only=True)
class WorkdirCommand:
    span: Span
    node: Node
    path: str


@record(kw_only=True)
class ShellCommand:
    span: Span
    node: Node
    shell: tuple[str, ...]


@record(kw_only=True)
class StopsignalCommand:
    span: Span
    node: Node
    signal: str


@record(kw_only=True)
class HealthcheckCommand:
    """`HEALTHCHECK NONE` (test `("NONE",)`) or `HEALTHCHECK [flags] CMD ...`.

    `test` is `("CMD", *exec_args)` for exec form and `("CMD-SHELL", "cmd line")` for shell form.
    Durations are nanoseconds; 0 means "not set, use the default".
    """

    span: Span
    node: Node
    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@record(kw_only=True)
class OnbuildCommand:
    """`ONBUILD <trigger>`; `expression` is the trigger's text as stored in the image config."""

    span: Span
    node: Node
    expression: str
    trigger: Command | None = None
    """The trigger parsed and validated now, so a bad trigger fails this build, not the child's."""


@record(kw_only=True)
class MaintainerCommand:
    span: Span
    node: Node
    maintainer: str


Command = (
    FromCommand | RunCommand | CmdCommand | EntrypointCommand | CopyCommand | AddCommand | EnvCommand
    | ArgCommand | LabelCommand | ExposeCommand | VolumeCommand | UserCommand | WorkdirCommand
    | ShellCommand | StopsignalCommand | HealthcheckCommand | OnbuildCommand | MaintainerCommand
)
"""Any typed instruction. `FromCommand` only appears from `parse_instruction`; stages hold the rest."""
