"""Unit tests for pybuild.registry.client over `httpx.MockTransport`: retries and backoff, Retry-After,
the insecure HTTPS→HTTP fallback, resumed and verified blob downloads, restarted uploads, pagination, error messages."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pybuild.errors import RegistryError, StoreError
from pybuild.registry import client as client_module
from pybuild.registry.client import RegistryClient, client_for, close_clients

Handler = Callable[[httpx.Request], httpx.Response]
HOST = "registry.test"
DATA = bytes(range(256)) * 100
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {}, "layers": []}).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


def make(handler: Handler, host: str = HOST, **kwargs: object) -> tuple[RegistryClient, list[float]]:
    """A client on a MockTransport whose sleeps are recorded instead of slept."""
    kwargs.setdefault("insecure", False)
    client = RegistryClient(host, transport=httpx.MockTransport(handler), **kwargs)  # type: ignore[arg-type]
    slept: list[float] = []
    client.sleep = slept.append
    return client, slept


def flaky(statuses: list[int], final: Handler, headers: dict[str, str] | None = None) -> tuple[Handler, list[str]]:
    """Answer `statuses` first (one per request), then hand over to `final`; records request paths."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if statuses:
            return httpx.Response(statuses.pop(0), headers=headers or {})
        return final(request)

    return handler, seen


def ok_manifest(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=MANIFEST,
                          headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})


# --- retries ------------------------------------------------------------------------------------------------


def test_5xx_retried_with_exponential_backoff() -> None:
    handler, seen = flaky([500, 502, 503], ok_manifest)
    client, slept = make(handler, backoff=0.25)
    data, media_type, digest = client.get_manifest("foo", "latest")
    assert (data, digest) == (MANIFEST, MANIFEST_DIGEST)
    assert media_type == "application/vnd.oci.image.manifest.v1+json"
    assert slept == [0.25, 0.5, 1.0] and len(seen) == 4


def test_retries_run_out() -> None:
    handler, seen = flaky([503] * 10, ok_manifest)
    client, slept = make(handler, retries=2, backoff=0.1)
    with pytest.raises(RegistryError) as info:
        client.get_manifest("foo", "latest")
    assert str(info.value) == "registry registry.test failed GET /v2/foo/manifests/latest: HTTP 503 service unavailable"
    assert len(seen) == 3 and slept == [0.1, 0.2]


def test_429_honours_retry_after() -> None:
    handler, _ = flaky([429], ok_manifest, {"Retry-After": "3"})
    client, slept = make(handler, backoff=0.01)
    client.get_manifest("foo", "latest")
    assert slept == [3.0]


def test_retry_after_beyond_the_wait_cap_fails_at_once() -> None:
    handler, seen = flaky([429] * 3, ok_manifest, {"Retry-After": "3600"})
    client, slept = make(handler)
    with pytest.raises(RegistryError, match="registry registry.test is rate-limiting requests: HTTP 429"):
        client.get_manifest("foo", "latest")
    assert slept == [] and len(seen) == 1


def test_total_wait_is_capped() -> None:
    handler, seen = flaky([500] * 20, ok_manifest)
    client, slept = make(handler, retries=20, backoff=1.0)
    client.max_wait = 5.0
    with pytest.raises(RegistryError):
        client.get_manifest("foo", "latest")
    assert slept == [1.0, 2.0] and sum(slept) <= 5.0


def test_connection_errors_retried_then_reported_on_one_line() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ConnectError("[Errno 111] Connection refused\nmore detail")

    client, slept = make(handler, retries=3, backoff=0.01)
    with pytest.raises(RegistryError) as info:
        client.ping()
    assert str(info.value) == "cannot reach registry registry.test: [Errno 111] Connection refused"
    assert len(calls) == 4 and len(slept) == 3


def test_unknown_host_is_not_retried() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except socket.gaierror as exc:
            raise httpx.ConnectError("[Errno -2] Name or service not known") from exc

    client, slept = make(handler)
    with pytest.raises(RegistryError, match=r"^cannot reach registry registry.test: \[Errno -2\]"):
        client.ping()
    assert calls == [1] and slept == []


def test_no_httpx_exception_escapes() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out")

    client, _ = make(handler, retries=1, backoff=0)
    for call in (lambda: client.ping(), lambda: client.list_tags("foo"),
                 lambda: client.get_blob("foo", DIGEST, io.BytesIO()),
                 lambda: client.upload_blob("foo", DIGEST, len(DATA), lambda: io.BytesIO(DATA))):
        with pytest.raises(RegistryError, match="connection to registry registry.test failed: timed out"):
            call()


# --- schemes --------------------------------------------------------------------------------------------------


