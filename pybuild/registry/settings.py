"""Which registries may be reached over plain HTTP.

Who uses it: `client.RegistryClient` (its `insecure=None` default asks `is_insecure`), the CLI (each
`--insecure-registry HOST` flag calls `add_insecure_registry`).

Docker's rule (daemon `insecure-registries`): HTTPS always comes first; a registry is *insecure*, and so
may be reached over plain HTTP (or over HTTPS without certificate checks), when

- its host is `localhost` or a loopback address (127.0.0.0/8, ::1), whatever the port;
- it is listed in `$XDG_CONFIG_HOME/pybuild/config.json` (default `~/.config/pybuild/config.json`) under
  `"insecure-registries": ["host[:port]", "10.0.0.0/8", ...]`;
- it was named with `--insecure-registry` in this process (`add_insecure_registry`).

An entry `host:port` matches that host and port only; an entry `host` matches the host on any port; a CIDR
entry matches a host written as an IP address in that network. Departure from docker: a host name is not
resolved to match CIDR entries (no DNS look-up just to decide on a scheme).
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading

from pybuild.errors import ConfigError

__all__ = ["add_insecure_registry", "config_path", "insecure_registries", "is_insecure",
           "reset_insecure_registries", "split_host"]

_lock = threading.Lock()
_flags: list[str] = []


def config_path() -> str:
    """pybuild's own configuration file (not docker's)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "pybuild", "config.json")


def _normalise(entry: str) -> str:
    text = entry.strip().lower()
    for prefix in ("http://", "https://"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return text.rstrip("/")


def add_insecure_registry(host: str) -> None:
    """Allow plain HTTP for `host` (a `--insecure-registry` flag) for the rest of this process."""
    entry = _normalise(host)
    if not entry:
        raise ConfigError("invalid --insecure-registry value: empty host")
    with _lock:
        if entry not in _flags:
            _flags.append(entry)


def reset_insecure_registries() -> None:
    """Forget every `add_insecure_registry` (for tests and for a CLI that runs several commands)."""
    with _lock:
        _flags.clear()


def _read_config() -> list[str]:
    path = config_path()
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"cannot read {path}: invalid JSON at line {exc.lineno}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"cannot read {path}: expected a JSON object")
    entries = data.get("insecure-registries", [])
    if not isinstance(entries, list) or not all(isinstance(item, str) for item in entries):
        raise ConfigError(f"cannot read {path}: insecure-registries must be a list of host names")
    return [_normalise(item) for item in entries if item.strip()]


def insecure_registries() -> tuple[str, ...]:
    """The configured entries (config file first, then `--insecure-registry` flags), normalised."""
    with _lock:
        flags = list(_flags)
    seen: dict[str, None] = dict.fromkeys([*_read_config(), *flags])
    return tuple(seen)


def split_host(host: str) -> tuple[str, int | None]:
    """`"h:5000"` → `("h", 5000)`, `"[::1]:5000"` → `("::1", 5000)`, `"h"` → `("h", None)`."""
    text = host.strip().lower()
    if text.startswith("["):
        addr, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return addr, int(port) if port.isdigit() else None
    if text.count(":") == 1:
        name, _, port = text.partition(":")
        return name, int(port) if port.isdigit() else None
    return text, None


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def _matches(entry: str, host: str, name: str, ip: _IP | None) -> bool:
    if "/" in entry:
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return False
        return ip is not None and ip.version == network.version and ip in network
    if entry == host:
        return True
    entry_name, entry_port = split_host(entry)
    return entry_port is None and entry_name == name


def is_insecure(host: str) -> bool:
    """True when `host` may be reached over plain HTTP (see the module docstring)."""
    normal = _normalise(host)
    name, _ = split_host(normal)
    ip = _ip(name)
    if name == "localhost" or (ip is not None and ip.is_loopback):
        return True
    return any(_matches(entry, normal, name, ip) for entry in insecure_registries())
