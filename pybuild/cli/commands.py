"""The handlers behind each subcommand. Each returns an exit code; errors propagate to `main`."""

from __future__ import annotations

import argparse
import json
import os
import sys

from typing import TYPE_CHECKING

from pybuild.cli.render import render_diagnostic
from pybuild.errors import ConfigError

if TYPE_CHECKING:
    from pybuild.context.checksum import TreeChecksums
    from pybuild.context.context import BuildContext
    from pybuild.context.entry import Entry


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


def cmd_context(args: argparse.Namespace) -> int:
    """`pybuild context [-f Dockerfile] [--json] DIR`: the files a build can see, their sizes and checksums."""
    from pybuild.context.context import ContextHasher, list_files, open_context

    ctx = open_context(args.context, args.dockerfile, require_dockerfile=args.dockerfile is not None)
    listing = list_files(ctx)
    with ContextHasher(ctx) as hasher:
        sums = hasher.checksum(listing)
    for warning in listing.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    files = [e for e in listing.entries if e.kind != "dir"]
    if args.json:
        _print_context_json(files, sums)
    else:
        _print_context_table(ctx, files, sums)
    return 0


def _print_context_json(files: list[Entry], sums: TreeChecksums) -> None:
    from pybuild.context.checksum import hex_checksum

    doc = {
        "files": [{"path": e.path, "type": e.kind, "size": e.size, "checksum": hex_checksum(sums.of(e.path))}
                  for e in files],
        "total_files": len(files),
        "total_bytes": sum(e.size for e in files),
        "checksum": hex_checksum(sums.checksum),
    }
    # A name that is not UTF-8 holds surrogate escapes; backslashreplace writes each as `\udcXX`, a valid
    # JSON escape, so json.loads gives back the same str and os.fsencode the original bytes.
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    sys.stdout.buffer.write(text.encode("utf-8", "backslashreplace"))
    sys.stdout.flush()


def _print_context_table(ctx: BuildContext, files: list[Entry], sums: TreeChecksums) -> None:
    from pybuild.context.checksum import display_path, hex_checksum

    width = max([len(f"{e.size:,}") for e in files] + [len("SIZE")])
    lines = [f"{'TYPE':<7}  {'SIZE':>{width}}  {'CHECKSUM':<37}  PATH"]
    for e in files:
        name = display_path(e.path)
        if e.kind == "symlink" and e.link_target is not None:
            name += " -> " + display_path(e.link_target)
        lines.append(f"{e.kind:<7}  {e.size:>{width},}  {hex_checksum(sums.of(e.path))}  {name}")
    total = sum(e.size for e in files)
    ignore = f"{ctx.ignore_path} ({len(ctx.excludes)} pattern(s))" if ctx.ignore_path else "none"
    lines += ["", f"total:       {len(files)} file(s), {_human_size(total)} ({total:,} bytes)",
              f"checksum:    {hex_checksum(sums.checksum)}", f"context:     {ctx.root}",
              f"ignore file: {ignore}"]
    sys.stdout.write("\n".join(lines) + "\n")


def _human_size(size: int) -> str:
    """1023 B, 1.5 KiB, 200.0 MiB: binary units, one decimal."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
