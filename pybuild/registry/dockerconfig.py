"""Docker's credential file, `~/.docker/config.json` (or `$DOCKER_CONFIG/config.json`), read and written
the way the docker CLI does.

Who uses it: `client.RegistryClient` (`credentials_for`, when it meets an auth challenge and was given no
credentials), `login.login` (`store_login`, once the registry accepted them), the CLI (`pybuild logout`
calls `logout`).

Reading (docker/cli `configfile`): the store for a host is `credHelpers[host]` when set, else `credsStore`
when set, else the file itself. A helper is the program `docker-credential-NAME` on PATH, spoken to with
docker-credential-helpers' protocol (`get`/`store`/`erase`, the server on stdin, JSON on stdout). In the
file, `auths` maps a server to `{"auth": base64("user:password")}` (or `username`/`password` fields) and
optionally `identitytoken` (an OAuth refresh token). Keys match by host name, so `https://host/v1/` and
`host` are the same server. Docker Hub is keyed `https://index.docker.io/v1/`, whatever the spelling
(`docker.io`, `index.docker.io`, `registry-1.docker.io`).

Departure: when a helper has nothing for a host, credentials written into `auths` are still used (docker
ignores them once a helper is configured); it costs nothing and helps a config copied between machines.

Writing: `login.login` first checks the credentials against the registry (`RegistryClient.check_login`),
then `store_login` stores them with the host's helper (`store`, leaving an empty `auths` entry, as docker does), or in
`auths` as base64. The file is replaced atomically (temp file, fsync, rename) with mode 0600, indented
with tabs like docker's; unknown keys are kept. A credential is never printed: `Credentials`' repr hides
the password and the identity token, and error messages never include them.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
from typing import Any

from pybuild.atomic import write_atomic
from pybuild.errors import ConfigError, RegistryError
from pybuild.record import record

__all__ = ["DOCKER_HUB_KEY", "Credentials", "config_path", "credentials_for", "logout", "server_key",
           "store_login"]

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_TOKEN_USER = "<token>"  # docker-credential-helpers: the Secret is an identity token
_NOT_FOUND = "credentials not found in native keychain"
_HELPER_TIMEOUT = 60.0


@record
class Credentials:
    """A user name and password (or an identity token) for one registry. The repr hides the secrets."""

    username: str
    password: str
    identity_token: str = ""


def _redacted_repr(self: Credentials) -> str:
    password = "'***'" if self.password else "''"
    token = "'***'" if self.identity_token else "''"
    return f"Credentials(username={self.username!r}, password={password}, identity_token={token})"


# `record` installs its own __repr__ over one defined in the class body, so it is replaced afterwards.
setattr(Credentials, "__repr__", _redacted_repr)
setattr(Credentials, "__str__", _redacted_repr)


def config_path() -> str:
    """Docker's config file: `$DOCKER_CONFIG/config.json`, default `~/.docker/config.json`."""
    directory = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return os.path.join(directory, "config.json")


