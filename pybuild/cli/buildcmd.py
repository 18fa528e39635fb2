"""`pybuild build` (and the bare `pybuild -t app:v1 -f Dockerfile .`): docker build's flags → BuildRequest.

Who uses it: `cli/main.py` registers the parser and calls `cmd_build`. The build itself is
`pybuild.api.build`; this module only maps flags, picks the progress view, and writes `--iidfile` and
`--metadata-file` afterwards (as docker does: only after a successful build).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from pybuild.errors import ConfigError

__all__ = ["add_build_parser", "cmd_build"]


def add_build_parser(sub: Any) -> None:
    """Add `build` to the subcommand parsers (`sub`: argparse's subparsers action)."""
    p = sub.add_parser("build", help="build an image from a Dockerfile (docker build's flags)")
    p.add_argument("context", metavar="CONTEXT", help="the build context directory")
    p.add_argument("-t", "--tag", dest="tags", action="append", default=[], metavar="NAME[:TAG]",
                   help="name the image (repeatable)")
    p.add_argument("-f", "--file", dest="dockerfile", metavar="PATH",
                   help="the Dockerfile (default: CONTEXT/Dockerfile; - reads standard input)")
    p.add_argument("--build-arg", dest="build_args", action="append", default=[], metavar="KEY[=VALUE]",
                   help="set a build-time variable (KEY alone takes it from the environment)")
    p.add_argument("--target", metavar="STAGE", help="build this stage (default: the last)")
    p.add_argument("--no-cache", action="store_true", help="do not use the cache for any step")
    p.add_argument("--no-cache-filter", action="append", default=[], metavar="STAGE",
                   help="do not use the cache for this stage's steps (repeatable)")
    p.add_argument("--label", dest="labels", action="append", default=[], metavar="KEY=VALUE",
                   help="set an image label (repeatable)")
    p.add_argument("--platform", metavar="OS/ARCH", help="target platform (only the host's, for now)")
    p.add_argument("--network", default="default", choices=("default", "none", "host"),
                   help="network for RUN steps (host needs --allow network.host)")
    p.add_argument("--allow", action="append", default=[], metavar="ENTITLEMENT",
                   help="grant network.host or security.insecure (repeatable, comma-separated)")
    p.add_argument("--ulimit", dest="ulimits", action="append", default=[], metavar="TYPE=SOFT[:HARD]",
                   help="a ulimit for RUN steps, e.g. nofile=1024:2048 (repeatable)")
    p.add_argument("--shm-size", metavar="SIZE", help="size of /dev/shm in RUN steps (default 64m)")
    p.add_argument("-m", "--memory", metavar="SIZE", help="memory limit of each RUN step (default: none)")
    p.add_argument("--pids-limit", type=int, metavar="N",
                   help="most processes a RUN step may have at once (default: no limit; -1: no limit)")
    p.add_argument("--secret", dest="secrets", action="append", default=[],
                   metavar="id=ID[,src=FILE|env=VAR]", help="a secret for RUN --mount=type=secret")
    p.add_argument("-o", "--output", dest="outputs", action="append", default=[], metavar="SPEC",
                   help="also export the result: type=oci|docker|local|tar|image|registry,dest=...")
    p.add_argument("--iidfile", metavar="FILE", help="write the image ID to FILE")
    p.add_argument("--metadata-file", metavar="FILE", help="write build result metadata (JSON) to FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image ID on success")
    p.add_argument("--progress", default="auto", metavar="auto|tty|plain|quiet",
                   help="progress output (default auto: tty on a terminal, plain otherwise)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="steps run at once (default: the number of CPUs)")
    p.add_argument("--explain-cache", action="store_true", help="say why each step that ran missed the cache")
    p.add_argument("--cache-from", action="append", default=[],
                   metavar="type=local,src=DIR|type=registry,ref=REF",
                   help="import build cache")
    p.add_argument("--cache-to", action="append", default=[],
                   metavar="type=local,dest=DIR|type=registry,ref=REF[,mode=min|max]",
                   help="export build cache")
    p.add_argument("--runtime", default=os.environ.get("PYBUILD_RUNTIME", "runc"), choices=("runc", "crun"),
                   help="the OCI runtime for RUN steps (default runc)")
    p.add_argument("--pull", action="store_true", help="pull the base images even when the store has them")
    p.add_argument("--push", action="store_true", help="push every -t name to its registry after the build")
    from pybuild.cli.registrycmd import add_insecure_flag

    add_insecure_flag(p)
    p.set_defaults(handler=cmd_build)


def build_args(values: Sequence[str], environ: Any = os.environ) -> dict[str, str]:
    """`--build-arg` values: `K=V`, or `K` alone taking `$K` (skipped when unset, as docker does)."""
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not key:
            raise ConfigError(f"--build-arg {item!r}: expected KEY=VALUE or KEY")
        if sep:
            out[key] = value
        elif key in environ:
            out[key] = environ[key]
    return out


def labels(values: Sequence[str]) -> dict[str, str]:
    """`--label` values: `K=V` (`K` alone is an empty label, as in docker)."""
    out: dict[str, str] = {}
    for item in values:
        key, _, value = item.partition("=")
        if not key:
            raise ConfigError(f"--label {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def cmd_build(args: argparse.Namespace) -> int:
    """Run one build; exit 0 with the image built, or raise (the CLI renders the error)."""
    from pybuild.api import BuildRequest, build
    from pybuild.cli.progress_view import make_view

    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs}: must be at least 1")
    if args.insecure_registries:
        from pybuild.cli.registrycmd import apply_insecure

        apply_insecure(args)
    data = sys.stdin.buffer.read() if args.dockerfile == "-" else None
    request = BuildRequest(
        context=args.context, dockerfile=args.dockerfile, dockerfile_data=data, tags=tuple(args.tags),
        build_args=build_args(args.build_args), target=args.target, no_cache=args.no_cache,
        no_cache_filter=tuple(args.no_cache_filter), labels=labels(args.labels), platform=args.platform,
        network=args.network, secrets=tuple(args.secrets), outputs=tuple(args.outputs), jobs=args.jobs,
        explain_cache=args.explain_cache, cache_from=tuple(args.cache_from), cache_to=tuple(args.cache_to),
        runtime=args.runtime, pull=args.pull, push=args.push, allow=tuple(args.allow),
        ulimits=tuple(args.ulimits), shm_size=args.shm_size, memory=args.memory, pids_limit=args.pids_limit)
    mode = "quiet" if args.quiet else args.progress
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a killed build cleans up like Ctrl-C
    try:
        with make_view(mode, sys.stderr) as view:
            result = build(request, view)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if args.iidfile:
        _write(args.iidfile, result.image_id)
    if args.metadata_file:
        _write(args.metadata_file, json.dumps({
            "containerimage.digest": result.manifest_digest, "containerimage.config.digest": result.image_id,
            "image.name": ",".join(result.tags)}, indent=2) + "\n")
    if args.quiet:
        print(result.image_id)
    if args.explain_cache and mode != "quiet":
        for name, reasons in result.misses:
            for reason in reasons:
                print(f"cache miss: {name}: {reason}", file=sys.stderr)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as out:
            out.write(text)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
