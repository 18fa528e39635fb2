"""Typed stages → `Plan`: BuildKit's Dockerfile-to-LLB conversion (`dockerfile2llb`), for pybuild's ops.

`convert()` is the planner's one entry point; `pybuild.api` calls it after `to_stages`, the solver reads
the Plan. Stages are converted on demand, starting at the target: a stage is converted only when the
target needs it (FROM chains, `COPY --from`, `RUN --mount=from=`), so a broken stage the target does not
need cannot fail the build, and its ARGs do not count as consumed.

Expansion follows BuildKit: FROM names, platforms and `COPY --from` see the global ARGs; every other
value (ENV, LABEL, WORKDIR, USER, COPY/ADD paths and flags, EXPOSE, VOLUME, STOPSIGNAL, mount values) sees
the stage's ARGs and ENV; RUN, CMD and ENTRYPOINT text is left to the shell.

Departures, on purpose: one `ContextSourceOp` per COPY/ADD/bind mount (its patterns), rather than one
local source for the whole build, so a COPY's op digest names only the files it reads; the exporter owns
the real `created` time when SOURCE_DATE_EPOCH is not set (the plan leaves it None).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Mapping

from pybuild.digest import sha256_digest
from pybuild.dockerfile.commands import (
    AddCommand,
    ArgCommand,
    Command,
    CopyCommand,
    RunCommand,
    WorkdirCommand,
)
from pybuild.dockerfile.heredoc import chomp_heredoc_content, parse_heredoc
from pybuild.dockerfile.instructions import Stage, Stages, parse_instruction
from pybuild.dockerfile.mounts import Mount, parse_mount
from pybuild.dockerfile.shell import Lexer
from pybuild.errors import ConfigError, DockerfileError, InternalError, at
from pybuild.image.config import ContainerConfig, ImageConfig
from pybuild.image.spec import Platform, format_rfc3339, host_platform, parse_platform, source_date_epoch
from pybuild.plan.convert_args import PROXY_ARGS, Budget, platform_args, resolve_meta_args
from pybuild.plan.convert_config import (
    DEFAULT_PATH,
    StageState,
    apply_metadata,
    check_path,
    from_store,
    resolve_workdir,
)
from pybuild.plan.ops import (
    ContextSourceOp,
    ExecOp,
    FileOp,
    FileSource,
    ImageSourceOp,
    MountSpec,
    Op,
    Plan,
    ScratchOp,
    merge_spans,
)
from pybuild.record import replace
from pybuild.source import Span

__all__ = ["BaseConfigs", "convert"]

BaseConfigs = Callable[[str], ImageConfig | None]
"""Looks up a base image's config in the local store by reference (None: unknown / not stored)."""

_URL = re.compile(r"^(?:https?://|git@|git://)")


def convert(stages: Stages, *, build_args: Mapping[str, str], target: str | None, platform: Platform,
            base_configs: BaseConfigs, build_platform: Platform | None = None, escape: str = "\\",
            epoch: int | None = None) -> Plan:
    """Plan the build of `target` (the last stage when None) for `platform`.

    `build_platform` defaults to this machine; `escape` is the Dockerfile's escape directive; `epoch` is
    SOURCE_DATE_EPOCH (a `SOURCE_DATE_EPOCH` build arg wins, as in BuildKit). DockerfileError on bad input.
    """
    if not stages.stages:
        raise DockerfileError("the Dockerfile has no build stage")
    if "SOURCE_DATE_EPOCH" in build_args:
        epoch = source_date_epoch({"SOURCE_DATE_EPOCH": build_args["SOURCE_DATE_EPOCH"]})
    converter = _Converter(stages, build_args, platform, build_platform or host_platform(), base_configs,
                           Lexer(escape), None if epoch is None else format_rfc3339(epoch))
    return converter.run(_target_stage(stages, target))


def _target_stage(stages: Stages, target: str | None) -> Stage:
    if not target:
        return stages.stages[-1]
    for stage in reversed(stages.stages):
        if stage.name == target.lower():
            return stage
    raise DockerfileError(f'target stage "{target}" could not be found')


