"""Metadata-only instructions: ENV, LABEL, USER, EXPOSE, VOLUME, CMD, ENTRYPOINT, ... → image config.

`StageState` is the converter's mutable view of one stage: its current op, its image config fields, its
history and its variables. `apply_metadata` handles every instruction that changes only the config; each
(but ONBUILD, which BuildKit does not record) adds a history entry with `empty_layer: true` whose
`created_by` is worded like current BuildKit's (dockerfile2llb `commitToHistory`): Go `fmt` renderings
of the config values, which the `go_*` helpers below reproduce.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from typing import cast

from pybuild.dockerfile.ast import go_quote
from pybuild.dockerfile.commands import (
    CmdCommand,
    Command,
    EntrypointCommand,
    EnvCommand,
    ExposeCommand,
    HealthcheckCommand,
    LabelCommand,
    MaintainerCommand,
    OnbuildCommand,
    ShellCommand,
    StopsignalCommand,
    UserCommand,
    VolumeCommand,
)
from pybuild.dockerfile.shell import Lexer
from pybuild.errors import DockerfileError
from pybuild.image.config import ContainerConfig, Healthcheck, History, ImageConfig
from pybuild.image.spec import Platform
from pybuild.plan.convert_args import Budget, Scope
from pybuild.record import replace

__all__ = ["DEFAULT_PATH", "DEFAULT_SHELL", "StageState", "apply_metadata", "check_path", "from_store",
           "go_duration", "go_healthcheck", "go_list", "go_words"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHELL = ("/bin/sh", "-c")


def go_list(items: tuple[str, ...] | list[str]) -> str:
    """Go's `%q` of a []string: `["a" "b"]`, as BuildKit writes CMD/ENTRYPOINT history."""
    return "[" + " ".join(go_quote(item) for item in items) + "]"


def go_words(items: tuple[str, ...] | list[str]) -> str:
    """Go's `%v` of a []string: `[a b]`, as BuildKit writes SHELL history (no quoting at all)."""
    return "[" + " ".join(items) + "]"


def _go_frac(value: int, prec: int) -> tuple[str, int]:
    """Go's `fmtFrac`: the fraction of value/10**prec (".5", trailing zeros and an empty "." dropped)."""
    digits: list[str] = []
    printed = False
    for _ in range(prec):
        digit = value % 10
        printed = printed or digit != 0
        if printed:
            digits.append(str(digit))
        value //= 10
    return ("." + "".join(reversed(digits)) if printed else ""), value


def go_duration(nanos: int) -> str:
    """Go's `time.Duration.String()`: `1m30s`, `0s`, `1.5s`, `500ms`, `2h0m0s`, `1µs`, `-3ns`."""
    neg = nanos < 0
    u = -nanos if neg else nanos
    if u < 1_000_000_000:
        if u == 0:
            return "0s"
        if u < 1_000:
            prec, unit = 0, "ns"
        elif u < 1_000_000:
            prec, unit = 3, "\u00b5s"
        else:
            prec, unit = 6, "ms"
        frac, u = _go_frac(u, prec)
        text = f"{u}{frac}{unit}"
    else:
        frac, u = _go_frac(u, 9)
        text = f"{u % 60}{frac}s"
        u //= 60
        if u > 0:
            text = f"{u % 60}m{text}"
            u //= 60
            if u > 0:
                text = f"{u}h{text}"
    return "-" + text if neg else text


def go_healthcheck(health: Healthcheck) -> str:
    """Go's `%+v` of a `dockerspec.HealthcheckConfig`, as current BuildKit writes HEALTHCHECK history:
    `{Test:[CMD /bin/true] Interval:30s Timeout:5s StartPeriod:10s StartInterval:0s Retries:4}`
    (its convert_test.go's TestDispatchHealthcheckHistory; v0.8 wrote `%q` of a pointer instead)."""
    return (f"{{Test:{go_words(health.test)} Interval:{go_duration(health.interval)} "
            f"Timeout:{go_duration(health.timeout)} StartPeriod:{go_duration(health.start_period)} "
            f"StartInterval:{go_duration(health.start_interval)} Retries:{health.retries}}}")


