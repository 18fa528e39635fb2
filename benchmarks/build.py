"""Whole builds: `pybuild build` vs docker BuildKit vs buildah, side by side in one run.

Every build starts FROM busybox:bench, a busybox-static rootfs made in a temp dir and imported under that
name into each tool: `pybuild import` into a private store (PYBUILD_ROOT), `docker import`, and for buildah
`buildah from scratch` + `buildah add` + `buildah commit` (localhost/busybox:bench). Scenarios:

  a  two independent stages each `RUN sleep 1` (and write a file), a final stage `COPY --from=` both; cold
  b  the same, fully cached (built once to warm, then the rebuild is timed)
  c  a context of 20,000 small files and one 200 MiB file, `COPY . /ctx`: cold, cached, after a `touch` of
     every file (mtime only) and after a 1-byte edit of the big file
  d  20 sequential `RUN echo N > /fileN` steps; cold

Cold means no cache: a fresh pybuild store; `docker builder prune -af` then `build --no-cache`; for buildah
`buildah rmi --prune` of the previous layer images then `build --layers --no-cache`. Note that both prunes
act on the whole machine's docker build cache / dangling buildah images, as the lab's peer setup does.

Times are the wall clock of the whole command (process start included) as a helper process sees it,
median of --repeat runs, each after an untimed `sync`. pybuild's peak RSS in (c) is the largest ru_maxrss
of the helper's children (one helper per build, so nothing carries over between measurements). In (c) the
edits run before the touches, and the image must change after each edit (checked). buildah runs with
--jobs=2 so its stages can run in parallel as BuildKit's and pybuild's do. Peers that are absent (or whose
daemon is down) are skipped.

    .venv/bin/python benchmarks/build.py [--repeat 3] [--quick] [--only a,b,c,d] [--dir DIR]
                                         [--network default|none|host] [--tools pybuild,BuildKit,buildah]

Needs root (docker's socket, buildah's storage, pybuild's RUN).
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
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.context import make_tree  # noqa: E402
from pybuild.context import statcache  # noqa: E402

DOCKER = "/usr/bin/docker"  # the 20.10 CLI with embedded BuildKit (/usr/local/bin/docker lacks buildx)
BASE = "busybox:bench"
TOOLS = ("pybuild", "BuildKit", "buildah")
SCENARIOS = ("a", "b", "c", "d")
RSS_TARGET = 200_000_000  # bytes: "peak RSS < 200 MB"
CACHED_TARGET = 0.15  # seconds, scenario (b)

# The helper that times one command: run in its own process so that the children's ru_maxrss is that of this
# one build only (ru_maxrss is kept across fork + exec, and RUSAGE_CHILDREN accumulates the maximum).
HELPER = r"""
import json, resource, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                      stderr=subprocess.STDOUT)
wall = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
out = proc.stdout.decode(errors="replace")
print(json.dumps({"wall": wall, "rss": peak, "rc": proc.returncode, "output": out[-4000:]}))
"""

TWO_STAGES = """\
FROM busybox:bench AS one
RUN sleep 1 && echo one > /one
FROM busybox:bench AS two
RUN sleep 1 && echo two > /two
FROM busybox:bench
COPY --from=one /one /one
COPY --from=two /two /two
"""
COPY_CONTEXT = "FROM busybox:bench\nCOPY . /ctx\n"
MANY_RUNS = "FROM busybox:bench\n" + "".join(f"RUN echo {n} > /file{n}\n" for n in range(1, 21))


class BuildFailed(Exception):
    def __init__(self, argv: list[str], rc: int, output: str) -> None:
        super().__init__(f"exit status {rc}: {' '.join(argv)}")
        self.argv, self.rc, self.output = argv, rc, output


@dataclass
class Timed:
    wall: float
    rss: int
    output: str = ""


def timed(argv: list[str], env: dict[str, str] | None = None) -> Timed:
    """Run `argv` through the helper; its wall time and the peak RSS of its largest process.

    Dirty pages of earlier builds (and of cache prunes) are flushed first, so that no build pays for the
    writeback of the one before it.
    """
    os.sync()
    proc = subprocess.run([sys.executable, "-c", HELPER, *argv], env=env, capture_output=True, check=True)
    result = json.loads(proc.stdout.decode().splitlines()[-1])
    if result["rc"] != 0:
        raise BuildFailed(argv, result["rc"], result["output"])
    return Timed(result["wall"], result["rss"], result["output"])


def quiet(argv: list[str], env: dict[str, str] | None = None, check: bool = True) -> bool:
    proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    if check and proc.returncode != 0:
        raise BuildFailed(argv, proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace"))
    return proc.returncode == 0


def make_rootfs(root: Path) -> None:
    """A busybox-static rootfs with every applet linked in /bin (as the lab's busybox:local)."""
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "root", "proc", "sys", "dev", "home",
              "var"):
        (root / d).mkdir(parents=True)
    (root / "tmp").chmod(0o1777)
    shutil.copy2("/bin/busybox", root / "bin/busybox")
    listing = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True)
    applets = listing.stdout.split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", root / "bin" / applet)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                     "nobody:x:65534:65534:nobody:/home:/bin/false\n")
    (root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")


class Tool(ABC):
    """One builder: how to give it the base image, empty its cache and build."""

    name = ""

    @abstractmethod
    def available(self) -> str | None:
        """None when usable, else why not."""
        ...

    @abstractmethod
    def import_base(self, rootfs_tar: Path) -> None:
        ...

    @abstractmethod
    def reset(self) -> None:
        """Forget every cached step (the base image stays)."""
        ...

    @abstractmethod
    def build(self, dockerfile: Path, context: Path, tag: str, cold: bool) -> Timed:
        ...

    @abstractmethod
    def image_id(self, tag: str) -> str:
        ...

    def cleanup(self) -> None:
        pass


class PyBuild(Tool):
    name = "pybuild"

    def __init__(self, work: Path, network: str) -> None:
        self.exe = str(Path(sys.executable).with_name("pybuild"))
        self.work = work
        self.network = network
        self.generation = 0
        self.store = work / "store-0"
        self.rootfs_tar: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, PYBUILD_ROOT=str(self.store))

    def available(self) -> str | None:
        if not os.path.exists(self.exe):
            return f"{self.exe} not installed"
        if not quiet([self.exe, "build", "--help"], check=False):
            return "`pybuild build --help` fails (the build command is not there yet)"
        return None

    def import_base(self, rootfs_tar: Path) -> None:
        self.rootfs_tar = rootfs_tar
        self.reset()

    def reset(self) -> None:
        """A fresh store with only the base imported (the context stat caches live in the store too)."""
        assert self.rootfs_tar is not None
        shutil.rmtree(self.store, ignore_errors=True)
        self.generation += 1
        self.store = self.work / f"store-{self.generation}"
        quiet([self.exe, "import", str(self.rootfs_tar), BASE], env=self.env)

    def build(self, dockerfile: Path, context: Path, tag: str, cold: bool) -> Timed:
        argv = [self.exe, "build", "-t", tag, "-f", str(dockerfile), "--progress=quiet"]
        if self.network != "default":
            argv.append(f"--network={self.network}")
        return timed([*argv, str(context)], env=self.env)

    def image_id(self, tag: str) -> str:
        out = subprocess.run([self.exe, "inspect", tag], env=self.env, capture_output=True, check=True).stdout
        return str(json.loads(out)["id"])

    def cleanup(self) -> None:
        shutil.rmtree(self.store, ignore_errors=True)


