"""ARG and ENV scoping for the converter, with BuildKit's rules (dockerfile2llb `dispatchArg`).

- Global ARGs (before the first FROM) are visible to FROM lines only; the automatic platform args
  (TARGETPLATFORM, BUILDARCH, ...) are global ARGs with values.
- Inside a stage an ARG is visible from its declaration on. `ARG x` without a default takes the build-arg
  value, else the global ARG's value; `ARG x=d` takes the build-arg value, else `d` expanded.
- ENV always overrides an ARG of the same name, in expansion and in a RUN's environment.
- The predefined proxy args are usable by RUN without an ARG and never enter a cache key.

`Budget` caps the text a plan may hold (`MAX_PLAN`, 128 MiB): op definitions (a RUN's argv and
environment, COPY heredocs, ...), history entries and global ARG values. One expanded word is capped at
1 MiB by the lexer (`shell.MAX_EXPANSION`), but a value that size copied into every later RUN's environment
and history would still grow with the number of lines; a Dockerfile that passes 128 MiB fails at the line
that did, with a one-line DockerfileError. Real Dockerfiles hold a few hundred KiB at most.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from pybuild.dockerfile.commands import ArgCommand
from pybuild.dockerfile.shell import Lexer
from pybuild.errors import DockerfileError, at
from pybuild.image.spec import Platform

__all__ = ["MAX_PLAN", "PROXY_ARGS", "Budget", "Scope", "platform_args", "resolve_meta_args"]

MAX_PLAN: Final = 128 << 20
"""Characters of definitions, history and global ARG values one plan may hold (see the module docstring)."""


class Budget:
    """The text a plan holds so far; DockerfileError once it passes `limit`."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int = MAX_PLAN) -> None:
        self.limit = limit
        self.used = 0

    def charge(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise DockerfileError(f"the build plan holds over {self.limit >> 20} MiB of commands, environments "
                                  "and history (pybuild's limit; a large variable used in every step?)")

PROXY_ARGS = frozenset({
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
    "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
})
"""Docker's predefined args: available without ARG, left out of history and cache keys."""


def platform_args(target: Platform, build: Platform) -> dict[str, str]:
    """The automatic platform ARGs (BuildKit's `buildPlatformOpt`)."""
    out: dict[str, str] = {}
    for prefix, value in (("BUILD", build), ("TARGET", target)):
        out[prefix + "PLATFORM"] = str(value)
        out[prefix + "OS"] = value.os
        out[prefix + "ARCH"] = value.architecture
        out[prefix + "VARIANT"] = value.variant or ""
    return out


def resolve_meta_args(meta_args: Iterable[ArgCommand], build_args: Mapping[str, str],
                      auto: Mapping[str, str], lexer: Lexer, budget: Budget | None = None) -> dict[str, str]:
    """Values of the global ARGs (plus `auto`): build-arg value, else the default expanded in order."""
    values = dict(auto)
    budget = budget or Budget()
    for command in meta_args:
        with at(command.span):
            for arg in command.args:
                if arg.key in build_args:
                    values[arg.key] = build_args[arg.key]
                elif arg.default is not None:
                    values[arg.key] = lexer.process_word(arg.default, values)
                    budget.charge(len(values[arg.key]))
    return values


class Scope:
    """The variables of one stage: its declared ARGs and its ENV (inherited from the base image)."""

    __slots__ = ("args", "declared", "env")

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env: dict[str, str] = dict(env)
        self.args: dict[str, str] = {}
        self.declared: list[str] = []

    def lookup(self) -> dict[str, str]:
        """What `$x` sees: ARGs with values, overridden by ENV."""
        return {**self.args, **self.env}

    def declare(self, command: ArgCommand, build_args: Mapping[str, str], meta: Mapping[str, str],
                lexer: Lexer) -> list[str]:
        """Apply an ARG instruction; return its history words (`k=v` or `k`)."""
        words = []
        for arg in command.args:
            value: str | None
            if arg.key in build_args:
                value = build_args[arg.key]
            elif arg.default is None:
                value = meta.get(arg.key)
            else:
                value = lexer.process_word(arg.default, self.lookup())
            if arg.key not in self.declared:
                self.declared.append(arg.key)
            if value is not None:
                self.args[arg.key] = value
            words.append(arg.key if value is None else f"{arg.key}={value}")
        return words

    def run_env(self) -> tuple[list[str], list[str]]:
        """A RUN's environment (ENV, then ARGs ENV does not set; no proxy args) and the ARG names in it."""
        env = [f"{key}={value}" for key, value in self.env.items()]
        names = [key for key in self.declared
                 if key in self.args and key not in self.env and key not in PROXY_ARGS]
        env.extend(f"{key}={self.args[key]}" for key in names)
        return env, names

    def history_args(self) -> list[str]:
        """`K=V` of the declared non-proxy ARGs, as BuildKit's `runCommandString` prefixes them."""
        return [f"{key}={self.env.get(key, self.args.get(key, ''))}"
                for key in self.declared if key not in PROXY_ARGS]
