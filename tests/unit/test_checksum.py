"""Content and Merkle checksums: what they cover (type, mode, owner, size, target, xattrs, content) and what
they never cover (times, inode numbers); streaming (sparse 2 GiB file, flat RSS for 1 GiB); odd names; read
errors that name the path.

Fault injection: the tests run as root, and root reads files whatever their mode, so `chmod 000` cannot make
a file unreadable. An unreadable file is simulated by monkeypatching `os.open` to fail for one path; a FIFO
swapped in after the walk checks that a non-regular file is refused without blocking.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import xxhash

from pybuild.context.checksum import (
    READS,
    Checksummer,
    TreeChecksums,
    display_path,
    encode_header,
    hex_checksum,
    read_xattrs,
)
from pybuild.context.entry import Entry, entry_from_stat, kind_of
from pybuild.errors import ContextError
from tests.conftest import REPO


def scan(root: Path) -> list[Entry]:
    """A plain lstat walk of `root` (sorted, symlinks not followed), standing in for the walker."""
    out: list[Entry] = []
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            kind = kind_of(st.st_mode)
            if kind is None:
                continue
            rel = os.fsdecode(os.path.relpath(full, base))
            target = os.fsdecode(os.readlink(full)) if kind == "symlink" else None
            out.append(entry_from_stat(rel, st, kind, target))
    return sorted(out, key=lambda e: e.path)


def entry(root: Path, rel: str) -> Entry:
    path = root / rel
    st = os.lstat(path)
    kind = kind_of(st.st_mode)
    assert kind is not None
    return entry_from_stat(rel, st, kind, os.readlink(path) if kind == "symlink" else None)


def own(root: Path, rel: str) -> bytes:
    return Checksummer(str(root)).own(entry(root, rel))


def tree(root: Path) -> TreeChecksums:
    return Checksummer(str(root)).tree(scan(root))


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "src" / "lib").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (root / "src" / "main.py").write_text("print('hi')\n")
    (root / "src" / "lib" / "util.py").write_text("X = 1\n")
    os.symlink("main.py", root / "src" / "link")
    return root


def set_xattr_or_skip(path: Path, name: str, value: bytes) -> None:
    try:
        os.setxattr(path, name, value, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            pytest.skip(f"no user xattrs on {path.parent}")
        raise


# --- what a file checksum covers -------------------------------------------------------------------------

def test_touch_keeps_checksum(ctx: Path) -> None:
    before = own(ctx, "src/main.py")
    os.utime(ctx / "src/main.py", ns=(123, 456_000_000_000))
    assert own(ctx, "src/main.py") == before
    os.utime(ctx / "src/main.py")
    assert own(ctx, "src/main.py") == before


def test_one_byte_change_changes_checksum(ctx: Path) -> None:
    before = own(ctx, "src/main.py")
    data = bytearray((ctx / "src/main.py").read_bytes())
    data[3] ^= 1
    (ctx / "src/main.py").write_bytes(bytes(data))
    assert own(ctx, "src/main.py") != before


@pytest.mark.parametrize("mode", [0o600, 0o755, 0o4644, 0o1644])
def test_chmod_changes_checksum(ctx: Path, mode: int) -> None:
    os.chmod(ctx / "src/main.py", 0o644)
    before = own(ctx, "src/main.py")
    os.chmod(ctx / "src/main.py", mode)
    assert own(ctx, "src/main.py") != before


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_chown_changes_checksum(ctx: Path) -> None:
    path = ctx / "src/main.py"
    before = own(ctx, "src/main.py")
    os.chown(path, 1234, -1)
    after_uid = own(ctx, "src/main.py")
    os.chown(path, 1234, 4321)
    after_gid = own(ctx, "src/main.py")
    assert len({before, after_uid, after_gid}) == 3


def test_xattr_changes_checksum(ctx: Path) -> None:
    path = ctx / "src/main.py"
    before = own(ctx, "src/main.py")
    set_xattr_or_skip(path, "user.note", b"one")
    one = own(ctx, "src/main.py")
    os.setxattr(path, "user.note", b"two")
    two = own(ctx, "src/main.py")
    os.removexattr(path, "user.note")
    assert len({before, one, two}) == 3
    assert own(ctx, "src/main.py") == before


def test_xattrs_are_sorted(ctx: Path) -> None:
    path = ctx / "src/main.py"
    set_xattr_or_skip(path, "user.b", b"2")
    os.setxattr(path, "user.a", b"1")
    assert read_xattrs(str(path), "x") == [(b"user.a", b"1"), (b"user.b", b"2")]


def test_symlink_target_change_changes_checksum(ctx: Path) -> None:
    before = own(ctx, "src/link")
    os.unlink(ctx / "src/link")
    os.symlink("lib/util.py", ctx / "src/link")
    assert own(ctx, "src/link") != before


def test_symlink_is_never_followed(ctx: Path) -> None:
    before = own(ctx, "src/link")
    (ctx / "src/main.py").write_text("changed\n")
    assert own(ctx, "src/link") == before


def test_type_matters(tmp_path: Path) -> None:
    """An empty file, an empty dir and a dangling symlink, all with the same mode, differ."""
    (tmp_path / "f").write_bytes(b"")
    (tmp_path / "d").mkdir()
    os.symlink("x", tmp_path / "l")
    for p in ("f", "d"):
        os.chmod(tmp_path / p, 0o755)
    sums = {own(tmp_path, p) for p in ("f", "d", "l")}
    assert len(sums) == 3


def test_checksum_definition(tmp_path: Path) -> None:
    """The file checksum is exactly the documented formula (guards against silent format drift)."""
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    os.chmod(path, 0o640)
    st = os.lstat(path)
    xattrs = read_xattrs(str(path), "f")
    header = encode_header("file", 0o640, st.st_uid, st.st_gid, 5, b"", xattrs)
    assert header.startswith(b"pbck1F")
    expected = xxhash.xxh3_128_digest(header + xxhash.xxh3_128_digest(b"hello"))
    assert own(tmp_path, "f") == expected
    assert hex_checksum(expected) == "xxh3:" + expected.hex()


# --- mtime, atime and inode numbers never matter ---------------------------------------------------------

def test_copy_of_tree_has_same_checksum(ctx: Path, tmp_path: Path) -> None:
    """A copy has new inodes, new mtimes and ctimes: every checksum stays the same."""
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(ctx), str(copy)], check=True)
    for e in scan(copy):
        if e.kind != "symlink":
            os.utime(copy / e.path, ns=(1, 2))
    os.utime(copy, ns=(1, 2))
    a, b = tree(ctx), tree(copy)
    assert a.checksum == b.checksum
    assert dict(a.nodes) == dict(b.nodes)
    assert os.lstat(ctx / "Dockerfile").st_ino != os.lstat(copy / "Dockerfile").st_ino


def test_reading_does_not_change_atime_checksum(ctx: Path) -> None:
    first = tree(ctx).checksum
    (ctx / "src/main.py").read_bytes()
    assert tree(ctx).checksum == first


# --- Merkle checksums --------------------------------------------------------------------------------------

def test_tree_changes_with_any_entry(ctx: Path) -> None:
    base = tree(ctx)
    (ctx / "src/lib/util.py").write_text("X = 2\n")
    changed = tree(ctx)
    assert changed.checksum != base.checksum
    assert changed.of("src") != base.of("src")
    assert changed.of("src/lib") != base.of("src/lib")
    assert changed.of("Dockerfile") == base.of("Dockerfile")


def test_tree_rename_add_remove_and_dir_mode(ctx: Path) -> None:
    seen = {tree(ctx).checksum}
    os.rename(ctx / "src/lib/util.py", ctx / "src/lib/util2.py")
    seen.add(tree(ctx).checksum)
    (ctx / "src/lib/empty").mkdir()
    seen.add(tree(ctx).checksum)
    os.chmod(ctx / "src/lib/empty", 0o700)
    seen.add(tree(ctx).checksum)
    os.rmdir(ctx / "src/lib/empty")
    (ctx / "src/lib/empty").write_bytes(b"")  # same name, now a file
    seen.add(tree(ctx).checksum)
    assert len(seen) == 5


def test_tree_is_order_independent_and_fills_parents(ctx: Path) -> None:
    entries = scan(ctx)
    hasher = Checksummer(str(ctx))
    full = hasher.tree(entries)
    assert hasher.tree(list(reversed(entries))).checksum == full.checksum
    # Only the deep file: its parents are lstat'ed, so src/lib gets a checksum of its own.
    only = hasher.tree([e for e in entries if e.path == "src/lib/util.py"])
    assert set(only.nodes) == {"", "src", "src/lib", "src/lib/util.py"}
    assert only.of("src/lib") == full.of("src/lib")
    assert only.of("src") != full.of("src")


def test_merkle_definition(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"1")
    (tmp_path / "b").write_bytes(b"2")
    result = tree(tmp_path)
    st = os.lstat(tmp_path)
    meta = xxhash.xxh3_128_digest(encode_header("dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, 0, b"",
                                                read_xattrs(str(tmp_path), ".")))
    body = (2).to_bytes(4, "little") + b"a\0b\0" + result.of("a") + result.of("b")
    assert result.checksum == xxhash.xxh3_128_digest(xxhash.xxh3_128_digest(meta) + body)
    (tmp_path / "a").unlink()
    (tmp_path / "b").unlink()
    empty = xxhash.xxh3_128_digest(xxhash.xxh3_128_digest(meta) + bytes(4))
    assert tree(tmp_path).checksum == empty


# --- names ---------------------------------------------------------------------------------------------------

def test_odd_names(tmp_path: Path) -> None:
    base = os.fsencode(tmp_path)
    names = [b"with space", b"new\nline", b"bad\xffutf8", b"caf\xc3\xa9", b"-dash", b"tab\tname"]
    for i, name in enumerate(names):
        with open(os.path.join(base, name), "wb") as handle:
            handle.write(bytes([i]))
    result = tree(tmp_path)
    paths = {os.fsencode(p) for p in result.nodes if p}
    assert paths == set(names)
    assert len(set(result.nodes.values())) == len(names) + 1
    assert display_path(os.fsdecode(b"new\nline")) == "new\\nline"
    assert display_path(os.fsdecode(b"bad\xffutf8")) == "bad\\xffutf8"
    assert display_path("café") == "café"


# --- errors --------------------------------------------------------------------------------------------------

def test_unreadable_file_names_its_path(ctx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open
    target = str(ctx / "src/main.py")

    def failing_open(path: str, flags: int, *args: object, **kwargs: object) -> int:
        if os.fsdecode(path) == target:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", failing_open)
    with pytest.raises(ContextError, match=r"cannot read src/main\.py: permission denied"):
        tree(ctx)


def test_io_error_names_its_path(ctx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_readv(fd: int, buffers: list[bytearray]) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "readv", failing_readv)
    with pytest.raises(ContextError, match=r"cannot read Dockerfile: Input/output error"):
        own(ctx, "Dockerfile")


def test_vanished_file(ctx: Path) -> None:
    e = entry(ctx, "src/main.py")
    os.unlink(ctx / "src/main.py")
    with pytest.raises(ContextError, match="cannot read src/main.py: No such file"):
        Checksummer(str(ctx)).own(e)


def test_fifo_swapped_in_is_refused_without_blocking(ctx: Path) -> None:
    e = entry(ctx, "src/main.py")
    os.unlink(ctx / "src/main.py")
    os.mkfifo(ctx / "src/main.py")
    with pytest.raises(ContextError, match="no longer a regular file"):
        Checksummer(str(ctx)).own(e)


# --- streaming -----------------------------------------------------------------------------------------------

def test_sparse_2gib_file(tmp_path: Path) -> None:
    path = tmp_path / "sparse"
    size = 2 << 30
    with open(path, "wb") as handle:
        handle.truncate(size)
        handle.seek(size - 1)
        handle.write(b"\1")
    READS.reset()
    got = own(tmp_path, "sparse")
    assert READS.files == 1 and READS.bytes == size
    zeros = bytes(1 << 20)
    content = xxhash.xxh3_128()
    for _ in range(2047):
        content.update(zeros)
    content.update(zeros[:-1] + b"\1")
    st = os.lstat(path)
    header = encode_header("file", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, size, b"",
                           read_xattrs(str(path), "sparse"))
    assert got == xxhash.xxh3_128_digest(header + content.digest())


def reference_file_checksum(path: Path) -> bytes:
    """The documented formula, computed the plain way: read everything, hash once."""
    st = os.lstat(path)
    content = xxhash.xxh3_128()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            content.update(chunk)
    header = encode_header("file", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size, b"",
                           read_xattrs(str(path), path.name))
    return xxhash.xxh3_128_digest(header + content.digest())


@pytest.mark.parametrize("layout", [
    [(0, b"head")], [(5 << 20, b"middle")], [(0, b"a"), (3 << 20, b"b" * 5000), (9 << 20 - 1, b"z")],
    [(1 << 20, os.urandom(3 << 20))],
])
def test_sparse_extents_hash_like_plain_reads(tmp_path: Path, layout: list[tuple[int, bytes]]) -> None:
    path = tmp_path / "sparse"
    with open(path, "wb") as handle:
        handle.truncate(12 << 20)
        for offset, data in layout:
            handle.seek(offset)
            handle.write(data)
    assert own(tmp_path, "sparse") == reference_file_checksum(path)


def test_rss_stays_flat_for_1gib(tmp_path: Path) -> None:
    """Hash a dense 1 GiB file in a fresh process: its peak RSS may grow by a few MiB, never by the size."""
    path = tmp_path / "big"
    block = os.urandom(1 << 20)
    with open(path, "wb") as handle:
        for _ in range(1024):
            handle.write(block)
    assert os.stat(path).st_blocks * 512 >= 1 << 30  # dense: the plain streaming path
    script = textwrap.dedent(f"""
        import os
        from pybuild.context.checksum import Checksummer, READS
        def peak_kib():  # VmHWM: this address space's peak (ru_maxrss would carry the parent's over exec)
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
        from pybuild.context.entry import entry_from_stat
        root = {str(tmp_path)!r}
        e = entry_from_stat("big", os.lstat(os.path.join(root, "big")), "file")
        hasher = Checksummer(root)
        before = peak_kib()
        hasher.own(e)
        after = peak_kib()
        print(before, after, READS.bytes)
    """)
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True,
                         cwd=REPO).stdout.split()
    before, after, read = (int(x) for x in out)
    assert read == 1 << 30
    assert after - before < 16 * 1024, f"peak RSS grew by {after - before} KiB"
