"""Unit tests of RegistryClient's authentication over `httpx.MockTransport` (the client asks
`auth.Authenticator`): Bearer tokens cached per scope and requested once per scope across threads, Basic
auth, credentials read from docker's config on the first challenge, denied scopes named, and credentials
never sent to another host. Helpers come from `test_registry_client`."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import httpx
import pytest

from pybuild.errors import RegistryError
from pybuild.registry.dockerconfig import Credentials
from tests.unit.test_registry_client import DATA, DIGEST, HOST, MANIFEST, flaky, make, ok_manifest

# --- auth ------------------------------------------------------------------------------------------------------


class TokenRegistry:
    """A registry that wants Bearer tokens from https://auth.test/token (granting what is asked)."""

    def __init__(self, *, refuse_anonymous: bool = False) -> None:
        self.token_requests: list[httpx.Request] = []
        self.registry_requests: list[httpx.Request] = []
        self.refuse_anonymous = refuse_anonymous
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            with self.lock:
                self.token_requests.append(request)
            if self.refuse_anonymous and "Authorization" not in request.headers:
                return httpx.Response(401, json={"details": "login first"})
            scopes = sorted(request.url.params.get_list("scope"))
            return httpx.Response(200, json={"token": "T:" + " ".join(scopes), "expires_in": 300})
        with self.lock:
            self.registry_requests.append(request)
        auth = request.headers.get("Authorization", "")
        path = request.url.path
        needed = "push" if request.method in ("PUT", "POST", "PATCH") else "pull"
        if not auth.startswith("Bearer T:") or needed not in auth:
            repo = path.split("/")[2]
            challenge = (f'Bearer realm="https://auth.test/token",service="registry.test",'
                         f'scope="repository:{repo}:{"pull,push" if needed == "push" else "pull"}"')
            return httpx.Response(401, headers={"WWW-Authenticate": challenge},
                                  json={"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]})
        if path.endswith("/manifests/latest") and request.method == "GET":
            return ok_manifest(request)
        if request.method == "PUT":
            return httpx.Response(201)
        return httpx.Response(404)


def test_bearer_tokens_cached_per_scope() -> None:
    fake = TokenRegistry()
    client, _ = make(fake, credentials=Credentials("alice", "pw"))
    client.get_manifest("foo", "latest")
    client.get_manifest("foo", "latest")
    assert len(fake.token_requests) == 1
    first = fake.token_requests[0]
    assert first.url.params.get_list("scope") == ["repository:foo:pull"]
    assert first.url.params["service"] == "registry.test" and first.url.params["account"] == "alice"
    assert first.headers["Authorization"].startswith("Basic ")
    client.put_manifest("foo", "latest", MANIFEST, "application/vnd.oci.image.manifest.v1+json")
    client.put_manifest("foo", "v2", MANIFEST, "application/vnd.oci.image.manifest.v1+json")
    assert [r.url.params.get_list("scope") for r in fake.token_requests] == [
        ["repository:foo:pull"], ["repository:foo:pull,push"]]
    # Once the challenge is known, requests carry the token straight away: 1 challenge in all.
    assert sum(1 for r in fake.registry_requests if "Authorization" not in r.headers) == 1


def test_one_token_request_per_scope_across_threads() -> None:
    fake = TokenRegistry()
    client, _ = make(fake, credentials=Credentials("alice", "pw"))
    errors: list[BaseException] = []

    def pull() -> None:
        try:
            client.get_manifest("foo", "latest")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=pull) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(fake.token_requests) == 1  # one per scope set, whatever the interleaving


def test_anonymous_token_refused_names_scope_and_hints_login(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    client, _ = make(TokenRegistry(refuse_anonymous=True))
    with pytest.raises(RegistryError) as info:
        client.put_manifest("foo", "latest", MANIFEST, "application/vnd.oci.image.manifest.v1+json")
    assert str(info.value).startswith("access to registry registry.test denied: repository:foo:pull,push (")
    assert info.value.hint == "log in first: pybuild login registry.test"


def test_credentials_read_from_docker_config_on_first_challenge(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"auths": {HOST: {"username": "cfg", "password": "pw"}}}))
    fake = TokenRegistry()
    client, _ = make(fake)
    (tmp_path / "config.json").write_text("not json")  # not read before a challenge...
    client.ping()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {HOST: {"username": "cfg", "password": "pw"}}}))
    client.get_manifest("foo", "latest")  # ...but on the first one
    assert fake.token_requests[0].url.params["account"] == "cfg"


def test_basic_auth() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != "Basic dTpw":
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return ok_manifest(request)

    client, _ = make(handler, credentials=Credentials("u", "p"))
    client.get_manifest("foo", "latest")
    client.get_manifest("foo", "latest")
    assert seen == [None, "Basic dTpw", "Basic dTpw"]
    wrong, _ = make(handler, credentials=Credentials("u", "bad"))
    with pytest.raises(RegistryError, match=r"^access to registry registry.test denied: repository:foo:pull \(HTTP 401"):
        wrong.get_manifest("foo", "latest")


def test_403_is_denied_without_retry() -> None:
    handler, seen = flaky([403], ok_manifest)
    client, _ = make(handler, credentials=Credentials("u", "p"))
    with pytest.raises(RegistryError, match="denied: repository:foo:pull,push"):
        client.upload_blob("foo", DIGEST, len(DATA), lambda: io.BytesIO(DATA))
    assert len(seen) == 1


def test_check_login() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") == "Basic dTpw":
            return httpx.Response(200)
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    good, _ = make(handler, credentials=Credentials("u", "p"))
    good.check_login()
    bad, _ = make(handler, credentials=Credentials("u", "x"))
    with pytest.raises(RegistryError, match="^login failed for registry.test: HTTP 401"):
        bad.check_login()


def test_authorization_not_sent_to_another_host() -> None:
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers.get("Authorization")))
        if request.url.host == "cdn.test":
            return httpx.Response(200, content=DATA)
        if request.headers.get("Authorization") != "Basic dTpw":
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return httpx.Response(307, headers={"Location": "https://cdn.test/blob?sig=1"})

    client, _ = make(handler, credentials=Credentials("u", "p"))
    assert client.get_blob("foo", DIGEST, io.BytesIO()) == len(DATA)
    assert seen[-1] == ("cdn.test", None)
