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
from tests.bases import need


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
    assert linux["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"  # docker's profile (tests below)


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


# --- seccomp, security mode and limits (sandbox.py, seccomp.py) -----------------------------------------


def _names(config: dict[str, Any]) -> set[str]:
    return {name for rule in config["linux"]["seccomp"]["syscalls"] for name in rule["names"]}


def test_default_spec_has_dockers_seccomp_profile_for_its_caps() -> None:
    config = make()
    profile = config["linux"]["seccomp"]
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"  # EPERM for anything not allowed
    names = _names(config)
    assert {"read", "write", "clone", "execve"} <= names
    # CAP_SYS_ADMIN-only and unlisted calls are filtered out with docker's default capability set
    assert not {"mount", "umount2", "unshare", "setns", "bpf", "keyctl", "add_key", "request_key"} & names
    assert "chroot" in names  # CAP_SYS_CHROOT is one of docker's defaults
    json.dumps(config)


def test_seccomp_conditions_follow_caps_arch_and_kernel() -> None:
    from pybuild.worker import seccomp

    base = seccomp.oci_profile(spec.DEFAULT_CAPABILITIES, arch=("amd64", "SCMP_ARCH_X86_64"), kernel=(6, 1))
    assert base["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    with_admin = seccomp.oci_profile((*spec.DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"),
                                     arch=("amd64", "SCMP_ARCH_X86_64"), kernel=(6, 1))
    names = {n for rule in base["syscalls"] for n in rule["names"]}
    admin = {n for rule in with_admin["syscalls"] for n in rule["names"]}
    assert {"mount", "unshare", "setns"} <= admin - names
    # clone is allowed only with a flags mask when CAP_SYS_ADMIN is missing, unconditionally with it
    assert any(r["names"] == ["clone"] and r.get("args") for r in base["syscalls"])
    assert not any(r["names"] == ["clone"] and r.get("args") for r in with_admin["syscalls"])
    assert "arch_prctl" in names
    arm = seccomp.oci_profile(spec.DEFAULT_CAPABILITIES, arch=("arm64", "SCMP_ARCH_AARCH64"), kernel=(6, 1))
    arm_names = {n for rule in arm["syscalls"] for n in rule["names"]}
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert "arch_prctl" not in arm_names and "arm_fadvise64_64" in arm_names
    old = seccomp.oci_profile(spec.DEFAULT_CAPABILITIES, arch=("amd64", "SCMP_ARCH_X86_64"), kernel=(4, 4))
    assert "ptrace" in names and "ptrace" not in {n for rule in old["syscalls"] for n in rule["names"]}
    base["syscalls"].clear()  # a copy: the cached resolution is not changed
    assert seccomp.oci_profile(spec.DEFAULT_CAPABILITIES, arch=("amd64", "SCMP_ARCH_X86_64"),
                               kernel=(6, 1))["syscalls"]


def test_kernel_version_parsing() -> None:
    from pybuild.worker.seccomp import kernel_version

    assert kernel_version("6.18.44-fc-v1300") == (6, 18)
    assert kernel_version("4.8") == (4, 8) and kernel_version("5") == (5, 0)


def test_insecure_mode_has_all_caps_no_seccomp_no_masked_paths() -> None:
    from pybuild.worker.sandbox import all_capabilities
    from pybuild.worker.types import Sandbox

    proc = ProcessSpec(args=("true",))
    config = spec.generate_spec(rootfs="/r", process=proc, user=ResolvedUser(0, 0, ()),
                                sandbox=Sandbox(security="insecure"))
    assert "seccomp" not in config["linux"]
    assert config["linux"]["maskedPaths"] == [] and config["linux"]["readonlyPaths"] == []
    caps = config["process"]["capabilities"]
    assert caps["bounding"] == all_capabilities() and "CAP_SYS_ADMIN" in caps["bounding"]
    sysfs = next(m for m in config["mounts"] if m["destination"] == "/sys")
    assert "ro" not in sysfs["options"]
    assert config["process"]["noNewPrivileges"] is True


