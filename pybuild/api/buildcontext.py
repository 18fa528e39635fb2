"""`pybuild context`: what a build can see in a context directory, with sizes and checksums."""

from __future__ import annotations

from pybuild.record import record

__all__ = ["ContextFile", "ContextRequest", "ContextResult", "context", "display_path"]


@record(kw_only=True)
class ContextRequest:
    """`context` a directory; `dockerfile` a path whose `<PATH>.dockerignore` wins over the context's
    `.dockerignore` (given, it must exist)."""

    context: str
    dockerfile: str | None = None


@record(kw_only=True)
class ContextFile:
    """A file or symlink a build can see: its path in the context, kind, size and checksum (`xxh3:...`)."""

    path: str
    kind: str
    size: int
    checksum: str
    link_target: str | None


@record(kw_only=True)
class ContextResult:
    """The files (directories left out), the context's checksum, its root, the ignore file used and its
    pattern count, and warnings from the walk."""

    files: tuple[ContextFile, ...]
    checksum: str
    root: str
    ignore_path: str | None
    patterns: int
    warnings: tuple[str, ...]


def context(request: ContextRequest) -> ContextResult:
    """Walk the context as a build would (the ignore file applied) and checksum what it sees."""
    from pybuild.context.checksum import hex_checksum
    from pybuild.context.context import ContextHasher, list_files, open_context

    ctx = open_context(request.context, request.dockerfile, require_dockerfile=request.dockerfile is not None)
    listing = list_files(ctx)
    with ContextHasher(ctx) as hasher:
        sums = hasher.checksum(listing)
    files = tuple(ContextFile(path=e.path, kind=e.kind, size=e.size, checksum=hex_checksum(sums.of(e.path)),
                              link_target=e.link_target)
                  for e in listing.entries if e.kind != "dir")
    return ContextResult(files=files, checksum=hex_checksum(sums.checksum), root=ctx.root,
                         ignore_path=ctx.ignore_path, patterns=len(ctx.excludes),
                         warnings=tuple(listing.warnings))


def display_path(path: str) -> str:
    """`path` printable on one line: names with newlines, control characters or undecodable bytes escaped."""
    from pybuild.context.checksum import display_path as printable

    return printable(path)
