"""COPY/ADD source selection over in-memory tree views (no file system)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pybuild.context.entry import Entry
from pybuild.context.sources import CopyItem, EntryView, include_patterns, resolve_dest, select_sources
from pybuild.errors import ContextError

DIR, FILE, LINK = 0o040755, 0o100644, 0o120777


def make(spec: dict[str, str | None]) -> EntryView:
    """Tree from {path: None (dir) | "->target" (symlink) | "" (file)}; parents are added as dirs."""
    entries: dict[str, Entry] = {}
    for path, what in spec.items():
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            entries.setdefault(parent, Entry(parent, "dir", DIR, 0, 0, 0, 0, 0, 0, 0, 1))
        if what is None:
            entries[path] = Entry(path, "dir", DIR, 0, 0, 0, 0, 0, 0, 0, 1)
        elif what.startswith("->"):
            entries[path] = Entry(path, "symlink", LINK, 0, 0, 0, 0, 0, 0, 0, 1, what[2:])
        else:
            entries[path] = Entry(path, "file", FILE, 0, 0, len(what), 0, 0, 0, 0, 1)
    return EntryView(sorted(entries.values(), key=lambda e: e.path))


TREE = make({
    "Dockerfile": "", "README.md": "", "go.mod": "", "go.sum": "",
    "app/main.py": "", "app/util.py": "", "app/data.json": "", "app/pkg/__init__.py": "",
    "app/pkg/mod.py": "", "app/pkg/mod.pyc": "", "app/pkg/deep/x.py": "", "app/empty": None,
    "docs/a.md": "", "docs/b.txt": "", "home.txt": "", "homer.md": "", "hom/x.txt": "",
    "web/static/css/site.css": "", "web/static/js/app.js": "", "web/index.html": "",
    "links/to_file": "->../go.mod", "links/to_dir": "->../docs", "links/abs": "->/app/pkg",
    "links/dangling": "->../nope", "links/escape": "->../../../../etc/passwd", "links/loop": "->loop",
    "links/rel": "->to_file", "links/updir": "->..",
    "names/with space.txt": "", "names/caf\udce9.txt": "", "names/[x].txt": "", "names/q?.txt": "",
    "a1": "", "a2": "", "b1": "", "x/a/b/c/f": "", "x/a/b/g": "",
})


def dests(items: tuple[CopyItem, ...]) -> list[str]:
    return [item.dest for item in items]


def pairs(items: tuple[CopyItem, ...]) -> list[tuple[str, str]]:
    return [(item.dest, item.entry.path) for item in items]


# ------------------------------------------------------------------------------------------ files

@pytest.mark.parametrize(("sources", "dest", "expected"), [
    (["go.mod"], "/go.mod", [("/go.mod", "go.mod")]),
    (["go.mod"], "/src/renamed", [("/src/renamed", "go.mod")]),
    (["go.mod"], "/src/", [("/src/go.mod", "go.mod")]),
    (["go.mod"], "/src/.", [("/src/go.mod", "go.mod")]),
    (["./go.mod"], "/", [("/go.mod", "go.mod")]),
    (["app/main.py"], "/srv/", [("/srv/main.py", "app/main.py")]),
    (["app//./main.py"], "/srv/", [("/srv/main.py", "app/main.py")]),
    (["app/pkg/../main.py"], "/m", [("/m", "app/main.py")]),
    (["../go.mod"], "/d/", [("/d/go.mod", "go.mod")]),
    (["../../../go.mod"], "/d/", [("/d/go.mod", "go.mod")]),
    (["/go.mod"], "/d/", [("/d/go.mod", "go.mod")]),
    (["/app/../../go.mod"], "/x", [("/x", "go.mod")]),
    (["go.mod", "go.sum"], "/d/", [("/d/go.mod", "go.mod"), ("/d/go.sum", "go.sum")]),
], ids=lambda v: repr(v))
def test_file_sources(sources: list[str], dest: str, expected: list[tuple[str, str]]) -> None:
    assert pairs(select_sources(sources, TREE, dest)) == expected


def test_file_items_are_top_and_keep_source() -> None:
    (item,) = select_sources(["./go.mod"], TREE, "/x")
    assert item.top and item.source == "./go.mod" and item.entry is TREE.lookup("go.mod")


@pytest.mark.parametrize(("dest", "workdir", "expected"), [
    ("rel", "/work", ("/work/rel", False)),
    ("rel/", "/work", ("/work/rel", True)),
    (".", "/work", ("/work", True)),
    ("", "/work", ("/work", True)),
    ("./", "/work", ("/work", True)),
    ("../up/", "/work/dir", ("/work/up", True)),
    ("../../../x", "/work", ("/x", False)),
    ("/abs//p/", "/work", ("/abs/p", True)),
    ("/abs/.", "/work", ("/abs", True)),
    ("/", "/work", ("/", True)),
    ("x", "/", ("/x", False)),
])
def test_resolve_dest(dest: str, workdir: str, expected: tuple[str, bool]) -> None:
    assert resolve_dest(dest, workdir) == expected


@pytest.mark.parametrize(("dest", "workdir", "expected"), [
    ("go.mod", "/app", "/app/go.mod"),
    (".", "/app", "/app/go.mod"),
    ("./", "/app", "/app/go.mod"),
    ("sub/", "/app", "/app/sub/go.mod"),
    ("../etc/g", "/app", "/etc/g"),
])
def test_relative_dest_uses_workdir(dest: str, workdir: str, expected: str) -> None:
    assert dests(select_sources(["go.mod"], TREE, dest, workdir=workdir)) == [expected]


def test_dest_is_dir_flag_for_existing_directories() -> None:
    assert dests(select_sources(["go.mod"], TREE, "/etc", dest_is_dir=True)) == ["/etc/go.mod"]
    assert dests(select_sources(["go.mod", "go.sum"], TREE, "/etc", dest_is_dir=True)) == [
        "/etc/go.mod", "/etc/go.sum"]


# ------------------------------------------------------------------------------------------ directories

def test_dir_source_copies_contents() -> None:
    items = select_sources(["app/pkg"], TREE, "/srv")
    assert pairs(items) == [
        ("/srv", "app/pkg"), ("/srv/__init__.py", "app/pkg/__init__.py"), ("/srv/deep", "app/pkg/deep"),
        ("/srv/deep/x.py", "app/pkg/deep/x.py"), ("/srv/mod.py", "app/pkg/mod.py"),
        ("/srv/mod.pyc", "app/pkg/mod.pyc")]
    assert [item.top for item in items] == [True, False, False, False, False, False]


@pytest.mark.parametrize("source", ["app/pkg/", "./app/pkg", "app/pkg/.", "/app/pkg", "../app/pkg"])
def test_dir_source_spellings(source: str) -> None:
    assert dests(select_sources([source], TREE, "/srv/")) == dests(select_sources(["app/pkg"], TREE, "/srv"))


def test_empty_dir_source_still_yields_the_destination_dir() -> None:
    assert pairs(select_sources(["app/empty"], TREE, "/e")) == [("/e", "app/empty")]


@pytest.mark.parametrize("source", [".", "./", "/", "..", ""])
def test_context_root_source(source: str) -> None:
    items = select_sources([source], TREE, "/ctx")
    assert items[0].dest == "/ctx" and items[0].top and items[0].entry.path == ""
    assert len(items) == len(TREE) + 1


def test_root_dest() -> None:
    assert dests(select_sources(["docs"], TREE, "/")) == ["/", "/a.md", "/b.txt"]


# ------------------------------------------------------------------------------------------ globs

@pytest.mark.parametrize(("source", "expected"), [
    ("go.*", ["/d/go.mod", "/d/go.sum"]),
    ("a?", ["/d/a1", "/d/a2"]),
    ("[ab]1", ["/d/a1", "/d/b1"]),
    ("[a-b]2", ["/d/a2"]),
    ("[^a]1", ["/d/b1"]),
    ("app/*.py", ["/d/main.py", "/d/util.py"]),
    ("app/*/*.py", ["/d/__init__.py", "/d/mod.py"]),
    ("*/pkg/mod.py?", ["/d/mod.pyc"]),
    ("web/*/css", ["/d", "/d/site.css"]),  # one matched dir: its contents
    ("app/**/*.py", ["/d/__init__.py", "/d/mod.py"]),  # Go's ** is * (one segment) in a plain source
    ("names/[[]x].txt", ["/d/[x].txt"]),
    ("names/\\[x\\]*", ["/d/[x].txt"]),  # escapes work inside a pattern
    ("names/q[?].txt", ["/d/q?.txt"]),
    ("names/q\\?.t?t", ["/d/q?.txt"]),
    ("names/with *", ["/d/with space.txt"]),
    ("names/caf?.txt", ["/d/caf\udce9.txt"]),
])
def test_globs(source: str, expected: list[str]) -> None:
    assert dests(select_sources([source], TREE, "/d/")) == expected


def test_glob_matching_a_directory_copies_its_contents() -> None:
    assert pairs(select_sources(["do*"], TREE, "/d/")) == [
        ("/d", "docs"), ("/d/a.md", "docs/a.md"), ("/d/b.txt", "docs/b.txt")]


def test_glob_single_match_to_file_dest() -> None:
    assert dests(select_sources(["README.*"], TREE, "/readme")) == ["/readme"]


def test_glob_does_not_walk_through_symlinked_dirs() -> None:
    assert select_sources(["links/*/a.md"], TREE, "/d/", allow_empty_wildcard=True) == ()


def test_glob_base_is_followed() -> None:
    assert dests(select_sources(["links/to_dir/*.md"], TREE, "/d/")) == ["/d/a.md"]


@pytest.mark.parametrize("source", ["[", "a[", "[]a]", "[-a]", "x\\"])
def test_bad_glob_is_an_error(source: str) -> None:
    with pytest.raises(ContextError, match="invalid pattern"):
        select_sources([f"go*{source}"], TREE, "/d/")


# ------------------------------------------------------------------------------------------ errors

@pytest.mark.parametrize(("sources", "dest"), [
    (["go.mod", "go.sum"], "/d"),
    (["go.*"], "/d"),
    (["go.mod", "docs"], "/d"),
    (["go.mod", "go.mod"], "/d"),
    (["go.mod", "go.sum"], "rel"),
])
def test_several_sources_need_a_directory(sources: list[str], dest: str) -> None:
    with pytest.raises(ContextError) as info:
        select_sources(sources, TREE, dest)
    assert str(info.value) == ("When using COPY with more than one source file, the destination must be a "
                               "directory and end with a /")


def test_several_sources_message_names_add() -> None:
    with pytest.raises(ContextError, match="When using ADD"):
        select_sources(["go.*"], TREE, "/d", instruction="ADD")


@pytest.mark.parametrize(("source", "message"), [
    ("app/*.rs", 'COPY source "app/*.rs" matched no files in the build context'),
    ("nope/*", 'COPY source "nope/*" matched no files in the build context'),
    ("go.mod/*", 'COPY source "go.mod/*" matched no files in the build context'),
    ("missing.txt", 'COPY source "missing.txt" not found in the build context'),
    ("app/main.py/x", 'COPY source "app/main.py/x" not found in the build context'),
    ("../nope", 'COPY source "../nope" not found in the build context'),
])
def test_no_match_errors(source: str, message: str) -> None:
    with pytest.raises(ContextError) as info:
        select_sources([source], TREE, "/d/")
    assert str(info.value) == message
    assert info.value.hint is not None and ".dockerignore" in info.value.hint


def test_no_match_in_stage_names_the_stage() -> None:
    with pytest.raises(ContextError) as info:
        select_sources(["/out/*.bin"], TREE, "/d/", context_name='stage "builder"')
    assert str(info.value) == 'COPY source "/out/*.bin" matched no files in stage "builder"'
    assert info.value.hint is None


def test_allow_empty_wildcard_is_buildkit_behaviour() -> None:
    assert select_sources(["app/*.rs"], TREE, "/d/", allow_empty_wildcard=True) == ()
    with pytest.raises(ContextError, match="not found"):
        select_sources(["missing"], TREE, "/d/", allow_empty_wildcard=True)


# ------------------------------------------------------------------------------------------ symlinks

@pytest.mark.parametrize(("source", "dest", "expected"), [
    ("links/to_file", "/d/", [("/d/to_file", "go.mod")]),
    ("links/rel", "/d/", [("/d/rel", "go.mod")]),
    ("links/to_dir", "/d", [("/d", "docs"), ("/d/a.md", "docs/a.md"), ("/d/b.txt", "docs/b.txt")]),
    ("links/abs/deep", "/d", [("/d", "app/pkg/deep"), ("/d/x.py", "app/pkg/deep/x.py")]),
    ("links/updir/go.mod", "/d", [("/d", "go.mod")]),
    ("links/to_f*", "/d/", [("/d/to_file", "go.mod")]),
])
def test_source_symlinks_are_followed_inside_the_view(
        source: str, dest: str, expected: list[tuple[str, str]]) -> None:
    assert pairs(select_sources([source], TREE, dest)) == expected


def test_symlinks_inside_a_copied_dir_stay_links() -> None:
    items = {item.dest: item.entry for item in select_sources(["links"], TREE, "/l")}
    assert items["/l/to_dir"].kind == "symlink" and items["/l/to_dir"].link_target == "../docs"
    assert items["/l/dangling"].kind == "symlink"
    assert "/l/to_dir/a.md" not in items


@pytest.mark.parametrize("source", ["links/dangling", "links/escape", "links/dangl*"])
def test_unresolvable_source_link_is_an_error(source: str) -> None:
    with pytest.raises(ContextError, match="symbolic link that does not resolve inside the build context"):
        select_sources([source], TREE, "/d/")


def test_a_literal_source_is_literal() -> None:
    # BuildKit's splitWildcards: no unescaped wildcard means the path is looked up as written.
    view = make({"a\\b": ""})
    assert dests(select_sources(["a\\b"], view, "/d/")) == ["/d/a\\b"]
    with pytest.raises(ContextError, match="not found"):
        select_sources(["names/\\[x\\].txt"], TREE, "/d/")


def test_escaping_link_never_reaches_the_host() -> None:
    view = make({"etc/passwd": "", "l": "->../../../../etc/passwd"})
    assert pairs(select_sources(["l"], view, "/p")) == [("/p", "etc/passwd")]


def test_symlink_loop_is_an_error() -> None:
    with pytest.raises(ContextError, match="too many levels of symbolic links"):
        select_sources(["links/loop"], TREE, "/d/")


# ------------------------------------------------------------------------------------------ --exclude

@pytest.mark.parametrize(("sources", "excludes", "dest", "expected"), [
    (["app/pkg"], ["*.pyc"], "/s", ["/s", "/s/__init__.py", "/s/deep", "/s/deep/x.py", "/s/mod.py"]),
    (["app/pkg"], ["deep"], "/s", ["/s", "/s/__init__.py", "/s/mod.py", "/s/mod.pyc"]),
    (["app/pkg"], ["**/*.py"], "/s", ["/s", "/s/deep", "/s/mod.pyc"]),
    (["app/pkg"], ["app/pkg/*.pyc"], "/s",  # relative to the copied dir, not the context
     ["/s", "/s/__init__.py", "/s/deep", "/s/deep/x.py", "/s/mod.py", "/s/mod.pyc"]),
    (["app/pkg"], ["deep", "!deep/x.py"], "/s",
     ["/s", "/s/__init__.py", "/s/deep", "/s/deep/x.py", "/s/mod.py", "/s/mod.pyc"]),
    (["app/pkg"], ["*", "!mod.py"], "/s", ["/s", "/s/mod.py"]),
    (["hom*"], ["*.txt"], "/m/", ["/m", "/m/homer.md"]),  # the reference's example (+ dir hom/, x.txt out)
    (["home.txt"], ["*.txt"], "/m/", ["/m/home.txt"]),  # a source named literally is not excluded
    (["web"], ["static/*/"], "/w", ["/w", "/w/index.html", "/w/static"]),
    (["web"], ["/static"], "/w", ["/w", "/w/index.html"]),
    (["docs"], ["", "  ", "."], "/d", ["/d", "/d/a.md", "/d/b.txt"]),
])
def test_excludes(sources: list[str], excludes: list[str], dest: str, expected: list[str]) -> None:
    assert dests(select_sources(sources, TREE, dest, excludes=excludes)) == expected


def test_exclude_everything_under_root_source() -> None:
    items = select_sources(["."], TREE, "/c", excludes=["*", "!go.*"])
    assert dests(items) == ["/c", "/c/go.mod", "/c/go.sum"]


@pytest.mark.parametrize("pattern", ["!", "[", "a[b"])
def test_bad_exclude_is_an_error(pattern: str) -> None:
    with pytest.raises(ContextError, match="COPY --exclude"):
        select_sources(["docs"], TREE, "/d", excludes=[pattern])


# ------------------------------------------------------------------------------------------ --parents

@pytest.mark.parametrize(("sources", "dest", "expected"), [
    (["app/main.py"], "/p", ["/p", "/p/app", "/p/app/main.py"]),
    (["./app/main.py", "docs/a.md"], "/p/", ["/p", "/p/app", "/p/app/main.py", "/p/docs", "/p/docs/a.md"]),
    (["app/pkg/deep"], "/p", ["/p", "/p/app", "/p/app/pkg", "/p/app/pkg/deep", "/p/app/pkg/deep/x.py"]),
    (["./app/./pkg/mod.py"], "/p", ["/p", "/p/pkg", "/p/pkg/mod.py"]),
    (["app/pkg/./deep/x.py"], "/p", ["/p", "/p/deep", "/p/deep/x.py"]),
    (["./x/a/./b/c"], "/dst", ["/dst", "/dst/b", "/dst/b/c", "/dst/b/c/f"]),
    (["app/*.py"], "/p", ["/p", "/p/app", "/p/app/main.py", "/p/app/util.py"]),
    (["app/**/*.py"], "/p", ["/p", "/p/app", "/p/app/main.py", "/p/app/pkg", "/p/app/pkg/__init__.py",
                             "/p/app/pkg/deep", "/p/app/pkg/deep/x.py", "/p/app/pkg/mod.py", "/p/app/util.py"]),
    (["app/./**/mod.py"], "/p", ["/p", "/p/pkg", "/p/pkg/mod.py"]),
    (["../app/main.py"], "/p", ["/p", "/p/app", "/p/app/main.py"]),
])
def test_parents(sources: list[str], dest: str, expected: list[str]) -> None:
    assert dests(select_sources(sources, TREE, dest, parents=True)) == expected


def test_parents_with_exclude_relative_to_copy_root() -> None:
    items = select_sources(["app/./pkg"], TREE, "/p", parents=True, excludes=["pkg/*.pyc", "pkg/deep"])
    assert dests(items) == ["/p", "/p/pkg", "/p/pkg/__init__.py", "/p/pkg/mod.py"]


def test_parents_multiple_sources_do_not_need_a_trailing_slash() -> None:
    assert "/p/go.mod" in dests(select_sources(["go.mod", "go.sum"], TREE, "/p", parents=True))


@pytest.mark.parametrize(("source", "message"), [
    ("app/nope.py", 'COPY source "app/nope.py" not found in the build context'),
    ("app/./nope.py", 'COPY source "app/./nope.py" not found in the build context'),
    ("app/*.rs", 'COPY source "app/*.rs" matched no files in the build context'),
])
def test_parents_errors(source: str, message: str) -> None:
    with pytest.raises(ContextError) as info:
        select_sources([source], TREE, "/p", parents=True)
    assert str(info.value) == message


# ------------------------------------------------------------------------------------------ names, order

def test_names_with_spaces_and_non_utf8() -> None:
    items = select_sources(["names/with space.txt", "names/caf\udce9.txt"], TREE, "/n/")
    assert dests(items) == ["/n/caf\udce9.txt", "/n/with space.txt"]
    assert os.fsencode(items[0].dest) == b"/n/caf\xe9.txt"


def test_later_source_wins_a_destination() -> None:
    (item,) = select_sources(["go.mod", "go.sum"], TREE, "/d/", dest_is_dir=True)[:1]
    items = select_sources(["docs/a.md", "hom/x.txt", "docs"], TREE, "/d/")
    assert {i.dest: i.entry.path for i in items}["/d/a.md"] == "docs/a.md"
    assert item.dest == "/d/go.mod"


def test_result_is_sorted_parents_first_and_deterministic() -> None:
    view = make({"a/b": "", "a-b": "", "a/c/d": "", "a.b": ""})
    once = select_sources(["."], view, "/r")
    assert dests(once) == ["/r", "/r/a", "/r/a/b", "/r/a/c", "/r/a/c/d", "/r/a-b", "/r/a.b"]
    originals = [view.lookup(p) for p in ("a", "a/b", "a-b", "a/c", "a/c/d", "a.b")]
    shuffled = EntryView(reversed([entry for entry in originals if entry is not None]))
    assert select_sources(["."], shuffled, "/r") == once


def test_view_indexes() -> None:
    assert [e.path for e in TREE.children("app")] == [
        "app/data.json", "app/empty", "app/main.py", "app/pkg", "app/util.py"]
    assert [e.path for e in TREE.descendants("app/pkg")] == [
        "app/pkg/__init__.py", "app/pkg/deep", "app/pkg/deep/x.py", "app/pkg/mod.py", "app/pkg/mod.pyc"]
    assert TREE.lookup("nope") is None and TREE.lookup("").kind == "dir"  # type: ignore[union-attr]


def test_view_root_entry_from_walker() -> None:
    root = Entry(".", "dir", 0o040700, 5, 5, 0, 0, 0, 0, 0, 1)
    view = EntryView([root, Entry("f", "file", FILE, 0, 0, 0, 0, 0, 0, 0, 1)])
    assert select_sources(["."], view, "/x")[0].entry.uid == 5


def test_large_view_is_fast() -> None:
    entries = [Entry(f"d{i}", "dir", DIR, 0, 0, 0, 0, 0, 0, 0, 1) for i in range(200)]
    entries += [Entry(f"d{i}/f{j}.py", "file", FILE, 0, 0, 0, 0, 0, 0, 0, 1)
                for i in range(200) for j in range(100)]
    view = EntryView(entries)
    assert len(select_sources(["."], view, "/x", excludes=["d1*"])) == 1 + 200 * 101 - 111 * 101
    assert len(select_sources(["d1/*.py"], view, "/x/")) == 100
    assert len(select_sources(["d*/f1.py"], view, "/x/")) == 1  # 200 matches, one destination: last wins


# ------------------------------------------------------------------------------------------ include_patterns

@pytest.mark.parametrize(("sources", "parents", "expected"), [
    (["go.mod", "./go.sum", "/app/*.py"], False, ("app/*.py", "go.mod", "go.sum")),
    (["../x", "x"], False, ("x",)),
    (["app", "."], False, ()),
    (["./x/a/./b/c"], True, ("x/a/b/c",)),
    (["a/**/*.go"], True, ("a/**/*.go",)),
])
def test_include_patterns(sources: list[str], parents: bool, expected: tuple[str, ...]) -> None:
    assert include_patterns(sources, parents=parents) == expected


# ------------------------------------------------------------------------------------------ properties

NAMES = st.sampled_from(["a", "b", "c.py", "d.txt", "e f", "g\udcff", "[h]"])
PATHS = st.lists(NAMES, min_size=1, max_size=4).map("/".join)
KINDS = st.sampled_from(["file", "dir", "link"])
EXCLUDES = st.lists(st.sampled_from(["*.py", "a", "b/*", "**/d.txt", "e f", "*/c.py", "[a-b]"]), max_size=3)


@st.composite
def trees(draw: st.DrawFn) -> EntryView:
    spec: dict[str, str | None] = {}
    for path in draw(st.lists(PATHS, min_size=1, max_size=25)):
        if any(path.startswith(other + "/") and spec[other] is not None for other in spec) or any(
                other.startswith(path + "/") for other in spec):
            continue  # keep files and links leaves
        kind = draw(KINDS)
        spec[path] = None if kind == "dir" else ("->" + draw(PATHS) if kind == "link" else "")
    return make(spec)


@settings(max_examples=150, deadline=None)
@given(trees(), EXCLUDES, st.sampled_from([".", "a", "*", "a/*", "b"]))
def test_selected_entries_exist_and_nothing_excluded_is_selected(
        view: EntryView, excludes: list[str], source: str) -> None:
    try:
        items = select_sources([source], view, "/dst/", excludes=excludes)
    except ContextError:
        return
    for item in items:
        assert item.dest.startswith("/dst")
        assert view.lookup(item.entry.path) == item.entry or item.entry.path == ""
    if source == ".":
        from pybuild.context.sources import _matcher
        matcher = _matcher(excludes, "test")
        selected = {item.entry.path for item in items if not item.top}
        expected = {e.path for e in view.descendants("") if not matcher.matches(e.path)}
        assert selected == expected
        assert all(item.dest == "/dst/" + item.entry.path for item in items if not item.top)
    assert len({item.dest for item in items}) == len(items)
    assert select_sources([source], view, "/dst/", excludes=excludes) == items
