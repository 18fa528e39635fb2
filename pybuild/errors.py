"""The one error tree of pybuild.

    PybuildError
    ├── UserError            bad input; the CLI prints one line (plus context) and exits 1
    │   ├── DockerfileError  the Dockerfile: syntax, instructions, flags, expansion
    │   ├── ContextError     the build context and ignore files
    │   ├── ConfigError      command-line flags and configuration
    │   ├── StoreError       the local store
    │   ├── RegistryError    registries
    │   └── StepFailed       a build step that ran and failed
    └── InternalError        a bug; the CLI exits 2 and shows a traceback with --debug

Modules translate third-party exceptions at their boundary (`raise X(...) from exc`). Only the CLI renders
errors and picks exit codes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pybuild.source import SourceFile, Span


class PybuildError(Exception):
    """Base of every error pybuild raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        span: Span | None = None,
        source: SourceFile | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.span = span
        self.source = source
        self.hint = hint

    def __str__(self) -> str:
        if self.span is not None:
            return f"{self.span}: {self.message}"
        return self.message


class UserError(PybuildError):
    """The input is wrong; the user can fix it."""


class DockerfileError(UserError):
    """A Dockerfile cannot be parsed, validated or expanded."""


class ContextError(UserError):
    """The build context or its ignore file is wrong or unreadable."""


class ConfigError(UserError):
    """A command-line flag or configuration value is wrong."""


class StoreError(UserError):
    """The local store cannot do what was asked (missing image, no space, corrupt blob)."""


class RegistryError(UserError):
    """A registry refused or failed a request."""


class StepFailed(UserError):
    """A build step ran and failed."""


class InternalError(PybuildError):
    """A bug in pybuild."""


@contextmanager
def at(span: Span, source: SourceFile | None = None) -> Iterator[None]:
    """Attach `span` (and `source`) to a PybuildError raised inside the block that has none yet."""
    try:
        yield
    except PybuildError as exc:
        if exc.span is None:
            exc.span = span
        if exc.source is None:
            exc.source = source
        raise
