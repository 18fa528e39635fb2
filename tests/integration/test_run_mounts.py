"""RUN --mount through real runc on an overlay rootfs (busybox-static): caches, binds, tmpfs, secrets,
escapes and leaks.

Needs root, overlayfs, runc and /bin/busybox: skipped with a reason locally when missing, failing in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pybuild.errors import ConfigError, DockerfileError
from pybuild.worker import secretfiles
from pybuild.worker.executor import ProcessFailed, run_process
from pybuild.worker.mounts import PreparedMounts, prepare_mounts
from pybuild.worker.secrets import SecretStore
from pybuild.worker.types import ProcessSpec
from tests.bases import need
from tests.mountspecs import mount_spec

pytestmark = pytest.mark.root

BUSYBOX = "/bin/busybox"
SECRET = "integration-S3CR3T-9f1c"


def _require() -> None:
    reason = None
    if os.geteuid() != 0:
        reason = "needs root"
    elif not shutil.which("runc"):
        reason = "runc is not installed"
    elif not os.path.exists(BUSYBOX):
        reason = "busybox-static is not installed"
    else:
        with open("/proc/filesystems", encoding="utf-8") as handle:
            if not any(line.split()[-1] == "overlay" for line in handle if line.strip()):
                reason = "the kernel has no overlayfs"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def _mounted_under(paths: list[str]) -> list[str]:
    """Mountinfo lines whose mount point is one of `paths` or below one."""
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if any(f"{path}/" in f"{line.split()[4]}/" for path in paths)]


@pytest.fixture(scope="module")
def lower(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require()
    root = tmp_path_factory.mktemp("busybox")
    (root / "bin").mkdir()
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for name in applets:
        if name != "busybox":
            (root / "bin" / name).symlink_to("busybox")
    for name in ("etc", "tmp", "proc", "sys", "dev", "root"):
        (root / name).mkdir()
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (root / "etc/link").symlink_to("/")
    return root


class Rig:
    """An overlay rootfs over the busybox lower, a context, a stage dir and a cache root."""

    def __init__(self, tmp: Path, lower: Path) -> None:
        self.tmp = tmp
        self.upper, self.work, self.rootfs = tmp / "upper", tmp / "work", tmp / "merged"
        for path in (self.upper, self.work, self.rootfs):
            path.mkdir()
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={lower},upperdir={self.upper},workdir={self.work}", str(self.rootfs)],
                       check=True)
        self.context = tmp / "context"
        (self.context / "src").mkdir(parents=True)
        (self.context / "src/a.txt").write_text("context a\n")
        self.stage = tmp / "stage"
        (self.stage / "out").mkdir(parents=True)
        (self.stage / "out/built").write_text("from stage\n")
        self.cache = tmp / "cache"
        self.secrets = SecretStore({"tok": SECRET.encode()})

    def close(self) -> None:
        subprocess.run(["umount", str(self.rootfs)], check=True)

    def prepare(self, *specs: str) -> PreparedMounts:
        return prepare_mounts([mount_spec(s) for s in specs], rootfs=str(self.rootfs),
                              context_dir=str(self.context), stage_rootfs=lambda name: str(self.stage),
                              secrets=self.secrets, cache_root=str(self.cache))

    def run(self, script: str, *specs: str) -> str:
        """Run `script` with the mounts; return its output."""
        with self.prepare(*specs) as prepared:
            return self.run_prepared(script, prepared)

    def run_prepared(self, script: str, prepared: PreparedMounts, runtime: str = "runc") -> str:
        chunks: list[bytes] = []
        process = ProcessSpec(args=("/bin/sh", "-c", script), env=("PATH=/bin",) + prepared.env)
        run_process(str(self.rootfs), process, network="none", mounts=prepared.host_mounts, runtime=runtime,
                    output=lambda _name, chunk: chunks.append(chunk), timeout=60)
        return b"".join(chunks).decode()


@pytest.fixture
def temps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The throwaway-view and secret temp dirs the test makes (recorded as `tempfile.mkdtemp` makes them).

    Only this test's own dirs and mounts count as leaks: other xdist workers make such dirs and mount rw bind
    overlays concurrently (a global `pybuild-bind-` match or a before/after listing of /tmp reports their
    live mounts as ours).
    """
    made: list[str] = []
    real = tempfile.mkdtemp

    def recording(*args: Any, **kwargs: Any) -> str:
        path: str = real(*args, **kwargs)
        if os.path.basename(path).startswith(("pybuild-bind-", "pybuild-secrets-")):
            made.append(path)
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", recording)
    return made


@pytest.fixture
def rig(tmp_path: Path, lower: Path, temps: list[str]) -> Iterator[Rig]:
    made = Rig(tmp_path, lower)
    try:
        yield made
    finally:
        made.close()
    assert _mounted_under([str(tmp_path), *temps]) == [], "a mount leaked"
    assert [path for path in temps if os.path.lexists(path)] == [], "a temp dir leaked"


