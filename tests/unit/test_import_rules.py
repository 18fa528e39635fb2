"""The import rules of `pybuild/` (issue 17), checked on every import, function-level and TYPE_CHECKING ones
included (a lazy import is still a dependency):

- no cycle between modules;
- no `importlib.import_module` / `__import__` reaching a project module (a dependency a reader cannot see);
- `store` does not import `registry` (the store is given a fetcher, `store/remote.py`);
- nothing below `plan/` (worker, solve, ops, store, cache, export, registry) imports `dockerfile`;
- `cli` imports only `api`, `errors`, `progress` and `cli.*`.

The last two rules had allow-lists of offenders while the code moved; both are empty now, and the test
fails on a new offender (and on a listed one that no longer offends, should an entry be added back).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "pybuild"

BELOW_PLAN = ("worker", "solve", "ops", "store", "cache", "export", "registry")
CLI_MAY_IMPORT = ("api", "errors", "progress", "cli")

# (importer, imported) pairs allowed to break "nothing below plan/ imports dockerfile/": none any more (the
# worker reads the plan's MountSpec, and `--secret` values are split by `specparse`).
BELOW_PLAN_ALLOWED: frozenset[tuple[str, str]] = frozenset()

# (importer, imported) pairs that break "cli imports only api, errors, progress and cli.*": none any more
# (every command goes through `api`, issue 17 item 3).
CLI_ALLOWED: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    imported: str  # dotted module name (the longest prefix that is a module of the tree)
    line: int
    typing_only: bool  # under `if TYPE_CHECKING:`: an annotation's type, never imported at run time


@dataclass(frozen=True)
class DynamicImport:
    importer: str
    line: int
    what: str


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name → file of every module under `root` (a package is its `__init__`)."""
    package = root.name
    names: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join([package, *parts])] = path
    return names


def _resolve(target: str, modules: dict[str, Path]) -> str | None:
    """The module `target` names (or the module holding it, for `from pkg.mod import name`)."""
    while target:
        if target in modules:
            return target
        target = target.rpartition(".")[0]
    return None


def _typing_only(tree: ast.Module) -> set[int]:
    """ids of the import statements under `if TYPE_CHECKING:` (never run)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            found.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return found


def _imported_names(tree: ast.Module, module: str, is_package: bool) -> Iterator[tuple[str, int, bool]]:
    """(dotted target, line, typing only) of every import statement, wherever it is."""
    base = module if is_package else module.rpartition(".")[0]
    typing_only = _typing_only(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, id(node) in typing_only
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")
                parent = ".".join(parts[:len(parts) - (node.level - 1)])
                prefix = f"{parent}.{node.module}" if node.module else parent
            else:
                prefix = node.module or ""
            for alias in node.names:
                # a submodule, or a name in `prefix`
                yield f"{prefix}.{alias.name}", node.lineno, id(node) in typing_only


def _dynamic(tree: ast.Module, module: str, package: str) -> Iterator[DynamicImport]:
    """Calls of `import_module` / `__import__` (any spelling) and any use of `importlib` whose argument
    is not a plain string outside the project."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name not in ("import_module", "__import__", "find_spec", "spec_from_file_location"):
            continue
        arg = node.args[0] if node.args else None
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str) \
                and not (arg.value == package or arg.value.startswith((package + ".", "."))):
            continue  # a third-party module by its literal name
        yield DynamicImport(module, node.lineno, ast.unparse(node))


@dataclass(frozen=True)
class Graph:
    imports: tuple[Import, ...]
    dynamic: tuple[DynamicImport, ...]


def scan(root: Path) -> Graph:
    modules = module_names(root)
    imports: list[Import] = []
    dynamic: list[DynamicImport] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for name, line, typing_only in _imported_names(tree, module, path.name == "__init__.py"):
            target = _resolve(name, modules)
            if target is not None and target != module:
                imports.append(Import(module, target, line, typing_only))
        dynamic.extend(_dynamic(tree, module, root.name))
    return Graph(tuple(imports), tuple(dynamic))


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted. Imports run at
    any time count (module-level or in a function); those under `if TYPE_CHECKING:` do not: they name the
    type of a parameter (a `Store` passed in) and are never executed."""
    edges: dict[str, set[str]] = {}
    for imp in graph.imports:
        if imp.typing_only:
            edges.setdefault(imp.importer, set())
            continue
        edges.setdefault(imp.importer, set()).add(imp.imported)
        edges.setdefault(imp.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _package(module: str) -> str:
    """`pybuild.store.remote` → `store`; a top-level module is its own package (`pybuild.api` → `api`)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def below_plan_offences(graph: Graph) -> set[tuple[str, str]]:
    return {(i.importer, i.imported) for i in graph.imports
            if _package(i.importer) in BELOW_PLAN and _package(i.imported) == "dockerfile"}


