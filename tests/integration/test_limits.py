"""`--pids-limit`, `--memory`, `--ulimit` and `--shm-size` on RUN steps, end to end with runc and crun.

A RUN past a limit fails with a message that names the limit; the test's own process keeps working and
the container's cgroup (read from inside the RUN) is gone afterwards.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pybuild.worker.sandbox import missing_controllers
from tests.bases import need
from tests.integration.test_build import cli, make_context

pytestmark = pytest.mark.root


@pytest.fixture(params=["runc", "crun"])
def runtime(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    need(shutil.which(name) is not None, f"{name} not installed")
    return name


def cgroup_dirs(stderr: str, controller: str) -> list[str]:
    """The host directories of the RUN's cgroup for `controller`, from `cat /proc/self/cgroup` output."""
    out = []
    for match in re.finditer(r"^#\d+ [\d.]+ (\d+):([\w,=]*):(/\S+)$", stderr, re.MULTILINE):
        controllers, path = match.group(2).split(","), match.group(3)
        if controller in controllers:
            out.append(f"/sys/fs/cgroup/{controller}{path}")
        elif match.group(1) == "0":
            out.append(f"/sys/fs/cgroup{path}")
    return out


def run_output(stderr: str) -> list[str]:
    """The lines RUN steps printed (plain progress: `#2 0.051 text`)."""
    return re.findall(r"^#\d+ [\d.]+ (.*)$", stderr, re.MULTILINE)


def host_still_works() -> None:
    """This process can still fork and a child of it allocate 100 MiB (the limits were the RUN's only)."""
    child = subprocess.run([sys.executable, "-c", "x = bytearray(100 << 20); print(len(x))"],
                           capture_output=True, text=True, check=False)
    assert child.returncode == 0 and child.stdout.strip() == str(100 << 20)


def fails_under(root: str, tmp_path: Path, runtime: str, controller: str, run: str,
                flags: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Build `FROM busybox` + `RUN cat /proc/self/cgroup; <run>` under `flags`, which must fail it; then
    this process still works and the RUN's `controller` cgroup is gone. Returns the error lines and the
    lines the RUN printed."""
    need(not missing_controllers((controller,)), f"the {controller} cgroup controller is not available")
    ctx = make_context(tmp_path, f"FROM busybox:latest\nRUN cat /proc/self/cgroup; {run}\n")
    proc = cli(root, "build", "--progress=plain", *flags, "--runtime", runtime, str(ctx))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    host_still_works()
    dirs = cgroup_dirs(proc.stderr, controller)
    assert dirs and not any(os.path.exists(d) for d in dirs), dirs  # the RUN's cgroup is removed
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")], run_output(proc.stderr)


def test_fork_loop_past_the_pids_limit_fails_clearly(root: str, tmp_path: Path, runtime: str) -> None:
    fork_loop = "i=0; while [ $i -lt 200 ]; do sleep 60 & i=$((i+1)); done; echo all started"
    errors, output = fails_under(root, tmp_path, runtime, "pids", fork_loop, ("--pids-limit", "20"))
    assert len(errors) == 1 and "RUN failed: it reached the pids limit (20 processes)" in errors[0]
    assert "all started" not in output


def test_allocation_past_the_memory_limit_fails_clearly(root: str, tmp_path: Path, runtime: str) -> None:
    errors, output = fails_under(root, tmp_path, runtime, "memory",
                                 "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived ${#x}",
                                 ("--memory", "64m"))
    assert errors == ["error: Dockerfile:2:1: RUN was killed: out of memory (limit 64 MiB)"]
    assert not [line for line in output if "survived" in line]
    # the same step under a limit it fits in runs (the limit is what killed it)
    small = make_context(tmp_path, "FROM busybox:latest\nRUN x=$(head -c 1000000 /dev/zero | tr '\\0' a); "
                                   "echo survived ${#x}\n")
    ok = cli(root, "build", "--progress=plain", "--memory", "64m", "--runtime", runtime, str(small))
    assert ok.returncode == 0, ok.stderr
    assert "survived 1000000" in run_output(ok.stderr)


def test_ulimit_and_shm_size_are_seen_in_the_run(root: str, tmp_path: Path, runtime: str) -> None:
    ctx = make_context(tmp_path, "FROM busybox:latest\n"
                                 "RUN echo nofile=$(ulimit -n) hard=$(ulimit -Hn) core=$(ulimit -c); "
                                 "df -k /dev/shm | tail -1\n")
    proc = cli(root, "build", "--progress=plain", "--no-cache", "--runtime", runtime,
               "--ulimit", "nofile=100:100", "--ulimit", "core=0:-1", "--shm-size", "1m", str(ctx))
    assert proc.returncode == 0, proc.stderr
    assert "nofile=100 hard=100 core=0" in run_output(proc.stderr)
    shm = [line.split() for line in proc.stderr.splitlines() if line.endswith("/dev/shm")]
    assert shm and shm[0][3] == "1024"  # total KiB of the tmpfs
    default = cli(root, "build", "--progress=plain", "--no-cache", "--runtime", runtime, str(ctx))
    assert default.returncode == 0, default.stderr
    shm = [line.split() for line in default.stderr.splitlines() if line.endswith("/dev/shm")]
    assert shm and shm[0][3] == "65536"  # docker's 64 MiB


NR_OPEN = Path("/proc/sys/fs/nr_open").read_text().strip()


@pytest.mark.parametrize(("flags", "message"), [
    (("--ulimit", "nofile"), "error: --ulimit 'nofile': expected TYPE=SOFT[:HARD], e.g. nofile=1024:2048"),
    (("--ulimit", "fds=1"), "error: --ulimit 'fds=1': unknown type 'fds'"),
    (("--memory", "1k"), "error: --memory '1k': the minimum memory limit is 6 MiB (docker's)"),
    (("--shm-size", "big"), "error: --shm-size 'big': expected a size such as 64m, 512k or 1g"),
    (("--pids-limit", "-5"), "error: --pids-limit -5: expected a positive number (0 or -1: unlimited)"),
    (("--allow", "root.everything"), "error: --allow root.everything: unknown entitlement 'root.everything'"),
    (("--ulimit", "nofile=2000000000"),
     f"error: --ulimit nofile: the hard limit 2000000000 is above the kernel's fs.nr_open ({NR_OPEN})"),
])
def test_bad_limit_flags_are_one_line_errors(root: str, tmp_path: Path, flags: tuple[str, ...],
                                             message: str) -> None:
    ctx = make_context(tmp_path, "FROM busybox:latest\nRUN echo marker-ran\n")
    proc = cli(root, "build", "--progress=plain", *flags, str(ctx))
    assert proc.returncode == 1
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [message]
    assert not run_output(proc.stderr) and "Traceback" not in proc.stderr