def test_cache_persists_across_runs_and_is_shared_by_id(rig: Rig) -> None:
    rig.run("echo one > /var/cache/x/file", "type=cache,id=c1,target=/var/cache/x")
    assert rig.run("cat /other/file", "type=cache,id=c1,target=/other") == "one\n"
    assert rig.run("cat /var/cache/x/file", "type=cache,id=c1,target=/var/cache/x") == "one\n"
    # the cache is a mount: neither its contents nor its (removed) mount point reach the layer
    assert not (rig.upper / "var").exists() and not (rig.upper / "other").exists()


def _intervals(log: str) -> list[tuple[float, float]]:
    spans: dict[str, list[float]] = {}
    for line in log.splitlines():
        name, _event, stamp = line.split()
        spans.setdefault(name, []).append(float(stamp))
    return sorted((min(v), max(v)) for v in spans.values())


def _concurrent(rig: Rig, sharing: str) -> list[tuple[float, float]]:
    spec = f"type=cache,id=lk-{sharing},target=/c,sharing={sharing}"
    script = ("echo $N start $(cut -d' ' -f1 /proc/uptime) >> /c/log; sleep 1; "
              "echo $N end $(cut -d' ' -f1 /proc/uptime) >> /c/log")
    errors: list[BaseException] = []
    # Real steps each have their own rootfs; these two share one, so the mount point must not be a stub
    # that the first run to finish removes from under the second.
    (rig.rootfs / "c").mkdir(exist_ok=True)

    def one(name: str) -> None:
        try:
            rig.run(f"N={name}; {script}", spec)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    return _intervals(rig.run("cat /c/log", spec))


def test_cache_locked_serialises_concurrent_runs(rig: Rig) -> None:
    (first, second) = _concurrent(rig, "locked")
    assert first[1] <= second[0]


def test_cache_shared_runs_concurrently(rig: Rig) -> None:
    (first, second) = _concurrent(rig, "shared")
    assert second[0] < first[1]


def test_cache_private_gives_a_separate_dir_to_a_concurrent_user(rig: Rig) -> None:
    spec = "type=cache,id=pv,target=/c,sharing=private"
    with rig.prepare(spec) as held:
        rig.run_prepared("touch /c/held", held)
        assert rig.run("ls /c", spec) == ""
    assert rig.run("ls /c", spec) == "held\n"


def test_cache_seeded_from_stage_with_mode(rig: Rig) -> None:
    out = rig.run("cat /c/built; stat -c %a /c",
                  "type=cache,id=seed,target=/c,from=build,source=out,mode=0750")
    assert out == "from stage\n750\n"


def test_bind_context_read_only(rig: Rig) -> None:
    out = rig.run("cat /src/a.txt; if touch /src/new 2>/dev/null; then echo WROTE; else echo ro; fi",
                  "target=/src,source=src")
    assert out == "context a\nro\n"
    assert os.listdir(rig.upper / "src") == []  # the mount point stays in the layer, empty


def test_bind_rw_writes_are_discarded(rig: Rig, temps: list[str]) -> None:
    out = rig.run("echo changed > /src/a.txt; touch /src/new; cat /src/a.txt",
                  "type=bind,source=src,target=/src,rw")
    assert out == "changed\n"
    assert (rig.context / "src/a.txt").read_text() == "context a\n"
    assert sorted(os.listdir(rig.context / "src")) == ["a.txt"]
    assert os.listdir(rig.upper / "src") == []  # the mount point stays, empty: no write reaches the layer
    assert [os.path.basename(path)[:13] for path in temps] == ["pybuild-bind-"]  # the rig checks it is gone


def test_bind_from_stage(rig: Rig) -> None:
    assert rig.run("cat /mnt/built", "type=bind,from=build,source=out,target=/mnt") == "from stage\n"
    assert os.listdir(rig.upper / "mnt") == []


def test_mount_points_in_the_layer(rig: Rig) -> None:
    out = rig.run("cat /opt/a.txt; ls /d; echo x > /t/deep/f; echo y > /c/deep/f; cat /s/tok",
                  "type=bind,source=src/a.txt,target=/opt/a.txt", "type=bind,source=/,target=/d",
                  "type=tmpfs,target=/t/deep", "type=cache,id=layer,target=/c/deep",
                  "type=secret,id=tok,target=/s/tok")
    assert out == f"context a\nsrc\n{SECRET}"
    # bind and tmpfs mount points (and the parents made for them) stay: empty dirs, an empty file
    assert (rig.upper / "opt/a.txt").is_file() and (rig.upper / "opt/a.txt").read_bytes() == b""
    assert os.listdir(rig.upper / "d") == [] and os.listdir(rig.upper / "t/deep") == []
    # cache and secret mount points go, with the parents made for them
    assert not (rig.upper / "c").exists() and not (rig.upper / "s").exists()
    # (etc: the runtime's mount points for /etc/hosts and friends, which the layer diff leaves out)
    assert sorted(os.listdir(rig.upper)) == ["d", "etc", "opt", "t"]
    _assert_secret_nowhere(rig)


