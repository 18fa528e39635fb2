"""Per-RUN overhead of the executor: `RUN true` through pybuild's run_process vs a bare `<runtime> run`.

Builds a busybox-static rootfs in a temp dir, then for runc and crun (when installed), alternating in one
run so machine noise hits both alike:
- pybuild: `run_process(rootfs, ProcessSpec(args=("/bin/true",)))`: USER lookup, bundle dir, config.json,
  /etc files, runtime start with piped output, reader threads, wait, cleanup;
- bare: `<runtime> --root R run --bundle B <id>` of one bundle prepared by pybuild, stdio to /dev/null.

Prints the median ms per run of each, the ratio, and the target: pybuild <= 1.5 x bare + 10 ms. The snapshot
mount/diff cost of a RUN is not included here.

    .venv/bin/python benchmarks/exec.py [--repeat 20] [--network default|none|host]
"""

from __future__ import annotations

import argparse
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
    for applet in ("sh", "true"):
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


def bench(rootfs: str, runtime: str, repeat: int, network: NetworkMode) -> tuple[float, float]:
    binary = executor.find_runtime(runtime)
    ours: list[float] = []
    bare: list[float] = []
    with executor.prepare_bundle(rootfs, TRUE, network=network, runtime=runtime) as bundle:
        os.makedirs(bundle.state_root, exist_ok=True)
        for i in range(3):  # warm up page cache and the runtime binary
            time_bare(binary, bundle, -i - 1)
            time_pybuild(rootfs, runtime, network)
        for i in range(repeat):
            bare.append(time_bare(binary, bundle, i))
            ours.append(time_pybuild(rootfs, runtime, network))
    return statistics.median(ours) * 1000, statistics.median(bare) * 1000


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
        for runtime in ("runc", "crun"):
            if shutil.which(runtime) is None:
                print(f"{runtime:8} not installed")
                continue
            ours, bare = bench(str(rootfs), runtime, args.repeat, args.network)
            ok = ours <= 1.5 * bare + 10
            print(f"{runtime:8} {ours:11.1f} {bare:9.1f} {ours / bare:6.2f} {ours - bare:12.1f}  "
                  f"{'met' if ok else 'MISSED'} (<= 1.5 x bare + 10 ms = {1.5 * bare + 10:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
