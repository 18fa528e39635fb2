"""The executor with real runc and crun on a busybox rootfs: output, exit codes, users, network, limits,
stdin, timeouts, cancellation, Ctrl-C, and that nothing leaks (containers, bundle dirs, mounts, processes).

Needs root and the runtimes; skips with a reason locally when they are missing, fails in CI (CI set), where
scripts/setup.sh installs runc and crun and mounts hugetlb as a v1 hierarchy for crun.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import secrets
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
from typing import Any

import pytest

from pybuild.errors import StepFailed
from pybuild.worker import executor
from pybuild.worker.executor import (
    ProcessCancelled,
    ProcessFailed,
    ProcessTimedOut,
    RuntimeFailed,
    run_process,
)
from pybuild.worker.types import NetworkMode, ProcessSpec
from pybuild.worker.users import UserNotFound
from tests.bases import need

pytestmark = [pytest.mark.root, pytest.mark.tools]

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "echo", "cat", "id", "hostname", "ls", "wget", "nc", "sleep", "true", "false", "wc", "grep")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["runc", "crun"])
def runtime(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    need(os.geteuid() == 0, "needs root")
    need(shutil.which(name) is not None, f"{name} not installed")
    return name


@pytest.fixture
def marker() -> str:
    """A unique `sleep` duration, to find this test's container processes (and only them) in /proc."""
    return str(7_000_000 + secrets.randbelow(1_000_000))


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox-static rootfs: /bin applets, /etc/passwd with root and app (1000), /etc/group."""
    need(os.path.exists(BUSYBOX), "busybox-static not installed")
    root = tmp_path_factory.mktemp("rootfs")
    (root / "bin").mkdir()
    (root / "tmp").mkdir(mode=0o1777)
    (root / "etc").mkdir()
    (root / "home/app").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    for applet in APPLETS:
        os.symlink("busybox", root / "bin" / applet)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\napp:x:1000:\nstaff:x:50:app\n")
    return root


def mounts_mentioning(*paths: Path) -> set[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        return {line for line in handle if any(str(p) in line for p in paths)}


def leftover_processes(marker: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                pids.append(int(entry))
    return pids


@pytest.fixture
def no_leaks(rootfs: Path, runtime: str) -> Iterator[None]:
    """After the test: no container under the private root, no bundle dir, no new mount."""
    store = Path(executor.run_dir())
    before = mounts_mentioning(rootfs, store)
    yield
    state = executor.state_root(runtime)
    listed = subprocess.run([runtime, "--root", state, "list", "-q"], capture_output=True, text=True, check=False)
    assert listed.stdout.strip() == ""
    assert [p.name for p in Path(state).iterdir()] == [] if Path(state).exists() else True
    bundles = store / "bundles"
    assert not bundles.exists() or list(bundles.iterdir()) == []
    assert mounts_mentioning(rootfs, store) == before


def run(rootfs: Path, runtime: str, script: str, spec: dict[str, Any] | None = None,
        **kwargs: Any) -> tuple[executor.RunResult, bytes]:
    chunks: list[bytes] = []
    process = ProcessSpec(args=("/bin/sh", "-c", script), **(spec or {}))
    result = run_process(str(rootfs), process, runtime=runtime,
                         output=lambda _name, chunk: chunks.append(chunk), **kwargs)
    return result, b"".join(chunks)


@pytest.mark.usefixtures("no_leaks")
class TestRuns:
    def test_echo_output_is_streamed(self, rootfs: Path, runtime: str) -> None:
        streams: list[str] = []
        result = run_process(str(rootfs), ProcessSpec(args=("/bin/sh", "-c", "echo hello; echo oops >&2")),
                             runtime=runtime, output=lambda name, _chunk: streams.append(name))
        assert result.exit_code == 0 and result.duration > 0
        assert set(result.tail) == {"hello", "oops"}
        assert sorted(set(streams)) == ["stderr", "stdout"]

    def test_exit_code_and_tail(self, rootfs: Path, runtime: str) -> None:
        script = "for i in $(seq 1 30); do echo line$i; done; exit 3"
        with pytest.raises(StepFailed) as info:
            run(rootfs, runtime, script)
        error = info.value
        assert isinstance(error, ProcessFailed) and not isinstance(error, RuntimeFailed)
        assert str(error) == f'process "/bin/sh -c {script}" did not complete successfully: exit code: 3'
        assert error.exit_code == 3
        assert error.tail == tuple(f"line{i}" for i in range(11, 31))

    def test_false(self, rootfs: Path, runtime: str) -> None:
        with pytest.raises(ProcessFailed, match='^process "/bin/false" did not complete successfully: exit code: 1$'):
            run_process(str(rootfs), ProcessSpec(args=("/bin/false",)), runtime=runtime)

    def test_missing_executable_is_a_clear_runtime_error(self, rootfs: Path, runtime: str) -> None:
        with pytest.raises(RuntimeFailed, match='^process "nope" did not complete successfully: .*nope.*') as info:
            run_process(str(rootfs), ProcessSpec(args=("nope",)), runtime=runtime)
        assert "\n" not in str(info.value)

    def test_user_app(self, rootfs: Path, runtime: str) -> None:
        _, out = run(rootfs, runtime, "id -u; id -g; id -G", spec={"user": "app"})
        assert out.split() == [b"1000", b"1000", b"1000", b"50"]
        _, out = run(rootfs, runtime, "id -u; id -g", spec={"user": "4242:4343"})
        assert out.split() == [b"4242", b"4343"]

    def test_unknown_user(self, rootfs: Path, runtime: str) -> None:
        with pytest.raises(UserNotFound, match="unable to find user foo: no matching entries in passwd file"):
            run(rootfs, runtime, "true", spec={"user": "foo"})

    def test_cwd_env_and_default_path(self, rootfs: Path, runtime: str) -> None:
        _, out = run(rootfs, runtime, 'pwd; echo "$PATH"; echo "$FOO"', spec={"cwd": "/tmp", "env": ("FOO=bar",)})
        assert out.decode().splitlines() == ["/tmp", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                             "bar"]
        _, out = run(rootfs, runtime, 'echo "$PATH"', spec={"env": ("PATH=/bin",)})
        assert out == b"/bin\n"

    def test_hostname_hosts_resolv(self, rootfs: Path, runtime: str) -> None:
        _, out = run(rootfs, runtime, "hostname; cat /etc/hostname; grep -c localhost /etc/hosts; "
                                      "grep -c nameserver /etc/resolv.conf; { echo x > /etc/hosts; } 2>/dev/null || echo ro")
        lines = out.decode().split()
        assert lines[:2] == ["pybuild", "pybuild"]
        assert int(lines[2]) >= 1 and int(lines[3]) >= 1 and "ro" in lines
        # bind-mounted, so the rootfs itself holds at most an empty mount-point file
        assert not (rootfs / "etc/hostname").exists() or (rootfs / "etc/hostname").stat().st_size == 0

    def test_network_none_has_only_loopback(self, rootfs: Path, runtime: str) -> None:
        _, out = run(rootfs, runtime, "cat /proc/net/dev", network="none")
        interfaces = [line.split(":")[0].strip() for line in out.decode().splitlines()[2:]]
        assert interfaces == ["lo"]

    @pytest.mark.parametrize("network", ["default", "host", "none"])
    def test_outbound_tcp(self, rootfs: Path, runtime: str, network: NetworkMode) -> None:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        port = server.server_address[1]
        raw = socket.create_server(("127.0.0.1", 0))
        raw.settimeout(30)
        raw_port = raw.getsockname()[1]
        received: list[bytes] = []

        def answer() -> None:  # busybox nc exits only when the peer closes
            with contextlib.suppress(OSError):
                conn, _ = raw.accept()
                with conn:
                    received.append(conn.recv(16))
        acceptor = threading.Thread(target=answer, daemon=True)
        acceptor.start()
        try:
            # (busybox-static 1.35 wget segfaults with -T, so no timeout flag)
            script = f"wget -q -O- http://127.0.0.1:{port}/ && echo hi | nc 127.0.0.1 {raw_port}"
            if network != "host":  # `default` is isolated too: no route to the host's loopback
                with pytest.raises(ProcessFailed):
                    run(rootfs, runtime, script, network=network)
                assert received == []
            else:
                _, out = run(rootfs, runtime, script, network=network)
                assert out == b"hello from the host"
                acceptor.join(timeout=10)
                assert received == [b"hi\n"]
        finally:
            server.shutdown()
            server.server_close()
            raw.close()

    def test_rlimit_nofile(self, rootfs: Path, runtime: str) -> None:
        _, out = run(rootfs, runtime, "ulimit -n; ulimit -Hn")
        soft, hard = (int(x) for x in out.split())
        assert soft == hard <= 1048576
        assert hard <= (os.sysconf("SC_OPEN_MAX") if hard != 1048576 else hard)

    def test_stdin(self, rootfs: Path, runtime: str) -> None:
        data = b"line one\nline two\n" * 10000  # bigger than a pipe buffer
        _, out = run(rootfs, runtime, "cat", spec={"stdin": data})
        assert out == data
        _, out = run(rootfs, runtime, "cat; echo end")  # no stdin: /dev/null
        assert out == b"end\n"

    def test_timeout_kills_and_cleans(self, rootfs: Path, runtime: str, marker: str) -> None:
        start = time.monotonic()
        with pytest.raises(ProcessTimedOut, match="timed out after 1s"):
            run(rootfs, runtime, f"echo started; sleep {marker}", timeout=1)
        assert time.monotonic() - start < 8
        assert leftover_processes(marker) == []

    def test_cancel_event(self, rootfs: Path, runtime: str, marker: str) -> None:
        cancel = threading.Event()
        timer = threading.Timer(0.5, cancel.set)
        timer.start()
        start = time.monotonic()
        with pytest.raises(ProcessCancelled, match="was cancelled"):
            run(rootfs, runtime, f"sleep {marker}", cancel=cancel)
        timer.cancel()
        assert time.monotonic() - start < 8
        assert leftover_processes(marker) == []

    def test_cancel_before_start(self, rootfs: Path, runtime: str, marker: str) -> None:
        cancel = threading.Event()
        cancel.set()
        with pytest.raises(ProcessCancelled):
            run(rootfs, runtime, f"sleep {marker}", cancel=cancel)
        assert leftover_processes(marker) == []

    def test_failing_output_sink_does_not_break_the_run(self, rootfs: Path, runtime: str) -> None:
        def broken(_name: str, _chunk: bytes) -> None:
            raise RuntimeError("display gone")
        result = run_process(str(rootfs), ProcessSpec(args=("/bin/sh", "-c", "echo a; echo b")),
                             runtime=runtime, output=broken)
        assert result.tail == ("a", "b")

    def test_env_is_in_no_file_while_the_process_runs(self, rootfs: Path, runtime: str, marker: str) -> None:
        """config.json is a symlink to a memfd of this process; runc's state holds no env, and crun's copy
        of config.json gets an empty env as soon as crun writes it."""
        value = "exec-env-" + secrets.token_hex(12)
        ready = threading.Event()
        cancel = threading.Event()
        failure: list[BaseException] = []

        def sink(_name: str, chunk: bytes) -> None:
            if b"ready" in chunk:
                ready.set()

        def target() -> None:
            try:
                script = f'test "${{#V}}" = {len(value)} && echo ready && sleep {marker}'  # no value in args
                run_process(str(rootfs), ProcessSpec(args=("/bin/sh", "-c", script), env=(f"V={value}",)),
                            runtime=runtime, output=sink, cancel=cancel)
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                failure.append(exc)

        thread = threading.Thread(target=target)
        thread.start()
        try:
            assert ready.wait(30), failure
            (bundle,) = (Path(executor.run_dir()) / "bundles").iterdir()
            link = os.readlink(bundle / "config.json")
            assert link.startswith(f"/proc/{os.getpid()}/fd/")
            assert json.loads((bundle / "config.json").read_text())["process"]["env"][-1] == f"V={value}"
            held = [path for path in Path(executor.run_dir()).rglob("*")
                    if path.is_file() and not path.is_symlink() and value.encode() in path.read_bytes()]
            assert held == []
            (state,) = Path(executor.state_root(runtime)).iterdir()
            if runtime == "crun":
                assert json.loads((state / "config.json").read_text())["process"]["env"] == []
        finally:
            cancel.set()
            thread.join(30)
        assert isinstance(failure[0], ProcessCancelled), failure
        assert leftover_processes(marker) == []

    def test_sigint_in_a_subprocess(self, rootfs: Path, runtime: str, marker: str) -> None:
        child = textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {str(REPO)!r})
            from pybuild.worker.executor import run_process
            from pybuild.worker.types import ProcessSpec
            def out(name, chunk):
                sys.stdout.write(chunk.decode()); sys.stdout.flush()
            try:
                run_process({str(rootfs)!r}, ProcessSpec(args=("/bin/sh", "-c", "echo ready; sleep {marker}")),
                            runtime={runtime!r}, output=out)
            except KeyboardInterrupt:
                print("interrupted", flush=True)
                sys.exit(130)
        """)
        proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=20) == 130
            assert proc.stdout.read() == "interrupted\n"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert leftover_processes(marker) == []


