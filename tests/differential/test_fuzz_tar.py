"""Fuzzing the layer tar reader: whatever a layer holds, reading, applying or checking it raises a UserError or
nothing, never writes outside its target directory, never writes or allocates more than the input can
account for, and never takes more than a few seconds.

Seeds are real layer tars pybuild writes (`tarlayer.write_entries`: files, directories, symlinks, hard links,
whiteouts, an opaque directory, xattrs and long or non-UTF-8 names in PAX headers, devices, a FIFO, big ids
and times), plus GNU- and ustar-prefix tars from Python's `tarfile`. A mutant gets one to four edits: bit
flips in headers or data (with and without the header checksum recomputed), header fields rewritten and the
checksum recomputed (names with `..`, absolute names, long names, links to outside the target, symlink loops,
every typeflag, bogus, negative and huge sizes, ids, times and device numbers), PAX and GNU long-name headers
inserted (traversal paths, NUL bytes, huge and non-finite numbers, sparse records, malformed records, huge
sizes), truncation, duplicated and spliced entries, random blocks. It is then sent uncompressed, gzip or zstd
(sometimes with the compressed bytes damaged too).

Each mutant goes through every reader of layer tars: `iter_layer` (all content read), `apply_layer` (base
images, `type=local`), `worker.snapshots.unpack_layer` (overlay lower dirs), `layerstage.stage_layer` (the
diffID check of `pybuild load`/`pull`) and `images.import_rootfs` (`pybuild import`).

Safety: the cases run in a child process chrooted into a sandbox directory (so even an absolute path a broken
reader wrote would land in the sandbox, where the check sees it), with its address space limited; after each
case the sandbox outside the targets and the store is compared with how it was. Needs root (chroot, mknod).

`PYBUILD_FUZZ_TAR_EXAMPLES` sets the number of mutants (default 300; `make fuzz` runs 5,000); the seed is
fixed (`PYBUILD_FUZZ_SEED`, default 0), so a failure reproduces from its index, and the failure message
holds the mutant's edits.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import resource
import shutil
import signal
import tarfile
import time
import traceback
from contextlib import ExitStack
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from pybuild.errors import UserError
from pybuild.store.compress import compress
from pybuild.store.tarlayer import BLOCK, LayerEntry, _pax_record, write_entries
from tests.bases import need

pytestmark = pytest.mark.root

EXAMPLES = int(os.environ.get("PYBUILD_FUZZ_TAR_EXAMPLES", "300"))
SEED = int(os.environ.get("PYBUILD_FUZZ_SEED", "0"))
CHUNK = 100
SLOW_SECONDS = 5.0
MEMORY_HEADROOM = 1 << 30  # address space a child may take beyond what it has when it starts

# --- seeds ------------------------------------------------------------------------------------------------


def _file(path: str, data: bytes, **kw: Any) -> LayerEntry:
    return LayerEntry(path=path, kind="file", size=len(data), data=data, **kw)


def _layer(entries: list[LayerEntry]) -> bytes:
    out = io.BytesIO()
    write_entries(entries, out)
    return out.getvalue()


def _tarfile(fmt: int, prefix: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        long = "d/" + "p" * 60 + "/" + "q" * 60  # GNU: a long-name header; ustar: the prefix field
        for name, kind, data, link in (("d", tarfile.DIRTYPE, b"", ""), ("d/" + "p" * 60, tarfile.DIRTYPE, b"", ""),
                                       (long, tarfile.REGTYPE, b"x", ""),
                                       ("d/l", tarfile.SYMTYPE, b"", "../" * 3 + "outside"),
                                       ("d/h", tarfile.LNKTYPE, b"", prefix + "d/" + "p" * 60),
                                       ("d/.wh.gone", tarfile.REGTYPE, b"", "")):
            info = tarfile.TarInfo(prefix + name)
            info.type, info.linkname, info.size, info.mode = kind, link, len(data), 0o755
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


@cache
def seeds() -> list[bytes]:
    """Uncompressed layer tars to mutate (deterministic)."""
    rng = random.Random(1)
    caps = b"\x01\x00\x00\x02\x00\x20\x00\x00" + b"\x00" * 12
    full = [
        LayerEntry(path="bin", kind="dir", mode=0o755, mtime=1_600_000_000),
        _file("bin/tool", b"#!/bin/sh\necho hi\n" * 30, mode=0o4755, uid=1000, gid=1000),
        LayerEntry(path="bin/sh", kind="symlink", link_target="tool", mode=0o777),
        LayerEntry(path="bin/up", kind="symlink", link_target="../../outside", mode=0o777),
        LayerEntry(path="bin/loop", kind="symlink", link_target="loop", mode=0o777),
        LayerEntry(path="dev", kind="dir", mode=0o755),
        LayerEntry(path="dev/null", kind="char", mode=0o666, devmajor=1, devminor=3),
        LayerEntry(path="dev/loop9", kind="block", mode=0o660, devmajor=7, devminor=9),
        LayerEntry(path="dev/pipe", kind="fifo", mode=0o644),
        LayerEntry(path="etc", kind="dir", mode=0o755),
        _file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", xattrs=(("user.note", b"v\x00\xff"),)),
        LayerEntry(path="etc/passwd-", kind="hardlink", link_target="etc/passwd"),
        _file("etc/cap", b"cap", xattrs=(("security.capability", caps),)),
        LayerEntry(path="etc/gone", kind="whiteout"),
        LayerEntry(path="var", kind="dir", mode=0o755),
        LayerEntry(path="var", kind="opaque"),
        _file("var/data", rng.randbytes(20_000), uid=3_000_000, gid=3_000_001, mtime=2**34),
        _file("var/" + "long" * 40, b"long name"),
        _file(os.fsdecode(b"var/caf\xe9-\xff"), b"not utf-8"),
        _file("var/empty", b""),
    ]
    small = [LayerEntry(path="a", kind="dir", mode=0o700), _file("a/b", b"hello\n"),
             LayerEntry(path="a/c", kind="symlink", link_target="/etc/passwd"),
             LayerEntry(path="a/d", kind="hardlink", link_target="a/b"), LayerEntry(path="x", kind="whiteout")]
    return [_layer(full), _layer(small), _layer(full[9:14]), _tarfile(tarfile.GNU_FORMAT, "./"),
            _tarfile(tarfile.USTAR_FORMAT, "")]


# --- mutations --------------------------------------------------------------------------------------------

NAMES = [b"../../escape", b"../outside/sentinel", b"../../../outside/evil", b"/abs-escape", b"/outside/evil",
         b"a/../../x", b"./../x", b"..", b".", b"/", b"./", b"", b"n" * 100, b"d/" * 49 + b"x",
         b".wh.bin", b"etc/.wh..wh..opq", b".wh..wh..opq", b"bin/sh/x", b"bin/up/evil", b"bin/loop/x",
         b"etc/passwd/x", b"dev/null/x", b"\xff\xfe", b"a\nb", b"dev/null", b"etc", b"bin/tool"]
LINKS = [b"../../outside/sentinel", b"/outside/sentinel", b"/", b"..", b"../..", b"loop", b"bin/sh",
         b"bin/up", b"etc", b"etc/passwd", b"a/b/../../..", b"x" * 100, b"", b"/proc/self/root", b"dev/null"]
TYPES = [b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"x", b"g", b"L", b"K", b"S", b"V", b"M", b"D", b"\0",
         b"Z", b"\xff"]
NUMBERS = [b"0", b"7777777", b"77777777777", b"\x80" + b"\xff" * 11, b"\xff" * 12, b"\x80" + b"\x00" * 10 + b"\x01",
           b"zz", b"-1", b" 12 ", b"\x00", b"1" * 12, b"\x80\x7f" + b"\xff" * 6, b"\xff\xff\xff\xff\xff\xff\xff\x00"]
FIELDS = {"name": (0, 100), "mode": (100, 8), "uid": (108, 8), "gid": (116, 8), "size": (124, 12),
          "mtime": (136, 12), "type": (156, 1), "link": (157, 100), "magic": (257, 8), "devmajor": (329, 8),
          "devminor": (337, 8), "prefix": (345, 155)}
PAX = [(b"path", b"../../pax-escape"), (b"path", b"/pax-abs"), (b"path", b"a" * 5000), (b"path", b"a\x00b"),
       (b"path", b"x/" * 3000), (b"linkpath", b"/outside/sentinel"), (b"linkpath", b"../../../"),
       (b"linkpath", b"l\x00x"), (b"size", b"99999999999999999999"), (b"size", b"-5"), (b"size", b"1e400."),
       (b"size", b"nan."), (b"size", b"0x10"), (b"uid", b"99999999999999999999"), (b"uid", b"-7"),
       (b"gid", b"4294967295"), (b"mtime", b"99999999999999999999"), (b"mtime", b"1e400."), (b"mtime", b"-1e30."),
       (b"mtime", b"1.5"), (b"mtime", b"inf."), (b"SCHILY.xattr.user.x", b"v"), (b"SCHILY.xattr.", b""),
       (b"SCHILY.xattr.user.\x00nul", b"v"), (b"SCHILY.xattr.trusted.overlay.opaque", b"y"),
       (b"SCHILY.xattr.user." + b"n" * 300, b""), (b"SCHILY.xattr.security.capability", b"\x01" * 20),
       (b"SCHILY.xattr.user.big", b"v" * 70000), (b"GNU.sparse.size", b"999999999999"),
       (b"GNU.sparse.map", b"0,10,999999999,10"), (b"GNU.sparse.major", b"1"), (b"hdrcharset", b"BINARY"),
       (b"comment", b"\xff" * 10)]
BAD_PAX = [b"-1 x=y\n", b"0 x=y\n", b"99999999 x=y\n", b"5 x=y\n", b"7 xy\n\n\n", b"11 a=b", b"abc x=y\n",
           b"1_0 a=bcdef\n", b"8 =bcd\n"]
HUGE_SIZES = [b"77777777777", b"\x80" + b"\x00" * 5 + b"\x7f" + b"\xff" * 5, b"\xff" * 12, b"00000001000"]


def _checksum(buf: bytearray, off: int) -> None:
    block = bytearray(buf[off:off + BLOCK])
    block[148:156] = b" " * 8
    buf[off + 148:off + 156] = b"%06o\0 " % sum(block)


def _header(name: bytes, typeflag: bytes, size: int, *, size_field: bytes | None = None) -> bytes:
    block = bytearray(BLOCK)
    block[0:len(name[:100])] = name[:100]
    block[100:108] = b"0000644\0"
    block[124:136] = size_field if size_field is not None else b"%011o\0" % size
    block[156:157] = typeflag
    block[257:265] = b"ustar\x0000"
    buf = bytearray(block)
    _checksum(buf, 0)
    return bytes(buf)


def _headers(buf: bytes) -> list[int]:
    """Offsets of the headers of a (possibly damaged) tar, as far as its sizes can be followed."""
    found, off = [], 0
    while off + BLOCK <= len(buf) and len(found) < 500:
        block = buf[off:off + BLOCK]
        if block == b"\0" * BLOCK:
            break
        found.append(off)
        field = block[124:136]
        try:
            size = int(field.split(b"\0", 1)[0].strip() or b"0", 8) if field[:1] not in (b"\x80", b"\xff") else 0
        except ValueError:
            break
        off += BLOCK + size + (-size % BLOCK)
    return found or [0]


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def _mutate(rng: random.Random, data: bytes, log: list[str]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        heads = _headers(bytes(buf))
        at = rng.choice(heads)
        op = rng.randrange(10)
        if op == 0 and buf:  # flip bits in a header, checksum recomputed or not
            pos = at + rng.randrange(BLOCK)
            if pos < len(buf):
                buf[pos] ^= 1 << rng.randrange(8)
                fixed = rng.random() < 0.7 and at + BLOCK <= len(buf)
                if fixed:
                    _checksum(buf, at)
                log.append(f"flip header byte {pos}{' +checksum' if fixed else ''}")
        elif op == 1 and buf:  # flip bits anywhere (data, padding, headers)
            pos = rng.randrange(len(buf))
            buf[pos] ^= 1 << rng.randrange(8)
            log.append(f"flip byte {pos}")
        elif op <= 4 and at + BLOCK <= len(buf):  # rewrite a header field, checksum recomputed
            field = rng.choice(list(FIELDS))
            start, length = FIELDS[field]
            value = {"name": NAMES, "prefix": NAMES, "link": LINKS, "type": TYPES, "magic":
                     [b"ustar\x0000", b"ustar  \0", b"\xff" * 8]}.get(field, NUMBERS)
            new = rng.choice(value) if rng.random() < 0.9 else rng.randbytes(length)
            buf[at + start:at + start + length] = new[:length].ljust(length, b"\0")
            _checksum(buf, at)
            log.append(f"set {field}={new[:length]!r} at {at}")
        elif op == 5:  # a PAX header before an entry: hostile records, or a malformed one
            if rng.random() < 0.8:
                body = b"".join(_pax_record(*rng.choice(PAX)) for _ in range(rng.randint(1, 3)))
            else:
                body = rng.choice(BAD_PAX)
            kind = b"x" if rng.random() < 0.9 else b"g"
            size_field = rng.choice(HUGE_SIZES) if rng.random() < 0.1 else None
            buf[at:at] = _header(b"././@PaxHeader", kind, len(body), size_field=size_field) + _pad(body)
            log.append(f"pax {kind!r} {body[:80]!r}{' size=' + repr(size_field) if size_field else ''} at {at}")
        elif op == 6:  # a GNU long name or link
            kind = rng.choice([b"L", b"K"])
            body = rng.choice(NAMES + LINKS) + b"\0"
            size_field = rng.choice(HUGE_SIZES) if rng.random() < 0.2 else None
            buf[at:at] = _header(b"././@LongLink", kind, len(body), size_field=size_field) + _pad(body)
            log.append(f"gnu {kind!r} {body!r}{' size=' + repr(size_field) if size_field else ''} at {at}")
        elif op == 7:  # truncate
            cut = rng.randrange(len(buf) + 1)
            del buf[cut:]
            log.append(f"truncate at {cut}")
        elif op == 8:  # duplicate an entry here, from this tar or another seed
            other = bytes(buf) if rng.random() < 0.5 else rng.choice(seeds())
            src_heads = _headers(other)
            start = rng.choice(src_heads)
            later = [h for h in src_heads if h > start]
            chunk = other[start:later[0] if later else start + BLOCK]
            buf[at:at] = chunk
            log.append(f"splice {len(chunk)} bytes at {at}")
        else:  # random bytes
            block = rng.randbytes(rng.choice([BLOCK, rng.randint(1, 2 * BLOCK)]))
            buf[at:at] = block
            log.append(f"random {len(block)} bytes at {at}")
    return bytes(buf)


def mutant(index: int) -> tuple[list[str], bytes, bytes]:
    """(edits, uncompressed mutant, bytes as sent) of fuzz input `index`, deterministic for the seed."""
    rng = random.Random(f"tar:{SEED}:{index}")
    seed = rng.randrange(len(seeds()))
    log = [f"seed {seed}"]
    plain = _mutate(rng, seeds()[seed], log)
    kind = rng.choice(["uncompressed", "uncompressed", "gzip", "zstd"])
    log.append(kind)
    if kind == "uncompressed":
        return log, plain, plain
    out = io.BytesIO()
    compress(io.BytesIO(plain), out, kind)
    wire = bytearray(out.getvalue())
    if rng.random() < 0.15 and wire:
        if rng.random() < 0.5:
            pos = rng.randrange(len(wire))
            wire[pos] ^= 1 << rng.randrange(8)
            log.append(f"compressed: flip byte {pos}")
        else:
            cut = rng.randrange(len(wire))
            del wire[cut:]
            log.append(f"compressed: truncate at {cut}")
    return log, plain, bytes(wire)


# --- the targets, run in the chrooted child --------------------------------------------------------------

TARGETS = ("iter_layer", "apply_layer", "unpack_layer", "stage_layer", "import_rootfs")


def _snapshot(root: str, skip: set[str]) -> dict[str, tuple[int, int, int]]:
    """path → (mode, size, mtime_ns) of everything under `root` but `skip` (never following links)."""
    found: dict[str, tuple[int, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            found[path] = (st.st_mode, st.st_size, st.st_mtime_ns if not os.path.isdir(path) else 0)
    return found


def _written(root: str) -> int:
    """Bytes held by the regular files under `root` (each inode once)."""
    seen: set[int] = set()
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_ino not in seen and (st.st_mode & 0o170000) == 0o100000:
                seen.add(st.st_ino)
                total += max(st.st_size, st.st_blocks * 512)
    return total


def _run_target(name: str, wire: bytes, work: str, store: Any) -> None:
    from pybuild.store.apply import apply_layer
    from pybuild.store.images import import_rootfs
    from pybuild.store.layerstage import stage_layer
    from pybuild.store.tarlayer import iter_layer
    from pybuild.worker.snapshots import unpack_layer

    if name == "iter_layer":
        for _, content in iter_layer(io.BytesIO(wire)):
            while content is not None and content.read(1 << 16):
                pass
    elif name in ("apply_layer", "unpack_layer"):
        target = os.path.join(work, name)
        os.mkdir(target)
        (apply_layer if name == "apply_layer" else unpack_layer)(io.BytesIO(wire), target)
    elif name == "stage_layer":
        with ExitStack() as stack:
            stage_layer(store, io.BytesIO(wire), None, "sha256:" + hashlib.sha256(b"").hexdigest(), stack,
                        where="fuzz", name="layer")
    else:
        path = os.path.join(work, "rootfs.tar")
        with open(path, "wb") as f:
            f.write(wire)
        import_rootfs(store, path, "fuzz:latest")


def run_case(index: int, work_root: str, store: Any, baseline: dict[str, tuple[int, int, int]],
             skip: set[str]) -> list[str]:
    """Problems found with mutant `index` (empty when it is handled as it must be)."""
    log, plain, wire = mutant(index)
    problems: list[str] = []
    work = os.path.join(work_root, str(index))
    os.mkdir(work)
    for name in TARGETS:
        started = time.perf_counter()
        try:
            _run_target(name, wire, work, store)
        except UserError:
            pass
        except BaseException as exc:  # noqa: BLE001 - that is the point of the test
            trace = "".join(traceback.format_exception(exc)[-6:])
            problems.append(f"{name}: {type(exc).__name__}: {exc}\n{trace}")
        elapsed = time.perf_counter() - started
        if elapsed > SLOW_SECONDS:
            problems.append(f"{name}: took {elapsed:.1f}s")
        if name in ("apply_layer", "unpack_layer") and os.path.isdir(os.path.join(work, name)):
            written = _written(os.path.join(work, name))
            if written > len(plain) + (1 << 20):
                problems.append(f"{name}: wrote {written} bytes from a {len(plain)}-byte tar")
    stray = sorted(set(os.listdir(work)) - {"apply_layer", "unpack_layer", "rootfs.tar"})
    if stray:
        problems.append(f"written beside the targets: {stray}")
    shutil.rmtree(work)
    now = _snapshot("/", skip)
    if now != baseline:
        changed = sorted(set(now.items()) ^ set(baseline.items()))[:10]
        problems.append(f"written outside the targets: {changed}")
        for path in set(now) - set(baseline):  # put the sandbox back for the next case
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.lexists(path):
                os.unlink(path)
    if problems:
        return [f"mutant {index} ({'; '.join(log)}):\n" + "\n".join(problems)]
    return []


def _child(sandbox: str, indexes: range, out_fd: int) -> None:
    """Run `indexes` chrooted in `sandbox` and write the problems to `out_fd` as JSON; never returns."""
    code = 0
    try:
        from pybuild.store.store import Store

        os.chroot(sandbox)
        os.chdir("/")
        with open("/proc/self/statm") if os.path.exists("/proc/self/statm") else io.StringIO("0") as statm:
            pages = int(statm.read().split()[0] or 0)
        limit = pages * os.sysconf("SC_PAGE_SIZE") + MEMORY_HEADROOM
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        store = Store.open("/store")
        skip = {"/store"}  # the store-based targets write blobs there; each case's work dir is gone when checked
        baseline = _snapshot("/", skip)
        problems: list[str] = []
        for index in indexes:
            problems += run_case(index, "/work", store, baseline, skip)
        store.close()
        payload = json.dumps(problems).encode()
    except BaseException as exc:  # noqa: BLE001
        payload = json.dumps([f"the fuzz child failed: {''.join(traceback.format_exception(exc))}"]).encode()
        code = 1
    with os.fdopen(out_fd, "wb") as out:
        out.write(payload)
    os._exit(code)


def _make_sandbox(root: Path) -> str:
    for sub in ("work", "outside", "work/outside", "tmp", "store"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for sentinel in (root / "outside" / "sentinel", root / "work" / "outside" / "sentinel"):
        sentinel.write_bytes(b"keep")
    (root / "tmp").chmod(0o1777)
    return str(root)


def _preload() -> None:
    """Import what the child needs before it loses the view of site-packages (chroot)."""
    import encodings.idna  # noqa: F401
    import sqlite3  # noqa: F401

    import zstandard  # noqa: F401

    import pybuild.store.apply  # noqa: F401
    import pybuild.store.images  # noqa: F401
    import pybuild.store.layerread  # noqa: F401
    import pybuild.store.layerstage  # noqa: F401
    import pybuild.store.store  # noqa: F401
    import pybuild.worker.snapshots  # noqa: F401

    import pybuild.image.reference  # noqa: F401

    for index in range(3):  # the lazily made seeds and compressors
        mutant(index)


@cache
def _warm_up(tmp: str) -> None:
    """Every target once on a valid layer, outside the chroot: what they import lazily is then loaded."""
    from pybuild.store.store import Store

    work = os.path.join(tmp, "warm-up")
    os.makedirs(work)
    with Store.open(os.path.join(tmp, "warm-up-store")) as store:
        for name in TARGETS:
            try:
                _run_target(name, seeds()[0], work, store)
            except UserError:
                pass  # stage_layer: the diffID is not the seed's


def run_chunk(tmp_path: Path, indexes: range) -> list[str]:
    need(os.geteuid() == 0, "the tar fuzzer chroots into a sandbox: needs root")
    _preload()
    _warm_up(str(tmp_path))
    sandbox = _make_sandbox(tmp_path / "sandbox")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_fd)
        _child(sandbox, indexes, write_fd)
    os.close(write_fd)
    deadline = time.monotonic() + len(indexes) * SLOW_SECONDS * len(TARGETS) + 60
    with os.fdopen(read_fd, "rb") as results:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if not done:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return [f"mutants {indexes.start}..{indexes.stop - 1} did not finish in time"]
        payload = results.read()
    if os.WIFSIGNALED(status):
        return [f"the fuzz child of mutants {indexes.start}..{indexes.stop - 1} died of signal "
                f"{os.WTERMSIG(status)}"]
    problems: list[str] = json.loads(payload or b"[]")
    return problems


@pytest.mark.parametrize("chunk", range((EXAMPLES + CHUNK - 1) // CHUNK))
def test_mutated_layers(tmp_path: Path, chunk: int) -> None:
    problems = run_chunk(tmp_path, range(chunk * CHUNK, min(EXAMPLES, (chunk + 1) * CHUNK)))
    assert not problems, f"{len(problems)} mutant(s) mishandled:\n\n" + "\n\n".join(problems[:5])


def test_seeds_are_real_layers(tmp_path: Path) -> None:
    """The seeds go through every target cleanly (so the mutants start from valid layers)."""
    from pybuild.store.tarlayer import read_entries

    for seed in seeds():
        entries = read_entries(io.BytesIO(seed))
        assert len(entries) >= 4
    kinds = {e.kind for e in read_entries(io.BytesIO(seeds()[0]))}
    assert kinds == {"file", "dir", "symlink", "hardlink", "char", "block", "fifo", "whiteout", "opaque"}


def test_mutants_are_deterministic_and_varied() -> None:
    assert mutant(5) == mutant(5)
    assert len({mutant(i)[2] for i in range(60)}) > 55
    assert {mutant(i)[0][-1] for i in range(60)} >= {"uncompressed", "gzip", "zstd"}


def test_the_sandbox_check_sees_an_escape(tmp_path: Path) -> None:
    """The outside-the-target check is real: a write outside the targets in the sandbox is reported."""
    need(os.geteuid() == 0, "the tar fuzzer chroots into a sandbox: needs root")
    sandbox = Path(_make_sandbox(tmp_path / "sandbox"))
    skip = {str(sandbox / "store")}
    baseline = _snapshot(str(sandbox), skip)
    for evil in (sandbox / "outside" / "evil", sandbox / "work" / "evil", sandbox / "evil"):
        evil.write_bytes(b"x")
        assert _snapshot(str(sandbox), skip) != baseline
        evil.unlink()
    (sandbox / "work" / "outside" / "sentinel").write_bytes(b"changed")
    assert _snapshot(str(sandbox), skip) != baseline