class StageState:
    """One stage while it is converted: made by `convert`, changed instruction by instruction."""

    def __init__(self, op: str, base: ImageConfig, platform: Platform, lexer: Lexer, created: str | None,
                 budget: Budget):
        cfg = base.config
        self.budget = budget
        self.op = op
        self.base = base
        self.platform = platform
        self.lexer = lexer
        self.created = created
        env = dict(entry.partition("=")[::2] for entry in cfg.env)
        if "PATH" not in env and platform.os != "windows":
            # BuildKit's dispatchStages: "make sure that PATH is always set" in the config (not on Windows)
            env["PATH"] = DEFAULT_PATH
        self.scope = Scope(env)
        self.user = cfg.user
        self.workdir = cfg.working_dir
        self.entrypoint = cfg.entrypoint
        self.cmd = cfg.cmd
        self.cmd_set = False
        self.args_escaped = cfg.args_escaped
        self.exposed = list(cfg.exposed_ports)
        self.volumes = list(cfg.volumes)
        self.labels = dict(cfg.labels)
        self.stop_signal = cfg.stop_signal
        self.healthcheck = cfg.healthcheck
        self.on_build: list[str] = []
        self.shell = cfg.shell
        self.author = base.author
        self.history: list[History] = []
        self.layers: list[str] = []

    # -- expansion ------------------------------------------------------------------------------
    def expand(self, word: str) -> str:
        return self.lexer.process_word(word, self.scope.lookup())

    def expand_words(self, word: str) -> list[str]:
        return self.lexer.process_words(word, self.scope.lookup())

    def expand_heredoc(self, data: str) -> str:
        """Expand a COPY heredoc body: variables only, quotes and escapes kept."""
        raw = Lexer(self.lexer.escape, raw_quotes=True, raw_escapes=True)
        return raw.process_word(data, self.scope.lookup())

    @property
    def run_shell(self) -> tuple[str, ...]:
        return self.shell or DEFAULT_SHELL

    @property
    def cwd(self) -> str:
        return self.workdir or "/"

    # -- results --------------------------------------------------------------------------------
    def commit(self, created_by: str, *, layer_op: str | None = None) -> None:
        """Add a history entry; with `layer_op` the step makes a layer (and becomes the current op)."""
        self.budget.charge(len(created_by))
        if layer_op is not None:
            self.op = layer_op
            self.layers.append(layer_op)
        self.history.append(History(created=self.created, created_by=created_by,
                                    comment="buildkit.dockerfile.v0", empty_layer=layer_op is None))

    def image(self) -> ImageConfig:
        """The stage's image config: the base's rootfs and history, then this stage's."""
        config = ContainerConfig(
            user=self.user, exposed_ports=tuple(self.exposed),
            env=tuple(f"{k}={v}" for k, v in self.scope.env.items()),
            entrypoint=self.entrypoint, cmd=self.cmd, volumes=tuple(self.volumes), working_dir=self.workdir,
            labels=tuple(self.labels.items()), stop_signal=self.stop_signal, healthcheck=self.healthcheck,
            on_build=tuple(self.on_build), shell=self.shell, args_escaped=self.args_escaped,
        )
        return ImageConfig(
            architecture=self.platform.architecture, os=self.platform.os, variant=self.platform.variant,
            created=self.created, author=self.author, config=config, rootfs=self.base.rootfs,
            history=self.base.history + tuple(self.history),
        )


# -- handlers -------------------------------------------------------------------------------------


def _env(state: StageState, command: EnvCommand) -> None:
    # All values see the environment from before the instruction: `ENV a=1 b=$a` uses the old `a`.
    pairs = [(state.expand(kv.key), state.expand(kv.value)) for kv in command.env]
    state.scope.env.update(pairs)
    state.commit("ENV " + " ".join(f"{k}={v}" for k, v in pairs))


def _label(state: StageState, command: LabelCommand) -> None:
    pairs = [(state.expand(kv.key), state.expand(kv.value)) for kv in command.labels]
    state.labels.update(pairs)
    state.commit("LABEL " + " ".join(f"{k}={v}" for k, v in pairs))


def _user(state: StageState, command: UserCommand) -> None:
    state.user = state.expand(command.user)
    state.commit("USER " + state.user)


_PORT = re.compile(r"(\d+)(?:-(\d+))?(?:/(tcp|udp|sctp))?", re.IGNORECASE)


def _expose(state: StageState, command: ExposeCommand) -> None:
    words = [word for port in command.ports for word in state.expand_words(port)]
    ports: set[str] = set()
    for word in words:
        match = _PORT.fullmatch(word)
        if match is None:
            raise DockerfileError(f"invalid containerPort: {word}")
        start = int(match.group(1))
        end = int(match.group(2) or start)
        proto = (match.group(3) or "tcp").lower()
        if end < start:
            raise DockerfileError(f"invalid range specified for port: {word}")
        ports.update(f"{port}/{proto}" for port in range(start, end + 1))
    state.exposed.extend(sorted(ports))
    # Current BuildKit (moby/buildkit#6218) writes Go's `%v` of the normalised port specs in the
    # instruction's order, which the parser sorted as BuildKit's does (v0.8 printed the port map)
    specs = [_port_spec(word) for word in words]
    state.commit("EXPOSE " + go_words(specs))


def _port_spec(word: str) -> str:
    """`80` → `80/tcp`, `53/UDP` → `53/udp`, `8000-8002` → `8000-8002/tcp` (already validated)."""
    port, _, proto = word.partition("/")
    return f"{port}/{(proto or 'tcp').lower()}"


def _volume(state: StageState, command: VolumeCommand) -> None:
    volumes = [state.expand(volume) for volume in command.volumes]
    if "" in volumes:
        raise DockerfileError("VOLUME specified can not be an empty string")
    state.volumes.extend(volumes)
    state.commit("VOLUME [" + " ".join(volumes) + "]")


