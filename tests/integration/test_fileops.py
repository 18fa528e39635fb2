"""COPY / heredoc / ADD / WORKDIR onto temp-dir rootfses, with real files and a real local HTTP server."""

from __future__ import annotations

import bz2
import email.utils
import gzip
import hashlib
import io
import lzma
import os
import stat
import tarfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

import pytest

from pybuild.context.sources import EntryView
from pybuild.context.walk import walk
from pybuild.errors import ContextError, DockerfileError, StepFailed
from pybuild.worker.addsource import add_sources, add_url, is_git_url
from pybuild.worker.fileops import (
    copy_sources,
    dest_is_dir,
    make_workdir,
    parse_chmod,
    stage_view,
    write_heredocs,
)

ROOT = os.geteuid() == 0
F = TypeVar("F", bound=Callable[..., object])


def needs_root(fn: F) -> F:
    """Ownership checks: marked `root`, skipped with a reason when not running as root."""
    return pytest.mark.root(pytest.mark.skipif(not ROOT, reason="ownership needs root")(fn))  # type: ignore[no-any-return]
MTIME = 1_600_000_000


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nappgrp:x:1001:\nstaff:x:50:app\n")
    (root / "existing").mkdir()
    return root


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    c = tmp_path / "ctx"
    (c / "dir/sub").mkdir(parents=True)
    (c / "a.txt").write_text("A")
    (c / "run.sh").write_text("#!/bin/sh\n")
    (c / "run.sh").chmod(0o755)
    (c / "dir/one").write_text("1")
    (c / "dir/sub/two").write_text("2")
    (c / "dir/link").symlink_to("one")
    for p in [c / "a.txt", c / "run.sh", c / "dir/one", c / "dir/sub/two", c / "dir/sub", c / "dir"]:
        os.utime(p, (MTIME, MTIME))
    if ROOT:
        os.chown(c / "a.txt", 4321, 4321)
    return c


