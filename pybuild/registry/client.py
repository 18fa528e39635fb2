"""The OCI distribution API (distribution-spec v2) over httpx: one `RegistryClient` per registry host.

Who uses it: pull and push (`registry/pull.py`, `registry/push.py`), the registry build cache
(`cache/transfer.py`) and `login.login`. Those callers run transfers in parallel on their own
threads; a client is thread-safe (one `httpx.Client` with a connection pool, state under locks), and
`client_for(host)` shares one client per host in a process.

What it does:
- Manifests by tag or digest (`Accept`: OCI manifest and index, Docker v2 manifest and manifest list),
  verified against the digest when fetched by digest; blobs streamed into the caller's writer and
  verified; uploads as POST then one streamed PUT (monolithic), or PATCH chunks then PUT for blobs larger
  than `chunk_size` (`wire.UPLOAD_CHUNK`; a chunk is streamed from the source, never held in memory);
  cross-repository mounts (`?mount=&from=`: False when the registry opens an upload instead, which is
  cancelled, or refuses access to the source); HEAD existence checks; tag lists (`Link` pagination).
- Authentication (`auth.Authenticator`, one per client): credentials (the caller's, else docker's config's
  on the first challenge), the challenge a 401 taught, Bearer tokens per set of scopes (pull to read,
  pull,push to write, plus pull on a mount's source repository); the client sends its token requests.
- Schemes: HTTPS; for an insecure host (`settings.is_insecure`: loopback, config file,
  `--insecure-registry`) HTTPS without certificate checks is tried first, and plain HTTP after a TLS or
  connection error, as docker does; the choice is kept for the client's life. Extra CAs and client
  certificates are read from `/etc/docker/certs.d/HOST/` (`*.crt`; `*.cert` with `*.key`), docker's place.
- Failures: connection errors, 429 and 5xx are retried `retries` times with exponential backoff from
  `backoff` seconds, or after `Retry-After` when the registry says, never waiting more than `max_wait`
  seconds in total for one operation (`sleep` and `max_wait` are attributes, so tests make them small).
  An unknown host name is not retried.
  A blob download cut off mid-body resumes with `Range: bytes=N-` (or, when the server ignores Range,
  starts again and skips the N bytes already written), so the caller's writer only ever receives each
  byte once. A failed upload starts again from a new upload session (a chunked upload too: resuming
  from the registry's reported offset is not worth its corner cases here).
- Bounds (`bounds.py`, settable through `PYBUILD_REGISTRY_*` variables): every operation (a blob, an
  upload, a manifest, a token, any other request) runs under a `Meter`; every socket wait of its attempts
  is cut to the low-speed window (less than 1 KiB/s for 30 s aborts the attempt, headers included) and
  to the operation's deadline (600 s plus one per 16 KiB of its size). A stalled attempt is retried
  once (a download that made progress, more often); then, or at the deadline, the operation fails with
  "blob sha256:... from registry HOST stalled: less than 1024 bytes/s for 30 s (2 stalled attempts)".
  Answers read whole (tokens, error bodies, manifests, tag lists) are capped (`MAX_ANSWER`,
  `MAX_MANIFEST`, `MAX_SMALL_BODY`).
- `progress` callbacks get the number of bytes of each piece just written or sent (increments, not
  totals), so one callback can add up several transfers running in parallel.
- Errors are RegistryError with one-line messages: "cannot reach registry HOST: ...", "access to
  registry HOST denied: repository:foo:pull,push (...)", "manifest unknown: HOST/foo:tag", "digest
  mismatch for blob sha256:...: got sha256:...". When `get_blob` raises, the bytes already written must
  be thrown away by the caller (e.g. a `BlobWriter` left uncommitted). No httpx exception leaves here.

Module-level helpers (media types, the retry budget, error texts, TLS settings) live in `wire.py`, and
the authentication state and decisions in `auth.py`, to keep this file about the protocol.
"""

from __future__ import annotations

import hashlib
import json
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from types import TracebackType
from typing import BinaryIO, Final

import httpx

