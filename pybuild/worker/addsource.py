"""ADD: local archives (auto-extracted), remote URLs (downloaded), git URLs (refused for now).

Who uses it: the worker's op wiring for ADD; it writes through `fileops.Writer`, so ADD and COPY share
path resolution, ownership and mode rules.

Semantics (docker / BuildKit, decisions marked):
- A local source FILE named at the top level (not a file inside a copied directory) is extracted when it
  is a tar archive, plain or compressed with gzip, bzip2, xz or zstd, detected by magic bytes and a valid
  first tar header, not by extension (docker's `DetectCompression` + `isArchive`). `--unpack=false` copies
  it as a file; `--unpack=true` also extracts a downloaded archive (BuildKit labs flag). Remote files are
  not extracted by default (docker's rule).
- The archive lands in the destination directory: `ADD a.tar /x/` and `ADD a.tar /x` both extract into
  /x (BuildKit's unpack copies into the destination path as a directory).
- Extraction is confined like docker's chrootarchive: the destination directory is the root for every
  entry's path (an absolute name is taken relative to it, symlinks met while walking resolve inside it),
  and, like docker's `breakoutError`, an entry whose name or hardlink target escapes with `..`, or a
  relative symlink target that climbs out, stops the ADD with StepFailed. Entries are created with
  `*at` calls relative to directory fds, never through a symlink. Owners come from the archive (or
  --chown), modes from the archive (or --chmod), mtimes from the archive. Devices and FIFOs are created
  only when running as root; other entry types are skipped.
- A URL is downloaded with httpx (redirects followed, a timeout, errors name the URL) into a private temp
  file; `--checksum=<algo>:<hex>` (sha256/sha384/sha512) is verified before anything is written to the
  rootfs. The file gets mode 0600 (or --chmod), owner 0:0 (or --chown) and the Last-Modified time (now
  when absent). Its name under a directory destination is the URL path's last element, `__unnamed__`
  when there is none (BuildKit's Dockerfile frontend). Design note: docs/ARCHITECTURE.md gives httpx one home
  (`registry/`); ADD's download is the one exception in the worker, imported lazily inside `add_url`.
- Git URLs (`git@…`, `git://…`, `ssh://…`, `https://….git`) are refused: "ADD of a git repository is not
  supported yet". `--keep-git-dir` without a git source and `--checksum` with a local source are errors
  (BuildKit refuses both).
"""

from __future__ import annotations

import bz2
import email.utils
import hashlib
import lzma
import os
import posixpath
import re
import stat
import tarfile
import tempfile
import time
from collections.abc import Sequence
from typing import IO
from urllib.parse import unquote, urlsplit

from pybuild.context.sources import CopyItem, TreeView, resolve_dest, select_sources
from pybuild.digest import digest_parts
from pybuild.errors import PybuildError, StepFailed
from pybuild.worker.fileops import (
    ChmodFn,
    Writer,
    _DirCache,
    _open_source,
    dest_is_dir,
    parse_chmod,
    resolve_owner,
    write_item,
)
from pybuild.worker.rootfs_path import RootDir, clean_path

__all__ = ["add_sources", "add_url", "archive_kind", "extract_archive", "is_git_url", "is_url"]

_GIT_URL = re.compile(r"^(git://|git@|ssh://|github\.com/)|^https?://\S+?\.git(#.*)?$")
_DIGEST = ("sha256", "sha384", "sha512")
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))
_UNNAMED = "__unnamed__"
DEFAULT_TIMEOUT = 60.0


def is_git_url(src: str) -> bool:
    """BuildKit's `isGitURL` shapes: `git@host:x`, `git://`, `ssh://`, `github.com/…`, `http(s)://….git`."""
    return _GIT_URL.search(src) is not None


def is_url(src: str) -> bool:
    return src.startswith(("http://", "https://"))


# ---------------------------------------------------------------------------------------------- archives

def _compression(head: bytes) -> str:
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return "uncompressed"


def _decompressed(raw: IO[bytes], kind: str) -> IO[bytes]:
    if kind == "bzip2":
        return bz2.BZ2File(raw)
    if kind == "xz":
        return lzma.LZMAFile(raw)
    from pybuild.store.compress import decompress_stream

    return decompress_stream(raw, kind if kind != "uncompressed" else "uncompressed")


