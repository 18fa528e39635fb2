"""File ops must never read or write outside their roots, whatever the rootfs, context or archive holds."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from pybuild.context.sources import EntryView
from pybuild.context.walk import walk
from pybuild.errors import ContextError, StepFailed
from pybuild.worker.addsource import add_sources
from pybuild.worker.fileops import copy_sources, make_workdir, stage_view, write_heredocs


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A directory standing for the host outside the rootfs, with a sentinel file."""
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "sentinel").write_text("untouched")
    return outside


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    return root


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    c = tmp_path / "ctx"
    c.mkdir()
    (c / "x").write_text("payload")
    return c


def _copy(rootfs: Path, ctx: Path, sources: list[str], dest: str) -> None:
    copy_sources(str(rootfs), sources, dest, view=EntryView(walk(str(ctx))), source_root=str(ctx))


def _snapshot(path: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
            for p in sorted(path.rglob("*"))}


def _relative_escape(rootfs: Path, host: Path) -> str:
    return os.path.relpath(host, rootfs / "etc")


# ---------------------------------------------------------------------------------------------- destinations


def test_link_to_root_writes_into_rootfs(rootfs: Path, ctx: Path, host: Path) -> None:
    (rootfs / "etc/link").symlink_to("/")
    before = _snapshot(host)
    _copy(rootfs, ctx, ["x"], "/etc/link/")
    assert (rootfs / "x").read_text() == "payload"
    assert _snapshot(host) == before


@pytest.mark.parametrize("kind", ["absolute", "relative"])
def test_link_to_host_directory_stays_inside(rootfs: Path, ctx: Path, host: Path, kind: str) -> None:
    target = str(host) if kind == "absolute" else _relative_escape(rootfs, host)
    (rootfs / "etc/link").symlink_to(target)
    before = _snapshot(host)
    _copy(rootfs, ctx, ["x"], "/etc/link/")
    _copy(rootfs, ctx, ["x"], "/etc/link/sentinel")
    assert _snapshot(host) == before
    written = [p for p in rootfs.rglob("sentinel")]
    assert written and all(p.read_text() == "payload" for p in written)


@pytest.mark.parametrize("nested", [False, True])
def test_final_symlink_to_host_file_never_reaches_host(rootfs: Path, ctx: Path, host: Path,
                                                       nested: bool) -> None:
    (rootfs / "etc/shadow").symlink_to(host / "sentinel")
    if nested:  # inside a copied directory the link is replaced
        (ctx / "etc").mkdir()
        (ctx / "etc/shadow").write_text("payload")
        _copy(rootfs, ctx, ["etc"], "/etc/")
        assert not (rootfs / "etc/shadow").is_symlink()
        assert (rootfs / "etc/shadow").read_text() == "payload"
    else:  # the named destination follows the link, inside the rootfs
        _copy(rootfs, ctx, ["x"], "/etc/shadow")
        assert (rootfs / str(host / "sentinel").lstrip("/")).read_text() == "payload"
    assert (host / "sentinel").read_text() == "untouched"


def test_heredoc_through_escaping_link(rootfs: Path, host: Path) -> None:
    (rootfs / "etc/link").symlink_to(_relative_escape(rootfs, host))
    write_heredocs(str(rootfs), [("EOF", b"heredoc")], "/etc/link/sentinel")
    assert (host / "sentinel").read_text() == "untouched"
    assert (rootfs / "host/sentinel").read_bytes() == b"heredoc"  # '..' stopped at the rootfs's root


def test_workdir_proc_self_fd_resolves_inside(rootfs: Path, host: Path) -> None:
    assert make_workdir(str(rootfs), "/proc/self/fd/3") == "/proc/self/fd/3"
    assert (rootfs / "proc/self/fd/3").is_dir()
    (rootfs / "proc2").mkdir()
    (rootfs / "proc2/self").symlink_to(str(host))
    before = _snapshot(host)
    assert make_workdir(str(rootfs), "/proc2/self/fd/4") == str(host) + "/fd/4"
    assert (rootfs / str(host).lstrip("/") / "fd/4").is_dir()
    assert _snapshot(host) == before


