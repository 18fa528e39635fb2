"""The handlers behind each subcommand. Each returns an exit code; errors propagate to `main`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pybuild.cli.render import render_diagnostic

if TYPE_CHECKING:
    from pybuild.api import ContextFile, ContextResult


def _stdin_if_dash(path: str | None) -> bytes | None:
    """The Dockerfile's bytes when its path is `-` (standard input), else None (the api reads the file)."""
    return sys.stdin.buffer.read() if path == "-" else None


def cmd_parse(args: argparse.Namespace) -> int:
    """`pybuild parse [--dump|--json] FILE`: the AST layer only (unknown instructions are just nodes)."""
    from pybuild.api import ParseRequest, parse

    result = parse(ParseRequest(dockerfile=args.file, dockerfile_data=_stdin_if_dash(args.file)))
    if args.json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(result.dump())
    for warning in result.warnings:
        print(render_diagnostic(warning), file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """`pybuild check [-f Dockerfile] [CONTEXT]`: parse, build typed stages, run the lint rules."""
    from pybuild.api import CheckRequest, check

    result = check(CheckRequest(context=args.context, dockerfile=args.dockerfile,
                                dockerfile_data=_stdin_if_dash(args.dockerfile)))
    for warning in result.warnings:
        print(render_diagnostic(warning), file=sys.stderr)
    count = len(result.warnings)
    if result.failed:
        print(f"error: {result.name}: {count} warning(s), and the check directive makes them errors",
              file=sys.stderr)
        return 1
    summary = f"{count} warning(s) found" if count else "no warnings found"
    print(f"check complete: {result.stages} stage(s), {result.instructions} instruction(s), {summary}")
    return 0


def cmd_context(args: argparse.Namespace) -> int:
    """`pybuild context [-f Dockerfile] [--json] DIR`: the files a build can see, their sizes and checksums."""
    from pybuild.api import ContextRequest, context

    result = context(ContextRequest(context=args.context, dockerfile=args.dockerfile))
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        _print_context_json(result)
    else:
        _print_context_table(result)
    return 0


def _print_context_json(result: ContextResult) -> None:
    files = result.files
    doc = {
        "files": [{"path": f.path, "type": f.kind, "size": f.size, "checksum": f.checksum} for f in files],
        "total_files": len(files),
        "total_bytes": sum(f.size for f in files),
        "checksum": result.checksum,
    }
    # A name that is not UTF-8 holds surrogate escapes; backslashreplace writes each as `\udcXX`, a valid
    # JSON escape, so json.loads gives back the same str and os.fsencode the original bytes.
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    sys.stdout.buffer.write(text.encode("utf-8", "backslashreplace"))
    sys.stdout.flush()


def _print_context_table(result: ContextResult) -> None:
    from pybuild.api import display_path

    files: tuple[ContextFile, ...] = result.files
    width = max([len(f"{f.size:,}") for f in files] + [len("SIZE")])
    lines = [f"{'TYPE':<7}  {'SIZE':>{width}}  {'CHECKSUM':<37}  PATH"]
    for f in files:
        name = display_path(f.path)
        if f.kind == "symlink" and f.link_target is not None:
            name += " -> " + display_path(f.link_target)
        lines.append(f"{f.kind:<7}  {f.size:>{width},}  {f.checksum}  {name}")
    total = sum(f.size for f in files)
    ignore = f"{result.ignore_path} ({result.patterns} pattern(s))" if result.ignore_path else "none"
    lines += ["", f"total:       {len(files)} file(s), {_human_size(total)} ({total:,} bytes)",
              f"checksum:    {result.checksum}", f"context:     {result.root}",
              f"ignore file: {ignore}"]
    sys.stdout.write("\n".join(lines) + "\n")


def _human_size(size: int) -> str:
    from pybuild.api import human_size

    return human_size(size)


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
