"""Hostile Dockerfiles and contexts through real builds (`pybuild` processes, runc or crun, overlayfs): bytes
that are not UTF-8 in a RUN line and a context file name build; a `--from` that fails names the stage as
written. Exit 0 or 1, never 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

PYBUILD = str(Path(sys.executable).with_name("pybuild"))


def build(root: str, context: Path, dockerfile: bytes, *extra: str) -> subprocess.CompletedProcess[str]:
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_bytes(dockerfile)
    env = {**os.environ, "PYBUILD_ROOT": root}
    return subprocess.run([PYBUILD, "build", "--progress=plain", *extra, str(context)], env=env,
                          capture_output=True, text=True, errors="replace", timeout=300, check=False)


def runtimes() -> list[str]:
    return [name for name in ("runc", "crun") if shutil.which(name)] or ["runc"]


@pytest.mark.parametrize("runtime", runtimes())
def test_run_with_invalid_utf8_builds_and_sees_u_fffd(root: str, tmp_path: Path, runtime: str) -> None:
    # BuildKit's runc executor writes the argv with Go's encoding/json: each bad byte is U+FFFD
    dockerfile = (b"FROM busybox\nRUN echo \xff\xfe > /x && [ \"$(od -An -tx1 /x)\" = "
                  b"\" ef bf bd ef bf bd 0a\" ]\nRUN [\"/bin/sh\", \"-c\", \"echo \xff > /y\"]\n")
    proc = build(root, tmp_path / "ctx", dockerfile, "--runtime", runtime)
    assert proc.returncode == 0, proc.stderr


def test_different_invalid_bytes_never_share_a_cache_key(root: str, tmp_path: Path) -> None:
    first = build(root, tmp_path / "one", b"FROM busybox\nRUN echo \xff > /x\n")
    assert first.returncode == 0 and "CACHED" not in first.stdout + first.stderr, first.stderr
    # the same step with another byte: both run `echo U+FFFD`, but a key follows the Dockerfile's bytes
    second = build(root, tmp_path / "two", b"FROM busybox\nRUN echo \xfe > /x\n")
    assert second.returncode == 0 and "CACHED" not in second.stdout + second.stderr, second.stderr
    again = build(root, tmp_path / "two", b"FROM busybox\nRUN echo \xfe > /x\n")
    assert again.returncode == 0 and "CACHED" in again.stdout + again.stderr, again.stderr


def test_copy_of_a_context_file_with_an_invalid_name_keeps_its_byte_name(root: str, tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / os.fsdecode(b"n\xff")).write_bytes(b"payload\n")
    (context / os.fsdecode(b"d\xfe")).mkdir()
    (context / os.fsdecode(b"d\xfe") / "f").write_bytes(b"inner\n")
    dockerfile = (b"FROM busybox\nCOPY . /c/\nCOPY n\xff /one/\n"
                  b"RUN [ \"$(cat \"/c/$(printf 'n\\377')\")\" = payload ] && "
                  b"[ \"$(cat \"/c/$(printf 'd\\376')/f\")\" = inner ] && "
                  b"[ \"$(cat \"/one/$(printf 'n\\377')\")\" = payload ]\n")
    proc = build(root, context, dockerfile, "-t", "names:1")
    assert proc.returncode == 0, proc.stderr
    again = build(root, context, dockerfile, "-t", "names:1")  # the keys of the byte names are stable
    assert again.returncode == 0 and again.stdout.count("CACHED") + again.stderr.count("CACHED") >= 3


@pytest.mark.parametrize(("dockerfile", "message"), [
    (b"FROM busybox AS a\nFROM busybox\nCOPY --from=a /nope /y\n", 'COPY source "/nope" not found in stage "a"'),
    (b"FROM busybox AS a\nRUN touch /q\nFROM busybox\nCOPY --from=a /nope /y\n",
     'COPY source "/nope" not found in stage "a"'),
    (b"FROM busybox AS a\nRUN touch /q\nFROM busybox\nCOPY --from=0 /nope /y\n",
     'COPY source "/nope" not found in stage "0"'),
    (b"FROM busybox AS s\nRUN touch /q\nFROM busybox\nRUN --mount=type=bind,from=s,source=/nope,target=/s true\n",
     "bind mount source /nope not found in 's'"),
])
def test_a_failing_from_names_the_stage_as_written(root: str, tmp_path: Path, dockerfile: bytes,
                                                   message: str) -> None:
    proc = build(root, tmp_path / "ctx", dockerfile)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors and message in errors[0], proc.stderr
    assert "sha256:" not in errors[0] and "internal error" not in proc.stderr