def _stage_key(stage: Stage) -> str:
    return stage.name if stage.name is not None else str(stage.index)


class _Converter:
    """One conversion: the ops so far, the converted stages, the consumed build args."""

    def __init__(self, stages: Stages, build_args: Mapping[str, str], platform: Platform, build: Platform,
                 base_configs: BaseConfigs, lexer: Lexer, created: str | None) -> None:
        self.stages = stages
        self.build_args = build_args
        self.platform = platform
        self.base_configs = base_configs
        self.lexer = lexer
        self.created = created
        self.budget = Budget()
        self.meta = resolve_meta_args(stages.meta_args, build_args, platform_args(platform, build), lexer,
                                      self.budget)
        self.consumed = {arg.key for command in stages.meta_args for arg in command.args}
        self.consumed.add("SOURCE_DATE_EPOCH")
        self.ops: dict[str, Op] = {}
        self.done: dict[int, StageState] = {}
        self.active: set[int] = set()

    def run(self, target: Stage) -> Plan:
        state = self.stage(target)
        unused = sorted(k for k in self.build_args if k not in self.consumed and k not in PROXY_ARGS)
        warning = f"[Warning] One or more build-args [{' '.join(unused)}] were not consumed"
        warnings = (warning,) if unused else ()
        planned = {_stage_key(self.stages.stages[i]): s.op for i, s in sorted(self.done.items())}
        return Plan(ops=dict(self.ops), target=state.op, stages=planned, layers=tuple(state.layers),
                    image=state.image(), warnings=warnings)

    def add(self, op: Op) -> str:
        """Add `op` (or merge its spans into the identical op already there); return its digest."""
        data = op.encoded()
        self.budget.charge(len(data))
        digest = sha256_digest(data)
        known = self.ops.get(digest)
        self.ops[digest] = op if known is None else merge_spans(known, op.spans)
        return digest

    # -- stages ---------------------------------------------------------------------------------
    def stage(self, stage: Stage) -> StageState:
        """The converted `stage`, converting it (and what it needs) the first time."""
        if stage.index in self.done:
            return self.done[stage.index]
        if stage.index in self.active:
            raise DockerfileError(f"circular dependency detected on stage: {_stage_key(stage)}")
        self.active.add(stage.index)
        try:
            with at(stage.span):
                state = self.start(stage)
            for command in self.triggers(state, stage) + stage.commands:
                with at(command.span):
                    self.dispatch(state, command)
        finally:
            self.active.discard(stage.index)
        self.done[stage.index] = state
        return state

    def start(self, stage: Stage) -> StageState:
        base_name = self.lexer.process_word(stage.base_name, self.meta)
        if not base_name:
            raise DockerfileError(f"base name ({stage.base_name}) should not be blank")
        platform = self.platform
        if stage.platform:
            text = self.lexer.process_word(stage.platform, self.meta)
            try:
                platform = parse_platform(text)
            except ConfigError as exc:
                raise DockerfileError(f"failed to parse platform {text}: {exc.message}") from None
        parent = self.stages.refers_to_stage(base_name, stage.index)
        if parent is not None:
            base_state = self.stage(parent)
            return StageState(base_state.op, base_state.image(), platform, self.lexer, self.created,
                              self.budget)
        if base_name == "scratch":
            empty = ImageConfig(architecture=platform.architecture, os=platform.os, variant=platform.variant,
                                config=ContainerConfig(env=(f"PATH={DEFAULT_PATH}",)))
            return StageState(self.add(ScratchOp(spans=(stage.span,))), empty, platform, self.lexer,
                              self.created, self.budget)
        op = self.add(ImageSourceOp(ref=base_name, platform=str(platform), spans=(stage.span,)))
        stored = self.base_configs(base_name)
        config = from_store(stored) if stored is not None else ImageConfig(
            architecture=platform.architecture, os=platform.os, variant=platform.variant)
        return StageState(op, config, platform, self.lexer, self.created, self.budget)

    def triggers(self, state: StageState, stage: Stage) -> tuple[Command, ...]:
        """The base's ONBUILD triggers, parsed, located at the FROM line (they run first; not inherited)."""
        from pybuild.dockerfile.parser import parse  # only when a base has triggers

        commands: list[Command] = []
        for expression in state.base.config.on_build:
            for node in parse(expression, "ONBUILD").nodes:
                commands.append(replace(parse_instruction(node), span=stage.span))
        return tuple(commands)

    def source_of(self, ref: str, state: StageState, span: Span) -> tuple[str, str]:
        """The op digest `COPY --from=ref` / `--mount=from=ref` reads (a stage's result or an image), and
        `ref` expanded (what messages call it)."""
        name = self.lexer.process_word(ref, self.meta)
        other = self.stages.stage_by_name_or_index(name)
        if other is not None:
            return self.stage(other).op, name
        return self.add(ImageSourceOp(ref=name, platform=str(state.platform), spans=(span,))), name

    # -- instructions ---------------------------------------------------------------------------
    def dispatch(self, state: StageState, command: Command) -> None:
        if isinstance(command, ArgCommand):
            words = state.scope.declare(command, self.build_args, self.meta, self.lexer)
            self.consumed.update(arg.key for arg in command.args)
            state.commit("ARG " + " ".join(words))
        elif isinstance(command, RunCommand):
            self.run_op(state, command)
        elif isinstance(command, CopyCommand | AddCommand):
            self.copy_op(state, command)
        elif isinstance(command, WorkdirCommand):
            state.workdir = resolve_workdir(state, command.path)
            op = FileOp(input=state.op, action="mkdir-workdir", dest=state.workdir, user=state.user,
                        spans=(command.span,))
            state.commit("WORKDIR " + state.workdir, layer_op=self.add(op))
        elif not apply_metadata(state, command):
            raise DockerfileError(f"unexpected instruction in a stage: {type(command).__name__}")

    def run_op(self, state: StageState, command: RunCommand) -> None:
        # argv as BuildKit's dispatchRun builds it. Heredoc bodies are never expanded here: the shell
        # expands them at run time (a shebang file is written verbatim).
        args, script = command.cmd_line, ""
        if command.files:
            if len(args) != 1 or not command.prepend_shell:
                raise InternalError(f"parsing produced an invalid run command: {list(args)}")
            first = command.files[0]
            if parse_heredoc(args[0]) is None:
                # `RUN <<EOF python3`, `RUN cat <<A <<B`: the line and every body go to SHELL, which does
                # the redirections (and the `<<-` tab stripping) itself.
                args = state.run_shell + (args[0] + "".join(f"\n{f.data}{f.name}" for f in command.files),)
            elif first.data.startswith("#!") and state.platform.os != "windows":
                # One heredoc that is the whole command and starts with `#!` (tested before `<<-` strips
                # tabs, as BuildKit does): a mode-0755 file at /dev/pipes/<name>, run without SHELL.
                if first.name in ("", ".", "..") or "/" in first.name or "\0" in first.name:
                    raise DockerfileError(f"invalid heredoc name for a script: {first.name!r}")
                args = ("/dev/pipes/" + first.name,)
                script = chomp_heredoc_content(first.data) if first.chomp else first.data
            else:  # one heredoc, no shebang: SHELL + body (a "fake" heredoc, for shells without them)
                args = state.run_shell + (chomp_heredoc_content(first.data) if first.chomp else first.data,)
        elif command.prepend_shell:
            args = state.run_shell + (" ".join(args),)
        env, names = state.scope.run_env()
        if not any(entry.startswith("PATH=") for entry in env):
            env.append(f"PATH={DEFAULT_PATH}")
        proxies = tuple(f"{k}={v}" for k, v in sorted(self.build_args.items()) if k in PROXY_ARGS)
        mounts = tuple(self.mount_spec(state, mount, command.span) for mount in command.mounts)
        op = ExecOp(input=state.op, args=args, env=tuple(env), user=state.user, cwd=state.cwd,
                    network=command.network, security=command.security, mounts=mounts,
                    build_args=tuple(names), script=script, platform=str(state.platform), proxy_env=proxies,
                    spans=(command.span,))
        history_args = state.scope.history_args()
        prefix = f"|{len(history_args)} {' '.join(history_args)} " if history_args else ""
        state.commit("RUN " + prefix + " ".join(args) + " # buildkit", layer_op=self.add(op))

    def mount_spec(self, state: StageState, raw: Mount, span: Span) -> MountSpec:
        mount = parse_mount(raw.spec, state.expand)
        source_input = from_ref = ""
        if mount.from_:
            source_input, from_ref = self.source_of(mount.from_, state, span)
        elif mount.type == "bind":
            includes = (mount.source,) if mount.source not in ("", ".", "/") else ()
            source_input = self.add(ContextSourceOp(includes=includes, spans=(span,)))
        target, ident, sharing = mount.target, mount.id, mount.sharing
        if mount.type == "cache":
            ident, sharing = ident or target, sharing or "shared"
        elif mount.type == "secret":
            ident = ident or mount.source or posixpath.basename(target)
            target = target or ("" if mount.env is not None else "/run/secrets/" + ident)
        elif mount.type == "ssh":
            ident = ident or "default"
            target = target or "/run/buildkit/ssh_agent.0"
        if target and not target.startswith("/"):
            target = posixpath.join(state.cwd, target)
        check_path(target, "mount target")
        check_path(mount.source, "mount source")
        return MountSpec(type=mount.type, target=target, input=source_input, source=mount.source,
                         readonly=mount.readonly, id=ident, sharing=sharing, required=mount.required,
                         size=mount.size, mode=mount.mode, uid=mount.uid, gid=mount.gid, env=mount.env,
                         from_ref=from_ref)

    def copy_op(self, state: StageState, command: CopyCommand | AddCommand) -> None:
        is_add = isinstance(command, AddCommand)
        name = "ADD" if is_add else "COPY"
        paths = [check_path(state.expand(path), f"{name} source") for path in command.sources]
        raw_dest = check_path(state.expand(command.dest), f"{name} destination")
        contents = tuple((check_path(c.path, f"{name} heredoc"),
                          state.expand_heredoc(c.data) if c.expand else c.data) for c in command.source_contents)
        urls = tuple(p for p in paths if is_add and _URL.match(p))
        local = tuple(p for p in paths if p not in urls)
        source: FileSource | None = None
        from_ref = command.from_ if isinstance(command, CopyCommand) else ""
        if from_ref:
            source_input, written = self.source_of(from_ref, state, command.span)
            source = FileSource(input=source_input, paths=local, from_ref=written)
        elif local:
            context = ContextSourceOp(includes=local, excludes=command.excludes, spans=(command.span,))
            source = FileSource(input=self.add(context), paths=local)
        op = FileOp(
            input=state.op, action="add" if is_add else "copy", dest=_dest_path(state.cwd, raw_dest),
            source=source, contents=contents, urls=urls, chown=state.expand(command.chown),
            chmod=state.expand(command.chmod), link=command.link,
            parents=isinstance(command, CopyCommand) and command.parents, excludes=command.excludes,
            checksum=state.expand(command.checksum) if isinstance(command, AddCommand) else "",
            keep_git_dir=isinstance(command, AddCommand) and command.keep_git_dir,
            unpack=command.unpack if isinstance(command, AddCommand) else None, cwd=state.cwd,
            user=state.user, spans=(command.span,),
        )
        words = [*paths, *(f"<<{path}" for path, _ in contents)]
        state.commit(f"{name} {' '.join(words)} {raw_dest} # buildkit", layer_op=self.add(op))


def _dest_path(cwd: str, dest: str) -> str:
    """COPY's destination made absolute against the workdir, keeping a trailing `/` (BuildKit)."""
    if dest.startswith("/"):
        return dest
    joined = posixpath.normpath(posixpath.join(cwd, dest))
    if dest.endswith("/") or dest == ".":
        joined = joined.rstrip("/") + "/"
    return joined
