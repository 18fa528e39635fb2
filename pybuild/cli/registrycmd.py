"""`pybuild pull`, `push`, `login` and `logout`: thin commands over `pybuild.api`'s registry functions.

Who uses it: `cli/main.py` registers the parsers (`add_registry_parsers`); `buildcmd.py` shares
`add_insecure_flag` / `apply_insecure`. Progress goes to standard error one line per step; what a script
wants (the name pulled, the digest pushed) goes to standard output. A password is never echoed, logged or
put in an error message.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pybuild.errors import ConfigError

__all__ = ["add_insecure_flag", "add_registry_parsers", "apply_insecure", "cmd_login", "cmd_logout",
           "cmd_pull", "cmd_push"]


def add_insecure_flag(p: Any) -> None:
    p.add_argument("--insecure-registry", dest="insecure_registries", action="append", default=[],
                   metavar="HOST[:PORT]", help="allow plain HTTP (and unchecked TLS) for this registry")


def apply_insecure(args: argparse.Namespace) -> None:
    """Pass each `--insecure-registry` to the registry settings (for the rest of this process)."""
    from pybuild.api import allow_insecure_registries

    allow_insecure_registries(getattr(args, "insecure_registries", None) or [])


def add_registry_parsers(sub: Any) -> None:
    """Add pull, push, login and logout to the subcommand parsers (`sub`: argparse's subparsers action)."""
    p = sub.add_parser("pull", help="pull an image from a registry into the store")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                   help="the platform to pull (default: the host's)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image name")
    add_insecure_flag(p)
    p.add_argument("name", metavar="NAME[:TAG|@DIGEST]", help="the image reference")
    p.set_defaults(handler=cmd_pull)

    p = sub.add_parser("push", help="push an image from the store to a registry")
    p.add_argument("--compression", choices=("gzip", "zstd", "uncompressed"), default="gzip",
                   help="layer compression (default gzip)")
    p.add_argument("--compression-level", type=int, default=None, metavar="N", help="compression level")
    p.add_argument("--force-compression", action="store_true",
                   help="compress again even when the store has the layer in that compression")
    p.add_argument("--format", choices=("oci", "docker"), default="oci",
                   help="manifest media types (default oci)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the manifest digest")
    add_insecure_flag(p)
    p.add_argument("name", metavar="NAME[:TAG]", help="the image in the store; also where it goes")
    p.add_argument("dest", nargs="?", metavar="DEST[:TAG]", help="push under this reference instead")
    p.set_defaults(handler=cmd_push)

    p = sub.add_parser("login", help="log in to a registry (stored in ~/.docker/config.json)")
    p.add_argument("-u", "--username", help="the user name")
    p.add_argument("-p", "--password", help="the password (prefer --password-stdin)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add_insecure_flag(p)
    p.add_argument("server", metavar="SERVER", help="the registry host (e.g. ghcr.io, 127.0.0.1:5000)")
    p.set_defaults(handler=cmd_login)

    p = sub.add_parser("logout", help="forget the login for a registry")
    p.add_argument("server", metavar="SERVER", help="the registry host")
    p.set_defaults(handler=cmd_logout)


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cmd_pull(args: argparse.Namespace) -> int:
    """`pybuild pull [--platform P] NAME`: prints the stored name."""
    from pybuild.api import PullRequest, pull
    from pybuild.cli.commands import _warn

    request = PullRequest(name=args.name, platform=args.platform,
                          insecure_registries=tuple(args.insecure_registries))
    result = pull(request, _warn, report=None if args.quiet else _stderr)
    if not args.quiet:
        _stderr(f"Digest: {result.manifest_digest}")
    print(result.name)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    """`pybuild push NAME [DEST]`: prints the pushed manifest's digest."""
    from pybuild.api import PushRequest, push
    from pybuild.cli.commands import _warn

    request = PushRequest(name=args.name, dest=args.dest, compression=args.compression,
                          compression_level=args.compression_level, force_compression=args.force_compression,
                          format=args.format, insecure_registries=tuple(args.insecure_registries))
    result = push(request, _warn, report=None if args.quiet else _stderr)
    print(result.digest)
    return 0


def cmd_login(args: argparse.Namespace) -> int:
    """`pybuild login [-u USER] [-p PASS | --password-stdin] SERVER`."""
    from pybuild.api import LoginRequest, login

    apply_insecure(args)  # before any prompt: a bad --insecure-registry fails first
    username, password = args.username, args.password
    if args.password_stdin:
        if password is not None:
            raise ConfigError("login: --password and --password-stdin are mutually exclusive")
        if not username:
            raise ConfigError("login: --password-stdin needs --username")
        password = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    elif password is not None:
        _stderr("WARNING! Using --password via the command line is insecure; use --password-stdin.")
    if not username:
        username = _ask("Username: ")
    if password is None:
        password = _ask_secret()
    login(LoginRequest(server=args.server, username=username or "", password=password or ""))
    print("Login Succeeded")
    return 0


def _ask(prompt: str) -> str:
    if not sys.stdin.isatty():
        raise ConfigError("login: no user name given", hint="use --username (-u)")
    sys.stderr.write(prompt)
    sys.stderr.flush()
    return sys.stdin.readline().strip()


def _ask_secret() -> str:
    if not sys.stdin.isatty():
        raise ConfigError("login: no password given", hint="use --password-stdin")
    import getpass

    return getpass.getpass("Password: ", stream=sys.stderr)


def cmd_logout(args: argparse.Namespace) -> int:
    """`pybuild logout SERVER`."""
    from pybuild.api import LogoutRequest, logout

    if logout(LogoutRequest(server=args.server)).logged_in:
        print(f"Removing login credentials for {args.server}")
    else:
        print(f"Not logged in to {args.server}")
    return 0