def test_bundle_spec_is_a_memfd_unless_proc_is_another_pid_namespace(rootfs: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    process = ProcessSpec(args=("true",), env=("V=1",))
    with executor.prepare_bundle(str(rootfs), process) as bundle:
        config = Path(bundle.path) / "config.json"
        assert os.readlink(config).startswith(f"/proc/{os.getpid()}/fd/")
        assert json.loads(config.read_text())["process"]["env"][-1] == "V=1"
        with pytest.raises(OSError):  # sealed
            config.write_text("{}")
    assert not config.exists()
    monkeypatch.setattr(executor, "proc_is_ours", lambda: False)
    with executor.prepare_bundle(str(rootfs), process) as bundle:
        config = Path(bundle.path) / "config.json"
        assert not config.is_symlink() and json.loads(config.read_text())["process"]["env"][-1] == "V=1"


def test_missing_runtime_is_a_config_error(rootfs: Path) -> None:
    from pybuild.errors import ConfigError

    with pytest.raises(ConfigError, match="OCI runtime 'no-such-runtime' not found"):
        run_process(str(rootfs), ProcessSpec(args=("true",)), runtime="no-such-runtime")
    assert not (Path(executor.run_dir()) / "bundles").exists() or \
        list((Path(executor.run_dir()) / "bundles").iterdir()) == []


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = b"hello from the host"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass
