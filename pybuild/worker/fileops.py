"""COPY, heredoc COPY and WORKDIR onto a rootfs directory (the step's overlay mount; a temp dir in tests).

Who uses it: the worker's op wiring (and `addsource` for ADD). Sources come from `context.sources`
(`select_sources` → CopyItem); every destination path is resolved inside the rootfs by
`rootfs_path.RootDir` (symlinks followed inside the rootfs only), and every source is read through a
RootDir of its own tree, so nothing on the host outside the two roots is ever read or written.

Semantics (BuildKit's Dockerfile frontend + fsutil copy, decisions marked):
- Permission bits are preserved unless `--chmod` (octal, or symbolic like `u+x,g-w`, applied to each copied
  file and directory, never to symlinks, created parents, or the destination directory a directory source
  is copied into: BuildKit creates that one with MkdirAll / fsutil's top-level copy and never chmods it, so
  `COPY --chmod=0750 dir /d/` gives a 0755 /d holding 0750 entries). Decision: symbolic clauses without a
  `who` mean `a` and ignore the umask (there is none in a build).
- Ownership: 0:0 for the build context; preserved for `COPY --from` (`preserve_owner=True`); `--chown`
  sets every copied entry and every created parent. A name is looked up in the DESTINATION rootfs's
  /etc/passwd and /etc/group; a name without a group takes its passwd primary group, a numeric uid without
  a group uses the uid as gid (BuildKit's file-op `readUser`). Ownership is only applied when running
  as root.
- Missing parents are created 0755, owned by the --chown user (BuildKit `MkdirAll(..., chownUser)`), root
  otherwise, mtime now. A new top-level directory takes its source's mode (never --chmod) and mtime; an
  existing directory (the destination of a directory source) keeps its own metadata; nested directories
  take their source's metadata.
- Symlinks are copied as symlinks (target unchanged). The destination a source names is resolved with a
  final symlink followed inside the rootfs (BuildKit's `fs.RootPath` on the COPY destination: `COPY a /l`
  with `/l -> /x` writes /x); an entry inside a copied directory replaces an existing file or symlink
  (fsutil's `ensureEmptyFileTarget`), never writing through it; an existing symlink at a directory's destination is followed (inside
  the rootfs) so usr-merged trees keep working. A non-directory replacing an existing directory is an
  error (docker's "cannot overwrite directory").
- mtimes are preserved from the source (directories set last, deepest first). Heredoc files get mode 0644
  and the mtime given by the caller (BuildKit's `Mkfile` uses the creation time unless SOURCE_DATE_EPOCH
  is set): `mtime_ns=None` means now.
- Files sharing an inode in one COPY stay hardlinked in the rootfs (cheap: one dict lookup per file).
- `--link` produces the same rootfs here: pybuild always diffs the step's upper dir into its own layer, so
  the only difference BuildKit has (rebasing the layer without the parent) is a cache property, not a
  content one. The flag is accepted and ignored.
- `--parents` and `--exclude` are handled by `select_sources`; this module only writes items.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from pybuild.context.entry import Entry
from pybuild.context.sources import CopyItem, EntryView, TreeView, resolve_dest, select_sources
from pybuild.errors import DockerfileError, StepFailed
from pybuild.worker.rootfs_path import RootDir, clean_path

__all__ = ["ChmodFn", "HeredocFile", "copy_into", "copy_sources", "dest_is_dir", "make_workdir",
           "parse_chmod", "resolve_owner", "stage_view", "write_heredocs"]

ChmodFn = Callable[[int, bool], int]
"""`fn(perm_bits, is_dir) -> new perm bits`, from `parse_chmod`."""

HeredocFile = tuple[str, bytes]
"""(file name, final content) of a heredoc source."""

_CHUNK = 1 << 20
_FD_CACHE = 32
_AS_ROOT = os.geteuid() == 0


# ---------------------------------------------------------------------------------------------- users

def resolve_owner(root: RootDir, spec: str, *, flag: str = "--chown") -> tuple[int, int]:
    """(uid, gid) for `user[:group]` (names or ids), names looked up inside `root` (see module docstring).

    Names go through `users.resolve_user` (the rootfs's /etc/passwd and /etc/group, read without leaving
    it); a numeric uid without a group keeps gid = uid, as BuildKit's file-op `readUser` does for --chown
    (which differs from USER, where the gid comes from passwd).
    """
    from pybuild.worker.users import UserNotFound, resolve_user

    user, _, group = spec.partition(":")
    if not user:
        raise StepFailed(f"{flag}: invalid user {spec!r}")
    if user.isdigit() and not group:
        return int(user), int(user)
    try:
        resolved = resolve_user(root.host_path, spec)
    except UserNotFound as exc:
        raise UserNotFound(f"{flag}: {exc.message}") from None
    return resolved.uid, resolved.gid


# ---------------------------------------------------------------------------------------------- chmod

_CLAUSE = re.compile(r"([ugoa]*)((?:[-+=](?:[ugo]|[rwxXst]*))+)")
_OP = re.compile(r"([-+=])([ugo]|[rwxXst]*)")
_WHO = {"u": 0o4700, "g": 0o2070, "o": 0o1007}


def parse_chmod(spec: str) -> ChmodFn:
    """`--chmod` as a function of (mode, is_dir): octal (`755`, `0644`) or symbolic (`u+x,g-w,o=r`)."""
    if re.fullmatch(r"[0-7]+", spec):
        value = int(spec, 8)
        if value > 0o7777:
            raise DockerfileError(f"invalid --chmod value {spec!r}: more than 4 octal digits")
        return lambda _mode, _is_dir: value
    clauses = []
    for text in spec.split(","):
        match = _CLAUSE.fullmatch(text)
        if match is None:
            raise DockerfileError(f"invalid --chmod value {spec!r}: want octal digits or symbolic like u+x,g-w")
        who = match.group(1).replace("a", "ugo") or "ugo"
        mask = 0
        for char in set(who):
            mask |= _WHO[char]
        clauses.append((mask, _OP.findall(match.group(2))))

    def apply(mode: int, is_dir: bool) -> int:
        mode &= 0o7777
        for mask, ops in clauses:
            for op, perms in ops:
                bits = _perm_bits(perms, mode, is_dir) & mask
                if op == "+":
                    mode |= bits
                elif op == "-":
                    mode &= ~bits
                else:
                    mode = (mode & ~mask) | bits
        return mode

    return apply


def _perm_bits(perms: str, mode: int, is_dir: bool) -> int:
    if perms in ("u", "g", "o"):
        shift = {"u": 6, "g": 3, "o": 0}[perms]
        three = (mode >> shift) & 0o7
        return three << 6 | three << 3 | three
    bits = 0
    for char in perms:
        if char == "X":
            bits |= 0o111 if is_dir or mode & 0o111 else 0
        else:
            bits |= {"r": 0o444, "w": 0o222, "x": 0o111, "s": 0o6000, "t": 0o1000}[char]
    return bits


# ---------------------------------------------------------------------------------------------- fd helpers

class _DirCache:
    """A few open directory fds of one root, by container path (a COPY writes many files per directory)."""

    def __init__(self, root: RootDir, make_dir: Callable[[int, str], None] | None) -> None:
        self.root = root
        self.make_dir = make_dir
        self.fds: OrderedDict[str, int] = OrderedDict()

    def get(self, path: str) -> int:
        fd = self.fds.get(path)
        if fd is not None:
            self.fds.move_to_end(path)
            return fd
        fd = self.root.open_dir(path, make_dir=self.make_dir)[0]
        self.fds[path] = fd
        if len(self.fds) > _FD_CACHE:
            os.close(self.fds.popitem(last=False)[1])
        return fd

    def forget(self, path: str) -> None:
        """`path` was replaced: drop it and everything below it."""
        for key in [k for k in self.fds if k == path or k.startswith(path.rstrip("/") + "/")]:
            os.close(self.fds.pop(key))

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _split(path: str) -> tuple[str, str]:
    head, _, name = clean_path(path).rpartition("/")
    return head or "/", name


def _stat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _copy_fd(src: int, dst: int) -> None:
    try:
        while os.sendfile(dst, src, None, _CHUNK):
            pass
        return
    except OSError:
        os.lseek(src, 0, os.SEEK_SET)
        os.lseek(dst, 0, os.SEEK_SET)
        os.ftruncate(dst, 0)
    while chunk := os.read(src, _CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view):]


# ---------------------------------------------------------------------------------------------- writer

class Writer:
    """Writes entries into one rootfs: parents, ownership, modes, mtimes (deferred for directories).

    Made per COPY/ADD by this module and `addsource`; `close()` applies directory mtimes and closes fds.
    """

    def __init__(self, root: RootDir, *, owner: tuple[int, int] | None, chmod: ChmodFn | None,
                 what: str = "COPY") -> None:
        self.root = root
        self.owner = owner
        self.chmod = chmod
        self.what = what
        self.now_ns = time.time_ns()
        self.dirs = _DirCache(root, self.make_parent)
        self.dir_times: list[tuple[str, int]] = []
        self.links: dict[tuple[int, int], str] = {}

    def close(self) -> None:
        self.dirs.close()
        for path, mtime in sorted(self.dir_times, key=lambda item: item[0].count("/"), reverse=True):
            try:
                fd = self.root.open_dir(path)[0]
            except StepFailed:
                continue
            try:
                os.utime(fd, ns=(mtime, mtime))
            finally:
                os.close(fd)

    def make_parent(self, parent_fd: int, name: str) -> None:
        """A missing parent: 0755, the --chown owner (root otherwise), mtime now."""
        os.mkdir(name, 0o755, dir_fd=parent_fd)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
        try:
            if _AS_ROOT:
                os.fchown(fd, *(self.owner or (0, 0)))
            os.fchmod(fd, 0o755)
        finally:
            os.close(fd)

    def owner_for(self, uid: int, gid: int) -> tuple[int, int]:
        return self.owner if self.owner is not None else (uid, gid)

    def mode_for(self, perm: int, is_dir: bool) -> int:
        return self.chmod(perm, is_dir) if self.chmod is not None else perm & 0o7777

    def parent(self, dest: str) -> tuple[int, str]:
        """The fd of `dest`'s parent (created if missing) and its final name."""
        head, name = _split(dest)
        if not name:
            raise StepFailed(f"{self.what}: cannot replace the root directory")
        return self.dirs.get(head), name

    def resolve_final(self, dest: str) -> str:
        """`dest` with a final symlink followed inside the root (BuildKit resolves a COPY destination with
        `fs.RootPath`, so `COPY a /l` with `/l -> /x` writes /x); missing parents are created."""
        res = self.root.walk(dest, follow_last=True, make_dir=self.make_parent)
        os.close(res.dir_fd)
        if not res.name:
            raise StepFailed(f'{self.what}: destination "{dest}" is a directory')
        return res.path

    def clear(self, dir_fd: int, name: str, dest: str) -> None:
        """Remove a non-directory at `name` so something new can take its place."""
        st = _stat_at(dir_fd, name)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            raise StepFailed(f'{self.what}: cannot overwrite directory "{dest}" with a non-directory')
        os.unlink(name, dir_fd=dir_fd)
        self.dirs.forget(clean_path(dest))  # it may have been a link to a directory we looked through

    def directory(self, dest: str, perm: int, uid: int, gid: int, mtime_ns: int, *, top: bool) -> None:
        """Make directory `dest` (or reuse an existing one; a top one keeps its metadata, and a new top one
        gets `perm` itself: --chmod applies to what is copied into it, not to it)."""
        if clean_path(dest) == "/":
            return  # the rootfs's own root keeps its metadata
        dir_fd, name = self.parent(dest)
        st = _stat_at(dir_fd, name)
        if st is not None and stat.S_ISLNK(st.st_mode):
            target = self.root.lstat(dest)
            if target is not None and stat.S_ISDIR(target.st_mode):
                return  # an existing link to a directory inside the rootfs: write through it
            os.unlink(name, dir_fd=dir_fd)
            st = None
        elif st is not None and not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=dir_fd)
            st = None
        if st is not None and top:
            return
        if st is None:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            if _AS_ROOT:
                os.fchown(fd, *self.owner_for(uid, gid))
            os.fchmod(fd, perm & 0o7777 if top else self.mode_for(perm, True))
        finally:
            os.close(fd)
        self.dir_times.append((clean_path(dest), mtime_ns))

    def file_from_fd(self, dest: str, src_fd: int, perm: int, uid: int, gid: int, mtime_ns: int | None,
                     inode: tuple[int, int] | None = None) -> None:
        """Write regular file `dest` with the content of `src_fd` (or hardlink it to an earlier copy)."""
        dir_fd, name = self.parent(dest)
        self.clear(dir_fd, name, dest)
        if inode is not None and inode in self.links:
            first_fd, first_name = self.parent(self.links[inode])
            os.link(first_name, name, src_dir_fd=first_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            return
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dir_fd)
        try:
            _copy_fd(src_fd, fd)
            self.finish_file(fd, perm, uid, gid, mtime_ns)
        finally:
            os.close(fd)
        if inode is not None:
            self.links[inode] = clean_path(dest)

    def file_from_bytes(self, dest: str, data: bytes, perm: int, uid: int, gid: int,
                        mtime_ns: int | None) -> None:
        chunks = [data]
        self.file_from_reader(dest, lambda _n: chunks.pop() if chunks else b"", perm, uid, gid, mtime_ns)

    def file_from_reader(self, dest: str, read: Callable[[int], bytes], perm: int, uid: int, gid: int,
                         mtime_ns: int | None) -> None:
        """Write regular file `dest` from `read(n)` calls until it returns b''."""
        dir_fd, name = self.parent(dest)
        self.clear(dir_fd, name, dest)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dir_fd)
        try:
            while chunk := read(_CHUNK):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            self.finish_file(fd, perm, uid, gid, mtime_ns)
        finally:
            os.close(fd)

    def finish_file(self, fd: int, perm: int, uid: int, gid: int, mtime_ns: int | None) -> None:
        if _AS_ROOT:
            os.fchown(fd, *self.owner_for(uid, gid))
        os.fchmod(fd, self.mode_for(perm, False))  # after chown, which clears setuid bits
        when = self.now_ns if mtime_ns is None else mtime_ns
        os.utime(fd, ns=(when, when))

    def symlink(self, dest: str, target: str, uid: int, gid: int, mtime_ns: int) -> None:
        dir_fd, name = self.parent(dest)
        self.clear(dir_fd, name, dest)
        os.symlink(target, name, dir_fd=dir_fd)
        if _AS_ROOT:
            os.chown(name, *self.owner_for(uid, gid), dir_fd=dir_fd, follow_symlinks=False)
        os.utime(name, ns=(mtime_ns, mtime_ns), dir_fd=dir_fd, follow_symlinks=False)