def _is_tar_header(block: bytes) -> bool:
    if len(block) < 512 or not block.strip(b"\0"):
        return False
    try:
        stored = int(block[148:156].replace(b"\0", b" ").strip() or b"-1", 8)
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 256 + sum(block[156:512])
    signed = sum((b - 256 if b > 127 else b) for b in block[:148] + block[156:512]) + 256
    return stored in (unsigned, signed)


def archive_kind(fd: int) -> str | None:
    """The compression of the tar archive in file `fd` ('uncompressed', 'gzip', …), or None when the file
    is not a tar archive. Leaves the offset at 0."""
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        with os.fdopen(os.dup(fd), "rb") as raw:
            kind = _compression(raw.read(6))
            raw.seek(0)
            try:
                block = _decompressed(raw, kind).read(512)
            except (PybuildError, OSError, EOFError, lzma.LZMAError):
                return None
        return kind if _is_tar_header(block) else None
    finally:
        os.lseek(fd, 0, os.SEEK_SET)


def _inside(name: str, shown: str, what: str) -> str:
    """`name` as a path relative to the extraction root ('' for the root); StepFailed if `..` escapes."""
    out: list[str] = []
    for seg in name.split("/"):
        if seg == "..":
            if not out:
                raise StepFailed(f'ADD {shown}: unsafe archive entry "{name}": {what} escapes the destination')
            out.pop()
        elif seg not in ("", "."):
            out.append(seg)
    return "/".join(out)


def extract_archive(root: RootDir, dest_dir: str, fd: int, kind: str, shown: str, *,
                    owner: tuple[int, int] | None, chmod: ChmodFn | None) -> None:
    """Extract the archive in file `fd` into container directory `dest_dir` of `root` (module docstring)."""
    maker = Writer(root, owner=owner, chmod=None, what="ADD")
    dir_fd, canonical, _ = root.open_dir(dest_dir, make_dir=maker.make_parent)
    maker.close()
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        with RootDir.from_fd(dir_fd, canonical) as sub, os.fdopen(os.dup(fd), "rb") as raw:
            writer = Writer(sub, owner=owner, chmod=chmod, what="ADD")
            try:
                with tarfile.open(fileobj=_decompressed(raw, kind), mode="r|") as tar:
                    for info in tar:
                        _extract_member(writer, tar, info, shown)
            except (tarfile.TarError, EOFError, lzma.LZMAError) as exc:
                raise StepFailed(f"ADD {shown}: cannot read archive: {exc}") from exc
            except PybuildError as exc:
                if isinstance(exc, StepFailed):
                    raise
                raise StepFailed(f"ADD {shown}: cannot read archive: {exc.message}") from exc
            except OSError as exc:
                raise StepFailed(f"ADD {shown}: cannot extract: {exc.strerror or exc}") from exc
            finally:
                writer.close()
    finally:
        os.close(dir_fd)


def _extract_member(writer: Writer, tar: tarfile.TarFile, info: tarfile.TarInfo, shown: str) -> None:
    rel = _inside(info.name, shown, "its path")
    if not rel:
        return  # the archive's root entry: the destination keeps its own metadata
    dest = "/" + rel
    mtime = int(info.mtime) * 1_000_000_000
    if info.isdir():
        writer.directory(dest, info.mode, info.uid, info.gid, mtime, top=False)
    elif info.isreg():
        member = tar.extractfile(info)
        assert member is not None
        writer.file_from_reader(dest, member.read, info.mode, info.uid, info.gid, mtime)
    elif info.issym():
        if not info.linkname.startswith("/"):
            _inside(posixpath.join(posixpath.dirname(rel), info.linkname), shown, "its symlink target")
        writer.symlink(dest, info.linkname, info.uid, info.gid, mtime)
    elif info.islnk():
        target = _inside(info.linkname, shown, "its hardlink target")
        _hardlink(writer, dest, "/" + target, info, shown)
    elif (info.ischr() or info.isblk() or info.isfifo()) and os.geteuid() == 0:
        dir_fd, name = writer.parent(dest)
        writer.clear(dir_fd, name, dest)
        kind = stat.S_IFCHR if info.ischr() else stat.S_IFBLK if info.isblk() else stat.S_IFIFO
        os.mknod(name, kind | (info.mode & 0o7777), os.makedev(info.devmajor, info.devminor), dir_fd=dir_fd)
        os.chown(name, *writer.owner_for(info.uid, info.gid), dir_fd=dir_fd, follow_symlinks=False)


