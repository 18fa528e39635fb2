"""Per-RUN overhead of the executor: `RUN true` through pybuild's run_process vs a bare `<runtime> run`.

Builds a busybox-static rootfs in a temp dir, then for runc and crun (when installed), alternating in one
run so machine noise hits both alike:
- pybuild: `run_process(rootfs, ProcessSpec(args=("/bin/true",)))`: USER lookup, bundle dir, config.json,
  /etc files, runtime start with piped output, reader threads, wait, cleanup;
- bare: `<runtime> --root R run --bundle B <id>` of one bundle prepared by pybuild, stdio to /dev/null;
- bare, no seccomp: the same bundle's config.json without its `linux.seccomp` (the filter costs the
  runtime ~6-9 ms to compile), as the strictest reading of "a bare runtime run".

Prints the median ms per run of each, the ratio, and the target: pybuild <= 1.5 x bare + 10 ms, against
both bare runs. On the
`default` network pybuild's RUN joins an isolated namespace served by slirp4netns (`worker/network.py`,
from its one-spare pool) while the bare run gets a new empty namespace from the runtime; the isolated
network's own costs are printed after: a namespace with slirp4netns made on the spot (what a RUN pays when
the pool is empty), taken from the pool, and closed.

Then a whole RUN step as the builder does it, on the same busybox image imported into a store: overlay
mount of the unpacked snapshot, spec, runtime start, wait, commit of the upperdir and the layer tar with its
diffID (`RUN true`, median), and the diff-and-layer time alone for a RUN that writes 20,000 small files and
one 200 MiB file.

    .venv/bin/python benchmarks/exec.py [--repeat 20] [--network default|none|host]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pybuild.worker import executor  # noqa: E402
from pybuild.worker.types import NetworkMode, ProcessSpec  # noqa: E402

TRUE = ProcessSpec(args=("/bin/true",))


def make_rootfs(root: Path) -> None:
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    shutil.copy2("/bin/busybox", root / "bin/busybox")
    for applet in ("sh", "true", "mkdir", "dd", "echo"):
        os.symlink("busybox", root / "bin" / applet)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")


def time_pybuild(rootfs: str, runtime: str, network: NetworkMode) -> float:
    start = time.perf_counter()
    executor.run_process(rootfs, TRUE, runtime=runtime, network=network)
    return time.perf_counter() - start


def time_bare(binary: str, bundle: executor.Bundle, index: int) -> float:
    argv = [binary, "--root", bundle.state_root, "run", "--bundle", bundle.path, f"bare-{os.getpid()}-{index}"]
    start = time.perf_counter()
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    return time.perf_counter() - start


def without_seccomp(bundle: executor.Bundle, where: str) -> executor.Bundle:
    """A copy of `bundle` whose config.json (a plain file) has no seccomp filter."""
    with open(os.path.join(bundle.path, "config.json"), "rb") as handle:
        config = json.load(handle)
    config["linux"].pop("seccomp", None)
    os.makedirs(where)
    with open(os.path.join(where, "config.json"), "w") as handle:
        json.dump(config, handle)
    return executor.Bundle(path=where, container_id=bundle.container_id, state_root=bundle.state_root)


def bench(rootfs: str, runtime: str, repeat: int, network: NetworkMode,
          tmp: str) -> tuple[float, float, float]:
    binary = executor.find_runtime(runtime)
    ours: list[float] = []
    bare: list[float] = []
    plain: list[float] = []
    with executor.prepare_bundle(rootfs, TRUE, network=network, runtime=runtime) as bundle:
        os.makedirs(bundle.state_root, exist_ok=True)
        unfiltered = without_seccomp(bundle, os.path.join(tmp, f"plain-{runtime}"))
        for i in range(3):  # warm up page cache and the runtime binary
            time_bare(binary, bundle, -i - 1)
            time_bare(binary, unfiltered, -i - 100)
            time_pybuild(rootfs, runtime, network)
        for i in range(repeat):
            bare.append(time_bare(binary, bundle, i))
            plain.append(time_bare(binary, unfiltered, i + 10_000))
            ours.append(time_pybuild(rootfs, runtime, network))
    return (statistics.median(ours) * 1000, statistics.median(bare) * 1000,
            statistics.median(plain) * 1000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--network", default="default", choices=("default", "none", "host"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("exec benchmark: needs root", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="pybuild-bench-exec-") as tmp:
        os.environ["PYBUILD_ROOT"] = os.path.join(tmp, "store")
        rootfs = Path(tmp) / "rootfs"
        make_rootfs(rootfs)
        print(f"RUN /bin/true on a busybox rootfs, network={args.network}, median of {args.repeat}")
        print(f"{'runtime':8} {'pybuild ms':>11} {'bare ms':>9} {'ratio':>6} {'overhead ms':>12}  target")
        bares: dict[str, float] = {}
        for runtime in ("runc", "crun"):
            if shutil.which(runtime) is None:
                print(f"{runtime:8} not installed")
                continue
            ours, bare, plain = bench(str(rootfs), runtime, args.repeat, args.network, tmp)
            for label, base in (("bare", bare), ("bare, no seccomp", plain)):
                ok = ours <= 1.5 * base + 10
                print(f"{runtime:8} {ours:11.1f} {base:9.1f} {ours / base:6.2f} {ours - base:12.1f}  "
                      f"{'met' if ok else 'MISSED'} (<= 1.5 x {label} + 10 ms = {1.5 * base + 10:.1f})")
            bares[runtime] = bare
        if args.network == "default":
            isolated_network(args.repeat)
        whole_steps(rootfs, Path(tmp), args.repeat, args.network, bares)
    return 0


def isolated_network(repeat: int) -> None:
    from pybuild.worker import network

    cold: list[float] = []
    taken: list[float] = []
    closed: list[float] = []
    pool = network.Pool()
    for _ in range(repeat):
        start = time.perf_counter()
        netns = network.prepare()
        cold.append(time.perf_counter() - start)
        netns.close()
        time.sleep(0.05)  # the pool refills in the background, as it does while a RUN runs
        start = time.perf_counter()
        netns = pool.take()
        taken.append(time.perf_counter() - start)
        start = time.perf_counter()
        netns.close()
        closed.append(time.perf_counter() - start)
    pool.close()
    print(f"\nisolated network (netns + slirp4netns), median of {repeat}: made on the spot "
          f"{statistics.median(cold) * 1000:.1f} ms, taken from the pool {statistics.median(taken) * 1000:.2f} ms, "
          f"closed {statistics.median(closed) * 1000:.2f} ms (slirp4netns is reaped in the background)")


class HashSink:
    """Discards a layer tar (its diffID is computed by the writer on the way)."""

    def write(self, data: bytes) -> int:
        return len(data)


def whole_steps(rootfs: Path, tmp: Path, repeat: int, network: NetworkMode, bares: dict[str, float]) -> None:
    from pybuild.store.images import import_rootfs
    from pybuild.store.store import Store
    from pybuild.worker.snapshots import Snapshots

    store = Store.open(os.environ["PYBUILD_ROOT"])
    tar = tmp / "rootfs.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
    image = import_rootfs(store, str(tar), "bench:busybox")
    snaps = Snapshots.open(store)
    chain = snaps.ensure_layers(store, image.diff_ids)
    exclude = {"/etc/hosts", "/etc/resolv.conf", "/etc/hostname"}

    def step(runtime: str, args: tuple[str, ...]) -> tuple[float, float]:
        start = time.perf_counter()
        active = snaps.prepare(chain)
        try:
            executor.run_process(active.rootfs, ProcessSpec(args=args), network=network, runtime=runtime)
            snap = snaps.commit(active)
        except BaseException:
            snaps.release(active)
            raise
        ran = time.perf_counter()
        snaps.export_layer(snap, HashSink(), exclude=exclude)
        end = time.perf_counter()
        snaps.remove(snap.id)
        return (end - start) * 1000, (end - ran) * 1000

    print(f"\nwhole RUN step (mount, spec, start, wait, commit, layer tar + diffID), RUN /bin/true, median of {repeat}")
    for runtime in bares:
        times = [step(runtime, ("/bin/true",))[0] for _ in range(repeat)]
        med = statistics.median(times)
        print(f"{runtime:8} {med:8.1f} ms per step; bare runtime start {bares[runtime]:.1f} ms; "
              f"ratio {med / bares[runtime]:.2f}")
    script = ("i=0; while [ $i -lt 200 ]; do mkdir -p /data/d$i; j=0; while [ $j -lt 100 ]; do "
              "echo file $i $j > /data/d$i/f$j; j=$((j+1)); done; i=$((i+1)); done; "
              "dd if=/dev/urandom of=/data/big bs=1048576 count=200 2>/dev/null")
    (rootfs / "bin" / "dd").exists() or os.symlink("busybox", rootfs / "bin" / "dd")
    runtime = next(iter(bares))
    total, diff = step(runtime, ("/bin/sh", "-c", script))
    print(f"RUN writing 20,000 small files + one 200 MiB file ({runtime}): whole step {total / 1000:.2f} s, "
          f"of which diff + layer tar with diffID {diff / 1000:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
