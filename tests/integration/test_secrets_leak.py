"""Build secrets touch no file: a unique random value, given as a file secret and as an env secret, is
looked for in every regular file of the store, /dev/shm, /run and /tmp after a build that succeeds, after a
RUN that fails, while a RUN holding the secrets sleeps, after that build is killed with SIGKILL (its
container lives on), and after the next build (which reaps that container). Real `pybuild build`
processes, with runc and with crun.

The values reach pybuild through environment variables (`--secret id=...,env=VAR`), so no source file of
ours holds them; the RUNs check them by their sha256, so the Dockerfiles hold no value either.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from tests.bases import need
from tests.integration.test_build_crash import (
    BUILD_TIMEOUT,
    PYBUILD,
    READY,
    LiveBuild,
    build_argv,
    env_for,
    make_context,
    mounts_under,
    new_store,
)
from tests.secret_holder import left_by_a_killed_process

pytestmark = pytest.mark.root

SYSTEM_ROOTS = ("/dev/shm", "/run", "/tmp")
_CHUNK = 1 << 20


@pytest.fixture(params=["runc", "crun"])
def runtime(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    need(shutil.which(name) is not None, f"{name} not installed")
    return name


class Secrets:
    """Two fresh values in this process's environment, as `pybuild build` reads them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.file_value = "pbleak-file-" + secrets.token_hex(16)
        self.env_value = "pbleak-env-" + secrets.token_hex(16)
        monkeypatch.setenv("PBLEAK_FILE", self.file_value)
        monkeypatch.setenv("PBLEAK_ENV", self.env_value)
        self.flags = ("--secret", "id=ftok,env=PBLEAK_FILE", "--secret", "id=etok,env=PBLEAK_ENV")

    def run_line(self, then: str) -> str:
        """A RUN that mounts both secrets, checks each by its hash, then runs `then`."""
        fhash = hashlib.sha256(self.file_value.encode()).hexdigest()
        ehash = hashlib.sha256(self.env_value.encode()).hexdigest()
        return (f"RUN --mount=type=secret,id=ftok --mount=type=secret,id=etok,env=ETOK \\\n"
                f'    test "$(busybox sha256sum < /run/secrets/ftok)" = "{fhash}  -" && \\\n'
                f'    test "$(printf %s "$ETOK" | busybox sha256sum)" = "{ehash}  -" && {then}\n')

    def values(self) -> tuple[bytes, bytes]:
        return self.file_value.encode(), self.env_value.encode()


@pytest.fixture
def given(monkeypatch: pytest.MonkeyPatch) -> Secrets:
    return Secrets(monkeypatch)


@pytest.fixture
def root(tmp_path: Path, busybox_tar: Path, runtime: str) -> Iterator[str]:
    path = new_store(tmp_path / "store", busybox_tar)
    yield path
    state = state_root(path, runtime)
    for cid in listed(state, runtime):
        subprocess.run([runtime, "--root", state, "delete", "--force", cid], capture_output=True, check=False,
                       timeout=30)
    from pybuild.worker.snapshots import Snapshots

    Snapshots.open(path)  # unmounts what a failed test may have left


def state_root(root: str, runtime: str) -> str:
    from pybuild.worker.executor import state_root as private_root

    with mock.patch.dict(os.environ, {"PYBUILD_ROOT": root}):
        return private_root(runtime)


def listed(state: str, runtime: str) -> list[str]:
    if not os.path.isdir(state):
        return []
    out = subprocess.run([runtime, "--root", state, "list", "-q"], capture_output=True, text=True, check=True,
                         timeout=30).stdout
    return out.split()


# --- the search -----------------------------------------------------------------------------------------


def files_holding(needles: tuple[bytes, ...], store: str) -> list[str]:
    """Regular files that hold any needle: all of `store` (overlay mounts under it included), and /dev/shm,
    /run and /tmp without crossing into other filesystems (other tests' mounts). Symlinks, devices,
    sockets and FIFOs are not read, nor anything under /proc or /sys."""
    hits: list[str] = []
    for top, same_fs in [(store, False), *((path, True) for path in SYSTEM_ROOTS)]:
        if not os.path.isdir(top):
            continue
        device = os.stat(top).st_dev
        pending = [top]  # no recursion: other tests leave very deep trees in /tmp (a tar fuzzer)
        while pending:
            try:
                with os.scandir(pending.pop()) as listing:
                    entries = list(listing)
            except OSError:  # gone meanwhile, or a path too long
                continue
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if not same_fs or entry.stat(follow_symlinks=False).st_dev == device:
                            pending.append(entry.path)
                    elif entry.is_file(follow_symlinks=False) and _holds(entry.path, needles):
                        hits.append(entry.path)
                except OSError:
                    continue
    return sorted(set(hits))


def _holds(path: str, needles: tuple[bytes, ...]) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False  # gone meanwhile, a dangling or a magic link, or not ours to read
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        overlap = max(len(needle) for needle in needles) - 1
        tail = b""
        while chunk := os.read(fd, _CHUNK):
            data = tail + chunk
            if any(needle in data for needle in needles):
                return True
            tail = data[-overlap:]
        return False
    except OSError:
        return False
    finally:
        os.close(fd)


