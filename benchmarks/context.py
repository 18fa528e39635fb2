"""Build-context checksums: cold, warm, after a small edit and after a 1-byte edit of a big file.

Makes (or reuses) a tree of 20,000 small files (1-8 KiB of seeded random bytes, 200 directories) and one
200 MiB file under --dir, then times one pybuild pass (open the context, walk it, checksum it through the
stat cache, save the cache) in four states, and in the same run the raw cost of reading the tree
(`find | xargs cat`) and of only stat-ing it (a Python scandir+lstat walk; `find -printf ''`).

    .venv/bin/python benchmarks/context.py [--dir DIR] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pybuild.context import statcache  # noqa: E402
from pybuild.context.checksum import READS  # noqa: E402
from pybuild.context.context import ContextHasher, checksum_context, list_files, open_context  # noqa: E402

PEERS = {"BuildKit cached rebuild": 0.24, "buildah": 2.5, "BuildKit after 1-byte edit of the big file": 2.6}


def make_tree(root: Path, files: int, big_mib: int, seed: int = 7) -> None:
    """The benchmark tree (deterministic for a seed); skipped when `root` is complete already."""
    done = root.with_name(root.name + ".done")
    if done.exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    rnd = random.Random(seed)
    per_dir = 100
    for i in range(files):
        directory = root / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            directory.mkdir(parents=True)
        (directory / f"f{i % per_dir:03d}.dat").write_bytes(rnd.randbytes(rnd.randint(1024, 8192)))
    with open(root / "big.bin", "wb") as handle:
        for _ in range(big_mib):
            handle.write(rnd.randbytes(1 << 20))
    (root / "Dockerfile").write_text("FROM scratch\nCOPY . /data\n")
    done.write_text("ok\n")


def wait_until_settled(root: Path) -> None:
    """Sleep until the newest file is older than the racy window (otherwise the warm pass re-reads it)."""
    newest = max(os.lstat(p).st_ctime_ns for p in (root, root / "big.bin", root / "Dockerfile"))
    delay = (newest + statcache.RACY_WINDOW_NS - time.time_ns()) / 1e9 + 0.1
    if delay > 0:
        time.sleep(delay)


def one_pass(root: Path) -> float:
    """What a build whose COPY reads the whole context does: open it and checksum it through the stat
    cache (`checksum_context`, the fused one-pass walk), saving the cache; returns its wall time."""
    start = time.perf_counter()
    checksum_context(open_context(str(root), require_dockerfile=False))
    return time.perf_counter() - start


def listing_pass(root: Path) -> float:
    """What `pybuild context` does: a full listing (an Entry per file) plus its checksums."""
    start = time.perf_counter()
    ctx = open_context(str(root), require_dockerfile=False)
    with ContextHasher(ctx) as hasher:
        hasher.checksum(list_files(ctx))
    return time.perf_counter() - start


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def stat_walk(root: str) -> int:
    """The floor for a warm pass in Python: scandir every directory, lstat every entry, nothing else."""
    count = 0
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for de in it:
                st = de.stat(follow_symlinks=False)
                count += 1
                if stat.S_ISDIR(st.st_mode):
                    stack.append(de.path)
    return count


def shell(command: str) -> None:
    subprocess.run(command, shell=True, check=True)


def flip_byte(path: Path, offset: int) -> None:
    """Change one byte in place (same size)."""
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def measure(root: Path, repeat: int) -> dict[str, float]:
    cache_file = Path(statcache.cache_path(str(root)))
    results: dict[str, float] = {}
    shell(f"find {root} -type f -print0 | xargs -0 cat > /dev/null")  # warm the page cache
    results["read_all"] = best(lambda: shell(f"find {root} -type f -print0 | xargs -0 cat > /dev/null"), repeat)
    results["stat_py"] = best(lambda: stat_walk(str(root)), repeat)
    results["stat_find"] = best(lambda: shell(f"find {root} -printf ''"), repeat)

    def cold() -> None:
        cache_file.unlink(missing_ok=True)
        one_pass(root)

    results["cold"] = best(cold, repeat)
    one_pass(root)
    READS.reset()
    results["warm"] = best(lambda: one_pass(root), repeat)
    results["warm_files_read"] = READS.files
    results["listing"] = best(lambda: listing_pass(root), repeat)
    flip_byte(root / "d042" / "f042.dat", 100)
    READS.reset()
    results["small_edit"] = one_pass(root)
    results["small_edit_files"] = READS.files
    time.sleep(statcache.RACY_WINDOW_NS / 1e9 + 0.1)  # let the small edit leave the racy window
    one_pass(root)  # ... and be cached as settled
    flip_byte(root / "big.bin", 123_456_789)
    READS.reset()
    results["big_edit"] = one_pass(root)
    results["big_edit_files"] = READS.files
    results["big_edit_bytes"] = READS.bytes
    results["big_size"] = os.path.getsize(root / "big.bin")
    return results


def report(r: dict[str, float]) -> None:
    ms = lambda key: f"{r[key] * 1000:8.1f} ms"  # noqa: E731
    print(f"read everything (find | xargs cat)   {ms('read_all')}")
    print(f"stat only, Python scandir+lstat      {ms('stat_py')}")
    print(f"stat only, find -printf ''           {ms('stat_find')}")
    print(f"pybuild cold (empty stat cache)      {ms('cold')}")
    print(f"pybuild warm (nothing changed)       {ms('warm')}   files read: {int(r['warm_files_read'])}")
    print(f"pybuild context listing, warm        {ms('listing')}   (an Entry per file, as `pybuild context`)")
    print(f"pybuild after one small-file edit    {ms('small_edit')}   files read: {int(r['small_edit_files'])}")
    print(f"pybuild after 1-byte big-file edit   {ms('big_edit')}   files read: {int(r['big_edit_files'])}, "
          f"bytes read: {int(r['big_edit_bytes']):,} (big file: {int(r['big_size']):,})")
    print()
    print(f"cold / read-all       {r['cold'] / r['read_all']:5.2f}  (target <= 1.5)")
    print(f"warm / stat-only (py) {r['warm'] / r['stat_py']:5.2f}  (target <= 1.5)")
    print(f"warm / find -printf   {r['warm'] / r['stat_find']:5.2f}")
    extra = int(r["big_edit_bytes"]) - int(r["big_size"])
    print(f"big-file edit re-read {int(r['big_edit_files'])} file(s); bytes beyond the big file: {extra:,} "
          "(target: the big file once, nothing else)")
    print()
    for name, seconds in PEERS.items():
        ours = r["big_edit"] if "edit" in name else r["warm"]
        print(f"share of {name} ({seconds} s): {ours / seconds:6.1%}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/var/tmp/pybuild-bench-context", help="where the tree lives (reused)")
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--big-mib", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    root = Path(args.dir) / "tree"
    make_tree(root, args.files, args.big_mib)
    wait_until_settled(root)
    with tempfile.TemporaryDirectory(prefix="pybuild-bench-store-") as store:
        os.environ["PYBUILD_ROOT"] = store
        results = measure(root, args.repeat)
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
