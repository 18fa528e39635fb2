"""Unit tests for pybuild.registry.dockerconfig: reading docker's config.json (auths, credHelpers,
credsStore through a fake `docker-credential-test` helper), and writing it as `docker login` does."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from pybuild.errors import ConfigError, RegistryError
from pybuild.registry import dockerconfig
from pybuild.registry.client import RegistryClient
from pybuild.registry.dockerconfig import Credentials, config_path, credentials_for, logout
from pybuild.registry.login import login

HELPER = """#!{python}
import json, os, sys
store = os.environ["FAKE_HELPER_STORE"]
data = json.load(open(store)) if os.path.exists(store) else {{}}
action = sys.argv[1]
with open(store + ".log", "a") as log:
    log.write(action + "\\n")
if action == "get":
    server = sys.stdin.read().strip()
    if server == "broken.example":
        print("the keychain is locked", file=sys.stderr)
        sys.exit(3)
    if server not in data:
        print("credentials not found in native keychain")
        sys.exit(1)
    json.dump({{"ServerURL": server, "Username": data[server][0], "Secret": data[server][1]}}, sys.stdout)
elif action == "store":
    entry = json.load(sys.stdin)
    data[entry["ServerURL"]] = [entry["Username"], entry["Secret"]]
    json.dump(data, open(store, "w"))
elif action == "erase":
    data.pop(sys.stdin.read().strip(), None)
    json.dump(data, open(store, "w"))
"""


@pytest.fixture
def docker_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "docker"
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))
    return directory


@pytest.fixture
def helper_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put a fake `docker-credential-test` on PATH; returns the JSON file it keeps credentials in."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker-credential-test"
    script.write_text(HELPER.format(python=sys.executable))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    store = tmp_path / "helper-store.json"
    monkeypatch.setenv("FAKE_HELPER_STORE", str(store))
    return store


@pytest.fixture
def no_registry_check(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`login` without a registry: record the hosts whose credentials it would check."""
    checked: list[str] = []
    monkeypatch.setattr(RegistryClient, "check_login", lambda self: checked.append(self.host))
    return checked


def write(docker_dir: Path, config: object) -> Path:
    docker_dir.mkdir(parents=True, exist_ok=True)
    path = docker_dir / "config.json"
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    return path


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_config_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert config_path() == str(tmp_path / ".docker" / "config.json")
    monkeypatch.setenv("DOCKER_CONFIG", "/somewhere")
    assert config_path() == "/somewhere/config.json"


def test_no_file_no_credentials(docker_dir: Path) -> None:
    assert credentials_for("example.com") is None


def test_auths_base64_and_fields(docker_dir: Path) -> None:
    write(docker_dir, {"auths": {
        "registry.example:5000": {"auth": b64("alice:pa:ss")},
        "https://other.example/v1/": {"username": "bob", "password": "pw"},
        "https://index.docker.io/v1/": {"auth": b64("hub:hubpw"), "identitytoken": "refresh"},
        "empty.example": {},
    }})
    assert credentials_for("registry.example:5000") == Credentials("alice", "pa:ss")
    assert credentials_for("other.example") == Credentials("bob", "pw")  # matched by host name
    assert credentials_for("registry.example") is None  # the port is part of the host
    for hub in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        assert credentials_for(hub) == Credentials("hub", "hubpw", identity_token="refresh")
    assert credentials_for("empty.example") is None


@pytest.mark.parametrize(("text", "message"), [
    ('{\n  "auths": {\n    "a": {"auth": "x"},,\n  }\n}', "invalid JSON at line 3"),
    ("[1]", "expected a JSON object"),
    ('{"auths": []}', "auths must be an object"),
    ('{"credsStore": 1}', "credsStore must be a string"),
    ('{"auths": {"example.com": {"auth": "!!!"}}}', "invalid auth for example.com"),
    ('{"auths": {"example.com": {"auth": "' + b64("nocolon") + '"}}}', "invalid auth for example.com"),
    ('{"auths": {"example.com": "x"}}', "must be an object"),
])
def test_malformed_config_names_the_file(docker_dir: Path, text: str, message: str) -> None:
    path = write(docker_dir, text)
    with pytest.raises(ConfigError) as info:
        credentials_for("example.com")
    assert str(info.value).startswith(f"cannot read {path}: ") and message in str(info.value)
    assert "\n" not in str(info.value)


def test_cred_helper_for_one_host(docker_dir: Path, helper_store: Path) -> None:
    helper_store.write_text(json.dumps({"reg.example": ["helper-user", "helper-pw"],
                                        "tok.example": ["<token>", "identity"]}))
    write(docker_dir, {"credHelpers": {"reg.example": "test", "tok.example": "test", "none.example": "test"},
                       "auths": {"plain.example": {"auth": b64("u:p")}, "none.example": {"auth": b64("f:b")}}})
    assert credentials_for("reg.example") == Credentials("helper-user", "helper-pw")
    assert credentials_for("tok.example") == Credentials("", "", identity_token="identity")
    assert credentials_for("plain.example") == Credentials("u", "p")  # no helper for it
    assert credentials_for("none.example") == Credentials("f", "b")  # helper has nothing: auths is the fallback