def _stopsignal(state: StageState, command: StopsignalCommand) -> None:
    state.stop_signal = state.expand(command.signal)
    state.commit("STOPSIGNAL " + state.stop_signal)


def _cmd(state: StageState, command: CmdCommand) -> None:
    # BuildKit does not expand CMD: the shell (or nothing, in exec form) does at run time.
    args = state.run_shell + command.cmd_line if command.prepend_shell else command.cmd_line
    state.cmd = args
    state.cmd_set = True
    state.args_escaped = True  # BuildKit sets it for every CMD, exec form too (ENTRYPOINT leaves it)
    state.commit("CMD " + go_list(args))


def _entrypoint(state: StageState, command: EntrypointCommand) -> None:
    line = command.cmd_line or ()
    args = state.run_shell + line if command.prepend_shell and line else line
    state.entrypoint = args
    # Docker: ENTRYPOINT resets a CMD inherited from the base, not one set earlier in this stage.
    if not state.cmd_set:
        state.cmd = ()
    state.commit("ENTRYPOINT " + go_list(args))


def _healthcheck(state: StageState, command: HealthcheckCommand) -> None:
    state.healthcheck = Healthcheck(
        test=command.test, interval=command.interval, timeout=command.timeout,
        start_period=command.start_period, start_interval=command.start_interval, retries=command.retries,
    )
    state.commit("HEALTHCHECK " + go_healthcheck(state.healthcheck))


def _shell(state: StageState, command: ShellCommand) -> None:
    state.shell = command.shell
    state.commit("SHELL " + go_words(command.shell))


def _onbuild(state: StageState, command: OnbuildCommand) -> None:
    state.on_build.append(command.expression)  # no history entry: BuildKit's dispatchOnbuild commits none


def _maintainer(state: StageState, command: MaintainerCommand) -> None:
    state.author = command.maintainer
    state.commit("MAINTAINER " + command.maintainer)


# Keyed by command type; each handler takes exactly that type (hence the cast).
_HANDLERS = cast(dict[type, Callable[[StageState, object], None]], {
    EnvCommand: _env, LabelCommand: _label, UserCommand: _user,
    ExposeCommand: _expose, VolumeCommand: _volume, StopsignalCommand: _stopsignal,
    CmdCommand: _cmd, EntrypointCommand: _entrypoint, HealthcheckCommand: _healthcheck,
    ShellCommand: _shell, OnbuildCommand: _onbuild, MaintainerCommand: _maintainer,
})


def apply_metadata(state: StageState, command: Command) -> bool:
    """Apply `command` if it only changes the config; False when it is not a metadata instruction."""
    handler = _HANDLERS.get(type(command))
    if handler is None:
        return False
    handler(state, command)
    return True


_PATH_MAX = 4096  # Linux's PATH_MAX, in bytes
_SURROGATE = re.compile("[\ud800-\udfff]")


def from_store(config: ImageConfig) -> ImageConfig:
    """A base image's config as Go reads it: a lone surrogate in one of the values a step uses (env, user,
    workdir, shell, ONBUILD triggers) can only come from a JSON `\\udXXX` escape, which Go's decoder turns
    into U+FFFD. (Values from this Dockerfile keep theirs: they stand for bytes that are not UTF-8.)"""
    cfg = config.config
    if not any(_SURROGATE.search(text) for text in (*cfg.env, cfg.user, cfg.working_dir, *cfg.shell,
                                                     *cfg.on_build)):
        return config

    def fix(text: str) -> str:
        return _SURROGATE.sub("\ufffd", text)

    fixed = replace(cfg, env=tuple(map(fix, cfg.env)), user=fix(cfg.user), working_dir=fix(cfg.working_dir),
                    shell=tuple(map(fix, cfg.shell)), on_build=tuple(map(fix, cfg.on_build)))
    return replace(config, config=fixed)


def check_path(path: str, what: str) -> str:
    """`path` itself; DockerfileError if it holds a NUL byte, which no file name can, or is longer than
    PATH_MAX (the step would fail on it, or the OS call reading it; a huge wildcard pattern would cost
    seconds to compile and match)."""
    if "\0" in path:
        raise DockerfileError(f"{what} {go_quote(path)}: a path cannot hold a NUL byte")
    if len(path) > _PATH_MAX // 4 and len(path.encode("utf-8", "surrogatepass")) > _PATH_MAX:
        raise DockerfileError(f"{what} {go_quote(path[:40])}...: longer than {_PATH_MAX} bytes (PATH_MAX)")
    return path


def resolve_workdir(state: StageState, path: str) -> str:
    """WORKDIR's new directory: expanded, relative to the current one, cleaned (BuildKit)."""
    value = check_path(state.expand(path), "WORKDIR")
    return posixpath.normpath(posixpath.join(state.cwd, value)) if value else state.cwd
