"""Registry transfer: `pybuild push` / `pybuild pull` vs `skopeo copy` to a loopback registry, in one run.

Images (in a private store, PYBUILD_ROOT under --dir):
- debian: the debootstrap'ed Debian bookworm minbase rootfs (`tests/bases.py::debian_rootfs_tar`, cached in
  /var/cache/pybuild-tests; ~200 MB) imported with `pybuild import`. When it cannot be made (no root or no
  network) a synthetic ~180 MB rootfs of random and text files is used instead, and the table says so;
- layers20: `FROM busybox:bench` + 20 `RUN head -c 1000000 /dev/urandom > /fileN` built with `pybuild build`
  (busybox rootfs from `tests/bases.py::make_busybox_rootfs`, imported with `pybuild import`).

For each image, every timed command gets a fresh docker-registry (`tests/registry_support.start_registry`,
plain HTTP on loopback); pulls go into a fresh store / a fresh OCI directory each run, from one registry
filled once per figure. Rows:
- push, layers already compressed: `pybuild push` once the store remembers the gzip blobs (after
  `pybuild save --format oci`, the archive skopeo pushes) vs `skopeo copy oci-archive:... docker://...`;
- first push incl. compression: `pybuild push --force-compression` (compresses every layer again; what a
  first push of freshly built layers costs) vs the same skopeo figure;
- second push of an unchanged image (same registry, everything there already): target < 0.3 s;
- pull: `pybuild pull` into a fresh store vs `skopeo copy docker://... oci:DIR`.
Then a cache import: `pybuild build --cache-to type=registry,...,mode=max` in one store, and
`--cache-from type=registry` of the same Dockerfile (with a ~50 MB RUN layer) in a fresh store, through a
recording proxy; the bytes of the blobs it GETs are compared with the final image's layer bytes (target < 5 %);
then that store pushes the image to another repository of the same registry (the layers are mounted).

Times are the wall clock of the whole command, median of --repeat runs.

    .venv/bin/python benchmarks/registry.py [--repeat 3] [--quick] [--dir DIR]

Needs root (pybuild's RUN) and /usr/bin/docker-registry; skopeo is skipped with a note when absent.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.bases import debian_rootfs_tar, make_busybox_rootfs, tar_dir  # noqa: E402
from tests.registry_support import FaultProxy, RunningRegistry, start_registry  # noqa: E402

MB = 1_000_000
EXE = str(Path(sys.executable).with_name("pybuild"))
SECOND_PUSH_TARGET = 0.3
CACHE_TARGET = 0.05
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class Failed(Exception):
    def __init__(self, argv: list[str], rc: int, output: str) -> None:
        super().__init__(f"{' '.join(argv)}: exit status {rc}")
        self.argv, self.rc, self.output = argv, rc, output


def run(argv: list[str], root: Path | None = None, **extra: str) -> float:
    """Run a command; its wall-clock time. PYBUILD_ROOT=root when given, and the `extra` variables."""
    env = dict(os.environ, **extra, **({"PYBUILD_ROOT": str(root)} if root is not None else {}))
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise Failed(argv, proc.returncode, proc.stdout)
    return elapsed


def pybuild(root: Path, *argv: str, **extra: str) -> float:
    return run([EXE, *argv], root, **extra)


def median(fn: Callable[[], float], repeat: int) -> float:
    return statistics.median(fn() for _ in range(repeat))


def synthetic_rootfs(dest: Path, size: int = 180 * MB) -> Path:
    """A rootfs tar of half random, half text files (compresses roughly like a distro's)."""
    tree = dest / "synthetic-rootfs"
    rnd = random.Random(3)
    text = b"".join(Path(p).read_bytes() for p in sorted(Path("/usr/lib/python3").rglob("*.py"))[:3000]
                    if Path(p).is_file()) or b"some text for the layer\n" * 100_000
    written, i = 0, 0
    while written < size:
        directory = tree / f"usr/share/d{i // 200:03d}"
        directory.mkdir(parents=True, exist_ok=True)
        n = rnd.randint(4_000, 400_000)
        if i % 2:
            data = rnd.randbytes(n)
        else:
            start = rnd.randrange(0, max(1, len(text) - n))
            data = text[start:start + n]
        (directory / f"f{i:05d}").write_bytes(data)
        written += len(data)
        i += 1
    return tar_dir(tree, dest / "synthetic-rootfs.tar")


def layer_bytes(host: str, repo: str, tag: str) -> tuple[int, int]:
    """(sum of layer sizes, number of layers) of HOST/repo:tag's manifest."""
    request = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    with urllib.request.urlopen(request, timeout=10) as response:
        manifest = json.load(response)
    return sum(int(layer["size"]) for layer in manifest["layers"]), len(manifest["layers"])


def blob_size(registry: RunningRegistry, digest: str) -> int:
    hexpart = digest.split(":", 1)[1]
    path = registry.root / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"
    return path.stat().st_size if path.exists() else 0


class Bench:
    def __init__(self, work: Path, repeat: int, skopeo: bool) -> None:
        self.work, self.repeat, self.skopeo = work, repeat, skopeo
        self.store = work / "store"
        self.rows: dict[str, dict[str, float]] = {}
        self.sizes: dict[str, tuple[int, int]] = {}
        self.errors: list[Failed] = []
        self.counter = 0
        self.cache_output = ""

    def fresh(self, name: str) -> Path:
        self.counter += 1
        return self.work / f"{name}-{self.counter}"

    def registry(self) -> RunningRegistry:
        return start_registry(self.fresh("reg"))

    def pushed_once(self, fn: Callable[[RunningRegistry], float]) -> float:
        registry = self.registry()
        try:
            return fn(registry)
        finally:
            registry.stop()
            shutil.rmtree(registry.root.parent, ignore_errors=True)

    def record(self, label: str, tool: str, fn: Callable[[], float]) -> None:
        try:
            self.rows.setdefault(label, {})[tool] = median(fn, self.repeat)
        except Failed as exc:
            self.errors.append(exc)

    def image(self, key: str, name: str) -> None:
        r, store = self.repeat, self.store
        insecure = "--insecure-registry"
        archive = self.work / f"{key}.tar"
        pybuild(store, "save", "--format", "oci", "-o", str(archive), name)  # remembers the gzip blobs too

        def push(*extra: str) -> Callable[[], float]:
            return lambda: self.pushed_once(lambda reg: pybuild(store, "push", *extra, insecure, reg.host, name,
                                                                 f"{reg.host}/{key}:bench"))

        self.record(f"{key}: push, layers already compressed", "pybuild", push())
        self.record(f"{key}: first push incl. compression", "pybuild", push("--force-compression"))

        def second_push(reg: RunningRegistry) -> float:
            pybuild(store, "push", insecure, reg.host, name, f"{reg.host}/{key}:bench")
            return pybuild(store, "push", insecure, reg.host, name, f"{reg.host}/{key}:bench")

        self.record(f"{key}: second push, unchanged", "pybuild", lambda: self.pushed_once(second_push))

        def pull(reg: RunningRegistry) -> float:
            pybuild(store, "push", insecure, reg.host, name, f"{reg.host}/{key}:bench")
            self.sizes[key] = layer_bytes(reg.host, key, "bench")
            times = []
            for _ in range(r):
                target = self.fresh("pull-store")
                times.append(pybuild(target, "pull", insecure, reg.host, f"{reg.host}/{key}:bench"))
                shutil.rmtree(target, ignore_errors=True)
            return statistics.median(times)

        try:
            self.rows.setdefault(f"{key}: pull", {})["pybuild"] = self.pushed_once(pull)
        except Failed as exc:
            self.errors.append(exc)

        if not self.skopeo:
            return
        skopeo = ["skopeo", "copy", "-q"]

        def skopeo_push(reg: RunningRegistry) -> float:
            return run([*skopeo, "--dest-tls-verify=false", f"oci-archive:{archive}",
                        f"docker://{reg.host}/{key}:skopeo"])

        self.record(f"{key}: push, layers already compressed", "skopeo",
                    lambda: self.pushed_once(skopeo_push))
        self.rows.setdefault(f"{key}: first push incl. compression", {})["skopeo"] = \
            self.rows[f"{key}: push, layers already compressed"].get("skopeo", float("nan"))

        def second_skopeo(reg: RunningRegistry) -> float:
            skopeo_push(reg)
            return skopeo_push(reg)

        self.record(f"{key}: second push, unchanged", "skopeo", lambda: self.pushed_once(second_skopeo))

        def skopeo_pull(reg: RunningRegistry) -> float:
            skopeo_push(reg)
            times = []
            for _ in range(r):
                target = self.fresh("oci-dir")
                times.append(run([*skopeo, "--src-tls-verify=false", f"docker://{reg.host}/{key}:skopeo",
                                  f"oci:{target}"]))
                shutil.rmtree(target, ignore_errors=True)
            return statistics.median(times)

        try:
            self.rows.setdefault(f"{key}: pull", {})["skopeo"] = self.pushed_once(skopeo_pull)
        except Failed as exc:
            self.errors.append(exc)

    @staticmethod
    def fetched(registry: RunningRegistry, proxy: FaultProxy) -> int:
        """Bytes of the blobs GET through `proxy` since its log was cleared."""
        return sum(blob_size(registry, path.rsplit("/", 1)[1]) for method, path, _ in proxy.requests
                   if method == "GET" and "/blobs/sha256:" in path)

    def cache_import(self, busybox_tar: Path) -> dict[str, float] | None:
        """--cache-to type=registry (mode=max) in one store, --cache-from in a fresh one via a recording proxy."""
        context = self.work / "cache-ctx"
        context.mkdir()
        registry = self.registry()
        # the base comes from the registry in both stores (a second `pybuild import` would be another image)
        pybuild(self.store, "push", "--insecure-registry", registry.host, "busybox:bench",
                f"{registry.host}/busybox:bench")
        (context / "Dockerfile").write_text(f"FROM {registry.host}/busybox:bench\nRUN head -c 50000000 /dev/urandom > /big\n"
                                            "RUN echo small > /small\n")
        proxy = FaultProxy(registry.host)
        try:
            host = registry.host
            first_id, second_id = self.work / "first.iid", self.work / "second.iid"
            pybuild(self.store, "build", "-q", "-t", "app:bench", "--iidfile", str(first_id), "--insecure-registry",
                    host, "--cache-to", f"type=registry,ref={host}/app:cache,mode=max", str(context),
                    SOURCE_DATE_EPOCH="0")
            pybuild(self.store, "push", "--insecure-registry", host, "app:bench", f"{host}/app:img")
            image_bytes, layers = layer_bytes(host, "app", "img")
            other = self.fresh("cache-store")
            pybuild(other, "pull", "--insecure-registry", host, f"{host}/busybox:bench")
            proxy.requests.clear()
            argv = [EXE, "build", "--progress", "plain", "-t", "app:bench", "--iidfile", str(second_id),
                    "--insecure-registry", proxy.host, "--insecure-registry", host, "--cache-from", f"type=registry,ref={proxy.host}/app:cache",
                    str(context)]
            start = time.perf_counter()
            proc = subprocess.run(argv, env=dict(os.environ, PYBUILD_ROOT=str(other), SOURCE_DATE_EPOCH="0"),
                                  capture_output=True, text=True)
            elapsed = time.perf_counter() - start
            if proc.returncode != 0:
                raise Failed(argv, proc.returncode, proc.stdout + proc.stderr)
            output = proc.stdout + proc.stderr
            fetched = self.fetched(registry, proxy)
            manifests = sum(1 for method, path, _ in proxy.requests if method == "GET" and "/manifests/" in path)
            requests = len(proxy.requests)
            same = first_id.read_text().strip() == second_id.read_text().strip()
            hits = output.count(" CACHED")
            self.cache_output = output
            # then push that image to another repository of the same registry: its layers are mounted
            proxy.requests.clear()
            push_seconds = pybuild(other, "push", "--insecure-registry", proxy.host, "app:bench",
                                   f"{proxy.host}/pushed/app:bench")
            mounts = sum(1 for method, path, _ in proxy.requests if method == "POST" and "mount=" in path)
            return {"seconds": elapsed, "fetched": fetched, "image": image_bytes, "layers": layers,
                    "manifest_gets": manifests, "requests": requests, "same_id": float(same), "hits": hits,
                    "push_seconds": push_seconds, "push_fetched": self.fetched(registry, proxy),
                    "push_mounts": mounts}
        except Failed as exc:
            self.errors.append(exc)
            return None
        finally:
            proxy.stop()
            registry.stop()


def fmt(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


def report(bench: Bench, notes: list[str], cache: dict[str, float] | None) -> int:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n# registry transfer, wall clock of the command, median of {bench.repeat} (s); "
          f"{os.cpu_count()} CPUs, load average now {load}")
    for key, (size, count) in bench.sizes.items():
        print(f"{key}: {count} layers, {size / MB:.1f} MB of gzip layers")
    header = f"{'measurement':48s} {'pybuild':>8s} {'skopeo':>8s} {'pyb/skopeo':>10s}"
    print(header)
    print("-" * len(header))
    for label, cells in bench.rows.items():
        ours, peer = cells.get("pybuild"), cells.get("skopeo")
        ratio = f"{ours / peer:.2f}" if ours and peer and peer == peer else "-"
        print(f"{label:48s} {fmt(ours):>8s} {fmt(peer):>8s} {ratio:>10s}")
    print("(skopeo's 'first push' is its push of the already-compressed archive: it never compresses here)")
    for note in notes:
        print(f"note: {note}")

    print("\n# targets")
    missed = 0
    for label, cells in bench.rows.items():
        if "first push" in label:
            continue
        ours, peer = cells.get("pybuild"), cells.get("skopeo")
        if label.endswith("second push, unchanged"):
            if ours is not None:
                ok = ours < SECOND_PUSH_TARGET
                missed += not ok
                print(f"second push < {SECOND_PUSH_TARGET} s   {label:44s} {'met' if ok else 'MISSED'} ({ours:.3f} s)")
            continue
        if ours is None or peer is None:
            print(f"pybuild <= skopeo     {label:44s} not measured")
            continue
        ok = ours <= peer
        missed += not ok
        print(f"pybuild <= skopeo     {label:44s} {'met' if ok else 'MISSED'} ({ours:.3f} vs {peer:.3f} s)")
    if cache is not None and cache["hits"] < 2:
        print(f"cache import < 5 % of image bytes: not measured (the --cache-from build missed the cache: "
              f"{int(cache['hits'])} of 2 RUN steps CACHED, {cache['fetched'] / MB:.1f} MB fetched)")
    elif cache is not None:
        share = cache["fetched"] / cache["image"]
        ok = share < CACHE_TARGET
        missed += not ok
        print(f"cache import < 5 % of image bytes: {'met' if ok else 'MISSED'} ({cache['fetched'] / MB:.1f} MB "
              f"of blobs fetched vs {cache['image'] / MB:.1f} MB in the image's {int(cache['layers'])} layers = "
              f"{share * 100:.1f} %; build took {cache['seconds']:.2f} s, {int(cache['requests'])} requests, "
              f"same image ID as the exporting store: {bool(cache['same_id'])})")
        print("  (bytes = sizes of the blobs the --cache-from build GETs through the proxy; the hits' layers stay "
              "in the registry until something reads them)")
        print(f"  then `pybuild push` of that image to another repository of the registry: {cache['push_seconds']:.2f} s, "
              f"{cache['push_fetched'] / MB:.1f} MB fetched, {int(cache['push_mounts'])} blob(s) mounted")
    else:
        print("cache import < 5 % of image bytes: not measured")
    print(f"targets missed: {missed}")
    if cache is not None and (cache["hits"] < 2 or not cache["same_id"]):
        print(f"\n# the --cache-from build's output ({int(cache['hits'])} of 2 RUN steps CACHED; "
              f"same image ID as the exporting build: {bool(cache['same_id'])})")
        for line in bench.cache_output.strip().splitlines()[-30:]:
            print(f"  | {line}")
    if bench.errors:
        print("\n# failures")
        for exc in bench.errors:
            print(f"exit status {exc.rc}\n  $ {' '.join(exc.argv)}")
            for line in exc.output.strip().splitlines()[-25:]:
                print(f"  | {line}")
    return 1 if bench.errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--quick", action="store_true", help="one run each; for smoke-testing")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="where the temp work dir goes")
    args = parser.parse_args()
    if args.quick:
        args.repeat = 1
    if os.geteuid() != 0:
        print("registry benchmark: needs root (pybuild's RUN)", file=sys.stderr)
        return 1
    notes: list[str] = []
    skopeo = shutil.which("skopeo") is not None
    if not skopeo:
        notes.append("skopeo skipped: not installed")
        print("note: skopeo not installed; skipped", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="pybuild-bench-registry-", dir=args.dir) as tmp:
        work = Path(tmp)
        bench = Bench(work, args.repeat, skopeo)
        try:
            debian = debian_rootfs_tar()
        except (OSError, subprocess.SubprocessError) as exc:
            notes.append(f"debian: debootstrap base unavailable ({exc}); a synthetic ~180 MB rootfs is used")
            debian = synthetic_rootfs(work)
        pybuild(bench.store, "import", str(debian), "debian:bench")
        rootfs = make_busybox_rootfs(work / "busybox-rootfs")
        busybox_tar = tar_dir(rootfs, work / "busybox-rootfs.tar")
        pybuild(bench.store, "import", str(busybox_tar), "busybox:bench")
        context = work / "layers20"
        context.mkdir()
        steps = "".join(f"RUN head -c 1000000 /dev/urandom > /file{i}\n" for i in range(1, 21))
        (context / "Dockerfile").write_text("FROM busybox:bench\n" + steps)
        pybuild(bench.store, "build", "-q", "-t", "layers20:bench", str(context))

        print("# debian", flush=True)
        bench.image("debian", "debian:bench")
        print("# layers20", flush=True)
        bench.image("layers20", "layers20:bench")
        print("# cache import", flush=True)
        cache = bench.cache_import(busybox_tar)
        return report(bench, notes, cache)


if __name__ == "__main__":
    sys.exit(main())