def _copy(rootfs: Path, ctx: Path, sources: list[str], dest: str, **kw: object) -> None:
    copy_sources(str(rootfs), sources, dest, view=EntryView(walk(str(ctx))), source_root=str(ctx),
                 **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- COPY


def test_copy_file_preserves_mode_and_mtime(rootfs: Path, ctx: Path) -> None:
    _copy(rootfs, ctx, ["run.sh", "a.txt"], "/app/")
    st = os.stat(rootfs / "app/run.sh")
    assert stat.S_IMODE(st.st_mode) == 0o755 and int(st.st_mtime) == MTIME
    assert (rootfs / "app/a.txt").read_text() == "A"
    parent = os.stat(rootfs / "app")
    assert stat.S_IMODE(parent.st_mode) == 0o755


@needs_root
def test_copy_from_context_is_owned_by_root(rootfs: Path, ctx: Path) -> None:
    _copy(rootfs, ctx, ["a.txt"], "/a.txt")
    st = os.stat(rootfs / "a.txt")
    assert (st.st_uid, st.st_gid) == (0, 0)


def test_copy_file_to_file_name(rootfs: Path, ctx: Path) -> None:
    _copy(rootfs, ctx, ["a.txt"], "/x/y/renamed")
    assert (rootfs / "x/y/renamed").read_text() == "A"


def test_copy_into_existing_directory_without_slash(rootfs: Path, ctx: Path) -> None:
    assert dest_is_dir(str(rootfs), "/existing")
    _copy(rootfs, ctx, ["a.txt"], "/existing")
    assert (rootfs / "existing/a.txt").read_text() == "A"


def test_copy_relative_dest_uses_workdir(rootfs: Path, ctx: Path) -> None:
    _copy(rootfs, ctx, ["a.txt"], "sub/", workdir="/srv")
    assert (rootfs / "srv/sub/a.txt").exists()


def test_copy_directory_contents(rootfs: Path, ctx: Path) -> None:
    _copy(rootfs, ctx, ["dir"], "/opt/d")
    assert sorted(os.listdir(rootfs / "opt/d")) == ["link", "one", "sub"]
    assert (rootfs / "opt/d/sub/two").read_text() == "2"
    assert os.readlink(rootfs / "opt/d/link") == "one"
    assert int(os.stat(rootfs / "opt/d/sub").st_mtime) == MTIME
    assert int(os.stat(rootfs / "opt/d").st_mtime) == MTIME  # a new top directory takes the source's


def test_copy_dir_into_existing_keeps_its_metadata(rootfs: Path, ctx: Path) -> None:
    os.chmod(rootfs / "existing", 0o700)
    _copy(rootfs, ctx, ["dir/"], "/existing/")
    assert stat.S_IMODE(os.stat(rootfs / "existing").st_mode) == 0o700
    assert (rootfs / "existing/one").exists()


def test_copy_source_symlink_is_followed_in_context(rootfs: Path, ctx: Path) -> None:
    _copy(rootfs, ctx, ["dir/link"], "/l")
    assert not (rootfs / "l").is_symlink() and (rootfs / "l").read_text() == "1"


def test_several_sources_need_a_directory(rootfs: Path, ctx: Path) -> None:
    with pytest.raises(ContextError, match="must be a directory"):
        _copy(rootfs, ctx, ["a.txt", "run.sh"], "/nodir")


def test_copy_missing_source(rootfs: Path, ctx: Path) -> None:
    with pytest.raises(ContextError, match="not found"):
        _copy(rootfs, ctx, ["nope"], "/x")


def test_hardlinks_are_preserved(rootfs: Path, ctx: Path) -> None:
    os.link(ctx / "a.txt", ctx / "hard.txt")
    _copy(rootfs, ctx, ["a.txt", "hard.txt"], "/h/")
    assert os.stat(rootfs / "h/a.txt").st_ino == os.stat(rootfs / "h/hard.txt").st_ino


def test_destination_link_is_followed_inside_rootfs(rootfs: Path, ctx: Path) -> None:
    (rootfs / "victim").write_text("old")
    (rootfs / "l").symlink_to("/victim")
    _copy(rootfs, ctx, ["a.txt"], "/l")  # BuildKit resolves the destination with fs.RootPath
    assert (rootfs / "l").is_symlink() and (rootfs / "victim").read_text() == "A"


def test_existing_symlink_inside_copied_tree_is_replaced(rootfs: Path, ctx: Path) -> None:
    (rootfs / "n").mkdir()
    (rootfs / "victim").write_text("keep")
    (rootfs / "n/one").symlink_to("/victim")
    _copy(rootfs, ctx, ["dir/"], "/n/")
    assert (rootfs / "victim").read_text() == "keep"
    assert not (rootfs / "n/one").is_symlink() and (rootfs / "n/one").read_text() == "1"


def test_heredoc_destination_link_is_followed(rootfs: Path) -> None:
    (rootfs / "etc/real").write_text("old")
    (rootfs / "etc/conf").symlink_to("real")
    write_heredocs(str(rootfs), [("EOF", b"new")], "/etc/conf")
    assert (rootfs / "etc/conf").is_symlink() and (rootfs / "etc/real").read_bytes() == b"new"


def test_file_over_directory_is_an_error(rootfs: Path, ctx: Path) -> None:
    (rootfs / "target/a.txt").mkdir(parents=True)
    with pytest.raises(StepFailed, match="cannot overwrite directory"):
        _copy(rootfs, ctx, ["a.txt"], "/target/")


def test_existing_link_to_dir_is_written_through(rootfs: Path, ctx: Path) -> None:
    (rootfs / "usr/lib").mkdir(parents=True)
    (rootfs / "lib").symlink_to("usr/lib")
    (ctx / "tree/lib").mkdir(parents=True)
    (ctx / "tree/lib/x.so").write_text("so")
    _copy(rootfs, ctx, ["tree/"], "/")
    assert (rootfs / "lib").is_symlink()
    assert (rootfs / "usr/lib/x.so").read_text() == "so"


def test_parents_and_exclude(rootfs: Path, ctx: Path) -> None:
    (ctx / "dir/skip.pyc").write_text("x")
    _copy(rootfs, ctx, ["dir/sub/two"], "/p/", parents=True)
    assert (rootfs / "p/dir/sub/two").read_text() == "2"
    _copy(rootfs, ctx, ["dir/"], "/e/", excludes=["*.pyc"])
    assert (rootfs / "e/one").exists() and not (rootfs / "e/skip.pyc").exists()


def test_link_flag_is_accepted(rootfs: Path, ctx: Path) -> None:
    _copy(rootfs, ctx, ["a.txt"], "/linked", link=True)
    assert (rootfs / "linked").read_text() == "A"


# ---------------------------------------------------------------------------------------------- chown / chmod


@needs_root
def test_chown_names_from_destination(rootfs: Path, ctx: Path) -> None:
    _copy(rootfs, ctx, ["a.txt"], "/new/deep/", chown="app:staff")
    st = os.stat(rootfs / "new/deep/a.txt")
    assert (st.st_uid, st.st_gid) == (1000, 50)
    parent = os.stat(rootfs / "new/deep")
    assert (parent.st_uid, parent.st_gid, stat.S_IMODE(parent.st_mode)) == (1000, 50, 0o755)


@needs_root
@pytest.mark.parametrize(("spec", "want"), [("app", (1000, 1001)), ("77", (77, 77)), ("77:88", (77, 88)),
                                            ("0:appgrp", (0, 1001))])
def test_chown_forms(rootfs: Path, ctx: Path, spec: str, want: tuple[int, int]) -> None:
    _copy(rootfs, ctx, ["dir"], "/c/", chown=spec)
    for rel in ("c", "c/one", "c/sub/two"):
        st = os.lstat(rootfs / rel)
        assert (st.st_uid, st.st_gid) == want
    st = os.lstat(rootfs / "c/link")
    assert (st.st_uid, st.st_gid) == want


def test_chown_unknown_user(rootfs: Path, ctx: Path) -> None:
    with pytest.raises(StepFailed, match='--chown: unable to find user nobody'):
        _copy(rootfs, ctx, ["a.txt"], "/x", chown="nobody")
    with pytest.raises(StepFailed, match="unable to find group nogroup"):
        _copy(rootfs, ctx, ["a.txt"], "/x", chown="app:nogroup")


def test_chmod_octal_and_symbolic(rootfs: Path, ctx: Path) -> None:
    _copy(rootfs, ctx, ["dir"], "/m/", chmod="600")
    assert stat.S_IMODE(os.stat(rootfs / "m/one").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(rootfs / "m/sub").st_mode) == 0o600
    _copy(rootfs, ctx, ["a.txt"], "/s", chmod="u+x,g-w,o=r")
    mode = stat.S_IMODE(os.stat(ctx / "a.txt").st_mode)
    want = ((mode | 0o100) & ~0o020 & ~0o007) | 0o004
    assert stat.S_IMODE(os.stat(rootfs / "s").st_mode) == want


@pytest.mark.parametrize(("spec", "mode", "is_dir", "want"), [
    ("755", 0o600, False, 0o755), ("0644", 0o777, False, 0o644), ("a+X", 0o644, True, 0o755),
    ("a+X", 0o644, False, 0o644), ("+x", 0o600, False, 0o711), ("go=u", 0o640, False, 0o666),
    ("u+s,o-rwx", 0o755, False, 0o4750), ("=r", 0o777, False, 0o444),
])
def test_parse_chmod(spec: str, mode: int, is_dir: bool, want: int) -> None:
    assert parse_chmod(spec)(mode, is_dir) == want


@pytest.mark.parametrize("spec", ["89", "77777", "u+q", "rwx", ""])
def test_parse_chmod_rejects(spec: str) -> None:
    with pytest.raises(DockerfileError, match="invalid --chmod"):
        parse_chmod(spec)


# ---------------------------------------------------------------------------------------------- COPY --from


@needs_root
def test_copy_from_stage_preserves_owner_and_resolves_links_in_stage(rootfs: Path, tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    (stage / "etc").mkdir(parents=True)
    (stage / "etc/conf").write_text("stage conf")
    os.chown(stage / "etc/conf", 55, 66)
    (stage / "bin").mkdir()
    (stage / "bin/cfg").symlink_to("/etc/conf")
    view = stage_view(str(stage))
    copy_sources(str(rootfs), ["/bin/cfg", "/etc"], "/out/", view=view, source_root=str(stage),
                 from_stage="builder")
    assert (rootfs / "out/cfg").read_text() == "stage conf"
    st = os.stat(rootfs / "out/cfg")
    assert (st.st_uid, st.st_gid) == (55, 66)
    assert (rootfs / "out/conf").read_text() == "stage conf"


def test_copy_from_stage_missing_names_the_stage(rootfs: Path, tmp_path: Path) -> None:
    (tmp_path / "stage").mkdir()
    with pytest.raises(ContextError, match='stage "builder"'):
        copy_sources(str(rootfs), ["/nope"], "/x", view=stage_view(str(tmp_path / "stage")),
                     source_root=str(tmp_path / "stage"), from_stage="builder")


# ---------------------------------------------------------------------------------------------- heredocs


def test_heredoc_files(rootfs: Path) -> None:
    write_heredocs(str(rootfs), [("EOF", b"hello\n")], "/etc/motd")
    st = os.stat(rootfs / "etc/motd")
    assert (rootfs / "etc/motd").read_bytes() == b"hello\n" and stat.S_IMODE(st.st_mode) == 0o644
    write_heredocs(str(rootfs), [("a", b"1"), ("b", b"2")], "/h/", mtime_ns=MTIME * 10**9, chmod="755")
    assert (rootfs / "h/b").read_bytes() == b"2"
    assert int(os.stat(rootfs / "h/a").st_mtime) == MTIME
    assert stat.S_IMODE(os.stat(rootfs / "h/a").st_mode) == 0o755


def test_heredocs_need_a_directory(rootfs: Path) -> None:
    with pytest.raises(StepFailed, match="must be a directory"):
        write_heredocs(str(rootfs), [("a", b"1"), ("b", b"2")], "/file")


# ---------------------------------------------------------------------------------------------- WORKDIR


@needs_root
def test_workdir_created_owned_by_user(rootfs: Path) -> None:
    assert make_workdir(str(rootfs), "/home/app/src", "app") == "/home/app/src"
    for rel in ("home", "home/app", "home/app/src"):
        st = os.stat(rootfs / rel)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1001, 0o755)


def test_workdir_existing_left_alone_and_relative(rootfs: Path) -> None:
    os.chmod(rootfs / "existing", 0o700)
    assert make_workdir(str(rootfs), "existing") == "/existing"
    assert stat.S_IMODE(os.stat(rootfs / "existing").st_mode) == 0o700
    assert make_workdir(str(rootfs), "sub", base="/existing") == "/existing/sub"


def test_workdir_unknown_user(rootfs: Path) -> None:
    with pytest.raises(StepFailed, match="USER: unable to find user ghost"):
        make_workdir(str(rootfs), "/w", "ghost")


def test_workdir_over_file_is_an_error(rootfs: Path) -> None:
    with pytest.raises(StepFailed, match="not a directory"):
        make_workdir(str(rootfs), "/etc/passwd/x")


# ---------------------------------------------------------------------------------------------- ADD archives


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o640, MTIME
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("pkg/bin")
        info.type, info.mode = tarfile.DIRTYPE, 0o750
        tar.addfile(info)
        info = tarfile.TarInfo("pkg/bin/ln")
        info.type, info.linkname = tarfile.SYMTYPE, "../f"
        tar.addfile(info)
        info = tarfile.TarInfo("pkg/hard")
        info.type, info.linkname = tarfile.LNKTYPE, "pkg/f"
        tar.addfile(info)
    return buf.getvalue()


def _compress(data: bytes, kind: str) -> bytes:
    if kind == "gzip":
        return gzip.compress(data)
    if kind == "bzip2":
        return bz2.compress(data)
    if kind == "xz":
        return lzma.compress(data)
    if kind == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    return data


def _add(rootfs: Path, ctx: Path, sources: list[str], dest: str, **kw: object) -> None:
    add_sources(str(rootfs), sources, dest, view=EntryView(walk(str(ctx))), source_root=str(ctx),
                **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["uncompressed", "gzip", "bzip2", "xz", "zstd"])
def test_add_extracts_archives(rootfs: Path, ctx: Path, kind: str) -> None:
    (ctx / "archive.bin").write_bytes(_compress(_tar_bytes({"pkg/f": b"payload"}), kind))
    _add(rootfs, ctx, ["archive.bin"], "/opt/")
    assert (rootfs / "opt/pkg/f").read_bytes() == b"payload"
    assert stat.S_IMODE(os.stat(rootfs / "opt/pkg/f").st_mode) == 0o640
    assert int(os.stat(rootfs / "opt/pkg/f").st_mtime) == MTIME
    assert stat.S_IMODE(os.stat(rootfs / "opt/pkg/bin").st_mode) == 0o750
    assert os.readlink(rootfs / "opt/pkg/bin/ln") == "../f"
    assert os.stat(rootfs / "opt/pkg/hard").st_ino == os.stat(rootfs / "opt/pkg/f").st_ino
    assert not (rootfs / "opt/archive.bin").exists()


def test_add_archive_without_slash_extracts_into_dest(rootfs: Path, ctx: Path) -> None:
    (ctx / "a.tar.gz").write_bytes(gzip.compress(_tar_bytes({"pkg/f": b"x"})))
    _add(rootfs, ctx, ["a.tar.gz"], "/x")
    assert (rootfs / "x/pkg/f").read_bytes() == b"x"


def test_add_non_archive_with_archive_name_is_copied(rootfs: Path, ctx: Path) -> None:
    (ctx / "fake.tar.gz").write_bytes(gzip.compress(b"not a tar at all" * 100))
    (ctx / "plain.tar").write_bytes(b"hello")
    _add(rootfs, ctx, ["fake.tar.gz", "plain.tar"], "/d/")
    assert (rootfs / "d/fake.tar.gz").is_file() and (rootfs / "d/plain.tar").read_bytes() == b"hello"


def test_add_unpack_false_copies(rootfs: Path, ctx: Path) -> None:
    (ctx / "a.tar").write_bytes(_tar_bytes({"f": b"x"}))
    _add(rootfs, ctx, ["a.tar"], "/d/", unpack=False)
    assert (rootfs / "d/a.tar").is_file() and not (rootfs / "d/f").exists()


def test_add_archive_inside_directory_is_not_extracted(rootfs: Path, ctx: Path) -> None:
    (ctx / "dir/inner.tar").write_bytes(_tar_bytes({"f": b"x"}))
    _add(rootfs, ctx, ["dir"], "/d/")
    assert (rootfs / "d/inner.tar").is_file() and not (rootfs / "d/f").exists()


@needs_root
def test_add_archive_owner_and_chown(rootfs: Path, ctx: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("f")
        info.uid, info.gid = 12, 34
        tar.addfile(info, io.BytesIO(b""))
    (ctx / "o.tar").write_bytes(buf.getvalue())
    _add(rootfs, ctx, ["o.tar"], "/keep/")
    assert (os.stat(rootfs / "keep/f").st_uid, os.stat(rootfs / "keep/f").st_gid) == (12, 34)
    _add(rootfs, ctx, ["o.tar"], "/own/", chown="app")
    assert (os.stat(rootfs / "own/f").st_uid, os.stat(rootfs / "own/f").st_gid) == (1000, 1001)


def test_add_git_and_flag_errors(rootfs: Path, ctx: Path) -> None:
    for url in ("git@github.com:a/b.git", "https://github.com/a/b.git", "git://host/x", "https://h/x.git#main"):
        assert is_git_url(url)
        with pytest.raises(StepFailed, match="ADD of a git repository is not supported yet"):
            _add(rootfs, ctx, [url], "/x")
    assert not is_git_url("https://example.com/file.tar.gz")
    with pytest.raises(StepFailed, match="--keep-git-dir"):
        _add(rootfs, ctx, ["a.txt"], "/x", keep_git_dir=True)
    with pytest.raises(StepFailed, match="--checksum"):
        _add(rootfs, ctx, ["a.txt"], "/x", checksum="sha256:" + "0" * 64)


# ---------------------------------------------------------------------------------------------- ADD URL

LAST_MODIFIED = email.utils.formatdate(MTIME, usegmt=True)
PAYLOAD = b"remote payload\n"
ARCHIVE = gzip.compress(_tar_bytes({"pkg/f": b"remote"}))


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        routes = {
            "/files/tool.sh": (200, {"Last-Modified": LAST_MODIFIED}, PAYLOAD),
            "/plain": (200, {}, PAYLOAD),
            "/": (200, {}, PAYLOAD),
            "/a.tar.gz": (200, {}, ARCHIVE),
            "/redirect": (302, {"Location": "/files/tool.sh"}, b""),
            "/boom": (500, {}, b"no"),
        }
        status, headers, body = routes.get(self.path, (404, {}, b"not found"))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_add_url_into_directory(rootfs: Path, server: str) -> None:
    assert add_url(str(rootfs), f"{server}/files/tool.sh", "/bin/") == "/bin/tool.sh"
    st = os.stat(rootfs / "bin/tool.sh")
    assert (rootfs / "bin/tool.sh").read_bytes() == PAYLOAD
    assert stat.S_IMODE(st.st_mode) == 0o600 and int(st.st_mtime) == MTIME


def test_add_url_to_file_name_and_unnamed(rootfs: Path, server: str) -> None:
    add_url(str(rootfs), f"{server}/plain", "/renamed")
    assert (rootfs / "renamed").read_bytes() == PAYLOAD
    add_url(str(rootfs), f"{server}/", "/u/")
    assert (rootfs / "u/__unnamed__").read_bytes() == PAYLOAD


def test_add_url_follows_redirects(rootfs: Path, server: str) -> None:
    add_url(str(rootfs), f"{server}/redirect", "/r", chmod="755")
    assert (rootfs / "r").read_bytes() == PAYLOAD
    assert stat.S_IMODE(os.stat(rootfs / "r").st_mode) == 0o755


@pytest.mark.parametrize(("path", "code"), [("/missing", "404"), ("/boom", "500")])
def test_add_url_http_error_names_url(rootfs: Path, server: str, path: str, code: str) -> None:
    with pytest.raises(StepFailed, match=f"ADD {server}{path}: HTTP {code}"):
        add_url(str(rootfs), f"{server}{path}", "/x")
    assert not (rootfs / "x").exists()


def test_add_url_unreachable(rootfs: Path) -> None:
    with pytest.raises(StepFailed, match=r"ADD http://127\.0\.0\.1:9/x: cannot download"):
        add_url(str(rootfs), "http://127.0.0.1:9/x", "/x", timeout=5)


def test_add_url_checksum(rootfs: Path, server: str) -> None:
    good = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()
    add_url(str(rootfs), f"{server}/plain", "/ok", checksum=good)
    assert (rootfs / "ok").read_bytes() == PAYLOAD
    with pytest.raises(StepFailed, match="checksum mismatch"):
        add_url(str(rootfs), f"{server}/plain", "/bad", checksum="sha256:" + "0" * 64)
    assert not (rootfs / "bad").exists()
    with pytest.raises(StepFailed, match="invalid digest"):
        add_url(str(rootfs), f"{server}/plain", "/bad", checksum="md5:abc")


def test_add_url_archive_not_extracted_unless_unpack(rootfs: Path, server: str) -> None:
    add_url(str(rootfs), f"{server}/a.tar.gz", "/dl/")
    assert (rootfs / "dl/a.tar.gz").read_bytes() == ARCHIVE
    add_url(str(rootfs), f"{server}/a.tar.gz", "/ex/", unpack=True)
    assert (rootfs / "ex/pkg/f").read_bytes() == b"remote"


def test_add_mixed_url_and_local(rootfs: Path, ctx: Path, server: str) -> None:
    _add(rootfs, ctx, [f"{server}/plain", "a.txt"], "/mix/")
    assert (rootfs / "mix/plain").read_bytes() == PAYLOAD and (rootfs / "mix/a.txt").read_text() == "A"
    with pytest.raises(StepFailed, match="must be a directory"):
        _add(rootfs, ctx, [f"{server}/plain", "a.txt"], "/nodir")
