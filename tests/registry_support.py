"""Real registries for tests: distribution's `docker-registry` on loopback, a token server it trusts, and a
fault-injecting proxy to put in front of it. Plain functions and classes (not fixtures), so any test module
can use them with its own `tmp_path`.

- `start_registry(tmp_path, *, htpasswd=None, token=None) -> RunningRegistry`: runs
  `/usr/bin/docker-registry serve CONFIG` on 127.0.0.1 with a free port and its own storage (deletes
  enabled), waits until `/v2/` answers; `.host` is "127.0.0.1:PORT"; `.stop()` or use it as a context
  manager. `htpasswd=(user, password)` turns on Basic auth (bcrypt htpasswd file); `token=TokenServer(...)`
  turns on token auth trusting that server. Skips (fails in CI) when docker-registry is missing.
- `TokenServer(tmp_path, *, users=None, anonymous=("pull",), deny=())`: an HTTP token endpoint in a thread.
  It issues ES256 JWTs signed by a fresh self-signed certificate (in the `x5c` header; the registry's
  `rootcertbundle` is that certificate). Users named in `users` get every action they ask for, anonymous
  callers only the `anonymous` actions, and no one the scopes in `deny` (`"repository:foo:push"`).
  Wrong credentials get 401. `.requests` records (account, scopes) of each token request.
- `FaultProxy(upstream_host)`: a loopback HTTP proxy in a thread. `fail(path_re, status=500, count=1,
  retry_after=None)` answers the next `count` matching requests itself; `reply(path_re, status, body,
  headers)` too, with that body; `drop(path_re, count=1, after=None)` forwards them but closes the
  connection after `after` body bytes (half by default); `corrupt(path_re, count=1)` flips one byte of the
  body. A hostile registry: `drip(path_re, every=1.0, size=1, head=False)` forwards the request, then
  sends the answer's body (with `head`, its status line and headers too) `size` bytes every `every`
  seconds; `stall(path_re, answer=True)` sends the answer's headers and then nothing, or with
  `answer=False` never answers (what the client sends is read and dropped). A dripping or stalled
  answer ends when the client hangs up or the proxy stops. `.requests` records every request (method,
  path, headers). `.host` is "127.0.0.1:PORT".
- `tiny_rootfs_tar(path)`: writes a rootfs tar of two small files (one of 64 KiB random bytes) for images
  to push and pull.
- `SilentServer()`: a loopback port that takes connections and never answers (a listening socket nobody
  accepts on); `.host`, `.stop()`.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import io
import json
import os
import re
import secrets
import select
import socket
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from tests.bases import need

REGISTRY_BIN = "/usr/bin/docker-registry"
SERVICE = "pybuild-test-registry"
ISSUER = "pybuild-test-issuer"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tiny_rootfs_tar(path: Path) -> Path:
    """A rootfs tar of two small files at `path` (enough for pushes and pulls; nothing runs in it)."""
    with tarfile.open(path, "w") as tar:
        for name, data in (("etc/hello", b"hello\n"), ("data/blob", os.urandom(64 << 10))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Served:
    """A ThreadingHTTPServer on 127.0.0.1 running in a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = _QuietServer(("127.0.0.1", 0), handler)
        self.server.owner = self  # type: ignore[attr-defined]
        self.port: int = self.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# --- token server ---------------------------------------------------------------------------------------


class _TokenHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="token"')
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        owner: TokenServer = self.server.owner  # type: ignore[attr-defined]
        query = parse_qsl(urlsplit(self.path).query)
        scopes = [value for key, value in query if key == "scope"]
        user: str | None = None
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if owner.users.get(name) != password:
                owner.record(name, scopes, ok=False)
                self._answer(401, {"details": "incorrect username or password"})
                return
            user = name
        owner.record(user, scopes, ok=True)
        self._answer(200, owner.issue(user, scopes))

    def do_POST(self) -> None:
        owner: TokenServer = self.server.owner  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(parse_qsl(self.rfile.read(length).decode()))
        scopes = [s for s in form.get("scope", "").split(" ") if s]
        user = owner.refresh_tokens.get(form.get("refresh_token", ""))
        if form.get("grant_type") == "password" and owner.users.get(form.get("username", "")) == form.get("password"):
            user = form["username"]
        if user is None:
            owner.record(None, scopes, ok=False)
            self._answer(401, {"details": "invalid grant"})
            return
        owner.record(user, scopes, ok=True)
        self._answer(200, owner.issue(user, scopes))