# ---------------------------------------------------------------------------------------------- COPY

def _open_source(sources: _DirCache, entry: Entry) -> int:
    """An fd of regular file `entry` in the source tree, opened without following any link."""
    head, name = _split(entry.path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                     dir_fd=sources.get(head))
    except OSError as exc:
        raise StepFailed(f'cannot read source "{entry.path}": {exc.strerror}') from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StepFailed(f'source "{entry.path}" changed while copying: not a regular file any more')
    return fd


def write_item(writer: Writer, sources: _DirCache, item: CopyItem, preserve_owner: bool) -> None:
    """Write one selected entry (file, directory or symlink) at its destination."""
    entry = item.entry
    uid, gid = (entry.uid, entry.gid) if preserve_owner else (0, 0)
    if entry.kind == "dir":
        writer.directory(item.dest, entry.perm, uid, gid, entry.mtime_ns, top=item.top)
        return
    # the destination a source names follows a final link (BuildKit); entries inside a copied directory
    # replace what is there (fsutil's ensureEmptyFileTarget)
    dest = writer.resolve_final(item.dest) if item.top else item.dest
    if entry.kind == "symlink":
        writer.symlink(dest, entry.link_target or "", uid, gid, entry.mtime_ns)
    else:
        fd = _open_source(sources, entry)
        inode = (entry.dev, entry.ino) if entry.nlink > 1 else None
        try:
            writer.file_from_fd(dest, fd, entry.perm, uid, gid, entry.mtime_ns, inode)
        finally:
            os.close(fd)


