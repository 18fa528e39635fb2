"""`pybuild.worker.diff` on hand-made upper directories (no mount needed; whiteouts/opaque need root)."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from pybuild.errors import StoreError
from pybuild.store.tarlayer import read_entries
from pybuild.worker.diff import diff_entries, layer_from_upper

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="mknod and trusted.* xattrs need root")


def _layer(upper: Path, **kwargs: object) -> list[tuple[str, str]]:
    out = io.BytesIO()
    diff_id, size = layer_from_upper(str(upper), out, **kwargs)  # type: ignore[arg-type]
    assert size == len(out.getvalue()) and diff_id.startswith("sha256:")
    return [(e.kind, e.path) for e in read_entries(io.BytesIO(out.getvalue()))]


def test_plain_changes_are_entries_in_layer_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b/f").write_text("x")
    (tmp_path / "a").write_text("a")
    (tmp_path / "b/link").symlink_to("f")
    os.mkfifo(tmp_path / "p")
    assert _layer(tmp_path) == [("file", "a"), ("dir", "b"), ("file", "b/f"), ("symlink", "b/link"),
                                ("fifo", "p")]


def test_same_upper_same_diff_id_and_clamped_mtimes(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    first, second = io.BytesIO(), io.BytesIO()
    assert layer_from_upper(str(tmp_path), first) == layer_from_upper(str(tmp_path), second)
    out = io.BytesIO()
    layer_from_upper(str(tmp_path), out, clamp_mtime=5)
    assert [e.mtime for e in read_entries(io.BytesIO(out.getvalue()))] == [5]


def test_hardlinks_inside_the_upper(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("shared")
    os.link(tmp_path / "a", tmp_path / "b")
    out = io.BytesIO()
    layer_from_upper(str(tmp_path), out)
    entries = read_entries(io.BytesIO(out.getvalue()))
    assert [(e.kind, e.path, e.link_target) for e in entries] == [("file", "a", ""), ("hardlink", "b", "a")]


def test_exclude_drops_only_runtime_mount_points(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/hosts").write_text("")
    (tmp_path / "etc/resolv.conf").write_text("nameserver 9.9.9.9\n")
    (tmp_path / "etc/hostname").mkdir()
    (tmp_path / "etc/data").mkdir()
    (tmp_path / "etc/data/x").write_text("x")
    (tmp_path / "etc/other").write_text("")
    exclude = {"/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/etc/data"}
    assert _layer(tmp_path, exclude=exclude) == [
        ("dir", "etc"), ("dir", "etc/data"), ("file", "etc/data/x"), ("file", "etc/other"),
        ("file", "etc/resolv.conf")]


def test_missing_upper_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="upper directory not found"):
        list(diff_entries(str(tmp_path / "nope")))


@needs_root
def test_whiteouts_opaque_dirs_and_devices(tmp_path: Path) -> None:
    os.mknod(tmp_path / "gone", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (tmp_path / "o").mkdir()
    os.setxattr(tmp_path / "o", "trusted.overlay.opaque", b"y")
    (tmp_path / "o/new").write_text("n")
    (tmp_path / "not_opaque").mkdir()
    os.setxattr(tmp_path / "not_opaque", "trusted.overlay.opaque", b"n")
    assert _layer(tmp_path) == [("whiteout", "gone"), ("dir", "not_opaque"), ("char", "null"), ("dir", "o"),
                                ("opaque", "o"), ("file", "o/new")]


@needs_root
def test_overlay_xattrs_are_dropped_others_kept(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    os.setxattr(tmp_path / "f", "trusted.overlay.origin", b"\x00\x01")
    os.setxattr(tmp_path / "f", "trusted.keep", b"1")
    os.setxattr(tmp_path / "f", "user.keep", b"2")
    out = io.BytesIO()
    layer_from_upper(str(tmp_path), out)
    (entry,) = read_entries(io.BytesIO(out.getvalue()))
    assert entry.xattrs == (("trusted.keep", b"1"), ("user.keep", b"2"))


@needs_root
def test_whiteout_of_an_excluded_path_is_kept(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    os.mknod(tmp_path / "etc/hosts", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    assert _layer(tmp_path, exclude={"/etc/hosts"}) == [("dir", "etc"), ("whiteout", "etc/hosts")]
