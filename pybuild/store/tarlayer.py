"""Deterministic OCI layer tars: a lean PAX writer and a strict streaming reader.

Who uses it: the exporter (a snapshot diff or a directory → layer tar, with its diffID), base-image unpacking
(`pybuild.store.apply` reads layers through `iter_layer`).

Writer rules (the same input gives the same bytes):
- ustar headers, with a PAX extended header ('x') only where needed: names or link targets over 100 bytes
  or not ASCII, sizes/ids/mtimes that do not fit the octal fields, xattrs (`SCHILY.xattr.<name>`), and
  names that are not valid UTF-8 written as raw bytes (like Go; no `hdrcharset`, which GNU tar warns on).
- entries sorted by path components compared as bytes, so parents come first and a directory's subtree is
  contiguous; an opaque marker comes right after its directory.
- uname/gname empty, mtime in whole seconds clamped to `clamp_mtime` (SOURCE_DATE_EPOCH) when given, no
  atime/ctime; the archive ends with two zero blocks and no record padding (like Go's archive/tar).
- within one layer, files sharing an inode become hardlink entries to the first path (in sorted order).
- whiteouts are empty files `<dir>/.wh.<name>`, opaque dirs `<dir>/.wh..wh..opq` (OCI image spec), mode 0,
  owner 0, mtime 0.
Why not `tarfile` for writing: building a TarInfo and calling `addfile` per entry measured ~2x slower than
packing the 512-byte header ourselves (see benchmarks/export.py); `tarfile` was also lax about where we
want to be strict when reading, so the reader is ours too (~100 lines).

Reader rules: every header checksum is verified, a short read anywhere (header, PAX data, file content) or
a missing end-of-archive block raises StoreError ("truncated tar ..."); gzip/zstd input is detected by magic.
The input is untrusted (`pybuild import`, `load`, `pull`; tests/differential/test_fuzz_tar.py feeds it
mutants), so anything the applier could not act on is a StoreError here: negative sizes, ids, times and device numbers
out of range, numbers that are not decimal in PAX records, NUL bytes in names, link targets and xattr names,
paths deeper than MAX_DEPTH, extended headers over MAX_EXTENDED, and entry types pybuild does not handle
(GNU sparse files, volume labels, ...: containerd and docker refuse them too). Memory stays bounded by the
data actually read: content is read in chunks of at most 1 MiB whatever size a header claims.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any, Literal

from pybuild.errors import StoreError
from pybuild.record import record
from pybuild.store.compress import HashSink, Writable, decompress_stream

Kind = Literal["file", "dir", "symlink", "hardlink", "char", "block", "fifo", "whiteout", "opaque"]
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
BLOCK = 512
_CHUNK = 1 << 20
_FLUSH_AT = 1 << 20
MAX_EXTENDED = 1 << 20  # the largest PAX or GNU long-name header read (Go's archive/tar's bound)
MAX_DEPTH = 512  # the deepest path read: deeper trees break recursive tools (shutil.rmtree); no image has one
_MAX_ID = (1 << 32) - 2  # uid_t: (uid_t)-1 means "unchanged" to chown
_MAX_INT64 = (1 << 63) - 1  # time_t and off_t
_MAX_DEV = (1 << 31) - 1  # what os.makedev takes
_TYPEFLAGS: dict[str, bytes] = {
    "file": b"0", "hardlink": b"1", "symlink": b"2", "char": b"3", "block": b"4", "dir": b"5", "fifo": b"6",
    "whiteout": b"0", "opaque": b"0",
}


@record(kw_only=True)
class LayerEntry:
    """One entry of a layer, as written by `write_entries` and yielded by `iter_layer`.

    `path` is relative, '/'-separated, without './' or a trailing '/', a str decoded with
    surrogateescape (`os.fsdecode`) so any byte name round-trips. For kind "whiteout" `path` is the path
    deleted (written as `<dir>/.wh.<name>`); for kind "opaque" it is the directory whose lower contents are
    hidden. `link_target`: symlink target, or the hardlink's first path. Content comes from `data` or the
    file at `source` (read in chunks when writing). `inode` (st_dev, st_ino): files sharing one are written
    as hardlinks to the first. `mode` holds permission bits only (0o7777).
    """

    path: str
    kind: Kind
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    size: int = 0
    link_target: str = ""
    xattrs: tuple[tuple[str, bytes], ...] = ()
    devmajor: int = 0
    devminor: int = 0
    source: str | None = None
    data: bytes | None = None
    inode: tuple[int, int] | None = None


def _sort_key(entry: LayerEntry) -> tuple[bytes, ...]:
    parts = os.fsencode(entry.path).split(b"/")
    if entry.kind == "opaque":
        return (*parts, b"")  # right after its directory, before every child
    if entry.kind == "whiteout":
        parts[-1] = b".wh." + parts[-1]  # sorted by the name it is written under
    return tuple(parts)


def _octal(value: int, width: int) -> bytes | None:
    """`value` as a NUL-terminated octal field, or None when it does not fit."""
    if 0 <= value < 8 ** (width - 1):
        return b"%0*o\0" % (width - 1, value)
    return None


def _base256(value: int, width: int) -> bytes:
    span = 1 << (8 * (width - 1))
    if not -span // 2 <= value < span // 2:
        raise StoreError(f"tar number out of range: {value}")
    return bytes([0x80 if value >= 0 else 0xFF]) + (value % span).to_bytes(width - 1, "big")


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(b"%d" % length) + len(body) != length:
        length += 1
    return b"%d" % length + body


def _header(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, typeflag: bytes,
            linkname: bytes = b"", devmajor: int = 0, devminor: int = 0) -> bytes:
    """A 512-byte ustar header; all numeric fields must fit (callers move the rest to PAX)."""
    dev = typeflag in (b"3", b"4")
    fields = (
        name.ljust(100, b"\0"),
        b"%07o\0" % mode,
        b"%07o\0" % uid,
        b"%07o\0" % gid,
        b"%011o\0" % size,
        b"%011o\0" % mtime,
        b"        ",
        typeflag,
        linkname.ljust(100, b"\0"),
        b"ustar\x0000",
        b"\0" * 64,  # uname, gname: empty for reproducibility
        (_octal(devmajor, 8) or _base256(devmajor, 8)) if dev else b"\0" * 8,
        (_octal(devminor, 8) or _base256(devminor, 8)) if dev else b"\0" * 8,
        b"\0" * 167,  # prefix (unused: long names go to PAX) and padding
    )
    block = b"".join(fields)
    checksum = b"%06o\0 " % sum(block)
    return block[:148] + checksum + block[156:]


class _TarWriter:
    """Packs headers and streams content into a hashing sink, batching small writes."""

    def __init__(self, out: Writable, clamp_mtime: int | None) -> None:
        self.sink = HashSink(out)
        self.clamp = clamp_mtime
        self.buf = bytearray()
        self.links: dict[tuple[int, int], str] = {}

    def flush(self) -> None:
        if self.buf:
            self.sink.write(bytes(self.buf))  # one memcpy per MiB; writers get plain bytes
            self.buf = bytearray()

    def add(self, entry: LayerEntry) -> None:
        kind = entry.kind
        if kind in ("whiteout", "opaque"):
            self._add_marker(entry)
            return
        if kind == "file" and entry.inode is not None:
            first = self.links.get(entry.inode)
            if first is None:
                self.links[entry.inode] = entry.path
            else:
                kind, entry = "hardlink", _as_link(entry, first)
        name = os.fsencode(entry.path) + (b"/" if kind == "dir" else b"")
        size = entry.size if kind == "file" else 0
        mtime = entry.mtime if self.clamp is None else min(entry.mtime, self.clamp)
        link = os.fsencode(entry.link_target) if kind in ("symlink", "hardlink") else b""
        pax: dict[bytes, bytes] = {}
        _pax_name(pax, b"path", name, 100)
        _pax_name(pax, b"linkpath", link, 100)
        uid, gid = _pax_num(pax, b"uid", entry.uid, 8), _pax_num(pax, b"gid", entry.gid, 8)
        size_field, mtime_field = _pax_num(pax, b"size", size, 12), _pax_num(pax, b"mtime", mtime, 12)
        for key, value in entry.xattrs:
            pax[b"SCHILY.xattr." + key.encode("utf-8", "surrogateescape")] = value
        if pax:
            self._add_pax(pax)
        self.buf += _header(name[:100] if b"path" not in pax else _short(name), entry.mode & 0o7777,
                            uid, gid, size_field, mtime_field, _TYPEFLAGS[kind],
                            link if b"linkpath" not in pax else _short(link), entry.devmajor, entry.devminor)
        if kind == "file":
            self._add_content(entry, size)

    def _add_marker(self, entry: LayerEntry) -> None:
        head, _, base = entry.path.rpartition("/")
        leaf = OPAQUE_MARKER if entry.kind == "opaque" else WHITEOUT_PREFIX + base
        path = f"{entry.path}/{leaf}" if entry.kind == "opaque" else (f"{head}/{leaf}" if head else leaf)
        self.add(LayerEntry(path=path, kind="file", mode=0, mtime=0))

    def _add_pax(self, pax: dict[bytes, bytes]) -> None:
        body = b"".join(_pax_record(k, pax[k]) for k in sorted(pax))
        self.buf += _header(b"././@PaxHeader", 0o644, 0, 0, len(body), 0, b"x")
        self.buf += body
        self.buf += b"\0" * (-len(body) % BLOCK)

    def _add_content(self, entry: LayerEntry, size: int) -> None:
        if entry.data is not None:
            if len(entry.data) != size:
                raise StoreError(f"layer entry {entry.path}: size {size} but {len(entry.data)} bytes of data")
            self.buf += entry.data
        elif size:
            self._copy_file(entry, size)
        self.buf += b"\0" * (-size % BLOCK)
        if len(self.buf) >= _FLUSH_AT:
            self.flush()

    def _copy_file(self, entry: LayerEntry, size: int) -> None:
        if entry.source is None:
            raise StoreError(f"layer entry {entry.path}: no content source")
        try:
            fd = os.open(entry.source, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as exc:
            raise StoreError(f"cannot read {entry.source}: {exc.strerror}") from exc
        try:
            left = size
            if size <= _CHUNK:
                data = os.read(fd, size + 1)
                left -= len(data)
                self.buf += data[:size]
            else:
                self.flush()
                while left > 0:
                    data = os.read(fd, min(_CHUNK, left + 1))
                    if not data:
                        break
                    self.sink.write(data[:left])
                    left -= len(data)
        finally:
            os.close(fd)
        if left != 0:
            raise StoreError(f"file changed while writing the layer: {entry.source} (size {size})")

    def finish(self) -> tuple[str, int]:
        self.buf += b"\0" * (2 * BLOCK)
        self.flush()
        return self.sink.result()


def _as_link(entry: LayerEntry, first: str) -> LayerEntry:
    return LayerEntry(path=entry.path, kind="hardlink", mode=entry.mode, uid=entry.uid, gid=entry.gid,
                      mtime=entry.mtime, link_target=first)


def _short(name: bytes) -> bytes:
    """The ustar stand-in for a name carried in PAX: ASCII, at most 100 bytes (readers use the PAX one)."""
    return name.decode("ascii", "replace").encode("ascii", "replace")[:100]


def _pax_name(pax: dict[bytes, bytes], key: bytes, value: bytes, width: int) -> None:
    if len(value) > width or not value.isascii():
        pax[key] = value  # raw bytes even when not UTF-8, as Go's archive/tar writes them


def _pax_num(pax: dict[bytes, bytes], key: bytes, value: int, width: int) -> int:
    if 0 <= value < 8 ** (width - 1):
        return value
    pax[key] = b"%d" % value
    return 0


def write_entries(entries: Iterable[LayerEntry], out: Writable, *, clamp_mtime: int | None = None,
                  sort: bool = True) -> tuple[str, int]:
    """Write a layer tar of `entries` to `out`; return (diffID `sha256:<hex>`, size) of the tar.

    `sort=False` keeps the given order (the caller guarantees sorted input and saves the list).
    """
    items: Iterable[LayerEntry] = sorted(entries, key=_sort_key) if sort else entries
    writer = _TarWriter(out, clamp_mtime)
    for entry in items:
        writer.add(entry)
    return writer.finish()


def _xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    if not names:
        return ()
    found = []
    for name in sorted(names):
        try:
            found.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError:
            continue
    return tuple(found)


def scan_dir(dirpath: str, rel: str = "") -> Iterator[LayerEntry]:
    """Entries of the tree under `dirpath` (not itself) in layer order, paths under `rel`; no sockets."""
    try:
        with os.scandir(dirpath) as it:
            children = sorted(it, key=lambda e: os.fsencode(e.name))
    except OSError as exc:
        raise StoreError(f"cannot read directory {dirpath}: {exc.strerror}") from exc
    for child in children:
        path = f"{rel}/{child.name}" if rel else child.name
        entry = _scan_entry(child.path, path, child.stat(follow_symlinks=False))
        if entry is None:
            continue
        yield entry
        if entry.kind == "dir":
            yield from scan_dir(child.path, path)


_KINDS: dict[int, Kind] = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
                           stat.S_IFCHR: "char", stat.S_IFBLK: "block", stat.S_IFIFO: "fifo"}


def _scan_entry(full: str, path: str, st: os.stat_result) -> LayerEntry | None:
    kind = _KINDS.get(stat.S_IFMT(st.st_mode))
    if kind is None:
        return None  # sockets and others have no tar form
    dev = kind in ("char", "block")
    return LayerEntry(
        path=path, kind=kind, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
        mtime=st.st_mtime_ns // 1_000_000_000 if st.st_mtime_ns >= 0 else -(-st.st_mtime_ns // 1_000_000_000),
        size=st.st_size if kind == "file" else 0,
        link_target=os.readlink(full) if kind == "symlink" else "",
        xattrs=_xattrs(full),
        devmajor=os.major(st.st_rdev) if dev else 0, devminor=os.minor(st.st_rdev) if dev else 0,
        source=full if kind == "file" else None,
        inode=(st.st_dev, st.st_ino) if kind == "file" and st.st_nlink > 1 else None,
    )


def write_dir_layer(root: str, out: Writable, *, clamp_mtime: int | None = None,
                    whiteouts: Sequence[str] = (), opaque_dirs: Sequence[str] = ()) -> tuple[str, int]:
    """Write the tree under `root` as a layer tar to `out`; return (diffID, size).

    `whiteouts` are relative paths deleted by this layer, `opaque_dirs` relative dirs whose lower contents
    this layer hides. Content is streamed; memory is bounded by the entry list (metadata only).
    """
    if not os.path.isdir(root):
        raise StoreError(f"layer source is not a directory: {root}")
    entries = list(scan_dir(root))
    entries += [LayerEntry(path=p.strip("/"), kind="whiteout") for p in whiteouts]
    entries += [LayerEntry(path=p.strip("/"), kind="opaque") for p in opaque_dirs]
    presorted = not whiteouts and not opaque_dirs  # the scan already yields layer order
    return write_entries(entries, out, clamp_mtime=clamp_mtime, sort=not presorted)


# --- reader -------------------------------------------------------------------------------------------


def _parse_num(field: bytes, what: str) -> int:
    if field[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(field[1:], "big")
        return value if field[0] == 0x80 else value - (1 << (8 * (len(field) - 1)))
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise StoreError(f"corrupt tar: bad {what} field {field!r}") from None


def _parse_pax(data: bytes) -> dict[bytes, bytes]:
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos:].strip(b"\0") == b"":
            break
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise StoreError("corrupt tar: bad PAX record") from None
        body = data[space + 1:pos + length]
        if length <= 0 or not body.endswith(b"\n") or b"=" not in body:
            raise StoreError("corrupt tar: bad PAX record")
        key, _, value = body[:-1].partition(b"=")
        records[key] = value
        pos += length
    return records


class LayerContent:
    """A member's content: read() up to its size; the reader skips what is left when it moves on."""

    def __init__(self, src: IO[bytes], size: int, name: str) -> None:
        self.src = src
        self.left = size
        self.padding = -size % BLOCK
        self.name = name

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        if n == 0:
            return b""
        # in chunks: a size claimed by a header is never allocated before the data is there
        data = _read(self.src, n) if n <= _CHUNK else b"".join(self._chunks(n))
        if len(data) != n:
            raise StoreError(f"truncated tar: unexpected end of data in {self.name}")
        self.left -= n
        return data

    def _chunks(self, n: int) -> Iterator[bytes]:
        while n > 0:
            part = _read(self.src, min(n, _CHUNK))
            yield part
            if len(part) < min(n, _CHUNK):
                return
            n -= len(part)

    def skip(self) -> None:
        while self.left:
            self.read(min(self.left, _CHUNK))