def copy_into(
    rootfs: str,
    items: Sequence[CopyItem],
    source_root: str,
    *,
    chown: str | None = None,
    chmod: str | None = None,
    preserve_owner: bool = False,
    link: bool = False,
    what: str = "COPY",
) -> None:
    """Copy `items` (from `select_sources` over the tree at host dir `source_root`) into `rootfs`.

    `preserve_owner` is for `COPY --from` (a stage keeps its owners; the context's files become 0:0).
    `link` (`--link`) is accepted and changes nothing (module docstring). Raises StepFailed.
    """
    del link
    mode_fn = parse_chmod(chmod) if chmod else None
    with RootDir(rootfs) as root, RootDir(source_root) as src:
        owner = resolve_owner(root, chown) if chown else None
        writer = Writer(root, owner=owner, chmod=mode_fn, what=what)
        sources = _DirCache(src, None)
        try:
            for item in items:
                try:
                    write_item(writer, sources, item, preserve_owner)
                except OSError as exc:
                    raise StepFailed(f'{what}: cannot write "{item.dest}": {exc.strerror or exc}') from exc
        finally:
            sources.close()
            writer.close()


def dest_is_dir(rootfs: str, dest: str, workdir: str = "/") -> bool:
    """Whether `dest` (resolved against `workdir`) is an existing directory inside `rootfs` (links followed
    inside it): then a single file source goes inside it, as in docker."""
    path, _ = resolve_dest(dest, workdir)
    with RootDir(rootfs) as root:
        st = root.lstat(path)
    return st is not None and stat.S_ISDIR(st.st_mode)


