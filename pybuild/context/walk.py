"""The filtered walk of a build context (tonistiigi/fsutil `Walk` with `FilterOpt` semantics).

Who uses it: the context checksums, the stat cache and COPY/ADD source selection, all through `walk` (or
`walk_chain` for stacked filters). It yields `Entry` records, parents before children, names sorted per
directory (the order of Go's `WalkDir`, which is the order BuildKit sends a context in).

Behaviour taken from fsutil (`filter.go`):

* `includes` are the paths a build needs (COPY/ADD sources); `excludes` are `.dockerignore` patterns. An
  entry is emitted when the include patterns match it (or a parent) and the exclude patterns do not.
* Matching is top-down: each directory passes its `MatchInfo` to its children.
* A directory that is not emitted itself is still descended into when something below it could be
  emitted, and is then emitted just before its first emitted descendant ("parents of included entries are
  emitted"; "an excluded directory is emitted only if something below is re-included").
* A directory below which nothing can be emitted is not read at all. fsutil decides this only for patterns
  without wildcards; we also decide it for `*` and `?` segments (`PatternMatcher.could_match_below`), so
  a wildcard include does not make the walk read the whole context. The output is the same.
* An excluded directory that is entered only because a `!` exception might re-include something below it,
  and cannot be read, is ignored, as fsutil ignores permission errors for skipped paths.
* Stacked filters (`walk_chain`): an entry is emitted only when every layer would emit it, so a path
  excluded by any layer stays excluded.

Departures, on purpose: symlinks are never followed (fsutil's FollowPaths is the caller's business);
sockets, FIFOs and devices are skipped and reported through `on_skip`; an entry that vanishes or cannot be
read while it matters is a ContextError (fsutil silently skips vanished entries: a context that changes
under the build should fail loudly rather than hash a different tree); a directory entered because an
include pattern needs something below it is read strictly (fsutil ignores the error there too, and the
COPY then fails with "not found"; we say which directory could not be read).
"""

from __future__ import annotations

import os
import stat as statmod
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

from pybuild.context.entry import Entry, EntryKind
from pybuild.context.ignore import MatchInfo, PatternMatcher
from pybuild.errors import ContextError
from pybuild.record import fields, record

__all__ = ["SkipHandler", "WalkFilter", "read_dir", "walk", "walk_chain"]

SkipHandler = Callable[[str, str], None]
"""`on_skip(path, reason)`: told about entries the walk leaves out (sockets, FIFOs, devices)."""

_KINDS: Final[dict[int, EntryKind]] = {
    statmod.S_IFREG: "file", statmod.S_IFDIR: "dir", statmod.S_IFLNK: "symlink",
}
_SPECIAL: Final[dict[int, str]] = {
    statmod.S_IFSOCK: "socket", statmod.S_IFIFO: "fifo", statmod.S_IFCHR: "character device",
    statmod.S_IFBLK: "block device",
}
_FMT: Final = 0o170000

def _entry_maker() -> Callable[..., Entry]:
    """A constructor for `Entry` about three times faster than `Entry(...)`, for the per-file hot loop.

    Why: a record's `__init__` must store each field through `object.__setattr__` (the class is frozen);
    for 12 fields that is ~1 us, a third of the walk's own cost on a 20,000-file context. A plain class with
    the same slots stores them directly and then becomes an `Entry` by `__class__` assignment, which CPython
    allows because the layouts are identical. Falls back to `Entry` if the layout ever stops being plain.
    """
    names = fields(Entry)
    if getattr(Entry, "__slots__", None) != names or Entry.__bases__ != (object,):
        return Entry
    namespace: dict[str, Any] = {"__slots__": names}
    params = ", ".join(f"{name}=None" if name == "link_target" else name for name in names)
    body = "".join(f"    self.{name} = {name}\n" for name in names)
    exec(f"def __init__(self, {params}):\n{body}", namespace)  # noqa: S102 - field names only
    twin = type("_EntryTwin", (), namespace)

    def make(*args: object) -> Entry:
        obj: Any = twin(*args)
        obj.__class__ = Entry
        return obj  # type: ignore[no-any-return]

    return make


_new_entry: Final = _entry_maker()


# What a layer says about one path; layers combine by taking the largest.
_PASS: Final = 0  # emit it (and descend if it is a directory)
_HOLD: Final = 1  # not included itself, but an include pattern may need something below: descend
_SPECULATE: Final = 2  # excluded, but an exception may re-include something below: descend, tolerate errors
_PRUNE: Final = 3  # neither emit nor descend


