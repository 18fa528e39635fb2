"""Hostile Dockerfiles through the real `pybuild` process: exit 0 or 1 with a one-line error naming the line,
never an internal error (exit 2). Each case needs no base image (`FROM scratch`), so no root either; the
builds that run steps are in tests/integration/test_build_hostile.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PYBUILD = str(Path(sys.executable).with_name("pybuild"))


def pybuild(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYBUILD_ROOT": str(tmp_path / "store")}
    return subprocess.run([PYBUILD, *args], capture_output=True, text=True, errors="replace", env=env,
                          timeout=120, check=False)


def build(tmp_path: Path, dockerfile: bytes, *extra: str) -> subprocess.CompletedProcess[str]:
    context = tmp_path / "context"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_bytes(dockerfile)
    return pybuild(tmp_path, "build", "--progress=plain", *extra, str(context))


def assert_user_error(proc: subprocess.CompletedProcess[str], line: int, message: str) -> None:
    assert proc.returncode == 1, proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.startswith(f"error: Dockerfile:{line}:"), proc.stderr
    assert message in first, first
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert "MemoryError" not in proc.stderr and "RecursionError" not in proc.stderr


def test_arg_expansion_bomb(tmp_path: Path) -> None:
    chain = b"".join(b"ARG a%d=$a%d$a%d\n" % (i, i - 1, i - 1) for i in range(1, 41))
    proc = build(tmp_path, b"FROM scratch\nARG a0=xx\n" + chain + b"LABEL x=$a40\n")
    assert_user_error(proc, 22, 'failed to process "$a19$a19": the expanded word is over 1 MiB larger')


def test_env_expansion_bomb_in_a_global_arg_and_from(tmp_path: Path) -> None:
    chain = b"".join(b"ARG a%d=${a%d}${a%d}\n" % (i, i - 1, i - 1) for i in range(1, 41))
    proc = build(tmp_path, b"ARG a0=xx\n" + chain + b"FROM scratch\n")
    assert_user_error(proc, 21, "over 1 MiB larger than written")
    chain = b"".join(b"ENV e%d=$e%d$e%d\n" % (i, i - 1, i - 1) for i in range(1, 41))
    proc = build(tmp_path, b"FROM scratch\nENV e0=xx\n" + chain)
    assert_user_error(proc, 22, "over 1 MiB larger than written")


def test_nested_onbuild(tmp_path: Path) -> None:
    dockerfile = b"FROM scratch\n" + b"ONBUILD " * 2000 + b"RUN x\n"
    proc = build(tmp_path, dockerfile)
    assert_user_error(proc, 2, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    (tmp_path / "Dockerfile").write_bytes(dockerfile)
    proc = pybuild(tmp_path, "check", "-f", str(tmp_path / "Dockerfile"), str(tmp_path))
    assert proc.returncode == 1 and "Chaining ONBUILD" in proc.stderr.splitlines()[0], proc.stderr


def test_invalid_utf8_in_labels_env_and_cmd_builds(tmp_path: Path) -> None:
    proc = build(tmp_path, b"FROM scratch\nARG V=\xfe\nLABEL a=\xff b=$V\nENV E=x\xff\nCMD echo \xff\n",
                 "-t", "bytes:1")
    assert proc.returncode == 0, proc.stderr
    inspected = pybuild(tmp_path, "inspect", "bytes:1")
    assert inspected.returncode == 0, inspected.stderr
    config = json.loads(inspected.stdout)["config"]["config"]
    assert config["Labels"] == {"a": "\ufffd", "b": "\ufffd"}  # Go's encoding/json: U+FFFD per bad byte
    assert "E=x\ufffd" in config["Env"] and config["Cmd"] == ["/bin/sh", "-c", "echo \ufffd"]


@pytest.mark.parametrize("line", [b"COPY a\x00b /x", b"WORKDIR /a\x00b"])
def test_nul_in_a_path(tmp_path: Path, line: bytes) -> None:
    proc = build(tmp_path, b"FROM scratch\n" + line + b"\n")
    assert_user_error(proc, 2, "a path cannot hold a NUL byte")
