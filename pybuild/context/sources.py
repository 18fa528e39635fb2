"""COPY/ADD source selection: which entries of a tree a COPY reads, and where each one lands.

A pure function over a `TreeView` (the walked build context today, a stage's rootfs for `COPY --from`
later), so the planner can hash exactly what a step reads and the executor can reuse it to copy.
Nothing here touches the file system.

Semantics follow BuildKit's Dockerfile frontend (`dispatchCopy`: FollowSymlinks, CopyDirContentsOnly,
AllowWildcard, CreateDestPath, include patterns for `--parents`) and tonistiigi/fsutil's `copy` package:

- A source is cleaned as an absolute path and made relative to the root, so `../x` and `/x` both read
  `x` inside the tree (BuildKit: `NormalizePath("/", src)`).
- Wildcards are Go `filepath.Match` per path segment (`*`, `?`, `[...]` with `^` negation, `\\` escapes).
  The literal prefix is resolved following symlinks; the wildcard part is matched while walking real
  directories only (fsutil `ResolveWildcards` walks with lstat). In a plain source `**` is Go's `**`,
  which equals `*` (one segment); with `--parents` the pattern becomes an include pattern with
  moby/patternmatcher rules, where `**` spans directories (BuildKit passes it as IncludePatterns).
- The path a source names (or a wildcard match) is followed if it is a symlink, inside the tree only:
  absolute targets restart at the tree's root and `..` stops at it (continuity `fs.RootPath`), so a link
  can never reach the host. Symlinks found inside a copied directory are copied as links.
- A directory source copies its contents; its own entry maps onto the destination directory (`top`).
- `--exclude` patterns (moby/patternmatcher rules, an entry is excluded when it or a parent matches, a
  later `!pattern` re-includes) are matched, as fsutil's copier does, against the path relative to the
  directory being copied (for `COPY --exclude=*.pyc app/ /srv/`, `app/x.pyc` is tested as `x.pyc`).
  Decision: a wildcard's top-level matches are also tested, relative to the wildcard's literal base
  directory, because the Dockerfile reference promises `COPY --exclude=*.txt hom* /mydir/` skips
  `home.txt`; a literally named source is never excluded.
- `--parents`: the part before a `/./` pivot (default: the root) is the copy root; the rest is an include
  pattern; every included entry keeps its path relative to the copy root under the destination, with
  the directories leading to it.

Departures from BuildKit, on purpose (the classic builder's behaviour, clearer errors):
- A wildcard that matches nothing is an error (BuildKit sets AllowEmptyWildcard and copies nothing);
  pass `allow_empty_wildcard=True` for BuildKit's behaviour. A malformed pattern is an error (BuildKit
  ignores filepath.Match's ErrBadPattern and matches nothing).
- Several sources, or a wildcard matching several entries, need a destination ending in `/` (docker's
  classic builder check; BuildKit silently overwrites). The executor knows whether the destination already
  exists as a directory; it passes `dest_is_dir=True` in that case.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

from pybuild.context.entry import Entry
from pybuild.context.ignore import PatternMatcher, filepath_match
from pybuild.errors import ContextError
from pybuild.record import record, replace

__all__ = ["CopyItem", "EntryView", "TreeView", "clean_rel", "include_patterns", "resolve_dest", "select_sources"]

_MAX_LINK_HOPS = 255  # like the kernel's MAXSYMLINKS: a longer chain is a loop
_DIR_MODE = 0o040755


class TreeView(Protocol):
    """What source selection needs from a tree: made by `EntryView` (or a rootfs view), read here."""

    def lookup(self, path: str) -> Entry | None:
        """The entry at `path` ('/'-separated, relative to the root; '' is the root), not following links."""
        ...

    def children(self, path: str) -> Sequence[Entry]:
        """The entries directly inside directory `path`, sorted by name."""
        ...


@record
class CopyItem:
    """One entry of a view and the absolute image path a COPY/ADD gives it.

    Made by `select_sources`; the planner hashes the entries (what a step reads), the executor's file ops
    write them. `entry` is the view entry whose content and metadata are copied: for a symlink that a
    source names (or a wildcard matches) it is the link's resolved target, because BuildKit follows the
    source path; inside copied directories symlinks stay entries of kind 'symlink' (copied as links).
    `top` marks the entry a source resolved to itself; for a directory that is the directory mapped onto
    the destination directory: the executor creates it if missing (BuildKit's CreateDestPath, 0755 parents)
    and, like BuildKit, leaves an existing directory's metadata alone.
    """

    dest: str
    entry: Entry
    source: str
    top: bool = False


class EntryView:
    """A `TreeView` over a list of entries (the walker's output), indexed once by path and by parent.

    The walk must include the directories leading to every entry (the walker yields them). An entry with
    path '' or '.' is the root; without one, the root is a synthetic root-owned 0755 directory.
    """

    __slots__ = ("_by_path", "_children", "root")

    def __init__(self, entries: Iterable[Entry]) -> None:
        by_path: dict[str, Entry] = {}
        children: dict[str, list[Entry]] = {}
        root = Entry("", "dir", _DIR_MODE, 0, 0, 0, 0, 0, 0, 0, 1)
        for entry in entries:
            if entry.path in ("", "."):
                root = replace(entry, path="")
                continue
            by_path[entry.path] = entry
            children.setdefault(_parent(entry.path), []).append(entry)
        self._by_path = by_path
        self._children = {key: tuple(sorted(group, key=_name_key)) for key, group in children.items()}
        self.root = root

    def __len__(self) -> int:
        return len(self._by_path)

    def lookup(self, path: str) -> Entry | None:
        return self.root if path == "" else self._by_path.get(path)

    def children(self, path: str) -> Sequence[Entry]:
        return self._children.get(path, ())

    def descendants(self, path: str) -> Iterator[Entry]:
        """Every entry below directory `path`, depth first in name order (symlinks are not entered)."""
        return _walk(self, path, lambda _rel, _entry: False)


# ---------------------------------------------------------------------------------------------- paths

def _parent(path: str) -> str:
    cut = path.rfind("/")
    return "" if cut < 0 else path[:cut]


def _name(path: str) -> str:
    return path[path.rfind("/") + 1:]


def _name_key(entry: Entry) -> str:
    return _name(entry.path)


def clean_rel(path: str) -> str:
    """`path` cleaned as if absolute, then made relative: '', '.', '..' segments go; '..' stops at the root."""
    out: list[str] = []
    for seg in path.split("/"):
        if seg == "..":
            if out:
                out.pop()
        elif seg not in ("", "."):
            out.append(seg)
    return "/".join(out)


def _join(base: str, rel: str) -> str:
    """Absolute image path `rel` under absolute directory `base`."""
    if not rel:
        return base
    return base + rel if base.endswith("/") else f"{base}/{rel}"


def _rel_to(root: str, path: str) -> str:
    return path[len(root) + 1:] if root else path


def resolve_dest(dest: str, workdir: str = "/") -> tuple[str, bool]:
    """The cleaned absolute destination and whether it names a directory (trailing '/' or '/.', '' or '.').

    A relative destination is resolved against WORKDIR (BuildKit's `pathRelativeToWorkingDir`).
    """
    names_dir = dest in ("", ".") or dest.endswith(("/", "/."))
    full = dest if dest.startswith("/") else f"{workdir}/{dest}"
    return "/" + clean_rel(full), names_dir


# ---------------------------------------------------------------------------------------------- patterns

def has_wildcards(text: str) -> bool:
    """fsutil's containsWildcards: `*`, `?` or `[` not escaped by a backslash."""
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] in "*?[":
            return True
        i += 1
    return False


def _matcher(patterns: Sequence[str], what: str) -> PatternMatcher:
    """A moby/patternmatcher over paths relative to the copy root (`ignore.PatternMatcher`).

    Decision: a leading '/' is dropped (patterns are relative to the copy root, where patternmatcher
    would never match it), and `.` alone is dropped (its cleaned form never matches a relative path).
    Errors name the instruction flag or source the pattern came from.
    """
    cleaned: list[str] = []
    for raw in patterns:
        text = raw.strip()
        negate = text.startswith("!")
        body = clean_rel(text[1:].strip() if negate else text)
        if negate and not text[1:].strip():
            raise ContextError(f'illegal exclusion pattern in {what}: "{raw}"')
        if body:
            cleaned.append(f"!{body}" if negate else body)
    try:
        matcher = PatternMatcher(cleaned)
        for path in ("x", "x/y"):  # upstream reports a malformed class only when matching
            matcher.matches(path)
    except ContextError:
        raise ContextError(f"invalid pattern in {what}: {', '.join(repr(p) for p in patterns)}") from None
    return matcher


# ---------------------------------------------------------------------------------------------- tree walking

def _walk(view: TreeView, root: str, prune: Callable[[str, Entry], bool]) -> Iterator[Entry]:
    """Entries below directory `root`, depth first in name order, skipping subtrees where `prune` says so."""
    stack = list(reversed(view.children(root)))
    while stack:
        entry = stack.pop()
        if prune(_rel_to(root, entry.path), entry):
            continue
        yield entry
        if entry.kind == "dir":
            stack.extend(reversed(view.children(entry.path)))


def _resolve(view: TreeView, path: str, *, follow_last: bool, shown: str) -> Entry | None:
    """The entry at `path`, following symlinks inside the view only (continuity `fs.RootPath` rules).

    None when a component is missing or not a directory (a dangling link resolves to None too).
    """
    pending = [seg for seg in reversed(path.split("/")) if seg not in ("", ".")]
    current: list[str] = []
    hops = 0
    while pending:
        seg = pending.pop()
        if seg == "..":
            if current:
                current.pop()
            continue
        entry = view.lookup("/".join([*current, seg]))
        if entry is None:
            return None
        if entry.kind == "symlink" and (pending or follow_last):
            hops += 1
            if hops > _MAX_LINK_HOPS:
                raise ContextError(f'too many levels of symbolic links resolving "{shown}"')
            target = entry.link_target or ""
            if target.startswith("/"):
                current = []
            pending.extend(seg for seg in reversed(target.split("/")) if seg not in ("", "."))
            continue
        if pending and entry.kind != "dir":
            return None
        current.append(seg)
    return view.lookup("/".join(current))


def _path_of(entry: Entry) -> str:
    return "" if entry.path == "." else entry.path


# ---------------------------------------------------------------------------------------------- selection

@record
class _Options:
    instruction: str
    where: str
    allow_empty: bool
    exclude: PatternMatcher | None


@record
class _Top:
    """What one source resolved to at the top: a followed entry, its name, its key for --exclude."""

    name: str
    entry: Entry
    exclude_key: str | None


def select_sources(
    sources: Sequence[str],
    view: TreeView,
    dest: str,
    *,
    workdir: str = "/",
    excludes: Sequence[str] = (),
    parents: bool = False,
    context_name: str = "context",
    dest_is_dir: bool = False,
    allow_empty_wildcard: bool = False,
    instruction: str = "COPY",
) -> tuple[CopyItem, ...]:
    """Resolve COPY/ADD `sources` (already variable-expanded, no URLs or heredocs) against `view`.

    Returns every view entry the instruction copies with its absolute destination, one item per
    destination (a later source wins, as sequential copies would), sorted by destination path.
    `context_name` is "context" for the build context, or a phrase such as 'stage "builder"' for
    `COPY --from`; it names the tree in errors. Raises ContextError (see the module docstring).
    """
    dest_path, names_dir = resolve_dest(dest, workdir)
    names_dir = names_dir or dest_is_dir or dest_path == "/"
    where = "the build context" if context_name == "context" else context_name
    exclude = _matcher(excludes, f"{instruction} --exclude") if excludes else None
    opts = _Options(instruction, where, allow_empty_wildcard, exclude)
    items: dict[str, CopyItem] = {}
    if parents:
        for src in sources:
            items.update((item.dest, item) for item in _select_parents(src, view, dest_path, opts))
    else:
        tops = [(src, top) for src in sources for top in _tops(src, clean_rel(src), view, opts)]
        if (len(sources) > 1 or len(tops) > 1) and not names_dir:
            raise ContextError(f"When using {instruction} with more than one source file, "
                               "the destination must be a directory and end with a /")
        for src, top in tops:
            items.update((item.dest, item) for item in _expand(src, top, view, dest_path, names_dir, opts))
    return tuple(sorted(items.values(), key=lambda item: item.dest.split("/")))


def _tops(shown: str, rel: str, view: TreeView, opts: _Options) -> list[_Top]:
    """What source `rel` (cleaned; `shown` as written) names: one entry, or each wildcard match."""
    if not has_wildcards(rel):
        entry = _resolve(view, rel, follow_last=True, shown=shown)
        if entry is None:
            raise _missing(shown, rel, view, opts)
        return [_Top(_name(rel), entry, None)]
    matches = _glob(view, rel, shown, opts)
    if not matches and not opts.allow_empty:
        raise ContextError(f'{opts.instruction} source "{shown}" matched no files in {opts.where}',
                           hint=_hint(opts))
    tops: list[_Top] = []
    for key, child in matches:
        entry = child
        if child.kind == "symlink":
            followed = _resolve(view, child.path, follow_last=True, shown=shown)
            if followed is None:
                raise _dangling(shown, child.path, opts)
            entry = followed
        tops.append(_Top(_name(child.path), entry, key))
    return tops


def _glob(view: TreeView, rel: str, shown: str, opts: _Options) -> list[tuple[str, Entry]]:
    """Wildcard matches of `rel` as (path relative to the literal base, unfollowed entry), in name order.

    The literal base is followed; the wildcard segments walk real directories only (fsutil uses lstat).
    """
    segs = rel.split("/")
    first = next(i for i, seg in enumerate(segs) if has_wildcards(seg))
    patterns = segs[first:]
    try:
        for pattern in patterns:
            filepath_match(pattern, "")  # Go checks the whole pattern's syntax
    except ContextError:
        raise ContextError(f'invalid pattern in {opts.instruction} source "{shown}"') from None
    base = _resolve(view, "/".join(segs[:first]), follow_last=True, shown=shown)
    if base is None or base.kind != "dir":
        return []
    base_path = _path_of(base)
    level = [base]
    for depth, pattern in enumerate(patterns):
        last = depth == len(patterns) - 1
        level = [child for parent in level for child in view.children(_path_of(parent))
                 if (last or child.kind == "dir") and filepath_match(pattern, _name(child.path))]
    return [(_rel_to(base_path, child.path), child) for child in level]


def _expand(src: str, top: _Top, view: TreeView, dest: str, names_dir: bool,
            opts: _Options) -> Iterator[CopyItem]:
    """The items one top-level entry produces: a file/link lands at dest (or dest/name), a dir's contents under dest."""
    if opts.exclude is not None and top.exclude_key is not None and opts.exclude.matches(top.exclude_key):
        return
    if top.entry.kind != "dir":
        yield CopyItem(_join(dest, top.name) if names_dir else dest, top.entry, src, True)
        return
    yield CopyItem(dest, top.entry, src, True)
    yield from _contents(view, top.entry, dest, src, opts.exclude, None)


def _contents(view: TreeView, root_entry: Entry, dest: str, src: str,
              exclude: PatternMatcher | None, include: PatternMatcher | None) -> Iterator[CopyItem]:
    """The entries below directory `root_entry` that pass `include`/`exclude` (paths relative to it).

    Like fsutil's copier, the directories leading to a selected entry are copied too (they matter when an
    include pattern or an `!exclusion` selects something inside an otherwise unselected directory).
    """
    root = _path_of(root_entry)

    def prune(rel: str, _entry: Entry) -> bool:  # skip whole subtrees no `!pattern` can bring back
        return exclude is not None and not exclude.exclusions and exclude.matches(rel)

    selected: dict[str, Entry] = {}
    for entry in _walk(view, root, prune):
        rel = _rel_to(root, entry.path)
        if include is not None and not include.matches(rel):
            continue
        if exclude is not None and exclude.exclusions and exclude.matches(rel):
            continue
        selected[rel] = entry
    for rel in list(selected):
        parent = _parent(rel)
        while parent and parent not in selected:
            found = view.lookup(f"{root}/{parent}" if root else parent)
            if found is not None:
                selected[parent] = found
            parent = _parent(parent)
    for rel, entry in selected.items():
        yield CopyItem(_join(dest, rel), entry, src)


def _select_parents(src: str, view: TreeView, dest: str, opts: _Options) -> Iterator[CopyItem]:
    """`COPY --parents`: the copy root is the part before a `/./` pivot (default the root), the rest an
    include pattern; included entries keep their path relative to the copy root (BuildKit dispatchCopy)."""
    parent_raw, pivot, pattern_raw = src.partition("/./")
    if not pivot:
        parent_raw, pattern_raw = "", src
    parent, pattern = clean_rel(parent_raw), clean_rel(pattern_raw)
    wild = has_wildcards(parent) or has_wildcards(pattern)
    full = f"{parent}/{pattern}".strip("/")
    if not wild and _resolve(view, full, follow_last=False, shown=src) is None:
        raise _missing(src, full, view, opts)
    include = _matcher([pattern], f'{opts.instruction} source "{src}"') if pattern else None
    roots = _tops(src, parent, view, _Options(opts.instruction, opts.where, True, None))
    found = 0
    for top in roots:
        if top.entry.kind != "dir":
            yield CopyItem(_join(dest, top.name), top.entry, src, True)
            found += 1
            continue
        yield CopyItem(dest, top.entry, src, True)
        for item in _contents(view, top.entry, dest, src, opts.exclude, include):
            found += 1
            yield item
    if wild and not found and not opts.allow_empty:
        raise ContextError(f'{opts.instruction} source "{src}" matched no files in {opts.where}',
                           hint=_hint(opts))


# ---------------------------------------------------------------------------------------------- errors

def _hint(opts: _Options) -> str | None:
    if opts.where == "the build context":
        return "paths are relative to the build context; check the path and .dockerignore"
    return None


def _missing(shown: str, rel: str, view: TreeView, opts: _Options) -> ContextError:
    if _resolve(view, rel, follow_last=False, shown=shown) is not None:
        return _dangling(shown, rel, opts)
    return ContextError(f'{opts.instruction} source "{shown}" not found in {opts.where}', hint=_hint(opts))


def _dangling(shown: str, rel: str, opts: _Options) -> ContextError:
    where = f'"{rel}"' if rel != clean_rel(shown) else "it"
    return ContextError(f'{opts.instruction} source "{shown}": {where} is a symbolic link that does not '
                        f"resolve inside {opts.where}")


def include_patterns(sources: Sequence[str], *, parents: bool = False) -> tuple[str, ...]:
    """Walker include patterns covering everything `sources` can read; () means the whole tree.

    Each source is cleaned like `select_sources` does (a `--parents` pivot `/./` cleans away). Plain
    sources are Go globs, which moby/patternmatcher include patterns accept with the same or wider
    meaning (`**` spans directories there), so the walk reads a superset. Targets of symlinks that a
    source follows may lie outside these patterns: `context.list_sources` adds them
    (`follow.follow_links`) before walking.
    """
    del parents  # the pivot and the pattern join back into the path the source names
    cleaned = {clean_rel(src) for src in sources}
    if "" in cleaned:
        return ()
    return tuple(sorted(cleaned))
