"""The symlinks COPY/ADD sources follow, as extra walker include paths (tonistiigi/fsutil `FollowLinks`).

Who uses it: `context.list_sources`. `select_sources` follows the symlinks a source names (any component of
its path, each wildcard match) inside the context, but the walk (`walk.py`) never follows links and reads
only what its include patterns name. For `COPY link /x` with `link -> a.txt` the walk would list `link`
and not `a.txt`, and the COPY would fail. BuildKit's local source has the same problem and solves it the
same way: `FollowPaths` makes fsutil resolve each path's links before walking and include their targets.

`follow_links` adds, for every link met while resolving a source, the path the link leads to (with the
rest of the source path). It reads the context directory only: each component is lstat'ed before the next
one is looked at, absolute targets restart at the context root and `..` stops there (the `fs.RootPath`
rules `select_sources._resolve` applies), so nothing outside the context is ever named. A link to a missing
or excluded path adds nothing the walk can find; `select_sources` then reports the source as a symbolic
link that does not resolve inside the build context, as before.

From the first wildcard segment on, a source is matched against real directories only and just its last
segment's matches are followed, as `select_sources._glob` does (fsutil's FollowLinks also follows links
matched by earlier segments; pybuild never reads through them, so it does not list them either).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence

from pybuild.context.ignore import filepath_match
from pybuild.context.sources import has_wildcards
from pybuild.errors import ContextError

__all__ = ["follow_links"]

_MAX_LINK_HOPS = 255  # as in `sources`: a longer chain is a loop, which select_sources reports
_GLOB_CHARS = "\\*?["


def follow_links(root: str, patterns: Sequence[str]) -> tuple[str, ...]:
    """`patterns` (cleaned include paths from `sources.include_patterns`) plus the paths the symlinks they
    name lead to, sorted and de-duplicated. `root` is the context directory."""
    found: set[str] = set()
    for pattern in patterns:
        parts = pattern.split("/")
        first = next((i for i, seg in enumerate(parts) if has_wildcards(seg)), len(parts))
        segments = [(seg, i >= first) for i, seg in enumerate(parts)]
        _Follower(root, found).run((), segments, followed=False, hops=0)
    return tuple(sorted(set(patterns) | found))


_Segment = tuple[str, bool]
"""A path segment still to resolve and whether it is matched as a glob (every segment of a source from its
first wildcard on; a link target's segments never are)."""


class _Follower:
    """One source's resolution: `found` collects every link met on the way and the real paths reached
    through at least one link (fsutil records the links too: the copy looks each one up)."""

    def __init__(self, root: str, found: set[str]) -> None:
        self.root = root
        self.found = found
        self.seen: set[tuple[tuple[str, ...], tuple[_Segment, ...], bool]] = set()

    def run(self, current: tuple[str, ...], pending: Sequence[_Segment], *, followed: bool,
            hops: int) -> None:
        """Resolve `pending` from real directory `current` (names from the root, none of them a link)."""
        key = (current, tuple(pending), followed)
        if key in self.seen or hops > _MAX_LINK_HOPS:
            return
        self.seen.add(key)
        for index, (seg, wild) in enumerate(pending):
            rest = pending[index + 1:]
            if seg in ("", "."):
                continue
            if seg == "..":
                current = current[:-1]
                continue
            if wild:
                for name, is_link, is_dir in self.matches(current, seg):
                    if is_link and not rest:  # only the last segment's matches are followed
                        self.enter(current, name, rest, followed=followed, hops=hops)
                    elif not rest or (is_dir and not is_link):  # the dirent's type spares an lstat
                        self.run((*current, name), rest, followed=followed, hops=hops)
                return
            self.enter(current, seg, rest, followed=followed, hops=hops)
            return
        if followed:
            self.found.add("/".join(_escape(name) for name in current))

    def enter(self, current: tuple[str, ...], name: str, rest: Sequence[_Segment], *, followed: bool,
              hops: int) -> None:
        """Step from `current` into entry `name`: follow it if it is a link, descend if it is a directory."""
        path = (*current, name)
        st = self.lstat(path)
        if st is None:
            return  # missing: nothing for the walk to find (select_sources reports it)
        if stat.S_ISLNK(st.st_mode):
            target = self.readlink(path)
            if target is None:
                return
            self.found.add("/".join(_escape(part) for part in path))  # select_sources looks the link up
            start = () if target.startswith("/") else current
            segments = [(seg, False) for seg in target.split("/")]
            self.run(start, [*segments, *rest], followed=True, hops=hops + 1)
        elif not rest:
            self.run(path, (), followed=followed, hops=hops)
        elif stat.S_ISDIR(st.st_mode):
            self.run(path, rest, followed=followed, hops=hops)

    def host(self, names: Sequence[str]) -> str:
        return os.path.join(self.root, *names)

    def lstat(self, names: Sequence[str]) -> os.stat_result | None:
        try:
            return os.lstat(self.host(names))
        except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: a NUL, no file has one
            return None
        except OSError as exc:
            raise ContextError(f"cannot read {'/'.join(names)}: {exc.strerror}") from exc

    def readlink(self, names: Sequence[str]) -> str | None:
        try:
            return os.readlink(self.host(names))
        except (OSError, ValueError):
            return None  # it changed under us: the walk will see what it is now

    def matches(self, current: Sequence[str], pattern: str) -> list[tuple[str, bool, bool]]:
        """(name, is a link, is a directory) of the entries of real directory `current` that wildcard
        segment `pattern` matches (Go filepath.Match), in name order."""
        try:
            with os.scandir(self.host(current)) as entries:
                found = [(entry.name, entry.is_symlink(), entry.is_dir(follow_symlinks=False))
                         for entry in entries if filepath_match(pattern, entry.name)]
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return []
        except ContextError:
            return []  # a malformed pattern: select_sources reports it
        except OSError as exc:
            raise ContextError(f"cannot read directory {'/'.join(current) or '.'}: {exc.strerror}") from exc
        return sorted(found)


def _escape(name: str) -> str:
    """A real file name as a literal include-pattern segment (patternmatcher's `\\` escapes)."""
    if not any(char in name for char in _GLOB_CHARS):
        return name
    return "".join("\\" + char if char in _GLOB_CHARS else char for char in name)