def _read(src: IO[bytes], n: int) -> bytes:
    """`src.read(n)`; an OS error reading the layer is a StoreError (not one of whoever writes entries)."""
    try:
        return src.read(n)
    except OSError as exc:
        raise StoreError(f"cannot read the layer: {exc.strerror or exc}") from exc


def _read_exact(src: IO[bytes], n: int, what: str) -> bytes:
    data = _read(src, n)
    if len(data) != n:
        raise StoreError(f"truncated tar: unexpected end of data in {what}")
    return data


_KIND_OF_FLAG: dict[bytes, Kind] = {
    b"0": "file", b"\0": "file", b"7": "file", b"1": "hardlink", b"2": "symlink", b"3": "char",
    b"4": "block", b"5": "dir", b"6": "fifo",
}


def iter_layer(stream: IO[bytes]) -> Iterator[tuple[LayerEntry, LayerContent | None]]:
    """Entries of a layer tar (gzip/zstd/plain, detected by magic), each with its content for files.

    The content reader is valid until the next entry is requested. Whiteout and opaque markers come back as
    kinds "whiteout" / "opaque" (see LayerEntry). Paths are as stored except that './' and trailing '/'
    are dropped, so callers (apply) must still refuse absolute paths and '..'. Raises StoreError on a
    corrupt or truncated archive.
    """
    try:
        src = decompress_stream(stream)
    except OSError as exc:
        raise StoreError(f"cannot read the layer: {exc.strerror or exc}") from exc
    pax: dict[bytes, bytes] = {}
    gnu_long: dict[bytes, bytes] = {}
    content: LayerContent | None = None
    while True:
        if content is not None:
            content.skip()
            _read_exact(src, content.padding, "padding")
            content = None
        block = _read(src, BLOCK)
        if len(block) != BLOCK:
            raise StoreError("truncated tar: missing end-of-archive marker" if not block
                             else "truncated tar: unexpected end of data in a header")
        if block == b"\0" * BLOCK:
            return
        _check_sum(block)
        flag = block[156:157]
        size = _parse_num(block[124:136], "size")
        if size < 0:
            raise StoreError(f"corrupt tar: negative size {size}")
        if flag in (b"x", b"g", b"L", b"K"):
            if size > MAX_EXTENDED:
                raise StoreError(f"corrupt tar: an extended header of {size} bytes (at most {MAX_EXTENDED})")
            data = _read_exact(src, size + (-size % BLOCK), "an extended header")[:size]
            if flag == b"x":
                pax.update(_parse_pax(data))
            elif flag in (b"L", b"K"):
                gnu_long[b"path" if flag == b"L" else b"linkpath"] = data.split(b"\0", 1)[0]
            continue
        entry = _entry_of(block, flag, {**gnu_long, **pax})
        pax, gnu_long = {}, {}
        content = LayerContent(src, entry.size if entry.kind == "file" else 0, entry.path)
        yield entry, (content if entry.kind == "file" else None)


