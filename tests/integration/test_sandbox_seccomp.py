"""Docker's seccomp profile and the entitlements, end to end: real runc and crun, the busybox base, the CLI.

A tiny static C program (compiled here with gcc) makes the raw syscalls busybox has no applet for and prints
`name=OK` or `name=<errno name>` for each: keyctl, ptrace attach, process_vm_readv, kcmp.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.bases import need
from tests.integration.test_build import cli, files_of, make_context

pytestmark = pytest.mark.root

PROBE_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *name, long rc) {
    printf("probe %s=%s\n", name, rc == -1 ? strerrorname_np(errno) : "OK");
}

int main(void) {
    report("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 1));
    pid_t child = fork();
    if (child == 0) { pause(); _exit(0); }
    char here[8] = "abcdefg", buf[8];
    struct iovec local = {buf, 8}, remote = {here, 8};
    report("process_vm_readv", syscall(SYS_process_vm_readv, child, &local, 1, &remote, 1, 0));
    report("kcmp", syscall(SYS_kcmp, getpid(), child, 0, 0, 0));
    long rc = syscall(SYS_ptrace, PTRACE_ATTACH, child, 0, 0);
    report("ptrace_attach", rc);
    if (rc == 0) { waitpid(child, 0, __WALL); syscall(SYS_ptrace, PTRACE_DETACH, child, 0, 0); }
    rc = syscall(SYS_ptrace, PTRACE_SEIZE, child, 0, 0);
    report("ptrace_seize", rc);
    if (rc == 0) syscall(SYS_ptrace, PTRACE_DETACH, child, 0, 0);
    kill(child, SIGKILL);
    waitpid(child, 0, 0);
    /* tracing a child that asks for it (how `strace CMD` and `gdb CMD` start) */
    pid_t traced = fork();
    if (traced == 0) { syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0); raise(SIGSTOP); _exit(7); }
    int status = 0;
    waitpid(traced, &status, 0);
    rc = WIFSTOPPED(status) ? syscall(SYS_ptrace, PTRACE_CONT, traced, 0, 0) : -1;
    waitpid(traced, &status, 0);
    report("ptrace_traceme", rc == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 7 ? 0 : -1);
    fflush(stdout);
    return 0;
}
"""

SYSCALLS = """\
echo "unshare: $(unshare -U true 2>&1 && echo OK)"
mkdir -p /m && echo "mount: $(mount -t tmpfs none /m 2>&1 && echo OK && umount /m)"
/probe
grep -E '^(Seccomp|CapEff):' /proc/self/status
"""


def runtimes() -> list[str]:
    return ["runc", "crun"]


@pytest.fixture(params=runtimes())
def runtime(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    need(shutil.which(name) is not None, f"{name} not installed")
    return name


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need(shutil.which("gcc") is not None, "gcc not installed (the syscall probe is compiled in the test)")
    tmp = tmp_path_factory.mktemp("probe")
    (tmp / "probe.c").write_text(PROBE_C)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(tmp / "probe"), str(tmp / "probe.c")], check=True,
                   capture_output=True)
    return tmp / "probe"


def run_lines(stderr: str) -> dict[str, str]:
    """`name: value` / `probe name=value` lines a RUN printed, from plain progress (`#3 0.052 text`)."""
    out: dict[str, str] = {}
    for line in stderr.splitlines():
        words = line.split(" ", 2)
        if len(words) < 3 or not words[0].startswith("#"):
            continue
        text = words[2]
        if text.startswith("probe "):
            name, _, value = text[6:].partition("=")
            out[name] = value
        elif text.split(":")[0] in ("unshare", "mount", "Seccomp", "CapEff"):
            name, _, value = text.partition(":")
            out[name] = value.strip()
    return out