def test_all_capabilities_follow_our_bounding_set() -> None:
    from pybuild.worker.sandbox import all_capabilities

    assert all_capabilities("CapBnd:\t0000000000000003\n") == ["CAP_CHOWN", "CAP_DAC_OVERRIDE"]
    full = all_capabilities("CapBnd:\t000001ffffffffff\n")
    assert len(full) == 41 and full[-1] == "CAP_CHECKPOINT_RESTORE"
    assert "CAP_SYS_RESOURCE" not in all_capabilities("CapBnd:\t000001fffeffffff\n")


def test_limits_go_into_the_spec() -> None:
    from pybuild.worker.sandbox import make_sandbox

    sandbox = make_sandbox(ulimits=("nofile=100:200", "nproc=50", "core=-1"), shm_size="1m", memory="64m",
                           pids_limit=30)
    config = spec.generate_spec(rootfs="/r", process=ProcessSpec(args=("true",)), user=ResolvedUser(0, 0, ()),
                                sandbox=sandbox)
    rlimits = {r["type"]: (r["soft"], r["hard"]) for r in config["process"]["rlimits"]}
    unlimited = (2**64 - 1, 2**64 - 1)
    assert rlimits == {"RLIMIT_NOFILE": (100, 200), "RLIMIT_NPROC": (50, 50), "RLIMIT_CORE": unlimited}
    shm = next(m for m in config["mounts"] if m["destination"] == "/dev/shm")
    assert "size=1048576" in shm["options"] and not any(o == "size=65536k" for o in shm["options"])
    resources = config["linux"]["resources"]
    from pybuild.worker.sandbox import swap_accounted

    swap = {"swap": 64 * 1024 * 1024} if swap_accounted() else {}
    assert resources["memory"] == {"limit": 64 * 1024 * 1024, **swap}
    assert resources["pids"] == {"limit": 30}
    assert resources["devices"] == [{"allow": False, "access": "rwm"}]
    default = make()
    assert "memory" not in default["linux"]["resources"] and "pids" not in default["linux"]["resources"]


@pytest.mark.parametrize(("text", "message"), [
    ("nofile", "expected TYPE=SOFT"), ("bogus=1", "unknown type"), ("nofile=a", "integers"),
    ("nofile=10:5", "must not exceed"), ("nofile=-5", "0 or more"),
])
def test_bad_ulimits_are_one_line_errors(text: str, message: str) -> None:
    from pybuild.errors import ConfigError
    from pybuild.worker.sandbox import parse_ulimit

    with pytest.raises(ConfigError, match=message) as info:
        parse_ulimit(text)
    assert "--ulimit" in str(info.value) and "\n" not in str(info.value)


def test_sizes_and_limit_flags() -> None:
    from pybuild.errors import ConfigError
    from pybuild.units import human_size
    from pybuild.worker.sandbox import make_sandbox, parse_size

    assert parse_size("64m", "--shm-size") == 64 * 1024 * 1024
    assert parse_size("1.5GiB", "--memory") == 3 * 1024 ** 3 // 2
    assert parse_size("512k", "x") == 524288 and parse_size("100", "x") == 100
    assert parse_size("2 GB", "x") == 2 << 30
    assert human_size(64 << 20, trim=True) == "64 MiB" and human_size(100, trim=True) == "100 B"
    for kwargs, message in (({"shm_size": "lots"}, "--shm-size"), ({"memory": "1k"}, "minimum"),
                            ({"shm_size": "0"}, "more than 0"), ({"pids_limit": -2}, "--pids-limit")):
        with pytest.raises(ConfigError, match=message):
            make_sandbox(**kwargs)  # type: ignore[arg-type]
    assert make_sandbox(pids_limit=-1).pids == 0 and make_sandbox().shm_size == 64 << 20


