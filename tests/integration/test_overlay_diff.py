"""Diff of a real overlayfs upperdir: make changes in the merged view of a busybox rootfs, turn the upper
into a layer tar, check its entries, and apply it onto a copy of the lower to get the merged tree back.

Needs root and overlayfs (skipped with a reason locally, failing in CI).
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pybuild.store.apply import apply_layer
from pybuild.store.images import import_rootfs
from pybuild.store.store import Store
from pybuild.store.tarlayer import LayerEntry, read_entries, write_entries
from pybuild.worker import overlay
from pybuild.worker.diff import layer_from_upper
from pybuild.worker.snapshots import Snapshots
from tests.integration.test_snapshots import busybox_tar, require_overlay

pytestmark = pytest.mark.root

EXCLUDE = {"/etc/hosts", "/etc/resolv.conf", "/etc/hostname"}


@pytest.fixture(autouse=True)
def _need_overlay() -> None:
    require_overlay()


def _file(path: str, data: bytes, mode: int = 0o644) -> LayerEntry:
    return LayerEntry(path=path, kind="file", data=data, size=len(data), mode=mode)


def _dir(path: str) -> LayerEntry:
    return LayerEntry(path=path, kind="dir", mode=0o755)


EXTRA = (
    _dir("data"), _file("data/file_to_link", b"l"), _file("data/file_to_dir", b"d"), _dir("data/dir_to_file"),
    _file("data/dir_to_file/child", b"c"), _file("data/chmod_me", b"m"), _file("data/chown_me", b"o"),
    _file("data/xattr_me", b"x"), _dir("data/deep"), _dir("data/deep/dir"), _file("data/deep/dir/file", b"f"),
    _file("data/deep/dir/stays", b"s"), _dir("data/dir_to_move"), _file("data/dir_to_move/inside", b"i"),
    _dir("data/recreated"), _file("data/recreated/old", b"o"),
)


def _make_changes(root: str) -> None:
    p = Path(root)
    (p / "new.txt").write_text("new")
    (p / "newdir/sub").mkdir(parents=True)
    (p / "newdir/sub/f").write_text("f")
    (p / "etc/motd").write_text("changed\n")
    (p / "etc/passwd").unlink()
    shutil.rmtree(p / "usr/share/doc")                       # rm -rf + recreate: an opaque directory
    (p / "usr/share/doc").mkdir()
    (p / "usr/share/doc/c").write_text("c")
    shutil.rmtree(p / "var/lib")                             # a directory became a file
    (p / "var/lib").write_text("now a file")
    (p / "data/file_to_link").unlink()                       # a file became a symlink
    (p / "data/file_to_link").symlink_to("../etc/motd")
    (p / "data/file_to_dir").unlink()                        # a file became a directory
    (p / "data/file_to_dir").mkdir()
    (p / "data/file_to_dir/kid").write_text("k")
    shutil.rmtree(p / "data/dir_to_file")
    (p / "data/dir_to_file").write_text("file now")
    os.chmod(p / "data/chmod_me", 0o600)                     # metadata only: copied up by overlay
    os.chown(p / "data/chown_me", 1000, 1000)
    os.setxattr(p / "data/xattr_me", "user.test", b"value")
    (p / "data/deep/dir/file").unlink()                      # a whiteout below a copied-up directory
    shutil.move(str(p / "data/dir_to_move"), str(p / "data/moved"))  # EXDEV with redirect_dir=off → copy
    (p / "data/recreated/old").unlink()
    (p / "data/recreated/new").write_text("n")
    (p / "links").mkdir()
    (p / "links/a").write_text("shared")
    os.link(p / "links/a", p / "links/b")
    os.mkfifo(p / "fifo")
    os.mknod(p / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (p / "etc/hosts").write_text("")                         # a runtime mount point: excluded
    (p / "etc/resolv.conf").write_text("nameserver 1.1.1.1\n")  # real content: kept
    (p / "etc/hostname").mkdir()                             # not an empty file or dir? it is: excluded
    subprocess.run(["chroot", root, "/bin/sh", "-c", "rm /bin/cat && ln -s busybox /bin/vi"], check=True)


def _tree(root: str, skip: set[str]) -> dict[str, tuple[Any, ...]]:
    """path → comparable facts (type, mode, owner, content/target/rdev, user xattrs); no mtimes."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            if "/" + rel in skip:
                continue
            st = os.lstat(full)
            kind = stat.S_IFMT(st.st_mode)
            if stat.S_ISREG(kind):
                extra: Any = Path(full).read_bytes()
            elif stat.S_ISLNK(kind):
                extra = os.readlink(full)
            else:
                extra = st.st_rdev if stat.S_ISCHR(kind) or stat.S_ISBLK(kind) else None
            xattrs = () if stat.S_ISLNK(kind) else tuple(sorted(
                (n, os.getxattr(full, n)) for n in os.listxattr(full) if n.startswith("user.")))
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, extra, xattrs)
    return out


