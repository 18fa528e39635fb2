"""`pybuild` entry point: argument parsing, dispatch to one command, exit codes.

Exit codes (DESIGN.md): 0 ok, 1 user error (one-line error, no traceback), 2 internal error (traceback with
`--debug`), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from pybuild import __version__
from pybuild.errors import ConfigError, PybuildError, UserError

Handler = Callable[[argparse.Namespace], int]


class _ArgParser(argparse.ArgumentParser):
    """argparse that raises ConfigError (exit 1, one line) instead of printing usage and exiting 2."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message}", hint=f"run '{self.prog} --help' for usage")


def build_parser() -> argparse.ArgumentParser:
    """The whole command-line grammar. Each subcommand sets `handler` to a function in `commands`."""
    parser = _ArgParser(prog="pybuild", description="A daemonless container image builder.")
    parser.add_argument("--version", action="version", version=f"pybuild {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for internal errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_ArgParser)

    p = sub.add_parser("parse", help="parse a Dockerfile and print its AST")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--dump", action="store_true", help="BuildKit's Node.Dump() format (the default)")
    fmt.add_argument("--json", action="store_true", help="one JSON object per instruction")
    p.add_argument("file", metavar="FILE", help="the Dockerfile, or - for standard input")
    p.set_defaults(handler=_lazy("parse"))

    p = sub.add_parser("check", help="parse and validate a Dockerfile; print warnings and errors")
    p.add_argument("-f", "--file", dest="dockerfile", metavar="PATH",
                   help="the Dockerfile (default: CONTEXT/Dockerfile; - reads standard input)")
    p.add_argument("context", nargs="?", default=".", metavar="CONTEXT", help="the build context directory")
    p.set_defaults(handler=_lazy("check"))

    p = sub.add_parser("context", help="list what a build can see in a context, with sizes and checksums")
    p.add_argument("-f", "--file", dest="dockerfile", metavar="PATH",
                   help="the Dockerfile; <PATH>.dockerignore beside it wins over CONTEXT/.dockerignore")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("context", metavar="DIR", help="the build context directory")
    p.set_defaults(handler=_lazy("context"))

    _add_image_commands(sub)

    # prefix_chars: take docker-build flags as plain words, so the answer is "not available", not a usage error
    p = sub.add_parser("build", help="build an image (not available yet)", prefix_chars="\0", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(handler=_not_built("build"))
    return parser


def _add_image_commands(sub: argparse._SubParsersAction[_ArgParser]) -> None:
    """The store and image commands: import, load, save, images, inspect, history, tag, rmi, du, prune."""
    p = sub.add_parser("import", help="make a one-layer image from a rootfs tar (like docker import)")
    p.add_argument("-m", "--message", help="a comment for the image's history entry")
    p.add_argument("file", metavar="ROOTFS", help="the rootfs: .tar, .tar.gz or .tar.zst")
    p.add_argument("name", nargs="?", metavar="NAME[:TAG]", help="the tag to give the image")
    p.set_defaults(handler=_lazy("import"))

    p = sub.add_parser("load", help="load images from an OCI layout (directory or tar) or a docker-archive")
    p.add_argument("-i", "--input", required=True, metavar="PATH", help="the archive or OCI layout directory")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(handler=_lazy("load"))

    p = sub.add_parser("save", help="write an image as an OCI archive or a docker-archive")
    p.add_argument("--format", choices=("oci", "docker"), default="oci", help="archive format (default oci)")
    p.add_argument("--compression", choices=("gzip", "zstd", "uncompressed"), default=None,
                   help="layer compression (default: the image's, gzip)")
    p.add_argument("--compression-level", type=int, default=None, metavar="N", help="compression level")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the archive to write (- for stdout)")
    p.add_argument("image", metavar="NAME", help="the image: name, ID or digest")
    p.set_defaults(handler=_lazy("save"))

    p = sub.add_parser("images", help="list the images in the store")
    p.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p.set_defaults(handler=_lazy("images"))

    p = sub.add_parser("inspect", help="show an image's digests, manifest and config as JSON")
    p.add_argument("image", metavar="NAME", help="the image: name, ID or digest")
    p.set_defaults(handler=_lazy("inspect"))

    p = sub.add_parser("history", help="show the history of an image")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    p.add_argument("image", metavar="NAME", help="the image: name, ID or digest")
    p.set_defaults(handler=_lazy("history"))

    p = sub.add_parser("tag", help="give an image another name")
    p.add_argument("source", metavar="SOURCE", help="the image: name, ID or digest")
    p.add_argument("target", metavar="TARGET", help="the new name")
    p.set_defaults(handler=_lazy("tag"))

    p = sub.add_parser("rmi", help="remove image names (the blobs go at the next prune)")
    p.add_argument("-f", "--force", action="store_true", help="remove every tag of an image given by ID")
    p.add_argument("images", nargs="+", metavar="NAME")
    p.set_defaults(handler=_lazy("rmi"))

    p = sub.add_parser("du", help="show the disk usage of the store")
    p.add_argument("--verify", action="store_true", help="also re-hash every blob and check the index")
    p.set_defaults(handler=_lazy("du"))

    p = sub.add_parser("prune", help="remove blobs that no image or cache entry uses")
    p.add_argument("--keep-storage", metavar="SIZE", help="stop once the store is at most SIZE (e.g. 10GB)")
    p.add_argument("--filter", action="append", default=[], metavar="until=DURATION",
                   help="only remove blobs unused for longer than DURATION (e.g. until=24h)")
    p.set_defaults(handler=_lazy("prune"))


def _not_built(name: str) -> Handler:
    """A handler for a command this version does not have yet: a clear error, never a fake result."""

    def run(args: argparse.Namespace) -> int:
        raise ConfigError(f"pybuild {name}: not available yet in pybuild {__version__}",
                          hint="this version has: parse, check, context and the image commands "
                               "(import, load, save, images, inspect, history, tag, rmi, du, prune)")

    return run


def _lazy(name: str) -> Handler:
    """A handler that imports `pybuild.cli.commands` only when the command runs."""

    def run(args: argparse.Namespace) -> int:
        from pybuild.cli import commands

        handler: Handler = getattr(commands, f"cmd_{name}")
        return handler(args)

    return run


def main(argv: Sequence[str] | None = None) -> int:
    """Run one pybuild command; return its exit code."""
    from pybuild.cli.render import render_error

    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list or bool(os.environ.get("PYBUILD_DEBUG"))
    try:
        args = build_parser().parse_args(args_list)
        handler: Handler | None = getattr(args, "handler", None)
        if handler is None:
            raise ConfigError("pybuild: no command given", hint="run 'pybuild --help' for the commands")
        return handler(args)
    except UserError as exc:
        print(render_error(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except PybuildError as exc:
        print(f"internal error: {exc}", file=sys.stderr)
        if debug:
            raise
        return 2
    except Exception as exc:  # a bug: say so in one line, traceback only with --debug
        print(f"internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        print("hint: run with --debug for a traceback and report it", file=sys.stderr)
        if debug:
            raise
        return 2
