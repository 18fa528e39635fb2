"""Plans from small Dockerfiles: ops, pruning, config, history, warnings, digests (pybuild.plan)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from pybuild.dockerfile.instructions import to_stages
from pybuild.dockerfile.parser import parse
from pybuild.errors import DockerfileError
from pybuild.image.config import ContainerConfig, History, ImageConfig
from pybuild.image.spec import Platform
from pybuild.plan import graph
from pybuild.plan.convert import convert
from pybuild.plan.convert_config import DEFAULT_PATH, go_duration
from pybuild.plan.ops import ExecOp, FileOp, ImageSourceOp, Plan

PLATFORM = Platform("linux", "amd64")


def plan(text: str, build_args: Mapping[str, str] | None = None, target: str | None = None,
         configs: Mapping[str, ImageConfig] | None = None, epoch: int | None = None) -> Plan:
    return convert(to_stages(parse(text)), build_args=build_args or {}, target=target, platform=PLATFORM,
                   base_configs=(configs or {}).get, build_platform=PLATFORM, epoch=epoch)


def history(p: Plan) -> list[tuple[str, bool]]:
    return [(h.created_by, h.empty_layer) for h in p.image.history]


MULTI = """\
FROM alpine AS build
ARG VERSION=1
RUN make VERSION=$VERSION
FROM ${BROKEN:?unset} AS broken
RUN false
FROM scratch AS final
COPY --from=build /out /bin/app
"""


def test_copy_from_stage_depends_on_its_result() -> None:
    p = plan(MULTI, target="final")
    copy = p.ops[p.target]
    assert isinstance(copy, FileOp) and copy.source is not None
    assert copy.source.input == p.stages["build"]
    assert isinstance(p.ops[p.stages["build"]], ExecOp)
    assert set(p.stages) == {"build", "final"}


def test_target_pruning_skips_broken_unused_stage() -> None:
    p = plan(MULTI)  # last stage; `broken` would fail to expand its FROM
    assert "broken" not in p.stages
    assert not any(isinstance(op, ExecOp) and op.args[-1] == "false" for op in p.ops.values())
    with pytest.raises(DockerfileError, match="unset"):
        plan(MULTI, target="broken")


def test_target_only_plans_its_chain() -> None:
    p = plan(MULTI, target="build")
    assert set(p.stages) == {"build"}
    assert [op.ref for op in p.ops.values() if isinstance(op, ImageSourceOp)] == ["alpine"]


def test_unknown_target() -> None:
    with pytest.raises(DockerfileError, match='target stage "nope" could not be found'):
        plan(MULTI, target="nope")


def test_copy_from_index_image_and_mount_from() -> None:
    p = plan("FROM alpine\nRUN a\nFROM scratch\nCOPY --from=0 /a /a\nCOPY --from=busybox /bin/sh /sh\n"
             "RUN --mount=from=0,target=/m cat /m/a\n")
    refs = [op.ref for op in p.ops.values() if isinstance(op, ImageSourceOp)]
    assert refs == ["alpine", "busybox"]
    run = p.ops[p.target]
    assert isinstance(run, ExecOp) and run.mounts[0].input == p.stages["0"]


def test_from_stage_chain_and_circular_copy() -> None:
    p = plan("FROM alpine AS a\nENV X=1\nFROM a AS b\nRUN echo\n")
    assert p.image.config.env == (f"PATH={DEFAULT_PATH}", "X=1")
    with pytest.raises(DockerfileError, match="circular"):
        plan("FROM alpine AS a\nCOPY --from=b / /\nFROM alpine AS b\nCOPY --from=a / /\n")


@pytest.mark.parametrize(("args", "warning"), [
    ({"FOO": "1"}, "[Warning] One or more build-args [FOO] were not consumed"),
    ({"FOO": "1", "BAR": "2"}, "[Warning] One or more build-args [BAR FOO] were not consumed"),
    ({"VERSION": "2"}, None),
    ({"HTTP_PROXY": "x", "no_proxy": "y"}, None),
    ({"BROKEN": "x"}, "[Warning] One or more build-args [BROKEN] were not consumed"),
])
def test_unused_build_arg_warning(args: dict[str, str], warning: str | None) -> None:
    assert plan(MULTI, args).warnings == ((warning,) if warning else ())


DIGEST_CASES = [
    ("unused build arg", {"FOO": "1"}, False),
    ("proxy arg", {"HTTP_PROXY": "http://proxy", "all_proxy": "socks://p"}, False),
    ("used build arg", {"VERSION": "2"}, True),
]


@pytest.mark.parametrize(("args", "changes"), [c[1:] for c in DIGEST_CASES],
                         ids=[c[0] for c in DIGEST_CASES])
def test_digests(args: dict[str, str], changes: bool) -> None:
    base = plan(MULTI)
    other = plan(MULTI, args)
    assert (set(base.ops) != set(other.ops)) is changes
    assert (base.target != other.target) is changes


def test_same_input_same_json() -> None:
    assert plan(MULTI, {"FOO": "1"}).to_json() == plan(MULTI, {"FOO": "1"}).to_json()


def test_spans_do_not_change_digests_and_are_merged() -> None:
    p = plan("FROM alpine AS a\nFROM alpine\nCOPY --from=a /x /x\n")
    (op,) = [op for op in p.ops.values() if isinstance(op, ImageSourceOp)]
    assert [s.line for s in op.spans] == [1, 2]
    assert plan("\n\nFROM alpine\n").target == plan("FROM alpine\n").target


def test_graph_edges_follow_inputs() -> None:
    p = plan(MULTI)
    assert set(graph.inputs(p)) == set(graph.users(p)) == set(p.ops)
    assert p.stages["build"] in graph.inputs(p)[p.target] and p.target in graph.users(p)[p.stages["build"]]


CONFIG = """\
FROM base
ARG PORT=8080
ENV APP=/srv/app
WORKDIR $APP
USER ${APP#/srv/}
LABEL a=1 "b c"=2
EXPOSE $PORT 53/udp 7000-7001
VOLUME ["/data", "$APP/cache"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s CMD curl -f localhost
SHELL ["/bin/bash", "-c"]
ONBUILD RUN echo child
CMD ["serve"]
ENTRYPOINT ["/entry"]
"""


def test_config_fields() -> None:
    base = ImageConfig(architecture="amd64", os="linux", config=ContainerConfig(cmd=("base-cmd",)))
    cfg = plan(CONFIG, configs={"base": base}).image.config
    assert cfg.env == (f"PATH={DEFAULT_PATH}", "APP=/srv/app")
    assert cfg.working_dir == "/srv/app"
    assert cfg.user == "app"
    assert dict(cfg.labels) == {"a": "1", "b c": "2"}
    assert cfg.exposed_ports == ("53/udp", "7000/tcp", "7001/tcp", "8080/tcp")
    assert cfg.volumes == ("/data", "/srv/app/cache")
    assert cfg.stop_signal == "SIGTERM"
    assert cfg.healthcheck is not None and cfg.healthcheck.test == ("CMD-SHELL", "curl -f localhost")
    assert cfg.healthcheck.interval == 5_000_000_000
    assert cfg.shell == ("/bin/bash", "-c")
    assert cfg.on_build == ("RUN echo child",)
    assert cfg.entrypoint == ("/entry",)
    assert cfg.cmd == ("serve",)  # CMD set in this stage survives ENTRYPOINT


@pytest.mark.parametrize(("text", "cmd", "entrypoint"), [
    ("FROM base\nENTRYPOINT [\"/e\"]\n", (), ("/e",)),
    ("FROM base\nENTRYPOINT /e\n", (), ("/bin/sh", "-c", "/e")),
    ("FROM base\nCMD x\n", ("/bin/sh", "-c", "x"), ("/base-entry",)),
    ("FROM base\nENTRYPOINT [\"/e\"]\nCMD [\"c\"]\n", ("c",), ("/e",)),
    ("FROM base\nENTRYPOINT []\n", (), ()),
])
def test_entrypoint_resets_inherited_cmd(text: str, cmd: tuple[str, ...],
                                        entrypoint: tuple[str, ...]) -> None:
    base = ImageConfig(architecture="amd64", os="linux",
                       config=ContainerConfig(cmd=("base-cmd",), entrypoint=("/base-entry",)))
    cfg = plan(text, configs={"base": base}).image.config
    assert (cfg.cmd, cfg.entrypoint) == (cmd, entrypoint)


def test_history_entries() -> None:
    base = ImageConfig(architecture="amd64", os="linux", history=(History(created_by="base layer"),))
    p = plan("FROM base\nARG V=1\nENV A=b\nWORKDIR /w\nRUN make\nCOPY a b ./\nCMD [\"x\"]\n",
             configs={"base": base})
    assert history(p) == [
        ("base layer", False),
        ("ARG V=1", True),
        ("ENV A=b", True),
        ("WORKDIR /w", False),
        ("RUN |1 V=1 /bin/sh -c make # buildkit", False),
        ("COPY a b ./ # buildkit", False),
        ('CMD ["x"]', True),
    ]
    assert len(p.layers) == 3 and p.layers[-1] == p.target


def test_metadata_history_is_worded_like_buildkit() -> None:
    p = plan(CONFIG, configs={"base": ImageConfig(architecture="amd64", os="linux")})
    entries = [text for text, _ in history(p)]
    assert "EXPOSE [8080/tcp 53/udp 7000-7001/tcp]" in entries
    assert ("HEALTHCHECK {Test:[CMD-SHELL curl -f localhost] Interval:5s Timeout:0s StartPeriod:0s "
            "StartInterval:0s Retries:0}") in entries
    assert "SHELL [/bin/bash -c]" in entries
    assert not any(text.startswith("ONBUILD") for text in entries)  # BuildKit records no ONBUILD step
    assert plan("FROM scratch\nEXPOSE 80 443/TCP 80/tcp 80-81\n").image.history[-1].created_by == (
        "EXPOSE [443/tcp 80/tcp 80-81/tcp 80/tcp]")  # the parser sorts the words, as BuildKit's does


def test_healthcheck_history_has_every_field() -> None:
    p = plan("FROM scratch\nHEALTHCHECK --interval=1m30s --timeout=1.5s --start-period=500ms "
             "--start-interval=2s --retries=65 CMD [\"/bin/check\", \"a b\"]\n")
    assert p.image.history[-1].created_by == (
        "HEALTHCHECK {Test:[CMD /bin/check a b] Interval:1m30s Timeout:1.5s StartPeriod:500ms "
        "StartInterval:2s Retries:65}")


def test_path_is_set_in_the_config() -> None:
    bare = ImageConfig(architecture="amd64", os="linux", config=ContainerConfig(env=("A=1",)))
    own = ImageConfig(architecture="amd64", os="linux", config=ContainerConfig(env=("PATH=/opt/bin", "A=1")))
    assert plan("FROM bare\nENV B=2\n", configs={"bare": bare}).image.config.env == (
        "A=1", f"PATH={DEFAULT_PATH}", "B=2")
    assert plan("FROM own\nENV PATH=/x:$PATH\n", configs={"own": own}).image.config.env == (
        "PATH=/x:/opt/bin", "A=1")
    assert plan("FROM unknown\n").image.config.env == (f"PATH={DEFAULT_PATH}",)
    windows = convert(to_stages(parse("FROM win\nENV A=1\n")), build_args={}, target=None,
                      platform=Platform("windows", "amd64"), base_configs=lambda _ref: None,
                      build_platform=Platform("windows", "amd64"))
    assert windows.image.config.env == ("A=1",)  # BuildKit leaves PATH to Windows


@pytest.mark.parametrize(("text", "escaped"), [
    ('FROM base\nCMD ["x"]\n', True),
    ("FROM base\nCMD x\n", True),
    ('FROM base\nENTRYPOINT ["/e"]\n', False),
    ('FROM base AS a\nCMD ["x"]\nFROM a\nENTRYPOINT ["/e"]\n', True),
    ("FROM escaped\nENV A=1\n", True),
])
def test_cmd_sets_args_escaped(text: str, escaped: bool) -> None:
    escaped_base = ImageConfig(architecture="amd64", os="linux", config=ContainerConfig(args_escaped=True))
    configs = {"base": ImageConfig(architecture="amd64", os="linux"), "escaped": escaped_base}
    cfg = plan(text, configs=configs).image.config
    assert cfg.args_escaped is escaped
    assert cfg.to_dict().get("ArgsEscaped") is (True if escaped else None)


@pytest.mark.parametrize(("nanos", "text"), [
    (0, "0s"), (1, "1ns"), (999, "999ns"), (1_500, "1.5\u00b5s"), (1_000_000, "1ms"), (500_000_000, "500ms"),
    (1_000_000_000, "1s"), (1_500_000_000, "1.5s"), (90_000_000_000, "1m30s"), (300_000_000_000, "5m0s"),
    (3_600_000_000_000, "1h0m0s"), (7_384_500_000_000, "2h3m4.5s"), (-90_000_000_000, "-1m30s"),
])
def test_go_duration(nanos: int, text: str) -> None:
    assert go_duration(nanos) == text