def _hardlink(writer: Writer, dest: str, target: str, info: tarfile.TarInfo, shown: str) -> None:
    if target == "/":
        raise StepFailed(f'ADD {shown}: unsafe archive entry "{info.name}": hardlink to the destination')
    src_fd, src_name = writer.parent(target)
    st = os.stat(src_name, dir_fd=src_fd, follow_symlinks=False) if _exists(src_fd, src_name) else None
    if st is None or stat.S_ISDIR(st.st_mode):
        raise StepFailed(f'ADD {shown}: archive entry "{info.name}": hardlink target "{info.linkname}" '
                         "is missing or a directory")
    dir_fd, name = writer.parent(dest)
    writer.clear(dir_fd, name, dest)
    os.link(src_name, name, src_dir_fd=src_fd, dst_dir_fd=dir_fd, follow_symlinks=False)


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


# ---------------------------------------------------------------------------------------------- URLs

def _parse_checksum(checksum: str) -> tuple[str, str]:
    parts = digest_parts(checksum, _DIGEST)
    if parts is None:
        raise StepFailed(f"ADD --checksum: invalid digest {checksum!r} (want sha256:<64 hex digits>)")
    return parts


def _url_name(url: str) -> str:
    base = posixpath.basename(unquote(urlsplit(url).path))
    return base if base not in ("", ".", "..") else _UNNAMED


