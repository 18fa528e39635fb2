"""`pybuild.api`'s parse, check and context functions called as a library."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import pybuild.api as api
from pybuild.errors import ConfigError, DockerfileError


def test_parse_from_bytes_and_from_a_file(tmp_path: Path) -> None:
    data = b"FROM busybox\nRUN echo hi\n"
    result = api.parse(api.ParseRequest(dockerfile="-", dockerfile_data=data))
    assert result.ast.source.name == "Dockerfile"
    assert result.dump().splitlines()[0].startswith("(from ")
    doc = result.to_json()
    assert isinstance(doc, (list, dict)) and doc
    (tmp_path / "Dockerfile.dev").write_bytes(data)
    named = api.parse(api.ParseRequest(dockerfile=str(tmp_path / "Dockerfile.dev")))
    assert named.ast.source.name == str(tmp_path / "Dockerfile.dev") and named.dump() == result.dump()


def test_parse_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        api.parse(api.ParseRequest(dockerfile=str(tmp_path)))
    with pytest.raises(ConfigError, match="cannot read Dockerfile"):
        api.parse(api.ParseRequest(dockerfile=str(tmp_path / "none")))
    with pytest.raises(DockerfileError, match="unknown instruction"):
        api.check(api.CheckRequest(dockerfile="-", dockerfile_data=b"FROM busybox\nRNU x\n"))


def test_check_counts_and_warnings(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM busybox AS base\nfrom base as Two\nRUN true\n")
    result = api.check(api.CheckRequest(context=str(tmp_path)))
    assert (result.stages, result.instructions, result.failed) == (2, 3, False)
    assert result.name == os.path.join(str(tmp_path), "Dockerfile")
    assert {w.rule for w in result.warnings} >= {"StageNameCasing"}
    strict = api.check(api.CheckRequest(dockerfile="-", dockerfile_data=b"# check=error=true\n"
                                                                        b"FROM busybox as Two\n"))
    assert strict.failed and strict.name == "Dockerfile"


def test_context_lists_what_a_build_sees(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("print(1)\n")
    (tmp_path / "secret.txt").write_text("x")
    (tmp_path / ".dockerignore").write_text("secret.txt\n")
    os.symlink("app.py", tmp_path / "link")
    result = api.context(api.ContextRequest(context=str(tmp_path)))
    assert [(f.path, f.kind) for f in result.files] == [(".dockerignore", "file"), ("app.py", "file"),
                                                         ("link", "symlink")]
    assert result.files[2].link_target == "app.py" and result.files[1].size == 9
    assert all(f.checksum.startswith("xxh3:") for f in result.files) and result.checksum.startswith("xxh3:")
    assert (result.root, result.patterns) == (str(tmp_path), 1)
    assert api.display_path("a\nb") == "a\\nb"
