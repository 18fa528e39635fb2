"""Applying layers: whiteouts, opaque dirs, replacement, metadata, and refusal of unsafe entries."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from pybuild.errors import StoreError
from pybuild.store.apply import apply_layer
from pybuild.store.compress import compress
from pybuild.store.tarlayer import LayerEntry, write_entries

ROOT = os.geteuid() == 0


def crafted(*members: tuple[str, str, str | bytes]) -> bytes:
    """A tar from (name, type, payload): type file/dir/symlink/hardlink; payload content or link target."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = payload if isinstance(payload, bytes) else payload.encode()
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[kind]
            info.mode = 0o755
            info.linkname = payload if isinstance(payload, str) else payload.decode()
            tf.addfile(info)
    return buf.getvalue()


def layer(*entries: LayerEntry) -> bytes:
    out = io.BytesIO()
    write_entries(entries, out)
    return out.getvalue()


def f(path: str, data: bytes = b"", **kw: int) -> LayerEntry:
    return LayerEntry(path=path, kind="file", size=len(data), data=data, **kw)  # type: ignore[arg-type]


def d(path: str, **kw: int) -> LayerEntry:
    return LayerEntry(path=path, kind="dir", mode=0o755, **kw)  # type: ignore[arg-type]


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path, Callable[[], list[str]]]:
    """Target root and a sentinel dir next to it; the callable lists everything under the sentinel."""
    root = tmp_path / "root"
    sentinel = tmp_path / "sentinel"
    root.mkdir()
    sentinel.mkdir()
    (sentinel / "secret").write_bytes(b"keep")

    def listing() -> list[str]:
        return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if root not in p.parents
                      and p != root)
    return root, sentinel, listing


