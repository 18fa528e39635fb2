"""A build context opened for a build: the directory, its Dockerfile and ignore file, listings and checksums.

Who uses it: the CLI (`pybuild context`) and the build (`pybuild.ops.context`, for `solve.runner`), which
asks for the checksum of what each COPY/ADD reads. Flow::

    ctx = open_context("app", "app/Dockerfile")          # validates, reads Dockerfile + ignore file
    listing = list_sources(ctx, ["src/", "go.mod"])      # walks only what those sources can read
    with ContextHasher(ctx) as hasher:                   # loads the stat cache; saves it on exit
        sums = hasher.checksum(listing)                  # TreeChecksums: sums.checksum, sums.of(path)

Rules taken from BuildKit's Dockerfile frontend: the ignore file `<Dockerfile name>.dockerignore` next to
the Dockerfile takes priority over the context's `.dockerignore`; the Dockerfile and the ignore file are
read even when the ignore file excludes them (they are read directly, never through the walk), but an
excluded path is never part of a listing, so no COPY can select it. Sockets, FIFOs and devices are left
out with a warning.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from types import TracebackType

from pybuild.context.checksum import Checksummer, TreeChecksums, display_path
from pybuild.context.entry import Entry
from pybuild.context.statcache import StatCache
from pybuild.errors import ContextError
from pybuild.record import record

__all__ = ["BuildContext", "ContextHasher", "Listing", "checksum_context", "checksum_paths", "checksum_selection",
           "list_files", "list_sources", "open_context"]


@record
class BuildContext:
    """A validated context directory with its Dockerfile and ignore patterns; made by `open_context`."""

    root: str
    """Absolute path of the context directory."""
    dockerfile_path: str
    dockerfile: bytes | None
    """The Dockerfile's bytes; None when it was optional and absent."""
    ignore_path: str | None
    """The ignore file in use, or None."""
    excludes: tuple[str, ...]
    """The ignore file's patterns (`ignore.read_ignore_file`)."""


@record
class Listing:
    """Entries a walk of the context kept (parents first, names sorted), and what it skipped.

    `complete` is True when no include patterns narrowed the walk (the whole visible context).
    """

    entries: tuple[Entry, ...]
    warnings: tuple[str, ...]
    complete: bool


def open_context(context_dir: str, dockerfile_path: str | None = None, *,
                 require_dockerfile: bool = True) -> BuildContext:
    """Open `context_dir` for a build; the Dockerfile defaults to `<context>/Dockerfile`.

    Raises ContextError for a missing or non-directory context, an unreadable Dockerfile (or a missing
    one when `require_dockerfile`), and an unreadable ignore file.
    """
    root = os.path.abspath(context_dir)
    _check_dir(context_dir, root)
    path = dockerfile_path if dockerfile_path is not None else os.path.join(root, "Dockerfile")
    dockerfile = _read_optional(path, "Dockerfile")
    if dockerfile is None and require_dockerfile:
        raise ContextError(f"Dockerfile not found: {path}")
    ignore_path, excludes = _ignore_patterns(root, path)
    return BuildContext(root, path, dockerfile, ignore_path, excludes)


