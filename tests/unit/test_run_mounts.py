"""RUN --mount preparation on the host (no container): secrets flags and store, target resolution,
HostMounts per type, cache sharing, cleanup. The integration tests run the same through runc."""

from __future__ import annotations

import os
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pybuild.dockerfile.mounts import Mount, parse_mount
from pybuild.errors import ConfigError, ContextError, DockerfileError, StepFailed
from pybuild.worker import secretfiles
from pybuild.worker.mounts import PreparedMounts, prepare_mounts
from pybuild.worker.rootfs_path import secure_join as resolve_in_root
from pybuild.worker.secrets import SecretSpec, SecretStore, parse_secret_flag
from tests.bases import need
from tests.mountspecs import mount_spec

SECRET = b"s3cr3t-VALUE-42"


def _root_or_skip() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("this test needs root (CI must run it)")
        pytest.skip("needs root")


# --- --secret flags --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "environ", "expected"),
    [
        ("id=a,src=/tmp/f", {}, SecretSpec(id="a", src="/tmp/f", flag="id=a,src=/tmp/f")),
        ("id=a,source=f", {}, SecretSpec(id="a", src="f", flag="id=a,source=f")),
        ("id=a,env=TOKEN", {}, SecretSpec(id="a", env="TOKEN", flag="id=a,env=TOKEN")),
        ("type=env,id=a,src=TOKEN", {}, SecretSpec(id="a", env="TOKEN", flag="type=env,id=a,src=TOKEN")),
        ("id=TOKEN", {"TOKEN": "x"}, SecretSpec(id="TOKEN", env="TOKEN", flag="id=TOKEN")),
        ("id=TOKEN", {}, SecretSpec(id="TOKEN", src="TOKEN", flag="id=TOKEN")),
        ("type=file,id=a,src=f", {}, SecretSpec(id="a", src="f", flag="type=file,id=a,src=f")),
    ],
)
def test_parse_secret_flag(flag: str, environ: dict[str, str], expected: SecretSpec) -> None:
    assert parse_secret_flag(flag, environ) == expected


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("src=f", "secret ID missing"),
        ("id=a,bogus=1", "unexpected key 'bogus'"),
        ("id=a,type=ssh", 'unsupported secret type "ssh"'),
        ("id=a,src", "must be a key=value pair"),
    ],
)
def test_parse_secret_flag_errors(flag: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_secret_flag(flag, {})


def test_secret_store_reads_files_and_env_and_redacts(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(SECRET)
    store = SecretStore.from_flags([f"id=file,src={path}", "id=var,env=V"], {"V": "env-" + SECRET.decode()})
    assert store.get("file") == SECRET
    assert store.get("var") == b"env-" + SECRET
    assert store.get("nope") is None
    assert "file" in store and len(store) == 2
    for text in (repr(store), str(store), f"{store}"):
        assert SECRET.decode() not in text and "file" in text
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(store)


def test_secret_store_missing_file_and_env(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--secret id=a,src=.*missing.*cannot read secret file"):
        SecretStore.from_flags([f"id=a,src={tmp_path / 'missing'}"], {})
    with pytest.raises(ConfigError, match="environment variable NOPE is not set"):
        SecretStore.from_flags(["id=a,env=NOPE"], {})


# --- resolving paths inside a root -----------------------------------------------------------------------


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True)
    (root / "etc/link").symlink_to("/")
    (root / "etc/up").symlink_to("../../../..")
    (root / "lib").symlink_to("usr/lib")
    (root / "loop").symlink_to("loop")
    return root


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "/"),
        ("etc", "/etc"),
        ("/etc/link/x", "/x"),
        ("/etc/link/etc/link/etc", "/etc"),
        ("/etc/up/etc/passwd", "/etc/passwd"),
        ("/../../../etc", "/etc"),
        ("/lib/x", "/usr/lib/x"),
        ("/missing/../../x", "/x"),
        ("a/./b//c/", "/a/b/c"),
    ],
)
def test_resolve_in_root(tree: Path, path: str, expected: str) -> None:
    assert resolve_in_root(str(tree), path) == expected


def test_resolve_in_root_symlink_loop(tree: Path) -> None:
    with pytest.raises(Exception, match="too many levels"):
        resolve_in_root(str(tree), "/loop/x")