def assert_nowhere(given: Secrets, store: str, when: str) -> None:
    hits = files_holding(given.values(), store)
    assert hits == [], f"{when}: the secret value is in {hits}"


def test_the_search_finds_a_planted_value(given: Secrets, tmp_path: Path) -> None:
    """The search itself can fail: a value in a file under /tmp, in /dev/shm, or deep in the store."""
    store = tmp_path / "store"
    (store / "a" / "b").mkdir(parents=True)
    deep = store / "a" / "b" / "layer"
    deep.write_bytes(os.urandom(_CHUNK - 5) + given.values()[0] + b"tail")  # across a chunk boundary
    assert files_holding(given.values(), str(store)) == [str(deep)]
    shm = Path("/dev/shm") / f"pbleak-probe-{os.getpid()}"
    shm.write_bytes(b"x" + given.values()[1])
    try:
        assert files_holding(given.values(), str(store)) == sorted([str(deep), str(shm)])
    finally:
        shm.unlink()


# --- builds ---------------------------------------------------------------------------------------------


def build(root: str, ctx: Path, runtime: str, given: Secrets,
          *extra: str) -> subprocess.CompletedProcess[str]:
    argv = build_argv(ctx, "Dockerfile", "leak:1", ctx / "iid", "--runtime", runtime, *given.flags, *extra)
    return subprocess.run(argv, env=env_for(root, 0), text=True, capture_output=True, check=False,
                          timeout=BUILD_TIMEOUT)


def test_no_secret_in_any_file_after_a_build(root: str, tmp_path: Path, runtime: str, given: Secrets) -> None:
    dockerfile = "FROM busybox:latest\n" + given.run_line("echo checked > /checked") + "RUN cat /checked\n"
    ctx = make_context(tmp_path / "ctx", {"Dockerfile": dockerfile})
    done = build(root, ctx, runtime, given)
    assert done.returncode == 0, done.stderr
    assert_nowhere(given, root, "after a successful build")


def test_no_secret_in_any_file_after_a_failing_run(root: str, tmp_path: Path, runtime: str,
                                                   given: Secrets) -> None:
    ctx = make_context(tmp_path / "ctx", {"Dockerfile": "FROM busybox:latest\n" + given.run_line("exit 3")})
    failed = build(root, ctx, runtime, given)
    assert failed.returncode == 1, failed.stderr
    assert "exit code: 3" in failed.stderr  # the hashes matched: the secrets were there
    assert given.env_value not in failed.stderr and given.file_value not in failed.stderr
    assert_nowhere(given, root, "after a failing RUN")


def test_no_secret_in_any_file_while_running_after_kill_9_and_after_the_next_build(
    root: str, tmp_path: Path, runtime: str, given: Secrets
) -> None:
    dockerfile = ("FROM busybox:latest\nARG NAP=30\n"
                  + given.run_line('echo ready-"to"-sleep && sleep $NAP && echo after > /after'))
    ctx = make_context(tmp_path / "ctx", {"Dockerfile": dockerfile})
    argv = build_argv(ctx, "Dockerfile", "leak:1", ctx / "iid", "--runtime", runtime, *given.flags)
    live = LiveBuild(root, argv)
    try:
        live.wait_for(READY)  # the hashes matched: the RUN holds both secrets
        assert_nowhere(given, root, "while the RUN runs")
    finally:
        live.proc.kill()  # the pybuild process only: its runtime and container live on
        live.proc.wait(timeout=30)
    state = state_root(root, runtime)
    assert len(listed(state, runtime)) == 1, "the killed build's container should still be running"
    assert_nowhere(given, root, "after kill -9 of pybuild")

    again = build(root, ctx, runtime, given, "--build-arg", "NAP=0")
    assert again.returncode == 0, again.stderr
    assert listed(state, runtime) == []  # the next build reaped the killed one's container
    assert os.listdir(os.path.join(root, "run", "bundles")) == []
    assert mounts_under(root) == []
    assert_nowhere(given, root, "after the next build")


@pytest.mark.parametrize("command", ["build", "prune"])
def test_build_and_prune_sweep_a_killed_processs_secret_dir(root: str, tmp_path: Path, runtime: str,
                                                            given: Secrets, command: str) -> None:
    """Where secret files cannot live in a detached tmpfs, they are in a dir on /dev/shm: one left by a
    process killed with SIGKILL is removed by the next build, and by `pybuild prune`."""
    path = left_by_a_killed_process(given.file_value)
    if command == "build":
        ctx = make_context(tmp_path / "ctx", {"Dockerfile": "FROM busybox:latest\nRUN true\n"})
        done = build(root, ctx, runtime, given)
    else:
        done = subprocess.run([*PYBUILD, "prune"], env=env_for(root), text=True, capture_output=True,
                              check=False, timeout=BUILD_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert not os.path.exists(os.path.dirname(path))
    assert_nowhere(given, root, f"after {command}")