def store_offences(graph: Graph) -> set[tuple[str, str]]:
    return {(i.importer, i.imported) for i in graph.imports
            if _package(i.importer) == "store" and _package(i.imported) == "registry"}


def cli_offences(graph: Graph) -> set[tuple[str, str]]:
    return {(i.importer, i.imported) for i in graph.imports
            if _package(i.importer) == "cli" and _package(i.imported) not in CLI_MAY_IMPORT}


def _check_allowed(found: set[tuple[str, str]], allowed: frozenset[tuple[str, str]], rule: str) -> None:
    new = sorted(found - allowed)
    fixed = sorted(allowed - found)
    assert not new, f"{rule}: new offenders {new}"
    assert not fixed, f"{rule}: no longer offending, remove from the allow-list: {fixed}"


@pytest.fixture(scope="module")
def graph() -> Graph:
    return scan(ROOT)


def test_the_scan_sees_lazy_imports(graph: Graph) -> None:
    assert graph.imports and any(i.importer == "pybuild.api" for i in graph.imports)


def test_no_cycles(graph: Graph) -> None:
    assert cycles(graph) == []


def test_no_dynamic_imports_of_project_modules(graph: Graph) -> None:
    assert list(graph.dynamic) == []


def test_store_does_not_import_registry(graph: Graph) -> None:
    assert store_offences(graph) == set()


def test_nothing_below_plan_imports_dockerfile(graph: Graph) -> None:
    _check_allowed(below_plan_offences(graph), BELOW_PLAN_ALLOWED, "below plan/ importing dockerfile/")


def test_cli_imports_only_the_front_door(graph: Graph) -> None:
    _check_allowed(cli_offences(graph), CLI_ALLOWED, "cli importing beyond api/errors/progress/cli")


# the checker itself, on a tiny fake tree with seeded violations


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pybuild"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_checker_finds_a_cycle_through_a_lazy_relative_import(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "__init__.py": "",
        "cache/__init__.py": "",
        "cache/a.py": "from pybuild.cache import b\n",
        "cache/b.py": "def f() -> None:\n    from .c import g\n",
        "cache/c.py": "from . import a\n",
        "cache/d.py": "from typing import TYPE_CHECKING\nfrom .a import x\nif TYPE_CHECKING:\n    from . import b\n",
    })
    assert cycles(scan(root)) == [["pybuild.cache.a", "pybuild.cache.b", "pybuild.cache.c"]]


def test_checker_finds_dynamic_imports_of_project_modules(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "__init__.py": "",
        "a.py": "import importlib\nm = importlib.import_module('pybuild.b')\nn = importlib.import_module('json')\n",
        "b.py": "def f(name: str) -> object:\n    return __import__(name)\n",
    })
    found = scan(root).dynamic
    assert [(d.importer, d.line) for d in found] == [("pybuild.a", 2), ("pybuild.b", 2)]


def test_checker_finds_layering_offences(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "__init__.py": "",
        "api.py": "",
        "errors.py": "",
        "store/__init__.py": "",
        "store/remote.py": "def f() -> None:\n    from pybuild.registry.client import x\n",
        "registry/__init__.py": "",
        "registry/client.py": "",
        "dockerfile/__init__.py": "",
        "dockerfile/mounts.py": "",
        "worker/__init__.py": "",
        "worker/dispatch.py": "from ..dockerfile.mounts import Mount\n",
        "cli/__init__.py": "",
        "cli/main.py": "from pybuild import api, errors\nfrom pybuild.cli import render\nimport pybuild.store.remote\n",
        "cli/render.py": "",
    })
    graph = scan(root)
    assert store_offences(graph) == {("pybuild.store.remote", "pybuild.registry.client")}
    assert below_plan_offences(graph) == {("pybuild.worker.dispatch", "pybuild.dockerfile.mounts")}
    assert cli_offences(graph) == {("pybuild.cli.main", "pybuild.store.remote")}
    with pytest.raises(AssertionError, match="new offenders"):
        _check_allowed(cli_offences(graph), frozenset(), "cli")
    with pytest.raises(AssertionError, match="no longer offending"):
        _check_allowed(cli_offences(graph), frozenset({*cli_offences(graph), ("pybuild.cli.x", "pybuild.y")}),
                       "cli")
