"""ARG/ENV scoping and platform args of the planner (pybuild.plan.convert)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from pybuild.dockerfile.instructions import to_stages
from pybuild.dockerfile.parser import parse
from pybuild.errors import DockerfileError
from pybuild.image.config import ContainerConfig, ImageConfig
from pybuild.image.spec import Platform
from pybuild.plan.convert import convert
from pybuild.plan.ops import ExecOp, ImageSourceOp, Plan

TARGET = Platform("linux", "arm64")
BUILD = Platform("linux", "amd64")


def plan(text: str, build_args: Mapping[str, str] | None = None, target: str | None = None,
         configs: Mapping[str, ImageConfig] | None = None) -> Plan:
    return convert(to_stages(parse(text)), build_args=build_args or {}, target=target, platform=TARGET,
                   base_configs=(configs or {}).get, build_platform=BUILD)


def env_of(p: Plan) -> dict[str, str]:
    return dict(entry.partition("=")[::2] for entry in p.image.config.env)


def last_run(p: Plan) -> ExecOp:
    return [op for op in p.ops.values() if isinstance(op, ExecOp)][-1]


def image_refs(p: Plan) -> list[str]:
    return [op.ref for op in p.ops.values() if isinstance(op, ImageSourceOp)]


# (case, Dockerfile, build args, expected value of ENV R in the image)
ENV_CASES = [
    ("stage ARG default", "FROM scratch\nARG A=d\nENV R=$A\n", {}, "d"),
    ("build arg beats default", "FROM scratch\nARG A=d\nENV R=$A\n", {"A": "b"}, "b"),
    ("ARG without default takes build arg", "FROM scratch\nARG A\nENV R=x$A\n", {"A": "b"}, "xb"),
    ("ARG without default, no value", "FROM scratch\nARG A\nENV R=x$A\n", {}, "x"),
    ("global ARG invisible without redeclare", "ARG G=g\nFROM scratch\nENV R=x$G\n", {}, "x"),
    ("redeclared global ARG inherits value", "ARG G=g\nFROM scratch\nARG G\nENV R=$G\n", {}, "g"),
    ("redeclared global ARG takes build arg", "ARG G=g\nFROM scratch\nARG G\nENV R=$G\n", {"G": "b"}, "b"),
    ("redeclared with own default", "ARG G=g\nFROM scratch\nARG G=s\nENV R=$G\n", {}, "s"),
    ("ENV overrides ARG", "FROM scratch\nARG A=a\nENV A=e\nENV R=$A\n", {"A": "b"}, "e"),
    ("ENV before ARG still wins", "FROM scratch\nENV A=e\nARG A=a\nENV R=$A\n", {}, "e"),
    ("ENV sees old value", "FROM scratch\nENV A=1\nENV A=2 R=$A\n", {}, "1"),
    ("ARG default sees earlier ARG", "FROM scratch\nARG A=1\nARG B=${A}2\nENV R=$B\n", {}, "12"),
    ("ARG visible only in its stage", "FROM scratch AS a\nARG A=1\nFROM scratch\nENV R=x$A\n", {}, "x"),
    ("platform arg needs declaring", "FROM scratch\nENV R=x$TARGETARCH\n", {}, "x"),
    ("TARGETARCH declared", "FROM scratch\nARG TARGETARCH\nENV R=$TARGETARCH\n", {}, "arm64"),
    ("TARGETPLATFORM declared", "FROM scratch\nARG TARGETPLATFORM\nENV R=$TARGETPLATFORM\n", {}, "linux/arm64"),
    ("BUILDOS/BUILDARCH", "FROM scratch\nARG BUILDOS BUILDARCH\nENV R=$BUILDOS/$BUILDARCH\n", {},
     "linux/amd64"),
    ("TARGETVARIANT empty", "FROM scratch\nARG TARGETVARIANT\nENV R=x$TARGETVARIANT\n", {}, "x"),
]


@pytest.mark.parametrize(("text", "args", "expected"), [c[1:] for c in ENV_CASES],
                         ids=[c[0] for c in ENV_CASES])
def test_env_expansion(text: str, args: dict[str, str], expected: str) -> None:
    assert env_of(plan(text, args))["R"] == expected


# (case, Dockerfile, build args, expected base image ref)
FROM_CASES = [
    ("global default", "ARG BASE=alpine\nFROM $BASE\n", {}, "alpine"),
    ("global build arg", "ARG BASE=alpine\nFROM $BASE\n", {"BASE": "debian"}, "debian"),
    ("global default uses earlier", "ARG V=3\nARG BASE=alpine:$V\nFROM ${BASE}\n", {}, "alpine:3"),
    ("platform arg in FROM", "FROM img-$TARGETARCH\n", {}, "img-arm64"),
    ("stage ARG invisible to FROM", "ARG V=1\nFROM scratch\nARG W=2\nFROM img:$V$W\n", {}, "img:1"),
]


@pytest.mark.parametrize(("text", "args", "ref"), [c[1:] for c in FROM_CASES],
                         ids=[c[0] for c in FROM_CASES])
def test_from_expansion(text: str, args: dict[str, str], ref: str) -> None:
    assert image_refs(plan(text, args)) == [ref]


def test_from_platform_uses_build_platform() -> None:
    p = plan("FROM --platform=$BUILDPLATFORM alpine\nARG TARGETPLATFORM\nRUN echo\n")
    op = next(op for op in p.ops.values() if isinstance(op, ImageSourceOp))
    assert op.platform == "linux/amd64"
    assert last_run(p).platform == "linux/amd64"
    assert "TARGETPLATFORM=linux/arm64" in last_run(p).env
    assert p.image.architecture == "amd64"


def test_run_env_has_declared_args_under_env() -> None:
    op = last_run(plan("FROM scratch\nARG A=1\nENV E=2\nARG E=3\nRUN true\n"))
    assert op.env[1:] == ("E=2", "A=1")
    assert op.build_args == ("A",)
    assert any(entry.startswith("PATH=") for entry in op.env)
    assert op.args == ("/bin/sh", "-c", "true")


def test_run_text_is_not_expanded() -> None:
    assert last_run(plan("FROM scratch\nARG A=1\nRUN echo $A\n")).args[-1] == "echo $A"


def test_base_image_env_carries_in() -> None:
    base = ImageConfig(architecture="arm64", os="linux",
                       config=ContainerConfig(env=("PATH=/bin", "B=base"), user="app", working_dir="/srv"))
    p = plan("FROM base\nENV R=$B\nRUN x\n", configs={"base": base})
    assert env_of(p) == {"PATH": "/bin", "B": "base", "R": "base"}
    assert last_run(p).user == "app" and last_run(p).cwd == "/srv"


def test_proxy_args_are_passed_but_not_in_env() -> None:
    op = last_run(plan("FROM scratch\nRUN true\n", {"HTTP_PROXY": "http://p"}))
    assert op.proxy_env == ("HTTP_PROXY=http://p",)
    assert not any(entry.startswith("HTTP_PROXY") for entry in op.env)


def test_undefined_expansion_error_is_raised_in_needed_stage() -> None:
    with pytest.raises(DockerfileError):
        plan("FROM scratch\nENV R=${MISSING:?oops}\n")
