"""Unit tests for pybuild.registry.auth: challenges, token requests and answers, the token cache, and that
no secret shows in a repr."""

from __future__ import annotations

import base64

import pytest

from pybuild.errors import RegistryError
from pybuild.registry.auth import (
    Challenge,
    Token,
    TokenCache,
    basic_header,
    parse_challenges,
    parse_token_response,
    pull_scope,
    push_scope,
    scope_key,
    token_request,
)
from pybuild.registry.dockerconfig import Credentials

HUB = ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
       'scope="repository:library/busybox:pull",error="insufficient_scope"')


def test_parse_bearer_challenge() -> None:
    (challenge,) = parse_challenges([HUB])
    assert challenge.scheme == "bearer"
    assert challenge.get("realm") == "https://auth.docker.io/token"
    assert challenge.get("SERVICE") == "registry.docker.io"
    assert challenge.get("scope") == "repository:library/busybox:pull"
    assert challenge.get("missing", "x") == "x"


@pytest.mark.parametrize(("header", "expected"), [
    ('Basic realm="Registry Realm"', [("basic", (("realm", "Registry Realm"),))]),
    ("basic realm=plain", [("basic", (("realm", "plain"),))]),
    ('Basic realm="a", Bearer realm="https://t/x",service=s',
     [("basic", (("realm", "a"),)), ("bearer", (("realm", "https://t/x"), ("service", "s")))]),
    ('Bearer realm="with \\"quote\\" and, comma"', [("bearer", (("realm", 'with "quote" and, comma'),))]),
    ('Bearer  realm = "spaced" ,  service="s"', [("bearer", (("realm", "spaced"), ("service", "s")))]),
    ("Negotiate", [("negotiate", ())]),
    ("", []),
])
def test_parse_challenges(header: str, expected: list[tuple[str, tuple[tuple[str, str], ...]]]) -> None:
    assert [(c.scheme, c.params) for c in parse_challenges([header])] == expected


def test_several_header_values() -> None:
    found = parse_challenges(['Basic realm="a"', HUB])
    assert [c.scheme for c in found] == ["basic", "bearer"]


def test_scopes() -> None:
    assert pull_scope("foo/bar") == "repository:foo/bar:pull"
    assert push_scope("foo") == "repository:foo:pull,push"
    assert scope_key(["b", "a", "b"]) == ("a", "b")


def test_basic_header() -> None:
    value = basic_header(Credentials("user", "p:ss"))
    assert value == "Basic " + base64.b64encode(b"user:p:ss").decode()


def test_token_request_anonymous_uses_challenge_scope_when_none_asked() -> None:
    (challenge,) = parse_challenges([HUB])
    request = token_request(challenge, [], None)
    assert request.method == "GET" and request.url == "https://auth.docker.io/token"
    assert request.params == (("service", "registry.docker.io"), ("scope", "repository:library/busybox:pull"))
    assert request.authorization == ""


def test_token_request_with_credentials_and_scopes() -> None:
    challenge = Challenge("bearer", (("realm", "https://t/token"), ("service", "svc")))
    request = token_request(challenge, ["repository:a:pull", "repository:b:pull,push"], Credentials("u", "p"))
    assert request.params == (("service", "svc"), ("scope", "repository:a:pull"),
                              ("scope", "repository:b:pull,push"), ("account", "u"))
    assert request.authorization == basic_header(Credentials("u", "p"))


def test_token_request_with_identity_token_posts_refresh_grant() -> None:
    challenge = Challenge("bearer", (("realm", "https://t/token"), ("service", "svc")))
    request = token_request(challenge, ["repository:a:pull"], Credentials("", "", identity_token="refresh"))
    assert request.method == "POST" and request.authorization == ""
    assert dict(request.form) == {"grant_type": "refresh_token", "refresh_token": "refresh", "client_id": "pybuild",
                                  "service": "svc", "scope": "repository:a:pull"}


def test_token_request_refuses_odd_realm() -> None:
    with pytest.raises(RegistryError, match="realm 'file:/x' is not an http"):
        token_request(Challenge("bearer", (("realm", "file:/x"),)), [], None)


def test_parse_token_response() -> None:
    token = parse_token_response(b'{"token": "abc", "expires_in": 300}', now=1000.0)
    assert token.value == "abc" and token.expires == 1000.0 + 290
    assert parse_token_response(b'{"access_token": "xyz"}', now=0.0).expires == 50.0  # default 60 s
    for body, reason in ((b"nope", "not JSON"), (b"[]", "not a JSON object"), (b"{}", "no token")):
        with pytest.raises(RegistryError, match=reason):
            parse_token_response(body)


def test_token_cache_expires_and_drops() -> None:
    cache = TokenCache()
    cache.put(("s",), Token("t1", 100.0))
    assert cache.get(("s",), now=99.0) == "t1"
    assert cache.get(("s",), now=100.0) is None
    assert cache.get(("other",), now=0.0) is None
    cache.drop(("s",), "not-it")
    assert len(cache) == 1
    cache.drop(("s",), "t1")
    assert len(cache) == 0


def test_secrets_never_in_repr() -> None:
    creds = Credentials("alice", "hunter2", identity_token="refresh-secret")
    for text in (repr(creds), str(creds), repr([creds]), f"{creds}"):
        assert "hunter2" not in text and "refresh-secret" not in text and "alice" in text
    assert repr(Credentials("bob", "")) == "Credentials(username='bob', password='', identity_token='')"
    assert "tok-secret" not in repr(Token("tok-secret", 1.0))
    challenge = Challenge("bearer", (("realm", "https://t/token"),))
    request = token_request(challenge, [], creds)
    assert "refresh-secret" not in repr(request) and "hunter2" not in repr(request)
    basic = token_request(challenge, [], Credentials("alice", "hunter2"))
    assert "aHVudGVy" not in repr(basic) and basic_header(Credentials("alice", "hunter2")) not in repr(basic)
    assert creds == Credentials("alice", "hunter2", identity_token="refresh-secret")  # still a record
