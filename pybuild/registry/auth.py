"""Registry authentication: `WWW-Authenticate` challenges, Basic headers, Bearer token requests, a
thread-safe token cache, and `Authenticator`, which puts them together for one host.

Who uses it: `client.RegistryClient`, which owns one `Authenticator` and asks it for each request's
`Authorization` header and, after a 401, whether a new attempt may help. No network I/O here: the client
sends the requests this module describes (the `Authenticator` is handed the client's token fetcher); the
only I/O is reading docker's config (`dockerconfig.credentials_for`) when the caller gave no credentials.

The token flow is distribution's (docs/spec/auth/token.md): a request answered 401 carries a challenge
`Bearer realm="https://auth/token",service="registry",scope="repository:foo:pull"`; the client asks the
realm for a token with `service` and one `scope` parameter per scope (`repository:NAME:ACTIONS`), sending
Basic credentials when it has some (`account` names the user), or, holding an identity token (an OAuth2
refresh token), POSTs `grant_type=refresh_token` to the realm (docs/spec/auth/oauth.md). The answer is
JSON with `token` (or `access_token`) and `expires_in` (60 s when absent). Tokens are cached per set of
scopes until shortly before they expire. A challenge is learned once and then answered up front: Basic
sends the credentials with every request, Bearer a token for the request's scopes.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from pybuild.errors import RegistryError
from pybuild.record import record
from pybuild.registry.dockerconfig import Credentials, credentials_for

__all__ = ["Authenticator", "Challenge", "Token", "TokenCache", "TokenFetcher", "TokenRequest",
           "basic_header", "parse_challenges", "parse_token_response", "pull_scope", "push_scope",
           "scope_key", "token_request"]

DEFAULT_EXPIRY: Final = 60.0
EXPIRY_MARGIN: Final = 10.0  # refresh a little early: a token must not expire between cache and use
CLIENT_ID: Final = "pybuild"

# auth-param = token BWS "=" BWS ( token / quoted-string )  (RFC 7235)
_PARAM_RE: Final = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*,?')
_SCHEME_RE: Final = re.compile(r"\s*,?\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?=\s|$|,)")


@record
class Challenge:
    """One `WWW-Authenticate` challenge: scheme lower-cased (`bearer`, `basic`), parameters in order."""

    scheme: str
    params: tuple[tuple[str, str], ...] = ()

    def get(self, name: str, default: str = "") -> str:
        """The value of parameter `name` (case-insensitive), `default` when absent."""
        wanted = name.lower()
        return next((value for key, value in self.params if key.lower() == wanted), default)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse_challenges(headers: Iterable[str]) -> tuple[Challenge, ...]:
    """Every challenge in the given `WWW-Authenticate` header values (several may share one value)."""
    found: list[Challenge] = []
    for header in headers:
        pos = 0
        while pos < len(header):
            scheme = _SCHEME_RE.match(header, pos)
            if scheme is None:
                break
            pos = scheme.end()
            params: list[tuple[str, str]] = []
            while True:
                param = _PARAM_RE.match(header, pos)
                if param is None:
                    break
                params.append((param.group(1), _unquote(param.group(2))))
                pos = param.end()
            found.append(Challenge(scheme.group(1).lower(), tuple(params)))
    return tuple(found)


def pull_scope(repo: str) -> str:
    """The scope that lets a client read `repo`."""
    return f"repository:{repo}:pull"


def push_scope(repo: str) -> str:
    """The scope that lets a client read and write `repo`."""
    return f"repository:{repo}:pull,push"


def scope_key(scopes: Iterable[str]) -> tuple[str, ...]:
    """A canonical cache key for a set of scopes."""
    return tuple(sorted(set(scopes)))


def basic_header(creds: Credentials) -> str:
    """The `Authorization` value for Basic authentication with `creds`."""
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


@record
class TokenRequest:
    """How to ask a token server for a token: GET with `params`, or POST the `form` (OAuth2)."""

    method: str
    url: str
    params: tuple[tuple[str, str], ...]
    form: tuple[tuple[str, str], ...]
    authorization: str  # an `Authorization` header value, or ""

    def encode(self) -> tuple[str, dict[str, str], bytes | None]:
        """(URL, headers, body) to send: `params` appended to the URL by hand (`scope` may repeat), `form`
        as an urlencoded body."""
        headers = {"Authorization": self.authorization} if self.authorization else {}
        target = self.url
        if self.params:
            target += ("&" if "?" in target else "?") + urllib.parse.urlencode(self.params)
        if not self.form:
            return target, headers, None
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return target, headers, urllib.parse.urlencode(self.form).encode("ascii")


def token_request(challenge: Challenge, scopes: Sequence[str], creds: Credentials | None) -> TokenRequest:
    """The token request answering a Bearer `challenge` for `scopes` (else the challenge's own scope)."""
    realm = challenge.get("realm")
    if not realm.startswith(("https://", "http://")):
        raise RegistryError(f"invalid auth challenge: realm {realm!r} is not an http(s) URL")
    service = challenge.get("service")
    wanted = list(scopes) or [s for s in challenge.get("scope").split(" ") if s]
    if creds is not None and creds.identity_token:
        form = [("grant_type", "refresh_token"), ("refresh_token", creds.identity_token),
                ("client_id", CLIENT_ID), ("service", service), ("scope", " ".join(wanted))]
        return TokenRequest("POST", realm, (), tuple(form), "")
    params = [("service", service)] if service else []
    params += [("scope", scope) for scope in wanted]
    authorization = ""
    if creds is not None and creds.username:
        params.append(("account", creds.username))
        authorization = basic_header(creds)
    return TokenRequest("GET", realm, tuple(params), (), authorization)


@record
class Token:
    """A Bearer token and the monotonic time after which it is no longer used."""

    value: str
    expires: float


def _token_repr(self: Token) -> str:
    return "Token(***)"


def _request_repr(self: TokenRequest) -> str:
    return f"TokenRequest({self.method} {self.url})"


# Both hold secrets (the token; the refresh token or Basic header): `record`'s repr would show them.
setattr(Token, "__repr__", _token_repr)
setattr(TokenRequest, "__repr__", _request_repr)


def parse_token_response(body: bytes, now: float | None = None) -> Token:
    """The token in a token server's JSON answer; RegistryError when there is none."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise RegistryError("invalid token server answer: not JSON") from exc
    if not isinstance(data, dict):
        raise RegistryError("invalid token server answer: not a JSON object")
    value = data.get("token") or data.get("access_token")
    if not isinstance(value, str) or not value:
        raise RegistryError("invalid token server answer: no token")
    expires_in = data.get("expires_in")
    lifetime = DEFAULT_EXPIRY
    if isinstance(expires_in, (int, float)) and expires_in > 0:
        lifetime = float(expires_in)
    start = time.monotonic() if now is None else now
    return Token(value, start + max(lifetime - EXPIRY_MARGIN, lifetime / 2))


class TokenCache:
    """Bearer tokens per set of scopes, shared by a client's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, ...], Token] = {}

    def get(self, key: tuple[str, ...], now: float | None = None) -> str | None:
        """The cached token for `key`, None when absent or about to expire."""
        moment = time.monotonic() if now is None else now
        with self._lock:
            token = self._tokens.get(key)
            if token is None or token.expires <= moment:
                return None
            return token.value

    def put(self, key: tuple[str, ...], token: Token) -> None:
        with self._lock:
            self._tokens[key] = token

    def drop(self, key: tuple[str, ...], value: str | None = None) -> None:
        """Forget the token for `key` (only if it is still `value`, when given)."""
        with self._lock:
            token = self._tokens.get(key)
            if token is not None and (value is None or token.value == value):
                del self._tokens[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._tokens)


TokenFetcher = Callable[[TokenRequest, tuple[str, ...]], bytes]
"""Sends a token request for a set of scopes, returns the token server's answer (`RegistryClient`'s)."""


class Authenticator:
    """The authentication state of one registry host, owned by `client.RegistryClient`: the credentials
    (the caller's, else docker's config's, read on first need), the challenge learned from the last 401,
    and the Bearer tokens per set of scopes, fetched through `fetch`. Thread-safe; however many threads
    want a token for one set of scopes, it is requested once.
    """

    def __init__(self, host: str, credentials: Credentials | None, fetch: TokenFetcher) -> None:
        self.host = host
        self._fetch = fetch
        self._lock = threading.Lock()
        self._credentials = credentials
        self._credentials_known = credentials is not None
        self._challenge: Challenge | None = None
        self._tokens = TokenCache()
        self._token_locks: dict[tuple[str, ...], threading.Lock] = {}

    def credentials(self) -> Credentials | None:
        """The host's credentials: the caller's, else docker's config's (read once, when first asked)."""
        with self._lock:
            if not self._credentials_known:
                self._credentials = credentials_for(self.host)
                self._credentials_known = True
            return self._credentials

    def learn(self, headers: Iterable[str]) -> Challenge | None:
        """Remember the challenge in a 401's `WWW-Authenticate` values (Bearer preferred over Basic)."""
        challenges = parse_challenges(headers)
        chosen = next((c for c in challenges if c.scheme == "bearer"), None)
        chosen = chosen or next((c for c in challenges if c.scheme == "basic"), None)
        if chosen is not None:
            with self._lock:
                self._challenge = chosen
        return chosen

    def authorization(self, scopes: Sequence[str]) -> str | None:
        """The `Authorization` value for a request needing `scopes` (a Bearer token is fetched when none is
        cached); None before any challenge, or when there is nothing to send."""
        with self._lock:
            challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            creds = self.credentials()
            return basic_header(creds) if creds is not None and creds.username else None
        if challenge.scheme != "bearer":
            return None
        key = scope_key(scopes)
        token = self._tokens.get(key)
        if token is None:
            with self._lock:
                key_lock = self._token_locks.setdefault(key, threading.Lock())
            with key_lock:  # one token request per scope set, however many threads want it
                token = self._tokens.get(key) or self._fetch_token(challenge, key)
        return "Bearer " + token

    def _fetch_token(self, challenge: Challenge, key: tuple[str, ...]) -> str:
        token = parse_token_response(self._fetch(token_request(challenge, key, self.credentials()), key))
        self._tokens.put(key, token)
        return token.value

    def renew(self, challenge: Challenge | None, scopes: Sequence[str], used: str) -> bool:
        """Whether a request for `scopes` that sent `used` (an `Authorization` value, or "") and was answered
        401 with `challenge` may succeed with a new `authorization(scopes)`. A refused Bearer token is
        dropped, so the next one is fetched anew (unless another thread has replaced it already)."""
        if challenge is None or challenge.scheme not in ("basic", "bearer"):
            return False
        if challenge.scheme == "basic":
            if used.startswith("Basic "):  # sending the same credentials again would not help
                return False
            creds = self.credentials()
            return creds is not None and bool(creds.username)
        if used.startswith("Bearer "):
            self._tokens.drop(scope_key(scopes), used[len("Bearer "):])
        return True
