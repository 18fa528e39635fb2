"""The library's front door, and the CLI's only one: one function per command, typed requests and results.

CI systems and build farms call it without a subprocess; `pybuild.cli` maps argv onto a request, calls the
function and renders its result. Every function imports the heavy parts of pybuild when it runs, so
importing `pybuild.api` stays cheap (the CLI imports it on every start).

    build(BuildRequest, sink) -> BuildResult              `pybuild build` (`building.py`)
"""

from __future__ import annotations

from pybuild.version import __version__
from pybuild.api.building import BuildRequest, BuildResult, build

__all__ = ["BuildRequest", "BuildResult", "__version__", "build"]
