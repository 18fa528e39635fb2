"""What docker's seccomp profile costs a RUN: the same `RUN /bin/true` with and without `linux.seccomp`.

Builds a busybox-static rootfs (as `benchmarks/exec.py` does), makes one bundle with pybuild's spec
(network `none`, so no network set-up is measured) and a copy of it without the seccomp section, then
alternates a bare `<runtime> run` of each, for runc and crun (when installed), so machine noise hits both
alike. The difference is the runtime compiling and loading the filter (libseccomp, three architectures on
x86_64). Prints the medians and the difference; also what pybuild's own side costs: resolving the profile
the first time in a process and each time after (cached).

    .venv/bin/python benchmarks/seccomp.py [--repeat 31]
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

from benchmarks.exec import TRUE, make_rootfs  # noqa: E402
from pybuild.worker import executor  # noqa: E402


def bundles(bundle: executor.Bundle, tmp: Path) -> dict[str, Path]:
    """Two standalone copies of `bundle` (its /etc files included): with and without seccomp."""
    config = json.loads(Path(bundle.path, "config.json").read_bytes())
    out = {}
    for name in ("with seccomp", "without"):
        directory = tmp / name.replace(" ", "-")
        directory.mkdir()
        copy = json.loads(json.dumps(config))
        if name == "without":
            del copy["linux"]["seccomp"]
        for mount in copy["mounts"]:
            if mount["source"].startswith(bundle.path + "/"):
                target = directory / os.path.basename(mount["source"])
                shutil.copy(mount["source"], target)
                mount["source"] = str(target)
        (directory / "config.json").write_text(json.dumps(copy))
        out[name] = directory
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=31)
    args = parser.parse_args()
    from pybuild.worker import seccomp, spec

    start = time.perf_counter()
    seccomp.oci_profile(spec.DEFAULT_CAPABILITIES)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(100):
        seccomp.oci_profile(spec.DEFAULT_CAPABILITIES)
    cached = (time.perf_counter() - start) / 100
    print(f"profile: first resolution in a process {first * 1e3:.2f} ms, then {cached * 1e3:.3f} ms (a copy)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rootfs = tmp / "rootfs"
        make_rootfs(rootfs)
        print(f"bare `<runtime> run` of RUN /bin/true, network none, median of {args.repeat}")
        for runtime in ("runc", "crun"):
            binary = shutil.which(runtime)
            if binary is None:
                print(f"{runtime}: not installed")
                continue
            with executor.prepare_bundle(str(rootfs), TRUE, network="none", runtime=runtime) as bundle:
                os.makedirs(bundle.state_root, exist_ok=True)
                (tmp / runtime).mkdir()
                pair = bundles(bundle, tmp / runtime)
                times: dict[str, list[float]] = {name: [] for name in pair}
                for index in range(args.repeat + 1):
                    for name, directory in pair.items():
                        container = f"seccomp-bench-{os.getpid()}-{index}-{len(times[name])}-{name[:4]}"
                        start = time.perf_counter()
                        subprocess.run([binary, "--root", bundle.state_root, "run", "--bundle", str(directory),
                                        container], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, check=True)
                        if index:  # the first round warms the page cache
                            times[name].append(time.perf_counter() - start)
                on, off = (statistics.median(times[name]) * 1e3 for name in pair)
                print(f"{runtime}: with seccomp {on:.1f} ms, without {off:.1f} ms, difference {on - off:+.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
