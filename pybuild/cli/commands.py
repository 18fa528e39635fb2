"""The handlers behind each subcommand. Each returns an exit code; errors propagate to `main`."""

from __future__ import annotations

import argparse
import json
import os
import sys

from pybuild.cli.render import render_diagnostic
from pybuild.errors import ConfigError


def read_dockerfile(path: str) -> tuple[bytes, str]:
    """Read a Dockerfile (`-` is standard input); return its bytes and the name errors show for it."""
    if path == "-":
        return sys.stdin.buffer.read(), "Dockerfile"
    try:
        with open(path, "rb") as handle:
            return handle.read(), path
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a Dockerfile") from None
    except OSError as exc:
        raise ConfigError(f"cannot read Dockerfile {path}: {exc.strerror or exc}") from None


def cmd_parse(args: argparse.Namespace) -> int:
    """`pybuild parse [--dump|--json] FILE`: the AST layer only (unknown instructions are just nodes)."""
    from pybuild.dockerfile.parser import parse

    data, name = read_dockerfile(args.file)
    result = parse(data, name)
    if args.json:
        from pybuild.dockerfile.astjson import to_json

        sys.stdout.write(json.dumps(to_json(result), indent=2, ensure_ascii=False) + "\n")
    else:
        from pybuild.dockerfile.ast import dump

        sys.stdout.write(dump(result))
    for warning in result.warnings:
        print(render_diagnostic(warning), file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """`pybuild check [-f Dockerfile] [CONTEXT]`: parse, build typed stages, run the lint rules."""
    from pybuild.dockerfile.instructions import to_stages
    from pybuild.dockerfile.lint import lint
    from pybuild.dockerfile.parser import parse

    path = args.dockerfile or os.path.join(args.context, "Dockerfile")
    data, name = read_dockerfile(path)
    result = parse(data, name)
    stages = to_stages(result)
    report = lint(result)
    for warning in report.warnings:
        print(render_diagnostic(warning), file=sys.stderr)
    count = len(report.warnings)
    if report.failed:
        print(f"error: {name}: {count} warning(s), and the check directive makes them errors", file=sys.stderr)
        return 1
    summary = f"{count} warning(s) found" if count else "no warnings found"
    print(f"check complete: {len(stages.stages)} stage(s), {len(result.nodes)} instruction(s), {summary}")
    return 0