def _check_dir(shown: str, root: str) -> None:
    try:
        st = os.stat(root)
    except FileNotFoundError:
        raise ContextError(f"context directory not found: {shown}") from None
    except OSError as exc:
        raise ContextError(f"cannot read context directory {shown}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ContextError(f"context path is not a directory: {shown}")


def _read_optional(path: str, what: str) -> bytes | None:
    """The bytes of `path`, or None when it does not exist; other failures are ContextErrors naming it."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ContextError(f"cannot read {what} {path}: is a directory") from None
    except OSError as exc:
        raise ContextError(f"cannot read {what} {path}: {exc.strerror}") from None


def _ignore_patterns(root: str, dockerfile_path: str) -> tuple[str | None, tuple[str, ...]]:
    """(ignore file used, its patterns): `<Dockerfile>.dockerignore` first, then `<context>/.dockerignore`."""
    from pybuild.context.ignore import read_ignore_file

    for candidate in (dockerfile_path + ".dockerignore", os.path.join(root, ".dockerignore")):
        data = _read_optional(candidate, "ignore file")
        if data is not None:
            return candidate, tuple(read_ignore_file(data))
    return None, ()


def list_files(ctx: BuildContext, *, includes: Sequence[str] = ()) -> Listing:
    """Walk the context with its excludes (and `includes`, when given); symlinks are listed, not followed."""
    from pybuild.context.walk import walk

    warnings: list[str] = []

    def skipped(path: str, reason: str) -> None:
        warnings.append(f"{display_path(path)}: {reason}")

    entries = tuple(walk(ctx.root, includes=includes, excludes=ctx.excludes, on_skip=skipped))
    return Listing(entries, tuple(warnings), not includes)


def list_sources(ctx: BuildContext, sources: Sequence[str], *, parents: bool = False) -> Listing:
    """Walk only what the COPY/ADD `sources` can read: the rest of the context is never listed or read.

    The sources become walker include patterns (`sources.include_patterns`), plus the paths the symlinks
    they name lead to inside the context (`follow.follow_links`, BuildKit's FollowPaths), so a source that
    is a link finds its target; a source naming the whole context (`.`, `/`) walks everything. The build
    hashes the same listing for the step's cache key, so the key covers the link targets too.
    """
    from pybuild.context.follow import follow_links
    from pybuild.context.sources import include_patterns

    includes = include_patterns(sources, parents=parents)
    return list_files(ctx, includes=follow_links(ctx.root, includes) if includes else ())


class ContextHasher:
    """Checksums listings of one context through its stat cache; saves the cache when closed.

    Use one per build (or `pybuild context` run) as a context manager. The cache is pruned of paths not
    seen only when some listing covered the whole context.
    """

    def __init__(self, ctx: BuildContext, *, use_cache: bool = True) -> None:
        self.cache = StatCache.load(ctx.root) if use_cache else None
        self.checksummer = Checksummer(ctx.root, self.cache)
        self._complete = False

    def checksum(self, listing: Listing) -> TreeChecksums:
        """The checksums of `listing`'s entries, their directories and the whole selection."""
        result = self.checksummer.tree(listing.entries)
        self._complete = self._complete or listing.complete
        return result

    def mark_complete(self) -> None:
        """Note that the whole context was checksummed (so the cache may drop rows of vanished paths)."""
        self._complete = True

    def close(self) -> None:
        """Prune (after a complete listing) and save the stat cache."""
        if self.cache is not None:
            if self._complete:
                self.cache.prune()
            self.cache.save()

    def __enter__(self) -> ContextHasher:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None:  # after an error the cache still holds only verified rows, but keep it simple
            self.close()


def checksum_context(ctx: BuildContext, warnings: list[str] | None = None) -> TreeChecksums:
    """The checksums of the whole visible context (what `COPY . /x` reads), saving the stat cache.

    Uses the fused one-pass walk (`wholetree.py`) when the ignore file has no `!` exceptions, else the
    general walk + tree; both give identical results.
    """
    from pybuild.context.ignore import PatternMatcher

    matcher = PatternMatcher(ctx.excludes) if ctx.excludes else None
    if matcher is not None and matcher.exclusions:
        return checksum_selection(ctx, list_files(ctx))
    from pybuild.context.wholetree import checksum_whole_tree

    def skipped(path: str, reason: str) -> None:
        if warnings is not None:
            warnings.append(f"{display_path(path)}: {reason}")

    with ContextHasher(ctx) as hasher:
        result = checksum_whole_tree(hasher.checksummer, matcher.matches if matcher else None, skipped)
        hasher.mark_complete()
        return result


def checksum_selection(ctx: BuildContext, listing: Listing) -> TreeChecksums:
    """One-shot `ContextHasher(ctx).checksum(listing)` that saves the stat cache."""
    with ContextHasher(ctx) as hasher:
        return hasher.checksum(listing)


def checksum_paths(ctx: BuildContext, paths: Sequence[str]) -> dict[str, bytes]:
    """The checksum of each context path in `paths` (a file, symlink or directory), reading only those.

    Paths are relative to the context (a leading `/` or `./` is dropped); a path that is excluded or
    missing is a ContextError.
    """
    cleaned = {path: _clean(path) for path in paths}
    listing = list_files(ctx, includes=[p for p in cleaned.values() if p] if all(cleaned.values()) else ())
    sums = checksum_selection(ctx, listing)
    out: dict[str, bytes] = {}
    for path, rel in cleaned.items():
        if rel not in sums.nodes:
            raise ContextError(f"{display_path(path)}: not found in the build context (missing or excluded)")
        out[path] = sums.of(rel)
    return out


def _clean(path: str) -> str:
    rel = os.path.normpath("/" + path).lstrip("/")
    return "" if rel == "." else rel
