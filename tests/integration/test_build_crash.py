"""`pybuild build` under stress: concurrent builds on one store, kill -9 at random points, Ctrl-C and SIGTERM.

Every build here is a real `pybuild build` process (real runc, overlayfs and store), because what is tested is
what survives the process: the store, its cache index, its mounts and the runtime's containers.

- Concurrency: four builds started at once on one store, overlapping steps, two of them the same Dockerfile.
- Crashes: a build killed with SIGKILL at a seeded random moment (sometimes twice in a row), then built
  again: it must give the digest of an uninterrupted build in a fresh store and leave nothing behind.
  `PYBUILD_CRASH_SEED` and `PYBUILD_CRASH_TRIALS` replay or widen the search; a failure names its trial,
  the kill delays and the seed.
- Interrupts: SIGINT and SIGTERM during a long RUN: exit 130 within seconds, nothing left, next build works.

"Nothing left" is checked from outside: no mount under the store root in /proc/self/mountinfo, no container
in the runtime's private state root (`executor.state_root`), no active or half-unpacked snapshot, and
`pybuild du --verify` clean.
"""

from __future__ import annotations

import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from pybuild.store.images import import_rootfs, resolve_image
from pybuild.store.store import Store

pytestmark = pytest.mark.root

PYBUILD = [sys.executable, "-m", "pybuild"]
BUILD_TIMEOUT = 180.0  # generous: CI runs this beside other tests on two cores
SEED = int(os.environ.get("PYBUILD_CRASH_SEED", "1337"))
TRIALS = int(os.environ.get("PYBUILD_CRASH_TRIALS", "10"))
READY = "ready-to-sleep"  # printed by the long RUN; its Dockerfile line spells it ready-"to"-sleep


def new_store(path: Path, busybox_tar: Path) -> str:
    """A store at `path` with busybox:latest imported; its root. Every store gets the very same base image
    (the import's `created` is SOURCE_DATE_EPOCH), so builds in different stores can be compared."""
    root = str(path)
    with mock.patch.dict(os.environ, {"SOURCE_DATE_EPOCH": "0"}), Store.open(root) as store:
        import_rootfs(store, str(busybox_tar), "busybox:latest")
    return root


@pytest.fixture
def root(tmp_path: Path, busybox_tar: Path) -> Iterator[str]:
    path = new_store(tmp_path / "store", busybox_tar)
    yield path
    reap(path)


def make_context(ctx: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(text)
    return ctx


def env_for(root: str, epoch: int | None = None) -> dict[str, str]:
    env = {**os.environ, "PYBUILD_ROOT": root}
    env.pop("CI", None)
    env.pop("SOURCE_DATE_EPOCH", None)
    if epoch is not None:
        env["SOURCE_DATE_EPOCH"] = str(epoch)
    return env


def build_argv(ctx: Path, dockerfile: str, tag: str, iidfile: Path, *extra: str) -> list[str]:
    return [*PYBUILD, "build", "-t", tag, "-f", str(ctx / dockerfile), "--progress=plain",
            "--iidfile", str(iidfile), *extra, str(ctx)]


def cli(root: str, *args: str, epoch: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PYBUILD, *args], env=env_for(root, epoch), text=True, capture_output=True,
                          check=False, timeout=BUILD_TIMEOUT)


def digests(root: str, iidfile: Path, tag: str) -> tuple[str, str]:
    """(image ID from --iidfile, manifest digest of `tag` in the store)."""
    with Store.open(root) as store:
        manifest = resolve_image(store, tag).manifest_digest
    return iidfile.read_text().strip(), manifest


def build_ok(root: str, ctx: Path, dockerfile: str, tag: str, iidfile: Path, epoch: int,
             *extra: str) -> tuple[str, str]:
    proc = subprocess.run(build_argv(ctx, dockerfile, tag, iidfile, *extra), env=env_for(root, epoch),
                          text=True, capture_output=True, check=False, timeout=BUILD_TIMEOUT)
    assert proc.returncode == 0, f"build of {dockerfile} failed ({proc.returncode}):\n{proc.stderr}"
    return digests(root, iidfile, tag)