class BuildKit(Tool):
    name = "BuildKit"

    def __init__(self, network: str) -> None:
        self.network = network
        self.env = dict(os.environ, DOCKER_BUILDKIT="1")
        self.tags: set[str] = set()
        self.images: set[str] = set()  # every image built (a re-tag leaves the old one dangling)

    def available(self) -> str | None:
        if not os.path.exists(DOCKER):
            return f"{DOCKER} not installed"
        if not quiet([DOCKER, "info"], check=False):
            return "dockerd is not running (`docker info` fails)"
        if self.network == "default" and not os.path.exists("/sys/class/net/docker0"):
            # RUN steps would fail: "could not find bridge docker0". Another dockerd started with
            # --bridge=none deletes the host's docker0 (moby's removeDefaultBridgeInterface).
            return "the docker0 bridge is missing (restart dockerd, or run with --network=none|host)"
        return None

    def import_base(self, rootfs_tar: Path) -> None:
        quiet([DOCKER, "import", str(rootfs_tar), BASE])

    def reset(self) -> None:
        if self.tags or self.images:
            quiet([DOCKER, "rmi", "-f", *sorted(self.tags), *sorted(self.images)], check=False)
            self.images.clear()
        quiet([DOCKER, "builder", "prune", "-af"])

    def build(self, dockerfile: Path, context: Path, tag: str, cold: bool) -> Timed:
        self.tags.add(tag)
        argv = [DOCKER, "build", "-q", "-t", tag, "-f", str(dockerfile)]
        if cold:
            argv.append("--no-cache")
        if self.network != "default":
            argv.append(f"--network={self.network}")
        result = timed([*argv, str(context)], env=self.env)
        self.images.update(line for line in result.output.split() if line.startswith("sha256:"))
        return result

    def image_id(self, tag: str) -> str:
        argv = [DOCKER, "image", "inspect", "-f", "{{.Id}}", tag]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()

    def cleanup(self) -> None:
        self.reset()
        quiet([DOCKER, "rmi", BASE], check=False)


