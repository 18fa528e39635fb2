"""A RUN instruction → the process the executor starts (BuildKit's `dispatchRun`, argv/env/heredoc part).

`process_for_run(cmd, shell=..., env=..., build_args=..., user=..., workdir=..., scratch_dir=...)` returns a
`RunProcess`: the `ProcessSpec` plus the extra `HostMount`s the step needs (today only the `/dev/pipes/<name>`
file of a shebang heredoc). `--mount`, `--network` and `--security` are not handled here (see `mounts.py`).

argv, as BuildKit builds it:
- exec form (`RUN ["a", "b"]`): the elements as written; no shell.
- shell form: SHELL (default `/bin/sh -c`) + the command line as one string.
- heredocs (shell form only; BuildKit calls anything else "an invalid run command"):
  - the command is exactly one heredoc opener (`RUN <<EOF`, `RUN <<-EOF`, `RUN 3<<"EOF"`):
    - body starts with `#!` (tested before `<<-` strips tabs, as BuildKit does): the body (tabs stripped for `<<-`) is written to a mode-0755 file and mounted
      read-only at `/dev/pipes/<name>`; argv is that one path, *without* SHELL, so the kernel runs the
      interpreter named on the shebang line (BuildKit does the same, except on Windows images).
    - otherwise: SHELL + [body] (tabs stripped for `<<-`): a "fake" heredoc that works with shells
      that have none.
  - anything else (`RUN <<EOF python3`, `RUN cat <<A <<B`, ...): the command is reconstituted as
    `cmd_line + "\\n" + data + name` for each file, in order, and handed to SHELL, which then does the
    heredoc redirections itself (and the `<<-` tab stripping, so data is *not* chomped here).

Heredoc expansion: none here, and none by the caller either. BuildKit's RUN never expands heredoc bodies in
the frontend (its code: "we ignore the expand option"): for a plain or complex heredoc the shell sees `$VAR`
and expands it at run time with the step's environment -- and for a complex heredoc the shell honours the
quoting of `<<'EOF'` itself, so quoted stays literal. A shebang file is written verbatim. (COPY/ADD heredocs
are different: the frontend expands those when the name is unquoted.)

Environment and its precedence. BuildKit keeps *one* ordered env per stage (the llb state's env): it starts
as the base image's config env; `ENV k=v` and `ARG k[=v]` (when the arg has a value: a `--build-arg`, else
its default, else a global ARG's value) both call `AddEnv`, which replaces an existing key in place or
appends. So the later instruction wins, and RUN sees that env. Only ENV also goes into the image config,
which is why build args reach RUN without being persisted. In the usual layout
(`ARG X` then `ENV X=...`) ENV wins; BuildKit also lets a later `ARG X` (with a value) win over an earlier
`ENV X` -- the Docker docs' "ENV always overrides ARG" describes the classic builder.

This function takes the stage's ENV list and the build args in scope separately and applies the
documented rule: a build arg is added only when no ENV entry has its name (ENV wins); build args come after
the ENV entries, in mapping order. A caller that wants BuildKit's instruction-order rule exactly keeps one
ordered env the way BuildKit does (ENV and valued ARG both set, later wins) and passes it as `env` with no
`build_args`. `PATH` is set to `spec.DEFAULT_PATH` (first) when neither provides it; the executor would add
the same, but the ProcessSpec then says what runs. Args whose BuildKit counterpart never reaches the env
(`BUILDKIT_SBOM_SCAN_CONTEXT`, `BUILDKIT_SBOM_SCAN_STAGE`) are dropped.

User and working directory are passed through as given (USER is resolved inside the rootfs by the
executor; WORKDIR is already absolute).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from pybuild.dockerfile.commands import RunCommand
from pybuild.dockerfile.heredoc import chomp_heredoc_content, parse_heredoc
from pybuild.errors import DockerfileError, InternalError
from pybuild.record import record
from pybuild.worker.spec import DEFAULT_PATH
from pybuild.worker.types import HostMount, ProcessSpec

DEFAULT_SHELL: tuple[str, ...] = ("/bin/sh", "-c")
PIPES_DIR = "/dev/pipes"
"""Where a shebang heredoc's file is mounted (BuildKit's `destPath`)."""

NON_ENV_ARGS = frozenset({"BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"})
"""Build args BuildKit never puts into the environment (its `nonEnvArgs`)."""


@record(kw_only=True)
class RunProcess:
    """What a RUN step runs: the process and the mounts it needs besides the step's `--mount`s."""

    process: ProcessSpec
    mounts: tuple[HostMount, ...] = ()


