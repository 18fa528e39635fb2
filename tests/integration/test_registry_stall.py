"""A hostile registry cannot hang a pull or a push (issue 15): the low-speed limit, the stall strikes and
the deadline of `pybuild.registry.bounds`, and the size caps of what is read whole.

A real `docker-registry` on loopback holds a tiny pushed image; `pybuild pull` / `push` (the CLI, in a
subprocess) go through a `FaultProxy` that drips or stalls one path. The bounds are shrunk through the
environment (a 1 KiB/s limit over 2 s), so each failing command ends in seconds; one `slow` test keeps the
defaults (30 s windows) and proves a drip and a stall fail a pull in under 3 minutes.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.errors import RegistryError
from pybuild.registry.client import RegistryClient
from pybuild.registry.push import push_image
from pybuild.store.images import import_rootfs, resolve_image
from pybuild.store.store import Store
from tests.registry_support import FaultProxy, RunningRegistry, SilentServer, start_registry, tiny_rootfs_tar

PYBUILD = [sys.executable, "-m", "pybuild"]
SHRUNK = {"PYBUILD_REGISTRY_SPEED_LIMIT": "1024", "PYBUILD_REGISTRY_SPEED_TIME": "2"}
STALLED = "stalled: less than 1024 bytes/s for 2 s (2 stalled attempts)"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RunningRegistry]:
    with start_registry(tmp_path) as running:
        yield running


@pytest.fixture
def pushed(registry: RunningRegistry, tmp_path: Path) -> tuple[str, dict[str, object]]:
    """A tiny image pushed as `tiny:1` (a 64 KiB random file, so its gzip layer is ~64 KiB); the store
    holding it, and the manifest as pushed."""
    tar_path = tiny_rootfs_tar(tmp_path / "tiny.tar")
    root = str(tmp_path / "source")
    with Store.open(root) as store:
        import_rootfs(store, str(tar_path), "tiny:1")
        result = push_image(store, resolve_image(store, "tiny:1"), f"{registry.host}/tiny:1")
    with RegistryClient(registry.host) as client:
        manifest: dict[str, object] = json.loads(client.get_manifest("tiny", result.digest)[0])
    return root, manifest


def layer_of(manifest: dict[str, object]) -> dict[str, object]:
    layers = manifest["layers"]
    assert isinstance(layers, list)
    layer: dict[str, object] = layers[0]
    return layer


def cli(root: str, *args: str,
        env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run pybuild with `env` added; the process and how long it took."""
    full = {**os.environ, "PYBUILD_ROOT": root, **(env or {})}
    full.pop("CI", None)
    start = time.monotonic()
    proc = subprocess.run([*PYBUILD, *args], env=full, text=True, capture_output=True, check=False,
                          timeout=300)
    return proc, time.monotonic() - start


