"""plan.graph: inputs and users of each op, the critical path of a build, and the DOT text of a plan."""

from __future__ import annotations

import subprocess
import sys

from pybuild.dockerfile.instructions import to_stages
from pybuild.dockerfile.parser import parse
from pybuild.plan import graph
from pybuild.image.spec import Platform
from pybuild.plan.convert import convert
from pybuild.plan.ops import Plan

PLATFORM = Platform("linux", "amd64")

DOCKERFILE = """\
FROM alpine AS tools
RUN make-tools
FROM alpine AS deps
RUN fetch-deps
FROM alpine
COPY --from=tools /t /t
COPY --from=deps /d /d
RUN build
"""


def make_plan() -> Plan:
    return convert(to_stages(parse(DOCKERFILE)), build_args={}, target=None, platform=PLATFORM,
                   base_configs=lambda ref: None, build_platform=PLATFORM, epoch=None)


def run_ops(plan: Plan) -> dict[str, str]:
    """The RUN ops by their command's last word."""
    found = {}
    for digest, op in plan.ops.items():
        args = getattr(op, "args", None)
        if args:
            found[args[-1].split()[-1]] = digest
    return found


def test_inputs_and_users_are_the_same_edges() -> None:
    plan = make_plan()
    ins, outs = graph.inputs(plan), graph.users(plan)
    assert set(ins) == set(outs) == set(plan.ops)
    assert {(a, b) for b, sources in ins.items() for a in sources} == \
        {(a, b) for a, targets in outs.items() for b in targets}
    assert outs[plan.target] == ()


def test_critical_path_follows_the_slow_branch() -> None:
    plan = make_plan()
    runs = run_ops(plan)
    slow = graph.critical_path(plan, {runs["make-tools"]: 5.0, runs["fetch-deps"]: 1.0, runs["build"]: 2.0})
    assert slow.seconds == 7.0
    assert slow.ops[-1] == runs["build"] and runs["make-tools"] in slow.ops and runs["fetch-deps"] not in slow.ops
    ins = graph.inputs(plan)
    assert all(before in ins[after] for before, after in zip(slow.ops, slow.ops[1:], strict=False))
    other = graph.critical_path(plan, {runs["make-tools"]: 1.0, runs["fetch-deps"]: 5.0, runs["build"]: 2.0})
    assert runs["fetch-deps"] in other.ops and runs["make-tools"] not in other.ops
    assert graph.critical_path(plan, {}).seconds == 0.0


def test_dot_has_every_op_and_edge() -> None:
    plan = make_plan()
    dot = graph.to_dot(plan)
    assert dot.startswith("digraph plan {\n") and dot.endswith("}\n")
    for digest in plan.ops:
        assert f'"{digest}" [label=' in dot
    edges = sum(len(dict.fromkeys(sources)) for sources in graph.inputs(plan).values())
    assert dot.count(" -> ") == edges
    assert f'"{plan.target}" [label="Exec ' in dot and "style=bold" in dot
    quoted = graph.to_dot(plan, lambda digest, op: 'say "hi"\\n')
    assert 'label="say \\"hi\\"\\\\n"' in quoted


def test_nothing_imports_a_graph_library() -> None:
    code = ("import sys, pybuild.api, pybuild.plan.graph, pybuild.solve.scheduler; "
            "print(any(m == 'networkx' or m.startswith('networkx.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
