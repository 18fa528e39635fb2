"""A Dockerfile on its own: parse (the AST) and check (parse, typed stages, lint rules).

Requests name the Dockerfile by path; a caller that has its bytes already (`-`: standard input) passes
them as `dockerfile_data`. The frontend (lark, the grammar) is imported when a function runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pybuild.errors import ConfigError
from pybuild.record import record

if TYPE_CHECKING:
    from pybuild.dockerfile.ast import ParseResult as Ast
    from pybuild.source import Diagnostic

__all__ = ["CheckRequest", "CheckResult", "ParseRequest", "ParseResult", "check", "parse"]


def read_dockerfile(path: str, data: bytes | None) -> tuple[bytes, str]:
    """The Dockerfile's bytes and the name errors show for it (`Dockerfile` for `-`)."""
    if data is not None:
        return data, "Dockerfile" if path == "-" else path
    try:
        with open(path, "rb") as handle:
            return handle.read(), path
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a Dockerfile") from None
    except OSError as exc:
        raise ConfigError(f"cannot read Dockerfile {path}: {exc.strerror or exc}") from None


@record(kw_only=True)
class ParseRequest:
    """`pybuild parse FILE`: `dockerfile` a path (or `-` with `dockerfile_data`)."""

    dockerfile: str
    dockerfile_data: bytes | None = None


@record(kw_only=True)
class ParseResult:
    """The AST (unknown instructions are just nodes), in BuildKit's `Node.Dump()` form or as JSON."""

    ast: Ast

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return self.ast.warnings

    def dump(self) -> str:
        """BuildKit's `Node.Dump()` format."""
        from pybuild.dockerfile.ast import dump

        return dump(self.ast)

    def to_json(self) -> object:
        """One JSON object per instruction (for `json.dumps`)."""
        from pybuild.dockerfile.astjson import to_json

        doc: object = to_json(self.ast)
        return doc


def parse(request: ParseRequest) -> ParseResult:
    """Parse the Dockerfile; DockerfileError (with its span and source) for anything wrong."""
    from pybuild.dockerfile.parser import parse as parse_ast

    data, name = read_dockerfile(request.dockerfile, request.dockerfile_data)
    return ParseResult(ast=parse_ast(data, name))


@record(kw_only=True)
class CheckRequest:
    """`pybuild check [-f Dockerfile] [CONTEXT]`: `dockerfile` None is `CONTEXT/Dockerfile`."""

    context: str = "."
    dockerfile: str | None = None
    dockerfile_data: bytes | None = None


@record(kw_only=True)
class CheckResult:
    """What the lint rules found; `failed`: the check directive makes them errors."""

    name: str
    warnings: tuple[Diagnostic, ...]
    failed: bool
    stages: int
    instructions: int


def check(request: CheckRequest) -> CheckResult:
    """Parse, build the typed stages (their errors are raised), then run the lint rules."""
    import os

    from pybuild.dockerfile.instructions import to_stages
    from pybuild.dockerfile.lint import lint
    from pybuild.dockerfile.parser import parse as parse_ast

    path = request.dockerfile or os.path.join(request.context, "Dockerfile")
    data, name = read_dockerfile(path, request.dockerfile_data)
    result = parse_ast(data, name)
    stages = to_stages(result)
    report = lint(result)
    return CheckResult(name=name, warnings=report.warnings, failed=report.failed, stages=len(stages.stages),
                       instructions=len(result.nodes))