@record(kw_only=True)
class WalkFilter:
    """One layer of filtering (fsutil's `FilterOpt`): include and exclude patterns.

    `includes` empty means "everything"; `excludes` are `.dockerignore` lines (see `ignore.read_ignore_file`).
    """

    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()


_State = tuple[MatchInfo | None, MatchInfo | None]
_NO_CONTEXT: Final = MatchInfo()
_ROOT_STATE: Final[_State] = (_NO_CONTEXT, _NO_CONTEXT)


class _Layer:
    """A compiled `WalkFilter`: decides, top-down, whether a path is emitted and whether to descend."""

    __slots__ = ("include", "exclude")

    def __init__(self, spec: WalkFilter) -> None:
        self.include = _matcher(spec.includes, "include")
        self.exclude = _matcher(spec.excludes, "exclude")

    def decide(self, path: str, is_dir: bool, state: _State) -> tuple[int, _State]:
        """The action for `path` given its parent's state, and the state to pass to its children."""
        action = _PASS
        include_info = exclude_info = None
        if self.include is not None:
            hit, include_info = self.include.matches_using_parent_results(path, state[0] or _NO_CONTEXT)
            if not hit:
                if is_dir and not self.include.could_match_below(path):
                    return _PRUNE, state
                action = _HOLD
        if self.exclude is not None:
            hit, exclude_info = self.exclude.matches_using_parent_results(path, state[1] or _NO_CONTEXT)
            if hit:
                if is_dir and not self.exclude.could_match_below(path, exceptions=True):
                    return _PRUNE, state
                action = _SPECULATE
        return action, (include_info, exclude_info)


def _matcher(patterns: Sequence[str], what: str) -> PatternMatcher | None:
    if not patterns:
        return None
    try:
        matcher = PatternMatcher(patterns)
    except ContextError as exc:
        raise ContextError(f"invalid {what} patterns {list(patterns)}: {exc.message}") from exc
    return matcher if len(matcher) else None


def walk(
    root: str,
    *,
    includes: Sequence[str] = (),
    excludes: Sequence[str] = (),
    on_skip: SkipHandler | None = None,
) -> Iterator[Entry]:
    """Walk the context directory `root`, yielding what the filter keeps, parents first, names sorted.

    Symlinks are reported, never followed. Raises ContextError at once for a missing root, a root that is
    not a directory or a bad pattern, and while iterating for a directory or entry that cannot be read.
    """
    return walk_chain(root, [WalkFilter(includes=tuple(includes), excludes=tuple(excludes))], on_skip=on_skip)


def walk_chain(
    root: str, filters: Sequence[WalkFilter], *, on_skip: SkipHandler | None = None
) -> Iterator[Entry]:
    """Like `walk`, with stacked filters: an entry is kept only if every layer keeps it."""
    layers = [_Layer(spec) for spec in filters]
    layers = [layer for layer in layers if layer.include is not None or layer.exclude is not None]
    _check_root(root)
    if not layers:
        return _walk_all(root, on_skip)
    return _walk_filtered(root, layers, on_skip)


def _check_root(root: str) -> None:
    try:
        st = os.stat(root)
    except FileNotFoundError:
        raise ContextError(f"context directory not found: {root}") from None
    except OSError as exc:
        raise ContextError(f"cannot read context directory {root}: {exc.strerror}") from exc
    if not statmod.S_ISDIR(st.st_mode):
        raise ContextError(f"context path is not a directory: {root}")


def read_dir(path: str, rel: str) -> list[os.DirEntry[str]]:
    """The entries of directory `path` (shown as `rel`) sorted by name bytes (Go's order), read and closed at
    once; also the order of the Merkle checksums (`wholetree.py`)."""
    try:
        with os.scandir(path) as it:
            entries = list(it)
    except FileNotFoundError:
        raise ContextError(f"{rel or '.'}: directory vanished while walking the context") from None
    except OSError as exc:
        raise ContextError(f"cannot read directory {rel or '.'}: {exc.strerror}") from exc
    names = "".join(e.name for e in entries)
    if names.isascii():
        entries.sort(key=_name)
    else:  # undecodable bytes are surrogates, which sort differently from their bytes
        entries.sort(key=_name_bytes)
    return entries


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _name_bytes(entry: os.DirEntry[str]) -> bytes:
    return os.fsencode(entry.name)