# --- prepare_mounts --------------------------------------------------------------------------------------


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.rootfs = tmp_path / "rootfs"
        self.context = tmp_path / "context"
        self.stage = tmp_path / "stage"
        self.cache = tmp_path / "cache"
        for path in (self.rootfs, self.context, self.stage):
            path.mkdir()
        (self.rootfs / "etc").mkdir()
        (self.rootfs / "etc/link").symlink_to("/")
        (self.context / "src").mkdir()
        (self.context / "src/a.txt").write_text("context a\n")
        (self.context / "top.txt").write_text("top\n")
        (self.stage / "out").mkdir()
        (self.stage / "out/seed.txt").write_text("seed\n")
        self.store = SecretStore({"tok": SECRET})

    def stage_rootfs(self, name: str) -> str:
        if name != "build":
            raise DockerfileError(f"unknown stage {name}")
        return str(self.stage)

    def prepare(self, *specs: str, **kwargs: object) -> PreparedMounts:
        return prepare_mounts(
            [mount_spec(spec) for spec in specs], rootfs=str(self.rootfs), context_dir=str(self.context),
            stage_rootfs=self.stage_rootfs, secrets=self.store, cache_root=str(self.cache), **kwargs,  # type: ignore[arg-type]
        )


@pytest.fixture()
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def test_tmpfs(env: Env) -> None:
    with env.prepare("type=tmpfs,target=/scratch,size=1m") as prepared:
        (mount,) = prepared.host_mounts
        assert (mount.destination, mount.type, mount.source) == ("/scratch", "tmpfs", "tmpfs")
        assert "size=1048576" in mount.options
        assert (env.rootfs / "scratch").is_dir()
    assert os.listdir(env.rootfs / "scratch") == []  # the mount point stays in the layer, empty


def test_bind_and_tmpfs_stubs_stay_cache_and_secret_stubs_go(env: Env) -> None:
    specs = ("type=tmpfs,target=/t/deep", "type=bind,source=src,target=/b/src",
             "type=bind,source=top.txt,target=/f/top.txt", "type=cache,target=/c/deep",
             "type=secret,id=tok,target=/s/deep/tok")
    with env.prepare(*specs):
        for name in ("t/deep", "b/src", "c/deep"):
            assert (env.rootfs / name).is_dir()
        for name in ("f/top.txt", "s/deep/tok"):
            assert (env.rootfs / name).is_file()
    # bind and tmpfs mount points stay (with the parents made for them), empty: not the source's content
    assert os.listdir(env.rootfs / "t/deep") == [] and os.listdir(env.rootfs / "b/src") == []
    assert (env.rootfs / "f/top.txt").is_file() and (env.rootfs / "f/top.txt").read_bytes() == b""
    # cache and secret mount points are removed with the parents made for them
    assert not (env.rootfs / "c").exists() and not (env.rootfs / "s").exists()
    assert sorted(os.listdir(env.rootfs)) == ["b", "etc", "f", "t"]


def test_stub_kept_when_asked_and_existing_dirs_untouched(env: Env) -> None:
    (env.rootfs / "keep").mkdir()
    with env.prepare("type=cache,target=/new/deep", "type=secret,id=tok,target=/new/tok",
                     "type=cache,target=/keep", remove_stubs=False):
        pass
    assert (env.rootfs / "new/deep").is_dir() and (env.rootfs / "new/tok").read_bytes() == b""
    with env.prepare("type=cache,target=/other/deep", "type=cache,id=k,target=/keep"):
        (env.rootfs / "other/file").write_text("written by the step\n")
    # the empty stub goes; its parent stays because the step wrote to it; an existing dir is not a stub
    assert not (env.rootfs / "other/deep").exists() and (env.rootfs / "other/file").exists()
    assert (env.rootfs / "keep").is_dir()


def test_stub_left_non_empty_is_not_removed(env: Env) -> None:
    with env.prepare("type=cache,target=/c/deep", "type=secret,id=tok,target=/s/tok"):
        # the runtime mounts over the stubs; what reaches the stubs themselves is the layer's
        (env.rootfs / "c/deep/f").write_text("under the mount point\n")
        (env.rootfs / "s/tok").write_text("not the secret\n")
    assert (env.rootfs / "c/deep/f").exists() and (env.rootfs / "s/tok").read_text() == "not the secret\n"


@pytest.mark.parametrize("spec", ["type=cache,target=/etc/mnt/deep", "type=secret,id=tok,target=/etc/mnt/tok"])
def test_stub_removal_keeps_parent_mtime(env: Env, spec: str) -> None:
    os.utime(env.rootfs / "etc", (1000, 1000))
    with env.prepare(spec):
        assert (env.rootfs / "etc/mnt").is_dir()
        assert os.stat(env.rootfs / "etc").st_mtime != 1000
    assert not (env.rootfs / "etc/mnt").exists()
    assert os.stat(env.rootfs / "etc").st_mtime == 1000