from pybuild.digest import digest_parts
from pybuild.errors import RegistryError, StoreError
from pybuild.registry import bounds, settings
from pybuild.registry.auth import Authenticator, TokenRequest, pull_scope, push_scope
from pybuild.registry.dockerconfig import Credentials
from pybuild.registry.wire import (
    ACCEPT_MANIFESTS,
    LINK_RE,
    MANIFEST_TYPES,
    READ_CHUNK,
    UPLOAD_CHUNK,
    Budget,
    Denied,
    Retriable,
    Writable,
    error_detail,
    is_dns_failure,
    manifest_media_type,
    read_capped,
    reason,
    retry_after_seconds,
    ssl_context,
    unverified_context,
    watch_client,
)
from pybuild.version import __version__

__all__ = ["ACCEPT_MANIFESTS", "RegistryClient", "Writable", "client_for", "close_clients"]

_HUB_HOSTS: Final = frozenset({"docker.io", "index.docker.io"})
_HUB_API: Final = "registry-1.docker.io"
MAX_MANIFEST: Final = 4 << 20  # distribution-spec: registries may refuse manifests over 4 MiB
MAX_SMALL_BODY: Final = 8 << 20
MAX_ANSWER: Final = 1 << 20  # any other answer read whole: a token, an error, an upload's answer
MAX_WAIT: Final = 60.0
MAX_PAGES: Final = 10_000


def _api_host(host: str) -> str:
    return _HUB_API if host.lower() in _HUB_HOSTS else host


