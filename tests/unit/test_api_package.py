"""`pybuild.api` loads each name from its module on first use: its lists must agree with the modules."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pybuild.api as api

INIT = Path(api.__file__)


def test_homes_are_each_modules_all() -> None:
    for home, names in api.HOMES.items():
        module = importlib.import_module(f"pybuild.api.{home}")
        assert frozenset(getattr(module, "__all__", names)) == names, home
        for name in names:
            assert getattr(api, name) is getattr(module, name)


def test_type_checking_imports_match_homes() -> None:
    """The TYPE_CHECKING block re-exports exactly the names of HOMES, each from its home."""
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    block = next(node for node in tree.body
                 if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    imported = {(alias.asname, node.module) for node in block.body if isinstance(node, ast.ImportFrom)
                for alias in node.names if node.module and node.module.startswith("pybuild.api.")}
    assert imported == {(name, f"pybuild.api.{home}") for home, names in api.HOMES.items() for name in names}


def test_an_unknown_name_is_an_attribute_error() -> None:
    assert not hasattr(api, "no_such_command")


def test_a_command_loads_only_its_module() -> None:
    code = ("import sys; from pybuild.api import ImagesRequest, images; "
            "print(sorted(m for m in sys.modules if m.startswith('pybuild.api.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["['pybuild.api.listing',", "'pybuild.api.opening']"]
