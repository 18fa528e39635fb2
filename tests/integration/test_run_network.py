"""The RUN network on the real pieces (runc and crun, slirp4netns, busybox): `default` is an isolated
namespace with outbound access and no route to the host's loopback, `none` has only `lo`, and nothing
(slirp4netns process, namespace) outlives a build, a failed RUN or a kill -9 of pybuild once the next build
has run.

The apt-get acceptance test (a RUN reaches the package mirror) is
`test_run_steps.py::test_apt_get_in_debian_base`, which runs on the `default` network.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pybuild.worker.executor import ProcessFailed, run_process
from pybuild.worker.types import NetworkMode, ProcessSpec
from tests.bases import debian_mirror, make_busybox_rootfs, need

pytestmark = pytest.mark.root
REPO = Path(__file__).resolve().parents[2]
PYBUILD = [sys.executable, "-m", "pybuild"]
RUNTIMES = ("runc", "crun")
NETNS = re.compile(r"net:\[(\d+)\]")


@pytest.fixture
def rootfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    need(os.geteuid() == 0, "needs root (namespaces, runc)")
    need(shutil.which("slirp4netns") is not None, "slirp4netns not installed")
    need(os.path.exists("/bin/busybox"), "busybox-static not installed")
    monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / "store"))
    return make_busybox_rootfs(tmp_path / "rootfs")


def run(rootfs: Path, script: str, network: NetworkMode = "default", runtime: str = "runc") -> str:
    """Run `script` with /bin/sh; its output (stdout and stderr) as text."""
    need(shutil.which(runtime) is not None, f"{runtime} not installed")
    out: list[bytes] = []
    run_process(str(rootfs), ProcessSpec(args=("/bin/sh", "-c", script)), network=network, runtime=runtime,
                output=lambda _stream, chunk: out.append(chunk), timeout=120)
    return b"".join(out).decode("utf-8", "replace")


class LoopbackServer:
    """A TCP server on the host's 127.0.0.1 that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.sendall(b"host-loopback-secret\n")
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    srv = LoopbackServer()
    yield srv
    srv.close()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_default_network_cannot_reach_the_hosts_loopback(rootfs: Path, server: LoopbackServer,
                                                         runtime: str) -> None:
    # 10.0.2.2 is slirp4netns's gateway, the one address that could lead to the host's 127.0.0.1
    script = (f"for a in 10.0.2.2 127.0.0.1; do nc -w 3 $a {server.port} </dev/null; echo $a rc=$?; done; "
              "busybox readlink /proc/self/ns/net")
    text = run(rootfs, script, runtime=runtime)
    assert "host-loopback-secret" not in text
    assert server.accepted == 0
    assert "10.0.2.2 rc=" in text and "127.0.0.1 rc=" in text
    # its own namespace, not the host's
    own = NETNS.search(text)
    assert own is not None and own.group(0) != os.readlink("/proc/self/ns/net")
    # control: the same script on the host's network does reach the server, so the check above can fail
    host = run(rootfs, f"nc -w 3 127.0.0.1 {server.port} </dev/null", network="host", runtime=runtime)
    assert "host-loopback-secret" in host and server.accepted == 1


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_default_network_sees_only_its_own_interfaces(rootfs: Path, runtime: str) -> None:
    """No host interface is visible (so an AF_PACKET socket can only capture the namespace's own lo and
    tap0, never the host's lo)."""
    text = run(rootfs, "busybox ip -o link; busybox ip route; cat /etc/resolv.conf", runtime=runtime)
    names = {m.group(1) for m in re.finditer(r"^\d+: ([^:@]+)[:@]", text, re.M)}
    assert names == {"lo", "tap0"}, text
    assert "default via 10.0.2.2 dev tap0" in text
    assert "nameserver" in text


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_default_network_reaches_the_mirror_over_tcp(rootfs: Path, runtime: str) -> None:
    host = urlsplit(debian_mirror()).hostname or "deb.debian.org"
    # stdin stays open until the answer is in: busybox nc may stop reading once its stdin ends
    script = f"{{ printf 'HEAD /debian/ HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n'; sleep 5; }} | nc -w 10 {host} 80"
    text = run(rootfs, script, runtime=runtime)
    assert text.startswith("HTTP/1."), text


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_none_network_has_only_loopback_and_no_way_out(rootfs: Path, runtime: str) -> None:
    host = urlsplit(debian_mirror()).hostname or "deb.debian.org"
    address = socket.gethostbyname(host)  # by address too, so a missing resolver is not the only obstacle
    request = f"{{ printf 'HEAD /debian/ HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n'; sleep 3; }}"
    script = (f"busybox ip -o link; for a in {host} {address}; do {request} | nc -w 5 $a 80; echo nc=$?; done; "
              "busybox readlink /proc/self/ns/net")
    text = run(rootfs, script, network="none", runtime=runtime)
    names = {m.group(1) for m in re.finditer(r"^\d+: ([^:@]+)[:@]", text, re.M)}
    assert names == {"lo"}, text
    assert "HTTP/1." not in text and text.count("nc=1") == 2, text
    # control: the same request on the default network gets an answer
    assert "HTTP/1." in run(rootfs, script, runtime=runtime)


