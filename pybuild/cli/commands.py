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
    from pybuild.store.store import Store


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


def _open_store() -> Store:
    from pybuild.registry.blobsource import FETCHERS
    from pybuild.store.store import Store

    store = Store.open(fetchers=FETCHERS)
    for warning in store.warnings:  # what opening it repaired (store directories open to other users)
        print(f"warning: {warning}", file=sys.stderr)
    return store


def cmd_import(args: argparse.Namespace) -> int:
    """`pybuild import [-m MSG] ROOTFS [NAME[:TAG]]`: a one-layer image from a rootfs tar; prints its ID."""
    from pybuild.store.images import import_rootfs

    if not os.path.isfile(args.file):
        raise ConfigError(f"cannot import {args.file}: no such file")
    with _open_store() as store:
        image = import_rootfs(store, args.file, args.name, message=args.message)
    print(image.id)
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    """`pybuild load -i PATH`: every image of an OCI layout or docker-archive, verified, then tagged."""
    from pybuild.store.archive import load_archive
    from pybuild.store.images import familiar_name

    with _open_store() as store:
        images = load_archive(store, args.input)
    if not args.quiet:
        for image in images:
            names = [n for n in _names_of(image.name)]
            print(f"Loaded image: {familiar_name(names[0])}" if names else f"Loaded image ID: {image.id}")
    return 0


def _names_of(name: str | None) -> list[str]:
    return [name] if name else []


def cmd_save(args: argparse.Namespace) -> int:
    """`pybuild save [--format oci|docker] [--compression C] NAME -o FILE`: an image as an archive."""
    from pybuild.export.exporters import export_image
    from pybuild.export.outputs import parse_output
    from pybuild.store.images import resolve_image

    parts = [f"type={args.format}", f"dest={args.output}", f"name={args.image}"]
    if args.compression:
        parts.append(f"compression={args.compression}")
    if args.compression_level is not None:
        parts.append(f"compression-level={args.compression_level}")
    spec = parse_output(_csv(parts))
    with _open_store() as store:
        image = resolve_image(store, args.image)
        if image.name is None:
            from pybuild.record import replace

            spec = replace(spec, names=())
        with store.shared_lock():
            export_image(store, image, spec, stdout=sys.stdout.buffer)
    return 0


def _csv(parts: list[str]) -> str:
    """Join key=value fields as one CSV record (quoting a value that holds a comma or a quote)."""
    import csv
    import io

    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(parts)
    return out.getvalue()