# --- leftovers ----------------------------------------------------------------------------------------------


def runc_root(root: str) -> str:
    """Where pybuild keeps runc's state for store `root` (its private `--root`, see worker/executor.py)."""
    from pybuild.worker.executor import state_root

    with mock.patch.dict(os.environ, {"PYBUILD_ROOT": root}):
        return state_root("runc")


def containers(root: str) -> list[str]:
    out = subprocess.run(["runc", "--root", runc_root(root), "list", "-q"], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return out.split()


def mounts_under(root: str) -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        points = [line.split()[4] for line in handle]
    return [p for p in points if p == root or p.startswith(root.rstrip("/") + "/")]


def entries(root: str, *sub: str) -> list[str]:
    path = os.path.join(root, *sub)
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def assert_nothing_left(root: str, *, grace: float = 0.0) -> None:
    """No mounts, containers, active or half-unpacked snapshots under `root`; the store verifies clean.

    `grace`: seconds to let containers of a SIGKILLed build finish on their own (their runtime outlives
    pybuild; with short RUNs they exit by themselves, see test_next_build_reaps_a_killed_builds_container).
    """
    deadline = time.monotonic() + grace
    while containers(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert containers(root) == [], f"runc containers left in {runc_root(root)}"
    assert mounts_under(root) == [], "mounts left under the store root"
    assert entries(root, "snapshots", "active") == [], "active snapshots left"
    assert entries(root, "snapshots", "tmp") == [], "half-unpacked snapshots left"
    du = cli(root, "du", "--verify")
    assert du.returncode == 0 and "problem" not in du.stderr, f"du --verify:\n{du.stdout}{du.stderr}"
    assert "blob(s) ok" in du.stdout


def reap(root: str) -> None:
    """Teardown: kill containers, unmount and drop active snapshots a failed test may have left."""
    for cid in containers(root):
        subprocess.run(["runc", "--root", runc_root(root), "delete", "--force", cid], capture_output=True,
                       check=False, timeout=30)
    from pybuild.worker.snapshots import Snapshots

    if os.path.isdir(os.path.join(root, "snapshots")):
        Snapshots.open(root)  # unmounts and removes entries of dead processes


# --- 1. concurrent builds on one store ----------------------------------------------------------------------

SHARED = """\
FROM busybox:latest
COPY shared.txt /shared.txt
RUN echo shared > /s && sleep 1
RUN cat /shared.txt >> /s && sleep 0.2
"""
CONCURRENT = {
    "Dockerfile.a": SHARED + "RUN echo a > /who\n",
    "Dockerfile.b": SHARED + "COPY b.txt /b.txt\nRUN cat /b.txt > /who && sleep 0.3\nENV WHO=b\n",
    "Dockerfile.c": SHARED + "WORKDIR /c\nRUN echo c > who && sleep 0.2\nCMD [\"cat\", \"/c/who\"]\n",
}
CONCURRENT["Dockerfile.d"] = CONCURRENT["Dockerfile.c"]  # the same build under another file name


def test_concurrent_builds_on_one_store_agree_with_serial_builds(root: str, tmp_path: Path,
                                                                 busybox_tar: Path) -> None:
    ctx = make_context(tmp_path / "ctx", {**CONCURRENT, "shared.txt": "shared file\n", "b.txt": "b\n"})
    names = sorted(CONCURRENT)
    logs = {name: (tmp_path / f"{name}.log").open("w") for name in names}
    procs = {name: subprocess.Popen(build_argv(ctx, name, f"conc:{name[-1]}", tmp_path / f"{name}.iid"),
                                    env=env_for(root, 0), stdout=logs[name], stderr=subprocess.STDOUT)
             for name in names}
    codes = {name: proc.wait(timeout=BUILD_TIMEOUT) for name, proc in procs.items()}
    for handle in logs.values():
        handle.close()
    failed = {name: (tmp_path / f"{name}.log").read_text() for name, code in codes.items() if code != 0}
    assert not failed, f"concurrent builds failed: {codes}\n{failed}"
    concurrent = {name: digests(root, tmp_path / f"{name}.iid", f"conc:{name[-1]}") for name in names}
    assert concurrent["Dockerfile.c"] == concurrent["Dockerfile.d"]
    assert len({concurrent[name] for name in ("Dockerfile.a", "Dockerfile.b", "Dockerfile.c")}) == 3
    assert_nothing_left(root)

    # Rebuilt in the same store: every step is a cache hit and names the very same image.
    for name in names:
        again = build_ok(root, ctx, name, f"again:{name[-1]}", tmp_path / f"{name}.again", 0)
        assert again == concurrent[name], name
    # Built one after another in a fresh store: the same images (a same-store rebuild could not tell, since
    # its cache hands back what the concurrent builds recorded).
    serial_root = new_store(tmp_path / "serial", busybox_tar)
    try:
        for name in names:
            serial = build_ok(serial_root, ctx, name, f"serial:{name[-1]}", tmp_path / f"{name}.serial", 0)
            assert serial == concurrent[name], name
    finally:
        reap(serial_root)
    assert_nothing_left(root)


# --- 2. kill -9 at random points, then build again ----------------------------------------------------------

CRASH_EPOCH = 1_700_000_000
CRASH_DOCKERFILE = """\
FROM busybox:latest AS gen
COPY data/ /data/
RUN sleep 0.2 && mkdir /out && cat /data/a.txt /data/b.txt > /out/joined
RUN for i in 1 2 3 4 5; do echo "line $i" >> /out/joined; sleep 0.05; done

FROM busybox:latest
WORKDIR /app
COPY data/a.txt ./a.txt
RUN sleep 0.2 && echo final > /app/final
COPY --from=gen /out/ /app/out/
RUN cat /app/out/joined >> /app/final && rm a.txt && sleep 0.1
CMD ["cat", "/app/final"]
"""


def start_and_kill(root: str, ctx: Path, iidfile: Path, delay: float) -> bool:
    """Start the crash build, SIGKILL it after `delay` seconds; False when it had already finished."""
    proc = subprocess.Popen(build_argv(ctx, "Dockerfile", "crash:1", iidfile), env=env_for(root, CRASH_EPOCH),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        proc.kill()  # the pybuild process only, as the OOM killer would: its runc children live on
        proc.wait(timeout=30)
        return True


@pytest.mark.slow
def test_build_after_kill_9_gives_the_uninterrupted_image(tmp_path: Path, busybox_tar: Path) -> None:
    ctx = make_context(tmp_path / "ctx", {"Dockerfile": CRASH_DOCKERFILE, "data/a.txt": "a\n",
                                          "data/b.txt": "b\n" * 1000})
    ref_root = new_store(tmp_path / "ref", busybox_tar)
    reference = build_ok(ref_root, ctx, "Dockerfile", "crash:1", tmp_path / "ref.iid", CRASH_EPOCH)
    # Timed again without the cache: the first build of a session also compiles the parser tables.
    start = time.monotonic()
    build_ok(ref_root, ctx, "Dockerfile", "crash:1", tmp_path / "ref.iid", CRASH_EPOCH, "--no-cache")
    duration = time.monotonic() - start
    reap(ref_root)

    rng = random.Random(SEED)
    landed = kills = 0
    for trial in range(TRIALS):
        root = new_store(tmp_path / f"trial{trial}", busybox_tar)
        delays = [round(rng.uniform(0.0, duration), 3) for _ in range(1 if rng.random() < 0.7 else 2)]
        what = f"trial {trial} (seed {SEED}, kill after {delays} s of a {duration:.2f} s build)"
        try:
            for delay in delays:
                landed += start_and_kill(root, ctx, tmp_path / "killed.iid", delay)
                kills += 1
            again = build_ok(root, ctx, "Dockerfile", "crash:1", tmp_path / f"trial{trial}.iid", CRASH_EPOCH)
            assert again == reference, what
            try:
                assert_nothing_left(root, grace=5.0)
            except AssertionError as exc:
                raise AssertionError(f"{what}: {exc}") from exc
        finally:
            reap(root)
        shutil.rmtree(root, ignore_errors=True)
    # A kill after the build finished tests nothing; most must land mid-build for the test to mean much.
    assert landed >= kills // 2, f"only {landed} of {kills} kills landed before the build finished"


# --- 3. Ctrl-C and SIGTERM ----------------------------------------------------------------------------------

LONG_DOCKERFILE = """\
FROM busybox:latest
ARG NAP=30
RUN echo before > /before
RUN echo ready-"to"-sleep && sleep $NAP && echo after > /after
"""


class LiveBuild:
    """A `pybuild build` subprocess whose output lines are read as they come."""

    def __init__(self, root: str, argv: list[str]) -> None:
        self.lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.seen: list[str] = []
        # A parent that ignores SIGINT (some CI runners, xdist workers) would pass that on; pybuild must see
        # SIGINT as a terminal's Ctrl-C.
        self.proc = subprocess.Popen(argv, env=env_for(root, 0), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put("")

    def wait_for(self, pattern: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {pattern!r} within {timeout}s:\n{''.join(self.seen)}") from None
            self.seen.append(line)
            if not line:
                raise AssertionError(f"build ended before {pattern!r}:\n{''.join(self.seen)}")
            if re.search(pattern, line):
                return

    def rest(self) -> str:
        while (line := self.lines.get(timeout=30)) != "":
            self.seen.append(line)
        return "".join(self.seen)


@pytest.mark.parametrize("when", ["running", "starting"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_during_run_exits_130_and_cleans_up(root: str, tmp_path: Path, signum: int,
                                                       when: str) -> None:
    """`running`: the RUN's process has printed; `starting`: the step just began (runtime still starting)."""
    ctx = make_context(tmp_path / "ctx", {"Dockerfile": LONG_DOCKERFILE})
    build = LiveBuild(root, build_argv(ctx, "Dockerfile", "long:1", tmp_path / "iid"))
    build.wait_for(READY if when == "running" else r"RUN echo ready-")
    sent = time.monotonic()
    build.proc.send_signal(signum)
    try:
        code = build.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        build.proc.kill()
        raise AssertionError(f"still running 10 s after {signal.Signals(signum).name}") from None
    took = time.monotonic() - sent
    output = build.rest()
    assert code == 130, output
    assert took < 5.0, f"exit took {took:.1f} s:\n{output}"
    assert "interrupted" in output
    assert not (tmp_path / "iid").exists()
    assert_nothing_left(root)

    image = build_ok(root, ctx, "Dockerfile", "long:1", tmp_path / "iid", 0, "--build-arg", "NAP=0")
    assert image[0].startswith("sha256:")
    assert entries(root, "run", "bundles") == []
    assert_nothing_left(root)


# --- what a SIGKILLed build leaves running ------------------------------------------------------------------


def test_next_build_reaps_a_killed_builds_container(root: str, tmp_path: Path) -> None:
    """`runc run` starts in its own process group, so it outlives a SIGKILLed pybuild; the next build's
    `Snapshots.open` unmounts the dead build's overlay and deletes its upper dir, but nothing kills the
    container (here: 30 s more of `sleep`, in general a RUN still downloading or writing) or removes
    `<store>/run/bundles/bundle-*` by itself: the next build that runs a step reaps it (`executor.
    reap_stale_runs`: the bundle's owner flock is free)."""
    ctx = make_context(tmp_path / "ctx", {"Dockerfile": LONG_DOCKERFILE})
    build = LiveBuild(root, build_argv(ctx, "Dockerfile", "long:1", tmp_path / "iid"))
    build.wait_for(READY)
    build.proc.kill()
    build.proc.wait(timeout=30)
    build_ok(root, ctx, "Dockerfile", "long:1", tmp_path / "iid", 0, "--build-arg", "NAP=0")
    assert containers(root) == []
    assert entries(root, "run", "bundles") == []