def stage_view(stage_root: str) -> EntryView:
    """A view of a stage's rootfs directory for `COPY --from` (no ignore file; links are resolved by
    `select_sources` inside the stage only)."""
    from pybuild.context.walk import walk

    return EntryView(walk(stage_root))


def copy_sources(
    rootfs: str,
    sources: Sequence[str],
    dest: str,
    *,
    view: TreeView,
    source_root: str,
    workdir: str = "/",
    chown: str | None = None,
    chmod: str | None = None,
    excludes: Sequence[str] = (),
    parents: bool = False,
    from_stage: str | None = None,
    link: bool = False,
) -> tuple[CopyItem, ...]:
    """A whole COPY: select `sources` in `view` (the context listing, or `stage_view` for `--from`), then
    copy them into `rootfs`. `from_stage` names the stage for errors and preserves owners. Returns items."""
    items = select_sources(
        sources, view, dest, workdir=workdir, excludes=excludes, parents=parents,
        context_name=f'stage "{from_stage}"' if from_stage else "context",
        dest_is_dir=dest_is_dir(rootfs, dest, workdir))
    copy_into(rootfs, items, source_root, chown=chown, chmod=chmod, preserve_owner=from_stage is not None,
              link=link)
    return items


def write_heredocs(
    rootfs: str,
    files: Sequence[HeredocFile],
    dest: str,
    *,
    workdir: str = "/",
    chown: str | None = None,
    chmod: str | None = None,
    mtime_ns: int | None = None,
    more_sources: bool = False,
    what: str = "COPY",
) -> None:
    """Write heredoc sources (`COPY <<EOF /dest`): mode 0644 (or --chmod), owner root (or --chown), mtime
    `mtime_ns` or now. `more_sources` says the instruction has other sources too (dest must be a dir)."""
    path, names_dir = resolve_dest(dest, workdir)
    names_dir = names_dir or path == "/" or dest_is_dir(rootfs, dest, workdir)
    if (len(files) > 1 or more_sources) and not names_dir:
        raise StepFailed(f"When using {what} with more than one source file, "
                         "the destination must be a directory and end with a /")
    mode_fn = parse_chmod(chmod) if chmod else None
    with RootDir(rootfs) as root:
        owner = resolve_owner(root, chown) if chown else None
        writer = Writer(root, owner=owner, chmod=mode_fn, what=what)
        try:
            for name, data in files:
                target = f"{path.rstrip('/')}/{name}" if names_dir else path
                try:
                    target = writer.resolve_final(target)
                    writer.file_from_bytes(target, data, 0o644, 0, 0, mtime_ns)
                except OSError as exc:
                    raise StepFailed(f'{what}: cannot write "{target}": {exc.strerror or exc}') from exc
        finally:
            writer.close()


# ---------------------------------------------------------------------------------------------- WORKDIR

def make_workdir(rootfs: str, path: str, user: str = "", *, base: str = "/") -> str:
    """WORKDIR: create `path` (relative to `base`) inside `rootfs` if missing, 0755, owned by `user` (the
    current USER, resolved in the rootfs; root when empty), like BuildKit's `Mkdir(WithParents, WithUser)`.
    An existing directory is left alone. Returns the canonical path inside the rootfs."""
    full = clean_path(path if path.startswith("/") else f"{base}/{path}")
    with RootDir(rootfs) as root:
        owner = resolve_owner(root, user, flag="USER") if user else (0, 0)
        writer = Writer(root, owner=owner, chmod=None, what="WORKDIR")
        try:
            fd, canonical, _ = root.open_dir(full, make_dir=writer.make_parent)
            os.close(fd)
        except OSError as exc:
            raise StepFailed(f'WORKDIR: cannot create "{full}": {exc.strerror or exc}') from exc
        finally:
            writer.close()
    return canonical
