"""The handlers behind each subcommand. Each returns an exit code; errors propagate to `main`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
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


# --- store and image commands -----------------------------------------------------------------------------


def _warn(text: str) -> None:
    """What opening the store repaired (store directories open to other users)."""
    print(f"warning: {text}", file=sys.stderr)


def cmd_import(args: argparse.Namespace) -> int:
    """`pybuild import [-m MSG] ROOTFS [NAME[:TAG]]`: a one-layer image from a rootfs tar; prints its ID."""
    from pybuild.api import ImportRequest, import_image

    result = import_image(ImportRequest(file=args.file, name=args.name, message=args.message), _warn)
    print(result.image_id)
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    """`pybuild load -i PATH`: every image of an OCI layout or docker-archive, verified, then tagged."""
    from pybuild.api import LoadRequest, load

    result = load(LoadRequest(input=args.input), _warn)
    if not args.quiet:
        for image in result.images:
            print(f"Loaded image: {image.name}" if image.name else f"Loaded image ID: {image.image_id}")
    return 0


def cmd_save(args: argparse.Namespace) -> int:
    """`pybuild save [--format oci|docker] [--compression C] NAME -o FILE`: an image as an archive."""
    from pybuild.api import SaveRequest, save

    save(SaveRequest(image=args.image, output=args.output, format=args.format, compression=args.compression,
                     compression_level=args.compression_level), _warn, stdout=sys.stdout.buffer)
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    """`pybuild images [-q] [--json]`: the tagged images, newest first."""
    from pybuild.api import ImagesRequest, images

    found = images(ImagesRequest(), _warn).images
    if args.quiet:
        for image in found:
            print(image.config_digest.removeprefix("sha256:")[:12])
        return 0
    if args.json:
        doc = [{"names": list(i.names), "id": i.config_digest, "digest": i.manifest_digest,
                "created": i.created, "size": i.size, "platform": i.platform} for i in found]
        print(json.dumps(doc, indent=2))
        return 0
    rows = [("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "PLATFORM", "SIZE")]
    for image in found:
        for name in image.names:
            repo, _, tag = name.rpartition(":")
            if "@" in name:  # pulled by digest (`REPO@sha256:...`): docker shows such an image untagged
                repo, tag = name.partition("@")[0], "<none>"
            rows.append((repo, tag, image.config_digest.removeprefix("sha256:")[:12], image.created or "",
                         image.platform, _human_size(image.size)))
    _print_table(rows)
    return 0


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("   ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def cmd_inspect(args: argparse.Namespace) -> int:
    """`pybuild inspect NAME`: one JSON object (id, digest, names, manifest, config)."""
    from pybuild.api import InspectRequest, inspect

    result = inspect(InspectRequest(image=args.image), _warn)
    doc = {
        "id": result.image_id,
        "digest": result.digest,
        "repoTags": list(result.repo_tags),
        "mediaType": result.media_type,
        "platform": result.platform,
        "created": result.created,
        "size": result.size,
        "layers": list(result.layers),
        "manifest": result.manifest,
        "config": result.config,
    }
    print(json.dumps(doc, indent=2, ensure_ascii=False))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    """`pybuild history NAME`: the history entries, newest first, with the layer each one made."""
    from pybuild.api import HistoryRequest, history

    result = history(HistoryRequest(image=args.image), _warn)
    rows: list[tuple[str, ...]] = [("CREATED", "CREATED BY", "SIZE", "COMMENT")]
    for entry in reversed(result.entries):
        created_by = entry.created_by
        if not args.no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        rows.append((entry.created, created_by, _human_size(entry.size), entry.comment))
    _print_table(rows)
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    """`pybuild tag SOURCE TARGET`."""
    from pybuild.api import TagRequest, tag

    tag(TagRequest(source=args.source, target=args.target), _warn)
    return 0


def cmd_rmi(args: argparse.Namespace) -> int:
    """`pybuild rmi [-f] NAME...`: remove each name; one that cannot be removed is an error line and exit 1,
    and the others are still removed (as docker does)."""
    from pybuild.api import RmiRequest, rmi
    from pybuild.cli.render import render_error

    code = 0
    for item in rmi(RmiRequest(images=tuple(args.images), force=args.force), _warn).items:
        if item.error is not None:
            print(render_error(item.error), file=sys.stderr)
            code = 1
        for tag in item.untagged:
            print(f"Untagged: {tag}")
    return code


def cmd_du(args: argparse.Namespace) -> int:
    """`pybuild du [--verify]`: blob counts and bytes; with --verify, every blob re-hashed (exit 1 on damage)."""
    from pybuild.api import DuRequest, du

    result = du(DuRequest(verify=args.verify), _warn)
    usage = result.usage
    rows: list[tuple[str, ...]] = [("KIND", "BLOBS", "SIZE")]
    rows += [(k.kind, str(k.count), _human_size(k.bytes)) for k in usage.kinds]
    rows += [("total", str(usage.count), _human_size(usage.bytes)),
             ("in use", str(usage.referenced_count), _human_size(usage.referenced_bytes)),
             ("reclaimable", str(usage.unreferenced_count), _human_size(usage.unreferenced_bytes))]
    if usage.temp_count:
        rows.append(("temp files", str(usage.temp_count), _human_size(usage.temp_bytes)))
    _print_table(rows)
    if args.verify:
        for problem in result.problems:
            print(f"error: {problem.message}", file=sys.stderr)
        if result.problems:
            print(f"verify: {len(result.problems)} problem(s) found", file=sys.stderr)
            return 1
        print(f"verify: {usage.count} blob(s) ok")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """`pybuild prune [--keep-storage SIZE] [--filter until=DURATION]`: remove unreferenced blobs."""
    from pybuild.api import PruneRequest, prune

    request = PruneRequest(keep_storage=args.keep_storage, filters=tuple(args.filter), all=args.all)
    result = prune(request, _warn, on_wait=lambda message: print(message, file=sys.stderr))
    print(f"removed {result.cache_entries} cache entr{'y' if result.cache_entries == 1 else 'ies'}, "
          f"{result.blobs} blob(s) and {result.snapshots} snapshot(s), "
          f"reclaimed {_human_size(result.reclaimed)}; the store now holds {_human_size(result.after)}")
    return 0