def test_default_profile_blocks_unshare_mount_keyctl_and_ptrace_class_calls(
        root: str, tmp_path: Path, probe: Path, runtime: str) -> None:
    ctx = make_context(tmp_path, f"FROM busybox:latest\nCOPY probe /probe\nRUN <<EOF\n{SYSCALLS}EOF\n")
    shutil.copy(probe, ctx / "probe")
    proc = cli(root, "build", "--progress=plain", "--runtime", runtime, str(ctx))
    assert proc.returncode == 0, proc.stderr
    seen = run_lines(proc.stderr)
    assert seen["Seccomp"] == "2"  # a filter is installed
    assert "Operation not permitted" in seen["unshare"]  # unshare(CLONE_NEWUSER): EPERM
    assert "permission denied" in seen["mount"] and "OK" not in seen["mount"]
    assert seen["keyctl"] == "EPERM"
    assert seen["process_vm_readv"] == "EPERM" and seen["kcmp"] == "EPERM"  # CAP_SYS_PTRACE-only there
    # docker's profile allows ptrace(2) whole on kernels >= 4.8; pybuild's narrows it: no attaching to a
    # running process, while a child that asks to be traced (strace CMD, gdb CMD) still is
    assert seen["ptrace_attach"] == "EPERM" and seen["ptrace_seize"] == "EPERM"
    assert seen["ptrace_traceme"] == "OK"

    insecure = make_context(_subdir(tmp_path, "insecure"), "FROM busybox:latest\nCOPY probe /probe\n"
                                      f"RUN --security=insecure <<EOF\n{SYSCALLS}EOF\n")
    shutil.copy(probe, insecure / "probe")
    proc = cli(root, "build", "--progress=plain", "--runtime", runtime, "--allow", "security.insecure",
               str(insecure))
    assert proc.returncode == 0, proc.stderr
    seen = run_lines(proc.stderr)
    assert seen["Seccomp"] == "0"  # no filter: the profile is what blocked the calls above
    assert seen["mount"] == "OK"
    assert seen["keyctl"] == "OK" and seen["process_vm_readv"] == "OK" and seen["kcmp"] == "OK"
    assert seen["ptrace_attach"] == "OK" and seen["ptrace_seize"] == "OK"
    cap_sys_admin = 1 << 21
    assert int(seen["CapEff"], 16) & cap_sys_admin


NEEDS_HOST = "FROM busybox:latest\nRUN echo marker-ran-first\nRUN --network=host echo host-net\n"
NEEDS_INSECURE = "FROM busybox:latest\nRUN echo marker-ran-first\nRUN --security=insecure echo insecure\n"


@pytest.mark.parametrize(("dockerfile", "flags", "message"), [
    (NEEDS_HOST, (), "error: Dockerfile:3:1: RUN --network=host: network.host is not allowed"),
    (NEEDS_INSECURE, (), "error: Dockerfile:3:1: RUN --security=insecure: security.insecure is not allowed"),
    ("FROM busybox:latest\nRUN echo marker-ran-first\n", ("--network", "host"),
     "error: --network host: network.host is not allowed"),
    (NEEDS_INSECURE, ("--allow", "network.host"),
     "error: Dockerfile:3:1: RUN --security=insecure: security.insecure is not allowed"),
])
def test_entitlement_missing_is_one_line_before_anything_runs(
        root: str, tmp_path: Path, dockerfile: str, flags: tuple[str, ...], message: str) -> None:
    ctx = make_context(tmp_path, dockerfile)
    proc = cli(root, "build", "--progress=plain", *flags, str(ctx))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [message]
    entitlement = message.split(": ")[-1].split()[0]
    assert f"hint: pass --allow {entitlement} to grant it" in proc.stderr
    # no step started (plain progress numbers each step: `#2 [stage-0 2/3] RUN ...`, `#2 0.051 output`)
    assert not [line for line in proc.stderr.splitlines() if line.startswith("#") and "RUN" in line]
    assert not [line for line in proc.stderr.splitlines() if line.startswith("#") and "marker" in line]


def test_entitlements_granted_let_both_run(root: str, tmp_path: Path, runtime: str) -> None:
    dockerfile = ("FROM busybox:latest\nRUN --network=host ip -o link | grep -c . > /links\n"
                  "RUN --security=insecure grep CapEff /proc/self/status > /caps\n")
    ctx = make_context(tmp_path, dockerfile)
    proc = cli(root, "build", "-t", "granted:1", "--progress=plain", "--runtime", runtime,
               "--allow", "network.host", "--allow", "security.insecure", str(ctx))
    assert proc.returncode == 0, proc.stderr
    other = make_context(_subdir(tmp_path, "b"), "FROM busybox:latest\nRUN true\n")
    host_net = cli(root, "build", "--progress=plain", "--runtime", runtime, "--network", "host",
                   "--allow", "network.host,security.insecure", str(other))
    assert host_net.returncode == 0, host_net.stderr
    # the host's network: its interfaces are seen (a namespace of our own would have only lo, or lo + tap)
    host_links = len(os.listdir("/sys/class/net"))
    files = files_of(root, "granted:1")
    assert int(files["links"]) == host_links
    assert int(files["caps"].split()[1], 16) & (1 << 21)  # CAP_SYS_ADMIN


def _subdir(tmp_path: Path, name: str) -> Path:
    (tmp_path / name).mkdir()
    return tmp_path / name