def test_upper_diff_applied_to_lower_gives_merged_view(tmp_path: Path) -> None:
    with Store.open(str(tmp_path / "store")) as store:
        image = import_rootfs(store, str(busybox_tar(tmp_path / "rootfs.tar")), "busybox:test")
        snaps = Snapshots.open(store)
        base = snaps.ensure_layers(store, image.diff_ids)
        extra = io.BytesIO()
        extra_id, _ = write_entries(EXTRA, extra)
        top = snaps.ensure_layer(base[-1], extra_id, lambda: io.BytesIO(extra.getvalue()))
        with snaps.mounted_rootfs((*base, top.id)) as active:
            _make_changes(active.rootfs)
            merged = _tree(active.rootfs, EXCLUDE - {"/etc/resolv.conf"})
            layer = io.BytesIO()
            diff_id, size = layer_from_upper(active.upper, layer, exclude=EXCLUDE)
        assert overlay.mount_points(snaps.root) == []

        assert size == len(layer.getvalue()) and diff_id.startswith("sha256:")
        entries = {(e.kind, e.path): e for e in read_entries(io.BytesIO(layer.getvalue()))}
        kinds = {path: kind for kind, path in entries if kind != "opaque"}
        for gone in ("etc/passwd", "bin/cat", "data/deep/dir/file", "data/dir_to_move", "data/recreated/old"):
            assert ("whiteout", gone) in entries, gone
        assert ("opaque", "usr/share/doc") in entries
        assert kinds["var/lib"] == "file" and kinds["data/file_to_link"] == "symlink"
        assert kinds["data/file_to_dir"] == "dir" and kinds["data/dir_to_file"] == "file"
        assert ("opaque", "data/file_to_dir") in entries  # overlay marks a dir made over a whiteout opaque
        assert kinds["data/moved/inside"] == "file" and kinds["data/recreated/new"] == "file"
        assert kinds["fifo"] == "fifo" and kinds["null"] == "char" and kinds["bin/vi"] == "symlink"
        assert entries[("hardlink", "links/b")].link_target == "links/a"
        assert entries[("file", "data/chmod_me")].mode == 0o600
        chowned = entries[("file", "data/chown_me")]
        assert (chowned.uid, chowned.gid) == (1000, 1000)
        assert ("user.test", b"value") in entries[("file", "data/xattr_me")].xattrs
        assert "etc/hosts" not in kinds and "etc/hostname" not in kinds and kinds["etc/resolv.conf"] == "file"
        assert "data/deep/dir/stays" not in kinds  # unchanged lower files are not in the diff
        for entry in entries.values():
            assert not any(name.startswith("trusted.overlay.") for name, _ in entry.xattrs), entry.path

        rebuilt = tmp_path / "rebuilt"
        rebuilt.mkdir()
        with store.blobs.open(image.diff_ids[0]) as src:
            apply_layer(src, str(rebuilt))
        apply_layer(io.BytesIO(extra.getvalue()), str(rebuilt))
        apply_layer(io.BytesIO(layer.getvalue()), str(rebuilt))
        assert _tree(str(rebuilt), set()) == merged


def test_diff_of_a_scratch_step_and_its_reuse_as_lower(tmp_path: Path) -> None:
    snaps = Snapshots.open(str(tmp_path / "store"))
    with snaps.mounted_rootfs(()) as active:
        Path(active.rootfs, "etc").mkdir()
        Path(active.rootfs, "etc/conf").write_text("a")
        first = snaps.commit(active)
    with snaps.mounted_rootfs((first.id,)) as active:
        os.remove(os.path.join(active.rootfs, "etc/conf"))
        second = snaps.commit(active)
    out = io.BytesIO()
    snaps.export_layer(second, out)
    assert [(e.kind, e.path) for e in read_entries(io.BytesIO(out.getvalue()))] == [
        ("dir", "etc"), ("whiteout", "etc/conf")]
    out = io.BytesIO()
    snaps.export_layer(first, out, clamp_mtime=0)
    assert [(e.kind, e.path, e.mtime) for e in read_entries(io.BytesIO(out.getvalue()))] == [
        ("dir", "etc", 0), ("file", "etc/conf", 0)]