def test_stub_removal_keeps_a_newer_parent_mtime(env: Env) -> None:
    os.utime(env.rootfs / "etc", (1000, 1000))
    with env.prepare("type=cache,target=/etc/mnt"):
        (env.rootfs / "etc/by-step").write_text("x\n")
        os.utime(env.rootfs / "etc", (2000, 2000))  # someone else changed the parent since: not ours to undo
    assert not (env.rootfs / "etc/mnt").exists()
    assert os.stat(env.rootfs / "etc").st_mtime == 2000


def test_target_through_symlink_stays_in_rootfs(env: Env, tmp_path: Path) -> None:
    with env.prepare("type=tmpfs,target=/etc/link/x", "type=cache,target=/etc/link/../../../c") as prepared:
        assert [m.destination for m in prepared.host_mounts] == ["/x", "/c"]
        assert (env.rootfs / "x").is_dir() and (env.rootfs / "c").is_dir()
        assert not (tmp_path / "c").exists() and not (tmp_path / "x").exists()
    assert (env.rootfs / "x").is_dir() and not (env.rootfs / "c").exists()  # tmpfs stub kept, cache's not
    assert not (tmp_path / "c").exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize("target", ["/", "/etc/link", "/..", "/etc/link/.."])
def test_target_root_is_invalid(env: Env, target: str) -> None:
    with pytest.raises(DockerfileError, match="invalid mount target"):
        env.prepare(f"type=tmpfs,target={target}")


def test_relative_target_is_under_workdir(env: Env) -> None:
    with env.prepare("type=tmpfs,target=build/tmp", workdir="/app") as prepared:
        assert prepared.host_mounts[0].destination == "/app/build/tmp"
    with env.prepare("type=cache,target=c", workdir="/app") as prepared:
        assert prepared.host_mounts[0].destination == "/app/c"


def test_bind_from_context_ro_default(env: Env) -> None:
    with env.prepare("target=/src,source=src") as prepared:
        (mount,) = prepared.host_mounts
        assert mount == mount.__class__(destination="/src", source=str(env.context / "src"), type="bind",
                                        options=("rbind", "ro"))


def test_bind_file_makes_file_stub(env: Env) -> None:
    with env.prepare("type=bind,source=top.txt,target=/opt/top.txt") as prepared:
        assert prepared.host_mounts[0].source == str(env.context / "top.txt")
        assert (env.rootfs / "opt/top.txt").is_file()
    assert (env.rootfs / "opt/top.txt").is_file()  # kept: an empty file, not the source's content
    assert (env.rootfs / "opt/top.txt").read_bytes() == b""
    assert os.listdir(env.rootfs / "opt") == ["top.txt"]


@pytest.mark.parametrize("source", ["../../../etc", "/../../..", "src/../../.."])
def test_bind_source_cannot_escape_context(env: Env, source: str) -> None:
    (env.context / "etc").mkdir()
    with env.prepare(f"type=bind,source={source},target=/m") as prepared:
        assert prepared.host_mounts[0].source.startswith(str(env.context))


def test_bind_source_symlink_cannot_escape(env: Env) -> None:
    (env.context / "evil").symlink_to("/etc")
    with pytest.raises(ContextError, match="bind mount source evil/passwd not found in the build context"):
        env.prepare("type=bind,source=evil/passwd,target=/m")


def test_bind_from_stage_and_missing(env: Env) -> None:
    with env.prepare("type=bind,from=build,source=out,target=/out") as prepared:
        assert prepared.host_mounts[0].source == str(env.stage / "out")
    with pytest.raises(DockerfileError, match="bind mount source nope not found in 'build'"):
        env.prepare("type=bind,from=build,source=nope,target=/out")


def test_bind_needs_context(env: Env) -> None:
    with pytest.raises(ContextError, match="needs a context"):
        prepare_mounts([mount_spec("target=/x")], rootfs=str(env.rootfs), context_dir=None,
                       stage_rootfs=env.stage_rootfs, secrets=env.store, cache_root=str(env.cache))


