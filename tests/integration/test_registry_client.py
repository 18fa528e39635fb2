"""Integration tests of pybuild.registry against distribution's real `docker-registry` (2.8): blobs
(monolithic, chunked, mounted), manifests, tags, htpasswd Basic auth, token auth from a TokenServer, and
faults injected by a FaultProxy (5xx, 429, dropped and corrupted downloads). Registries come from
`tests.registry_support`; they skip locally (and fail in CI) without docker-registry."""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.errors import RegistryError
from pybuild.registry.client import RegistryClient
from pybuild.registry.dockerconfig import Credentials, credentials_for, logout
from pybuild.registry.login import login
from pybuild.store.cas import BlobStore
from tests.registry_support import FaultProxy, RunningRegistry, TokenServer, free_port, start_registry

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def blob(seed: str, size: int) -> tuple[bytes, str]:
    data = hashlib.sha256(seed.encode()).digest() * (size // 32 + 1)
    data = data[:size]
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def client(host: str, **kwargs: object) -> RegistryClient:
    kwargs.setdefault("backoff", 0.01)
    return RegistryClient(host, **kwargs)  # type: ignore[arg-type]


def push_image(c: RegistryClient, repo: str, tag: str) -> tuple[bytes, str, str]:
    """Push a config, one layer and a manifest; returns (manifest bytes, manifest digest, layer digest)."""
    config = b'{"architecture":"amd64","os":"linux"}'
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    layer, layer_digest = blob(repo + tag, 4000)
    for data, digest in ((config, config_digest), (layer, layer_digest)):
        c.upload_blob(repo, digest, len(data), lambda data=data: io.BytesIO(data))  # type: ignore[misc]
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest,
                    "size": len(layer)}]}).encode()
    return manifest, c.put_manifest(repo, tag, manifest, OCI_MANIFEST), layer_digest


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RunningRegistry]:
    with start_registry(tmp_path) as running:
        yield running


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    return tmp_path / "docker" / "config.json"


# --- the API against a plain registry -------------------------------------------------------------------------


def test_blobs_monolithic_and_verified_into_the_store(registry: RunningRegistry, tmp_path: Path) -> None:
    with client(registry.host) as c:
        c.ping()
        assert c.scheme == "http"  # loopback: HTTPS tried first, plain HTTP remembered
        data, digest = blob("mono", 100_000)
        assert c.blob_size("app", digest) is None
        sent: list[int] = []
        c.upload_blob("app", digest, len(data), lambda: io.BytesIO(data), progress=sent.append)
        assert sum(sent) == len(data)
        assert c.blob_size("app", digest) == len(data)
        store = BlobStore(str(tmp_path / "store"))
        received: list[int] = []
        with store.writer() as writer:
            assert c.get_blob("app", digest, writer, size=len(data), progress=received.append) == len(data)
            writer.commit(digest)
        assert store.read_bytes(digest) == data and sum(received) == len(data)


