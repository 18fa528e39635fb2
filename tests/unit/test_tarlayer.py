"""Layer tar writer and reader: round trips, determinism, PAX cases, whiteouts, corrupt input."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from pybuild.errors import StoreError
from pybuild.store.apply import apply_layer
from pybuild.store.tarlayer import (
    LayerEntry,
    _pax_record,
    iter_layer,
    read_entries,
    write_dir_layer,
    write_entries,
)

ROOT = os.geteuid() == 0


def _xattrs_ok(path: Path) -> bool:
    try:
        os.setxattr(path, "user.probe", b"1")
        os.removexattr(path, "user.probe")
        return True
    except OSError:
        return False


def make_tree(root: Path) -> Path:
    """A tree with every kind of entry the writer handles."""
    (root / "etc/sub").mkdir(parents=True)
    (root / "etc/hosts").write_bytes(b"127.0.0.1 localhost\n")
    (root / "etc/sub/big.bin").write_bytes(os.urandom(300_000) + b"x" * 3_000_000)
    (root / "empty").write_bytes(b"")
    os.link(root / "etc/hosts", root / "etc/hosts.link")
    os.symlink("../etc/hosts", root / "etc/sub/rel-link")
    os.symlink("/nonexistent/abs", root / "abs-link")
    os.mkfifo(root / "fifo")
    (root / ("long-" + "n" * 120)).write_bytes(b"long name")
    (root / os.fsdecode(b"bin\xff\xfename")).write_bytes(b"non-utf8")
    (root / "caf\u00e9").write_bytes(b"utf8 name")
    if ROOT:
        os.chown(root / "etc/hosts", 1000, 2000)  # before chmod: chown clears setuid
        os.lchown(root / "abs-link", 33, 44)
        os.mknod(root / "null", 0o666 | 0o020000, os.makedev(1, 3))
        os.mknod(root / "blk", 0o660 | 0o060000, os.makedev(7, 0))
    os.chmod(root / "etc/hosts", 0o4755)
    os.chmod(root / "etc/sub", 0o750)
    if _xattrs_ok(root / "empty"):
        os.setxattr(root / "empty", "user.note", b"hi\x00\xff")
    os.utime(root / "etc/hosts", (1_600_000_000, 1_600_000_000))
    os.utime(root / "etc", (1_500_000_000, 1_500_000_000))
    return root


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything the round trip must keep, per relative path (hardlinks as a shared-inode group id)."""
    result: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            kind = st.st_mode & 0o170000
            content: object = None
            if kind == 0o100000:
                content = hashlib.sha256(Path(full).read_bytes()).hexdigest()
            elif kind == 0o120000:
                content = os.readlink(full)
            group = inodes.setdefault(st.st_ino, rel) if kind == 0o100000 and st.st_nlink > 1 else None
            try:
                xattrs = sorted((n, os.getxattr(full, n, follow_symlinks=False))
                                for n in os.listxattr(full, follow_symlinks=False))
            except OSError:
                xattrs = []
            result[rel] = (st.st_mode, st.st_uid, st.st_gid, int(st.st_mtime), content, group, xattrs,
                           st.st_rdev if kind in (0o020000, 0o060000) else 0)
    return result


def write(root: Path, **kwargs: object) -> tuple[bytes, str, int]:
    out = io.BytesIO()
    diff_id, size = write_dir_layer(str(root), out, **kwargs)  # type: ignore[arg-type]
    return out.getvalue(), diff_id, size