def _entry(de: os.DirEntry[str], rel: str, on_skip: SkipHandler | None) -> Entry | None:
    """The Entry for `de` from lstat, or None (after telling `on_skip`) for sockets, FIFOs and devices."""
    try:
        st = de.stat(follow_symlinks=False)
        kind = _KINDS.get(st.st_mode & _FMT)
        target = os.readlink(de.path) if kind == "symlink" else None
    except OSError as exc:
        raise _stat_error(rel, exc) from exc
    if kind is None:
        if on_skip is not None:
            on_skip(rel, f"{_SPECIAL.get(st.st_mode & _FMT, 'special file')} skipped")
        return None
    return _new_entry(rel, kind, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                 st.st_dev, st.st_ino, st.st_nlink, target)


def _walk_all(root: str, on_skip: SkipHandler | None) -> Iterator[Entry]:
    """The unfiltered walk: every entry, no matching (the common case, so `_entry` is inlined here)."""
    stack: list[tuple[Iterator[os.DirEntry[str]], str]] = [(iter(read_dir(root, "")), "")]
    kinds = _KINDS
    while stack:
        entries, prefix = stack.pop()
        for de in entries:
            rel = prefix + de.name
            try:
                st = de.stat(follow_symlinks=False)
            except OSError as exc:
                raise _stat_error(rel, exc) from exc
            kind = kinds.get(st.st_mode & 0o170000)
            if kind == "file":
                yield _new_entry(rel, kind, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns,
                            st.st_ctime_ns, st.st_dev, st.st_ino, st.st_nlink)
                continue
            entry = _entry(de, rel, on_skip)  # dirs, symlinks, special files: the slower general path
            if entry is None:
                continue
            yield entry
            if kind == "dir":
                stack.append((entries, prefix))
                stack.append((iter(read_dir(de.path, rel)), rel + "/"))
                break


def _stat_error(rel: str, exc: OSError) -> ContextError:
    if isinstance(exc, FileNotFoundError):
        return ContextError(f"{rel}: vanished while walking the context")
    return ContextError(f"cannot read {rel}: {exc.strerror}")


class _Frame:
    """A directory being walked: its remaining entries, per-layer states, and its Entry if not yet emitted."""

    __slots__ = ("entries", "prefix", "states", "held", "rel")

    def __init__(self, entries: list[os.DirEntry[str]], rel: str, states: list[_State],
                 held: os.DirEntry[str] | None) -> None:
        self.entries = iter(entries)
        self.rel = rel
        self.prefix = rel + "/" if rel else ""
        self.states = states
        self.held = held


def _decide(
    layers: Sequence[_Layer], rel: str, is_dir: bool, states: list[_State]
) -> tuple[int, list[_State]]:
    """Combine the layers: prune if any prunes, emit only if all emit."""
    action = _PASS
    children: list[_State] = []
    for layer, state in zip(layers, states):
        verdict, child = layer.decide(rel, is_dir, state)
        if verdict == _PRUNE:
            return _PRUNE, children
        action = max(action, verdict)
        children.append(child)
    return action, children


def _walk_filtered(root: str, layers: Sequence[_Layer], on_skip: SkipHandler | None) -> Iterator[Entry]:
    stack = [_Frame(read_dir(root, ""), "", [_ROOT_STATE] * len(layers), None)]
    held = 0  # how many frames on the stack hold a directory that has not been emitted yet
    while stack:
        frame = stack[-1]
        de = next(frame.entries, None)
        if de is None:
            held -= stack.pop().held is not None
            continue
        rel = frame.prefix + de.name
        is_dir = de.is_dir(follow_symlinks=False)
        action, states = _decide(layers, rel, is_dir, frame.states)
        if action == _PRUNE:
            continue
        if action == _PASS:
            entry = _entry(de, rel, on_skip)
            if entry is None:
                continue
            if held:
                yield from _release(stack, on_skip)
                held = 0
            yield entry
        if is_dir:
            children = _read_speculative(de.path, rel) if action == _SPECULATE else read_dir(de.path, rel)
            if children:
                stack.append(_Frame(children, rel, states, de if action != _PASS else None))
                held += action != _PASS


def _read_speculative(path: str, rel: str) -> list[os.DirEntry[str]]:
    """Read an excluded directory entered only in case an exception re-includes something below it.

    Unreadable means empty, as in fsutil (which ignores permission errors on skipped paths).
    """
    try:
        return read_dir(path, rel)
    except ContextError:
        return []


def _release(stack: list[_Frame], on_skip: SkipHandler | None) -> Iterator[Entry]:
    """Emit the held (not yet emitted) directories on the stack, outermost first."""
    for frame in stack:
        if frame.held is not None:
            entry = _entry(frame.held, frame.rel, on_skip)
            frame.held = None
            if entry is not None:
                yield entry
