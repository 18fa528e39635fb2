"""OCI runtime spec generation for RUN steps (docker / BuildKit defaults)."""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

import pytest

from pybuild.worker import spec
from pybuild.worker.types import HostMount, NetworkMode, ProcessSpec
from pybuild.worker.users import ResolvedUser


def make(network: NetworkMode = "default", **process: Any) -> dict[str, Any]:
    proc = ProcessSpec(args=process.pop("args", ("/bin/sh", "-c", "true")), **process)
    return spec.generate_spec(rootfs="/r", process=proc, user=ResolvedUser(1000, 1001, (10, 50)),
                              network=network, etc_files={"/etc/hosts": "/b/hosts"},
                              mounts=(HostMount(destination="/cache", source="/host/cache", options=("rbind",)),))


def test_process_section() -> None:
    config = make(env=("A=1",), cwd="/work")
    process = config["process"]
    assert config["ociVersion"] == "1.0.2"
    assert process["args"] == ["/bin/sh", "-c", "true"]
    assert process["env"] == [f"PATH={spec.DEFAULT_PATH}", "A=1"]
    assert process["cwd"] == "/work"
    assert process["terminal"] is False and process["noNewPrivileges"] is True
    assert process["user"] == {"uid": 1000, "gid": 1001, "additionalGids": [10, 50]}
    json.dumps(config)  # serialisable as is


def test_image_path_is_kept() -> None:
    assert make(env=("PATH=/x", "B=2"))["process"]["env"] == ["PATH=/x", "B=2"]
    assert spec.process_env(()) == [f"PATH={spec.DEFAULT_PATH}"]


def test_docker_default_capabilities() -> None:
    caps = make()["process"]["capabilities"]
    assert set(caps) == {"bounding", "effective", "permitted"}
    assert len(caps["bounding"]) == 14 and "CAP_SYS_ADMIN" not in caps["bounding"]
    assert {"CAP_CHOWN", "CAP_NET_RAW", "CAP_AUDIT_WRITE", "CAP_SETFCAP"} <= set(caps["effective"])
    assert caps["bounding"] == caps["effective"] == caps["permitted"]


def test_rlimit_nofile_capped_at_our_hard_limit() -> None:
    (limit,) = make()["process"]["rlimits"]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert limit["type"] == "RLIMIT_NOFILE"
    assert limit["soft"] == limit["hard"] <= (hard if hard != resource.RLIM_INFINITY else 1048576)
    assert limit["hard"] <= 1048576


def test_rlimit_when_hard_is_lower(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (1024, 20000))
    assert spec.nofile_limit() == 20000
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (1024, resource.RLIM_INFINITY))
    assert spec.nofile_limit() == 1048576


def test_root_hostname_and_mounts() -> None:
    config = make()
    assert config["root"] == {"path": "/r", "readonly": False}
    assert config["hostname"] == "pybuild"
    by_dest = {m["destination"]: m for m in config["mounts"]}
    assert [m["destination"] for m in config["mounts"]] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/etc/hosts", "/cache"]
    assert by_dest["/proc"]["type"] == "proc"
    assert {"mode=755", "nosuid", "strictatime"} <= set(by_dest["/dev"]["options"])
    assert {"newinstance", "ptmxmode=0666", "gid=5"} <= set(by_dest["/dev/pts"]["options"])
    assert "size=65536k" in by_dest["/dev/shm"]["options"]
    assert by_dest["/dev/mqueue"]["type"] == "mqueue"
    assert {"ro", "nosuid", "noexec", "nodev"} <= set(by_dest["/sys"]["options"])
    assert by_dest["/etc/hosts"] == {"destination": "/etc/hosts", "type": "bind", "source": "/b/hosts",
                                     "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}
    assert by_dest["/cache"] == {"destination": "/cache", "type": "bind", "source": "/host/cache",
                                 "options": ["rbind"]}


@pytest.mark.parametrize(("network", "netns"), [("none", True), ("host", False), ("default", True)])
def test_namespaces(network: NetworkMode, netns: bool) -> None:
    types = [n["type"] for n in make(network)["linux"]["namespaces"]]
    assert types[:4] == ["pid", "ipc", "uts", "mount"]
    assert ("network" in types) is netns


def test_default_network_joins_the_prepared_namespace() -> None:
    proc = ProcessSpec(args=("true",))
    config = spec.generate_spec(rootfs="/r", process=proc, user=ResolvedUser(0, 0, ()), network="default",
                                netns_path="/proc/1/fd/7")
    assert {"type": "network", "path": "/proc/1/fd/7"} in config["linux"]["namespaces"]
    # only `default` joins it: `none` gets a new empty one, `host` none at all
    none = spec.generate_spec(rootfs="/r", process=proc, user=ResolvedUser(0, 0, ()), network="none",
                              netns_path="/proc/1/fd/7")
    assert {"type": "network"} in none["linux"]["namespaces"]
    host = spec.generate_spec(rootfs="/r", process=proc, user=ResolvedUser(0, 0, ()), network="host",
                              netns_path="/proc/1/fd/7")
    assert all(n["type"] != "network" for n in host["linux"]["namespaces"])


def test_masked_and_readonly_paths() -> None:
    linux = make()["linux"]
    assert "/proc/kcore" in linux["maskedPaths"] and "/sys/firmware" in linux["maskedPaths"]
    assert "/proc/sys" in linux["readonlyPaths"] and "/proc/sysrq-trigger" in linux["readonlyPaths"]
    assert "seccomp" not in linux  # documented gap: docker's seccomp profile is not applied yet


def test_resolv_conf(tmp_path: Path) -> None:
    stub = tmp_path / "stub"
    stub.write_text("# systemd\nnameserver 127.0.0.53\noptions edns0\nsearch lan\n")
    # default: a loopback resolver becomes slirp4netns's forwarder, in its place
    assert spec.resolv_conf("default", str(stub)) == "# systemd\nnameserver 10.0.2.3\noptions edns0\nsearch lan\n"
    none = spec.resolv_conf("none", str(stub))
    assert "127.0.0.53" not in none and "nameserver 8.8.8.8" in none and "search lan" in none
    assert spec.resolv_conf("host", str(stub)) == stub.read_text()
    real = tmp_path / "real"
    real.write_text("nameserver 10.0.0.1\nnameserver 127.0.0.1\nnameserver ::1\n")
    assert spec.resolv_conf("default", str(real)) == "nameserver 10.0.0.1\nnameserver 10.0.2.3\n"  # once
    assert spec.resolv_conf("none", str(real)) == "nameserver 10.0.0.1\n"
    assert spec.resolv_conf("default", str(tmp_path / "missing")) == "nameserver 10.0.2.3\n"
    assert "nameserver 8.8.8.8" in spec.resolv_conf("none", str(tmp_path / "missing"))
    assert "nameserver 8.8.8.8" in spec.resolv_conf("host", str(tmp_path / "missing"))


def test_write_etc_files(tmp_path: Path) -> None:
    files = spec.write_etc_files(str(tmp_path), "none")
    assert set(files) == {"/etc/hosts", "/etc/resolv.conf", "/etc/hostname"}
    assert Path(files["/etc/hostname"]).read_text() == "pybuild\n"
    hosts = Path(files["/etc/hosts"]).read_text()
    assert "127.0.0.1\tlocalhost pybuild" in hosts and "::1" in hosts
    assert all(Path(p).parent == tmp_path for p in files.values())