class Buildah(Tool):
    name = "buildah"

    def __init__(self, network: str) -> None:
        self.network = network
        self.tags: set[str] = set()

    def available(self) -> str | None:
        return None if shutil.which("buildah") else "buildah not installed"

    def import_base(self, rootfs_tar: Path) -> None:
        container = subprocess.run(["buildah", "from", "scratch"], capture_output=True, text=True,
                                   check=True).stdout.strip()
        try:
            quiet(["buildah", "add", container, str(rootfs_tar), "/"])
            quiet(["buildah", "commit", "-q", container, f"localhost/{BASE}"])
        finally:
            quiet(["buildah", "rm", container], check=False)

    def reset(self) -> None:
        if self.tags:
            quiet(["buildah", "rmi", "-f", *sorted(self.tags)], check=False)
        quiet(["buildah", "rmi", "--prune"], check=False)  # the untagged layer images of --layers

    def build(self, dockerfile: Path, context: Path, tag: str, cold: bool) -> Timed:
        self.tags.add(f"localhost/{tag}")
        argv = ["buildah", "build", "--layers", "--jobs=2", "-q", "-t", tag, "-f", str(dockerfile)]
        if cold:
            argv.append("--no-cache")
        if self.network != "default":
            argv.append(f"--network={self.network}")
        return timed([*argv, str(context)])

    def image_id(self, tag: str) -> str:
        return subprocess.run(["buildah", "inspect", "--type", "image", "-f", "{{.FromImageID}}", tag],
                              capture_output=True, text=True, check=True).stdout.strip()

    def cleanup(self) -> None:
        self.reset()
        quiet(["buildah", "rmi", f"localhost/{BASE}"], check=False)


@dataclass
class Results:
    times: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)  # (row, tool) -> stats
    rss: dict[tuple[str, str], int] = field(default_factory=dict)
    errors: dict[tuple[str, str], BuildFailed] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    rows: list[str] = field(default_factory=list)

    def add(self, row: str, tool: str, runs: list[Timed]) -> None:
        if row not in self.rows:
            self.rows.append(row)
        walls = [r.wall for r in runs]
        self.times[row, tool] = {"median": statistics.median(walls), "min": min(walls), "max": max(walls)}
        self.rss[row, tool] = max(r.rss for r in runs)
        peak = max(r.rss for r in runs) / 2**20
        print(f"  {tool:9s} {row:40s} median {statistics.median(walls):7.3f} s  "
              f"(min {min(walls):.3f}, max {max(walls):.3f}; peak RSS {peak:.0f} MiB)", flush=True)

    def fail(self, row: str, tool: str, exc: BuildFailed) -> None:
        if row not in self.rows:
            self.rows.append(row)
        self.errors[row, tool] = exc
        print(f"  {tool:9s} {row:40s} FAILED: {exc}", flush=True)

    def median(self, row: str, tool: str) -> float | None:
        stats = self.times.get((row, tool))
        return stats["median"] if stats else None