def test_workdir_through_dotdot_link(rootfs: Path, host: Path) -> None:
    (rootfs / "etc/up").symlink_to("../../../../../../../../..")
    make_workdir(str(rootfs), "/etc/up/tmp/w")
    assert (rootfs / "tmp/w").is_dir()


# ---------------------------------------------------------------------------------------------- sources


def test_context_link_to_host_file_is_copied_as_link(rootfs: Path, ctx: Path, host: Path) -> None:
    (ctx / "d").mkdir()
    (ctx / "d/shadow").symlink_to("/etc/shadow")
    (ctx / "d/escape").symlink_to(host / "sentinel")
    _copy(rootfs, ctx, ["d"], "/out/")
    assert os.readlink(rootfs / "out/shadow") == "/etc/shadow"
    assert os.readlink(rootfs / "out/escape") == str(host / "sentinel")
    for path in rootfs.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert b"untouched" not in path.read_bytes()


def test_context_link_as_source_follows_inside_context_only(rootfs: Path, ctx: Path, host: Path) -> None:
    (ctx / "escape").symlink_to(host / "sentinel")
    (ctx / "rel").symlink_to("../host/sentinel")
    for name in ("escape", "rel"):
        with pytest.raises(ContextError, match="does not resolve inside"):
            _copy(rootfs, ctx, [name], "/out")
    assert not (rootfs / "out").exists()
    inside = ctx / str(host).lstrip("/")
    inside.mkdir(parents=True)
    (inside / "sentinel").write_text("context copy")
    _copy(rootfs, ctx, ["escape"], "/out")  # the absolute target is read inside the context
    assert (rootfs / "out").read_text() == "context copy"


def test_stage_link_resolves_inside_stage(rootfs: Path, tmp_path: Path, host: Path) -> None:
    stage = tmp_path / "stage"
    (stage / "etc").mkdir(parents=True)
    (stage / "etc/passwd").write_text("stage passwd")
    (stage / "p").symlink_to("/etc/passwd")
    (stage / "h").symlink_to(host / "sentinel")
    copy_sources(str(rootfs), ["/p"], "/got", view=stage_view(str(stage)), source_root=str(stage),
                 from_stage="s")
    assert (rootfs / "got").read_text() == "stage passwd"
    with pytest.raises(ContextError):
        copy_sources(str(rootfs), ["/h"], "/bad", view=stage_view(str(stage)), source_root=str(stage),
                     from_stage="s")


def test_source_swapped_for_link_after_listing_is_refused(rootfs: Path, ctx: Path, host: Path) -> None:
    view = EntryView(walk(str(ctx)))
    (ctx / "x").unlink()
    (ctx / "x").symlink_to(host / "sentinel")
    with pytest.raises(StepFailed, match="cannot read source"):
        copy_sources(str(rootfs), ["x"], "/x", view=view, source_root=str(ctx))
    assert not (rootfs / "x").exists()


def test_source_dir_swapped_for_link_stays_in_context(rootfs: Path, ctx: Path, host: Path) -> None:
    (ctx / "d").mkdir()
    (ctx / "d/sentinel").write_text("ctx")
    view = EntryView(walk(str(ctx)))
    (ctx / "d/sentinel").unlink()
    (ctx / "d").rmdir()
    (ctx / "d").symlink_to(host)  # an absolute link: resolved inside the context, where it does not exist
    with pytest.raises(StepFailed):
        copy_sources(str(rootfs), ["d"], "/d/", view=view, source_root=str(ctx))
    assert not (rootfs / "d/sentinel").exists()


# ---------------------------------------------------------------------------------------------- archives


