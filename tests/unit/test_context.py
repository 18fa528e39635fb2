"""Opening a context: validation, which ignore file wins, the Dockerfile read even when excluded, excluded
files never selected, skipped special files as warnings, and walks limited to what COPY sources read.

An "unused subtree" is simulated by wrapping `os.scandir`: root ignores directory permissions, so the test
records every directory the walk opens (and makes the unused one fail) instead of using chmod.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pybuild.context.checksum import READS
from pybuild.context.context import (
    ContextHasher,
    checksum_paths,
    checksum_selection,
    list_files,
    list_sources,
    open_context,
)
from pybuild.errors import ContextError


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "src").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM scratch\nCOPY src /src\n")
    (root / "src" / "main.py").write_text("print(1)\n")
    (root / "notes.txt").write_text("n\n")
    (root / "secret.key").write_text("k\n")
    return root


def paths(root: Path, **kwargs: object) -> list[str]:
    context = open_context(str(root), **kwargs)  # type: ignore[arg-type]
    return [e.path for e in list_files(context).entries]


def test_missing_and_non_dir_context(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match=r"^context directory not found: .*nope$"):
        open_context(str(tmp_path / "nope"))
    (tmp_path / "file").write_text("")
    with pytest.raises(ContextError, match="context path is not a directory"):
        open_context(str(tmp_path / "file"))


def test_dockerfile_required_unless_optional(ctx: Path) -> None:
    os.unlink(ctx / "Dockerfile")
    with pytest.raises(ContextError, match="Dockerfile not found"):
        open_context(str(ctx))
    assert open_context(str(ctx), require_dockerfile=False).dockerfile is None


def test_context_dockerignore(ctx: Path) -> None:
    (ctx / ".dockerignore").write_text("*.key\nDockerfile\n.dockerignore\n")
    context = open_context(str(ctx))
    assert context.ignore_path == str(ctx / ".dockerignore")
    assert context.dockerfile == b"FROM scratch\nCOPY src /src\n"  # read although excluded
    assert [e.path for e in list_files(context).entries] == ["notes.txt", "src", "src/main.py"]


def test_dockerfile_specific_ignore_file_wins(ctx: Path, tmp_path: Path) -> None:
    (ctx / ".dockerignore").write_text("notes.txt\n")
    build = tmp_path / "build"
    build.mkdir()
    (build / "app.Dockerfile").write_text("FROM scratch\n")
    (build / "app.Dockerfile.dockerignore").write_text("src\n")
    context = open_context(str(ctx), str(build / "app.Dockerfile"))
    assert context.ignore_path == str(build / "app.Dockerfile.dockerignore")
    assert context.excludes == ("src",)
    names = [e.path for e in list_files(context).entries]
    assert "notes.txt" in names and "src" not in names and "src/main.py" not in names


def test_excluded_file_can_never_be_selected(ctx: Path) -> None:
    (ctx / ".dockerignore").write_text("secret.key\nsrc/main.py\n")
    context = open_context(str(ctx))
    listing = list_sources(context, ["secret.key", "src"])
    assert [e.path for e in listing.entries] == ["src"]
    with pytest.raises(ContextError, match="secret.key: not found in the build context"):
        checksum_paths(context, ["secret.key"])


def test_special_files_become_warnings(ctx: Path) -> None:
    os.mkfifo(ctx / "pipe")
    listing = list_files(open_context(str(ctx)))
    assert "pipe" not in [e.path for e in listing.entries]
    assert listing.warnings == ("pipe: fifo skipped",)


def test_unused_subtree_is_never_listed_or_read(ctx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """COPY src only: a huge (here: failing) `vendor/` must not even be opened."""
    vendor = ctx / "vendor" / "deep"
    vendor.mkdir(parents=True)
    for i in range(50):
        (vendor / f"f{i}").write_bytes(b"x" * 100)
    opened: list[str] = []
    real_scandir = os.scandir

    def spying_scandir(path: str) -> object:
        opened.append(os.fsdecode(path))
        if "vendor" in os.fsdecode(path):
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", spying_scandir)
    context = open_context(str(ctx))
    READS.reset()
    listing = list_sources(context, ["src/"])
    sums = checksum_selection(context, listing)
    assert [e.path for e in listing.entries] == ["src", "src/main.py"]
    assert not [p for p in opened if "vendor" in p]
    assert READS.paths == ["src/main.py"]
    assert set(sums.nodes) == {"", "src", "src/main.py"}


@pytest.fixture
def linked(ctx: Path) -> Path:
    """A context whose COPY sources are symlinks: to a file, a directory, a chain, outside, excluded."""
    (ctx / "real").mkdir()
    (ctx / "real" / "x.txt").write_text("x\n")
    (ctx / "real" / "up.txt").symlink_to("../notes.txt")
    (ctx / "link-to-notes").symlink_to("notes.txt")
    (ctx / "abs-link").symlink_to("/notes.txt")  # absolute targets restart at the context root
    (ctx / "lnkdir").symlink_to("real")
    (ctx / "chain").symlink_to("lnkdir/up.txt")
    (ctx / "outside").symlink_to("../../../../etc/hostname")
    (ctx / "to-secret").symlink_to("secret.key")
    (ctx / "loop").symlink_to("loop")
    (ctx / ".dockerignore").write_text("secret.key\n")
    return ctx


@pytest.mark.parametrize(("sources", "listed"), [
    (["link-to-notes"], ["link-to-notes", "notes.txt"]),
    (["abs-link"], ["abs-link", "notes.txt"]),
    (["chain"], ["chain", "lnkdir", "notes.txt", "real", "real/up.txt"]),
    (["lnkdir"], ["lnkdir", "real", "real/up.txt", "real/x.txt"]),
    (["lnkdir/*.txt"], ["lnkdir", "notes.txt", "real", "real/up.txt", "real/x.txt"]),
    (["link-*"], ["link-to-notes", "notes.txt"]),
    (["src"], ["src", "src/main.py"]),
])
def test_sources_list_the_targets_of_links_they_follow(linked: Path, sources: list[str],
                                                       listed: list[str]) -> None:
    from pybuild.context.sources import EntryView, select_sources

    listing = list_sources(open_context(str(linked)), sources)
    assert [e.path for e in listing.entries] == listed
    items = select_sources(sources, EntryView(listing.entries), "/out/")
    assert items and all(item.entry.kind != "symlink" for item in items if item.top)


@pytest.mark.parametrize("source", ["outside", "to-secret", "loop"])
def test_links_out_of_the_context_or_to_excluded_files_still_dangle(linked: Path, source: str) -> None:
    from pybuild.context.sources import EntryView, select_sources

    listing = list_sources(open_context(str(linked)), [source])
    assert [e.path for e in listing.entries] == [source]
    with pytest.raises(ContextError, match="symbolic link|too many levels"):
        select_sources([source], EntryView(listing.entries), "/x")


def test_link_target_changes_the_selection_checksum(linked: Path) -> None:
    context = open_context(str(linked))
    before = checksum_selection(context, list_sources(context, ["link-to-notes"])).checksum
    (linked / "notes.txt").write_text("changed\n")
    assert checksum_selection(context, list_sources(context, ["link-to-notes"])).checksum != before


def test_checksum_paths(ctx: Path) -> None:
    context = open_context(str(ctx))
    sums = checksum_paths(context, ["src", "/src/main.py", "./notes.txt"])
    whole = checksum_selection(context, list_files(context))
    assert sums["src"] == whole.of("src")
    assert sums["/src/main.py"] == whole.of("src/main.py")
    assert sums["./notes.txt"] == whole.of("notes.txt")
    assert checksum_paths(context, ["."])["."] == whole.checksum
    with pytest.raises(ContextError, match="nope: not found"):
        checksum_paths(context, ["nope"])


def test_selection_checksum_ignores_unselected_changes(ctx: Path) -> None:
    context = open_context(str(ctx))
    before = checksum_paths(context, ["src"])["src"]
    (ctx / "notes.txt").write_text("changed\n")
    assert checksum_paths(context, ["src"])["src"] == before
    (ctx / "src" / "main.py").write_text("print(2)\n")
    assert checksum_paths(context, ["src"])["src"] != before


def test_hasher_uses_and_saves_stat_cache(ctx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pybuild.context import statcache

    monkeypatch.setattr(statcache, "RACY_WINDOW_NS", -10**12)  # files made just now count as settled
    context = open_context(str(ctx))
    with ContextHasher(context) as hasher:
        first = hasher.checksum(list_files(context))
    READS.reset()
    with ContextHasher(context) as hasher:
        second = hasher.checksum(list_files(context))
    assert READS.files == 0
    assert first == second