def test_a_loopback_resolver_is_reached_through_the_forwarder(tmp_path: Path) -> None:
    """The host's resolv.conf names a resolver on its loopback (as systemd-resolved's 127.0.0.53): the RUN
    gets slirp4netns's forwarder 10.0.2.3, which asks it. Run in a private mount namespace whose
    /etc/resolv.conf names a tiny DNS server this test starts on 127.0.0.77."""
    need(os.geteuid() == 0 and shutil.which("unshare") is not None, "needs root and unshare")
    need(shutil.which("slirp4netns") is not None, "slirp4netns not installed")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.77\n")
    script = tmp_path / "dns_run.py"
    script.write_text(DNS_SCRIPT)
    env = {**os.environ, "PYBUILD_ROOT": str(tmp_path / "store"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f'mount --bind "$1" /etc/resolv.conf && exec "$2" "$3" "$4"', "sh", str(resolv), sys.executable,
         str(script), str(tmp_path / "rootfs")],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "nameserver 10.0.2.3" in proc.stdout
    assert "203.0.113.7" in proc.stdout, proc.stdout
    assert "queries=0" not in proc.stdout


DNS_SCRIPT = textwrap.dedent("""\
    import socket, struct, sys, threading
    from pathlib import Path
    from pybuild.worker.executor import run_process
    from pybuild.worker.types import ProcessSpec
    from tests.bases import make_busybox_rootfs

    queries = 0
    def serve(sock):
        global queries
        while True:
            data, addr = sock.recvfrom(512)
            queries += 1
            question = data[12:12 + data[12:].index(b"\\0") + 5]
            answers = 0
            tail = b""
            if question[-4:-2] == b"\\0\\1":  # an A query
                answers, tail = 1, b"\\xc0\\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes([203, 0, 113, 7])
            sock.sendto(data[:2] + b"\\x81\\x80" + struct.pack(">HHHH", 1, answers, 0, 0) + question + tail, addr)

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.77", 53))
    threading.Thread(target=serve, args=(sock,), daemon=True).start()
    rootfs = make_busybox_rootfs(Path(sys.argv[1]))
    out = []
    run_process(str(rootfs), ProcessSpec(args=("/bin/sh", "-c",
                "cat /etc/resolv.conf; busybox nslookup pybuild-test.example")),
                output=lambda _s, chunk: out.append(chunk), timeout=60)
    print(b"".join(out).decode(), f"queries={queries}")
""")


# --- nothing is left behind ---------------------------------------------------------------------------------


def slirps_of(pid: int) -> list[int]:
    """The slirp4netns processes serving a namespace of process `pid` (their argv names /proc/<pid>/fd/)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"slirp4netns") and any(f"/proc/{pid}/fd/".encode() in a for a in argv):
            found.append(int(entry))
    return found


def netns_holders(inode: str) -> list[str]:
    """/proc entries (a process's namespace or an open descriptor) that keep namespace `net:[inode]`."""
    target = f"net:[{inode}]"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        links = [f"/proc/{entry}/ns/net"]
        try:
            links += [f"/proc/{entry}/fd/{fd}" for fd in os.listdir(f"/proc/{entry}/fd")]
        except OSError:
            continue
        for link in links:
            try:
                if os.readlink(link) == target:
                    found.append(link)
            except OSError:
                continue
    return found


def build(root: str, ctx: Path, dockerfile: str) -> subprocess.Popen[str]:
    (ctx / "Dockerfile").write_text(dockerfile)
    return subprocess.Popen([*PYBUILD, "build", "--progress=plain", "--no-cache", str(ctx)],
                            env={**os.environ, "PYBUILD_ROOT": root}, cwd=REPO, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def namespaces_in(text: str) -> set[str]:
    return set(NETNS.findall(text))


def assert_gone(pid: int, inodes: set[str]) -> None:
    deadline = time.monotonic() + 5
    while (slirps_of(pid) or any(netns_holders(i) for i in inodes)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert slirps_of(pid) == [], f"slirp4netns of pybuild {pid} left running"
    for inode in inodes:
        assert netns_holders(inode) == [], f"network namespace {inode} still held"


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    path = tmp_path / "ctx"
    path.mkdir()
    return path


def test_nothing_left_after_a_build_and_a_failed_run(root: str, ctx: Path) -> None:
    need(shutil.which("slirp4netns") is not None, "slirp4netns not installed")
    proc = build(root, ctx, "FROM busybox:latest\nRUN busybox readlink /proc/self/ns/net\n"
                            "RUN busybox readlink /proc/self/ns/net\n")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    seen = namespaces_in(err)
    assert len(seen) == 2, err  # one namespace per RUN, never reused
    assert_gone(proc.pid, seen)

    proc = build(root, ctx, "FROM busybox:latest\nRUN busybox readlink /proc/self/ns/net && exit 3\n")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    seen = namespaces_in(err)
    assert len(seen) == 1, err
    assert_gone(proc.pid, seen)


def running_namespace(proc: subprocess.Popen[str]) -> str:
    """The namespace inode a build's sleeping RUN printed (read from its plain progress)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        match = NETNS.search(line)
        if match:
            return match.group(1)
    raise AssertionError("the RUN never printed its namespace")


def test_nothing_left_after_ctrl_c(root: str, ctx: Path) -> None:
    need(shutil.which("slirp4netns") is not None, "slirp4netns not installed")
    proc = build(root, ctx, "FROM busybox:latest\nRUN busybox readlink /proc/self/ns/net && sleep 60\n")
    inode = running_namespace(proc)
    assert slirps_of(proc.pid), "no slirp4netns serves the running RUN"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert_gone(proc.pid, {inode})


def test_nothing_left_after_kill_9_and_the_next_build(root: str, ctx: Path) -> None:
    need(shutil.which("slirp4netns") is not None, "slirp4netns not installed")
    proc = build(root, ctx, "FROM busybox:latest\nRUN busybox readlink /proc/self/ns/net && sleep 60\n")
    assert proc.stderr is not None
    inode = running_namespace(proc)
    assert slirps_of(proc.pid), "no slirp4netns serves the running RUN"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    deadline = time.monotonic() + 5
    while slirps_of(proc.pid) and time.monotonic() < deadline:  # its exit fd closed with pybuild
        time.sleep(0.05)
    assert slirps_of(proc.pid) == [], "slirp4netns outlived a killed pybuild"
    assert netns_holders(inode), "the killed build's container should still hold its namespace"

    after = build(root, ctx, "FROM busybox:latest\nRUN true\n")  # reaps the dead build's container
    _, err = after.communicate(timeout=120)
    assert after.returncode == 0, err
    assert_gone(after.pid, {inode})
    assert_gone(proc.pid, set())


# --- the pool -----------------------------------------------------------------------------------------------


def _gone(pid: int, timeout: float = 5.0) -> bool:
    """Whether process `pid` (a child of this process) exited and was reaped within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.02)
    return not os.path.exists(f"/proc/{pid}")


def test_pool_hands_out_fresh_prepared_namespaces_and_drains_idle_spares(monkeypatch: pytest.MonkeyPatch) -> None:
    need(os.geteuid() == 0, "needs root (namespaces)")
    need(shutil.which("slirp4netns") is not None, "slirp4netns not installed")
    from pybuild.worker import network

    monkeypatch.setattr(network, "IDLE_SECONDS", 0.5)
    pool = network.Pool()
    try:
        first = pool.take()  # none ready: made on the spot, and a spare is prepared behind it
        deadline = time.monotonic() + 10
        while not pool.ready and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(pool.ready) == 1
        spare = pool.ready[0]
        second = pool.take()
        assert second is spare
        inodes = {os.readlink(first.path), os.readlink(second.path)}
        assert len(inodes) == 2 and os.readlink("/proc/self/ns/net") not in inodes  # never reused, not ours
        slirps = [first.slirp.pid, second.slirp.pid]
        first.close()
        second.close()
        assert all(_gone(pid) for pid in slirps), "slirp4netns left after close"
        deadline = time.monotonic() + 10
        while not pool.ready and time.monotonic() < deadline:
            time.sleep(0.01)
        idle = pool.ready[0].slirp.pid
        assert _gone(idle, timeout=5), "an idle spare was not torn down"
        assert pool.ready == []
    finally:
        pool.close()
    assert pool.ready == []


# --- AF_PACKET: the host's lo cannot be captured ------------------------------------------------------------

SNIFF = r"""
socket(my $s, 17, 3, 0x0300) or die "socket: $!\n";   # AF_PACKET, SOCK_RAW, htons(ETH_P_ALL)
my ($packets, $hits, $end) = (0, 0, time + 4);
while (time < $end) {
    my $rin = ''; vec($rin, fileno($s), 1) = 1;
    next unless select(my $rout = $rin, undef, undef, 0.2);
    recv($s, my $buf, 65535, 0);
    $packets++;
    $hits++ if index($buf, "pybuild-sniff-marker") >= 0;
}
print "packets=$packets hits=$hits\n";
"""


@pytest.fixture
def debian_rootfs(tmp_path: Path) -> Iterator[str]:
    need(os.geteuid() == 0, "needs root (overlayfs, runc)")
    need(shutil.which("debootstrap") is not None, "debootstrap not installed")
    need(shutil.which("slirp4netns") is not None, "slirp4netns not installed")
    from pybuild.store.images import import_rootfs
    from pybuild.store.store import Store
    from pybuild.worker.snapshots import Snapshots
    from tests.bases import debian_rootfs_tar

    with Store.open(str(tmp_path / "store")) as store:
        image = import_rootfs(store, str(debian_rootfs_tar()), "debian:sniff")
        snaps = Snapshots.open(store)
        active = snaps.prepare(snaps.ensure_layers(store, image.diff_ids))
        try:
            yield active.rootfs
        finally:
            snaps.release(active)


def test_af_packet_cannot_capture_the_hosts_loopback(debian_rootfs: str, server: LoopbackServer) -> None:
    """While the host talks to itself on 127.0.0.1 (with a marker in every packet), a RUN with CAP_NET_RAW
    opens an AF_PACKET socket (perl, in the Debian base) and captures what it can: on `default` never the
    marker; on `host` (the control) the marker, so the check can fail."""
    stop = threading.Event()

    def chatter() -> None:
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", server.port), timeout=1) as conn:
                    conn.sendall(b"pybuild-sniff-marker\n")
            except OSError:
                pass
            time.sleep(0.05)

    talker = threading.Thread(target=chatter, daemon=True)
    talker.start()
    try:
        results = {}
        for network in ("default", "host"):
            out: list[bytes] = []
            run_process(debian_rootfs, ProcessSpec(args=("perl", "-e", SNIFF), env=("PATH=/usr/bin:/bin",)),
                        network=network, output=lambda _s, chunk: out.append(chunk), timeout=60)
            match = re.search(r"packets=(\d+) hits=(\d+)", b"".join(out).decode())
            assert match, out
            results[network] = (int(match.group(1)), int(match.group(2)))
    finally:
        stop.set()
        talker.join(timeout=5)
    assert results["default"][1] == 0, results
    assert results["host"][1] > 0, results