def _tar(*members: tuple[str, str, str | bytes]) -> bytes:
    """(name, type 'file'|'sym'|'hard'|'dir', data or link target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, value in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = value if isinstance(value, bytes) else value.encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE, "dir": tarfile.DIRTYPE}[kind]
            info.linkname = str(value)
            tar.addfile(info)
    return buf.getvalue()


def _add_tar(rootfs: Path, ctx: Path, data: bytes, dest: str = "/dest/") -> None:
    (ctx / "evil.tar").write_bytes(data)
    add_sources(str(rootfs), ["evil.tar"], dest, view=EntryView(walk(str(ctx))), source_root=str(ctx))


def test_tar_dotdot_entry_is_refused(rootfs: Path, ctx: Path, host: Path) -> None:
    before = _snapshot(host)
    with pytest.raises(StepFailed, match="unsafe archive entry"):
        _add_tar(rootfs, ctx, _tar(("../../../../../../host/sentinel", "file", b"pwned")))
    with pytest.raises(StepFailed, match="unsafe archive entry"):
        _add_tar(rootfs, ctx, _tar(("a/../../x", "file", b"pwned")))
    assert _snapshot(host) == before
    assert not any(p.is_file() and p.read_bytes() == b"pwned" for p in rootfs.parent.rglob("*"))


def test_tar_absolute_entry_lands_in_destination(rootfs: Path, ctx: Path, host: Path) -> None:
    _add_tar(rootfs, ctx, _tar((str(host / "sentinel"), "file", b"abs")))
    assert (host / "sentinel").read_text() == "untouched"
    assert (rootfs / "dest" / str(host / "sentinel").lstrip("/")).read_bytes() == b"abs"


@pytest.mark.parametrize("target", ["/", "ABS_HOST", "../../../../../../../.."])
def test_tar_symlink_then_file_stays_inside(rootfs: Path, ctx: Path, host: Path, target: str) -> None:
    link_target = str(host) if target == "ABS_HOST" else target
    before = _snapshot(host)
    data = _tar(("link", "sym", link_target), ("link/sentinel", "file", b"pwned"))
    try:
        _add_tar(rootfs, ctx, data)
    except StepFailed as exc:
        assert "unsafe archive entry" in str(exc)  # a relative target climbing out is refused (docker)
    assert _snapshot(host) == before
    for path in rootfs.parent.rglob("sentinel"):
        if path.is_relative_to(host):
            continue
        assert path.is_relative_to(rootfs / "dest")


def test_tar_symlink_then_file_through_rootfs_link(rootfs: Path, ctx: Path, host: Path) -> None:
    (rootfs / "dest").mkdir()
    (rootfs / "dest/pre").symlink_to(str(host))  # a link already in the rootfs, pointing at the "host"
    _add_tar(rootfs, ctx, _tar(("pre/sentinel", "file", b"pwned")))
    assert (host / "sentinel").read_text() == "untouched"


def test_tar_hardlink_escape_is_refused(rootfs: Path, ctx: Path, host: Path) -> None:
    with pytest.raises(StepFailed, match="unsafe archive entry"):
        _add_tar(rootfs, ctx, _tar(("h", "hard", "../../host/sentinel")))
    with pytest.raises(StepFailed, match="missing or a directory"):
        _add_tar(rootfs, ctx, _tar(("h", "hard", str(host / "sentinel"))))  # resolved inside the dest
    assert (host / "sentinel").read_text() == "untouched"
    assert os.stat(host / "sentinel").st_nlink == 1


def test_tar_hardlink_through_symlink_dir_stays_inside(rootfs: Path, ctx: Path, host: Path) -> None:
    data = _tar(("l", "sym", str(host)), ("h", "hard", "l/sentinel"))
    with pytest.raises(StepFailed, match="missing or a directory"):
        _add_tar(rootfs, ctx, data)
    assert os.stat(host / "sentinel").st_nlink == 1


def test_tar_into_rootfs_root_cannot_escape(rootfs: Path, ctx: Path, host: Path) -> None:
    data = _tar(("etc/l", "sym", "/"), ("etc/l/etc/l/escape", "file", b"inside"))
    _add_tar(rootfs, ctx, data, dest="/")
    assert (rootfs / "escape").read_bytes() == b"inside"
    assert _snapshot(host) == {"sentinel": b"untouched"}
