"""Rootless overhead: `pybuild build` as the unprivileged test user vs as root, whole processes.

Needs root (it runs pybuild as `pybuild-rootless`, made by scripts/setup.sh, and as root, both through
`runuser` with the same clean environment, so both pay the same process start-up). Alternating in one run:
- whole RUN step: `pybuild build --no-cache` of `FROM busybox` + `RUN true` (user namespace entry, overlay
  mount, runtime start, commit, layer tar, image), median ms;
- cached no-op rebuild of the same Dockerfile (what the user namespace entry costs on the fast path);
- the user namespace entry alone, in-process (`rootless.enter`: fork, unshare, newuidmap, newgidmap).

    .venv/bin/python benchmarks/rootless.py [--repeat 10] [--runtime runc|crun]
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

from tests.bases import make_busybox_rootfs, tar_dir  # noqa: E402
from tests.rootless_runner import Rootless, ensure_user, make_runner  # noqa: E402

ENTER = ("import time; from pybuild import rootless; t = time.perf_counter(); rootless.enter(); "
         "print((time.perf_counter() - t) * 1000)")


def timed(runner: Rootless, user: str, env: dict[str, str], *args: str) -> float:
    start = time.perf_counter()
    result = runner.run(*args, user=user, env=env)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"pybuild {' '.join(args)} as {user} failed: {result.stderr}")
    return elapsed * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--runtime", default="runc", choices=("runc", "crun"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: it runs pybuild as the test user and as root")
    ensure_user()
    home = Path(tempfile.mkdtemp(prefix="pybuild-rootless-bench-", dir="/tmp"))
    try:
        tar_dir(make_busybox_rootfs(home / "rootfs"), home / "busybox.tar")
        ctx = home / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text("FROM busybox\nRUN true\n")
        runner = make_runner(home)
        envs = {"pybuild-rootless": {}, "root": {"PYBUILD_ROOT": str(home / "root-store")}}
        for user, env in envs.items():
            timed(runner, user, env, "import", str(home / "busybox.tar"), "busybox:latest")
            timed(runner, user, env, "build", "-q", "--runtime", args.runtime, str(ctx))  # warm up
        cases = {"whole RUN step (--no-cache)": ("--no-cache",), "cached no-op rebuild": ()}
        for name, extra in cases.items():
            times: dict[str, list[float]] = {user: [] for user in envs}
            for _ in range(args.repeat):
                for user, env in envs.items():
                    times[user].append(timed(runner, user, env, "build", "-q", "--runtime", args.runtime,
                                             *extra, str(ctx)))
            root, rootless = (statistics.median(times[u]) for u in ("root", "pybuild-rootless"))
            print(f"{name:32} root {root:7.1f} ms   rootless {rootless:7.1f} ms   "
                  f"overhead {rootless - root:+6.1f} ms ({rootless / root:.2f}x)")
        entries = []
        for _ in range(args.repeat):
            out = subprocess.run(runner.python_argv("-c", ENTER), capture_output=True, text=True, check=True)
            entries.append(float(out.stdout))
        print(f"{'user namespace entry alone':32} {statistics.median(entries):.1f} ms "
              "(fork, unshare, newuidmap, newgidmap)")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