def _check_sum(block: bytes) -> None:
    stored = _parse_num(block[148:156], "checksum")
    unsigned = sum(block[:148]) + 256 + sum(block[156:])
    signed = unsigned - 256 * sum(1 for b in block[:148] + block[156:] if b >= 128)  # old signed writers
    if stored not in (unsigned, signed):
        raise StoreError("corrupt tar: header checksum mismatch")


def _entry_of(block: bytes, flag: bytes, pax: dict[bytes, bytes]) -> LayerEntry:
    name = pax.get(b"path")
    if name is None:
        name = block[:100].split(b"\0", 1)[0]
        prefix = block[345:500].split(b"\0", 1)[0] if block[257:263] == b"ustar\0" else b""
        if prefix:
            name = prefix + b"/" + name
    link = pax.get(b"linkpath", block[157:257].split(b"\0", 1)[0])
    kind = _KIND_OF_FLAG.get(flag)
    while name.startswith(b"./"):
        name = name[2:]
    path = os.fsdecode(name.rstrip(b"/") if name not in (b"/",) else name)
    if kind is None:  # as containerd and docker: GNU sparse, volume labels, dump dirs, vendor types
        raise StoreError(f"unsupported tar entry type {flag!r} for {path!r}")
    if any(key.startswith(b"GNU.sparse.") for key in pax):
        raise StoreError(f"unsupported tar entry {path!r}: a sparse file")
    if b"\0" in name or b"\0" in link:
        raise StoreError(f"corrupt tar: a NUL byte in the name or link of {path!r}")
    if path.count("/") >= MAX_DEPTH:
        raise StoreError(f"corrupt tar: {path[:100]!r}... is nested more than {MAX_DEPTH} directories deep")
    xattrs = tuple(sorted((k[13:].decode("utf-8", "surrogateescape"), v)
                          for k, v in pax.items() if k.startswith(b"SCHILY.xattr.")))
    if any("\0" in key or not key for key, _ in xattrs):
        raise StoreError(f"corrupt tar: a bad xattr name on {path!r}")
    head, _, base = path.rpartition("/")
    if kind == "file" and base == OPAQUE_MARKER:
        return LayerEntry(path=head, kind="opaque")
    if kind == "file" and base.startswith(WHITEOUT_PREFIX) and not base.startswith(WHITEOUT_PREFIX * 2):
        gone = base[len(WHITEOUT_PREFIX):]
        return LayerEntry(path=f"{head}/{gone}" if head else gone, kind="whiteout")
    dev = kind in ("char", "block")
    return LayerEntry(
        path=path, kind=kind, mode=_parse_num(block[100:108], "mode") & 0o7777,
        uid=_pax_int(pax, b"uid", block[108:116], path, _MAX_ID),
        gid=_pax_int(pax, b"gid", block[116:124], path, _MAX_ID),
        mtime=_pax_int(pax, b"mtime", block[136:148], path, _MAX_INT64, -_MAX_INT64 - 1),
        size=_pax_int(pax, b"size", block[124:136], path, _MAX_INT64) if kind == "file" else 0,
        link_target=os.fsdecode(link) if kind in ("symlink", "hardlink") else "", xattrs=xattrs,
        devmajor=_device(block[329:337], "devmajor", path) if dev else 0,
        devminor=_device(block[337:345], "devminor", path) if dev else 0,
    )


