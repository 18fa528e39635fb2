"""Wire-level helpers of the registry client: media types, retry budgets, error texts, TLS settings, and
the watched network streams that hold every socket wait to the bounds of `bounds.py`.

Who uses it: `client.RegistryClient` only (split from it to keep each module readable).
"""

from __future__ import annotations

import glob
import json
import os
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from email.utils import parsedate_to_datetime
from typing import Any, Final, Protocol

import httpcore
import httpx

from pybuild.errors import RegistryError
from pybuild.registry import bounds
from pybuild.image.spec import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST

__all__ = ["ACCEPT_MANIFESTS", "LINK_RE", "MANIFEST_TYPES", "READ_CHUNK", "UPLOAD_CHUNK", "Budget", "Denied",
           "Retriable", "WatchedBackend", "Writable", "error_detail", "is_dns_failure", "manifest_media_type",
           "read_capped", "unverified_context", "reason", "retry_after_seconds", "ssl_context", "watch_client"]

ACCEPT_MANIFESTS: Final = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST))
MANIFEST_TYPES: Final = frozenset((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST))
READ_CHUNK: Final = 1 << 20
# Blobs up to this size go up as one streamed PUT, larger ones as PATCH chunks of this size. Each chunk is
# a round trip the registry finishes (writes, hashes) before the next starts: 16 MiB chunks made a 93 MB
# layer's push 1.5x slower than one PUT on a loopback docker-registry.
UPLOAD_CHUNK: Final = 128 << 20
MAX_BACKOFF: Final = 10.0
MAX_ERROR_BODY: Final = 64 << 10  # the part of an error answer read for its message
WRITE_PIECE: Final = 64 << 10  # writes are metered (and may time out) this many bytes at a time
CERTS_DIR: Final = "/etc/docker/certs.d"
LINK_RE: Final = re.compile(r'<([^>]*)>\s*;[^,]*rel="?next"?')


class Writable(Protocol):
    """Where `get_blob` writes: anything with `write(bytes)` (a file, a BlobWriter, a hashing sink)."""

    def write(self, data: bytes, /) -> object: ...


