"""A cached no-op rebuild imports no heavy module: no graph library (networkx is not a dependency; the plan's
graph analysis, `plan/graph.py`, is standard library and off the build's path), no parser generator, no
HTTP client, no terminal renderer. Checked in a fresh interpreter running the second build."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BUILD = """
import json, sys
from pybuild.api import BuildRequest, build

class Sink:
    def emit(self, event: object) -> None:
        pass

result = build(BuildRequest(context=sys.argv[1], store_root=sys.argv[2]), Sink())
heavy = ("networkx", "lark", "httpx", "rich")
print(json.dumps({"run": result.steps_run, "cached": result.steps_cached,
                  "heavy": sorted(m for m in sys.modules if m.split(".")[0] in heavy)}))
"""


def build(ctx: Path, root: Path) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", BUILD, str(ctx), str(root)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return result


def test_a_cached_rebuild_imports_no_heavy_module(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /a.txt\nCOPY b.txt /b.txt\n")
    (ctx / "a.txt").write_text("a\n")
    (ctx / "b.txt").write_text("b\n")
    first = build(ctx, tmp_path / "store")
    assert first["run"] == 2
    again = build(ctx, tmp_path / "store")
    assert again == {"run": 0, "cached": 2, "heavy": []}