def test_insecure_host_falls_back_to_http_and_remembers() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.scheme == "https":
            raise httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number")
        return ok_manifest(request)

    client, slept = make(handler, insecure=True)
    assert client.scheme is None
    client.get_manifest("foo", "latest")
    client.get_manifest("foo", "v2")
    assert client.scheme == "http" and slept == []
    assert seen == ["https://registry.test/v2/foo/manifests/latest", "http://registry.test/v2/foo/manifests/latest",
                    "http://registry.test/v2/foo/manifests/v2"]


def test_insecure_host_keeps_https_when_it_answers() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.scheme)
        return httpx.Response(200)

    client, _ = make(handler, insecure=True)
    client.ping()
    assert client.scheme == "https" and seen == ["https"]


def test_secure_host_never_uses_http() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.scheme)
        raise httpx.ConnectError("certificate verify failed")

    client, _ = make(handler, retries=1, backoff=0)
    with pytest.raises(RegistryError, match="cannot reach registry registry.test: certificate verify failed"):
        client.ping()
    assert seen == ["https", "https"]


def test_insecure_default_follows_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    assert RegistryClient("127.0.0.1:5000", transport=transport).insecure
    assert RegistryClient("localhost:5000", transport=transport).insecure
    assert not RegistryClient("example.com", transport=transport).insecure
    assert not RegistryClient("127.0.0.1:5000", transport=transport, insecure=False).insecure


def test_docker_hub_host_maps_to_its_api_host() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200)

    client, _ = make(handler, host="docker.io")
    client.ping()
    assert seen == ["https://registry-1.docker.io/v2/"]


# --- blobs ------------------------------------------------------------------------------------------------------


class CutStream(httpx.SyncByteStream):
    """A body that breaks after `cut` bytes, as a dropped connection does."""

    def __init__(self, data: bytes, cut: int) -> None:
        self.data, self.cut = data, cut

    def __iter__(self) -> Iterator[bytes]:
        yield self.data[: self.cut]
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def blob_server(*, ranges: bool, cuts: list[int], body: bytes = DATA) -> tuple[Handler, list[str | None]]:
    ranges_seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked = request.headers.get("Range")
        ranges_seen.append(asked)
        start = int(asked[6:-1]) if asked and ranges else 0
        payload = body[start:]
        status = 206 if asked and ranges else 200
        headers = {"Content-Length": str(len(payload))}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        if cuts:
            return httpx.Response(status, headers=headers, stream=CutStream(payload, cuts.pop(0)))
        return httpx.Response(status, headers=headers, content=payload)

    return handler, ranges_seen


def test_cut_download_resumes_with_range() -> None:
    handler, ranges = blob_server(ranges=True, cuts=[1000, 5000])
    client, slept = make(handler, backoff=0.01)
    out = io.BytesIO()
    progress: list[int] = []
    assert client.get_blob("foo", DIGEST, out, size=len(DATA), progress=progress.append) == len(DATA)
    assert out.getvalue() == DATA and sum(progress) == len(DATA)
    assert ranges == [None, "bytes=1000-", "bytes=6000-"] and len(slept) == 2


def test_cut_download_restarts_when_range_is_ignored() -> None:
    handler, ranges = blob_server(ranges=False, cuts=[3000])
    client, _ = make(handler, backoff=0.01)
    out = io.BytesIO()
    assert client.get_blob("foo", DIGEST, out) == len(DATA)
    assert out.getvalue() == DATA  # the first 3000 bytes were skipped, not written twice
    assert ranges == [None, "bytes=3000-"]


def test_digest_mismatch_is_an_error() -> None:
    handler, _ = blob_server(ranges=True, cuts=[], body=DATA[:-1] + b"\x00")
    client, _ = make(handler)
    with pytest.raises(RegistryError, match=f"^digest mismatch for blob {DIGEST}: got sha256:"):
        client.get_blob("foo", DIGEST, io.BytesIO())


def test_size_is_checked() -> None:
    handler, _ = blob_server(ranges=True, cuts=[])
    client, _ = make(handler)
    with pytest.raises(RegistryError, match="larger than the expected 10 bytes"):
        client.get_blob("foo", DIGEST, io.BytesIO(), size=10)
    with pytest.raises(RegistryError, match=f"blob {DIGEST} is {len(DATA)} bytes, expected {len(DATA) + 1}"):
        client.get_blob("foo", DIGEST, io.BytesIO(), size=len(DATA) + 1)


def test_writer_errors_pass_through() -> None:
    class Full:
        def write(self, data: bytes) -> int:
            raise StoreError("no space left on device")

    handler, _ = blob_server(ranges=True, cuts=[])
    client, _ = make(handler)
    with pytest.raises(StoreError, match="no space left"):
        client.get_blob("foo", DIGEST, Full())