def test_first_requests_from_many_threads_fall_back_to_http_without_retrying(registry: RunningRegistry) -> None:
    # All threads' HTTPS attempts fail; the ones that lose the race to switch the scheme must switch too,
    # not count as a transport error and sleep through a retry (that cost every parallel push 0.5 s).
    client = RegistryClient(registry.host)
    slept: list[float] = []
    client.sleep = slept.append  # type: ignore[method-assign]
    start = threading.Barrier(6)

    def head() -> None:
        start.wait()
        assert client.blob_size("race/repo", "sha256:" + "0" * 64) is None

    threads = [threading.Thread(target=head) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    assert client.scheme == "http" and slept == []


def test_chunked_upload(registry: RunningRegistry) -> None:
    with FaultProxy(registry.host) as proxy, client(proxy.host) as c:
        data, digest = blob("chunked", 10_500)
        c.upload_blob("app", digest, len(data), lambda: io.BytesIO(data), chunk_size=1000)
        patches = proxy.matching("PATCH", "/v2/app/blobs/uploads/")
        assert len(patches) == 11
        assert [h["Content-Range"] for _, _, h in patches][:2] == ["0-999", "1000-1999"]
        out = io.BytesIO()
        c.get_blob("app", digest, out)
        assert out.getvalue() == data
        # A chunk refused half-way through starts the upload over, from a new session.
        data, digest = blob("chunked-restart", 5_500)
        proxy.fail(r"/v2/app/blobs/uploads/.+", status=500, method="PATCH")
        c.upload_blob("app", digest, len(data), lambda: io.BytesIO(data), chunk_size=2000)
        assert len(proxy.matching("POST", r"/v2/app/blobs/uploads/$")) == 3
        assert c.blob_size("app", digest) == len(data)


def test_empty_blob(registry: RunningRegistry) -> None:
    with client(registry.host) as c:
        digest = "sha256:" + hashlib.sha256(b"").hexdigest()
        c.upload_blob("app", digest, 0, lambda: io.BytesIO(b""))
        assert c.blob_size("app", digest) == 0
        assert c.get_blob("app", digest, io.BytesIO()) == 0


def test_mount_across_repositories(registry: RunningRegistry) -> None:
    with client(registry.host) as c:
        data, digest = blob("mount", 5000)
        c.upload_blob("lib/base", digest, len(data), lambda: io.BytesIO(data))
        assert c.mount_blob("app", digest, "lib/base") is True
        assert c.blob_size("app", digest) == len(data)
        _, absent = blob("absent", 10)
        assert c.mount_blob("app", absent, "lib/base") is False
        assert c.blob_size("app", absent) is None


def test_manifests_by_tag_and_digest_and_tags(registry: RunningRegistry) -> None:
    with client(registry.host) as c:
        manifest, digest, _ = push_image(c, "app", "v1")
        assert digest == "sha256:" + hashlib.sha256(manifest).hexdigest()
        c.put_manifest("app", "v2", manifest, OCI_MANIFEST)
        assert c.get_manifest("app", "v1") == (manifest, OCI_MANIFEST, digest)
        assert c.get_manifest("app", digest) == (manifest, OCI_MANIFEST, digest)
        assert c.head_manifest("app", "v2") == (digest, OCI_MANIFEST, len(manifest))
        assert c.head_manifest("app", "nope") is None
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest),
             "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
        index_digest = c.put_manifest("app", "multi", index, OCI_INDEX)
        assert c.get_manifest("app", "multi") == (index, OCI_INDEX, index_digest)
        assert sorted(c.list_tags("app")) == ["multi", "v1", "v2"]
        with pytest.raises(RegistryError, match=f"^manifest unknown: {registry.host}/app:nope$"):
            c.get_manifest("app", "nope")
        with pytest.raises(RegistryError, match=f"repository unknown: {registry.host}/ghost"):
            c.list_tags("ghost")


def test_manifest_with_missing_blob_is_refused(registry: RunningRegistry) -> None:
    with client(registry.host) as c:
        _, missing = blob("missing", 10)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                          "digest": missing, "size": 10}, "layers": []}).encode()
        with pytest.raises(RegistryError, match=f"^cannot push manifest {registry.host}/app:v1: HTTP 400: "):
            c.put_manifest("app", "v1", manifest, OCI_MANIFEST)


# --- auth -------------------------------------------------------------------------------------------------------


