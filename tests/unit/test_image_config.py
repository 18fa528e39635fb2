"""Image configs (JSON names as docker writes them, round trips that keep unknown fields, strict
validation naming the field), RFC 3339 times and SOURCE_DATE_EPOCH; split from test_image_spec."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pybuild.errors import ConfigError, InternalError, StoreError
from pybuild.image.config import (
    NO_BASE_HISTORY,
    ContainerConfig,
    Healthcheck,
    History,
    ImageConfig,
    RootFS,
    align_history,
)
from pybuild.image.spec import (
    Platform,
    format_rfc3339,
    source_date_epoch,
)
from pybuild.record import replace
from tests.unit.test_image_spec import A, B, with_path

# -------------------------------------------------------------------------------------------- image config


def _config() -> ImageConfig:
    return ImageConfig(
        architecture="arm", os="linux", variant="v7", created=format_rfc3339(1704164645), author="me",
        config=ContainerConfig(
            user="1000:1000", exposed_ports=("443/tcp", "80/tcp", "80/tcp"), env=("PATH=/usr/bin", "A=b c"),
            entrypoint=("/bin/app",), cmd=("--serve",), volumes=("/data",), working_dir="/srv",
            labels=(("z", "last"), ("a", "first")), stop_signal="SIGTERM", shell=("/bin/sh", "-c"),
            on_build=("RUN true",), healthcheck=Healthcheck(test=("CMD-SHELL", "curl -f localhost"),
                                                           interval=30_000_000_000, timeout=5_000_000_000,
                                                           start_period=1, start_interval=2, retries=3),
        ),
        rootfs=RootFS(diff_ids=(A, B)),
        history=(History(created="2024-01-02T03:04:05Z", created_by="ADD rootfs.tar /", comment="buildkit"),
                 History(created_by='ENV A="b c"', empty_layer=True),
                 History(created_by="RUN make", author="me")),
    )


def test_image_config_json_names() -> None:
    doc = json.loads(_config().to_bytes())
    assert doc == {
        "architecture": "arm", "os": "linux", "variant": "v7", "created": "2024-01-02T03:04:05Z", "author": "me",
        "config": {
            "User": "1000:1000", "ExposedPorts": {"443/tcp": {}, "80/tcp": {}},
            "Env": ["PATH=/usr/bin", "A=b c"], "Entrypoint": ["/bin/app"], "Cmd": ["--serve"],
            "Volumes": {"/data": {}}, "WorkingDir": "/srv", "Labels": {"a": "first", "z": "last"},
            "StopSignal": "SIGTERM", "Shell": ["/bin/sh", "-c"], "OnBuild": ["RUN true"],
            "Healthcheck": {"Test": ["CMD-SHELL", "curl -f localhost"], "Interval": 30000000000,
                            "Timeout": 5000000000, "StartPeriod": 1, "StartInterval": 2, "Retries": 3},
        },
        "rootfs": {"type": "layers", "diff_ids": [A, B]},
        "history": [
            {"created": "2024-01-02T03:04:05Z", "created_by": "ADD rootfs.tar /", "comment": "buildkit"},
            {"created_by": 'ENV A="b c"', "empty_layer": True},
            {"created_by": "RUN make", "author": "me"},
        ],
    }


def test_image_config_round_trip_and_sets() -> None:
    config = _config()
    assert config.config.exposed_ports == ("443/tcp", "80/tcp")
    assert config.config.labels_dict == {"a": "first", "z": "last"}
    assert config.platform == Platform("linux", "arm", "v7")
    data = config.to_bytes()
    assert ImageConfig.from_bytes(data) == config
    assert ImageConfig.from_bytes(data).to_bytes() == data
    assert hash(ImageConfig.from_bytes(data)) == hash(config)


def test_minimal_image_config_omits_empty_fields() -> None:
    config = ImageConfig(architecture="amd64", os="linux")
    assert json.loads(config.to_bytes()) == {"architecture": "amd64", "os": "linux", "config": {},
                                             "rootfs": {"type": "layers", "diff_ids": []}}
    assert ContainerConfig(args_escaped=True).to_dict() == {"ArgsEscaped": True}
    assert ContainerConfig(healthcheck=Healthcheck(test=("NONE",))).to_dict() == {"Healthcheck": {"Test": ["NONE"]}}
    assert History().to_dict() == {}


DOCKER_CONFIG_JSON = b"""{"architecture":"amd64","config":{"Hostname":"","Domainname":"","User":"",
"AttachStdin":false,"Tty":false,"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
"Cmd":["sh"],"Image":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","Volumes":null,
"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":null},"container":"abc","container_config":{"Cmd":
["/bin/sh","-c","#(nop) CMD [\\"sh\\"]"]},"created":"2023-05-19T20:19:22.751398522Z","docker_version":"20.10.23",
"history":[{"created":"2023-05-19T20:19:22.642507633Z","created_by":"/bin/sh -c #(nop) ADD file:abc in / "},
{"created":"2023-05-19T20:19:22.751398522Z","created_by":"/bin/sh -c #(nop)  CMD [\\"sh\\"]","empty_layer":true}],
"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"]}}"""


def test_docker_written_config() -> None:
    config = ImageConfig.from_bytes(DOCKER_CONFIG_JSON)
    assert config.config.env == ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    assert config.config.cmd == ("sh",) and config.config.entrypoint == ()
    assert config.history[1].empty_layer and config.rootfs.diff_ids == (B,)
    assert {k for k, _ in config.extra} == {"container", "container_config", "docker_version"}
    assert {k for k, _ in config.config.extra} >= {"Hostname", "Image", "Tty"}
    again = json.loads(config.to_bytes())
    assert again["docker_version"] == "20.10.23"
    assert again["config"]["Image"] == A
    assert "Volumes" not in again["config"]  # null: left out, as docker's omitempty would
    assert ImageConfig.from_bytes(config.to_bytes()) == config


def test_strslice_accepts_a_single_string() -> None:
    doc = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
           "config": {"Cmd": "sh", "Entrypoint": "/init"}}
    config = ImageConfig.from_dict(doc).config
    assert (config.cmd, config.entrypoint) == (("sh",), ("/init",))


_CONFIG_OK: dict[str, Any] = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [A]},
                              "config": {}, "history": [{}]}


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("architecture", ..., "field 'architecture' is required"),
        ("os", 3, "field 'os' must be a string, got number"),
        ("created", 0, "field 'created' must be a string, got number"),
        ("os.features", "x", "field 'os.features' must be an array of strings"),
        ("rootfs", ..., "field 'rootfs' is required"),
        ("rootfs", [], "field 'rootfs' must be an object, got array"),
        ("rootfs.type", "tar", "field 'rootfs.type' must be 'layers', got 'tar'"),
        ("rootfs.type", ..., "field 'rootfs.type' is required"),
        ("rootfs.diff_ids", [A, "sha256:x"], r"field 'rootfs.diff_ids\[1\]' is not a valid digest"),
        ("config", "x", "field 'config' must be an object, got string"),
        ("config.Env", ["A=1", 2], r"field 'config.Env\[1\]' must be a string, got number"),
        ("config.Cmd", {"a": 1}, "field 'config.Cmd' must be an array of strings, got object"),
        ("config.User", 0, "field 'config.User' must be a string"),
        ("config.ExposedPorts", ["80/tcp"], "field 'config.ExposedPorts' must be an object, got array"),
        ("config.Labels", {"a": True}, "field 'config.Labels.a' must be a string, got boolean"),
        ("config.ArgsEscaped", "yes", "field 'config.ArgsEscaped' must be a boolean, got string"),
        ("config.Healthcheck", [], "field 'config.Healthcheck' must be an object"),
        ("config.Healthcheck", {"Interval": "30s"}, "field 'config.Healthcheck.Interval' must be an integer"),
        ("config.Healthcheck", {"Retries": -1}, "field 'config.Healthcheck.Retries' must be an integer >= 0"),
        ("history", {}, "field 'history' must be an array, got object"),
        ("history", [{}, 1], r"field 'history\[1\]' must be an object, got number"),
        ("history", [{"empty_layer": "true"}], r"field 'history\[0\].empty_layer' must be a boolean"),
        ("history", [{"created_by": ["RUN"]}], r"field 'history\[0\].created_by' must be a string, got array"),
    ],
)
def test_image_config_validation(path: str, value: object, message: str) -> None:
    with pytest.raises(StoreError, match=f"^invalid image config: {message}"):
        ImageConfig.from_dict(with_path(_CONFIG_OK, path, value))


def test_image_config_accepts_nulls() -> None:
    doc = {**_CONFIG_OK, "created": None, "config": None, "history": None}
    assert ImageConfig.from_dict(doc) == ImageConfig(architecture="amd64", os="linux",
                                                     rootfs=RootFS(diff_ids=(A,)))


def test_records_are_frozen() -> None:
    config = _config()
    with pytest.raises(AttributeError):
        config.os = "windows"  # type: ignore[misc]
    assert replace(config, os="windows").os == "windows"


# -------------------------------------------------------------------------------------- reproducibility


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "1970-01-01T00:00:00Z"), (1704164645, "2024-01-02T03:04:05Z"), (951782400, "2000-02-29T00:00:00Z"),
     (4102444799, "2099-12-31T23:59:59Z")],
)
def test_format_rfc3339(seconds: int, text: str) -> None:
    assert format_rfc3339(seconds) == text


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("", None), ("0", 0), ("1704164645", 1704164645)])
def test_source_date_epoch(monkeypatch: pytest.MonkeyPatch, value: str | None, expected: int | None) -> None:
    if value is None:
        monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    else:
        monkeypatch.setenv("SOURCE_DATE_EPOCH", value)
    assert source_date_epoch() == expected
    assert source_date_epoch({} if value is None else {"SOURCE_DATE_EPOCH": value}) == expected


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", " 12", "1e9", "١٢"])
def test_source_date_epoch_errors(value: str) -> None:
    with pytest.raises(ConfigError, match="invalid SOURCE_DATE_EPOCH"):
        source_date_epoch({"SOURCE_DATE_EPOCH": value})


@given(st.integers(min_value=0, max_value=253402300799))
def test_format_rfc3339_shape(seconds: int) -> None:
    text = format_rfc3339(seconds)
    assert len(text) == 20 and text[10] == "T" and text.endswith("Z")


# -------------------------------------------------------------------------------------------- history


def _layered(history: tuple[History, ...]) -> list[str]:
    return [h.created_by or h.comment for h in history if not h.empty_layer]


RUN, COPY, ENV = History(created_by="RUN x"), History(created_by="COPY a /"), History(created_by="ENV A=1",
                                                                                         empty_layer=True)


def test_align_history_keeps_matching_history() -> None:
    history = (History(created_by="ADD base"), ENV, RUN)
    assert align_history(history, 2, 1) == history
    assert align_history((), 0, 0) == ()


def test_align_history_pads_a_base_without_history() -> None:
    aligned = align_history((ENV, RUN, COPY), 5, 3)
    assert aligned == (History(comment=NO_BASE_HISTORY),) * 3 + (ENV, RUN, COPY)
    assert _layered(aligned) == [NO_BASE_HISTORY] * 3 + ["RUN x", "COPY a /"]
    assert align_history((), 3, 3) == (History(comment=NO_BASE_HISTORY),) * 3  # FROM it and nothing else


def test_align_history_pads_after_the_last_base_layer_entry() -> None:
    base = (History(created_by="ADD one"), History(created_by="CMD sh", empty_layer=True))
    aligned = align_history((*base, ENV, RUN), 4, 3)  # the case: history names 1 of 3 base layers
    assert aligned == (base[0], *(History(comment=NO_BASE_HISTORY),) * 2, base[1], ENV, RUN)
    assert _layered(aligned) == ["ADD one", NO_BASE_HISTORY, NO_BASE_HISTORY, "RUN x"]


def test_align_history_marks_surplus_base_entries_empty() -> None:
    base = tuple(History(created_by=f"ADD {i}") for i in range(4))
    aligned = align_history((*base, RUN), 3, 2)
    assert _layered(aligned) == ["ADD 0", "ADD 1", "RUN x"]
    assert [h.created_by for h in aligned] == ["ADD 0", "ADD 1", "ADD 2", "ADD 3", "RUN x"]
    assert aligned[2].empty_layer and aligned[3].empty_layer and not aligned[4].empty_layer
    assert _layered(align_history((*base, RUN), 1, 0)) == ["RUN x"]  # a base claiming layers it has not


def test_align_history_refuses_a_plan_that_lost_its_own_entries() -> None:
    with pytest.raises(InternalError, match="names 1 layers but the image has 3, 2 of them made by this build"):
        align_history((RUN,), 3, 1)
    with pytest.raises(InternalError):
        align_history((RUN,), 1, 2)