def test_blob_unknown_and_bad_digest() -> None:
    client, _ = make(lambda request: httpx.Response(404))
    with pytest.raises(RegistryError, match=f"^blob unknown: registry.test/foo@{DIGEST}$"):
        client.get_blob("foo", DIGEST, io.BytesIO())
    assert client.blob_size("foo", DIGEST) is None
    with pytest.raises(RegistryError, match="invalid digest: 'sha256:abc'"):
        client.blob_size("foo", "sha256:abc")


def test_upload_restarts_from_a_new_session() -> None:
    events: list[str] = []
    failures = [500]

    def handler(request: httpx.Request) -> httpx.Response:
        events.append(request.method)
        if request.method == "POST":
            return httpx.Response(202, headers={"Location": f"/v2/foo/blobs/uploads/u{len(events)}?_state=s"})
        body = request.read()
        if failures:
            return httpx.Response(failures.pop())
        assert body == DATA and request.url.params["digest"] == DIGEST and request.url.params["_state"] == "s"
        return httpx.Response(201, headers={"Docker-Content-Digest": DIGEST})

    opened: list[int] = []

    def opener() -> io.BytesIO:
        opened.append(1)
        return io.BytesIO(DATA)

    client, slept = make(handler, backoff=0.01)
    client.upload_blob("foo", DIGEST, len(DATA), opener)
    assert events == ["POST", "PUT", "POST", "PUT"] and len(opened) == 2 and slept == [0.01]


def test_chunked_upload_sends_content_ranges() -> None:
    seen: list[tuple[str, str | None, int]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = request.read()
        seen.append((request.method, request.headers.get("Content-Range"), len(body)))
        if request.method == "PUT":
            return httpx.Response(201)
        return httpx.Response(202, headers={"Location": f"https://registry.test/v2/foo/blobs/uploads/x{len(seen)}"})

    client, _ = make(handler)
    progress: list[int] = []
    client.upload_blob("foo", DIGEST, len(DATA), lambda: io.BytesIO(DATA), chunk_size=10000,
                       progress=progress.append)
    assert seen == [("POST", None, 0), ("PATCH", "0-9999", 10000), ("PATCH", "10000-19999", 10000),
                    ("PATCH", "20000-25599", 5600), ("PUT", None, 0)]
    assert sum(progress) == len(DATA)


def test_short_source_is_a_store_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        return httpx.Response(202, headers={"Location": "/v2/foo/blobs/uploads/x"})

    client, _ = make(handler)
    with pytest.raises(StoreError, match=f"blob {DIGEST} ended after 100 of {len(DATA)} bytes"):
        client.upload_blob("foo", DIGEST, len(DATA), lambda: io.BytesIO(DATA[:100]))


def test_rejected_upload() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        if request.method == "POST":
            return httpx.Response(202, headers={"Location": "/v2/foo/blobs/uploads/x"})
        return httpx.Response(400, json={"errors": [{"code": "DIGEST_INVALID", "message": "provided digest did "
                                                     "not match uploaded content"}]})

    client, _ = make(handler)
    with pytest.raises(RegistryError, match=f"^cannot upload blob {DIGEST} to registry.test: HTTP 400: provided "):
        client.upload_blob("foo", DIGEST, len(DATA), lambda: io.BytesIO(DATA))


def test_mount() -> None:
    answers = [201, 202]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "DELETE":
            return httpx.Response(204)
        return httpx.Response(answers.pop(0), headers={"Location": "/v2/foo/blobs/uploads/x"})

    client, _ = make(handler)
    assert client.mount_blob("foo", DIGEST, "lib/bar") is True
    assert seen[0].url.params["mount"] == DIGEST and seen[0].url.params["from"] == "lib/bar"
    assert client.mount_blob("foo", DIGEST, "lib/bar") is False
    assert seen[-1].method == "DELETE"  # the upload the registry opened instead is cancelled


# --- manifests and tags -------------------------------------------------------------------------------------------


def test_manifest_by_digest_is_verified() -> None:
    client, _ = make(ok_manifest)
    assert client.get_manifest("foo", MANIFEST_DIGEST)[2] == MANIFEST_DIGEST
    other = "sha256:" + "0" * 64
    with pytest.raises(RegistryError, match=f"^digest mismatch for manifest registry.test/foo@{other}: got "):
        client.get_manifest("foo", other)


def test_manifest_accept_and_media_type_fallback() -> None:
    accepted: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        accepted.append(request.headers["Accept"])
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
        return httpx.Response(200, json=index, headers={"Content-Type": "application/json"})

    client, _ = make(handler)
    assert client.get_manifest("foo", "latest")[1] == "application/vnd.oci.image.index.v1+json"
    for media_type in ("application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
                       "application/vnd.docker.distribution.manifest.v2+json",
                       "application/vnd.docker.distribution.manifest.list.v2+json"):
        assert media_type in accepted[0]


def test_manifest_unknown() -> None:
    client, _ = make(lambda request: httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]}))
    with pytest.raises(RegistryError, match="^manifest unknown: registry.test/foo:nope$"):
        client.get_manifest("foo", "nope")
    assert client.head_manifest("foo", "nope") is None