class Bench:
    def __init__(self, tools: list[Tool], work: Path, tree: Path, repeat: int, results: Results) -> None:
        self.tools = tools
        self.work = work
        self.tree = tree
        self.repeat = repeat
        self.results = results
        self.empty = work / "empty-context"
        self.empty.mkdir()
        self.dockerfiles = work / "dockerfiles"
        self.dockerfiles.mkdir()
        self.last_tree_change = 0

    def dockerfile(self, name: str, text: str) -> Path:
        path = self.dockerfiles / f"{name}.Dockerfile"
        path.write_text(text)
        return path

    def series(self, tool: Tool, row: str, run: Callable[[int], Timed]) -> bool:
        """`repeat` runs of `run(i)` recorded under `row`; False when one failed (reported, not raised)."""
        try:
            self.results.add(row, tool.name, [run(i) for i in range(self.repeat)])
            return True
        except BuildFailed as exc:
            self.results.fail(row, tool.name, exc)
            return False

    def cold(self, tool: Tool, dockerfile: Path, context: Path, tag: str) -> Timed:
        tool.reset()
        return tool.build(dockerfile, context, tag, cold=True)

    def scenario_a(self, tool: Tool) -> None:
        df = self.dockerfile("two-stages", TWO_STAGES)
        row = "(a) 2 stages RUN sleep 1, cold"
        self.series(tool, row, lambda i: self.cold(tool, df, self.empty, "bench-a"))

    def scenario_b(self, tool: Tool) -> None:
        df = self.dockerfile("two-stages", TWO_STAGES)
        row = "(b) 2 stages RUN sleep 1, cached"
        try:
            self.cold(tool, df, self.empty, "bench-b")  # warm
        except BuildFailed as exc:
            self.results.fail(row, tool.name, exc)
            return
        self.series(tool, row, lambda i: tool.build(df, self.empty, "bench-b", cold=False))

    def scenario_c(self, tool: Tool) -> None:
        df = self.dockerfile("copy-context", COPY_CONTEXT)
        ctx, tag = self.tree, "bench-c"
        self.settle()  # a previous tool's touches/edits must be out of pybuild's racy window before cold
        if not self.series(tool, "(c) COPY context, cold", lambda i: self.cold(tool, df, ctx, tag)):
            return
        self.series(tool, "(c) COPY context, cached", lambda i: tool.build(df, ctx, tag, cold=False))
        big = ctx / "big.bin"
        offset = big.stat().st_size // 2 + 12_345
        original = read_byte(big, offset)

        seen = {tool.image_id(tag)}

        def edited(i: int) -> Timed:
            write_byte(big, offset, (original + i + 1) % 256)  # a state no earlier run has seen
            self.last_tree_change = time.time_ns()
            result = tool.build(df, ctx, tag, cold=False)
            image = tool.image_id(tag)
            if image in seen:  # the edit must reach the image: else the tool wrongly hit its cache
                self.results.problems.append(f"{tool.name}: (c) after the 1-byte edit #{i + 1} the image is "
                                             f"{image[:19]}, the same as before the edit")
            seen.add(image)
            return result

        def touched(i: int) -> Timed:
            touch_all(ctx)
            self.last_tree_change = time.time_ns()
            return tool.build(df, ctx, tag, cold=False)

        try:
            self.series(tool, "(c) COPY context, 1-byte big-file edit", edited)
        finally:
            write_byte(big, offset, original)
            self.last_tree_change = time.time_ns()
        self.series(tool, "(c) COPY context, after touch (mtime)", touched)

    def scenario_d(self, tool: Tool) -> None:
        df = self.dockerfile("twenty-runs", MANY_RUNS)
        self.series(tool, "(d) 20 x RUN echo, cold", lambda i: self.cold(tool, df, self.empty, "bench-d"))

    def settle(self) -> None:
        delay = (self.last_tree_change + statcache.RACY_WINDOW_NS - time.time_ns()) / 1e9 + 0.1
        if delay > 0:
            time.sleep(delay)


def read_byte(path: Path, offset: int) -> int:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(1)[0]


