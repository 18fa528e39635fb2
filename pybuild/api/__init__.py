"""The library's front door, and the CLI's only one: one function per command, typed requests and results.

CI systems and build farms call it without a subprocess; `pybuild.cli` maps argv onto a request, calls the
function and renders its result. Functions that open the store take a `warn` callback for what opening it
repaired; the ones that talk to a registry a `report` for progress.

    build(BuildRequest, sink) -> BuildResult              `pybuild build`               building.py
    import_image, load, save                              images in and out             archives.py
    images                                                the store's images            listing.py
    inspect, history                                      one image described           inspecting.py
    tag, rmi                                              image names                   naming.py
    du, prune                                             the store's disk              disk.py
    pull, push, login, logout                             registries                    registry.py
    parse, check                                          a Dockerfile on its own       dockerfiles.py
    context                                               a build context's files       buildcontext.py
    enter_rootless_if_needed                              a non-root build's namespace  session.py

Start-up stays lean: the CLI imports this package on every start, so each name is loaded from its module
on first use (`__getattr__`: `pybuild images` never loads the build's module), and every function imports
the heavy parts of pybuild when it runs. The names, for type checkers, are imported under TYPE_CHECKING
(tests/unit/test_api_package.py checks that both lists agree with each module's `__all__`).
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from pybuild.version import __version__

if TYPE_CHECKING:
    from pybuild.api.building import BuildRequest as BuildRequest
    from pybuild.api.building import BuildResult as BuildResult
    from pybuild.api.building import build as build
    from pybuild.api.buildcontext import ContextFile as ContextFile
    from pybuild.api.buildcontext import ContextRequest as ContextRequest
    from pybuild.api.buildcontext import ContextResult as ContextResult
    from pybuild.api.buildcontext import context as context
    from pybuild.api.buildcontext import display_path as display_path
    from pybuild.api.disk import DuRequest as DuRequest
    from pybuild.api.disk import DuResult as DuResult
    from pybuild.api.disk import PruneRequest as PruneRequest
    from pybuild.api.disk import PruneResult as PruneResult
    from pybuild.api.disk import du as du
    from pybuild.api.disk import human_size as human_size
    from pybuild.api.disk import parse_size as parse_size
    from pybuild.api.disk import prune as prune
    from pybuild.api.dockerfiles import CheckRequest as CheckRequest
    from pybuild.api.dockerfiles import CheckResult as CheckResult
    from pybuild.api.dockerfiles import ParseRequest as ParseRequest
    from pybuild.api.dockerfiles import ParseResult as ParseResult
    from pybuild.api.dockerfiles import check as check
    from pybuild.api.dockerfiles import parse as parse
    from pybuild.api.archives import ImportRequest as ImportRequest
    from pybuild.api.archives import ImportResult as ImportResult
    from pybuild.api.archives import LoadRequest as LoadRequest
    from pybuild.api.archives import LoadResult as LoadResult
    from pybuild.api.archives import LoadedImage as LoadedImage
    from pybuild.api.archives import SaveRequest as SaveRequest
    from pybuild.api.archives import import_image as import_image
    from pybuild.api.archives import load as load
    from pybuild.api.archives import save as save
    from pybuild.api.inspecting import HistoryEntry as HistoryEntry
    from pybuild.api.inspecting import HistoryRequest as HistoryRequest
    from pybuild.api.inspecting import HistoryResult as HistoryResult
    from pybuild.api.inspecting import InspectRequest as InspectRequest
    from pybuild.api.inspecting import InspectResult as InspectResult
    from pybuild.api.inspecting import history as history
    from pybuild.api.inspecting import inspect as inspect
    from pybuild.api.listing import ImagesRequest as ImagesRequest
    from pybuild.api.listing import ImagesResult as ImagesResult
    from pybuild.api.listing import images as images
    from pybuild.api.naming import RmiItem as RmiItem
    from pybuild.api.naming import RmiRequest as RmiRequest
    from pybuild.api.naming import RmiResult as RmiResult
    from pybuild.api.naming import TagRequest as TagRequest
    from pybuild.api.naming import rmi as rmi
    from pybuild.api.naming import tag as tag
    from pybuild.api.opening import Warn as Warn
    from pybuild.api.registry import LoginRequest as LoginRequest
    from pybuild.api.registry import LogoutRequest as LogoutRequest
    from pybuild.api.registry import LogoutResult as LogoutResult
    from pybuild.api.registry import PullRequest as PullRequest
    from pybuild.api.registry import PullResult as PullResult
    from pybuild.api.registry import PushRequest as PushRequest
    from pybuild.api.registry import PushResult as PushResult
    from pybuild.api.registry import allow_insecure_registries as allow_insecure_registries
    from pybuild.api.registry import login as login
    from pybuild.api.registry import logout as logout
    from pybuild.api.registry import pull as pull
    from pybuild.api.registry import push as push
    from pybuild.api.session import enter_rootless_if_needed as enter_rootless_if_needed

    # records of the packages behind the api, as results carry them (for annotations only)
    from pybuild.source import Diagnostic as Diagnostic
    from pybuild.source import SourceFile as SourceFile
    from pybuild.source import Span as Span
    from pybuild.store.images import ImageSummary as ImageSummary
    from pybuild.store.store import KindUsage as KindUsage
    from pybuild.store.store import Problem as Problem
    from pybuild.store.store import Usage as Usage

# each module's public names (its `__all__`)
HOMES: dict[str, frozenset[str]] = {
    "archives": frozenset({"ImportRequest", "ImportResult", "LoadRequest", "LoadResult", "LoadedImage",
                           "SaveRequest", "import_image", "load", "save"}),
    "buildcontext": frozenset({"ContextFile", "ContextRequest", "ContextResult", "context", "display_path"}),
    "building": frozenset({"BuildRequest", "BuildResult", "build"}),
    "disk": frozenset({"DuRequest", "DuResult", "PruneRequest", "PruneResult", "du", "human_size",
                       "parse_size", "prune"}),
    "dockerfiles": frozenset({"CheckRequest", "CheckResult", "ParseRequest", "ParseResult", "check",
                              "parse"}),
    "inspecting": frozenset({"HistoryEntry", "HistoryRequest", "HistoryResult", "InspectRequest",
                             "InspectResult", "history", "inspect"}),
    "listing": frozenset({"ImagesRequest", "ImagesResult", "images"}),
    "naming": frozenset({"RmiItem", "RmiRequest", "RmiResult", "TagRequest", "rmi", "tag"}),
    "opening": frozenset({"Warn"}),
    "registry": frozenset({
        "LoginRequest", "LogoutRequest", "LogoutResult", "PullRequest", "PullResult", "PushRequest",
        "PushResult", "allow_insecure_registries", "login", "logout", "pull", "push"}),
    "session": frozenset({"enter_rootless_if_needed"}),
}

__all__ = ["__version__", *sorted(name for names in HOMES.values() for name in names)]


def __getattr__(name: str) -> object:
    """Load `name` from its module on first use (then it is a plain attribute of the package)."""
    home = next((module for module, names in HOMES.items() if name in names), None)
    if home is None:
        raise AttributeError(f"module 'pybuild.api' has no attribute {name!r}")
    value: object = getattr(_module(home), name)
    globals()[name] = value
    return value


def _module(home: str) -> ModuleType:
    """The submodule `home`, imported by name (each a plain import statement, for the import-rule test)."""
    if home == "building":
        from pybuild.api import building

        return building
    if home == "buildcontext":
        from pybuild.api import buildcontext

        return buildcontext
    if home == "disk":
        from pybuild.api import disk

        return disk
    if home == "dockerfiles":
        from pybuild.api import dockerfiles

        return dockerfiles
    if home == "archives":
        from pybuild.api import archives

        return archives
    if home == "listing":
        from pybuild.api import listing

        return listing
    if home == "inspecting":
        from pybuild.api import inspecting

        return inspecting
    if home == "naming":
        from pybuild.api import naming

        return naming
    if home == "registry":
        from pybuild.api import registry

        return registry
    if home == "session":
        from pybuild.api import session

        return session
    from pybuild.api import opening

    return opening
