"""Unit tests for pybuild.registry.settings: which hosts may use plain HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.errors import ConfigError
from pybuild.registry import settings


@pytest.fixture(autouse=True)
def _config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    settings.reset_insecure_registries()
    yield tmp_path / "xdg"
    settings.reset_insecure_registries()


def write_config(home: Path, text: str) -> Path:
    path = home / "pybuild" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("host", ["localhost", "localhost:5000", "127.0.0.1", "127.0.0.1:5000", "127.8.9.10:443",
                                  "[::1]:5000", "LOCALHOST:80"])
def test_loopback_is_insecure(host: str) -> None:
    assert settings.is_insecure(host)


@pytest.mark.parametrize("host", ["docker.io", "ghcr.io", "10.0.0.1:5000", "128.0.0.1", "localhost.example.com",
                                  "registry.local:5000"])
def test_others_are_secure(host: str) -> None:
    assert not settings.is_insecure(host)


def test_config_file(_config_home: Path) -> None:
    write_config(_config_home, json.dumps({"insecure-registries": [
        "registry.local:5000", "plain.example", "http://schemed.example/", "10.1.0.0/16", "not/a/cidr"]}))
    assert settings.is_insecure("registry.local:5000")
    assert not settings.is_insecure("registry.local:5001")  # a port names that port only
    assert not settings.is_insecure("registry.local")
    assert settings.is_insecure("plain.example") and settings.is_insecure("plain.example:8080")
    assert settings.is_insecure("schemed.example")
    assert settings.is_insecure("10.1.2.3:5000") and not settings.is_insecure("10.2.0.1")
    assert settings.insecure_registries()[:2] == ("registry.local:5000", "plain.example")


def test_flags_add_to_the_config(_config_home: Path) -> None:
    write_config(_config_home, '{"insecure-registries": ["a.example"]}')
    settings.add_insecure_registry("B.example:5000")
    settings.add_insecure_registry("b.example:5000")
    assert settings.insecure_registries() == ("a.example", "b.example:5000")
    assert settings.is_insecure("b.example:5000")
    settings.reset_insecure_registries()
    assert not settings.is_insecure("b.example:5000")
    with pytest.raises(ConfigError, match="empty host"):
        settings.add_insecure_registry(" ")


def test_default_path_is_under_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert settings.config_path() == str(tmp_path / ".config" / "pybuild" / "config.json")
    assert settings.insecure_registries() == ()  # no file: nothing configured


@pytest.mark.parametrize(("text", "message"), [
    ('{\n  "insecure-registries": [\n  "a",\n]\n}', "invalid JSON at line 4"),
    ("[]", "expected a JSON object"),
    ('{"insecure-registries": "a"}', "insecure-registries must be a list"),
    ('{"insecure-registries": [1]}', "insecure-registries must be a list"),
])
def test_bad_config_names_the_file(_config_home: Path, text: str, message: str) -> None:
    path = write_config(_config_home, text)
    with pytest.raises(ConfigError) as info:
        settings.is_insecure("example.com")
    assert str(info.value).startswith(f"cannot read {path}: ") and message in str(info.value)


def test_split_host() -> None:
    assert settings.split_host("h:5000") == ("h", 5000)
    assert settings.split_host("[::1]:5000") == ("::1", 5000)
    assert settings.split_host("[::1]") == ("::1", None)
    assert settings.split_host("H") == ("h", None)
