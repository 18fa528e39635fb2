"""`pybuild.api`'s image, disk and registry-login functions called as a library (no CLI, no subprocess).

Every test gets a fresh store (tests/conftest.py points PYBUILD_ROOT into a new HOME); a small rootfs tar
stands in for a base image.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import pybuild.api as api
from pybuild.errors import ConfigError, StoreError


def _rootfs(path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in (("etc/hostname", b"api\n"), ("bin/tool", b"#!/bin/sh\necho hi\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1600000000
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def imported(tmp_path: Path) -> str:
    result = api.import_image(api.ImportRequest(file=str(_rootfs(tmp_path / "root.tar")), name="base:v1",
                                                message="from a test"))
    assert result.image_id.startswith("sha256:")
    return result.image_id


def test_import_images_inspect_history(imported: str) -> None:
    found = api.images(api.ImagesRequest()).images
    assert [(i.names, i.config_digest) for i in found] == [(("base:v1",), imported)]
    info = api.inspect(api.InspectRequest(image="base:v1"))
    assert info.image_id == imported and info.repo_tags == ("base:v1",)
    assert info.layers == tuple(info.config["rootfs"]["diff_ids"]) and len(info.layers) == 1
    assert isinstance(info.manifest, dict) and info.manifest["config"]["digest"] == imported
    entries = api.history(api.HistoryRequest(image="base:v1")).entries
    assert [e.comment for e in entries] == ["from a test"] and entries[0].size > 0


def test_import_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        api.import_image(api.ImportRequest(file=str(tmp_path / "none.tar")))


def test_tag_and_rmi_keep_going_past_a_bad_name(imported: str) -> None:
    api.tag(api.TagRequest(source="base:v1", target="other:v2"))
    result = api.rmi(api.RmiRequest(images=("other:v2", "missing:v9", "base:v1")))
    assert [(i.name, i.untagged) for i in result.items] == [
        ("other:v2", ("other:v2",)), ("missing:v9", ()), ("base:v1", ("base:v1",))]
    assert isinstance(result.items[1].error, StoreError)
    assert api.images(api.ImagesRequest()).images == ()


def test_save_then_load(imported: str, tmp_path: Path) -> None:
    archive = tmp_path / "base.tar"
    api.save(api.SaveRequest(image="base:v1", output=str(archive), format="docker"))
    api.rmi(api.RmiRequest(images=("base:v1",)))
    loaded = api.load(api.LoadRequest(input=str(archive))).images
    assert [(i.image_id, i.name) for i in loaded] == [(imported, "base:v1")]


def test_save_to_a_stream(imported: str) -> None:
    out = io.BytesIO()
    api.save(api.SaveRequest(image=imported, output="-"), stdout=out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        assert "index.json" in tar.getnames()


def test_du_and_prune(imported: str) -> None:
    usage = api.du(api.DuRequest(verify=True))
    assert usage.problems == () and usage.usage.count >= 3 and usage.usage.unreferenced_count == 0
    api.rmi(api.RmiRequest(images=("base:v1",)))
    pruned = api.prune(api.PruneRequest(filters=("until=0s",), all=True))
    assert pruned.blobs >= 3 and pruned.reclaimed > 0
    assert api.du(api.DuRequest()).usage.count == 0


@pytest.mark.parametrize(("request_", "message"), [
    (api.PruneRequest(keep_storage="ten"), "invalid size 'ten'"),
    (api.PruneRequest(filters=("label=x",)), "invalid prune filter 'label=x'"),
    (api.PruneRequest(filters=("until=soon",)), "invalid prune filter until='soon'"),
    (api.PruneRequest(filters=("until=-1h",)), "negative duration"),
])
def test_prune_checks_its_limits_first(request_: api.PruneRequest, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        api.prune(request_)


def test_parse_size() -> None:
    assert api.parse_size("10GB") == 10 * 1000**3
    assert api.parse_size(" 2 GiB ") == 2 << 30
    assert api.parse_size("1.5k") == 1500 and api.parse_size("100") == 100


def test_login_needs_both_and_logout_says_whether_there_was_one() -> None:
    with pytest.raises(ConfigError, match="needs a user name and a password"):
        api.login(api.LoginRequest(server="registry.invalid", username="me", password=""))
    assert api.logout(api.LogoutRequest(server="registry.invalid")).logged_in is False


def test_importing_the_api_stays_light() -> None:
    code = ("import sys, pybuild.api; heavy = ('lark', 'httpx', 'networkx', 'rich', 'pybuild.store', "
            "'pybuild.registry', 'pybuild.dockerfile', 'pybuild.context', 'pybuild.worker'); "
            "print(sorted(m for m in sys.modules if m.startswith(heavy)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