def test_round_trip_dir_tar_apply_identical(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    data, diff_id, size = write(src)
    assert size == len(data) and diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    dst = tmp_path / "dst"
    dst.mkdir()
    apply_layer(io.BytesIO(data), str(dst))
    assert snapshot(dst) == snapshot(src)


def test_hardlinks_become_link_entries_to_first_path(tmp_path: Path) -> None:
    data, _, _ = write(make_tree(tmp_path / "src"))
    members = {m.name: m for m in tarfile.open(fileobj=io.BytesIO(data))}
    assert members["etc/hosts.link"].islnk() and members["etc/hosts.link"].linkname == "etc/hosts"
    assert members["etc/hosts"].isfile() and members["etc/hosts"].size == 20


def test_tarfile_and_gnu_tar_read_the_output(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    data, _, _ = write(src)
    members = {m.name: m for m in tarfile.open(fileobj=io.BytesIO(data))}
    assert members["etc/sub"].isdir() and members["etc/sub"].mode == 0o750
    assert members["etc/hosts"].mode == 0o4755 and members["etc/hosts"].mtime == 1_600_000_000
    assert members["etc/sub/rel-link"].issym() and members["etc/sub/rel-link"].linkname == "../etc/hosts"
    assert "long-" + "n" * 120 in members
    assert os.fsdecode(b"bin\xff\xfename") in members
    assert members["fifo"].isfifo()
    assert all(m.uname == "" and m.gname == "" for m in members.values())
    if shutil.which("tar"):
        tar_file = tmp_path / "l.tar"
        tar_file.write_bytes(data)
        listing = subprocess.run(["tar", "-tf", str(tar_file)], capture_output=True, check=True)
        assert listing.stderr == b""
        assert b"long-" + b"n" * 120 + b"\n" in listing.stdout


def test_entries_sorted_parents_first_byte_order(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    for name in ("a/b", "a-b", "a.c", "B", "a/A"):
        (src / name).write_bytes(b"")
    data, _, _ = write(src)
    names = [m.name for m in tarfile.open(fileobj=io.BytesIO(data))]
    assert names == ["B", "a", "a/A", "a/b", "a-b", "a.c"]


def test_two_writes_byte_identical(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    assert write(src)[0] == write(src)[0]


def test_source_date_epoch_clamps_mtimes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "new").write_bytes(b"n")
    (src / "old").write_bytes(b"o")
    os.utime(src / "new", (2_000_000_000, 2_000_000_000))
    os.utime(src / "old", (100, 100))
    data, _, _ = write(src, clamp_mtime=1_000_000)
    mtimes = {m.name: m.mtime for m in tarfile.open(fileobj=io.BytesIO(data))}
    assert mtimes == {"new": 1_000_000, "old": 100}
    os.utime(src / "new", (2_100_000_000, 2_100_000_000))
    assert write(src, clamp_mtime=1_000_000)[0] == data  # later edits to mtime alone change nothing


def test_whiteouts_and_opaque_markers(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d/-first").write_bytes(b"")
    (src / "d/keep").write_bytes(b"k")
    data, _, _ = write(src, whiteouts=["d/gone", "top"], opaque_dirs=["d"])
    members = list(tarfile.open(fileobj=io.BytesIO(data)))
    names = [m.name for m in members]
    assert names == [".wh.top", "d", "d/.wh..wh..opq", "d/-first", "d/.wh.gone", "d/keep"]
    marker = members[0]
    assert marker.isfile() and marker.size == 0 and marker.mode == 0 and marker.mtime == 0
    kinds = [(e.path, e.kind) for e in read_entries(io.BytesIO(data))]
    assert ("top", "whiteout") in kinds and ("d/gone", "whiteout") in kinds and ("d", "opaque") in kinds


def test_explicit_entries_pax_cases() -> None:
    entries = [
        LayerEntry(path="big-ids", kind="file", uid=3_000_000, gid=5_000_000, size=1, data=b"x", mtime=-5),
        LayerEntry(path="x" * 200, kind="file", size=0, data=b""),
        LayerEntry(path="sym", kind="symlink", link_target="t/" * 80, mode=0o777),
        LayerEntry(path=os.fsdecode(b"\xe9t\xe9"), kind="dir", mode=0o755),
        LayerEntry(path="attrs", kind="file", size=2, data=b"ab", xattrs=(("user.a", b"\x00\x01"),)),
        LayerEntry(path="dev", kind="char", devmajor=4095, devminor=3_000_000),
        LayerEntry(path="one", kind="file", size=3, data=b"one", inode=(1, 2)),
        LayerEntry(path="two", kind="file", size=3, data=b"one", inode=(1, 2)),
    ]
    out = io.BytesIO()
    write_entries(entries, out)
    tf = {m.name: m for m in tarfile.open(fileobj=io.BytesIO(out.getvalue()))}
    assert tf["big-ids"].uid == 3_000_000 and tf["big-ids"].gid == 5_000_000 and tf["big-ids"].mtime == -5
    assert "x" * 200 in tf and tf["sym"].linkname == "t/" * 80
    assert tf["attrs"].pax_headers["SCHILY.xattr.user.a"] == "\x00\x01"
    assert tf["dev"].devmajor == 4095 and tf["dev"].devminor == 3_000_000
    assert tf["two"].islnk() and tf["two"].linkname == "one"
    back = {e.path: e for e in read_entries(io.BytesIO(out.getvalue()))}
    assert back["big-ids"].uid == 3_000_000 and back["big-ids"].mtime == -5 and back["big-ids"].data == b"x"
    assert back["attrs"].xattrs == (("user.a", b"\x00\x01"),)
    assert back[os.fsdecode(b"\xe9t\xe9")].kind == "dir"
    assert back["dev"].devminor == 3_000_000 and back["two"].link_target == "one"


def test_reader_matches_writer_for_tree(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    data, _, _ = write(src)
    paths = [e.path for e, _ in iter_layer(io.BytesIO(data))]
    assert paths == [m.name for m in tarfile.open(fileobj=io.BytesIO(data))]


def test_reader_reads_tarfile_output_with_gnu_and_ustar_names() -> None:
    buf = io.BytesIO()
    for fmt in (tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
            info = tarfile.TarInfo("p" * 90 + "/" + "q" * 90)
            info.size = 3
            tf.addfile(info, io.BytesIO(b"abc"))
        (entry,) = read_entries(io.BytesIO(buf.getvalue()))
        assert entry.path == "p" * 90 + "/" + "q" * 90 and entry.data == b"abc"


@pytest.mark.parametrize("cut", [1, 100, 511, 512, 700, 1024, 1536, -1024, -513, -600])
def test_truncated_tar_is_store_error(tmp_path: Path, cut: int) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a" * 700)
    (src / "b").write_bytes(b"b" * 10)
    data, _, _ = write(src)
    with pytest.raises(StoreError, match="truncated tar"):
        for _entry, content in iter_layer(io.BytesIO(data[:cut])):
            if content is not None:
                content.read()


def test_empty_input_is_store_error() -> None:
    with pytest.raises(StoreError, match="truncated tar"):
        list(iter_layer(io.BytesIO(b"")))


def test_corrupt_header_is_store_error(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    (src / "b").write_bytes(b"b")
    data = bytearray(write(src)[0])
    data[1024 + 5] ^= 0xFF  # second header's name
    with pytest.raises(StoreError, match="checksum"):
        list(iter_layer(io.BytesIO(bytes(data))))


def test_content_size_mismatch_is_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="size"):
        write_entries([LayerEntry(path="f", kind="file", size=5, data=b"abc")], io.BytesIO())
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    with pytest.raises(StoreError, match="changed"):
        write_entries([LayerEntry(path="f", kind="file", size=5, source=str(f))], io.BytesIO())


def test_write_into_compressor_one_pass(tmp_path: Path) -> None:
    from pybuild.store.compress import decompress_stream, open_compressor

    src = make_tree(tmp_path / "src")
    blob = io.BytesIO()
    writer = open_compressor(blob, "gzip")
    diff_id, size = write_dir_layer(str(src), writer)
    digest, _ = writer.close()
    plain = decompress_stream(io.BytesIO(blob.getvalue())).read()
    assert diff_id == "sha256:" + hashlib.sha256(plain).hexdigest() and size == len(plain)
    assert digest == "sha256:" + hashlib.sha256(blob.getvalue()).hexdigest()
    assert [e.path for e, _ in iter_layer(io.BytesIO(blob.getvalue()))] == [
        e.path for e, _ in iter_layer(io.BytesIO(plain))]


# --- hostile input (what tests/differential/test_fuzz_tar.py found): a StoreError, never anything else -------


def _hdr(name: bytes, typeflag: bytes = b"0", size: bytes = b"%011o\0" % 0, **fields: bytes) -> bytes:
    """A ustar header with the given raw fields and a correct checksum."""
    block = bytearray(512)
    block[0:len(name)] = name
    block[100:108] = fields.get("mode", b"0000644\0")
    block[108:116] = fields.get("uid", b"0000000\0")
    block[116:124] = fields.get("gid", b"0000000\0")
    block[124:136] = size
    block[136:148] = fields.get("mtime", b"00000000000\0")
    block[148:156] = b" " * 8
    block[156:157] = typeflag
    block[257:265] = b"ustar\x0000"
    block[329:337] = fields.get("devmajor", b"0000000\0")
    block[337:345] = fields.get("devminor", b"0000000\0")
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def _pax(*records: tuple[bytes, bytes]) -> bytes:
    body = b"".join(_pax_record(key, value) for key, value in records)
    return _hdr(b"././@PaxHeader", b"x", b"%011o\0" % len(body)) + body + b"\0" * (-len(body) % 512)


END = b"\0" * 1024


@pytest.mark.parametrize(("data", "message"), [
    (_hdr(b"f", size=b"\xff" * 12) + END, "negative size"),
    (_hdr(b"x", b"x", b"\x80" + b"\xff" * 11) + END, "an extended header of"),  # was OverflowError
    (_hdr(b"L", b"L", b"\x80" + b"\0" * 5 + b"\x7f" + b"\xff" * 5) + END, "an extended header of"),  # MemoryError
    (_pax((b"size", b"-5")) + _hdr(b"f") + END, "size -5 of 'f' is out of range"),
    (_pax((b"size", b"1e400.")) + _hdr(b"f") + END, "bad PAX size"),
    (_pax((b"size", b"1_0")) + _hdr(b"f") + END, "bad PAX size"),
    (_pax((b"mtime", b"1e400.")) + _hdr(b"f") + END, "bad PAX mtime"),  # was OverflowError
    (_pax((b"mtime", b"99999999999999999999")) + _hdr(b"f") + END, "mtime 99999999999999999999 of 'f' is out"),
    (_pax((b"uid", b"99999999999999999999")) + _hdr(b"f") + END, "uid 99999999999999999999 of 'f' is out"),
    (_hdr(b"f", uid=b"\xff" * 8) + END, "uid -1 of 'f' is out of range"),  # was OverflowError at lchown
    (_hdr(b"f", gid=b"\x80\x7f" + b"\xff" * 6) + END, "gid"),
    (_hdr(b"d", b"3", devminor=b"\x80\x7f" + b"\xff" * 6) + END, "devminor"),  # was OverflowError at makedev
    (_pax((b"path", b"a\0b")) + _hdr(b"f") + END, "a NUL byte in the name"),  # was ValueError at open
    (_pax((b"linkpath", b"l\0x")) + _hdr(b"s", b"2") + END, "a NUL byte in the name or link"),
    (_pax((b"SCHILY.xattr.user.\0x", b"v")) + _hdr(b"f") + END, "a bad xattr name"),  # was ValueError
    (_pax((b"path", b"d/" * 600 + b"f")) + _hdr(b"f") + END, "nested more than 512 directories deep"),
    (_hdr(b"sparse", b"S") + END, "unsupported tar entry type b'S' for 'sparse'"),
    (_hdr(b"label", b"V") + END, "unsupported tar entry type b'V'"),
    (_pax((b"GNU.sparse.map", b"0,10")) + _hdr(b"f") + END, "a sparse file"),
], ids=["negative-size", "huge-pax", "huge-gnu-long", "pax-negative-size", "pax-size-float", "pax-size-underscore",
        "pax-mtime-inf", "pax-mtime-huge", "pax-uid-huge", "uid-negative", "gid-huge", "devminor-huge",
        "nul-path", "nul-link", "nul-xattr", "too-deep", "sparse-type", "volume-label", "pax-sparse"])
def test_hostile_headers_are_store_errors(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(StoreError, match=re.escape(message)):
        read_entries(io.BytesIO(data))
    target = tmp_path / "root"
    target.mkdir()
    with pytest.raises(StoreError, match=re.escape(message)):
        apply_layer(io.BytesIO(data), str(target))


def test_a_huge_size_claim_reads_only_the_data_there() -> None:
    """A header claiming 8 GiB with 1 KiB behind it: a truncated-tar error, without allocating the claim."""
    import tracemalloc

    data = _hdr(b"f", size=b"77777777777\0") + b"x" * 1024
    tracemalloc.start()
    try:
        with pytest.raises(StoreError, match="truncated tar: unexpected end of data in f"):
            read_entries(io.BytesIO(data))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20  # a chunk at a time, not the 8 GiB claimed
    pax = _pax((b"size", b"%d" % (1 << 62))) + _hdr(b"f") + b"x" * 1024
    with pytest.raises(StoreError, match="truncated tar"):
        read_entries(io.BytesIO(pax))


def test_fractional_pax_times_and_big_ids_still_read() -> None:
    data = _pax((b"mtime", b"1700000000.123456789"), (b"uid", b"3000000"), (b"gid", b"4294967294")) + \
        _hdr(b"f") + END
    (entry,) = read_entries(io.BytesIO(data))
    assert (entry.mtime, entry.uid, entry.gid) == (1700000000, 3000000, 4294967294)
    (entry,) = read_entries(io.BytesIO(_pax((b"mtime", b"-1.5")) + _hdr(b"f") + END))
    assert entry.mtime == -1