def test_htpasswd_basic_auth_and_login(tmp_path: Path, docker_config: Path) -> None:
    with start_registry(tmp_path, htpasswd=("alice", "s3cret")) as registry:
        data, digest = blob("basic", 3000)
        with client(registry.host) as anonymous:
            anonymous.ping()  # a challenge is an answer
            with pytest.raises(RegistryError) as info:
                anonymous.upload_blob("app", digest, len(data), lambda: io.BytesIO(data))
            assert str(info.value).startswith(f"access to registry {registry.host} denied: repository:app:pull,push")
            assert "\n" not in str(info.value) and info.value.hint is not None
        with client(registry.host, credentials=Credentials("alice", "s3cret")) as c:
            c.upload_blob("app", digest, len(data), lambda: io.BytesIO(data))
            assert c.blob_size("app", digest) == len(data)
        with pytest.raises(RegistryError, match=f"^login failed for {registry.host}: "):
            login(registry.host, "alice", "wrong")
        assert not docker_config.exists()
        login(registry.host, "alice", "s3cret")
        assert credentials_for(registry.host) == Credentials("alice", "s3cret")
        with client(registry.host) as from_config:  # credentials found in docker's config
            assert from_config.blob_size("app", digest) == len(data)
        assert logout(registry.host) is True and logout(registry.host) is False


def test_token_auth_anonymous_pull_credentialed_push(tmp_path: Path, docker_config: Path) -> None:
    with TokenServer(tmp_path, users={"bob": "pw"}, anonymous=("pull",)) as tokens, \
            start_registry(tmp_path, token=tokens) as registry:
        data, digest = blob("token", 20_000)
        with client(registry.host, credentials=Credentials("bob", "pw")) as c:
            c.upload_blob("app", digest, len(data), lambda: io.BytesIO(data))
            c.upload_blob("app", digest, len(data), lambda: io.BytesIO(data))
            assert c.blob_size("app", digest) == len(data)
            assert c.blob_size("app", digest) == len(data)
            assert c.mount_blob("other", digest, "app") is True
            asked = tokens.token_requests()
            assert asked == [("bob", ("repository:app:pull,push",)), ("bob", ("repository:app:pull",)),
                             ("bob", ("repository:app:pull", "repository:other:pull,push"))]
        with client(registry.host) as anonymous:
            out = io.BytesIO()
            anonymous.get_blob("app", digest, out)
            assert out.getvalue() == data
            with pytest.raises(RegistryError) as info:
                anonymous.upload_blob("app", digest, len(data), lambda: io.BytesIO(data))
            assert f"access to registry {registry.host} denied: repository:app:pull,push" in str(info.value)
        login(registry.host, "bob", "pw")
        with pytest.raises(RegistryError, match="^login failed"):
            login(registry.host, "bob", "nope")


def test_token_auth_denials(tmp_path: Path) -> None:
    with TokenServer(tmp_path, users={"bob": "pw"}, anonymous=(), deny={"repository:locked:push"}) as tokens, \
            start_registry(tmp_path, token=tokens) as registry:
        data, digest = blob("deny", 100)
        with client(registry.host) as anonymous:
            with pytest.raises(RegistryError, match=f"^access to registry {registry.host} denied: repository:app:pull"):
                anonymous.blob_size("app", digest)
        with client(registry.host, credentials=Credentials("bob", "pw")) as c:
            with pytest.raises(RegistryError, match="denied: repository:locked:pull,push"):
                c.upload_blob("locked", digest, len(data), lambda: io.BytesIO(data))
            assert c.blob_size("locked", digest) is None  # pull is still allowed


def test_parallel_transfers_share_tokens(tmp_path: Path) -> None:
    with TokenServer(tmp_path, users={"bob": "pw"}) as tokens, start_registry(tmp_path, token=tokens) as registry, \
            client(registry.host, credentials=Credentials("bob", "pw")) as c:
        blobs = [blob(f"parallel-{i}", 50_000 + i) for i in range(8)]
        errors: list[BaseException] = []

        def transfer(data: bytes, digest: str) -> None:
            try:
                c.upload_blob("app", digest, len(data), lambda: io.BytesIO(data), chunk_size=20_000)
                out = io.BytesIO()
                c.get_blob("app", digest, out)
                assert out.getvalue() == data
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=transfer, args=item) for item in blobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        scopes = [s for _, s in tokens.token_requests()]
        assert sorted(scopes) == [("repository:app:pull",), ("repository:app:pull,push",)]


