"""Bytes that are not UTF-8 through the planner and the cache keys (BuildKit treats a Dockerfile as bytes):
a RUN line, a LABEL, a COPY source name, a build arg, a base image's values; `--from` names in the ops;
paths with a NUL byte."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from pybuild.cache.keys import cache_key, describe
from pybuild.context.context import open_context
from pybuild.digest import canonical_json
from pybuild.dockerfile.instructions import to_stages
from pybuild.dockerfile.parser import parse
from pybuild.errors import DockerfileError
from pybuild.image.config import ImageConfig
from pybuild.image.spec import Platform
from pybuild.ops import key_input
from pybuild.plan.convert import convert
from pybuild.plan.ops import ContextSourceOp, ExecOp, FileOp, Plan

PLATFORM = Platform("linux", "amd64")


def plan(data: bytes, build_args: Mapping[str, str] | None = None,
         configs: Mapping[str, ImageConfig] | None = None) -> Plan:
    return convert(to_stages(parse(data)), build_args=build_args or {}, target=None, platform=PLATFORM,
                   base_configs=(configs or {}).get, build_platform=PLATFORM)


def run_op(p: Plan) -> ExecOp:
    op = p.ops[p.target]
    assert isinstance(op, ExecOp)
    return op


def test_run_with_invalid_utf8_plans_and_keys_losslessly() -> None:
    one, other = plan(b"FROM scratch\nRUN echo \xff\n"), plan(b"FROM scratch\nRUN echo \xfe\n")
    assert run_op(one).args[-1].encode("utf-8", "surrogateescape") == b"echo \xff"
    assert one.target != other.target  # op digests differ
    keys = {cache_key(key_input(run_op(p), ("sha256:" + "0" * 64,))) for p in (one, other)}
    assert len(keys) == 2
    # the plan's own JSON dump keeps working (a str with the escapes)
    assert "echo" in one.to_json()


def test_invalid_utf8_in_image_json_is_u_fffd_as_buildkit_writes_it() -> None:
    p = plan(b"FROM scratch\nLABEL a=\xff\nENV E=x\xfe\nRUN echo \xff\nCMD echo \xff\n")
    config = json.loads(p.image.to_bytes().decode("utf-8"))
    assert config["config"]["Labels"] == {"a": "\ufffd"}
    assert "E=x\ufffd" in config["config"]["Env"]
    assert config["config"]["Cmd"] == ["/bin/sh", "-c", "echo \ufffd"]
    created = [entry["created_by"] for entry in config["history"]]
    assert "LABEL a=\ufffd" in created and "RUN /bin/sh -c echo \ufffd # buildkit" in created
    assert 'CMD ["/bin/sh" "-c" "echo \\xff"]' in created  # Go's %q of the bytes, as BuildKit's history


def test_copy_of_a_file_named_with_invalid_utf8(tmp_path: Path) -> None:
    name = b"n\xff"
    (tmp_path / "Dockerfile").write_bytes(b"FROM scratch\nCOPY n\xff /x\n")
    (tmp_path / name.decode("utf-8", "surrogateescape")).write_bytes(b"data")
    p = plan((tmp_path / "Dockerfile").read_bytes())
    copy = p.ops[p.target]
    assert isinstance(copy, FileOp) and copy.source is not None
    source = p.ops[copy.source.input]
    assert isinstance(source, ContextSourceOp) and source.includes == (name.decode("utf-8", "surrogateescape"),)
    from pybuild.ops.context import ContextSums

    content = ContextSums(open_context(str(tmp_path))).content(source.includes)
    assert ("n\udcff", content[-1][1]) == content[-1]
    item = key_input(copy, ("sha256:" + "0" * 64,), content=content)
    assert cache_key(item).startswith("sha256:")
    json.loads(canonical_json(describe(item)).decode("utf-8"))  # what the cache index stores


def test_build_args_and_base_values_with_invalid_bytes() -> None:
    base = ImageConfig.from_dict({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"},
                                  "config": {"Env": ["B=\ud800x", "C=\udcff"], "OnBuild": ["RUN echo \udcfe"]}})
    p = plan(b"FROM base\nARG A\nRUN echo $A $B\n", {"A": "\udcff"}, {"base": base})
    op = run_op(p)
    # a base image's lone surrogates come from JSON escapes: U+FFFD, as Go decodes them
    assert "B=\ufffdx" in op.env and "C=\ufffd" in op.env
    assert "A=\udcff" in op.env  # a build arg's stands for a byte that is not UTF-8 and stays one
    assert any("\ufffd" in arg for op in p.ops.values() if isinstance(op, ExecOp) for arg in op.args)
    assert cache_key(key_input(op, ("sha256:" + "0" * 64,))).startswith("sha256:")


def test_from_names_are_kept_for_messages_and_not_hashed() -> None:
    text = b"FROM busybox AS a\nRUN true\nFROM busybox\nCOPY --from=%s /x /y\nRUN --mount=from=%s,target=/m true\n"
    by_name, by_index = plan(text % (b"a", b"a")), plan(text % (b"0", b"0"))
    assert by_name.target == by_index.target  # one op whatever the spelling
    for p, written in ((by_name, "a"), (by_index, "0")):
        run = run_op(p)
        copy = p.ops[run.input]
        assert isinstance(copy, FileOp) and copy.source is not None
        assert copy.source.from_ref == written and run.mounts[0].from_ref == written
        assert "from_ref" not in json.dumps(run.definition())
        assert f'"from_ref": "{written}"' in p.to_json()


@pytest.mark.parametrize("line", [b"COPY a\x00b /x", b"COPY a /x\x00", b"WORKDIR /a\x00", b"ADD a\x00 /",
                                  b"RUN --mount=type=cache,target=/c\x00 true", b"COPY ${N} /x"])
def test_a_path_with_a_nul_byte_is_an_error_naming_it(line: bytes) -> None:
    with pytest.raises(DockerfileError, match="a path cannot hold a NUL byte") as info:
        plan(b"FROM scratch\nARG N\n" + line + b"\n", {"N": "n\x00"})
    assert info.value.span is not None and info.value.span.line == 3
    assert "\\x00" in str(info.value)


def test_a_path_longer_than_path_max_is_an_error() -> None:
    with pytest.raises(DockerfileError, match="longer than 4096 bytes"):
        plan(b"FROM scratch\nARG a=" + b"*" * 5000 + b"\nCOPY $a /x\n")