_PAX_NUMBER = re.compile(rb"-?[0-9]+")
_PAX_TIME = re.compile(rb"(-?[0-9]+)(?:\.[0-9]*)?")  # seconds, and a fraction pybuild does not keep


def _pax_int(pax: dict[bytes, bytes], key: bytes, field: bytes, path: str, high: int, low: int = 0) -> int:
    """A number of the entry: its PAX record when there is one, else its header field; within low..high."""
    value = pax.get(key)
    if value is None:
        return _in_range(_parse_num(field, key.decode()), high, low, key.decode(), path)
    match = (_PAX_TIME if key == b"mtime" else _PAX_NUMBER).fullmatch(value)
    if match is None:
        raise StoreError(f"corrupt tar: bad PAX {key.decode()} {value[:40]!r} for {path!r}")
    return _in_range(int(match.group(1) if key == b"mtime" else value), high, low, key.decode(), path)


def _device(field: bytes, what: str, path: str) -> int:
    return _in_range(_parse_num(field, what), _MAX_DEV, 0, what, path)


def _in_range(value: int, high: int, low: int, what: str, path: str) -> int:
    if not low <= value <= high:
        raise StoreError(f"corrupt tar: {what} {value} of {path!r} is out of range")
    return value


def read_entries(stream: IO[bytes]) -> list[LayerEntry]:
    """All entries of a layer tar with file content inlined as `data` (for tests and small layers)."""
    found = []
    for entry, content in iter_layer(stream):
        if content is not None:
            entry = LayerEntry(**{**_fields(entry), "data": content.read()})
        found.append(entry)
    return found


def _fields(entry: LayerEntry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in entry.__record_fields__}  # type: ignore[attr-defined]