MOUNTINFO_V1 = """\
25 24 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
31 25 0:28 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
"""
PROC_CGROUPS = "#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t4\t10\t1\npids\t8\t2\t1\n"


def test_missing_controllers_on_v1() -> None:
    from pybuild.worker.sandbox import missing_controllers

    missing = missing_controllers(("memory", "pids"), mountinfo=MOUNTINFO_V1, proc_cgroups=PROC_CGROUPS,
                                  rootless=False)
    assert list(missing) == ["pids"] and "no cgroup v1 hierarchy" in missing["pids"]
    rootless = missing_controllers(("memory",), mountinfo=MOUNTINFO_V1, proc_cgroups=PROC_CGROUPS,
                                   rootless=True)
    assert "rootless" in rootless["memory"]
    disabled = missing_controllers(("memory",), mountinfo=MOUNTINFO_V1, rootless=False,
                                   proc_cgroups=PROC_CGROUPS.replace("memory\t4\t10\t1", "memory\t0\t1\t0"))
    assert "disabled" in disabled["memory"]


def test_missing_controllers_on_v2(tmp_path: Path) -> None:
    from pybuild.worker.sandbox import missing_controllers

    (tmp_path / "cgroup.controllers").write_text("cpu io memory\n")
    mountinfo = f"25 24 0:22 / {tmp_path} rw,nosuid - cgroup2 cgroup2 rw\n"
    missing = missing_controllers(("memory", "pids"), mountinfo=mountinfo, proc_cgroups=PROC_CGROUPS,
                                  rootless=False, unified_root=str(tmp_path))
    assert list(missing) == ["pids"] and "cgroup.controllers" in missing["pids"]


def test_limit_failures_are_explained() -> None:
    from pybuild.errors import StepFailed
    from pybuild.worker.sandbox import explain_failure, make_sandbox

    exc = StepFailed('process "/bin/sh -c x" did not complete successfully: exit code: 137')
    sandbox = make_sandbox(memory="64m", pids_limit=20)
    assert explain_failure(exc, sandbox, 137, ()) == "RUN was killed: out of memory (limit 64 MiB)"
    assert explain_failure(exc, make_sandbox(), 137, ()) is None  # no limit: the exit code says it all
    pids = explain_failure(exc, sandbox, 2, ("sh: can't fork: Resource temporarily unavailable",))
    assert pids is not None and "pids limit (20 processes)" in pids
    assert explain_failure(exc, sandbox, 1, ("boom",)) is None


def test_entitlements() -> None:
    from pybuild.entitlements import parse_allow, require
    from pybuild.errors import ConfigError, UserError

    both = {"network.host", "security.insecure"}
    assert parse_allow(["network.host,security.insecure", "network.host"]) == both
    with pytest.raises(ConfigError, match="unknown entitlement 'bogus'"):
        parse_allow(["network.host,bogus"])
    require("network.host", {"network.host"}, "--network host")
    with pytest.raises(UserError, match="^--network host: network.host is not allowed$") as info:
        require("network.host", set(), "--network host")
    assert info.value.hint == "pass --allow network.host to grant it"


def test_swap_is_limited_only_where_it_is_accounted(tmp_path: Path) -> None:
    from pybuild.worker.sandbox import swap_accounted

    v1 = tmp_path / "memory"
    v1.mkdir()
    assert not swap_accounted(str(v1))  # a v1 memory hierarchy without memory.memsw.*
    (v1 / "memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")
    swap_accounted.cache_clear()  # it is read once per process
    assert swap_accounted(str(v1)) and swap_accounted(str(tmp_path / "v2-only"))