UNSAFE = {
    "dotdot": [("../../sentinel/evil", "file", "x")],
    "dotdot-inside": [("a/../../sentinel/evil", "file", "x")],
    "absolute": [("/tmp/evil-absolute-pybuild", "file", "x")],
    "abs-symlink-then-file": [("link", "symlink", "{sentinel}"), ("link/evil", "file", "x")],
    "rel-symlink-then-file": [("link", "symlink", "../sentinel"), ("link/evil", "file", "x")],
    "symlink-chain": [("a", "dir", ""), ("a/up", "symlink", ".."), ("a/up2", "symlink", "up/.."),
                      ("a/up2/sentinel/evil", "file", "x")],
    "symlink-dir-then-dir": [("link", "symlink", "{sentinel}"), ("link/sub", "dir", "")],
    "hardlink-out": [("hl", "hardlink", "../sentinel/secret")],
    "hardlink-abs": [("hl", "hardlink", "{sentinel}/secret")],
    "hardlink-through-symlink": [("link", "symlink", "{sentinel}"), ("hl", "hardlink", "link/secret")],
    "whiteout-through-symlink": [("link", "symlink", "{sentinel}"), ("link/.wh.secret", "file", "")],
    "opaque-through-symlink": [("link", "symlink", "{sentinel}"), ("link/.wh..wh..opq", "file", "")],
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_entries_refused_nothing_outside_touched(
        case: str, dirs: tuple[Path, Path, Callable[[], list[str]]]) -> None:
    root, sentinel, listing = dirs
    before = listing()
    members = [(n, k, p.replace("{sentinel}", str(sentinel))) for n, k, p in UNSAFE[case]]
    with pytest.raises(StoreError, match="unsafe layer entry"):
        apply_layer(io.BytesIO(crafted(*members)), str(root))
    assert listing() == before
    assert (sentinel / "secret").read_bytes() == b"keep"
    assert os.stat(sentinel / "secret").st_nlink == 1
    assert not os.path.exists("/tmp/evil-absolute-pybuild")


def test_symlinks_pointing_outside_are_kept_as_links(dirs: tuple[Path, Path, Callable[[], list[str]]]) -> None:
    root, sentinel, _ = dirs
    apply_layer(io.BytesIO(crafted(("abs", "symlink", str(sentinel)), ("up", "symlink", "../.."))), str(root))
    assert os.readlink(root / "abs") == str(sentinel) and os.readlink(root / "up") == "../.."
    # a later file entry at the link's own path replaces the link, never writes through it
    apply_layer(io.BytesIO(crafted(("abs", "file", "mine"))), str(root))
    assert (root / "abs").read_bytes() == b"mine" and not (root / "abs").is_symlink()
    assert sorted(os.listdir(sentinel)) == ["secret"]


def test_whiteout_removes_file_and_dir(tmp_path: Path) -> None:
    apply_layer(io.BytesIO(layer(d("a"), f("a/x", b"1"), d("a/sub"), f("a/sub/y"), f("top"))), str(tmp_path))
    apply_layer(io.BytesIO(layer(LayerEntry(path="a/sub", kind="whiteout"),
                                 LayerEntry(path="top", kind="whiteout"),
                                 LayerEntry(path="missing/z", kind="whiteout"))), str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["a"] and os.listdir(tmp_path / "a") == ["x"]


def test_opaque_dir_clears_lower_contents_only(tmp_path: Path) -> None:
    apply_layer(io.BytesIO(layer(d("a"), f("a/old"), d("a/olddir"), f("a/olddir/z"))), str(tmp_path))
    upper = layer(d("a"), LayerEntry(path="a", kind="opaque"), f("a/-new", b"n"), f("a/new", b"m"))
    apply_layer(io.BytesIO(upper), str(tmp_path))
    assert sorted(os.listdir(tmp_path / "a")) == ["-new", "new"]


def test_opaque_marker_after_children_keeps_this_layers_entries(tmp_path: Path) -> None:
    apply_layer(io.BytesIO(crafted(("a", "dir", ""), ("a/old", "file", "o"))), str(tmp_path))
    tar = crafted(("a", "dir", ""), ("a/-new", "file", "n"), ("a/.wh..wh..opq", "file", ""))
    apply_layer(io.BytesIO(tar), str(tmp_path))
    assert os.listdir(tmp_path / "a") == ["-new"]


def test_replacements(tmp_path: Path) -> None:
    apply_layer(io.BytesIO(layer(d("x"), f("x/in"), f("y", b"file"), d("keep"), f("keep/old"))), str(tmp_path))
    apply_layer(io.BytesIO(layer(f("x", b"now a file"), d("y"), f("y/in"),
                                 LayerEntry(path="keep", kind="dir", mode=0o700))), str(tmp_path))
    assert (tmp_path / "x").read_bytes() == b"now a file"
    assert os.listdir(tmp_path / "y") == ["in"]
    assert os.listdir(tmp_path / "keep") == ["old"] and stat.S_IMODE(os.stat(tmp_path / "keep").st_mode) == 0o700


def test_metadata_kept(tmp_path: Path) -> None:
    entries = [
        LayerEntry(path="dir", kind="dir", mode=0o1777, mtime=1_000, uid=7, gid=8),
        LayerEntry(path="dir/suid", kind="file", mode=0o4711, size=2, data=b"ok", mtime=2_000, uid=5, gid=6),
        LayerEntry(path="dir/link", kind="symlink", link_target="suid", mtime=3_000, uid=9, gid=10),
        LayerEntry(path="fifo", kind="fifo", mode=0o640, mtime=4_000),
        LayerEntry(path="hard", kind="hardlink", link_target="dir/suid"),
        LayerEntry(path="implicit/parent/file", kind="file", data=b"", size=0),
    ]
    apply_layer(io.BytesIO(layer(*entries)), str(tmp_path))
    st = os.lstat(tmp_path / "dir")
    assert stat.S_IMODE(st.st_mode) == 0o1777 and st.st_mtime == 1_000
    st = os.lstat(tmp_path / "dir/suid")
    assert stat.S_IMODE(st.st_mode) == 0o4711 and st.st_mtime == 2_000 and st.st_nlink == 2
    assert os.lstat(tmp_path / "dir/link").st_mtime == 3_000
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)
    assert os.lstat(tmp_path / "hard").st_ino == st.st_ino
    assert stat.S_IMODE(os.stat(tmp_path / "implicit/parent").st_mode) == 0o755
    if ROOT:
        assert (st.st_uid, st.st_gid) == (5, 6)
        assert (os.lstat(tmp_path / "dir/link").st_uid, os.lstat(tmp_path / "dir").st_gid) == (9, 8)


@pytest.mark.skipif(not ROOT, reason="needs root (mknod)")
def test_device_nodes_as_root(tmp_path: Path) -> None:
    apply_layer(io.BytesIO(layer(LayerEntry(path="null", kind="char", mode=0o666, devmajor=1, devminor=3),
                                 LayerEntry(path="loop", kind="block", mode=0o660, devmajor=7, devminor=1))),
                str(tmp_path))
    st = os.lstat(tmp_path / "null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    assert stat.S_ISBLK(os.lstat(tmp_path / "loop").st_mode)


def test_xattrs_best_effort(tmp_path: Path) -> None:
    entries = (f("a", b"1"), LayerEntry(path="b", kind="file", xattrs=(("user.k", b"v"), ("bogus.ns", b"x"))))
    apply_layer(io.BytesIO(layer(*entries)), str(tmp_path))
    try:
        assert os.getxattr(tmp_path / "b", "user.k") == b"v"
    except OSError:
        pytest.skip("filesystem without user xattrs")


@pytest.mark.parametrize("compression", ["gzip", "zstd", "uncompressed"])
def test_compressed_layers(tmp_path: Path, compression: str) -> None:
    out = io.BytesIO()
    compress(io.BytesIO(layer(d("a"), f("a/b", b"hello"))), out, compression)
    apply_layer(io.BytesIO(out.getvalue()), str(tmp_path))
    assert (tmp_path / "a/b").read_bytes() == b"hello"


def test_truncated_layer_is_store_error(tmp_path: Path) -> None:
    data = layer(f("a", b"x" * 5000))
    with pytest.raises(StoreError, match="truncated"):
        apply_layer(io.BytesIO(data[:3000]), str(tmp_path))


def test_missing_hardlink_target_and_bad_target(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not found"):
        apply_layer(io.BytesIO(crafted(("hl", "hardlink", "nope"))), str(tmp_path))
    with pytest.raises(StoreError, match="directory"):
        apply_layer(io.BytesIO(crafted(("dd", "dir", ""), ("hl", "hardlink", "dd"))), str(tmp_path))
    with pytest.raises(StoreError, match="not a directory"):
        apply_layer(io.BytesIO(b""), str(tmp_path / "nope"))