def _download(url: str, out: IO[bytes], algo: str, timeout: float) -> tuple[str, int | None]:
    """Stream `url` into `out`; returns (hex digest, Last-Modified in ns or None)."""
    import httpx  # the worker's one use of httpx (see the module docstring)

    digest = hashlib.new(algo)
    try:
        with httpx.Client(follow_redirects=True, timeout=timeout) as client:
            with client.stream("GET", url) as resp:
                if resp.status_code >= 400:
                    raise StepFailed(f"ADD {url}: HTTP {resp.status_code} {resp.reason_phrase}".rstrip())
                for chunk in resp.iter_bytes(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
                modified = resp.headers.get("last-modified")
    except httpx.HTTPError as exc:
        raise StepFailed(f"ADD {url}: cannot download: {exc or type(exc).__name__}") from exc
    out.flush()
    mtime: int | None = None
    if modified:
        try:
            mtime = int(email.utils.parsedate_to_datetime(modified).timestamp()) * 1_000_000_000
        except (TypeError, ValueError):
            mtime = None
    return digest.hexdigest(), mtime


def add_url(
    rootfs: str,
    url: str,
    dest: str,
    *,
    workdir: str = "/",
    chown: str | None = None,
    chmod: str | None = None,
    checksum: str = "",
    unpack: bool | None = None,
    names_dir: bool | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """Download `url` into `rootfs` at `dest` (module docstring); returns the container path written.

    `names_dir` overrides whether `dest` names a directory (the caller knows when several sources share
    it). Raises StepFailed for HTTP errors, unreachable hosts and checksum mismatches (nothing written).
    """
    algo, expected = _parse_checksum(checksum) if checksum else ("sha256", "")
    path, is_dir = resolve_dest(dest, workdir)
    is_dir = names_dir if names_dir is not None else (is_dir or path == "/" or dest_is_dir(rootfs, dest, workdir))
    target = f"{path.rstrip('/')}/{_url_name(url)}" if is_dir else path
    mode_fn = parse_chmod(chmod) if chmod else None
    with tempfile.TemporaryFile(prefix="pybuild-add-") as tmp:
        got, mtime = _download(url, tmp, algo, timeout)
        if expected and got != expected:
            raise StepFailed(f"ADD {url}: checksum mismatch: expected {algo}:{expected}, got {algo}:{got}")
        fd = tmp.fileno()
        with RootDir(rootfs) as root:
            owner = resolve_owner(root, chown) if chown else None
            kind = archive_kind(fd) if unpack else None
            if kind is not None:
                extract_archive(root, path, fd, kind, url, owner=owner, chmod=mode_fn)
                return path
            writer = Writer(root, owner=owner, chmod=mode_fn, what="ADD")
            try:
                os.lseek(fd, 0, os.SEEK_SET)
                target = writer.resolve_final(target)
                writer.file_from_fd(target, fd, 0o600, 0, 0, mtime if mtime is not None else time.time_ns())
            except OSError as exc:
                raise StepFailed(f'ADD {url}: cannot write "{target}": {exc.strerror or exc}') from exc
            finally:
                writer.close()
    return clean_path(target)


# ---------------------------------------------------------------------------------------------- ADD

def _check_flags(sources: Sequence[str], checksum: str, keep_git_dir: bool) -> None:
    for src in sources:
        if is_git_url(src):
            raise StepFailed(f"ADD {src}: ADD of a git repository is not supported yet")
    if keep_git_dir:
        raise StepFailed("ADD --keep-git-dir is only valid with a git repository source")
    if checksum and not all(is_url(src) for src in sources):
        raise StepFailed("ADD --checksum is only valid with an HTTP(S) source")


def add_sources(
    rootfs: str,
    sources: Sequence[str],
    dest: str,
    *,
    view: TreeView | None,
    source_root: str | None,
    workdir: str = "/",
    chown: str | None = None,
    chmod: str | None = None,
    excludes: Sequence[str] = (),
    unpack: bool | None = None,
    checksum: str = "",
    keep_git_dir: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """A whole ADD: URLs are downloaded, local sources selected in `view` (the context listing at host dir
    `source_root`) and copied, top-level local archives extracted. Raises StepFailed / ContextError."""
    _check_flags(sources, checksum, keep_git_dir)
    path, names_dir = resolve_dest(dest, workdir)
    names_dir = names_dir or path == "/" or dest_is_dir(rootfs, dest, workdir)
    urls = [src for src in sources if is_url(src)]
    local = [src for src in sources if not is_url(src)]
    if len(sources) > 1 and not names_dir:
        raise StepFailed("When using ADD with more than one source file, "
                         "the destination must be a directory and end with a /")
    for url in urls:
        add_url(rootfs, url, dest, workdir=workdir, chown=chown, chmod=chmod, checksum=checksum,
                unpack=unpack, names_dir=names_dir, timeout=timeout)
    if local:
        if view is None or source_root is None:
            raise StepFailed("ADD of local files needs a build context")
        items = select_sources(local, view, dest, workdir=workdir, excludes=excludes, dest_is_dir=names_dir,
                               instruction="ADD")
        _add_local(rootfs, items, source_root, names_dir, chown=chown, chmod=chmod, unpack=unpack)


def _add_local(rootfs: str, items: Sequence[CopyItem], source_root: str, names_dir: bool, *,
               chown: str | None, chmod: str | None, unpack: bool | None) -> None:
    mode_fn = parse_chmod(chmod) if chmod else None
    with RootDir(rootfs) as root, RootDir(source_root) as src:
        owner = resolve_owner(root, chown) if chown else None
        writer = Writer(root, owner=owner, chmod=mode_fn, what="ADD")
        sources = _DirCache(src, None)
        try:
            for item in items:
                if item.top and item.entry.kind == "file" and unpack is not False:
                    if _try_extract(root, sources, item, names_dir, owner, mode_fn):
                        continue
                try:
                    write_item(writer, sources, item, False)
                except OSError as exc:
                    raise StepFailed(f'ADD: cannot write "{item.dest}": {exc.strerror or exc}') from exc
        finally:
            sources.close()
            writer.close()


def _try_extract(root: RootDir, sources: _DirCache, item: CopyItem, names_dir: bool,
                 owner: tuple[int, int] | None, mode_fn: ChmodFn | None) -> bool:
    fd = _open_source(sources, item.entry)
    try:
        kind = archive_kind(fd)
        if kind is None:
            return False
        target = posixpath.dirname(item.dest) if names_dir else item.dest
        extract_archive(root, target, fd, kind, item.source, owner=owner, chmod=mode_fn)
        return True
    finally:
        os.close(fd)