def test_head_manifest() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Docker-Content-Digest": MANIFEST_DIGEST, "Content-Length": "77",
                                            "Content-Type": "application/vnd.oci.image.manifest.v1+json"})

    client, _ = make(handler)
    assert client.head_manifest("foo", "latest") == (MANIFEST_DIGEST, "application/vnd.oci.image.manifest.v1+json", 77)


def test_manifest_body_cut_off_is_retried() -> None:
    cuts = [10]

    def handler(request: httpx.Request) -> httpx.Response:
        if cuts:
            return httpx.Response(200, stream=CutStream(MANIFEST, cuts.pop()))
        return ok_manifest(request)

    client, slept = make(handler, backoff=0.01)
    assert client.get_manifest("foo", "latest")[0] == MANIFEST and slept == [0.01]


def test_list_tags_follows_links() -> None:
    pages = {"": (["a", "b"], '</v2/foo/tags/list?last=b&n=2>; rel="next"'),
             "b": (["c"], None)}

    def handler(request: httpx.Request) -> httpx.Response:
        tags, link = pages[request.url.params.get("last", "")]
        return httpx.Response(200, json={"name": "foo", "tags": tags}, headers={"Link": link} if link else {})

    client, _ = make(handler)
    assert client.list_tags("foo") == ["a", "b", "c"]
    empty, _ = make(lambda request: httpx.Response(200, json={"name": "foo", "tags": None}))
    assert empty.list_tags("foo") == []
    missing, _ = make(lambda request: httpx.Response(404))
    with pytest.raises(RegistryError, match="^repository unknown: registry.test/foo$"):
        missing.list_tags("foo")


def test_client_for_shares_one_client_per_host(monkeypatch: pytest.MonkeyPatch) -> None:
    close_clients()
    try:
        found: list[RegistryClient] = []
        threads = [threading.Thread(target=lambda: found.append(client_for("shared.test"))) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len({id(c) for c in found}) == 1 and client_for("other.test") is not found[0]
        assert "shared.test" in client_module._clients
    finally:
        close_clients()
    assert client_module._clients == {}


# --- caps on what is read whole, and the deadline -----------------------------------------------------------


def test_a_manifest_over_4_mib_is_refused() -> None:
    client, _ = make(lambda request: httpx.Response(200, content=b" " * (4 << 20) + b"{}"))
    with pytest.raises(RegistryError, match="^manifest registry.test/foo:latest is larger than 4 MiB$"):
        client.get_manifest("foo", "latest")


def test_a_token_answer_over_1_mib_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            return httpx.Response(200, content=b'{"token": "' + b"t" * (1 << 20) + b'"}')
        return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="https://auth.test/token"'})

    client, _ = make(handler)
    with pytest.raises(RegistryError) as info:
        client.get_manifest("foo", "latest")
    assert info.value.message == ("token server of registry registry.test: the answer to GET /token is "
                                  "larger than 1 MiB")


def test_any_other_answer_over_1_mib_is_refused() -> None:
    client, _ = make(lambda request: httpx.Response(201, content=b"x" * ((1 << 20) + 1)))
    with pytest.raises(RegistryError) as info:
        client.put_manifest("foo", "latest", MANIFEST, "application/vnd.oci.image.manifest.v1+json")
    assert info.value.message == ("upload of manifest registry.test/foo:latest: the answer to PUT "
                                  "/v2/foo/manifests/latest is larger than 1 MiB")


def test_an_endless_error_body_is_read_only_for_its_message() -> None:
    served: list[int] = []

    class Endless(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            while True:
                served.append(1)
                yield b'{"errors": [' + b" " * 65536

    client, _ = make(lambda request: httpx.Response(500, stream=Endless()), retries=0)
    with pytest.raises(RegistryError, match=r"^registry registry.test failed GET /v2/foo/blobs/sha256:\w+: "
                                            "HTTP 500"):
        client.get_blob("foo", DIGEST, io.BytesIO())
    assert len(served) <= 2


def test_no_wait_goes_past_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYBUILD_REGISTRY_DEADLINE", "2")
    handler, seen = flaky([429] * 3, ok_manifest, {"Retry-After": "3"})
    client, slept = make(handler)
    with pytest.raises(RegistryError, match="rate-limiting"):
        client.get_manifest("foo", "latest")
    assert slept == [] and len(seen) == 1  # max_wait (60 s) would have allowed the wait