def _hostname(key: str) -> str:
    """docker/cli `ConvertToHostname`: drop the scheme and any path; Hub's names become one."""
    text = key.strip()
    for prefix in ("http://", "https://"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    name = text.split("/", 1)[0].lower()
    return "docker.io" if name in _HUB_NAMES else name


def server_key(host: str) -> str:
    """The key docker files `host` under: Hub's v1 URL for Docker Hub, else the host itself."""
    return DOCKER_HUB_KEY if _hostname(host) == "docker.io" else host.strip().rstrip("/")


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"cannot read {path}: invalid JSON at line {exc.lineno}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"cannot read {path}: expected a JSON object")
    for key in ("auths", "credHelpers"):
        if not isinstance(data.get(key, {}), dict):
            raise ConfigError(f"cannot read {path}: {key} must be an object")
    if not isinstance(data.get("credsStore", ""), str):
        raise ConfigError(f"cannot read {path}: credsStore must be a string")
    return data


def _helper_name(config: dict[str, Any], host: str) -> str:
    helpers: dict[str, Any] = config.get("credHelpers", {})
    wanted = _hostname(host)
    for key, name in helpers.items():
        if isinstance(name, str) and name and (key == host or _hostname(key) == wanted):
            return name
    store = config.get("credsStore", "")
    return store if isinstance(store, str) else ""


def _run_helper(name: str, action: str, stdin: str) -> subprocess.CompletedProcess[str] | None:
    """Run `docker-credential-NAME ACTION`; None when it says it has nothing for the server."""
    program = f"docker-credential-{name}"
    path = shutil.which(program)
    if path is None:
        raise ConfigError(f"credential helper {program} not found on PATH (named in {config_path()})")
    try:
        done = subprocess.run([path, action], input=stdin, capture_output=True, text=True,
                              timeout=_HELPER_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(f"credential helper {program} failed: {exc}") from exc
    if done.returncode != 0:
        message = (done.stdout.strip() or done.stderr.strip()).splitlines()
        if message and _NOT_FOUND in message[0].lower():
            return None
        reason = message[0] if message else f"exit status {done.returncode}"
        raise ConfigError(f"credential helper {program} {action} failed: {reason}")
    return done


def _helper_get(name: str, host: str) -> Credentials | None:
    done = _run_helper(name, "get", server_key(host))
    if done is None:
        return None
    try:
        data = json.loads(done.stdout)
        username, secret = data.get("Username", ""), data["Secret"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"credential helper docker-credential-{name} get: invalid answer") from exc
    if not isinstance(username, str) or not isinstance(secret, str):
        raise ConfigError(f"credential helper docker-credential-{name} get: invalid answer")
    if not secret:
        return None
    if username == _TOKEN_USER:
        return Credentials("", "", identity_token=secret)
    return Credentials(username, secret)


def _entry_credentials(path: str, key: str, entry: object) -> Credentials | None:
    if not isinstance(entry, dict):
        raise ConfigError(f"cannot read {path}: auths[{key!r}] must be an object")
    username, password = str(entry.get("username") or ""), str(entry.get("password") or "")
    auth = entry.get("auth") or ""
    if auth:
        try:
            decoded = base64.b64decode(str(auth), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(f"cannot read {path}: invalid auth for {key}") from exc
        username, sep, password = decoded.partition(":")
        if not sep:
            raise ConfigError(f"cannot read {path}: invalid auth for {key}")
    token = str(entry.get("identitytoken") or "")
    if not (username or password or token):
        return None
    return Credentials(username, password, identity_token=token)


def _find_entry(auths: dict[str, Any], host: str) -> str | None:
    """The key of `host`'s entry in `auths`: the exact key first, then one with the same host name."""
    key = server_key(host)
    if key in auths:
        return key
    wanted = _hostname(host)
    return next((k for k in auths if _hostname(k) == wanted), None)


def credentials_for(host: str) -> Credentials | None:
    """The stored credentials for `host` (`127.0.0.1:5000`, `docker.io`, ...), None when there are none."""
    path = config_path()
    config = _read(path)
    helper = _helper_name(config, host)
    if helper:
        found = _helper_get(helper, host)
        if found is not None:
            return found
    auths: dict[str, Any] = config.get("auths", {})
    key = _find_entry(auths, host)
    return None if key is None else _entry_credentials(path, key, auths[key])


def _write(path: str, config: dict[str, Any]) -> None:
    """Replace `path` atomically with `config` (mode 0600), following a symlinked config file."""
    target = os.path.realpath(path)
    text = json.dumps(config, indent="\t") + "\n"
    try:
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        write_atomic(target, text.encode("utf-8"), prefix=".config.json-")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc


def store_login(host: str, username: str, password: str) -> None:
    """Store `username`/`password` for `host` as `docker login` does (checked against the registry
    first by `registry.login.login`, the command's entry point). ConfigError when the config file or
    the credential helper fails."""
    path = config_path()
    config = _read(path)
    auths: dict[str, Any] = config.setdefault("auths", {})
    key = server_key(host)
    old = _find_entry(auths, host)
    if old is not None and old != key:
        del auths[old]
    helper = _helper_name(config, host)
    if helper:
        payload = json.dumps({"ServerURL": key, "Username": username, "Secret": password})
        if _run_helper(helper, "store", payload) is None:
            raise RegistryError(f"credential helper docker-credential-{helper} could not store the login")
        auths[key] = {}
    else:
        auths[key] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode("ascii")}
    _write(path, config)


def logout(host: str) -> bool:
    """Forget the credentials for `host` (helper `erase`, the `auths` entry); False when there were none."""
    path = config_path()
    config = _read(path)
    auths: dict[str, Any] = config.get("auths", {})
    removed = False
    helper = _helper_name(config, host)
    if helper and _helper_get(helper, host) is not None:
        _run_helper(helper, "erase", server_key(host))
        removed = True
    changed = False
    key = _find_entry(auths, host)
    while key is not None:
        removed = bool(auths.pop(key)) or removed
        changed = True
        key = _find_entry(auths, host)
    if changed:
        _write(path, config)
    return removed