def test_bind_rw_file_is_a_throwaway_copy(env: Env) -> None:
    with env.prepare("type=bind,source=top.txt,target=/t,rw") as prepared:
        (mount,) = prepared.host_mounts
        assert mount.options == ("rbind", "rw")
        assert mount.source != str(env.context / "top.txt")
        Path(mount.source).write_text("changed\n")
        temp = Path(mount.source).parent
    assert (env.context / "top.txt").read_text() == "top\n"
    assert not temp.exists()


@pytest.mark.root
def test_bind_rw_dir_is_an_overlay(env: Env, made_temps: list[str]) -> None:
    _root_or_skip()
    with env.prepare("type=bind,source=src,target=/src,rw") as prepared:
        merged = Path(prepared.host_mounts[0].source)
        assert os.path.ismount(merged)
        assert made_temps == [str(merged.parent)]  # so the leak check below covers it
        (merged / "a.txt").write_text("changed\n")
        (merged / "new.txt").write_text("new\n")
    assert not merged.exists()
    assert (env.context / "src/a.txt").read_text() == "context a\n"
    assert not (env.context / "src/new.txt").exists()
    assert str(merged) not in Path("/proc/self/mountinfo").read_text()
    assert os.listdir(env.rootfs / "src") == []  # the mount point stays, without the writes