class Retriable(RegistryError):
    """A failure that a new attempt may cure (raised where the request cannot simply be sent again)."""

    def __init__(self, message: str, retry_after: float | None = None, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class Denied(RegistryError):
    """The registry or its token server refused the credentials or the scopes."""

    def __init__(self, message: str, detail: str, hint: str | None) -> None:
        super().__init__(message, hint=hint)
        self.detail = detail


class Budget:
    """The retries left for one operation and the time already spent waiting (see `RegistryClient`); with
    a `meter`, no wait goes past its deadline."""

    def __init__(self, retries: int, backoff: float, max_wait: float, sleep: Callable[[float], None],
                 meter: bounds.Meter | None = None) -> None:
        self.retries, self.backoff, self.max_wait, self.sleep = retries, backoff, max_wait, sleep
        self.meter = meter
        self.attempt = 0
        self.waited = 0.0

    def wait(self, retry_after: float | None, error: RegistryError) -> None:
        """Sleep before the next attempt, or raise `error` when no attempt or time is left."""
        backoff = min(self.backoff * 2 ** self.attempt, MAX_BACKOFF)
        delay = backoff if retry_after is None else retry_after
        if self.attempt >= self.retries or self.waited + delay > self.max_wait:
            raise error
        if self.meter is not None and delay >= self.meter.left():
            raise error
        self.attempt += 1
        self.waited += delay
        if delay > 0:
            self.sleep(delay)


def reason(exc: BaseException) -> str:
    """A one-line reason for a transport error (the innermost OS error when there is one)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__.lower()


def is_dns_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            break
        if isinstance(seen, socket.gaierror):
            return True
        seen = seen.__cause__ or seen.__context__
    return "name or service not known" in str(exc).lower() or "nodename nor servname" in str(exc).lower()


def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_detail(response: httpx.Response, body: bytes | None = None) -> str:
    """What the registry said about a failed request: its error message, else the HTTP status."""
    status = f"HTTP {response.status_code}"
    if body is None:
        body = b""
        if response.request.method != "HEAD":
            try:
                body = read_capped(response, MAX_ERROR_BODY, truncate=True)
            except (httpx.HTTPError, httpx.StreamError):
                pass
    try:
        errors = json.loads(body[:65536]).get("errors") or []
        first = errors[0]
        message = str(first.get("message") or first.get("code") or "").strip()
        detail = first.get("detail")
    except (ValueError, AttributeError, IndexError, KeyError, TypeError):
        return f"{status} {response.reason_phrase.lower()}".strip()
    if isinstance(detail, str) and detail and detail != message:
        message += f": {detail}"
    one_line = " ".join(message.split())
    return f"{status}: {one_line}" if one_line else status


def read_capped(response: httpx.Response, limit: int, *, truncate: bool = False) -> bytes:
    """`response`'s (decoded) body, at most `limit` bytes: the first `limit` with `truncate`, else an
    `OverflowError` past it. httpx errors pass through."""
    parts: list[bytes] = []
    total = 0
    for part in response.iter_bytes(min(READ_CHUNK, max(1, limit))):
        if total + len(part) > limit:
            if not truncate:
                raise OverflowError(limit)
            parts.append(part[: limit - total])
            break
        total += len(part)
        parts.append(part)
    return b"".join(parts)


def manifest_media_type(response: httpx.Response, data: bytes) -> str:
    media_type: str = response.headers.get("Content-Type", "").split(";")[0].strip()
    if media_type in MANIFEST_TYPES:
        return media_type
    try:
        doc = json.loads(data)
    except ValueError:
        return media_type
    declared = doc.get("mediaType") if isinstance(doc, dict) else None
    if isinstance(declared, str) and declared:
        return declared
    if isinstance(doc, dict) and "manifests" in doc:
        return OCI_INDEX
    return media_type or OCI_MANIFEST


def ssl_context(host: str) -> ssl.SSLContext:
    """System CAs (certifi when the system has none), plus docker's per-registry CAs and client certs."""
    context = ssl.create_default_context()
    paths = ssl.get_default_verify_paths()
    if not (paths.cafile or (paths.capath and os.listdir(paths.capath))):
        import certifi

        context.load_verify_locations(certifi.where())
    directory = os.path.join(CERTS_DIR, host)
    try:
        for ca in sorted(glob.glob(os.path.join(directory, "*.crt"))):
            context.load_verify_locations(ca)
        for cert in sorted(glob.glob(os.path.join(directory, "*.cert"))):
            key = cert[: -len(".cert")] + ".key"
            if os.path.exists(key):
                context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise RegistryError(f"cannot load certificates from {directory}: {reason(exc)}") from exc
    return context


def unverified_context() -> ssl.SSLContext:
    """TLS without certificate checks, for an insecure registry (docker's rule). Built directly: httpx's
    own `verify=False` context costs ~18 ms of start-up, a third of a no-op push's client set-up."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# --- watched network streams -------------------------------------------------------------------------


def _wait(meter: bounds.Meter, timeout: float | None, timed_out: type[Exception]) -> float:
    """How long a socket may wait now: `timeout` cut to what `meter` allows; raises `timed_out` (after
    tripping the meter) when nothing is left."""
    left = meter.remaining()
    if left <= 0:
        meter.trip()
        raise timed_out(f"{meter.subject}: {meter.limits.describe()}")
    return left if timeout is None else min(timeout, left)


class WatchedStream(httpcore.NetworkStream):
    """A network stream that counts its bytes for the calling thread's meter and never waits longer than
    the meter allows (`bounds.py`); without a current meter it is its inner stream."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        meter = bounds.current()
        if meter is None:
            return self._inner.read(max_bytes, timeout)
        try:
            data = self._inner.read(max_bytes, _wait(meter, timeout, httpcore.ReadTimeout))
        except httpcore.ReadTimeout:
            meter.trip()
            raise
        meter.moved(len(data))
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        meter = bounds.current()
        if meter is None:
            self._inner.write(buffer, timeout)
            return
        for start in range(0, len(buffer), WRITE_PIECE):
            piece = buffer[start:start + WRITE_PIECE]
            try:
                self._inner.write(piece, _wait(meter, timeout, httpcore.WriteTimeout))
            except httpcore.WriteTimeout:
                meter.trip()
                raise
            meter.moved(len(piece))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        # (Python's TLS handshake takes its socket timeout as a deadline for the whole handshake, so a
        # server dripping it is cut off too)
        meter = bounds.current()
        if meter is None:
            return WatchedStream(self._inner.start_tls(ssl_context, server_hostname, timeout))
        try:
            stream = self._inner.start_tls(ssl_context, server_hostname,
                                           _wait(meter, timeout, httpcore.ConnectTimeout))
        except httpcore.ConnectTimeout:
            meter.trip()
            raise
        return WatchedStream(stream)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class WatchedBackend(httpcore.NetworkBackend):
    """httpcore's network backend with every stream it opens a `WatchedStream`."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        meter = bounds.current()
        wait = timeout if meter is None else _wait(meter, timeout, httpcore.ConnectTimeout)
        return WatchedStream(self._inner.connect_tcp(host, port, wait, local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return WatchedStream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def watch_client(client: httpx.Client) -> int:
    """Put a `WatchedBackend` under every connection pool of `client` (its own transport's and any proxy
    mount's) before it opens a connection; the number of pools watched. httpx has no public hook for a
    network backend, so this reaches for `HTTPTransport._pool` and httpcore's `_network_backend`; a test
    checks it still works (a pool not found is left as it is: its reads still time out)."""
    watched = 0
    transports = [getattr(client, "_transport", None), *getattr(client, "_mounts", {}).values()]
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if isinstance(backend, httpcore.NetworkBackend) and not isinstance(backend, WatchedBackend):
            pool._network_backend = WatchedBackend(backend)  # type: ignore[union-attr]
            watched += 1
    return watched