def cmd_images(args: argparse.Namespace) -> int:
    """`pybuild images [-q] [--json]`: the tagged images, newest first."""
    from pybuild.store.images import list_images

    with _open_store() as store:
        images = list_images(store)
    if args.quiet:
        for image in images:
            print(image.config_digest.removeprefix("sha256:")[:12])
        return 0
    if args.json:
        doc = [{"names": list(i.names), "id": i.config_digest, "digest": i.manifest_digest,
                "created": i.created, "size": i.size, "platform": i.platform} for i in images]
        print(json.dumps(doc, indent=2))
        return 0
    rows = [("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "PLATFORM", "SIZE")]
    for image in images:
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
    from pybuild.store.images import familiar_name, resolve_image

    with _open_store() as store:
        image = resolve_image(store, args.image)
        tags = sorted(familiar_name(t.name) for t in store.index.list_tags() if t.digest == image.manifest_digest)
        row = store.index.get_image(image.manifest_digest)
    doc = {
        "id": image.id,
        "digest": image.manifest_digest,
        "repoTags": tags,
        "mediaType": image.manifest.media_type,
        "platform": image.platform,
        "created": image.config.get("created"),
        "size": row.size if row is not None else None,
        "layers": list(image.diff_ids),
        "manifest": json.loads(image.manifest_bytes),
        "config": image.config,
    }
    print(json.dumps(doc, indent=2, ensure_ascii=False))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    """`pybuild history NAME`: the history entries, newest first, with the layer each one made."""
    from pybuild.store.images import resolve_image

    with _open_store() as store:
        image = resolve_image(store, args.image)
        sizes = [store.index.layer_size(d) for d in image.diff_ids]
    entries = image.config.get("history") or []
    layer = 0
    rows: list[tuple[str, ...]] = [("CREATED", "CREATED BY", "SIZE", "COMMENT")]
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        size = "0 B"
        if not entry.get("empty_layer") and layer < len(sizes):
            size = _human_size(sizes[layer] or 0)
            layer += 1
        created_by = str(entry.get("created_by", ""))
        if not args.no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        rows.append((str(entry.get("created", "")), created_by, size, str(entry.get("comment", ""))))
    _print_table([rows[0], *reversed(rows[1:])])
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    """`pybuild tag SOURCE TARGET`."""
    from pybuild.store.images import tag_image

    with _open_store() as store:
        tag_image(store, args.source, args.target)
    return 0


def cmd_rmi(args: argparse.Namespace) -> int:
    """`pybuild rmi [-f] NAME...`: remove each name; one that cannot be removed is an error line and exit 1,
    and the others are still removed (as docker does)."""
    from pybuild.cli.render import render_error
    from pybuild.errors import StoreError
    from pybuild.store.images import familiar_name, remove_image

    code = 0
    with _open_store() as store:
        for name in args.images:
            try:
                removed = remove_image(store, name, force=args.force)
            except StoreError as exc:
                print(render_error(exc), file=sys.stderr)
                code = 1
                continue
            for tag in removed:
                print(f"Untagged: {familiar_name(tag)}")
    return code


def cmd_du(args: argparse.Namespace) -> int:
    """`pybuild du [--verify]`: blob counts and bytes; with --verify, every blob re-hashed (exit 1 on damage)."""
    with _open_store() as store:
        usage = store.du()
        problems = store.verify_all() if args.verify else []
    rows: list[tuple[str, ...]] = [("KIND", "BLOBS", "SIZE")]
    rows += [(k.kind, str(k.count), _human_size(k.bytes)) for k in usage.kinds]
    rows += [("total", str(usage.count), _human_size(usage.bytes)),
             ("in use", str(usage.referenced_count), _human_size(usage.referenced_bytes)),
             ("reclaimable", str(usage.unreferenced_count), _human_size(usage.unreferenced_bytes))]
    if usage.temp_count:
        rows.append(("temp files", str(usage.temp_count), _human_size(usage.temp_bytes)))
    _print_table(rows)
    if args.verify:
        for problem in problems:
            print(f"error: {problem.message}", file=sys.stderr)
        if problems:
            print(f"verify: {len(problems)} problem(s) found", file=sys.stderr)
            return 1
        print(f"verify: {usage.count} blob(s) ok")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """`pybuild prune [--keep-storage SIZE] [--filter until=DURATION]`: remove unreferenced blobs."""
    keep = parse_size(args.keep_storage) if args.keep_storage is not None else None
    until: float | None = None
    for item in args.filter:
        key, sep, value = item.partition("=")
        if key.strip().lower() != "until" or not sep:
            raise ConfigError(f"invalid prune filter {item!r}", hint="the filter prune takes is until=DURATION")
        until = _parse_until(value.strip())
    from pybuild.cache.index import CacheIndex
    from pybuild.worker.snapshots import Snapshots

    with _open_store() as store:
        dropped: list[str] = []
        if keep is not None or args.all:
            # cache entries go least recently used first until their layers fit (all of them with --all)
            dropped = CacheIndex(store).prune_lru(0 if args.all else keep or 0)
        report = store.prune(keep_storage=keep, until_seconds=until,
                             on_wait=lambda message: print(message, file=sys.stderr))
        with store.exclusive_lock():
            from pybuild.worker.executor import reap_stale_runs

            reap_stale_runs(store.root)
            snapshots = Snapshots.open(store).prune(store)
    print(f"removed {len(dropped)} cache entr{'y' if len(dropped) == 1 else 'ies'}, {len(report.removed)} "
          f"blob(s) and {snapshots} snapshot(s), reclaimed {_human_size(report.reclaimed)}; "
          f"the store now holds {_human_size(report.after)}")
    return 0


_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
               "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def parse_size(text: str) -> int:
    """`10GB`, `512MiB`, `1.5g`, `100` (bytes) → bytes; ConfigError when unreadable."""
    import re

    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise ConfigError(f"invalid size {text!r}", hint="e.g. 500MB, 10GB, 2GiB or a number of bytes")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def _parse_until(text: str) -> float:
    """A Go duration (`24h`, `90m`) in seconds; ConfigError when unreadable."""
    from pybuild.dockerfile.durations import SECOND, parse_duration
    from pybuild.errors import DockerfileError

    try:
        nanos = parse_duration(text)
    except DockerfileError as exc:
        raise ConfigError(f"invalid prune filter until={text!r}: {exc.message}") from None
    if nanos < 0:
        raise ConfigError(f"invalid prune filter until={text!r}: negative duration")
    return nanos / SECOND