class RegistryClient:
    """A client of one registry host (`127.0.0.1:5000`, `ghcr.io`, `docker.io`); see the module docstring.

    `credentials` None looks them up in docker's config on the first auth challenge; `insecure` None
    applies `settings.is_insecure(host)`; `transport` replaces the network (tests pass an
    `httpx.MockTransport`). Thread-safe; close it (or use it as a context manager) when done.
    """

    def __init__(self, host: str, *, credentials: Credentials | None = None, insecure: bool | None = None,
                 transport: httpx.BaseTransport | None = None, retries: int = 4,
                 backoff: float = 0.5) -> None:
        self.host = host
        self.api_host = _api_host(host)
        self.insecure = settings.is_insecure(host) if insecure is None else insecure
        self.retries = max(0, retries)
        self.backoff = max(0.0, backoff)
        self.max_wait = MAX_WAIT
        self.sleep: Callable[[float], None] = time.sleep
        self.limits = bounds.Limits.from_env()
        self._lock = threading.Lock()
        self._scheme: str | None = None if self.insecure else "https"
        self._auth = Authenticator(host, credentials, self._fetch_token)
        verify: ssl.SSLContext | bool = True
        if transport is None:
            verify = unverified_context() if self.insecure else ssl_context(self.api_host)
        # the meter cuts each wait to its window; this is the wait when it cannot (see wire.watch_client)
        wait = self.limits.speed_time if self.limits.speed_limit > 0 else 60.0
        self._http = httpx.Client(
            transport=transport, verify=verify, follow_redirects=False,
            timeout=httpx.Timeout(wait, connect=min(15.0, wait), pool=None),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            headers={"User-Agent": f"pybuild/{__version__}"},
        )
        self.watched = watch_client(self._http) if transport is None else 0

    def __repr__(self) -> str:
        return f"RegistryClient({self.host!r}, insecure={self.insecure})"

    def _budget(self) -> Budget:
        return Budget(self.retries, self.backoff, self.max_wait, self.sleep, bounds.current())

    def _watch(self, subject: str, expected: int = 0, *, resumable: bool = False
               ) -> AbstractContextManager[bounds.Meter]:
        """Run the block as one bounded operation on `subject` (see `bounds.py`), `expected` bytes long."""
        return bounds.watching(bounds.Meter(self.limits, subject, expected, resumable=resumable))

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- plumbing ------------------------------------------------------------------------------------------

    @property
    def scheme(self) -> str | None:
        """`https` or `http` once decided (an insecure host is undecided until it first answers)."""
        with self._lock:
            return self._scheme

    def _url(self, target: str) -> str:
        if target.startswith("/"):
            with self._lock:
                scheme = self._scheme or "https"
            return f"{scheme}://{self.api_host}{target}"
        return target

    def _same_origin(self, url: str) -> bool:
        return httpx.URL(url).netloc.decode("ascii", "replace").lower() == self.api_host.lower()

    def _ref(self, repo: str, reference: str) -> str:
        separator = "@" if ":" in reference else ":"
        return f"{self.host}/{repo}{separator}{reference}"

    def _check_digest(self, digest: str) -> str:
        parts = digest_parts(digest)
        if parts is None:
            raise RegistryError(f"invalid digest: {digest!r}")
        return parts[0]

    def _transport_error(self, exc: BaseException) -> RegistryError:
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol)):
            return RegistryError(f"cannot reach registry {self.host}: {reason(exc)}")
        return RegistryError(f"connection to registry {self.host} failed: {reason(exc)}")

    def _attempt_failed(self, exc: BaseException) -> RegistryError:
        """The error of an attempt that `exc` (a transport error) ended: the meter's when a bound ran out
        (raised at once when no attempt may follow), else the connection's."""
        meter = bounds.current()
        if meter is not None and meter.tripped:
            return meter.strike()
        return self._transport_error(exc)

    def _fall_back(self, url: str, exc: httpx.TransportError) -> bool:
        """Switch an undecided insecure host from HTTPS to HTTP after `exc`; True when it did."""
        if isinstance(exc, httpx.LocalProtocolError) or not url.startswith(f"https://{self.api_host}/"):
            return False
        with self._lock:
            if not self.insecure or self._scheme == "https":
                return False
            self._scheme = "http"  # (another thread's failed attempt may have decided it already)
        return True

    def _settle(self, url: str) -> None:
        """A response came over `url`'s scheme: keep using it."""
        if url.startswith(f"https://{self.api_host}/"):
            with self._lock:
                if self._scheme is None:
                    self._scheme = "https"

    def _denied(self, scopes: Sequence[str], detail: str) -> Denied:
        hint = None if self._auth.credentials() is not None else f"log in first: pybuild login {self.host}"
        what = " ".join(scopes) or "registry"
        return Denied(f"access to registry {self.host} denied: {what} ({detail})", detail, hint)

    def _fetch_token(self, request: TokenRequest, scopes: tuple[str, ...]) -> bytes:
        """Send a token request for `scopes`; the token server's answer (the `Authenticator`'s fetcher)."""
        url, headers, body = request.encode()
        with self._watch(f"token server of registry {self.host}"):
            response = self._send(request.method, url, headers=headers, content=body, auth=False, follow=True)
        if response.status_code in (401, 403):
            raise self._denied(scopes, f"token server: {error_detail(response)}")
        if response.status_code != 200:
            raise RegistryError(f"token server of registry {self.host} failed: {error_detail(response)}")
        return response.content

    def _send(self, method: str, target: str, *, scopes: Sequence[str] = (),
              headers: dict[str, str] | None = None, content: bytes | Iterator[bytes] | None = None,
              stream: bool = False, replay: bool = True, follow: bool = False,
              auth: bool = True, grace: float = 0.0) -> httpx.Response:
        """Send one request with auth, scheme fallback and retries; return any response but 401/403 (those
        raise `Denied`) and, when retries run out, 429/5xx (those raise RegistryError).

        `replay` False (a streamed body) raises `Retriable` instead of retrying, so the caller starts over.
        The response is read (at most `MAX_ANSWER` bytes) unless `stream`; then the caller reads it under
        its own meter and closes it. Each attempt is one of the current meter's (made here when there is
        none), its first window `grace` seconds longer."""
        with ExitStack() as stack:
            if bounds.current() is None:
                stack.enter_context(self._watch(f"{method} request to registry {self.host}"))
            return self._attempts(method, target, scopes, headers, content, stream, replay, follow, auth,
                                  grace)

    def _attempts(self, method: str, target: str, scopes: Sequence[str], headers: dict[str, str] | None,
                  content: bytes | Iterator[bytes] | None, stream: bool, replay: bool, follow: bool,
                  auth: bool, grace: float) -> httpx.Response:
        meter = bounds.current()
        assert meter is not None
        budget = self._budget()
        reauthed = False
        while True:
            url = self._url(target)
            sent = dict(headers or {})
            if auth and self._same_origin(url):
                authorization = self._auth.authorization(scopes)
                if authorization:
                    sent["Authorization"] = authorization
            meter.begin(grace)
            try:
                request = self._http.build_request(method, url, headers=sent, content=content)
                response = self._http.send(request, stream=True, follow_redirects=follow)
                if not stream:
                    response = self._whole(response, meter)
            except httpx.TransportError as exc:
                if self._fall_back(url, exc):
                    continue
                if isinstance(exc, httpx.LocalProtocolError) or is_dns_failure(exc):
                    raise self._transport_error(exc) from exc
                error = self._attempt_failed(exc)
                if not replay:
                    raise Retriable(error.message, hint=error.hint) from exc
                budget.wait(None, error)
                continue
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise RegistryError(f"request to registry {self.host} failed: {reason(exc)}") from exc
            self._settle(url)
            status = response.status_code
            if auth and status == 401:
                detail = error_detail(response)
                response.close()
                challenge = self._auth.learn(response.headers.get_list("WWW-Authenticate"))
                if reauthed or not self._auth.renew(challenge, scopes, sent.get("Authorization", "")):
                    raise self._denied(scopes, detail)
                reauthed = True
                if not replay:
                    raise Retriable(f"access to registry {self.host} needs a new authentication")
                continue
            if auth and status == 403:
                detail = error_detail(response)
                response.close()
                raise self._denied(scopes, detail)
            if status == 429 or status >= 500:
                detail = error_detail(response)
                response.close()
                retry_after = retry_after_seconds(response)
                message = f"registry {self.host} failed {method} {httpx.URL(url).path}: {detail}"
                if status == 429:
                    message = f"registry {self.host} is rate-limiting requests: {detail}"
                if not replay:
                    raise Retriable(message, retry_after)
                budget.wait(retry_after, RegistryError(message))
                continue
            return response

    def _whole(self, response: httpx.Response, meter: bounds.Meter) -> httpx.Response:
        """`response` read (at most `MAX_ANSWER` bytes) and closed, as a response held in memory."""
        try:
            data = read_capped(response, MAX_ANSWER)
        except OverflowError:
            raise RegistryError(f"{meter.subject}: the answer to {response.request.method} "
                                f"{response.request.url.path} is larger than {MAX_ANSWER >> 20} MiB") from None
        finally:
            response.close()
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() != "content-encoding"]
        return httpx.Response(response.status_code, headers=headers, content=data, request=response.request,
                              extensions=response.extensions)

    def _get_small(self, target: str, scopes: Sequence[str], headers: dict[str, str], limit: int,
                   what: str, method: str = "GET") -> tuple[httpx.Response, bytes]:
        """GET a small document whole (retried when the body is cut off), at most `limit` bytes; `what`
        names it in errors (a bounded operation of its own)."""
        with self._watch(what):
            budget = self._budget()
            while True:
                response = self._send(method, target, scopes=scopes, headers=headers, stream=True,
                                      follow=True)
                with self._body(response, budget):
                    try:
                        return response, read_capped(response, limit)
                    except OverflowError:
                        raise RegistryError(f"{what} is larger than {limit >> 20} MiB") from None

    @contextmanager
    def _body(self, response: httpx.Response, budget: Budget) -> Iterator[None]:
        """Reading `response`'s body: closed whatever happens; a connection lost mid-body waits for the next
        retry and is swallowed (the caller's loop asks again); another httpx error is a RegistryError."""
        try:
            yield
        except httpx.TransportError as exc:
            budget.wait(None, self._attempt_failed(exc))
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        finally:
            response.close()

    def _failure(self, what: str, response: httpx.Response, body: bytes | None = None) -> RegistryError:
        return RegistryError(f"cannot {what}: {error_detail(response, body)}")

    # --- the API -------------------------------------------------------------------------------------------

    def ping(self) -> None:
        """GET /v2/: the registry answers (an auth challenge counts as an answer, and is remembered)."""
        response = self._send("GET", "/v2/", auth=False)
        if response.status_code == 401:
            self._auth.learn(response.headers.get_list("WWW-Authenticate"))
            return
        if response.status_code != 200:
            raise RegistryError(f"{self.host} is not a registry: GET /v2/ answered {error_detail(response)}")

    def check_login(self) -> None:
        """Check this client's credentials against GET /v2/ (docker login's check); RegistryError
        "login failed for HOST: ..." when the registry or its token server refuses them."""
        response = self._send("GET", "/v2/", auth=False)
        if response.status_code == 200:
            return  # the registry needs no login; docker stores the credentials all the same
        if response.status_code != 401:
            raise RegistryError(f"{self.host} is not a registry: GET /v2/ answered {error_detail(response)}")
        self._auth.learn(response.headers.get_list("WWW-Authenticate"))
        try:
            response = self._send("GET", "/v2/")
        except Denied as exc:
            raise RegistryError(f"login failed for {self.host}: {exc.detail}") from None
        if response.status_code != 200:
            raise RegistryError(f"login failed for {self.host}: {error_detail(response)}")

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest or index by tag or digest, verified when by digest."""
        ref = self._ref(repo, reference)
        algorithm = self._check_digest(reference) if ":" in reference else "sha256"
        response, data = self._get_small(f"/v2/{repo}/manifests/{reference}", (pull_scope(repo),),
                                         {"Accept": ACCEPT_MANIFESTS}, MAX_MANIFEST, f"manifest {ref}")
        if response.status_code == 404:
            raise RegistryError(f"manifest unknown: {ref}")
        if response.status_code != 200:
            raise self._failure(f"get manifest {ref}", response, data)
        digest = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
        if ":" in reference and digest != reference:
            raise RegistryError(f"digest mismatch for manifest {ref}: got {digest}")
        return data, manifest_media_type(response, data), digest

    def head_manifest(self, repo: str, reference: str) -> tuple[str, str, int] | None:
        """(digest, media type, size) of a manifest, None when the registry does not know it."""
        if ":" in reference:
            self._check_digest(reference)
        with self._watch(f"manifest {self._ref(repo, reference)}"):
            response = self._send("HEAD", f"/v2/{repo}/manifests/{reference}", scopes=(pull_scope(repo),),
                                  headers={"Accept": ACCEPT_MANIFESTS}, follow=True)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._failure(f"check manifest {self._ref(repo, reference)}", response, b"")
        digest = response.headers.get("Docker-Content-Digest", "")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        length = response.headers.get("Content-Length", "")
        if digest_parts(digest) is not None and media_type in MANIFEST_TYPES and length.isdigit():
            return digest, media_type, int(length)
        data, media_type, digest = self.get_manifest(repo, reference)  # a registry that says too little
        return digest, media_type, len(data)

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        """Store a manifest or index under a tag (or its digest); return its digest."""
        ref = self._ref(repo, reference)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if ":" in reference:
            algorithm = self._check_digest(reference)
            digest = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
            if digest != reference:
                raise RegistryError(f"digest mismatch for manifest {ref}: its bytes hash to {digest}")
        with self._watch(f"upload of manifest {ref}", len(data)):
            response = self._send("PUT", f"/v2/{repo}/manifests/{reference}", scopes=(push_scope(repo),),
                                  headers={"Content-Type": media_type}, content=data)
        if response.status_code not in (200, 201, 202):
            raise self._failure(f"push manifest {ref}", response)
        return digest

    def blob_size(self, repo: str, digest: str) -> int | None:
        """The size of a blob in `repo` (HEAD), None when it is not there."""
        self._check_digest(digest)
        with self._watch(f"blob {self._ref(repo, digest)}"):
            response = self._send("HEAD", f"/v2/{repo}/blobs/{digest}", scopes=(pull_scope(repo),),
                                  follow=True)
        if response.status_code == 404:
            return None
        length = response.headers.get("Content-Length", "")
        if response.status_code != 200 or not length.isdigit():
            raise self._failure(f"check blob {self._ref(repo, digest)}", response, b"")
        return int(length)

    def get_blob(self, repo: str, digest: str, out: Writable, *, size: int | None = None,
                 progress: Callable[[int], None] | None = None) -> int:
        """Stream a blob into `out.write`, verifying its digest (and `size`, when given); return its size.

        A cut-off download resumes (see the module docstring). On any error the bytes written so far are
        the caller's to discard. `progress` gets the number of bytes of each piece written to `out`."""
        algorithm = self._check_digest(digest)
        with self._watch(f"blob {digest} from registry {self.host}", size or 0, resumable=True):
            received, got = self._download(repo, digest, out, size, progress, algorithm)
        if size is not None and received != size:
            raise RegistryError(f"blob {digest} is {received} bytes, expected {size}")
        if f"{algorithm}:{got}" != digest:
            raise RegistryError(f"digest mismatch for blob {digest}: got {algorithm}:{got}")
        return received

    def _download(self, repo: str, digest: str, out: Writable, size: int | None,
                  progress: Callable[[int], None] | None, algorithm: str) -> tuple[int, str]:
        """`get_blob`'s attempts: (bytes written, their hex digest)."""
        hasher = hashlib.new(algorithm)
        received = 0
        use_range = True
        budget = self._budget()
        while True:
            headers = {"Accept-Encoding": "identity"}
            if received and use_range:
                headers["Range"] = f"bytes={received}-"
            response = self._send("GET", f"/v2/{repo}/blobs/{digest}", scopes=(pull_scope(repo),),
                                  headers=headers, stream=True, follow=True)
            with self._body(response, budget):
                if response.status_code == 416 and received:
                    use_range = False
                    budget.wait(None, self._failure(f"resume blob {digest}", response))
                    continue
                skip = self._blob_start(repo, digest, response, received)
                for chunk in response.iter_bytes():
                    if skip:
                        if len(chunk) <= skip:
                            skip -= len(chunk)
                            continue
                        chunk, skip = chunk[skip:], 0
                    if size is not None and received + len(chunk) > size:
                        raise RegistryError(f"blob {digest} is larger than the expected {size} bytes")
                    hasher.update(chunk)
                    out.write(chunk)
                    received += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
                return received, hasher.hexdigest()

    def _blob_start(self, repo: str, digest: str, response: httpx.Response, received: int) -> int:
        """How many leading bytes of `response` were written already (so are skipped); raises on failure."""
        status = response.status_code
        if status == 404:
            raise RegistryError(f"blob unknown: {self._ref(repo, digest)}")
        if status == 200:
            return received
        if status == 206 and received:
            match = re.match(r"bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
            start = int(match.group(1)) if match else -1
            if 0 <= start <= received:
                return received - start
            raise RegistryError(f"cannot resume blob {digest}: registry answered an unasked range")
        raise self._failure(f"get blob {self._ref(repo, digest)}", response)

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Ask the registry to link blob `digest` of `from_repo` into `repo`; True when it did (201)."""
        self._check_digest(digest)
        with self._watch(f"mount of blob {digest} into {self.host}/{repo}"):
            return self._mount(repo, digest, from_repo)

    def _mount(self, repo: str, digest: str, from_repo: str) -> bool:
        query = urllib.parse.urlencode({"mount": digest, "from": from_repo})
        scopes = (push_scope(repo), pull_scope(from_repo))
        try:
            response = self._send("POST", f"/v2/{repo}/blobs/uploads/?{query}", scopes=scopes)
        except Denied:
            return False  # no access to from_repo: the caller uploads instead
        if response.status_code == 201:
            return True
        if response.status_code == 202:  # the registry opened an upload instead: cancel it
            location = response.headers.get("Location")
            if location:
                try:
                    self._send("DELETE", str(response.url.join(location)), scopes=scopes, replay=False)
                except RegistryError:
                    pass
            return False
        raise self._failure(f"mount blob {digest} into {self.host}/{repo}", response)

    def upload_blob(self, repo: str, digest: str, size: int, opener: Callable[[], BinaryIO], *,
                    chunk_size: int = UPLOAD_CHUNK, progress: Callable[[int], None] | None = None) -> None:
        """Upload the `size` bytes `opener()` reads as blob `digest`: one PUT when it fits in `chunk_size`,
        else PATCH chunks. A failed attempt starts over with a new `opener()`. `progress` gets the size of
        each piece sent (a restarted upload counts its bytes again)."""
        self._check_digest(digest)
        scopes = (push_scope(repo),)
        with self._watch(f"upload of blob {digest} to registry {self.host}", size):
            budget = self._budget()
            while True:
                try:
                    location = self._start_upload(repo, scopes)
                    if size <= chunk_size:
                        self._put_whole(location, digest, size, opener, scopes, progress)
                    else:
                        self._put_chunks(location, digest, size, opener, max(1, chunk_size), scopes, progress)
                    return
                except Retriable as exc:
                    budget.wait(exc.retry_after, RegistryError(exc.message, hint=exc.hint))

    def _start_upload(self, repo: str, scopes: Sequence[str]) -> str:
        response = self._send("POST", f"/v2/{repo}/blobs/uploads/", scopes=scopes,
                              headers={"Content-Length": "0"})
        location = response.headers.get("Location")
        if response.status_code != 202 or not location:
            raise self._failure(f"start an upload to {self.host}/{repo}", response)
        return str(response.url.join(location))

    def _source(self, opener: Callable[[], BinaryIO], digest: str) -> BinaryIO:
        try:
            return opener()
        except OSError as exc:
            raise StoreError(f"cannot read blob {digest}: {exc.strerror or exc}") from exc

    def _put_whole(self, location: str, digest: str, size: int, opener: Callable[[], BinaryIO],
                   scopes: Sequence[str], progress: Callable[[int], None] | None) -> None:
        with self._source(opener, digest) as source:
            url = str(httpx.URL(location).copy_merge_params({"digest": digest}))
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
            response = self._send("PUT", url, scopes=scopes, headers=headers,
                                  content=_stream(source, digest, 0, size, size, progress), replay=False)
        self._check_uploaded(digest, response)

    def _put_chunks(self, location: str, digest: str, size: int, opener: Callable[[], BinaryIO],
                    chunk_size: int, scopes: Sequence[str], progress: Callable[[int], None] | None) -> None:
        url = location
        with self._source(opener, digest) as source:
            offset = 0
            while offset < size:
                length = min(chunk_size, size - offset)
                headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length),
                           "Content-Range": f"{offset}-{offset + length - 1}"}
                body = _stream(source, digest, offset, length, size, progress)
                response = self._send("PATCH", url, scopes=scopes, headers=headers, content=body, replay=False)
                location = response.headers.get("Location", "")
                if response.status_code in (404, 416):
                    detail = error_detail(response)
                    raise Retriable(f"upload of blob {digest} to {self.host} was lost: {detail}")
                if response.status_code != 202 or not location:
                    raise self._failure(f"upload blob {digest} to {self.host}", response)
                url = str(response.url.join(location))
                offset += length
        final = str(httpx.URL(url).copy_merge_params({"digest": digest}))
        response = self._send("PUT", final, scopes=scopes, headers={"Content-Length": "0"}, content=b"",
                              replay=False, grace=size / bounds.UPLOAD_GRACE_RATE)
        self._check_uploaded(digest, response)

    def _check_uploaded(self, digest: str, response: httpx.Response) -> None:
        if response.status_code == 404:
            raise Retriable(f"upload of blob {digest} to {self.host} was lost: {error_detail(response)}")
        if response.status_code not in (201, 204):
            raise self._failure(f"upload blob {digest} to {self.host}", response)
        stored = response.headers.get("Docker-Content-Digest")
        if stored and stored != digest:
            raise RegistryError(f"digest mismatch for blob {digest}: registry stored {stored}")

    def list_tags(self, repo: str) -> list[str]:
        """Every tag of `repo`, following `Link` pagination."""
        tags: list[str] = []
        target: str | None = f"/v2/{repo}/tags/list"
        for _ in range(MAX_PAGES):
            if target is None:
                return tags
            response, body = self._get_small(target, (pull_scope(repo),), {}, MAX_SMALL_BODY,
                                             f"tag list of {self.host}/{repo}")
            if response.status_code == 404:
                raise RegistryError(f"repository unknown: {self.host}/{repo}")
            if response.status_code != 200:
                raise self._failure(f"list tags of {self.host}/{repo}", response, body)
            try:
                page = json.loads(body).get("tags") or []
            except (ValueError, AttributeError) as exc:
                raise RegistryError(f"invalid tag list from registry {self.host}: not a JSON object") from exc
            tags.extend(str(tag) for tag in page)
            link = LINK_RE.search(response.headers.get("Link", ""))
            target = str(response.url.join(link.group(1))) if link else None
        raise RegistryError(f"tag list of {self.host}/{repo} has more than {MAX_PAGES} pages")


def _stream(source: BinaryIO, digest: str, offset: int, length: int, total: int,
            progress: Callable[[int], None] | None) -> Iterator[bytes]:
    """The next `length` bytes of `source` (a request body, read as it is sent; no chunk is held whole)."""
    sent = 0
    while sent < length:
        piece = source.read(min(READ_CHUNK, length - sent))
        if not piece:
            raise StoreError(f"blob {digest} ended after {offset + sent} of {total} bytes")
        sent += len(piece)
        yield piece
        if progress is not None:
            progress(len(piece))
    meter = bounds.current()
    if meter is not None:
        meter.upload_sent(length)  # the registry's time to answer starts now (see bounds.py)


_clients: dict[str, RegistryClient] = {}
_clients_lock = threading.Lock()


def client_for(host: str) -> RegistryClient:
    """The process's shared client for `host` (made on first use; safe from any thread)."""
    with _clients_lock:
        client = _clients.get(host)
        if client is None:
            client = _clients[host] = RegistryClient(host)
        return client


def close_clients() -> None:
    """Close and forget every shared client (tests; a long-lived process that changed its config)."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.close()