def error_of(proc: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a command that failed with exit 1 (no traceback)."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def assert_nothing_stored(root: str) -> None:
    with Store.open(root) as store:
        assert store.index.list_tags() == [] and store.index.images() == []
        assert os.listdir(store.blobs.tmp_dir) == []


def pull_stalls(root: str, proxy: FaultProxy, subject: str) -> subprocess.CompletedProcess[str]:
    """`pybuild pull PROXY/tiny:1` with the shrunk bounds: it fails in seconds, with `subject` stalled,
    storing nothing."""
    proc, took = cli(root, "pull", f"{proxy.host}/tiny:1", env=SHRUNK)
    assert error_of(proc) == f"error: {subject} {STALLED}"
    assert took < 15, took
    assert_nothing_stored(root)
    return proc


def blob_gets(proxy: FaultProxy, digest: object) -> list[dict[str, str]]:
    return [headers for _, _, headers in proxy.matching("GET", f"/blobs/{digest}")]


# --- a dripping or stalled download -------------------------------------------------------------------------


def test_a_dripping_blob_fails_the_pull_fast(pushed: tuple[str, dict[str, object]], registry: RunningRegistry,
                                             tmp_path: Path) -> None:
    layer = layer_of(pushed[1])
    fresh = str(tmp_path / "fresh")
    with FaultProxy(registry.host) as proxy:
        proxy.drip(f"/blobs/{layer['digest']}", every=0.25, count=10)  # 4 bytes/s: data keeps coming
        proc = pull_stalls(fresh, proxy, f"blob {layer['digest']} from registry {proxy.host}")
        gets = blob_gets(proxy, layer["digest"])
    assert "hint: a slow link? PYBUILD_REGISTRY_SPEED_LIMIT" in proc.stderr
    # the second attempt resumed where the first stopped, and was bounded as well
    assert len(gets) == 2 and "Range" not in gets[0]
    assert gets[1]["Range"].startswith("bytes=") and gets[1]["Range"] != "bytes=0-"


@pytest.mark.parametrize("fault", ["stall after the headers", "drip the headers"])
def test_a_blob_stalled_or_dripping_its_headers_fails_the_pull(
        fault: str, pushed: tuple[str, dict[str, object]], registry: RunningRegistry, tmp_path: Path) -> None:
    layer = layer_of(pushed[1])
    fresh = str(tmp_path / "fresh")
    with FaultProxy(registry.host) as proxy:
        if fault == "stall after the headers":
            proxy.stall(f"/blobs/{layer['digest']}", count=10)
        else:
            proxy.drip(f"/blobs/{layer['digest']}", every=0.2, head=True, count=10)  # a byte at a time
        pull_stalls(fresh, proxy, f"blob {layer['digest']} from registry {proxy.host}")


def test_a_registry_that_never_answers_fails_the_pull(pushed: tuple[str, dict[str, object]],
                                                      registry: RunningRegistry, tmp_path: Path) -> None:
    fresh = str(tmp_path / "fresh")
    with FaultProxy(registry.host) as proxy:
        proxy.stall("/manifests/", answer=False, count=10)
        pull_stalls(fresh, proxy, f"manifest {proxy.host}/tiny:1")


def test_a_token_server_that_never_answers_fails_the_pull(pushed: tuple[str, dict[str, object]],
                                                          registry: RunningRegistry, tmp_path: Path) -> None:
    fresh = str(tmp_path / "fresh")
    with SilentServer() as silent, FaultProxy(registry.host) as proxy:
        proxy.reply(r"^/v2/", status=401, count=100,
                    headers=[("WWW-Authenticate", f'Bearer realm="http://{silent.host}/token",service="x"')])
        pull_stalls(fresh, proxy, f"token server of registry {proxy.host}")


def test_one_stall_is_retried_and_the_download_resumes(pushed: tuple[str, dict[str, object]],
                                                       registry: RunningRegistry, tmp_path: Path) -> None:
    layer = layer_of(pushed[1])
    fresh = str(tmp_path / "fresh")
    with FaultProxy(registry.host) as proxy:
        proxy.drip(f"/blobs/{layer['digest']}", every=0.5, size=500, count=1)  # 1000 B/s: below the limit
        proc, took = cli(fresh, "pull", f"{proxy.host}/tiny:1", env=SHRUNK)
        gets = blob_gets(proxy, layer["digest"])
    assert proc.returncode == 0, proc.stderr
    assert len(gets) == 2 and int(gets[1]["Range"][len("bytes="):-1]) >= 1000
    with Store.open(fresh) as store:
        image = resolve_image(store, f"{proxy.host}/tiny:1")
        assert image.manifest.layers[0].digest == layer["digest"]
        data = store.blobs.read_bytes(str(layer["digest"]))
        assert "sha256:" + hashlib.sha256(data).hexdigest() == layer["digest"]


def test_a_slow_blob_fails_at_its_deadline(pushed: tuple[str, dict[str, object]], registry: RunningRegistry,
                                           tmp_path: Path) -> None:
    layer = layer_of(pushed[1])
    fresh = str(tmp_path / "fresh")
    env = {**SHRUNK, "PYBUILD_REGISTRY_DEADLINE": "3", "PYBUILD_REGISTRY_MIN_RATE": "1000000000"}
    with FaultProxy(registry.host) as proxy:
        proxy.drip(f"/blobs/{layer['digest']}", every=0.1, size=1024, count=10)  # 10 KiB/s: never stalled
        proc, took = cli(fresh, "pull", f"{proxy.host}/tiny:1", env=env)
    error = error_of(proc)
    assert error.startswith(f"error: blob {layer['digest']} from registry {proxy.host} took too long: "
                            "deadline of 3 s exceeded ("), error
    assert error.endswith(f" of {layer['size']} bytes moved)")
    assert 3 <= took < 12, took
    assert_nothing_stored(fresh)


def test_a_stalled_upload_fails_the_push(pushed: tuple[str, dict[str, object]],
                                         registry: RunningRegistry) -> None:
    root = pushed[0]
    with FaultProxy(registry.host) as proxy:
        proxy.stall("/blobs/uploads/", method="PUT", answer=False, count=100)
        tagged, _ = cli(root, "tag", "tiny:1", f"{proxy.host}/other:1")
        assert tagged.returncode == 0, tagged.stderr
        proc, took = cli(root, "push", f"{proxy.host}/other:1", env=SHRUNK)
        puts = proxy.matching("PUT", "/blobs/uploads/")
    error = error_of(proc)
    assert error.startswith("error: upload of blob sha256:")
    assert error.endswith(f"to registry {proxy.host} {STALLED}")
    assert took < 15, took
    assert len(puts) >= 2  # the stalled upload was started again once, from a new session


# --- caps on what is read whole -----------------------------------------------------------------------------


def test_a_manifest_over_its_cap_is_refused(pushed: tuple[str, dict[str, object]], registry: RunningRegistry,
                                            tmp_path: Path) -> None:
    fresh = str(tmp_path / "fresh")
    with FaultProxy(registry.host) as proxy:
        proxy.reply("/manifests/", body=b" " * (4 << 20) + b"{}", count=10,
                    headers=[("Content-Type", "application/vnd.oci.image.manifest.v1+json")])
        proc, _ = cli(fresh, "pull", f"{proxy.host}/tiny:1")
    assert error_of(proc) == f"error: manifest {proxy.host}/tiny:1 is larger than 4 MiB"


def test_a_config_over_its_cap_is_refused(pushed: tuple[str, dict[str, object]], registry: RunningRegistry,
                                          tmp_path: Path) -> None:
    manifest = pushed[1]
    config = manifest["config"]
    assert isinstance(config, dict)
    lying = {**manifest, "config": {**config, "size": 9 << 20}}
    fresh = str(tmp_path / "fresh")
    with FaultProxy(registry.host) as proxy:
        proxy.reply("/manifests/", body=json.dumps(lying).encode(), count=10,
                    headers=[("Content-Type", "application/vnd.oci.image.manifest.v1+json")])
        proc, _ = cli(fresh, "pull", f"{proxy.host}/tiny:1")
        config_gets = proxy.matching("GET", f"/blobs/{config['digest']}")
    assert error_of(proc) == (f"error: cannot pull {proxy.host}/tiny:1: its config is {9 << 20} bytes, "
                              "too large for a config")
    assert config_gets == []


def test_a_token_answer_over_its_cap_is_refused(pushed: tuple[str, dict[str, object]],
                                                registry: RunningRegistry, tmp_path: Path) -> None:
    fresh = str(tmp_path / "fresh")
    with FaultProxy(registry.host) as proxy:
        proxy.reply(r"^/v2/", status=401, count=100,
                    headers=[("WWW-Authenticate", f'Bearer realm="http://{proxy.host}/token",service="x"')])
        proxy.reply(r"^/token", body=b'{"token": "' + b"x" * (2 << 20) + b'"}', count=100,
                    headers=[("Content-Type", "application/json")])
        proc, _ = cli(fresh, "pull", f"{proxy.host}/tiny:1")
    assert error_of(proc) == (f"error: token server of registry {proxy.host}: the answer to GET /token "
                              "is larger than 1 MiB")


# --- TLS ----------------------------------------------------------------------------------------------------


def test_a_dripping_tls_handshake_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that drips its TLS handshake (a record header, then a byte at a time) is a stall too."""
    for name, value in SHRUNK.items():
        monkeypatch.setenv(name, value)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    def drip(conn: socket.socket) -> None:
        with conn:
            conn.recv(4096)
            conn.sendall(b"\x16\x03\x03\x10\x00")  # a 4 KiB handshake record is coming
            while not stop.wait(0.2):
                try:
                    conn.sendall(b"\x02")
                except OSError:
                    return

    threading.Thread(target=serve, daemon=True).start()
    host = f"127.0.0.1:{server.getsockname()[1]}"
    try:
        with RegistryClient(host, insecure=False, backoff=0.01) as client:
            start = time.monotonic()
            with pytest.raises(RegistryError) as info:
                client.ping()
            took = time.monotonic() - start
    finally:
        stop.set()
        server.close()
    assert info.value.message == f"GET request to registry {host} {STALLED}"
    assert took < 8, took


# --- the default bounds -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_with_the_default_bounds_a_drip_and_a_stall_fail_a_pull_in_under_3_minutes(
        pushed: tuple[str, dict[str, object]], registry: RunningRegistry, tmp_path: Path) -> None:
    """The issue's reproducers, bounds untouched: a blob dripping a byte every 20 s, and one whose
    registry never answers, each pulled at the same time (about two 30 s windows each)."""
    layer = layer_of(pushed[1])
    env = {**os.environ}
    env.pop("CI", None)
    for name in ("PYBUILD_REGISTRY_SPEED_LIMIT", "PYBUILD_REGISTRY_SPEED_TIME", "PYBUILD_REGISTRY_DEADLINE",
                 "PYBUILD_REGISTRY_MIN_RATE"):
        env.pop(name, None)
    with FaultProxy(registry.host) as dripping, FaultProxy(registry.host) as silent:
        dripping.drip(f"/blobs/{layer['digest']}", every=20, count=10)
        silent.stall(f"/blobs/{layer['digest']}", answer=False, count=10)
        start = time.monotonic()
        procs = [subprocess.Popen([*PYBUILD, "pull", f"{proxy.host}/tiny:1"],
                                  env={**env, "PYBUILD_ROOT": str(tmp_path / name)}, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for name, proxy in (("drip", dripping), ("stall", silent))]
        results: list[tuple[subprocess.CompletedProcess[str], float]] = []
        for running in procs:
            out, err = running.communicate(timeout=200)
            results.append((subprocess.CompletedProcess(running.args, running.returncode, out, err),
                            time.monotonic() - start))
    stalled = "stalled: less than 1024 bytes/s for 30 s (2 stalled attempts)"
    for (proc, took), proxy in zip(results, (dripping, silent)):
        assert error_of(proc) == f"error: blob {layer['digest']} from registry {proxy.host} {stalled}"
        assert 55 < took < 180, took


def test_a_bad_setting_is_a_one_line_error(tmp_path: Path) -> None:
    proc, _ = cli(str(tmp_path / "store"), "pull", "127.0.0.1:1/x:1", env={"PYBUILD_REGISTRY_SPEED_TIME": "soon"})
    assert error_of(proc) == "error: invalid PYBUILD_REGISTRY_SPEED_TIME: 'soon' (expected a number, more than 0)"