class TokenServer(_Served):
    """A token endpoint a test registry trusts (see the module docstring)."""

    def __init__(self, tmp_path: Path, *, users: dict[str, str] | None = None,
                 anonymous: Iterable[str] = ("pull",), deny: Iterable[str] = (), expires_in: int = 300) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.users = dict(users or {})
        self.anonymous = set(anonymous)
        self.deny = set(deny)
        self.expires_in = expires_in
        self.refresh_tokens: dict[str, str] = {}
        self.requests: list[tuple[str | None, tuple[str, ...]]] = []
        self.refused: list[tuple[str | None, tuple[str, ...]]] = []
        self._lock = threading.Lock()
        self.service, self.issuer = SERVICE, ISSUER
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pybuild test token signer")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=7))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(self._key, hashes.SHA256()))
        self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.cert_path = tmp_path / f"token-{secrets.token_hex(4)}.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        super().__init__(_TokenHandler)
        self.realm = f"http://{self.host}/token"

    def record(self, user: str | None, scopes: list[str], *, ok: bool) -> None:
        with self._lock:
            (self.requests if ok else self.refused).append((user, tuple(scopes)))

    def grant(self, user: str | None, scope: str) -> dict[str, Any] | None:
        parts = scope.split(":")
        if len(parts) < 3:
            return None
        kind, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
        allowed = [a for a in actions if (user is not None or a in self.anonymous)
                   and f"{kind}:{name}:{a}" not in self.deny]
        return {"type": kind, "name": name, "actions": allowed}

    def issue(self, user: str | None, scopes: list[str]) -> dict[str, Any]:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        now = int(time.time())
        access = [entry for entry in (self.grant(user, s) for s in scopes) if entry is not None]
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service, "exp": now + self.expires_in,
                  "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access}
        header = {"typ": "JWT", "alg": "ES256", "x5c": [self._x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        der = self._key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        token = f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
        return {"token": token, "access_token": token, "expires_in": self.expires_in,
                "issued_at": datetime.datetime.now(datetime.timezone.utc).isoformat()}

    def token_requests(self) -> list[tuple[str | None, tuple[str, ...]]]:
        with self._lock:
            return list(self.requests)


# --- registry ---------------------------------------------------------------------------------------------


class RunningRegistry:
    """A docker-registry process made by `start_registry`."""

    def __init__(self, process: subprocess.Popen[bytes], host: str, root: Path, log: Path) -> None:
        self.process = process
        self.host = host
        self.root = root
        self.log = log
        self.url = f"http://{host}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def __enter__(self) -> RunningRegistry:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _config(root: Path, port: int, htpasswd: Path | None, token: TokenServer | None) -> str:
    lines = [
        "version: 0.1",
        "log:", "  level: error", "  accesslog:", "    disabled: true",
        "storage:", "  filesystem:", f"    rootdirectory: {root}", "  delete:", "    enabled: true",
        "  maintenance:", "    uploadpurging:", "      enabled: false",
        "http:", f"  addr: 127.0.0.1:{port}", f"  secret: {secrets.token_hex(16)}",
    ]
    if htpasswd is not None:
        lines += ["auth:", "  htpasswd:", "    realm: pybuild-test", f"    path: {htpasswd}"]
    if token is not None:
        lines += ["auth:", "  token:", f"    realm: {token.realm}", f"    service: {token.service}",
                  f"    issuer: {token.issuer}", f"    rootcertbundle: {token.cert_path}"]
    return "\n".join(lines) + "\n"


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # 401: up, with auth
        except OSError:
            time.sleep(0.05)
    return False


def start_registry(tmp_path: Path, *, htpasswd: tuple[str, str] | None = None,
                   token: TokenServer | None = None) -> RunningRegistry:
    """Start docker-registry on a free loopback port (see the module docstring)."""
    need(os.path.exists(REGISTRY_BIN), f"{REGISTRY_BIN} is missing (apt-get install docker-registry)")
    work = tmp_path / f"registry-{secrets.token_hex(4)}"
    root = work / "storage"
    root.mkdir(parents=True)
    password_file: Path | None = None
    if htpasswd is not None:
        import bcrypt

        user, password = htpasswd
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
        password_file = work / "htpasswd"
        password_file.write_text(f"{user}:{hashed}\n")
    last_log = ""
    for _ in range(3):
        port = free_port()
        config = work / "config.yml"
        config.write_text(_config(root, port, password_file, token))
        log = work / "registry.log"
        with open(log, "wb") as out:
            process = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
        running = RunningRegistry(process, f"127.0.0.1:{port}", root, log)
        if _wait_ready(process, f"http://127.0.0.1:{port}/v2/", log, time.monotonic() + 20):
            return running
        running.stop()
        last_log = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"docker-registry did not start:\n{last_log}")


# --- fault proxy ------------------------------------------------------------------------------------------

_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"})


class _Fault:
    def __init__(self, kind: str, pattern: str, count: int, method: str | None, **options: Any) -> None:
        self.kind = kind
        self.pattern = re.compile(pattern)
        self.count = count
        self.method = method
        self.options = options


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        owner: FaultProxy = self.server.owner  # type: ignore[attr-defined]
        owner.seen(self.command, self.path, dict(self.headers.items()))
        fault = owner.take(self.command, self.path)
        if fault is not None and fault.kind == "stall" and not fault.options["answer"]:
            self._hold(owner)
            return
        body = self._body()
        if fault is not None and fault.kind == "fail":
            self._reply(fault.options["status"], fault.options["headers"], fault.options["body"])
            return
        upstream = http.client.HTTPConnection(owner.upstream, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            if body or self.command in ("POST", "PUT", "PATCH"):
                headers["Content-Length"] = str(len(body))
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
            out_headers = [(k, v) for k, v in answer.getheaders() if k.lower() not in _HOP]
            status = answer.status
        finally:
            upstream.close()
        if self.command != "HEAD":
            out_headers = [(k, v) for k, v in out_headers if k.lower() != "content-length"]
            out_headers.append(("Content-Length", str(len(data))))
        if fault is not None and fault.kind == "corrupt" and data:
            at = len(data) // 2
            data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]
        if fault is not None and fault.kind in ("drip", "stall"):
            self._slow(owner, fault, status, out_headers, data)
            return
        if fault is not None and fault.kind == "drop":
            after = fault.options["after"]
            self.send_response_only(status)
            for key, value in out_headers:
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data[: len(data) // 2 if after is None else after])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._reply(status, out_headers, data)

    def _hold(self, owner: FaultProxy) -> None:
        """Say nothing until the client hangs up or the proxy stops."""
        self.close_connection = True
        while not owner.stopping.is_set():
            readable, _, _ = select.select([self.connection], [], [], 0.05)
            if readable:
                try:
                    if not self.connection.recv(65536):
                        return
                except OSError:
                    return

    def _slow(self, owner: FaultProxy, fault: _Fault, status: int, headers: list[tuple[str, str]],
              data: bytes) -> None:
        """A drip (`size` bytes every `every` seconds, of the body or of the whole answer) or a stall."""
        self.close_connection = True
        head = f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}\r\n"
        head += "".join(f"{key}: {value}\r\n" for key, value in headers) + "\r\n"
        payload = head.encode("latin-1") + (b"" if self.command == "HEAD" else data)
        if fault.kind == "stall":
            self.wfile.write(head.encode("latin-1"))
            self._hold(owner)
            return
        start = 0
        if not fault.options["head"]:
            self.wfile.write(head.encode("latin-1"))
            start = len(head)
        size, every = fault.options["size"], fault.options["every"]
        for at in range(start, len(payload), size):
            if owner.stopping.wait(every):
                return
            try:
                self.wfile.write(payload[at:at + size])
            except OSError:
                return

    def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response_only(status)
        for key, value in headers:
            self.send_header(key, value)
        if not any(k.lower() == "content-length" for k, _ in headers):
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class FaultProxy(_Served):
    """A fault-injecting proxy in front of `upstream` ("127.0.0.1:PORT"; see the module docstring)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        super().__init__(_ProxyHandler)

    def stop(self) -> None:
        self.stopping.set()
        super().stop()

    def fail(self, path: str, *, status: int = 500, count: int = 1, retry_after: int | None = None,
             method: str | None = None) -> None:
        headers = [("Content-Type", "application/json")]
        if retry_after is not None:
            headers.append(("Retry-After", str(retry_after)))
        self._add(_Fault("fail", path, count, method, status=status, headers=headers, body=b""))

    def reply(self, path: str, *, status: int = 200, body: bytes = b"",
              headers: Iterable[tuple[str, str]] = (), count: int = 1, method: str | None = None) -> None:
        self._add(_Fault("fail", path, count, method, status=status, headers=list(headers), body=body))

    def drip(self, path: str, *, every: float = 1.0, size: int = 1, head: bool = False, count: int = 1,
             method: str | None = None) -> None:
        self._add(_Fault("drip", path, count, method, every=every, size=max(1, size), head=head))

    def stall(self, path: str, *, answer: bool = True, count: int = 1, method: str | None = None) -> None:
        self._add(_Fault("stall", path, count, method, answer=answer))

    def drop(self, path: str, *, count: int = 1, after: int | None = None, method: str | None = None) -> None:
        self._add(_Fault("drop", path, count, method, after=after))

    def corrupt(self, path: str, *, count: int = 1, method: str | None = None) -> None:
        self._add(_Fault("corrupt", path, count, method))

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def take(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.count > 0 and (fault.method in (None, method)) and fault.pattern.search(path):
                    fault.count -= 1
                    return fault
        return None

    def seen(self, method: str, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append((method, path, headers))

    def matching(self, method: str, pattern: str) -> list[tuple[str, str, dict[str, str]]]:
        """The requests seen with `method` whose path matches `pattern`."""
        with self._lock:
            return [r for r in self.requests if r[0] == method and re.search(pattern, r[1])]


class SilentServer:
    """A loopback port whose connections are taken (by the kernel's backlog) and never answered."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.host = f"127.0.0.1:{self._sock.getsockname()[1]}"

    def stop(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
