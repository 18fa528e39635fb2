"""Parser throughput: pybuild vs BuildKit's Go parser (PyPI `dockerfile`) vs `dockerfile-parse`.

Generates a 10,000-line multi-stage Dockerfile, parses it with each parser in this process (best of
several runs after a warm-up) and prints lines per second plus pybuild's ratio to each peer. It then times
`pybuild check` on a small Dockerfile as a whole process (start-up included), which is what users feel.

    .venv/bin/python benchmarks/parse.py [--lines N] [--repeat N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def generate(lines: int, seed: int = 42) -> str:
    """A realistic multi-stage Dockerfile of about `lines` lines (deterministic for a seed)."""
    rnd = random.Random(seed)
    out: list[str] = ["# syntax=docker/dockerfile:1", "ARG BASE=debian:12", "ARG VERSION=1.0"]
    stage = 0
    while len(out) < lines:
        out += [f"# stage {stage}: builds part {stage}", f"FROM ${{BASE}} AS s{stage}"]
        out += [f"ARG VERSION", f"ENV APP_HOME=/opt/app{stage} PATH=/opt/app{stage}/bin:$PATH LANG=C.UTF-8"]
        out += [f'LABEL org.opencontainers.image.title="part {stage}" stage={stage}']
        out += [f"WORKDIR /src/{stage}"]
        for _ in range(rnd.randint(2, 5)):
            pkgs = " ".join(rnd.choice(["curl", "git", "make", "gcc", "libssl-dev", "ca-certificates"])
                            for _ in range(4))
            out += ["RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\",
                    "    apt-get update && \\", f"    apt-get install -y --no-install-recommends {pkgs} && \\",
                    "    rm -rf /var/lib/apt/lists/*"]
        out += [f"COPY --chown=app:app --chmod=0755 src/{stage}/ /src/{stage}/"]
        out += ["RUN <<EOF", "set -eux", f"make -C /src/{stage} VERSION=$VERSION", "EOF"]
        if stage:
            out += [f"COPY --from=s{stage - 1} /src/{stage - 1}/out /deps/{stage - 1}"]
        out += [f'CMD ["/opt/app{stage}/bin/run", "--port", "80{stage % 100:02d}"]', ""]
        stage += 1
    return "\n".join(out[:lines]) + "\n"


def best_time(fn: Callable[[], object], repeat: int) -> float:
    """Best wall time of `repeat` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def parsers(text: str, path: Path) -> dict[str, Callable[[], object]]:
    """The parsers present in this environment, each as a zero-argument call parsing `text`."""
    from pybuild.dockerfile.parser import parse

    found: dict[str, Callable[[], object]] = {"pybuild": lambda: parse(text)}
    try:
        import dockerfile

        found["buildkit-go (dockerfile)"] = lambda: dockerfile.parse_string(text)
    except ImportError:
        print("note: PyPI `dockerfile` (BuildKit's Go parser) not installed; skipped", file=sys.stderr)
    try:
        from dockerfile_parse import DockerfileParser

        def run_dfp() -> object:
            parser = DockerfileParser(path=str(path))
            return parser.structure

        found["dockerfile-parse"] = run_dfp
    except ImportError:
        print("note: dockerfile-parse not installed; skipped", file=sys.stderr)
    return found


def time_check_command(repeat: int) -> float:
    """Median wall time of `pybuild check` on a small Dockerfile, as a fresh process each time."""
    exe = Path(sys.executable).with_name("pybuild")
    small = REPO / "fixtures" / "demo" / "Dockerfile"
    cmd = [str(exe), "check", "-f", str(small), str(small.parent)]
    subprocess.run(cmd, check=True, capture_output=True)  # warms the compiled-parser cache
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--lines", type=int, default=10_000)
    args.add_argument("--repeat", type=int, default=7)
    opts = args.parse_args()
    text = generate(opts.lines)
    nlines = text.count("\n")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "Dockerfile"
        path.write_text(text)
        results = {name: best_time(fn, opts.repeat) for name, fn in parsers(text, path).items()}
    print(f"parse: {nlines} lines, best of {opts.repeat}")
    for name, seconds in results.items():
        print(f"  {name:28s} {seconds * 1000:8.1f} ms  {nlines / seconds:10,.0f} lines/s")
    ours = results["pybuild"]
    for name, seconds in results.items():
        if name != "pybuild":
            print(f"  ratio pybuild/{name}: {seconds / ours:.2f}x the lines per second")
    check = time_check_command(opts.repeat)
    print(f"pybuild check (small Dockerfile, whole process): {check * 1000:.0f} ms median")


if __name__ == "__main__":
    main()
