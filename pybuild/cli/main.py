"""`pybuild` entry point: argument parsing, dispatch to one command, exit codes.

Exit codes (docs/ARCHITECTURE.md): 0 ok, 1 user error (one-line error, no traceback), 2 internal error
(traceback with `--debug`), 130 interrupted.

The `pybuild` script is `run`: `main`, then `quick_exit`, which skips the interpreter's tear-down.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from pybuild.api import __version__
from pybuild.errors import ConfigError, PybuildError, UserError

Handler = Callable[[argparse.Namespace], int]


class _ArgParser(argparse.ArgumentParser):
    """argparse that raises ConfigError (exit 1, one line) instead of printing usage and exiting 2."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message}", hint=f"run '{self.prog} --help' for usage")


class _Skipped:
    """Stands in for the parser of a subcommand that is not being run: accepts and ignores everything."""

    def __getattr__(self, name: str) -> Callable[..., _Skipped]:
        return lambda *args, **kwargs: self


class _OnlyOne:
    """The subparsers action, adding only the subcommand `name` (argparse setup is ~1 ms per command)."""

    def __init__(self, sub: Any, name: str | None) -> None:
        self.sub = sub
        self.name = name

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if self.name is None or name == self.name:
            return self.sub.add_parser(name, **kwargs)
        self.sub.choices[name] = None  # still a valid choice (never chosen: argv names `self.name`)
        return _Skipped()


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command-line grammar (or, given `command`, only that subcommand's part). Each subcommand
    sets `handler` to a function in `commands`."""
    parser = _ArgParser(prog="pybuild", description="A daemonless container image builder.")
    parser.add_argument("--version", action="version", version=f"pybuild {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for internal errors")
    sub: Any = _OnlyOne(parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_ArgParser),
                        command)

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

    from pybuild.cli.registrycmd import add_registry_parsers

    add_registry_parsers(sub)

    from pybuild.cli.buildcmd import add_build_parser

    add_build_parser(sub)
    return parser


COMMANDS = frozenset({"parse", "check", "context", "import", "load", "save", "images", "inspect", "history",
                      "tag", "rmi", "du", "prune", "build", "pull", "push", "login", "logout"})
# commands that mount overlays, run containers or remove what a build unpacked: a non-root user runs them in
# a user namespace (pybuild/rootless.py)
ROOTLESS_COMMANDS = frozenset({"build", "prune"})


def _with_command(argv: list[str]) -> list[str]:
    """The headline `pybuild -t app:v1 -f Dockerfile .` means `pybuild build ...`: argv gets `build` when
    its first word that is not a global flag is a flag (not `--help`/`--version`) or an existing path."""
    for index, word in enumerate(argv):
        if word in ("--debug",):
            continue
        if word in COMMANDS or word in ("-h", "--help", "--version"):
            return argv
        if not word.startswith("-") and not os.path.exists(word):
            return argv  # a mistyped command: argparse names the valid ones
        return argv[:index] + ["build"] + argv[index:]
    return argv


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
    p.add_argument("--all", action="store_true", help="also drop every build cache entry")
    p.set_defaults(handler=_lazy("prune"))


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
        argv = _with_command(args_list)
        command = next((word for word in argv if word in COMMANDS), None)
        if command in ROOTLESS_COMMANDS and os.geteuid() != 0 and not {"-h", "--help"} & set(argv):
            from pybuild.api import enter_rootless_if_needed

            enter_rootless_if_needed()  # before any thread starts: a non-root user builds in a user namespace
        args = build_parser(command).parse_args(argv)
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


def run() -> NoReturn:
    """The `pybuild` console script (and `python -m pybuild`): `main()`, then `quick_exit`."""
    try:
        code = main()
    except SystemExit as exc:  # argparse's --help and --version
        if exc.code is not None and not isinstance(exc.code, int):
            raise  # a message to print: the interpreter's own exit says it
        code = exc.code or 0
    quick_exit(code)


def quick_exit(code: int) -> NoReturn:
    """Exit with `code` without tearing the interpreter down.

    Python frees every module and object on the way out: 20-40 ms once httpx, lark or networkx is loaded
    (a tenth of a pull or of a small rebuild), for memory the kernel takes back at once anyway. What a
    normal exit does that matters is still done here: the atexit handlers run (logging's flush, the
    `weakref.finalize` clean-ups of temp dirs, rich's terminal restore) and stdout and stderr are flushed
    (a reader that went away is not an error here, as in `main`). While a non-daemon thread still runs,
    the normal exit is taken, as it waits for that thread. The store loses nothing: what a command wrote is
    durable once committed, and a store survives kill -9 as well (SQLite's WAL is left for the next
    opener instead of being checkpointed at close).
    """
    main_thread = threading.main_thread()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not main_thread):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe, or a stream closed already
            pass
    os._exit(code)