def write_byte(path: Path, offset: int, value: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(bytes([value]))


def touch_all(root: Path) -> None:
    """Set every file's mtime to now (contents unchanged), as `find -type f -exec touch -m {} +`."""
    now = time.time_ns()
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            os.utime(path, ns=(os.lstat(path).st_atime_ns, now), follow_symlinks=False)


def fmt(seconds: float | None, error: bool = False) -> str:
    if error:
        return "ERROR"
    return "-" if seconds is None else f"{seconds:.3f}"


def ratio(ours: float | None, peer: float | None) -> str:
    return "-" if ours is None or peer is None else f"{ours / peer:.2f}"


def peaks_in_c(results: Results, name: str) -> dict[str, int]:
    return {row: rss for (row, tool), rss in results.rss.items() if tool == name and row.startswith("(c)")}


def report(results: Results, tools: list[str], skipped: dict[str, str], repeat: int) -> int:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n# whole builds, wall clock of the command, median of {repeat} (s); "
          f"{os.cpu_count()} CPUs, load average now {load}")
    header = (f"{'scenario':40s} {'pybuild':>8s} {'BuildKit':>9s} {'buildah':>8s} "
              f"{'pyb/BK':>7s} {'pyb/buildah':>11s}")
    print(header)
    print("-" * len(header))
    for row in results.rows:
        cells = {t: fmt(results.median(row, t), (row, t) in results.errors) for t in TOOLS}
        ours = results.median(row, "pybuild")
        print(f"{row:40s} {cells['pybuild']:>8s} {cells['BuildKit']:>9s} {cells['buildah']:>8s} "
              f"{ratio(ours, results.median(row, 'BuildKit')):>7s} "
              f"{ratio(ours, results.median(row, 'buildah')):>11s}")
    for name, why in skipped.items():
        print(f"note: {name} skipped: {why}")

    print("\n# targets")
    missed = 0
    if "pybuild" in tools and "BuildKit" in tools:
        for row in results.rows:
            ours, peer = results.median(row, "pybuild"), results.median(row, "BuildKit")
            if ours is None or peer is None:
                print(f"pybuild <= BuildKit   {row:40s} not measured")
                continue
            ok = ours <= peer
            missed += not ok
            print(f"pybuild <= BuildKit   {row:40s} {'met' if ok else 'MISSED'} ({ours:.3f} vs {peer:.3f} s)")
    cached = results.median("(b) 2 stages RUN sleep 1, cached", "pybuild")
    if cached is not None:
        ok = cached < CACHED_TARGET
        missed += not ok
        print(f"(b) cached rebuild < {CACHED_TARGET} s wall: {'met' if ok else 'MISSED'} ({cached:.3f} s)")
    peaks = peaks_in_c(results, "pybuild")
    if peaks:
        for row, rss in peaks.items():
            print(f"pybuild peak RSS      {row:40s} {rss / 2**20:6.0f} MiB")
        top = max(peaks.values())
        ok = top < RSS_TARGET
        missed += not ok
        print(f"(c) peak RSS < 200 MB: {'met' if ok else 'MISSED'} "
              f"({top / 1e6:.0f} MB = {top / 2**20:.0f} MiB)")
    buildah = peaks_in_c(results, "buildah")
    if buildah:
        print(f"(for reference: buildah's peak RSS in (c) {max(buildah.values()) / 2**20:.0f} MiB; "
              "BuildKit's work happens in dockerd, not measurable here)")

    print(f"targets missed: {missed}")
    for problem in results.problems:
        print(f"PROBLEM: {problem}")
    if results.errors:
        print("\n# failures")
        for (row, tool), exc in results.errors.items():
            print(f"{tool} {row}: exit status {exc.rc}\n  $ {' '.join(exc.argv)}")
            for line in exc.output.strip().splitlines()[-25:]:
                print(f"  | {line}")
    return 1 if results.errors or results.problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--quick", action="store_true",
                        help="one run each and a small context (2,000 files + 20 MiB); for smoke-testing")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios, e.g. a,b")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp/pybuild-bench-build"),
                        help="where the (c) context tree lives (reused between runs)")
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--big-mib", type=int, default=200)
    parser.add_argument("--network", default="default", choices=("default", "none", "host"),
                        help="RUN network for all three tools (default: each tool's own default)")
    parser.add_argument("--tools", default=",".join(TOOLS),
                        help="comma-separated subset of " + ",".join(TOOLS))
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.files, args.big_mib = 1, min(args.files, 2_000), min(args.big_mib, 20)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := set(only) - set(SCENARIOS):
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {','.join(SCENARIOS)}")
    wanted = [t.strip() for t in args.tools.split(",") if t.strip()]
    if unknown := set(wanted) - set(TOOLS):
        parser.error(f"unknown tool(s) {', '.join(sorted(unknown))}; choose from {','.join(TOOLS)}")
    if os.geteuid() != 0:
        print("build benchmark: needs root", file=sys.stderr)
        return 1

    with tempfile.TemporaryDirectory(prefix="pybuild-bench-build-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        candidates: list[Tool] = [PyBuild(work, args.network), BuildKit(args.network), Buildah(args.network)]
        tools: list[Tool] = []
        skipped: dict[str, str] = {}
        for tool in candidates:
            if tool.name not in wanted:
                continue
            why = tool.available()
            if why is None:
                tools.append(tool)
            else:
                skipped[tool.name] = why
                print(f"note: {tool.name}: {why}; skipped", file=sys.stderr)
        rootfs = work / "rootfs"
        make_rootfs(rootfs)
        rootfs_tar = work / "busybox-rootfs.tar"
        subprocess.run(["tar", "--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner",
                        "-C", str(rootfs), "-cf", str(rootfs_tar), "."], check=True)
        tree = args.dir / f"tree-{args.files}-{args.big_mib}"
        if "c" in only:
            make_tree(tree, args.files, args.big_mib)
            subprocess.run(f"find {tree} -type f -print0 | xargs -0 cat > /dev/null", shell=True, check=True)
        results = Results()
        bench = Bench(tools, work, tree, args.repeat, results)
        try:
            for tool in tools:
                tool.import_base(rootfs_tar)
            for scenario in only:
                print(f"# scenario ({scenario})", flush=True)
                for tool in tools:
                    getattr(bench, f"scenario_{scenario}")(tool)
        finally:
            for tool in tools:
                tool.cleanup()
        return report(results, [t.name for t in tools], skipped, args.repeat)


if __name__ == "__main__":
    sys.exit(main())