def test_creds_store_for_every_host(docker_dir: Path, helper_store: Path) -> None:
    helper_store.write_text(json.dumps({"https://index.docker.io/v1/": ["hubuser", "hubpw"]}))
    write(docker_dir, {"credsStore": "test", "auths": {"https://index.docker.io/v1/": {}}})
    assert credentials_for("docker.io") == Credentials("hubuser", "hubpw")
    assert credentials_for("elsewhere.example") is None


def test_helper_failures_are_config_errors(docker_dir: Path, helper_store: Path) -> None:
    write(docker_dir, {"credsStore": "test", "credHelpers": {"gone.example": "absent"}})
    with pytest.raises(ConfigError, match="docker-credential-test get failed: the keychain is locked"):
        credentials_for("broken.example")
    with pytest.raises(ConfigError, match="credential helper docker-credential-absent not found on PATH"):
        credentials_for("gone.example")


def test_login_writes_auths_like_docker(docker_dir: Path, no_registry_check: list[str]) -> None:
    path = write(docker_dir, {"auths": {"https://keep.example/v1/": {"auth": b64("k:v")}},
                              "psFormat": "table {{.ID}}"})
    path.chmod(0o644)
    login("reg.example:5000", "alice", "s3cret")
    login("docker.io", "hubuser", "hubpw")
    assert no_registry_check == ["reg.example:5000", "docker.io"]
    text = path.read_text()
    data = json.loads(text)
    assert data["psFormat"] == "table {{.ID}}"  # other keys kept
    assert data["auths"] == {"https://keep.example/v1/": {"auth": b64("k:v")},
                             "reg.example:5000": {"auth": b64("alice:s3cret")},
                             "https://index.docker.io/v1/": {"auth": b64("hubuser:hubpw")}}
    assert "\n\t\"auths\"" in text  # indented with tabs, as docker writes it
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in docker_dir.iterdir()] == ["config.json"]  # no temp file left
    assert credentials_for("reg.example:5000") == Credentials("alice", "s3cret")


def test_login_creates_the_file(docker_dir: Path, no_registry_check: list[str]) -> None:
    login("reg.example", "u", "p")
    path = docker_dir / "config.json"
    assert json.loads(path.read_text()) == {"auths": {"reg.example": {"auth": b64("u:p")}}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_login_follows_a_symlinked_config(docker_dir: Path, tmp_path: Path, no_registry_check: list[str]) -> None:
    real = tmp_path / "dotfiles" / "docker.json"
    real.parent.mkdir()
    real.write_text("{}")
    docker_dir.mkdir()
    (docker_dir / "config.json").symlink_to(real)
    login("reg.example", "u", "p")
    assert (docker_dir / "config.json").is_symlink()
    assert json.loads(real.read_text())["auths"]["reg.example"] == {"auth": b64("u:p")}


def test_login_through_a_helper(docker_dir: Path, helper_store: Path, no_registry_check: list[str]) -> None:
    path = write(docker_dir, {"credsStore": "test", "auths": {"reg.example": {"auth": b64("old:old")}}})
    login("reg.example", "alice", "s3cret")
    assert json.loads(helper_store.read_text()) == {"reg.example": ["alice", "s3cret"]}
    assert json.loads(path.read_text())["auths"] == {"reg.example": {}}  # docker leaves an empty entry
    assert "s3cret" not in path.read_text()
    assert credentials_for("reg.example") == Credentials("alice", "s3cret")


def test_login_refused_writes_nothing(docker_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: RegistryClient) -> None:
        raise RegistryError(f"login failed for {self.host}: HTTP 401: authentication required")

    monkeypatch.setattr(RegistryClient, "check_login", refuse)
    with pytest.raises(RegistryError, match="login failed"):
        login("reg.example", "u", "wrong")
    assert not (docker_dir / "config.json").exists()
    with pytest.raises(ConfigError, match="needs a user name and a password"):
        login("reg.example", "u", "")


def test_logout(docker_dir: Path, helper_store: Path) -> None:
    helper_store.write_text(json.dumps({"helped.example": ["h", "hp"]}))
    path = write(docker_dir, {"credHelpers": {"helped.example": "test"}, "auths": {
        "https://plain.example/v1/": {"auth": b64("u:p")}, "helped.example": {}, "other.example": {"auth": b64("o:p")}}})
    assert logout("plain.example") is True
    assert logout("helped.example") is True
    assert json.loads(helper_store.read_text()) == {}
    assert "erase" in Path(str(helper_store) + ".log").read_text()
    assert json.loads(path.read_text())["auths"] == {"other.example": {"auth": b64("o:p")}}
    assert logout("plain.example") is False
    assert logout("never.example") is False
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_logout_without_a_file(docker_dir: Path) -> None:
    assert logout("reg.example") is False
    assert not docker_dir.exists()


def test_server_key() -> None:
    assert dockerconfig.server_key("docker.io") == "https://index.docker.io/v1/"
    assert dockerconfig.server_key("registry-1.docker.io") == "https://index.docker.io/v1/"
    assert dockerconfig.server_key("ghcr.io") == "ghcr.io"