# --- faults ------------------------------------------------------------------------------------------------------


def test_5xx_and_429_are_retried(registry: RunningRegistry) -> None:
    with FaultProxy(registry.host) as proxy, client(proxy.host) as c:
        manifest, digest, _ = push_image(c, "app", "v1")
        proxy.fail(r"/v2/app/manifests/v1", status=500, count=2)
        assert c.get_manifest("app", "v1")[2] == digest
        assert len(proxy.matching("GET", r"/v2/app/manifests/v1")) == 3
        proxy.fail(r"/v2/app/manifests/", status=429, retry_after=1, method="HEAD")
        started = time.monotonic()
        assert c.head_manifest("app", "v1") == (digest, OCI_MANIFEST, len(manifest))
        assert time.monotonic() - started >= 0.9  # Retry-After honoured
        data, blob_digest = blob("upload-500", 3000)
        proxy.fail(r"/v2/app/blobs/uploads/.+", status=503, method="PUT")
        c.upload_blob("app", blob_digest, len(data), lambda: io.BytesIO(data))
        assert len(proxy.matching("POST", r"/v2/app/blobs/uploads/$")) >= 2  # restarted from a new session
        assert c.blob_size("app", blob_digest) == len(data)


def test_errors_after_retries_run_out(registry: RunningRegistry) -> None:
    with FaultProxy(registry.host) as proxy, client(proxy.host, retries=2) as c:
        proxy.fail(r"/v2/app/manifests/v1", status=502, count=10)
        with pytest.raises(RegistryError, match=f"^registry {proxy.host} failed GET /v2/app/manifests/v1: HTTP 502"):
            c.get_manifest("app", "v1")
        assert len(proxy.matching("GET", r"/v2/app/manifests/v1")) == 3


def test_dropped_download_resumes_with_range(registry: RunningRegistry, tmp_path: Path) -> None:
    with FaultProxy(registry.host) as proxy, client(proxy.host) as c:
        data, digest = blob("resume", 300_000)
        c.upload_blob("app", digest, len(data), lambda: io.BytesIO(data))
        proxy.drop(r"/v2/app/blobs/sha256:", count=2, after=100_000, method="GET")
        store = BlobStore(str(tmp_path / "store"))
        with store.writer() as writer:
            assert c.get_blob("app", digest, writer, size=len(data)) == len(data)
            writer.commit(digest)
        assert store.read_bytes(digest) == data
        ranges = [headers.get("Range") for _, _, headers in proxy.matching("GET", r"/v2/app/blobs/sha256:")]
        assert ranges == [None, "bytes=100000-", "bytes=200000-"]


def test_corrupt_download_stores_nothing(registry: RunningRegistry, tmp_path: Path) -> None:
    with FaultProxy(registry.host) as proxy, client(proxy.host) as c:
        data, digest = blob("corrupt", 50_000)
        c.upload_blob("app", digest, len(data), lambda: io.BytesIO(data))
        proxy.corrupt(r"/v2/app/blobs/sha256:", method="GET")
        store = BlobStore(str(tmp_path / "store"))
        with pytest.raises(RegistryError, match=f"^digest mismatch for blob {digest}: got sha256:"):
            with store.writer() as writer:
                c.get_blob("app", digest, writer)
                writer.commit(digest)
        assert not store.exists(digest) and os.listdir(store.tmp_dir) == []


def test_unreachable_registry_is_one_line() -> None:
    port = free_port()
    with client(f"127.0.0.1:{port}", retries=1) as c:
        with pytest.raises(RegistryError) as info:
            c.ping()
    message = str(info.value)
    assert message.startswith(f"cannot reach registry 127.0.0.1:{port}: ") and "\n" not in message
    with client("no-such-host.invalid", retries=1) as c:
        with pytest.raises(RegistryError, match="^cannot reach registry no-such-host.invalid: "):
            c.get_manifest("app", "latest")