def test_check_plan_names_the_line_or_the_flag() -> None:
    from pybuild.entitlements import check_plan
    from pybuild.errors import UserError
    from pybuild.plan.ops import ExecOp
    from pybuild.source import Span

    def run(**kwargs: Any) -> ExecOp:
        return ExecOp(input="x", args=("true",), env=(), spans=(Span("Dockerfile", 3, 1),), **kwargs)

    ops = {"a": run(), "b": run(network="none"), "c": run(network="host"), "d": run(security="insecure")}
    check_plan(ops, ["a", "b"], set(), "default")
    check_plan(ops, ["b"], set(), "host")  # no RUN takes the flag's network: nothing to grant
    with pytest.raises(UserError, match="^--network host: network.host is not allowed$") as info:
        check_plan(ops, ["b", "a"], set(), "host")
    assert info.value.span is None  # the flag is at fault, not a line
    with pytest.raises(UserError, match="RUN --network=host: network.host") as info:
        check_plan(ops, ["c"], {"security.insecure"}, "default")
    assert info.value.span is not None and info.value.span.line == 3
    with pytest.raises(UserError, match="RUN --security=insecure: security.insecure"):
        check_plan(ops, ["a", "d"], {"network.host"}, "host")
    check_plan(ops, list(ops), {"network.host", "security.insecure"}, "host")


def test_ulimits_above_our_own_need_cap_sys_resource() -> None:
    from pybuild.errors import ConfigError
    from pybuild.worker.sandbox import check_ulimit

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    need(hard != resource.RLIM_INFINITY, "this process has no RLIMIT_NOFILE hard limit")
    check_ulimit(("RLIMIT_NOFILE", 10, hard), status="CapEff:\t0000000000000000\n")  # at our own: fine
    above = ("RLIMIT_NOFILE", 10, hard + 1)
    with pytest.raises(ConfigError, match=f"above pybuild's own \\({hard}\\).*CAP_SYS_RESOURCE"):
        check_ulimit(above, status="CapEff:\t0000000000000000\n")
    with open("/proc/sys/fs/nr_open", encoding="ascii") as handle:
        nr_open = int(handle.read())
    if hard + 1 <= nr_open:
        check_ulimit(above, status=f"CapEff:\t{1 << 24:016x}\n")  # CAP_SYS_RESOURCE may raise it
    with pytest.raises(ConfigError, match="fs.nr_open"):
        check_ulimit(("RLIMIT_NOFILE", 10, nr_open + 1), status=f"CapEff:\t{1 << 24:016x}\n")


def _ptrace_allowed(rules: list[dict[str, Any]], request: int) -> bool:
    """Whether the ptrace rules of a resolved profile let `request` through (its default action is EPERM)."""
    for rule in rules:
        if rule["names"] != ["ptrace"] or rule["action"] != "SCMP_ACT_ALLOW":
            continue
        if not rule.get("args"):
            return True
        (arg,) = rule["args"]
        op, value = arg["op"], arg["value"]
        if (op == "SCMP_CMP_LT" and request < value) or (op == "SCMP_CMP_GT" and request > value) or (
                op == "SCMP_CMP_MASKED_EQ" and request & value == arg.get("valueTwo", 0)):
            return True
    return False


def test_ptrace_attach_and_seize_are_the_only_requests_refused() -> None:
    from pybuild.worker.seccomp import oci_profile

    rules = oci_profile(spec.DEFAULT_CAPABILITIES, kernel=(6, 1))["syscalls"]
    refused = [r for r in [*range(0x4400), 1 << 32, (1 << 64) - 1] if not _ptrace_allowed(rules, r)]
    assert refused == [16, 0x4206]  # PTRACE_ATTACH, PTRACE_SEIZE
    with_cap = oci_profile((*spec.DEFAULT_CAPABILITIES, "CAP_SYS_PTRACE"), kernel=(6, 1))["syscalls"]
    assert _ptrace_allowed(with_cap, 16) and _ptrace_allowed(with_cap, 0x4206)
    old_kernel = oci_profile(spec.DEFAULT_CAPABILITIES, kernel=(4, 4))["syscalls"]
    assert not any(_ptrace_allowed(old_kernel, r) for r in (0, 16, 0x4206))  # docker: no ptrace before 4.8