def test_tmpfs_size(rig: Rig) -> None:
    out = rig.run("grep ' /t tmpfs ' /proc/mounts | wc -l; "
                  "if dd if=/dev/zero of=/t/f bs=1024 count=2048 2>/dev/null; then echo fit; else echo full; fi",
                  "type=tmpfs,target=/t,size=1m")
    assert out == "1\nfull\n"
    assert os.listdir(rig.upper / "t") == []  # the mount point stays, empty


def test_secret_file_and_env(rig: Rig) -> None:
    out = rig.run("stat -c '%a %u' /run/secrets/tok; cat /run/secrets/tok; echo; echo $TOKEN",
                  "type=secret,id=tok", "type=secret,id=tok,env=TOKEN")
    assert out == f"400 0\n{SECRET}\n{SECRET}\n"
    out = rig.run("stat -c '%a %u %g' /s", "type=secret,id=tok,target=/s,mode=0440,uid=65534,gid=65534")
    assert out == "440 65534 65534\n"
    _assert_secret_nowhere(rig)


@pytest.mark.parametrize("runtime", ["runc", "crun"])
@pytest.mark.parametrize("home", ["detached", "dir"])
def test_secret_files_from_either_home_in_either_runtime(rig: Rig, temps: list[str], home: str, runtime: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The detached tmpfs (bound from /proc/<pid>/fd/<n>/<file>) and the fallback dir on /dev/shm give the
    container the same file: content, mode, owner, read-only; the fallback dir is gone afterwards."""
    need(shutil.which(runtime) is not None, f"{runtime} is not installed")
    if home == "dir":
        monkeypatch.setattr(secretfiles, "detached_mounts_work", lambda: False)
    else:
        need(secretfiles.detached_mounts_work(), "this kernel refuses bind mounts from a detached tmpfs")
    script = ("cat /run/secrets/tok; echo; stat -c '%a %u %g' /run/secrets/tok /s; echo $TOKEN; "
              "if (echo x >> /s) 2>/dev/null; then echo WROTE; else echo ro; fi")
    with rig.prepare("type=secret,id=tok", "type=secret,id=tok,target=/s,mode=0440,uid=65534,gid=65534",
                     "type=secret,id=tok,env=TOKEN") as prepared:
        sources = [mount.source for mount in prepared.host_mounts]
        if home == "detached":
            assert all(source.startswith(f"/proc/{os.getpid()}/fd/") for source in sources) and temps == []
        else:
            assert [os.path.dirname(source) for source in sources] == temps * 2
        out = rig.run_prepared(script, prepared, runtime)
    assert out == f"{SECRET}\n400 0 0\n440 65534 65534\n{SECRET}\nro\n"
    assert not any(os.path.exists(source) for source in sources)  # the fixture checks the dirs are gone
    _assert_secret_nowhere(rig)


def test_secret_written_by_step_elsewhere_is_not_our_leak(rig: Rig) -> None:
    # the step cannot write to the secret file (read-only bind)
    out = rig.run("if (echo x > /run/secrets/tok) 2>/dev/null; then echo WROTE; else echo ro; fi",
                  "type=secret,id=tok")
    assert out == "ro\n"
    _assert_secret_nowhere(rig)


def _assert_secret_nowhere(rig: Rig) -> None:
    needle = SECRET.encode()
    for base in (rig.upper, rig.rootfs, rig.cache):
        for path in (p for p in base.rglob("*") if p.is_file() and not p.is_symlink()):
            assert needle not in path.read_bytes(), path
    assert not (rig.upper / "run").exists()  # the mount-point stubs are removed too


def test_missing_required_secret_and_failing_step_messages(rig: Rig) -> None:
    with pytest.raises(ConfigError, match="secret nope not found") as info:
        rig.run("true", "type=secret,id=nope,required")
    assert SECRET not in str(info.value)
    assert rig.run("ls /run/secrets 2>&1 || true", "type=secret,id=nope") != ""  # optional: skipped
    with pytest.raises(ProcessFailed) as failed:
        rig.run("exit 3", "type=secret,id=tok,env=TOKEN")
    assert SECRET not in str(failed.value) and SECRET not in repr(failed.value)


def test_ssh_is_not_supported(rig: Rig) -> None:
    with pytest.raises(DockerfileError, match="not supported yet"):
        rig.run("true", "type=ssh")


def test_targets_cannot_escape_the_rootfs(rig: Rig) -> None:
    marker = "/pybuild-escape-test"
    assert not os.path.exists(marker)
    out = rig.run(f"echo hi > /etc/link{marker}/f; cat {marker}/f",
                  f"type=cache,id=esc,target=/etc/link/../..{marker}", )
    assert out == "hi\n"
    assert not os.path.exists(marker)
    assert not (rig.upper / marker.lstrip("/")).exists()  # the cache's mount point is removed
    out = rig.run(f"ls -d {marker}", f"type=tmpfs,target=/etc/link{marker}")
    assert out == f"{marker}\n"
    assert not os.path.exists(marker)
    assert os.listdir(rig.upper / marker.lstrip("/")) == []  # the tmpfs's stays, inside the rootfs
