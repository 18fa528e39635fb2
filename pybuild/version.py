"""The version of pybuild, in a module of its own: the package `__init__` re-exports it, and modules the
API imports (the registry client's User-Agent, the plan memo's key) read it here, not through the package,
which would make them part of a cycle with `pybuild.api`."""

__version__ = "0.1.0"