def process_for_run(
    cmd: RunCommand,
    *,
    shell: tuple[str, ...] = DEFAULT_SHELL,
    env: Sequence[str] = (),
    build_args: Mapping[str, str] = {},  # noqa: B006 - read only
    user: str = "",
    workdir: str = "/",
    scratch_dir: str,
) -> RunProcess:
    """The process (and extra mounts) for `cmd` (see the module docstring for every rule).

    `shell` is the stage's SHELL; `env` its ENV as `K=V` strings in order; `build_args` the build args in
    scope with their values; `scratch_dir` an existing host directory owned by the step, where a shebang
    heredoc's file is written (the caller removes it after the step).
    Raises DockerfileError for a heredoc name that cannot be a file name, InternalError for heredocs on an
    exec-form or multi-word command line (the parser never makes those).
    """
    args: tuple[str, ...]
    mounts: tuple[HostMount, ...] = ()
    if cmd.files:
        if len(cmd.cmd_line) != 1 or not cmd.prepend_shell:
            raise InternalError(f"parsing produced an invalid run command: {list(cmd.cmd_line)}", span=cmd.span)
        line = cmd.cmd_line[0]
        first = cmd.files[0]
        if parse_heredoc(line) is not None:
            data = chomp_heredoc_content(first.data) if first.chomp else first.data
            if first.data.startswith("#!"):  # BuildKit tests the raw data: `<<-` + tab + `#!` is no script
                mount = _write_script(cmd, first.name, data, scratch_dir)
                mounts = (mount,)
                args = (mount.destination,)
            else:
                args = (*shell, data)
        else:
            full = line
            for file in cmd.files:
                full += "\n" + file.data + file.name
            args = (*shell, full)
    elif cmd.prepend_shell:
        args = (*shell, " ".join(cmd.cmd_line))
    else:
        args = tuple(cmd.cmd_line)
    process = ProcessSpec(args=args, env=run_env(env, build_args), user=user, cwd=workdir)
    return RunProcess(process=process, mounts=mounts)


def run_env(env: Sequence[str], build_args: Mapping[str, str] = {}) -> tuple[str, ...]:  # noqa: B006
    """The environment a RUN sees: ENV, then build args no ENV names, with PATH defaulted (first)."""
    names = {item.partition("=")[0] for item in env}
    out = list(env)
    for key, value in build_args.items():
        if key in names or key in NON_ENV_ARGS:
            continue
        names.add(key)
        out.append(f"{key}={value}")
    if "PATH" not in names:
        out.insert(0, f"PATH={DEFAULT_PATH}")
    return tuple(out)


def _write_script(cmd: RunCommand, name: str, data: str, scratch_dir: str) -> HostMount:
    """Write a shebang heredoc as an executable file in `scratch_dir`; the read-only mount that shows it."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise DockerfileError(f"invalid heredoc name for a script: {name!r}", span=cmd.span)
    host = os.path.join(scratch_dir, name)
    fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o755)
    with os.fdopen(fd, "wb") as out:
        out.write(data.encode("utf-8", "surrogateescape"))
    os.chmod(host, 0o755)  # the umask may have taken bits off; BuildKit's Mkfile mode is exact
    return HostMount(destination=f"{PIPES_DIR}/{name}", source=host, options=("rbind", "ro"))