def test_bind_rw_dir_falls_back_to_a_copy(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from pybuild.worker import mounts

    def refuse(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(mounts, "_mount", refuse)
    with env.prepare("type=bind,source=src,target=/src,rw") as prepared:
        copy = Path(prepared.host_mounts[0].source)
        assert not os.path.ismount(copy) and (copy / "a.txt").read_text() == "context a\n"
        (copy / "a.txt").write_text("changed\n")
    assert not copy.exists()
    assert (env.context / "src/a.txt").read_text() == "context a\n"


def test_ssh_not_supported(env: Env) -> None:
    with pytest.raises(DockerfileError, match="RUN --mount=type=ssh is not supported yet"):
        env.prepare("type=ssh")


# secrets


@pytest.fixture(params=["detached", "dir"])
def secret_home(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where secret files go: a detached tmpfs (needs root and a kernel that binds from one) or the
    fallback dir on /dev/shm (forced)."""
    if request.param == "detached":
        if not secretfiles.detached_mounts_work():
            _root_or_skip()
            need(False, "this kernel refuses bind mounts from a detached tmpfs")
    else:
        monkeypatch.setattr(secretfiles, "detached_mounts_work", lambda: False)
    home: str = request.param
    return home


def test_secret_file_default_target_and_mode(env: Env, secret_home: str, made_temps: list[str]) -> None:
    with env.prepare("type=secret,id=tok") as prepared:
        (mount,) = prepared.host_mounts
        assert mount.destination == "/run/secrets/tok"
        assert "ro" in mount.options and mount.type == "bind"
        info = os.stat(mount.source)
        assert stat.S_IMODE(info.st_mode) == 0o400
        assert stat.S_IMODE(os.stat(os.path.dirname(mount.source)).st_mode) == 0o700
        assert Path(mount.source).read_bytes() == SECRET
        assert not str(mount.source).startswith(str(env.rootfs))
        assert (env.rootfs / "run/secrets/tok").read_bytes() == b""  # an empty stub, never the value
        if secret_home == "detached":  # no path names it: only this process's descriptor
            assert mount.source.startswith(f"/proc/{os.getpid()}/fd/") and made_temps == []
            device = f"{os.major(info.st_dev)}:{os.minor(info.st_dev)}"
            mounted = [line.split()[2] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
            assert device not in mounted  # its tmpfs is mounted nowhere
        else:
            assert made_temps == [os.path.dirname(mount.source)] and made_temps[0].startswith("/dev/shm/")
        source = mount.source
    assert not os.path.exists(source) and not os.path.exists(os.path.dirname(source) + "/0")
    assert not (env.rootfs / "run").exists()


def test_secret_id_from_target_and_options(env: Env, secret_home: str) -> None:
    with env.prepare("type=secret,target=/etc/tok,mode=0440,uid=0,gid=0") as prepared:
        (mount,) = prepared.host_mounts
        assert mount.destination == "/etc/tok"
        assert stat.S_IMODE(os.stat(mount.source).st_mode) == 0o440
    if os.geteuid() == 0:
        with env.prepare("type=secret,target=/etc/tok,mode=0404,uid=1234,gid=4321") as prepared:
            info = os.stat(prepared.host_mounts[0].source)
            assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o404, 1234, 4321)


def test_secret_env_only_and_both(env: Env) -> None:
    with env.prepare("type=secret,id=tok,env=TOKEN") as prepared:
        assert prepared.host_mounts == ()
        assert prepared.env == ("TOKEN=" + SECRET.decode(),)
        assert SECRET.decode() not in repr(prepared)
    with env.prepare("type=secret,id=tok,env=TOKEN,target=/t") as prepared:
        assert [m.destination for m in prepared.host_mounts] == ["/t"]
        assert len(prepared.env) == 1


def test_secret_missing(env: Env) -> None:
    with env.prepare("type=secret,id=absent") as prepared:
        assert prepared.host_mounts == () and prepared.env == ()
    with pytest.raises(ConfigError, match="secret absent not found") as info:
        env.prepare("type=secret,id=absent,required")
    assert SECRET.decode() not in str(info.value)


def test_failure_while_preparing_cleans_up(env: Env, made_temps: list[str], secret_home: str) -> None:
    opened: list[int] = []
    real = secretfiles._detached_tmpfs

    def recording() -> int:
        opened.append(real())
        return opened[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(secretfiles, "_detached_tmpfs", recording)
        with pytest.raises(ConfigError):
            env.prepare("type=secret,id=tok", "type=tmpfs,target=/a/b", "type=secret,id=absent,required")
    assert not (env.rootfs / "a").exists() and not (env.rootfs / "run").exists()
    if secret_home == "dir":
        # checked by the fixture: removed
        assert [os.path.basename(path)[:16] for path in made_temps] == ["pybuild-secrets-"]
    else:
        assert len(opened) == 1 and made_temps == []
        with pytest.raises(OSError):  # the detached tmpfs's descriptor is closed
            os.fstat(opened[0])


def test_failure_while_preparing_removes_bind_and_tmpfs_stubs(
    env: Env, made_temps: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(secretfiles, "detached_mounts_work", lambda: False)  # the secret in a temp dir
    (env.rootfs / "existing").mkdir()
    os.utime(env.rootfs, (1000, 1000))
    # Give each stub's parent its own mtime (the clock is coarse): a parent's times must then be put back
    # stub by stub, newest first, also across kept (bind, tmpfs) and removed (cache, secret) stubs.
    real_mkdir, stamps = os.mkdir, iter(range(2000, 3000))

    def mkdir(path: str, mode: int = 0o777) -> None:
        real_mkdir(path, mode)
        if path.startswith(f"{env.rootfs}/"):
            stamp = next(stamps)
            os.utime(os.path.dirname(path), (stamp, stamp))

    with monkeypatch.context() as patch, \
            pytest.raises(DockerfileError, match="bind mount source nope not found in 'build'"):
        patch.setattr(os, "mkdir", mkdir)
        env.prepare("type=cache,target=/c", "type=tmpfs,target=/t/deep", "type=bind,source=src,target=/b/src",
                    "type=bind,source=top.txt,target=/existing/top.txt", "type=bind,source=src,target=/rw,rw",
                    "type=secret,id=tok,target=/s", "type=bind,from=build,source=nope,target=/never")
    assert next(stamps) == 2006  # c, t, t/deep, b, b/src, rw (files are not made with mkdir)
    # kept mount points too: the step never ran; what was there before stays, as it was
    assert sorted(os.listdir(env.rootfs)) == ["etc", "existing"]
    assert os.listdir(env.rootfs / "existing") == []
    assert os.stat(env.rootfs).st_mtime == 1000
    assert len(made_temps) == 2  # the rw bind's view and the secrets dir; the fixture checks they are gone


# caches


def test_cache_persists_and_is_keyed_by_id(env: Env) -> None:
    with env.prepare("type=cache,target=/root/.cache") as prepared:
        first = Path(prepared.host_mounts[0].source)
        assert prepared.host_mounts[0].options == ("rbind", "rw")
        (first / "f").write_text("kept\n")
    with env.prepare("type=cache,target=/root/.cache") as prepared:
        assert Path(prepared.host_mounts[0].source) == first
        assert (first / "f").read_text() == "kept\n"
    with env.prepare("type=cache,id=shared-id,target=/a", "type=cache,id=shared-id,target=/b,ro") as prepared:
        a, b = prepared.host_mounts
        assert a.source == b.source != str(first)
        assert b.options == ("rbind", "ro")
    assert not (env.rootfs / "root").exists()
    assert str(env.cache) in str(first)


def test_cache_default_root_is_under_store(env: Env, tmp_path: Path) -> None:
    with prepare_mounts([mount_spec("type=cache,target=/c")], rootfs=str(env.rootfs), context_dir=None,
                        stage_rootfs=env.stage_rootfs, secrets=env.store) as prepared:
        assert prepared.host_mounts[0].source.startswith(os.path.join(os.environ["PYBUILD_ROOT"],
                                                                      "cache-mounts"))


def test_cache_mode_owner_and_seed(env: Env) -> None:
    spec = "type=cache,id=seeded,target=/c,from=build,source=out,mode=0700,uid=0,gid=0"
    with env.prepare(spec) as prepared:
        data = Path(prepared.host_mounts[0].source)
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert (data / "seed.txt").read_text() == "seed\n"
        (data / "seed.txt").write_text("changed\n")
    with env.prepare(spec) as prepared:  # seeded only when created
        assert (data / "seed.txt").read_text() == "changed\n"
    with env.prepare("type=cache,id=plain,target=/c") as prepared:
        assert stat.S_IMODE(Path(prepared.host_mounts[0].source).stat().st_mode) == 0o755


@pytest.mark.root
def test_cache_uid_gid(env: Env) -> None:
    _root_or_skip()
    with env.prepare("type=cache,id=owned,target=/c,uid=1234,gid=4321") as prepared:
        info = os.stat(prepared.host_mounts[0].source)
        assert (info.st_uid, info.st_gid) == (1234, 4321)


def test_cache_private_gets_a_fresh_dir_when_busy(env: Env) -> None:
    with env.prepare("type=cache,id=p,target=/c,sharing=private") as one:
        with env.prepare("type=cache,id=p,target=/c,sharing=private") as two:
            assert one.host_mounts[0].source != two.host_mounts[0].source
    with env.prepare("type=cache,id=p,target=/c,sharing=private") as three:
        assert three.host_mounts[0].source == one.host_mounts[0].source  # the free primary is reused


def test_cache_shared_is_concurrent(env: Env) -> None:
    with env.prepare("type=cache,id=s,target=/c,sharing=shared") as one:
        with env.prepare("type=cache,id=s,target=/c") as two:
            assert one.host_mounts[0].source == two.host_mounts[0].source


def _hold(env: Env, spec: str, events: list[tuple[str, float]], name: str, seconds: float) -> None:
    with env.prepare(spec):
        events.append((f"{name} start", time.monotonic()))
        time.sleep(seconds)
        events.append((f"{name} end", time.monotonic()))


def test_cache_locked_serialises(env: Env) -> None:
    events: list[tuple[str, float]] = []
    spec = "type=cache,id=l,target=/c,sharing=locked"
    threads = [threading.Thread(target=_hold, args=(env, spec, events, name, 0.3)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    names = [name for name, _ in sorted(events, key=lambda item: item[1])]
    assert names in (["a start", "a end", "b start", "b end"], ["b start", "b end", "a start", "a end"])


def test_cache_locked_wait_can_be_cancelled(env: Env) -> None:
    spec = "type=cache,id=l2,target=/c,sharing=locked"
    cancel = threading.Event()
    with env.prepare(spec):
        threading.Timer(0.2, cancel.set).start()
        with pytest.raises(StepFailed, match="cancelled while waiting"):
            env.prepare(spec, cancel=cancel)
    with env.prepare(spec, cancel=threading.Event()):
        pass


_TEMP_PREFIXES = ("pybuild-bind-", "pybuild-secrets-")


@pytest.fixture(autouse=True)
def made_temps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The throwaway-view and secret temp dirs this test made; after it: all gone, nothing mounted.

    Only this test's own paths count: other xdist workers mount and make such dirs concurrently (a global
    `pybuild-bind-` match or a before/after listing of /tmp reports their live mounts as our leaks).
    """
    made: list[str] = []
    real = tempfile.mkdtemp

    def recording(*args: Any, **kwargs: Any) -> str:
        path: str = real(*args, **kwargs)
        if os.path.basename(path).startswith(_TEMP_PREFIXES):
            made.append(path)
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", recording)
    yield made
    ours = [str(tmp_path), *made]
    mounted = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
               if any(f"{path}/" in f"{line.split()[4]}/" for path in ours)]
    assert mounted == [], "a mount leaked"
    assert [path for path in made if os.path.lexists(path)] == [], "a temp dir leaked"


def test_parse_mount_helper_types() -> None:
    assert isinstance(parse_mount("type=tmpfs,target=/x"), Mount)
