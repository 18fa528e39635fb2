"""pybuild: a daemonless container image builder.

The package is imported by the CLI on every start, so it imports nothing heavy.
"""

from pybuild.version import __version__

__all__ = ["BuildRequest", "BuildResult", "__version__", "build"]


def __getattr__(name: str) -> object:
    """`pybuild.build`, `pybuild.BuildRequest`, `pybuild.BuildResult`: the API (`pybuild.api`), loaded
    on first use so that importing the package stays cheap."""
    if name in ("build", "BuildRequest", "BuildResult"):
        from pybuild import api

        return getattr(api, name)
    raise AttributeError(f"module 'pybuild' has no attribute {name!r}")
